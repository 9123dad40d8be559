"""The one vectorized multi-agent env interface every backend implements.

Everything is batched over a leading env dimension B. An env exposes one or more teams; each team has
its own agents, observations, global state, action masks and reward, and is driven by its own
controller (a learner's policy or a fixed random policy). Single-team envs have one team, "team".

Contract (the runner relies on it):
- ``reset(seeds)`` resets all B envs; ``seeds`` holds one int per env and fully determines the
  episode (no hidden RNG state survives a reset), so a checkpoint taken between episodes needs no
  env state.
- ``step(actions)`` takes one int64 tensor [B, n_agents] per team and returns a ``StepResult``.
  Envs never auto-reset: once ``done`` (terminated or truncated) for env b, further steps are allowed
  and their outputs are ignored by the runner, but must be finite.
- ``terminated`` means a true terminal state (no bootstrap); ``truncated`` means the episode limit
  was hit (bootstrap from the next state). With ``env.timeout="terminal"`` (``TimeLimitAsTerminal``)
  the limit is reported as terminal instead, as PyMARL and EPyMARL treat it. The observation returned on the final step is the real
  final observation, not the first of a new episode.
- All tensors are CPU torch tensors: float32 obs/state/reward, bool masks, float32 info values.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Literal, Mapping

import torch


@dataclass(frozen=True)
class TeamSpec:
    """Shapes of one team: what a learner for this team must be built for."""

    name: str
    n_agents: int
    obs_dim: int
    state_dim: int
    n_actions: int


@dataclass(frozen=True)
class EnvInfo:
    """Static facts about a vectorized env, recorded in every run's config.json."""

    name: str
    n_envs: int
    episode_limit: int
    teams: tuple[TeamSpec, ...]
    backend: str  # e.g. "mpe2 1.1.1" or "jaxmarl 0.2.0": lets runs from different machines compare
    # Per-episode statistics the env reports in StepResult.info, and how the runner aggregates them
    # over an episode: "last" (value on the final step, e.g. battle_won), "sum" (e.g. captures).
    episode_stats: Mapping[str, str] = field(default_factory=dict)
    # What one unit of t_env means: one step of one environment with every agent acting.
    step_unit: str = "env_step"

    def team(self, name: str) -> TeamSpec:
        for spec in self.teams:
            if spec.name == name:
                return spec
        raise KeyError(f"no team {name!r}; teams are {[t.name for t in self.teams]}")


@dataclass
class TeamObs:
    """What one team sees at one step, batched over envs."""

    obs: torch.Tensor  # [B, n_agents, obs_dim] float32
    state: torch.Tensor  # [B, state_dim] float32, complete even when obs are partial
    avail: torch.Tensor  # [B, n_agents, n_actions] bool


@dataclass
class StepResult:
    obs: dict[str, TeamObs]
    reward: dict[str, torch.Tensor]  # team -> [B] float32
    terminated: torch.Tensor  # [B] bool
    truncated: torch.Tensor  # [B] bool
    info: dict[str, torch.Tensor] = field(default_factory=dict)  # stat name -> [B] float32


class VecEnv(abc.ABC):
    """B environments stepped together. See the module docstring for the contract."""

    info: EnvInfo

    @abc.abstractmethod
    def reset(self, seeds: list[int]) -> dict[str, TeamObs]:
        ...

    @abc.abstractmethod
    def step(self, actions: Mapping[str, torch.Tensor]) -> StepResult:
        ...

    def close(self) -> None:
        pass

    @property
    def n_envs(self) -> int:
        return self.info.n_envs


# env.timeout: "truncation" (the episode limit is a time limit: bootstrapped) or "terminal" (it ends the
# episode like a terminal state, as PyMARL's and EPyMARL's runners treat it). Each env picks its default.
Timeout = Literal["truncation", "terminal"]


def timeout_as_terminal(result: StepResult) -> StepResult:
    """The step with the episode limit reported as a terminal state: no bootstrap past it."""
    return StepResult(obs=result.obs, reward=result.reward, terminated=result.terminated | result.truncated,
                      truncated=torch.zeros_like(result.truncated), info=result.info)


class TimeLimitAsTerminal(VecEnv):
    """``env.timeout="terminal"`` for an env that reports its limit as truncation (the MPE tasks): the
    episode limit then ends an episode like a terminal state, as PyMARL and EPyMARL treat it (their
    runners set terminated at the time limit; EPyMARL's gym wrapper too). Targets do not bootstrap
    from the state at the limit. Everything else passes through."""

    def __init__(self, env: VecEnv):
        self.env = env
        self.info = env.info

    def reset(self, seeds: list[int]) -> dict[str, TeamObs]:
        return self.env.reset(seeds)

    def step(self, actions: Mapping[str, torch.Tensor]) -> StepResult:
        return timeout_as_terminal(self.env.step(actions))

    def close(self) -> None:
        self.env.close()

    def __getattr__(self, name: str):  # env-specific helpers (e.g. for tests and scripts)
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


def with_timeout(env: VecEnv, timeout: Timeout) -> VecEnv:
    """``env`` (which reports its limit as truncation) as ``env.timeout`` asks."""
    return TimeLimitAsTerminal(env) if timeout == "terminal" else env
