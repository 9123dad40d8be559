"""The PPO learner MAPPO and IPPO share; they differ only in the critic (``build_critic`` / ``values``).

Per update, on the freshly collected episodes (CleanRL's order: collect -> advantages -> epochs):
1. With the policy and critic that collected the data: log pi_old for every slot and V_old for every
   slot, including slot T (the final observation), so GAE can bootstrap at a time-limit truncation.
2. GAE(gamma, lambda) advantages and returns A + V_old, computed once (``algos.ppo.gae``); optionally
   normalised over the batch.
3. ``ppo_epochs`` passes over random episode minibatches (whole episodes: the actor is a GRU): clipped
   surrogate - entropy_coef * entropy for the actor, (optionally clipped) squared error to the returns for
   the critic; one backward through both, each network with its own optimizer, lr and grad-norm clip.
Logged: losses, entropy, clip fraction and grad norms averaged over the minibatch steps, and the exact
KL(pi_old || pi_new) after the update (mean over agents, and the largest agent's).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn as nn

from algos.base import Common, Learner, PolicyController
from algos.batch import EpisodeBatch
from algos.networks import RNNAgent, agent_input_dim, at_executed, batch_agent_inputs, entropy, masked_log_softmax
from algos.ppo import clipped_surrogate_loss, gae, normalize_advantages, per_agent_kl, value_loss
from envs.base import TeamSpec
from validation import require



@dataclass(frozen=True)
class PPOConfig:
    rnn_hidden_dim: int = 64  # GRU actor
    critic_hidden_dim: int = 64
    gae_lambda: float = 0.95
    clip: Optional[float] = 0.2  # PPO clip range epsilon; null disables clipping
    value_clip: Optional[float] = None  # PPO2 value clipping range (in return units); null: plain squared error
    ppo_epochs: int = 5
    minibatches: int = 1  # episode minibatches per epoch
    entropy_coef: float = 0.01
    normalize_advantage: bool = True
    grad_norm_clip: float = 10.0
    obs_last_action: bool = True

    def check(self) -> None:
        require(0.0 <= self.gae_lambda <= 1.0, f"learner.gae_lambda={self.gae_lambda} must be in [0, 1]")
        require(self.clip is None or 0 < self.clip < 1, f"learner.clip={self.clip} must be in (0, 1) or null")
        require(self.value_clip is None or self.value_clip > 0,
                f"learner.value_clip={self.value_clip} must be positive or null")
        for name in ("rnn_hidden_dim", "critic_hidden_dim", "ppo_epochs", "minibatches"):
            require(getattr(self, name) >= 1, f"learner.{name}={getattr(self, name)} must be at least 1")
        require(self.entropy_coef >= 0, f"learner.entropy_coef={self.entropy_coef} must be >= 0")
        require(self.grad_norm_clip > 0, f"learner.grad_norm_clip={self.grad_norm_clip} must be positive")


def _add(total, value):
    """Running sums of logged values: floats, or one float per seed in a pack."""
    if total is None:
        return value
    return [a + b for a, b in zip(total, value)] if isinstance(value, list) else total + value


def _mean(total, count: int):
    return [t / count for t in total] if isinstance(total, list) else total / count


class PPOFamily(Learner):
    packable = True
    state_attrs = ("actor", "critic", "actor_opt", "critic_opt")

    def __init__(self, spec: TeamSpec, cfg: Any, common: Common):
        super().__init__(spec, cfg, common)
        in_dim = agent_input_dim(spec.obs_dim, spec.n_actions, spec.n_agents, cfg.obs_last_action)
        self.actor = RNNAgent(in_dim, cfg.rnn_hidden_dim, spec.n_actions, common.seeds).to(self.device)
        self.critic = self.build_critic().to(self.device)
        self.actor_opt = self.axis.optimizer(self.actor.parameters(), common.lr, "adam")
        self.critic_opt = self.axis.optimizer(self.critic.parameters(), common.critic_lr, "adam")
        self.controller = PolicyController(self.actor, spec, self.device, cfg.obs_last_action)

    @abc.abstractmethod
    def build_critic(self) -> nn.Module:
        ...

    @abc.abstractmethod
    def values(self, batch: EpisodeBatch) -> torch.Tensor:
        """V for every slot of every agent: [B, T+1, n]."""

    def policy_log_probs(self, batch: EpisodeBatch) -> torch.Tensor:
        """log pi^a(.|tau^a_t) for every slot: [B, T+1, n, |U|], masked by availability."""
        return masked_log_softmax(self.actor(batch_agent_inputs(batch, self.cfg.obs_last_action)), batch.avail)

    def train(self, batch: EpisodeBatch, t_env: int, episodes: int) -> dict[str, float]:
        cfg = self.cfg
        batch = batch.to(self.device)
        mask = batch.filled.unsqueeze(-1)
        with torch.no_grad():
            logp_old = self.policy_log_probs(batch)
            logp_old_taken = at_executed(logp_old, batch.actions)
            values_old = self.values(batch)
            advantages, returns = gae(batch, values_old, self.common.gamma, cfg.gae_lambda)
        axis = self.axis
        adv = normalize_advantages(advantages, mask, axis) if cfg.normalize_advantage else advantages
        sums: dict[str, Any] = {}
        steps = 0
        for _ in range(cfg.ppo_epochs):
            for idx in axis.episode_minibatches(batch.batch_size, cfg.minibatches):
                sub, sub_mask = batch[idx], mask[idx]
                logp = self.policy_log_probs(sub)
                surrogate, clip_frac = clipped_surrogate_loss(at_executed(logp, sub.actions), logp_old_taken[idx], adv[idx],
                                                              sub_mask, cfg.clip, axis.masked_mean)
                ent = axis.masked_mean(entropy(logp[:, :-1]), sub_mask)
                actor_loss = surrogate - cfg.entropy_coef * ent
                critic_loss = value_loss(self.values(sub)[:, :-1], values_old[idx, :-1], returns[idx], sub_mask,
                                         cfg.value_clip, axis.masked_mean)
                self.actor_opt.zero_grad()
                self.critic_opt.zero_grad()
                axis.total(actor_loss + critic_loss).backward()
                step = {"actor_grad_norm": axis.metric(axis.clip_grad_norm(self.actor.parameters(), cfg.grad_norm_clip)),
                        "critic_grad_norm": axis.metric(axis.clip_grad_norm(self.critic.parameters(), cfg.grad_norm_clip)),
                        "actor_loss": axis.metric(actor_loss), "critic_loss": axis.metric(critic_loss),
                        "entropy": axis.metric(ent), "clip_frac": axis.metric(clip_frac)}
                axis.step(self.actor_opt)
                axis.step(self.critic_opt)
                for key, value in step.items():
                    sums[key] = _add(sums.get(key), value)
                steps += 1
        metrics = {key: _mean(value, steps) for key, value in sums.items()}
        with torch.no_grad():
            kl = per_agent_kl(logp_old, self.policy_log_probs(batch), mask, axis)
        metrics.update({"kl": axis.metric(kl.mean(-1)), "kl_max_agent": axis.metric(kl.max(-1).values),
                        "advantage_mean": axis.metric(axis.masked_mean(advantages, mask)),
                        "value_mean": axis.metric(axis.masked_mean(values_old[:, :-1], mask))})
        return metrics

