"""Predator-prey of the ASAE paper (section 5.3) as a batched numpy env on mpe2's physics.

Two teams, ``"predator"`` (``n_predators``) and ``"prey"`` (``n_prey``), in the square arena
[-1, 1]^2 with ``n_obstacles`` stationary obstacles (the paper: two) placed uniformly at random in
[-0.5, 0.5]^2 around the centre at every reset. Bodies, speeds and forces are mpe2's ``simple_tag``:
predators size 0.075, accel 3, max speed 1.0; prey size 0.05, accel 4, max speed 1.3; obstacles
size 0.2 (immovable, they collide with every agent); agents start uniformly inside the arena.

Walls: inelastic, by clipping. After each physics step an agent's centre is clipped to
[-1 + size, 1 - size] (its disc never leaves the arena) and the velocity component into the wall is
zeroed, so it slides along the wall. No position can ever leave the arena.

Capture: after the physics step, an uncaught prey is caught when a predator touches it, i.e. their
distance is below predator size + prey size (0.125; strict ``<`` as mpe2's ``is_collision``). A
caught prey is out of the game for the rest of the episode: it is frozen where it was caught (velocity
zero), no longer collides, is no longer anyone's nearest prey, drops out of the prey team's reward terms,
observes zeros (like a dead SMAC unit), is hidden in the others' observations, and only no-op (action 0)
is available to it. Two predators touching the same prey in one step are one capture.

Rewards (per step, from the positions after the step; "active" = prey uncaught at the start of the step,
so a prey caught in this step still counts once, at its capture position):
- predator team: -(sum over predators of the distance to the nearest active prey)
  + capture_bonus * (prey caught this step); the distance term is 0 once no prey is active;
- prey team: sum over active prey of (distance to the nearest predator - centre_penalty_coef *
  distance from the centre) - capture_penalty * (prey caught this step).
The paper gives no weights; capture_bonus = capture_penalty = 10 follow mpe2's simple_tag (+-10 per
contact), centre_penalty_coef = 0.5 is our choice.

Episodes end ``terminated`` when every prey is caught (a true terminal state) and otherwise
``truncated`` at ``episode_limit``.

Observation (both teams, same layout; agents are ordered predators then prey, "others" are all agents
but oneself in that order):
  [own vel 2, own pos 2, obstacle pos - own pos 2*n_obstacles, other pos - own pos 2*(A-1),
   other vel 2*(A-1), (only with sight_range: obstacle seen flags n_obstacles), other present flags A-1]
with A = n_predators + n_prey. An other agent is "present" when it is in play (not a caught prey) and,
with ``sight_range``, within the range (distance <= sight_range); what is not present / not seen reads
as zeros. Walls are implicit in the own absolute position. Fully observable by default.
Global state (the same for both teams): [all agent pos 2A, all agent vel 2A, obstacle pos 2*n_obstacles,
prey caught flags n_prey].
Info per step: ``captures`` (prey caught this step; episode stat "sum") and ``capture_rate`` (fraction of
prey caught so far; "last", so the runner logs ``test_capture_rate_mean`` = the paper's capture rate).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

from envs import mpe_physics as physics
from envs.base import EnvInfo, StepResult, TeamObs, TeamSpec, Timeout, VecEnv, with_timeout
from validation import require
from envs.mpe_common import mpe2_rng, others_index

N_ACTIONS = 5  # no-op, left, right, down, up (mpe2's Discrete(5))
ARENA = 1.0  # walls at +-ARENA
OBSTACLE_SPAWN = 0.5  # obstacle centres uniform in [-0.5, 0.5]^2: "randomly placed around the centre"
PREDATOR = dict(size=0.075, accel=3.0, max_speed=1.0)  # mpe2 simple_tag adversary
PREY = dict(size=0.05, accel=4.0, max_speed=1.3)  # mpe2 simple_tag good agent
OBSTACLE_SIZE = 0.2
CAPTURE_DISTANCE = PREDATOR["size"] + PREY["size"]
BACKEND = "batched numpy (mpe2 1.1.1 dynamics)"


@dataclass(frozen=True)
class Config:
    n_predators: int = 3
    n_prey: int = 3  # paper: 3 random prey; competitive runs use as many prey as predators
    n_obstacles: int = 2
    episode_limit: int = 25  # as mpe2's default; the paper's configs use 150
    sight_range: Optional[float] = None  # None: fully observable (the paper)
    capture_bonus: float = 10.0
    capture_penalty: float = 10.0
    centre_penalty_coef: float = 0.5
    timeout: Timeout = "truncation"  # mpe2 reports its limit as truncation (envs.base.Timeout)

    def check(self) -> None:
        require(1 <= self.n_predators <= 10, f"env.n_predators={self.n_predators} is not valid; use 1 to 10")
        require(1 <= self.n_prey <= 10, f"env.n_prey={self.n_prey} is not valid; use 1 to 10")
        require(0 <= self.n_obstacles <= 6, f"env.n_obstacles={self.n_obstacles} is not valid; use 0 to 6")
        require(self.episode_limit >= 1, f"env.episode_limit={self.episode_limit} must be at least 1")
        require(self.sight_range is None or self.sight_range > 0,
                f"env.sight_range={self.sight_range} must be positive or null (fully observable)")
        for key in ("capture_bonus", "capture_penalty", "centre_penalty_coef"):
            require(getattr(self, key) >= 0, f"env.{key}={getattr(self, key)} must be >= 0")

    @property
    def n_agents(self) -> int:
        return self.n_predators + self.n_prey


def obs_dim(cfg: Config) -> int:
    others = cfg.n_agents - 1
    return 4 + 2 * cfg.n_obstacles + 5 * others + (cfg.n_obstacles if cfg.sight_range is not None else 0)


def state_dim(cfg: Config) -> int:
    return 4 * cfg.n_agents + 2 * cfg.n_obstacles + cfg.n_prey


class PredatorPrey(VecEnv):
    """B predator-prey games stepped together. Entities: predators, prey, obstacles (in this order)."""

    def __init__(self, cfg: Config, n_envs: int):
        self.cfg = cfg
        p, y, o = cfg.n_predators, cfg.n_prey, cfg.n_obstacles
        a = p + y
        self.info = EnvInfo(
            name="predator_prey", n_envs=n_envs, episode_limit=cfg.episode_limit,
            teams=(TeamSpec("predator", p, obs_dim(cfg), state_dim(cfg), N_ACTIONS),
                   TeamSpec("prey", y, obs_dim(cfg), state_dim(cfg), N_ACTIONS)),
            backend=backend_name(cfg), episode_stats={"captures": "sum", "capture_rate": "last"},
        )
        self.predators, self.prey, self.agents, self.obstacles = slice(0, p), slice(p, a), slice(0, a), slice(a, a + o)
        self.bodies = physics.Bodies.make(
            agent_size=[PREDATOR["size"]] * p + [PREY["size"]] * y,
            agent_accel=[PREDATOR["accel"]] * p + [PREY["accel"]] * y,
            agent_max_speed=[PREDATOR["max_speed"]] * p + [PREY["max_speed"]] * y,
            landmark_size=[OBSTACLE_SIZE] * o,
        )
        self._wall = ARENA - self.bodies.size[:a, None]  # [A, 1]: how far an agent's centre may go
        self._others = others_index(a)
        self.pos = np.zeros((n_envs, a + o, 2))
        self.vel = np.zeros((n_envs, a + o, 2))
        self.caught = np.zeros((n_envs, y), dtype=bool)
        self.t = 0

    # --- episode -------------------------------------------------------------------------------
    def reset(self, seeds: list[int]) -> dict[str, TeamObs]:
        require(len(seeds) == self.n_envs, f"reset needs {self.n_envs} seeds, got {len(seeds)}")
        a, o = self.cfg.n_agents, self.cfg.n_obstacles
        for b, seed in enumerate(seeds):
            rng = mpe2_rng(int(seed))
            self.pos[b, :a] = rng.uniform(-1, 1, (a, 2)) * self._wall
            self.pos[b, a:] = rng.uniform(-OBSTACLE_SPAWN, OBSTACLE_SPAWN, (o, 2))
        self.vel[:] = 0.0
        self.caught[:] = False
        self.t = 0
        return self.observe()

    def step(self, actions: Mapping[str, torch.Tensor]) -> StepResult:
        cfg = self.cfg
        acts = np.concatenate([actions["predator"].cpu().numpy(), actions["prey"].cpu().numpy()], axis=1)
        was_active = ~self.caught
        acts[:, self.prey] = np.where(was_active, acts[:, self.prey], physics.NOOP)
        active = np.ones(self.pos.shape[:2], dtype=bool)
        active[:, self.prey] = was_active
        pos, vel = physics.step(self.pos, self.vel, acts, self.bodies, active)
        self.pos, self.vel = self._walls(pos, vel)

        dist = physics.distances(self.pos[:, self.predators], self.pos[:, self.prey])  # [B, P, Y]
        captured = was_active & (dist < CAPTURE_DISTANCE).any(axis=1)
        self.caught |= captured
        self.vel[:, self.prey][self.caught] = 0.0  # a slice is a view: this freezes the caught prey
        self.t += 1

        n_captured = captured.sum(axis=1)
        nearest_prey = np.where(was_active[:, None, :], dist, np.inf).min(axis=2)  # [B, P]
        chase = np.where(np.isinf(nearest_prey), 0.0, nearest_prey).sum(axis=1)
        nearest_predator = dist.min(axis=1)  # [B, Y]
        from_centre = np.linalg.norm(self.pos[:, self.prey], axis=-1)
        flee = np.where(was_active, nearest_predator - cfg.centre_penalty_coef * from_centre, 0.0).sum(axis=1)
        reward = {"predator": -chase + cfg.capture_bonus * n_captured,
                  "prey": flee - cfg.capture_penalty * n_captured}

        terminated = self.caught.all(axis=1)
        truncated = ~terminated & (self.t >= cfg.episode_limit)
        info = {"captures": n_captured, "capture_rate": self.caught.mean(axis=1)}
        as_tensor = lambda x: torch.from_numpy(np.asarray(x, dtype=np.float32))  # noqa: E731
        return StepResult(obs=self.observe(), reward={k: as_tensor(v) for k, v in reward.items()},
                          terminated=torch.from_numpy(terminated), truncated=torch.from_numpy(truncated),
                          info={k: as_tensor(v) for k, v in info.items()})

    def _walls(self, pos: np.ndarray, vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clip agent centres into the arena and zero the velocity component that points into the wall."""
        agent_pos, agent_vel = pos[:, self.agents], vel[:, self.agents]
        low, high = agent_pos < -self._wall, agent_pos > self._wall
        agent_vel = np.where(low, np.maximum(agent_vel, 0.0), np.where(high, np.minimum(agent_vel, 0.0), agent_vel))
        pos[:, self.agents] = np.clip(agent_pos, -self._wall, self._wall)
        vel[:, self.agents] = agent_vel
        return pos, vel

    # --- observations ---------------------------------------------------------------------------
    def observe(self) -> dict[str, TeamObs]:
        """Both teams' observations of the current state (what reset and step return)."""
        cfg = self.cfg
        b, a, o = self.n_envs, cfg.n_agents, cfg.n_obstacles
        idx = np.arange(a)[:, None]
        agent_pos, agent_vel = self.pos[:, self.agents], self.vel[:, self.agents]
        in_play = np.ones((b, a), dtype=bool)
        in_play[:, self.prey] = ~self.caught
        rel_obstacles = self.pos[:, None, self.obstacles] - agent_pos[:, :, None]  # [B, A, O, 2]
        rel_agents = agent_pos[:, None, :] - agent_pos[:, :, None]  # [B, A, A, 2]: j - i
        present = np.broadcast_to(in_play[:, None, :], (b, a, a))[:, idx, self._others]  # [B, A, A-1]
        flags = []
        if cfg.sight_range is not None:
            seen_obstacles = physics.distances(agent_pos, self.pos[:, self.obstacles]) <= cfg.sight_range
            seen_agents = physics.distances(agent_pos, agent_pos)[:, idx, self._others] <= cfg.sight_range
            rel_obstacles = rel_obstacles * seen_obstacles[..., None]
            present = present & seen_agents
            flags.append(seen_obstacles)
        flags.append(present)
        mask = present[..., None]
        other_pos = rel_agents[:, idx, self._others] * mask
        other_vel = np.broadcast_to(agent_vel[:, None], (b, a, a, 2))[:, idx, self._others] * mask
        obs = np.concatenate([agent_vel, agent_pos, rel_obstacles.reshape(b, a, 2 * o),
                              other_pos.reshape(b, a, -1), other_vel.reshape(b, a, -1), *flags], axis=-1)
        obs[:, self.prey] *= ~self.caught[..., None]  # a caught prey observes zeros
        obs = torch.from_numpy(obs.astype(np.float32))
        state = torch.from_numpy(np.concatenate([
            agent_pos.reshape(b, -1), agent_vel.reshape(b, -1), self.pos[:, self.obstacles].reshape(b, -1),
            self.caught], axis=-1).astype(np.float32))
        prey_avail = torch.ones(b, cfg.n_prey, N_ACTIONS, dtype=torch.bool)
        prey_avail[..., 1:] = torch.from_numpy(~self.caught)[..., None]
        return {
            "predator": TeamObs(obs=obs[:, self.predators].contiguous(), state=state,
                                avail=torch.ones(b, cfg.n_predators, N_ACTIONS, dtype=torch.bool)),
            "prey": TeamObs(obs=obs[:, self.prey].contiguous(), state=state.clone(), avail=prey_avail),
        }


def backend_name(cfg: Config) -> str:
    return BACKEND


def make(cfg: Config, n_envs: int) -> VecEnv:
    return with_timeout(PredatorPrey(cfg, n_envs), cfg.timeout)
