"""The batched numpy MPE (envs.mpe_physics, mpe_spread backend="batched") against mpe2 itself.

The batched backend evaluates every quantity in float64 in mpe2's order of operations (including the
order in which contact forces are summed), so the comparison is exact: tolerance 0, not merely close.
"""
import numpy as np
import pytest
import torch

from envs import make_env
from envs import mpe_physics as physics
from envs.mpe_common import mpe2_rng

SEEDS = [0, 7, 123456]


def test_reset_generator_is_mpe2s():
    from gymnasium.utils import seeding

    for seed in SEEDS:
        theirs, _ = seeding.np_random(seed)
        assert np.array_equal(mpe2_rng(seed).uniform(-1, 1, (6, 2)),
                              np.stack([theirs.uniform(-1, +1, 2) for _ in range(6)]))


@pytest.mark.parametrize("n_agents", [3, 5])
@pytest.mark.parametrize("sight_range", [None, 0.6])
def test_batched_spread_reproduces_mpe2_over_an_episode(n_agents, sight_range):
    cfg = {"name": "mpe_spread", "n_agents": n_agents, "sight_range": sight_range, "episode_limit": 25}
    ref, fast = make_env({**cfg, "backend": "mpe2"}, len(SEEDS)), make_env({**cfg, "backend": "batched"}, len(SEEDS))
    first_ref, first_fast = ref.reset(SEEDS)["team"], fast.reset(SEEDS)["team"]
    assert torch.equal(first_ref.obs, first_fast.obs) and torch.equal(first_ref.state, first_fast.state)
    rng = np.random.default_rng(n_agents)
    collided = False
    for t in range(25):
        actions = {"team": torch.from_numpy(rng.integers(0, 5, (len(SEEDS), n_agents)))}
        a, b = ref.step(actions), fast.step(actions)
        assert torch.equal(a.obs["team"].obs, b.obs["team"].obs), t
        assert torch.equal(a.obs["team"].state, b.obs["team"].state), t
        assert torch.equal(a.obs["team"].avail, b.obs["team"].avail), t
        assert torch.equal(a.reward["team"], b.reward["team"]), t
        assert torch.equal(a.terminated, b.terminated) and torch.equal(a.truncated, b.truncated), t
        # The float64 world state itself, not only its float32 image, is mpe2's.
        worlds = [e.unwrapped.world for e in ref.envs]
        assert np.array_equal(fast.pos, [[ag.state.p_pos for ag in w.agents] for w in worlds]), t
        assert np.array_equal(fast.vel, [[ag.state.p_vel for ag in w.agents] for w in worlds]), t
        collided |= bool((physics.distances(fast.pos, fast.pos) + 10 * np.eye(n_agents) < 0.3).any())
    assert collided, "no collision happened: the contact forces were not exercised"
    assert bool(b.truncated.all()) and not bool(b.terminated.any())


def test_physics_reproduces_mpe2_simple_tag_world():
    """Obstacles (immovable colliders), per-agent accel and max_speed: mpe2's simple_tag world step."""
    from mpe2 import simple_tag_v3

    env = simple_tag_v3.parallel_env(num_good=3, num_adversaries=3, num_obstacles=2, max_cycles=200)
    env.reset(seed=3)
    world = env.unwrapped.world
    bodies = physics.Bodies.make(
        agent_size=[a.size for a in world.agents], agent_accel=[a.accel for a in world.agents],
        agent_max_speed=[a.max_speed for a in world.agents], landmark_size=[lm.size for lm in world.landmarks])
    snapshot = lambda: (np.array([[e.state.p_pos for e in world.entities]]),  # noqa: E731
                        np.array([[e.state.p_vel for e in world.entities]]))
    pos, vel = snapshot()
    rng = np.random.default_rng(0)
    clipped = touched_obstacle = False
    for t in range(200):
        acts = rng.integers(0, 5, (1, 6))
        speed_before = np.linalg.norm(vel, axis=-1)
        env.step({name: int(acts[0, i]) for i, name in enumerate(env.agents)})
        pos, vel = physics.step(pos, vel, acts, bodies)
        ref_pos, ref_vel = snapshot()
        assert np.array_equal(pos, ref_pos) and np.array_equal(vel, ref_vel), t
        clipped |= bool((np.isclose(np.linalg.norm(vel[0, :6], axis=-1), bodies.max_speed[:6])
                         & (speed_before[0, :6] > 0)).any())
        touched_obstacle |= bool((physics.distances(pos[:, :6], pos[:, 6:])
                                  < bodies.size[:6, None] + bodies.size[None, 6:]).any())
    assert clipped and touched_obstacle, "max_speed clipping and obstacle contacts were not exercised"
