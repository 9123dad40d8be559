"""MPE particle physics (mpe2's ``World.step``) vectorized over a leading env dimension B with numpy.

Entities live in arrays shaped [B, E, 2] (float64, like mpe2). One ``World.step`` is:

1. action force: a discrete action (no-op, left, right, down, up) becomes a unit direction times the
   agent's ``accel`` (mpe2's "sensitivity", 5.0 when an agent has no ``accel``);
2. contact forces between every pair of colliding entities: with ``delta = p_i - p_j`` and
   ``d = |delta|``, entity i is pushed by ``contact_force * delta / d * k * log(1 + exp(-(d - d_min) / k))``
   (``d_min`` the sum of the sizes, ``k`` the contact margin): a softplus of the penetration, so
   entities slightly apart already repel a little. Immovable entities push but are not pushed;
3. integration: ``p += v dt`` (with the old velocity), then ``v = v (1 - damping) + F / m dt``, and a
   velocity faster than ``max_speed`` is scaled back to ``max_speed``.

The forces on an entity are summed in mpe2's order (its action force, then the contacts with entities
0, 1, 2, ... in turn) so that the result equals mpe2's bit for bit; see ``tests/test_mpe_batched.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# mpe2's World defaults (_mpe_utils/core.py).
DT = 0.1
DAMPING = 0.25
CONTACT_FORCE = 1e2
CONTACT_MARGIN = 1e-3
DEFAULT_ACCEL = 5.0  # SimpleEnv._set_action's sensitivity when an agent sets no accel

# Discrete(5) layout of mpe2: the unit force direction of each action.
ACTION_DIRECTIONS = np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
NOOP, LEFT, RIGHT, DOWN, UP = range(5)


@dataclass(frozen=True)
class Bodies:
    """Static properties of the E entities of a world (the same in every env). Agents come first."""

    size: np.ndarray  # [E]
    movable: np.ndarray  # [E] bool
    collide: np.ndarray  # [E] bool
    max_speed: np.ndarray  # [E], inf = no limit
    accel: np.ndarray  # [n_agents]: force per unit action
    mass: np.ndarray  # [E]

    @staticmethod
    def make(agent_size, agent_accel=DEFAULT_ACCEL, agent_max_speed=np.inf, agent_collide=True,
             landmark_size=(), landmark_collide=True) -> "Bodies":
        """Agents (movable) followed by landmarks (immovable); scalars broadcast over agents."""
        agent_size = np.atleast_1d(np.asarray(agent_size, dtype=np.float64))
        n_agents, n_landmarks = len(agent_size), len(np.atleast_1d(landmark_size))
        landmark_size = np.asarray(landmark_size, dtype=np.float64).reshape(n_landmarks)

        def per_agent(value, dtype=np.float64):
            return np.broadcast_to(np.asarray(value, dtype=dtype), (n_agents,)).copy()

        return Bodies(
            size=np.concatenate([agent_size, landmark_size]),
            movable=np.concatenate([np.ones(n_agents, bool), np.zeros(n_landmarks, bool)]),
            collide=np.concatenate([per_agent(agent_collide, bool),
                                    np.broadcast_to(np.asarray(landmark_collide, bool), (n_landmarks,))]),
            max_speed=np.concatenate([per_agent(agent_max_speed), np.full(n_landmarks, np.inf)]),
            accel=per_agent(agent_accel),
            mass=np.ones(n_agents + n_landmarks),
        )

    @property
    def n_agents(self) -> int:
        return len(self.accel)


def action_force(actions: np.ndarray, accel: np.ndarray) -> np.ndarray:
    """Discrete actions [B, A] (ints 0..4) -> forces [B, A, 2], as mpe2's ``_set_action``."""
    return ACTION_DIRECTIONS[actions] * accel[:, None]


def contact_forces(pos: np.ndarray, size: np.ndarray, collide: np.ndarray) -> np.ndarray:
    """Pairwise contact forces [B, E, E, 2]: entry (i, j) is the force of entity j on entity i.

    ``collide`` is [E] or, for per-env removals (a caught prey), [B, E]. A pair contributes only if both
    collide. Two entities at exactly the same point (where mpe2 divides by zero and yields NaN) push
    each other with zero force here.
    """
    delta = pos[:, :, None, :] - pos[:, None, :, :]
    # sqrt(dx^2 + dy^2) in this order is what mpe2's np.sqrt(np.sum(np.square(delta))) computes.
    dist = np.sqrt(np.square(delta[..., 0]) + np.square(delta[..., 1]))
    dist_min = size[:, None] + size[None, :]
    penetration = np.logaddexp(0, -(dist - dist_min) / CONTACT_MARGIN) * CONTACT_MARGIN
    collide = np.broadcast_to(collide, pos.shape[:2])
    pair = collide[:, :, None] & collide[:, None, :] & (dist > 0)  # dist > 0 also drops i == j
    with np.errstate(divide="ignore", invalid="ignore"):
        force = CONTACT_FORCE * delta / dist[..., None] * penetration[..., None]
    return np.where(pair[..., None], force, 0.0)


def step(pos: np.ndarray, vel: np.ndarray, actions: np.ndarray, bodies: Bodies,
         active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One mpe2 ``World.step`` for B worlds: (pos, vel) [B, E, 2] and actions [B, A] -> new (pos, vel).

    ``active`` [B, E] (optional) takes entities out of play per env: an inactive entity neither moves
    nor collides (used for caught prey). Returns new arrays; the inputs are not modified.
    """
    b, e = pos.shape[:2]
    n_agents = bodies.n_agents
    collide, movable = bodies.collide, np.broadcast_to(bodies.movable, (b, e))
    if active is not None:
        collide, movable = collide & active, movable & active
    own = np.zeros((b, e, 1, 2))
    own[:, :n_agents, 0] = action_force(actions, bodies.accel)
    # mpe2 adds to an entity's force its action force, then each contact in entity order; a cumulative
    # sum along that axis adds in exactly this order (np.sum could pair terms differently).
    force = np.cumsum(np.concatenate([own, contact_forces(pos, bodies.size, collide)], axis=2), axis=2)[:, :, -1]

    new_pos = pos + vel * DT
    new_vel = vel * (1 - DAMPING)
    new_vel = new_vel + (force / bodies.mass[:, None]) * DT
    speed = np.sqrt(np.square(new_vel[..., 0]) + np.square(new_vel[..., 1]))
    too_fast = speed > bodies.max_speed
    if too_fast.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            new_vel = np.where(too_fast[..., None], new_vel / speed[..., None] * bodies.max_speed[:, None], new_vel)
    movable = movable[..., None]
    return np.where(movable, new_pos, pos), np.where(movable, new_vel, vel)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [B, n, m] between points a [B, n, 2] and b [B, m, 2], as mpe2 computes them."""
    delta = a[:, :, None, :] - b[:, None, :, :]
    return np.sqrt(np.square(delta[..., 0]) + np.square(delta[..., 1]))
