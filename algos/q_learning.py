"""The value-based learner IQL, VDN and QMIX share (PyMARL's QLearner): a GRU agent Q-network over
(own observation, last action, agent id), an episode replay, target networks with hard updates,
double-Q n-step targets, a masked TD loss and gradient clipping. A subclass only picks the mixer.

Per call of ``train`` (once per trainer iteration, with the n_envs freshly collected episodes): insert
the episodes into the replay; once it holds ``batch_size`` episodes, take ``updates_per_episode`` gradient
steps per new episode (PyMARL: one, each on a fresh sample of ``batch_size`` episodes; a fractional
remainder carries over to the next call); then, if ``target_update_interval`` episodes have passed since
the last one, copy the online networks into the targets (checked once per call, i.e. per n_envs
episodes; PyMARL checks after every episode).

Targets (TD(0) for n_step = 1): y_t = sum_{k<n} gamma^k r_{t+k} + gamma^n (1 - term) Q_target(t+n),
cut short at an episode's last real step e: there y_t bootstraps from slot e+1 (the final observation)
unless the episode terminated (a time-limit truncation bootstraps, a terminal state does not). With
double Q the ONLINE network picks argmax_u Q(tau_{t+1}, u) among the actions available at t+1, and the
target network evaluates that action. The loss averages squared TD errors over ``filled`` steps only.

``standardise_rewards`` (EPyMARL's default, off here as in PyMARL): each sampled batch's rewards update
running moments and are replaced by (r - mean) / std before the targets are built.

Optimizer: PyMARL's RMSprop (alpha 0.99, eps 1e-5) by default; ``optimizer=adam`` is EPyMARL's choice.
Learning rate = the top-level ``lr`` (PyMARL: 5e-4).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn

from algos.base import Common, Learner, reward_standardiser
from algos.batch import EpisodeBatch
from algos.exploration import EpsilonGreedyController, LinearSchedule
from algos.networks import AgentNet, MLPAgent, RNNAgent, agent_input_dim, at_executed, batch_agent_inputs, greedy_available
from algos.replay import EpisodeReplayBuffer
from envs.base import TeamSpec
from validation import require


@dataclass(frozen=True)
class QLearningConfig:
    rnn_hidden_dim: int = 64
    use_rnn: bool = True  # False: a feed-forward agent (EPyMARL's QMIX default, use_rnn: False)
    buffer_size: int = 5000  # episodes kept in the replay
    target_update_interval: int = 200  # episodes between hard target-network updates
    epsilon_start: float = 1.0
    epsilon_finish: float = 0.05
    epsilon_anneal_time: int = 50_000  # env steps of the linear epsilon schedule
    double_q: bool = True
    n_step: int = 1  # 1 = TD(0) targets
    grad_norm_clip: float = 10.0
    obs_last_action: bool = True
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"  # PyMARL: RMSprop; EPyMARL: Adam
    optim_alpha: float = 0.99  # RMSprop smoothing constant (rmsprop only)
    optim_eps: float = 1e-5  # RMSprop epsilon (rmsprop only)
    # Gradient steps per collected episode, each on a fresh replay sample: PyMARL's episode runner takes
    # one; 1 / n_envs is its parallel runner's one step per n_envs episodes.
    updates_per_episode: float = 1.0
    # EPyMARL's standardise_rewards (its default; PyMARL has none): train on (r - mean) / std with running
    # moments of the rewards of the sampled batches.
    standardise_rewards: bool = False

    def check(self) -> None:
        for name in ("rnn_hidden_dim", "buffer_size", "target_update_interval", "n_step"):
            require(getattr(self, name) >= 1, f"learner.{name}={getattr(self, name)} must be at least 1")
        require(self.updates_per_episode > 0, f"learner.updates_per_episode={self.updates_per_episode} must be positive")
        for name in ("epsilon_start", "epsilon_finish"):
            require(0.0 <= getattr(self, name) <= 1.0, f"learner.{name}={getattr(self, name)} must be in [0, 1]")
        require(self.epsilon_anneal_time >= 0, f"learner.epsilon_anneal_time={self.epsilon_anneal_time} must be >= 0")
        require(self.grad_norm_clip > 0, f"learner.grad_norm_clip={self.grad_norm_clip} must be positive")
        require(0.0 <= self.optim_alpha < 1.0, f"learner.optim_alpha={self.optim_alpha} must be in [0, 1)")
        require(self.optim_eps > 0, f"learner.optim_eps={self.optim_eps} must be positive")


def mean_over_updates(values: list) -> float | list[float]:
    """The mean of a metric over the updates of one call (per seed: lists of one value per seed)."""
    if isinstance(values[0], list):
        return [sum(v[s] for v in values) / len(values) for s in range(len(values[0]))]
    return sum(values) / len(values)


def _shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """x[:, t + k] at position t (zeros past the end)."""
    if k == 0:
        return x
    return torch.cat([x[:, k:], torch.zeros_like(x[:, :k])], dim=1)[:, : x.shape[1]]


def n_step_targets(batch: EpisodeBatch, next_values: torch.Tensor, gamma: float, n: int) -> torch.Tensor:
    """n-step targets from bootstrap values per slot ``next_values`` [B, T+1, *extra] -> [B, T, *extra].

    ``next_values[:, t]`` is the value of slot t (e.g. Q_target(tau_t, argmax)), used by a transition
    whose bootstrap state is slot t. Reward, termination and masks broadcast over the extra dims
    (agents, for IQL). Padding steps get 0.
    """
    extra = (1,) * (next_values.dim() - 2)
    reward = batch.reward.reshape(batch.reward.shape + extra)
    not_term = (1.0 - batch.terminated).reshape(reward.shape)
    end = batch.episode_end.reshape(reward.shape)
    alive = batch.filled.reshape(reward.shape).expand_as(next_values[:, 1:])
    targets = torch.zeros_like(next_values[:, 1:])
    discount = 1.0
    for k in range(n):
        stop = torch.ones_like(end) if k == n - 1 else _shift(end, k)  # bootstrap after step t + k
        targets = targets + alive * discount * _shift(reward, k)
        targets = targets + alive * stop * discount * gamma * _shift(not_term, k) * _shift(next_values[:, 1:], k)
        alive = alive * (1.0 - stop)
        discount *= gamma
    return targets


class QLearner(Learner):
    packable = True
    state_attrs = ("agent", "target_agent", "mixer", "target_mixer", "optimizer", "replay", "last_target_update_episode",
                   "updates", "update_credit", "reward_standardiser")

    on_policy = False

    def make_mixer(self) -> nn.Module | None:
        """None: independent Q-learning (one TD loss per agent); else Q_tot = mixer(Q_1..Q_n, state)."""
        return None

    def __init__(self, spec: TeamSpec, cfg: Any, common: Common):
        super().__init__(spec, cfg, common)
        in_dim = agent_input_dim(spec.obs_dim, spec.n_actions, spec.n_agents, cfg.obs_last_action)
        self.agent = (RNNAgent if cfg.use_rnn else MLPAgent)(in_dim, cfg.rnn_hidden_dim, spec.n_actions,
                                                             common.seeds).to(self.device)
        self.mixer = self.make_mixer()
        params = list(self.agent.parameters())
        if self.mixer is not None:
            self.mixer = self.mixer.to(self.device)
            params += list(self.mixer.parameters())
        self.params = params
        self.target_agent = copy.deepcopy(self.agent).requires_grad_(False)
        self.target_mixer = None if self.mixer is None else copy.deepcopy(self.mixer).requires_grad_(False)
        self.optimizer = self.axis.optimizer(params, common.lr, cfg.optimizer, cfg.optim_alpha, cfg.optim_eps)
        self.replay = EpisodeReplayBuffer(cfg.buffer_size, common.episode_limit, device="cpu", seeds=common.seeds)
        schedule = LinearSchedule(cfg.epsilon_start, cfg.epsilon_finish, cfg.epsilon_anneal_time)
        self.controller = EpsilonGreedyController(self.agent, spec, self.device, schedule, cfg.obs_last_action)
        self.last_target_update_episode = 0
        self.updates = 0
        self.update_credit = 0.0  # gradient steps earned by collected episodes, not yet taken
        self.reward_standardiser = reward_standardiser(common.seeds) if cfg.standardise_rewards else None

    # --- pieces -----------------------------------------------------------------------------------
    def agent_q(self, net: AgentNet, batch: EpisodeBatch) -> torch.Tensor:
        """Per-agent Q values for every slot: [B, T+1, n, |U|]."""
        return net(batch_agent_inputs(batch, self.cfg.obs_last_action))

    @torch.no_grad()
    def targets(self, batch: EpisodeBatch, online_q: torch.Tensor) -> torch.Tensor:
        """TD targets [B, T] (mixed) or [B, T, n] (IQL), from the target networks."""
        target_q = self.agent_q(self.target_agent, batch)
        chooser = online_q.detach() if self.cfg.double_q else target_q
        best = greedy_available(chooser, batch.avail)  # argmax among AVAILABLE actions only
        values = target_q.gather(-1, best.unsqueeze(-1)).squeeze(-1)  # [B, T+1, n]
        if self.target_mixer is not None:
            values = self.target_mixer(values, batch.state)  # [B, T+1]
        return n_step_targets(batch, values, self.common.gamma, self.cfg.n_step)

    def td_terms(self, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(chosen Q, targets, mask), each [B, T] (mixed) or [B, T, n] (IQL); chosen carries gradients."""
        q = self.agent_q(self.agent, batch)
        chosen = at_executed(q, batch.actions)  # [B, T, n]
        if self.mixer is not None:
            chosen = self.mixer(chosen, batch.state[:, :-1])
        targets = self.targets(batch, q)
        mask = batch.filled if self.mixer is not None else batch.filled.unsqueeze(-1)
        return chosen, targets, mask

    def update(self, batch: EpisodeBatch) -> dict[str, float]:
        if self.reward_standardiser is not None:
            batch = self.reward_standardiser.apply(batch)
        axis = self.axis
        chosen, targets, mask = self.td_terms(batch)
        loss = axis.masked_mean((chosen - targets) ** 2, mask)
        self.optimizer.zero_grad()
        axis.total(loss).backward()
        grad_norm = axis.clip_grad_norm(self.params, self.cfg.grad_norm_clip)
        axis.step(self.optimizer)
        self.updates += 1
        return {"td_loss": axis.metric(loss), "grad_norm": axis.metric(grad_norm),
                "q_mean": axis.metric(axis.masked_mean(chosen.detach(), mask)),
                "target_mean": axis.metric(axis.masked_mean(targets, mask))}

    def update_targets(self) -> None:
        self.target_agent.load_state_dict(self.agent.state_dict())
        if self.mixer is not None:
            self.target_mixer.load_state_dict(self.mixer.state_dict())

    def train(self, batch: EpisodeBatch, t_env: int, episodes: int) -> dict[str, float]:
        self.replay.insert(batch)
        metrics = {"epsilon": self.controller.epsilon(t_env), "replay_size": float(len(self.replay))}
        if not self.replay.can_sample(self.common.batch_size):
            return metrics
        self.update_credit += batch.batch_size // self.common.seeds * self.cfg.updates_per_episode
        n_updates = int(self.update_credit)
        self.update_credit -= n_updates
        per_update = [self.update(self.replay.sample(self.common.batch_size).to(self.device)) for _ in range(n_updates)]
        for key in per_update[0] if per_update else ():
            metrics[key] = mean_over_updates([m[key] for m in per_update])
        if episodes - self.last_target_update_episode >= self.cfg.target_update_interval:
            self.update_targets()
            self.last_target_update_episode = episodes
        return metrics

