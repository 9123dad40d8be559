"""What every learner provides, and the controllers that act for a team.

A learner is a small class with a matching ``Config`` dataclass (BenchMARL style). The trainer owns
the loop; a learner only (1) exposes a ``controller`` that picks actions for its team and (2) trains
on episode batches. Everything a resume needs is in ``state_dict()`` (networks, optimizers, replay
data, counters).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, Literal

import torch

from envs.base import TeamObs, TeamSpec
from algos.batch import EpisodeBatch
from algos.packing import SeedAxis, masked_mean  # noqa: F401  (masked_mean: re-exported)
from algos.networks import AgentNet, epsilon_floor, greedy_available, masked_log_softmax, sample_available


@dataclass(frozen=True)
class Common:
    """Settings every learner shares, set at the top level of the experiment config."""

    gamma: float
    lr: float  # actor (or Q-network) learning rate
    critic_lr: float  # critic learning rate (actor-critic methods)
    batch_size: int  # episodes per update (on-policy: collected per iteration; off-policy: sampled)
    episode_limit: int
    device: torch.device
    seeds: int = 1  # seeds packed in this learner (algos/packing.py); their episodes folded seed-major


class Controller(abc.ABC):
    """Picks the actions of one team's agents in B envs at once (one batched forward per step)."""

    def init_hidden(self, n_envs: int) -> Any:
        return None

    @abc.abstractmethod
    def act(self, obs: TeamObs, last_actions: torch.Tensor, hidden: Any, t_env: int, test_mode: bool) -> tuple[torch.Tensor, Any]:
        """obs for B envs, last_actions [B, n] (-1 at t = 0) -> (actions [B, n] int64 on CPU, new hidden)."""


class RandomController(Controller):
    """Uniform over available actions: the fixed policy of non-learning teams (e.g. random prey)."""

    def act(self, obs, last_actions, hidden, t_env, test_mode):
        return sample_available(torch.ones_like(obs.avail, dtype=torch.float32), obs.avail), hidden


def last_actions_onehot(last_actions: torch.Tensor, n_actions: int) -> torch.Tensor:
    """[B, n] with -1 for "none yet" -> one-hot [B, n, A] (zeros for -1)."""
    return torch.nn.functional.one_hot(last_actions.clamp(min=0), n_actions).float() * (last_actions >= 0).unsqueeze(-1)


class PolicyController(Controller):
    """Stochastic policy from a shared GRU actor; greedy (argmax over available actions) in test mode.

    ``epsilon(t_env)``, when given, is PyMARL's exploration floor: training-mode actions are drawn from
    (1 - eps) pi + eps uniform over the available actions (``networks.epsilon_floor``).
    """

    def __init__(self, actor: AgentNet, spec: TeamSpec, device: torch.device, last_action: bool = True,
                 epsilon: Callable[[int], float] | None = None):
        self.actor, self.spec, self.device, self.last_action = actor, spec, device, last_action
        self.epsilon = epsilon
        self._constants: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def init_hidden(self, n_envs: int):
        return self.actor.init_hidden(n_envs, self.spec.n_agents, self.device)

    def _step_constants(self, n_envs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Built once per number of envs, on the device: the agent-id one-hots [B, n, n] of
        ``build_agent_inputs`` and a one-hot table whose extra last row is zeros, so that indexing it with
        the last actions gives ``last_actions_onehot`` (-1, "none yet", picks the zero row) in one lookup."""
        if self._constants is None or self._constants[0] != n_envs:
            n, a = self.spec.n_agents, self.spec.n_actions
            ids = torch.eye(n, device=self.device).expand(n_envs, n, n)
            table = torch.cat([torch.eye(a, device=self.device), torch.zeros(1, a, device=self.device)])
            self._constants = (n_envs, ids, table)
        return self._constants[1], self._constants[2]

    @torch.no_grad()
    def act(self, obs, last_actions, hidden, t_env, test_mode):
        ids, onehot_table = self._step_constants(obs.obs.shape[0])
        # Host-to-device copies that do not wait for the GPU stream (the sources are fresh unpinned host
        # tensors, which CUDA stages before returning); on a CPU device they are no-ops.
        avail = obs.avail.to(self.device, non_blocking=True)
        parts = [obs.obs.to(self.device, non_blocking=True)]
        if self.last_action:
            parts.append(onehot_table[last_actions.to(self.device, non_blocking=True)])
        logits, hidden = self.actor.step(torch.cat(parts + [ids], dim=-1), hidden)
        if test_mode:
            actions = greedy_available(logits, avail)
        else:
            logp = masked_log_softmax(logits, avail)
            if self.epsilon is not None:
                logp = epsilon_floor(logp, avail, self.epsilon(t_env))
            actions = sample_available(logp.exp(), avail)
        return actions.cpu(), hidden  # the one device-to-host transfer per step: the env needs the actions


class Learner(abc.ABC):
    packable: ClassVar[bool] = False  # trains several seeds at once (Common.seeds > 1; algos/packing.py)
    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type]
    on_policy: ClassVar[bool] = True

    def __init__(self, spec: TeamSpec, cfg: Any, common: Common):
        self.spec, self.cfg, self.common = spec, cfg, common
        self.device = common.device
        self.axis = SeedAxis(common.seeds)

    controller: Controller

    @abc.abstractmethod
    def train(self, batch: EpisodeBatch, t_env: int, episodes: int) -> dict[str, float]:
        """One update from freshly collected episodes; returns scalar metrics to log."""

    # Attributes that make up the learner's state for checkpoints: modules, optimizers and buffers (saved
    # through their own state_dict) and plain counters. An attribute that is None (an optional mixer) is skipped.
    state_attrs: ClassVar[tuple[str, ...]] = ()

    def state_dict(self) -> dict[str, Any]:
        state = {}
        for name in self.state_attrs:
            value = getattr(self, name)
            if value is not None:
                state[name] = value.state_dict() if hasattr(value, "state_dict") else value
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.state_attrs:
            value = getattr(self, name)
            if value is None:
                continue
            if hasattr(value, "load_state_dict"):
                value.load_state_dict(state[name])
            else:
                setattr(self, name, state[name])


def make_optimizer(params, lr: float, kind: Literal["rmsprop", "adam"], alpha: float, eps: float) -> torch.optim.Optimizer:
    """PyMARL's RMSprop (``alpha`` smoothing, ``eps``) or Adam (torch's defaults; EPyMARL's choice)."""
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps)
    return torch.optim.Adam(params, lr=lr)


def clip_grad(params, max_norm: float) -> float:
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))




class RewardStandardiser:
    """EPyMARL's ``standardise_rewards``: each reward becomes (r - running mean) / running std, the
    moments accumulated over every batch the learner trains on (Chan et al.'s parallel update, as
    EPyMARL's RunningMeanStd; initial mean 0, variance 1, count 1e-4). Unlike EPyMARL's, only real
    steps (``filled``) enter the moments and are standardised; padding stays 0."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def __call__(self, reward: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
        real = reward[filled.bool()].double()
        n = real.numel()
        if n:
            batch_mean = float(real.mean())
            batch_var = float(real.var()) if n > 1 else 0.0  # torch.var: unbiased, as EPyMARL's
            delta, total = batch_mean - self.mean, self.count + n
            self.var = (self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total) / total
            self.mean += delta * n / total
            self.count = total
        return (reward - self.mean) / max(self.var, 1e-12) ** 0.5 * filled

    def apply(self, batch: EpisodeBatch) -> EpisodeBatch:
        """``batch`` with its rewards standardised (the moments updated with them first)."""
        return replace(batch, reward=self(batch.reward, batch.filled))

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


class SeedwiseRewardStandardiser:
    """``RewardStandardiser`` for a pack: one set of running moments per seed, each seed's episodes
    (folded seed-major) standardised by its own; its state is the seeds' states, stacked."""

    def __init__(self, seeds: int) -> None:
        self.parts = [RewardStandardiser() for _ in range(seeds)]

    def apply(self, batch: EpisodeBatch) -> EpisodeBatch:
        n = len(self.parts)
        rewards = [part(r, f) for part, r, f in zip(self.parts, batch.reward.chunk(n), batch.filled.chunk(n))]
        return replace(batch, reward=torch.cat(rewards))

    def state_dict(self) -> dict[str, Any]:
        from algos.packing import stack_tree

        return stack_tree([part.state_dict() for part in self.parts])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from algos.packing import unstack_tree

        for s, part in enumerate(self.parts):
            part.load_state_dict(unstack_tree(state, s))


def reward_standardiser(seeds: int = 1):
    """EPyMARL's reward standardisation for a learner of ``seeds`` packed seeds."""
    return RewardStandardiser() if seeds == 1 else SeedwiseRewardStandardiser(seeds)
