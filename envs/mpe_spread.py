"""MPE simple spread through PettingZoo's parallel API (package mpe2; pettingzoo.mpe is gone).

N agents cover N landmarks. The team reward is the mean of mpe2's per-agent rewards, i.e.
(1 - local_ratio) * (-sum of landmark-to-nearest-agent distances) + local_ratio * mean collision penalty.
With ``sight_range`` set, the env is partially observable as in the paper: landmarks and agents
farther than the range are zeroed in an agent's observation (and flagged unseen); the global state
(all positions and velocities) stays complete. Episodes end by truncation at ``episode_limit``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Optional

import numpy as np
import torch

from envs.base import EnvInfo, StepResult, TeamObs, TeamSpec, VecEnv
from envs.config import require
from envs.mpe_common import apply_spread_sight, spread_state, spread_visibility

N_ACTIONS = 5  # no-op, left, right, down, up


@dataclass(frozen=True)
class Config:
    n_agents: int = 3
    episode_limit: int = 25  # mpe2's default; the paper's named configs use 150
    sight_range: Optional[float] = None  # None: fully observable
    local_ratio: float = 0.5
    backend: Literal["mpe2"] = "mpe2"

    def check(self) -> None:
        require(2 <= self.n_agents <= 10, f"env.n_agents={self.n_agents} is not valid; use 2 to 10 (paper: 3, 4, 5)")
        require(self.episode_limit >= 1, f"env.episode_limit={self.episode_limit} must be at least 1")
        require(self.sight_range is None or self.sight_range > 0,
                f"env.sight_range={self.sight_range} must be positive or null (fully observable)")
        require(0.0 <= self.local_ratio <= 1.0, f"env.local_ratio={self.local_ratio} must be in [0, 1]")


def obs_dim(cfg: Config) -> int:
    n = cfg.n_agents
    return 6 * n + (2 * n - 1 if cfg.sight_range is not None else 0)


def team_spec(cfg: Config) -> TeamSpec:
    return TeamSpec("team", cfg.n_agents, obs_dim(cfg), 6 * cfg.n_agents, N_ACTIONS)


def env_info(cfg: Config, n_envs: int, backend: str) -> EnvInfo:
    return EnvInfo(name="mpe_spread", n_envs=n_envs, episode_limit=cfg.episode_limit,
                   teams=(team_spec(cfg),), backend=backend)


class PettingZooSpread(VecEnv):
    """B mpe2 parallel envs stepped one after another in Python (mpe2 has no batched mode)."""

    def __init__(self, cfg: Config, n_envs: int):
        from importlib.metadata import version

        from mpe2 import simple_spread_v3

        self.cfg = cfg
        self.envs = [
            simple_spread_v3.parallel_env(N=cfg.n_agents, local_ratio=cfg.local_ratio,
                                          max_cycles=cfg.episode_limit, continuous_actions=False)
            for _ in range(n_envs)
        ]
        self.agents = [f"agent_{i}" for i in range(cfg.n_agents)]
        self.info = env_info(cfg, n_envs, f"mpe2 {version('mpe2')}")
        self._avail = torch.ones(n_envs, cfg.n_agents, N_ACTIONS, dtype=torch.bool)
        self._last_obs = np.zeros((n_envs, cfg.n_agents, 6 * cfg.n_agents), dtype=np.float32)

    def _positions(self):
        worlds = [e.unwrapped.world for e in self.envs]
        agent_pos = np.array([[a.state.p_pos for a in w.agents] for w in worlds])
        agent_vel = np.array([[a.state.p_vel for a in w.agents] for w in worlds])
        landmark_pos = np.array([[lm.state.p_pos for lm in w.landmarks] for w in worlds])
        return agent_pos, agent_vel, landmark_pos

    def _team_obs(self) -> dict[str, TeamObs]:
        agent_pos, agent_vel, landmark_pos = self._positions()
        obs = self._last_obs
        if self.cfg.sight_range is not None:
            obs = apply_spread_sight(obs, *spread_visibility(agent_pos, landmark_pos, self.cfg.sight_range))
        return {"team": TeamObs(
            obs=torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32)),
            state=torch.from_numpy(spread_state(agent_pos, agent_vel, landmark_pos)),
            avail=self._avail.clone(),
        )}

    def reset(self, seeds: list[int]) -> dict[str, TeamObs]:
        require(len(seeds) == self.n_envs, f"reset needs {self.n_envs} seeds, got {len(seeds)}")
        for b, (env, seed) in enumerate(zip(self.envs, seeds)):
            obs, _ = env.reset(seed=int(seed))
            self._last_obs[b] = np.stack([obs[a] for a in self.agents])
        return self._team_obs()

    def step(self, actions: Mapping[str, torch.Tensor]) -> StepResult:
        acts = actions["team"].cpu().numpy()
        n = self.n_envs
        reward = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        for b, env in enumerate(self.envs):
            if not env.agents:  # finished earlier: the runner ignores this env until the next reset
                truncated[b] = True
                continue
            obs, rew, term, trunc, _ = env.step({a: int(acts[b, i]) for i, a in enumerate(self.agents)})
            self._last_obs[b] = np.stack([obs[a] for a in self.agents])
            reward[b] = np.mean([rew[a] for a in self.agents])
            terminated[b] = any(term.values())
            truncated[b] = any(trunc.values()) and not terminated[b]
        return StepResult(obs=self._team_obs(), reward={"team": torch.from_numpy(reward)},
                          terminated=torch.from_numpy(terminated), truncated=torch.from_numpy(truncated))


def make(cfg: Config, n_envs: int) -> VecEnv:
    return PettingZooSpread(cfg, n_envs)
