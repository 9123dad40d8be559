"""The actor-critic core COMA and ASAE share: a shared GRU actor, COMA's centralised critic with a
target copy and TD(lambda) targets, and the counterfactual / marginal advantage (paper eqs. 1, 9, 10).

Per update: (1) fit the critic on the executed joint actions, (2) compute advantages once with the
updated critic and the policy that collected the data, (3) the subclass updates the actor.

Defaults are PyMARL's COMA (src/config/algs/coma.yaml, src/learners/coma_learner.py; docs/fidelity.md
lists every setting and each difference): the policy has an epsilon floor, (1 - eps) pi + eps uniform
over available actions, eps 0.5 -> 0.01 over 100k env steps, used for acting and in the learner; no
entropy bonus; the critic takes one RMSprop step per time step of the batch, latest step first
(``critic_train_mode="seq"``); the target critic is refreshed every 200 critic steps.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from algos.base import Common, Learner, PolicyController, reward_standardiser
from algos.batch import EpisodeBatch
from algos.critic import CentralQCritic, td_lambda_targets
from algos.packing import Slots, TimeStep
from algos.exploration import LinearSchedule
from algos.networks import (RNNAgent, agent_input_dim, batch_agent_inputs, epsilon_floor, gumbel_max_available,
                            masked_log_softmax)
from envs.base import TeamSpec
from validation import require


@dataclass(frozen=True)
class ActorCriticConfig:
    rnn_hidden_dim: int = 64
    critic_hidden_dim: int = 128
    td_lambda: float = 0.8
    # seq: PyMARL's schedule, one critic step per time step of the batch (latest first), each on all
    # episodes' rows of that step; batch: ``critic_epochs`` steps on the whole batch.
    critic_train_mode: Literal["seq", "batch"] = "seq"
    critic_epochs: int = 8  # batch mode only
    target_update_interval: int = 200  # critic gradient steps between hard target-critic updates (PyMARL)
    # Exploration floor of the policy (PyMARL's COMA): (1 - eps) pi + eps uniform over available actions,
    # eps linear from epsilon_start to epsilon_finish over epsilon_anneal_time env steps. 0 and 0: none.
    epsilon_start: float = 0.5
    epsilon_finish: float = 0.01
    epsilon_anneal_time: int = 100_000
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"  # for actor and critic; PyMARL: RMSprop
    optim_alpha: float = 0.99  # RMSprop smoothing constant
    optim_eps: float = 1e-5  # RMSprop epsilon
    grad_norm_clip: float = 10.0
    # Bonus on the entropy of the actor's own softmax (the floor's share is fixed). PyMARL's COMA has none
    # (EPyMARL's: 0.001).
    entropy_coef: float = 0.0
    obs_last_action: bool = True
    # EPyMARL's standardise_rewards (its default; PyMARL has none): the critic's targets and the "td"
    # advantage use (r - mean) / std with running moments of the rewards trained on.
    standardise_rewards: bool = False

    def check(self) -> None:
        require(0.0 <= self.td_lambda <= 1.0, f"learner.td_lambda={self.td_lambda} must be in [0, 1]")
        for name in ("rnn_hidden_dim", "critic_hidden_dim", "critic_epochs", "target_update_interval"):
            require(getattr(self, name) >= 1, f"learner.{name}={getattr(self, name)} must be at least 1")
        for name in ("epsilon_start", "epsilon_finish"):
            require(0.0 <= getattr(self, name) <= 1.0, f"learner.{name}={getattr(self, name)} must be in [0, 1]")
        require(self.epsilon_anneal_time >= 0, f"learner.epsilon_anneal_time={self.epsilon_anneal_time} must be >= 0")
        require(0.0 <= self.optim_alpha < 1.0, f"learner.optim_alpha={self.optim_alpha} must be in [0, 1)")
        require(self.optim_eps > 0, f"learner.optim_eps={self.optim_eps} must be positive")
        require(self.grad_norm_clip > 0, f"learner.grad_norm_clip={self.grad_norm_clip} must be positive")
        require(self.entropy_coef >= 0, f"learner.entropy_coef={self.entropy_coef} must be >= 0")


class MarginalSamples(NamedTuple):
    """What one marginal-advantage estimate drew and computed (for a rerun with common random numbers)."""
    slots: Slots  # the packed (episode, time) slots
    noise: torch.Tensor | None  # Gumbel noise of the m - 1 drawn samples: [R, m-1, n, |U|] (None if m = 1)
    joint: torch.Tensor  # [R, m, n] joint actions (sample 0: executed)
    q: torch.Tensor  # [R, m, n, |U|] critic values


class CounterfactualActorCritic(Learner):
    packable = True
    state_attrs = ("actor", "critic", "target_critic", "actor_opt", "critic_opt", "critic_steps",
                   "last_target_update_step", "reward_standardiser")

    def __init__(self, spec: TeamSpec, cfg: Any, common: Common):
        super().__init__(spec, cfg, common)
        in_dim = agent_input_dim(spec.obs_dim, spec.n_actions, spec.n_agents, cfg.obs_last_action)
        seeds = common.seeds
        self.actor = RNNAgent(in_dim, cfg.rnn_hidden_dim, spec.n_actions, seeds).to(self.device)
        self.critic = CentralQCritic(spec, cfg.critic_hidden_dim, seeds).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = self.axis.optimizer(self.actor.parameters(), common.lr, cfg.optimizer, cfg.optim_alpha,
                                             cfg.optim_eps)
        self.critic_opt = self.axis.optimizer(self.critic.parameters(), common.critic_lr, cfg.optimizer,
                                              cfg.optim_alpha, cfg.optim_eps)
        self.epsilon = LinearSchedule(cfg.epsilon_start, cfg.epsilon_finish, cfg.epsilon_anneal_time)
        self.controller = PolicyController(self.actor, spec, self.device, cfg.obs_last_action, self.epsilon)
        self.critic_steps = self.axis.counter()
        self.last_target_update_step = self.axis.counter()
        self.reward_standardiser = reward_standardiser(seeds) if cfg.standardise_rewards else None

    # --- pieces -----------------------------------------------------------------------------------
    def prepare(self, batch: EpisodeBatch) -> EpisodeBatch:
        """The batch on the learner's device, its rewards standardised when ``standardise_rewards``."""
        batch = batch.to(self.device)
        return batch if self.reward_standardiser is None else self.reward_standardiser.apply(batch)

    def actor_inputs(self, batch: EpisodeBatch) -> torch.Tensor:
        """The actor's inputs for every slot (parameter-free: build once per update, index per minibatch)."""
        return batch_agent_inputs(batch, self.cfg.obs_last_action)

    def policy_log_probs(self, batch: EpisodeBatch, t_env: int, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """log pi^a(.|tau^a_t) for every slot: [B, T+1, n, |U|], masked by availability, with the
        exploration floor at ``t_env`` (the policy that acted, as PyMARL's learner sees it)."""
        return self.floored(self.actor_log_softmax(batch, inputs), batch.avail, t_env)

    def actor_log_softmax(self, batch: EpisodeBatch, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """The actor network's own masked log-softmax (no floor): [B, T+1, n, |U|]."""
        return masked_log_softmax(self.actor(self.actor_inputs(batch) if inputs is None else inputs), batch.avail)

    def floored(self, logp: torch.Tensor, avail: torch.Tensor, t_env: int) -> torch.Tensor:
        return epsilon_floor(logp, avail, self.epsilon(t_env))

    def train_critic(self, batch: EpisodeBatch) -> dict[str, float]:
        inputs = self.critic.base_inputs(batch)  # shared by the target and every step
        # Only slots that matter go through the critics (packed): real transitions for the fit, and the
        # slot after each for the target values Q(s_{t+1}, u_{t+1}) the TD(lambda) returns bootstrap from.
        axis = self.axis
        real = axis.slot_index(batch.filled)  # in a pack: the same number of rows per seed, fillers marked
        after = (real.index[0], real.index[1] + 1)  # slot t+1 of each real t
        with torch.no_grad():
            target_taken = torch.zeros(batch.actions.shape, device=batch.obs.device)
            target_taken[after] = self.target_critic.q_taken(self.target_critic.features(inputs.rows(after)),
                                                             batch.actions[after])[1]
            targets = td_lambda_targets(batch, target_taken, self.common.gamma, self.cfg.td_lambda)
        # [R, ...], R in (episode, t) order
        rows, actions, targets = inputs.rows(real.index), batch.actions[real.index], targets[real.index]
        if self.cfg.critic_train_mode == "seq":
            # PyMARL: one step per time step, latest first, on the rows of that step across episodes
            steps = axis.time_steps(real, batch.max_t)
        else:
            steps = [TimeStep(None, real.valid, None)] * self.cfg.critic_epochs
        losses, grad_norms = [], []  # tensors until the end: converting each would sync a GPU once per step
        for step in steps:
            idx = step.rows
            step_rows, step_actions, step_targets = ((rows, actions, targets) if idx is None else
                                                     (rows.rows(idx), actions[idx], targets[idx]))
            _, taken = self.critic.q_taken(self.critic.features(step_rows), step_actions)
            loss = axis.row_mean((taken - step_targets) ** 2, step.valid)
            self.critic_opt.zero_grad()
            axis.total(loss).backward()
            grad_norms.append(axis.clip_grad_norm(self.critic.parameters(), self.cfg.grad_norm_clip))
            axis.step(self.critic_opt, step.seed_mask)
            losses.append(loss.detach())
        self.critic_steps = self.critic_steps + axis.steps_taken(steps)
        due = self.critic_steps - self.last_target_update_step >= self.cfg.target_update_interval
        axis.copy_where(self.target_critic, self.critic, due)
        self.last_target_update_step = axis.select(due, self.critic_steps, self.last_target_update_step)
        return axis.metrics({"critic_loss": axis.step_mean(losses, steps), "critic_grad_norm": axis.step_mean(grad_norms, steps),
                             "target_mean": axis.row_mean(targets, real.valid)})

    @torch.no_grad()
    def marginal_advantage(self, batch: EpisodeBatch, pi: torch.Tensor, m: int,
                           kind: Literal["coma", "td"] = "coma", base: torch.Tensor | None = None) -> torch.Tensor:
        """A^a_mar(t) = (1/m) sum_k A_ctf^a(s_t, u^a_t, u^{-a}_{t,k})  ->  [B, T, n] (zero on padding).

        Sample k = 0 is the executed joint action; samples 1..m-1 are drawn from ``pi`` [B, T+1, n, |U|]
        (the policies that collected the data), per agent, over available actions only. All m samples of
        all slots go through the critic in one forward, on the slots the estimate needs only (real steps;
        for "td" also the step after each), packed. ``kind="coma"`` is eq. 1 per sample (Q of the own
        executed action minus the own-policy baseline); ``kind="td"`` is eq. 9 (r + gamma V(s', u'^{-a}_k)
        - V(s, u^{-a}_k) with V = sum_u pi^a(u) Q). With m = 1 and "coma" this is exactly COMA's advantage.
        ``base``: the critic's ``base_features(batch)`` when the caller already has them.
        """
        return self.marginal_estimate(batch, pi, m, kind, base)[0]

    @torch.no_grad()
    def marginal_estimate(self, batch: EpisodeBatch, pi: torch.Tensor, m: int, kind: Literal["coma", "td"] = "coma",
                          base: torch.Tensor | None = None, rerun: "MarginalSamples | None" = None
                          ) -> tuple[torch.Tensor, "MarginalSamples"]:
        """``marginal_advantage`` and what it drew: (advantage [B, T, n], samples).

        The m - 1 drawn samples are Gumbel-max draws, argmax_u log pi(u) + g_u, with noise g kept in the
        returned samples. ``rerun``: the samples of an earlier estimate on the same batch; the new policies
        ``pi`` then draw with the same noise (common random numbers), so the two estimates differ only by
        what the policy change does, not by fresh Monte-Carlo noise; and only the joint samples that came
        out different go through the critic again (the others reuse its Q values).
        """
        b, t1, n, n_act = pi.shape
        axis = self.axis
        if rerun is not None:
            packed, noise = rerun.slots, rerun.noise
        else:
            if kind == "coma":
                packed = axis.slot_index(batch.filled)  # eq. 1 needs step t only
            else:  # eq. 9 also needs V at t + 1
                filled = batch.filled.bool()
                packed = axis.slot_index(torch.cat([filled, filled[:, -1:]], dim=1) | torch.cat([filled[:, :1], filled], dim=1))
            noise = None
        slots = packed.index
        if base is None:
            base = self.critic.base_features(batch)
        pi_s, executed = pi[slots], batch.actions[slots]  # [R, n, |U|], [R, n]
        joint = executed.unsqueeze(1)  # [R, 1, n]
        if m > 1:
            if noise is None:  # standard Gumbel noise, one per (slot, sample, agent, action)
                noise = -torch.log(-torch.log(torch.rand(pi_s.shape[0], m - 1, n, n_act, device=pi.device)
                                              .clamp_(min=torch.finfo(pi.dtype).tiny)))
            others = gumbel_max_available(pi_s.unsqueeze(1), batch.avail[slots].unsqueeze(1), noise)  # [R, m-1, n]
            joint = torch.cat([joint, others], dim=1)  # [R, m, n]
        per_sample = base.shape[-2] * base.shape[-1]  # the critic's widest activation per (slot, sample): [n, H]
        if rerun is None:
            q = axis.in_chunks(self.critic, base[slots], joint, row_elements=joint.shape[1] * per_sample)  # [R, m, n, |U|]
        else:
            q = rerun.q.clone()
            changed = axis.slot_index((joint != rerun.joint).any(-1)).index  # (slot, sample) pairs whose joint action moved
            if changed[0].numel():
                q[changed] = axis.in_chunks(self.critic, base[slots][changed[0]], joint[changed].unsqueeze(1),
                                            row_elements=per_sample).squeeze(1)
        baseline = (q * pi_s.unsqueeze(1)).sum(-1)  # V(s, u^{-a}_k) under a's own policy: [R, m, n]
        samples = MarginalSamples(packed, noise, joint, q)
        if kind == "coma":
            own = q.gather(-1, executed[:, None, :, None].expand(*baseline.shape, 1)).squeeze(-1)
            out = torch.zeros(b, t1 - 1, n, dtype=q.dtype, device=q.device)
            out[slots] = axis.only_valid((own - baseline).mean(dim=1), packed)
            return out, samples
        v = torch.zeros(b, t1, m, n, dtype=q.dtype, device=q.device)
        v[slots] = axis.only_valid(baseline, packed)
        reward = batch.reward[:, :, None, None]
        not_term = (1.0 - batch.terminated)[:, :, None, None]
        per_sample = reward + self.common.gamma * not_term * v[:, 1:] - v[:, :-1]
        return per_sample.mean(dim=2) * batch.filled.unsqueeze(-1), samples

    def step_actor(self, loss: torch.Tensor) -> torch.Tensor:
        """One actor step; returns the gradient norm as a tensor (no GPU sync: convert it once, at the end)."""
        self.actor_opt.zero_grad()
        self.axis.total(loss).backward()
        grad_norm = self.axis.clip_grad_norm(self.actor.parameters(), self.cfg.grad_norm_clip)
        self.axis.step(self.actor_opt)
        return grad_norm
