"""Pieces shared by every MPE backend (the PettingZoo/mpe2 adapter and any batched re-implementation),
so partial observability and the global state are defined once."""
from __future__ import annotations

import numpy as np


def others_index(n: int) -> np.ndarray:
    """[n, n-1] indices of the other agents, in mpe2's order (all agents but self, ascending)."""
    return np.array([[j for j in range(n) if j != i] for i in range(n)], dtype=np.int64)


def spread_visibility(agent_pos: np.ndarray, landmark_pos: np.ndarray, sight_range: float):
    """Which landmarks and other agents each agent sees (Euclidean distance <= sight_range).

    agent_pos [B, N, 2], landmark_pos [B, L, 2] -> (landmarks [B, N, L], others [B, N, N-1]) bool.
    """
    n = agent_pos.shape[1]
    d_lm = np.linalg.norm(landmark_pos[:, None, :, :] - agent_pos[:, :, None, :], axis=-1)
    d_ag = np.linalg.norm(agent_pos[:, None, :, :] - agent_pos[:, :, None, :], axis=-1)
    d_other = np.take_along_axis(d_ag, np.broadcast_to(others_index(n), d_ag.shape[:1] + (n, n - 1)), axis=2)
    return d_lm <= sight_range, d_other <= sight_range


def apply_spread_sight(obs: np.ndarray, lm_visible: np.ndarray, other_visible: np.ndarray) -> np.ndarray:
    """Hide what an agent cannot see in mpe2's spread observation and append visibility flags.

    mpe2 layout per agent: [vel 2, pos 2, landmark rel pos 2L, other rel pos 2(N-1), comm 2(N-1)].
    Hidden entities read as zeros; the appended flags (L + N-1) tell a zero apart from "not seen".
    """
    n_lm = lm_visible.shape[-1]
    n_other = other_visible.shape[-1]
    keep = np.concatenate([
        np.ones(obs.shape[:2] + (4,), dtype=bool),
        np.repeat(lm_visible, 2, axis=-1),
        np.repeat(other_visible, 2, axis=-1),
        np.repeat(other_visible, 2, axis=-1),
    ], axis=-1)
    assert keep.shape[-1] == obs.shape[-1] == 4 + 2 * n_lm + 4 * n_other
    return np.concatenate([obs * keep, lm_visible, other_visible], axis=-1).astype(np.float32)


def spread_state(agent_pos: np.ndarray, agent_vel: np.ndarray, landmark_pos: np.ndarray) -> np.ndarray:
    """Complete global state [B, 6N]: every agent's position and velocity and every landmark's position."""
    b = agent_pos.shape[0]
    return np.concatenate(
        [agent_pos.reshape(b, -1), agent_vel.reshape(b, -1), landmark_pos.reshape(b, -1)], axis=-1
    ).astype(np.float32)


def mpe2_rng(seed: int) -> np.random.Generator:
    """The generator mpe2 resets a world with: ``gymnasium.utils.seeding.np_random(seed)``, spelled out
    so that batched backends reproduce mpe2's initial states without importing gymnasium."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
