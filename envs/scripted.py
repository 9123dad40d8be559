"""Scripted policies: fixed rules a learned policy should beat, batched over B envs like the envs.

Each takes what a team sees (its action masks; the global state where a rule needs positions) and
returns int64 actions [B, n_agents]. They read nothing an env does not expose through its step results,
except ``focus_weakest``, which is given the enemies' health (scripts may see the whole state).

SMAX actions: 0-3 move north / east / south / west, 4 stop, 5 + j attack enemy j.
MPE spread actions: 0 no-op, 1 -x, 2 +x, 3 -y, 4 +y; the global state is every agent's position, every
agent's velocity, then every landmark's position (envs.mpe_common.spread_state).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

SMAX_EAST, SMAX_STOP, SMAX_FIRST_ATTACK = 1, 4, 5


def uniform(avail: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform over each agent's available actions."""
    flat = avail.reshape(-1, avail.shape[-1]).float()
    return torch.multinomial(flat, 1, generator=generator).reshape(avail.shape[:-1])


def _advance_or_stop(avail: torch.Tensor) -> torch.Tensor:
    return torch.where(avail[..., SMAX_EAST], SMAX_EAST, SMAX_STOP)


def focus_fire(avail: torch.Tensor) -> torch.Tensor:
    """SMAX: every agent attacks the lowest-numbered enemy in its range (agents number enemies alike, so
    agents in range of the same enemies shoot the same one), else walks east towards the enemy's side,
    else stops."""
    attack = avail[..., SMAX_FIRST_ATTACK:]
    return torch.where(attack.any(-1), attack.float().argmax(-1) + SMAX_FIRST_ATTACK, _advance_or_stop(avail))


def focus_weakest(avail: torch.Tensor, enemy_health: torch.Tensor) -> torch.Tensor:
    """SMAX: every agent attacks the enemy in its range with the least health left (``enemy_health``
    [B, n_enemies], any scale), else walks east, else stops."""
    attack = avail[..., SMAX_FIRST_ATTACK:]
    health = enemy_health[:, None, :].expand_as(attack).float()
    target = torch.where(attack, health, torch.full_like(health, float("inf"))).argmin(-1)
    return torch.where(attack.any(-1), target + SMAX_FIRST_ATTACK, _advance_or_stop(avail))


# ----------------------------------------------------------------------------- MPE spread

# How far ahead a mover looks when it brakes: it steers towards target - BRAKE * velocity, so it slows
# down before reaching the target instead of overshooting it (mpe2's damping is 0.25 per 0.1 s step).
# 0.25: the best of 0.15 - 1.5 for assigned_landmark on N = 3 and 5, 25 and 150 steps (0.3 within 1 of it).
BRAKE = 0.25
ARRIVED = 0.02  # closer than this (and the braking point reached): no-op


def spread_positions(state: torch.Tensor, n_agents: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MPE spread's global state [B, 6N] -> agent positions, velocities and landmark positions [B, N, 2]."""
    s = state.detach().cpu().numpy().astype(np.float64)
    b, n = s.shape[0], n_agents
    return (s[:, :2 * n].reshape(b, n, 2), s[:, 2 * n:4 * n].reshape(b, n, 2), s[:, 4 * n:6 * n].reshape(b, n, 2))


def move_towards(pos: np.ndarray, vel: np.ndarray, target: np.ndarray) -> torch.Tensor:
    """The one discrete MPE move (along the axis with the larger gap) that brings each agent to its target."""
    gap = target - (pos + BRAKE * vel)
    axis = np.abs(gap).argmax(-1)  # 0: x, 1: y
    along = np.take_along_axis(gap, axis[..., None], -1)[..., 0]
    action = np.where(axis == 0, np.where(along < 0, 1, 2), np.where(along < 0, 3, 4))
    action = np.where(np.abs(gap).max(-1) < ARRIVED, 0, action)
    return torch.from_numpy(action.astype(np.int64))


def nearest_landmark(state: torch.Tensor, n_agents: int) -> torch.Tensor:
    """MPE spread: each agent heads for the landmark nearest to it (agents may pick the same one)."""
    pos, vel, landmarks = spread_positions(state, n_agents)
    d = np.linalg.norm(pos[:, :, None, :] - landmarks[:, None, :, :], axis=-1)  # [B, agent, landmark]
    target = np.take_along_axis(landmarks, d.argmin(-1)[..., None].repeat(2, -1), 1)
    return move_towards(pos, vel, target)


def assigned_landmark(state: torch.Tensor, n_agents: int) -> torch.Tensor:
    """MPE spread: agents head for distinct landmarks, the assignment with the least total distance
    (recomputed every step; all N! assignments compared, so for the paper's N <= 5)."""
    pos, vel, landmarks = spread_positions(state, n_agents)
    d = np.linalg.norm(pos[:, :, None, :] - landmarks[:, None, :, :], axis=-1)
    perms = np.array(list(itertools.permutations(range(n_agents))))  # [P, N]: agent i -> landmark perm[i]
    cost = d[:, np.arange(n_agents)[None, :], perms].sum(-1)  # [B, P]
    chosen = perms[cost.argmin(-1)]  # [B, N]
    target = np.take_along_axis(landmarks, chosen[..., None].repeat(2, -1), 1)
    return move_towards(pos, vel, target)
