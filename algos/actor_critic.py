"""The actor-critic core COMA and ASAE share: a shared GRU actor, COMA's centralised critic with a
target copy and TD(lambda) targets, and the counterfactual / marginal advantage (paper eqs. 1, 9, 10).

Per update: (1) fit the critic on the executed joint actions, (2) compute advantages once with the
updated critic and the policy that collected the data, (3) the subclass updates the actor.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from algos.base import Common, Learner, PolicyController
from algos.batch import EpisodeBatch
from algos.critic import CentralQCritic, slot_index, td_lambda_targets
from algos.networks import RNNAgent, agent_input_dim, batch_agent_inputs, gumbel_max_available, masked_log_softmax
from envs.base import TeamSpec
from envs.config import require


@dataclass(frozen=True)
class ActorCriticConfig:
    rnn_hidden_dim: int = 64
    critic_hidden_dim: int = 128
    td_lambda: float = 0.8
    critic_epochs: int = 8  # full-batch critic steps per update (PyMARL takes one step per time step of the batch)
    target_update_interval: int = 200  # episodes between hard target-critic updates (PyMARL)
    grad_norm_clip: float = 10.0
    entropy_coef: float = 0.01
    obs_last_action: bool = True

    def check(self) -> None:
        require(0.0 <= self.td_lambda <= 1.0, f"learner.td_lambda={self.td_lambda} must be in [0, 1]")
        for name in ("rnn_hidden_dim", "critic_hidden_dim", "critic_epochs", "target_update_interval"):
            require(getattr(self, name) >= 1, f"learner.{name}={getattr(self, name)} must be at least 1")
        require(self.grad_norm_clip > 0, f"learner.grad_norm_clip={self.grad_norm_clip} must be positive")
        require(self.entropy_coef >= 0, f"learner.entropy_coef={self.entropy_coef} must be >= 0")


class MarginalSamples(NamedTuple):
    """What one marginal-advantage estimate drew and computed (for a rerun with common random numbers)."""
    slots: tuple[torch.Tensor, torch.Tensor]  # the packed (episode, time) slots
    noise: torch.Tensor | None  # Gumbel noise of the m - 1 drawn samples: [R, m-1, n, |U|] (None if m = 1)
    joint: torch.Tensor  # [R, m, n] joint actions (sample 0: executed)
    q: torch.Tensor  # [R, m, n, |U|] critic values


class CounterfactualActorCritic(Learner):
    state_attrs = ("actor", "critic", "target_critic", "actor_opt", "critic_opt", "episodes_since_target_update")

    def __init__(self, spec: TeamSpec, cfg: Any, common: Common):
        super().__init__(spec, cfg, common)
        in_dim = agent_input_dim(spec.obs_dim, spec.n_actions, spec.n_agents, cfg.obs_last_action)
        self.actor = RNNAgent(in_dim, cfg.rnn_hidden_dim, spec.n_actions).to(self.device)
        self.critic = CentralQCritic(spec, cfg.critic_hidden_dim).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=common.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=common.critic_lr)
        self.controller = PolicyController(self.actor, spec, self.device, cfg.obs_last_action)
        self.episodes_since_target_update = 0

    # --- pieces -----------------------------------------------------------------------------------
    def actor_inputs(self, batch: EpisodeBatch) -> torch.Tensor:
        """The actor's inputs for every slot (parameter-free: build once per update, index per minibatch)."""
        return batch_agent_inputs(batch, self.cfg.obs_last_action)

    def policy_log_probs(self, batch: EpisodeBatch, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """log pi^a(.|tau^a_t) for every slot: [B, T+1, n, |U|], masked by availability."""
        return masked_log_softmax(self.actor(self.actor_inputs(batch) if inputs is None else inputs), batch.avail)

    def train_critic(self, batch: EpisodeBatch) -> dict[str, float]:
        inputs = self.critic.base_inputs(batch)  # shared by the target and every epoch
        # Only slots that matter go through the critics (packed): real transitions for the fit, and the
        # slot after each for the target values Q(s_{t+1}, u_{t+1}) the TD(lambda) returns bootstrap from.
        real = slot_index(batch.filled)
        after = (real[0], real[1] + 1)  # slot t+1 of each real t
        with torch.no_grad():
            target_taken = torch.zeros(batch.actions.shape, device=batch.obs.device)
            target_taken[after] = self.target_critic.q_taken(self.target_critic.features(inputs.rows(after)),
                                                             batch.actions[after])[1]
            targets = td_lambda_targets(batch, target_taken, self.common.gamma, self.cfg.td_lambda)
        rows, actions, targets = inputs.rows(real), batch.actions[real], targets[real]  # [R, ...]
        for _ in range(self.cfg.critic_epochs):
            _, taken = self.critic.q_taken(self.critic.features(rows), actions)
            loss = ((taken - targets) ** 2).mean()
            self.critic_opt.zero_grad()
            loss.backward()
            # a tensor until the end: converting it here would sync a GPU once per epoch
            grad_norm = torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.cfg.grad_norm_clip)
            self.critic_opt.step()
        self.episodes_since_target_update += batch.batch_size
        if self.episodes_since_target_update >= self.cfg.target_update_interval:
            self.target_critic.load_state_dict(self.critic.state_dict())
            self.episodes_since_target_update = 0
        loss, grad_norm, target_mean = torch.stack([loss.detach(), grad_norm, targets.mean()]).tolist()
        return {"critic_loss": loss, "critic_grad_norm": grad_norm, "target_mean": target_mean}

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
        if rerun is not None:
            slots, noise = rerun.slots, rerun.noise
        else:
            if kind == "coma":
                slots = slot_index(batch.filled)  # eq. 1 needs step t only
            else:  # eq. 9 also needs V at t + 1
                filled = batch.filled.bool()
                slots = slot_index(torch.cat([filled, filled[:, -1:]], dim=1) | torch.cat([filled[:, :1], filled], dim=1))
            noise = None
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
        if rerun is None:
            q = self.critic(base[slots], joint)  # [R, m, n, |U|]
        else:
            q = rerun.q.clone()
            changed = slot_index((joint != rerun.joint).any(-1))  # (slot, sample) pairs whose joint action moved
            if changed[0].numel():
                q[changed] = self.critic(base[slots][changed[0]], joint[changed].unsqueeze(1)).squeeze(1)
        baseline = (q * pi_s.unsqueeze(1)).sum(-1)  # V(s, u^{-a}_k) under a's own policy: [R, m, n]
        samples = MarginalSamples(slots, noise, joint, q)
        if kind == "coma":
            own = q.gather(-1, executed[:, None, :, None].expand(*baseline.shape, 1)).squeeze(-1)
            out = torch.zeros(b, t1 - 1, n, dtype=q.dtype, device=q.device)
            out[slots] = (own - baseline).mean(dim=1)
            return out, samples
        v = torch.zeros(b, t1, m, n, dtype=q.dtype, device=q.device)
        v[slots] = baseline
        reward = batch.reward[:, :, None, None]
        not_term = (1.0 - batch.terminated)[:, :, None, None]
        per_sample = reward + self.common.gamma * not_term * v[:, 1:] - v[:, :-1]
        return per_sample.mean(dim=2) * batch.filled.unsqueeze(-1), samples

    def step_actor(self, loss: torch.Tensor) -> torch.Tensor:
        """One actor step; returns the gradient norm as a tensor (no GPU sync: convert it once, at the end)."""
        self.actor_opt.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.actor.parameters(), self.cfg.grad_norm_clip)
        self.actor_opt.step()
        return grad_norm
