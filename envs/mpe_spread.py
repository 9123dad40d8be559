"""MPE simple spread, two backends with identical observations, states, rewards and initial states.

- ``backend="mpe2"``: PettingZoo's parallel API (package mpe2; pettingzoo.mpe is gone), one env at a time.
- ``backend="batched"``: mpe2's dynamics re-implemented with numpy over all B envs at once
  (``envs.mpe_physics``); it reproduces mpe2 bit for bit (``tests/test_mpe_batched.py``) and is >10x faster.

N agents cover N landmarks. The team reward is the mean of mpe2's per-agent rewards, i.e.
(1 - local_ratio) * (-sum of landmark-to-nearest-agent distances) + local_ratio * mean collision penalty.
With ``sight_range`` set, the env is partially observable as in the paper: landmarks and agents
farther than the range are zeroed in an agent's observation (and flagged unseen); the global state
(all positions and velocities) stays complete. Episodes end by truncation at ``episode_limit`` (``timeout="terminal"``:
as a terminal state, PyMARL's and EPyMARL's treatment).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Optional

import numpy as np
import torch

from envs.base import EnvInfo, StepResult, TeamObs, TeamSpec, Timeout, VecEnv, with_timeout
from validation import require
from envs import mpe_physics as physics
from envs.mpe_common import apply_spread_sight, mpe2_rng, others_index, spread_state, spread_visibility

N_ACTIONS = 5  # no-op, left, right, down, up
AGENT_SIZE = 0.15  # mpe2's simple_spread agents (landmarks neither move nor collide)
COLLISION_PENALTY = 1.0


@dataclass(frozen=True)
class Config:
    n_agents: int = 3
    episode_limit: int = 25  # mpe2's default; the paper's named configs use 150
    sight_range: Optional[float] = None  # None: fully observable
    local_ratio: float = 0.5
    backend: Literal["mpe2", "batched"] = "batched"  # batched: mpe2 re-implemented in numpy over all envs (exact, ~40x faster)
    timeout: Timeout = "truncation"  # mpe2 reports its limit as truncation (envs.base.Timeout)

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
        from mpe2 import simple_spread_v3

        self.cfg = cfg
        self.envs = [
            simple_spread_v3.parallel_env(N=cfg.n_agents, local_ratio=cfg.local_ratio,
                                          max_cycles=cfg.episode_limit, continuous_actions=False)
            for _ in range(n_envs)
        ]
        self.agents = [f"agent_{i}" for i in range(cfg.n_agents)]
        self.info = env_info(cfg, n_envs, backend_name(cfg))
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
            obs=torch.from_numpy(np.array(obs, dtype=np.float32)),  # a copy: _last_obs is reused next step
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


class BatchedSpread(VecEnv):
    """All B envs as numpy arrays, stepped together with mpe2's physics (``envs.mpe_physics``).

    Every quantity is computed in float64 in mpe2's order of operations, so observations, states and
    rewards equal the mpe2 backend's exactly for the same seeds and actions.
    """

    def __init__(self, cfg: Config, n_envs: int):
        n = cfg.n_agents
        self.cfg = cfg
        self.info = env_info(cfg, n_envs, backend_name(cfg))
        # Landmarks neither move nor collide in simple spread, so only the agents are simulated.
        self.bodies = physics.Bodies.make(agent_size=np.full(n, AGENT_SIZE))
        self._others = others_index(n)
        self._not_self = ~np.eye(n, dtype=bool)
        self._avail = torch.ones(n_envs, n, N_ACTIONS, dtype=torch.bool)
        self._comm = np.zeros((n_envs, n, 2 * (n - 1)))  # silent agents: mpe2's comm slots stay zero
        self.pos = np.zeros((n_envs, n, 2))
        self.vel = np.zeros((n_envs, n, 2))
        self.landmarks = np.zeros((n_envs, n, 2))
        self.t = 0

    def _team_obs(self) -> dict[str, TeamObs]:
        b, n = self.pos.shape[:2]
        rel_landmarks = self.landmarks[:, None, :, :] - self.pos[:, :, None, :]
        rel_others = (self.pos[:, None, :, :] - self.pos[:, :, None, :])[:, np.arange(n)[:, None], self._others]
        obs = np.concatenate([self.vel, self.pos, rel_landmarks.reshape(b, n, -1), rel_others.reshape(b, n, -1),
                              self._comm], axis=-1).astype(np.float32)
        if self.cfg.sight_range is not None:
            obs = apply_spread_sight(obs, *spread_visibility(self.pos, self.landmarks, self.cfg.sight_range))
        return {"team": TeamObs(obs=torch.from_numpy(obs),
                                state=torch.from_numpy(spread_state(self.pos, self.vel, self.landmarks)),
                                avail=self._avail.clone())}

    def reset(self, seeds: list[int]) -> dict[str, TeamObs]:
        require(len(seeds) == self.n_envs, f"reset needs {self.n_envs} seeds, got {len(seeds)}")
        n = self.cfg.n_agents
        for b, seed in enumerate(seeds):
            # mpe2's reset_world: each agent's position, then each landmark's, uniform in [-1, 1]^2.
            draws = mpe2_rng(int(seed)).uniform(-1, +1, (2 * n, 2))
            self.pos[b], self.landmarks[b] = draws[:n], draws[n:]
        self.vel[:] = 0.0
        self.t = 0
        return self._team_obs()

    def _reward(self) -> np.ndarray:
        # mpe2: global = 0 - d_0 - d_1 - ... over landmarks (d_l: distance to the nearest agent), i.e. minus
        # a left-to-right sum; local = -1 per other agent in collision; each agent's reward mixes the two.
        nearest = physics.distances(self.pos, self.landmarks).min(axis=1)
        global_reward = -np.cumsum(nearest, axis=1)[:, -1]
        touching = (physics.distances(self.pos, self.pos) < 2 * AGENT_SIZE) & self._not_self
        local_reward = -COLLISION_PENALTY * touching.sum(axis=2)
        ratio = self.cfg.local_ratio
        per_agent = global_reward[:, None] * (1 - ratio) + local_reward * ratio
        return per_agent.mean(axis=1).astype(np.float32)

    def step(self, actions: Mapping[str, torch.Tensor]) -> StepResult:
        acts = actions["team"].cpu().numpy()
        self.pos, self.vel = physics.step(self.pos, self.vel, acts, self.bodies)
        self.t += 1
        reward = self._reward()
        truncated = np.full(self.n_envs, self.t >= self.cfg.episode_limit)
        return StepResult(obs=self._team_obs(), reward={"team": torch.from_numpy(reward)},
                          terminated=torch.zeros(self.n_envs, dtype=torch.bool),
                          truncated=torch.from_numpy(truncated))


BATCHED_BACKEND = "batched numpy (mpe2 1.1.1 dynamics)"


def backend_name(cfg: Config) -> str:
    from envs import package_version

    return BATCHED_BACKEND if cfg.backend == "batched" else package_version("mpe2")


def make(cfg: Config, n_envs: int) -> VecEnv:
    if cfg.backend == "batched":
        env: VecEnv = BatchedSpread(cfg, n_envs)
    else:
        env = PettingZooSpread(cfg, n_envs)
    return with_timeout(env, cfg.timeout)
