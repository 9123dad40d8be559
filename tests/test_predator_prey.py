"""predator_prey: the VecEnv contract, walls, the capture rule, the reward definitions and the sight range,
checked on hand-placed situations whose outcome is computed here by hand."""
from math import hypot

import numpy as np
import pytest
import torch

from envs import ConfigError, env_config, make_env
from envs.predator_prey import CAPTURE_DISTANCE, OBSTACLE_SPAWN

NOOP = 0


def game(n_envs=1, **cfg):
    return make_env({"name": "predator_prey", **cfg}, n_envs)


def random_actions(env, rng):
    return {t.name: torch.from_numpy(rng.integers(0, t.n_actions, (env.n_envs, t.n_agents))) for t in env.info.teams}


def noops(env):
    return {t.name: torch.zeros(env.n_envs, t.n_agents, dtype=torch.int64) for t in env.info.teams}


def placed(predators, prey, obstacles, **cfg):
    """One env with entities at the given points, at rest; returns the env after reset + placement."""
    env = game(1, n_predators=len(predators), n_prey=len(prey), n_obstacles=len(obstacles), **cfg)
    env.reset([0])
    env.pos[0] = np.array(predators + prey + obstacles, dtype=np.float64)
    env.vel[:] = 0.0
    return env


def test_contract_shapes_dtypes_masks_and_stats():
    b, limit = 4, 30
    env = game(b, n_predators=2, n_prey=3, episode_limit=limit)
    pred, prey = env.info.team("predator"), env.info.team("prey")
    a, o = 5, 2
    obs_dim, state_dim = 4 + 2 * o + 5 * (a - 1), 4 * a + 2 * o + 3
    assert (pred.n_agents, prey.n_agents, pred.n_actions, prey.n_actions) == (2, 3, 5, 5)
    assert pred.obs_dim == prey.obs_dim == obs_dim and pred.state_dim == prey.state_dim == state_dim
    assert dict(env.info.episode_stats) == {"captures": "sum", "capture_rate": "last"}
    obs = env.reset(list(range(b)))
    rng = np.random.default_rng(0)
    done = torch.zeros(b, dtype=torch.bool)
    for t in range(limit + 3):  # past the end: allowed, finite, ignored by the runner
        for name, spec in (("predator", pred), ("prey", prey)):
            o_ = obs[name]
            assert o_.obs.shape == (b, spec.n_agents, obs_dim) and o_.obs.dtype == torch.float32
            assert o_.state.shape == (b, state_dim) and o_.state.dtype == torch.float32
            assert o_.avail.shape == (b, spec.n_agents, 5) and o_.avail.dtype == torch.bool
            assert torch.isfinite(o_.obs).all() and torch.isfinite(o_.state).all()
        assert bool(obs["predator"].avail.all())
        caught = obs["prey"].state[:, -3:].bool()  # the state ends with the prey's caught flags
        assert torch.equal(obs["prey"].avail[..., 0], torch.ones(b, 3, dtype=torch.bool))
        assert torch.equal(obs["prey"].avail[..., 1:], (~caught)[..., None].expand(b, 3, 4))
        assert (obs["prey"].obs[caught] == 0).all()  # caught prey observe zeros
        res = env.step(random_actions(env, rng))
        obs = res.obs
        for value in (*res.reward.values(), *res.info.values()):
            assert value.shape == (b,) and value.dtype == torch.float32 and torch.isfinite(value).all()
        assert res.terminated.dtype == res.truncated.dtype == torch.bool
        assert not bool((res.terminated & res.truncated).any())
        if t + 1 < limit:
            assert not bool(res.truncated.any())
        elif t + 1 == limit:
            assert torch.equal(res.truncated | res.terminated | done, torch.ones(b, dtype=torch.bool))
        done |= res.terminated | res.truncated
        assert torch.equal(res.terminated, res.info["capture_rate"] == 1)


def test_seeds_determine_the_episode_and_obstacles_sit_around_the_centre():
    def rollout(env, seeds, steps=10):
        rng = np.random.default_rng(1)
        out = [v.obs for v in env.reset(seeds).values()] + [env.pos.copy()]
        for _ in range(steps):
            res = env.step(random_actions(env, rng))
            out += [v.obs for v in res.obs.values()] + list(res.reward.values()) + [res.info["captures"]]
        return out

    env, other = game(3), game(3)
    first = rollout(env, [4, 5, 6])
    rollout(env, [7, 8, 9], 5)
    for x, y, z in zip(first, rollout(env, [4, 5, 6]), rollout(other, [4, 5, 6])):
        assert np.array_equal(np.asarray(x), np.asarray(y)) and np.array_equal(np.asarray(x), np.asarray(z))
    env.reset([4, 5, 7])  # each env's seed decides that env alone
    assert np.array_equal(env.pos[:2], first[2][:2]) and not np.array_equal(env.pos[2], first[2][2])
    env = game(64)
    env.reset(list(range(64)))
    obstacles = env.pos[:, env.obstacles]
    assert (np.abs(obstacles) <= OBSTACLE_SPAWN).all() and len(np.unique(obstacles[:, 0, 0])) == 64


def test_walls_keep_every_agent_inside_the_arena():
    env = game(16, n_predators=3, n_prey=3, episode_limit=1000)
    env.reset(list(range(16)))
    size = env.bodies.size[:6]
    rng = np.random.default_rng(0)
    at_wall = 0
    for t in range(400):
        if t % 40 == 0:  # each agent keeps pushing one way for a while, so agents do reach the walls
            direction = rng.integers(0, 5, (16, 6))
        acts = np.where(rng.random((16, 6)) < 0.8, direction, rng.integers(0, 5, (16, 6)))
        env.step({"predator": torch.from_numpy(acts[:, :3]), "prey": torch.from_numpy(acts[:, 3:])})
        reach = np.abs(env.pos[:, :6]) + size[None, :, None]
        assert (reach <= 1.0 + 1e-12).all(), t
        at_wall += int(np.isclose(reach, 1.0).sum())
    assert at_wall > 100, "agents never reached the walls: the test would prove nothing"


def test_captures_and_rewards_in_a_hand_placed_situation():
    # Predators at p0, p1; prey q0 touched by both predators, q1 and q2 far; obstacles out of the way.
    p0, p1 = (0.0, 0.0), (0.1, 0.1)
    q0, q1, q2 = (0.1, 0.0), (0.6, 0.6), (-0.6, 0.6)
    env = placed([p0, p1], [q0, q1, q2], [(0.6, -0.6), (-0.6, -0.6)],
                 capture_bonus=10.0, capture_penalty=4.0, centre_penalty_coef=0.5)
    res = env.step(noops(env))  # everything at rest: the positions do not change during this step
    assert np.array_equal(env.pos[0, :5], [p0, p1, q0, q1, q2])
    assert res.info["captures"].item() == 1  # two predators on one prey: one capture
    assert res.info["capture_rate"].item() == pytest.approx(1 / 3)
    dist = lambda u, v: hypot(u[0] - v[0], u[1] - v[1])  # noqa: E731
    # predators: minus each one's distance to the nearest active prey (q0 still counts in its capture step)
    assert res.reward["predator"].item() == pytest.approx(-(0.1 + 0.1) + 10.0, abs=1e-6)
    prey_terms = [min(dist(q, p0), dist(q, p1)) - 0.5 * hypot(*q) for q in (q0, q1, q2)]
    assert res.reward["prey"].item() == pytest.approx(sum(prey_terms) - 4.0, abs=1e-6)
    assert not bool(res.terminated.any() or res.truncated.any())
    # the caught prey: only no-op, observes zeros, hidden from everyone, flagged in the state
    assert res.obs["prey"].avail[0, 0].tolist() == [True, False, False, False, False]
    assert bool(res.obs["prey"].avail[0, 1:].all())
    assert (res.obs["prey"].obs[0, 0] == 0).all()
    assert res.obs["predator"].state[0, -3:].tolist() == [1.0, 0.0, 0.0]

    frozen = env.pos[0, 2].copy()
    env.vel[0, :2] = 0.0  # the predators stay on the caught prey during the next step: no second capture
    acts = {"predator": torch.tensor([[0, 0]]), "prey": torch.tensor([[2, 1, 2]])}  # the caught prey tries to move
    res = env.step(acts)
    assert np.array_equal(env.pos[0, 2], frozen) and (env.vel[0, 2] == 0).all()
    assert np.array_equal(env.pos[0, :2], [p0, p1])
    assert res.info["captures"].item() == 0 and res.info["capture_rate"].item() == pytest.approx(1 / 3)
    preds, prey = env.pos[0, :2], env.pos[0, 3:5]  # q0 is no longer anyone's nearest prey
    chase = sum(min(dist(p, q) for q in prey) for p in preds)
    assert res.reward["predator"].item() == pytest.approx(-chase, abs=1e-5)
    flee = sum(min(dist(q, p) for p in preds) - 0.5 * hypot(*q) for q in prey)
    assert res.reward["prey"].item() == pytest.approx(flee, abs=1e-5)


def test_one_predator_catching_the_last_two_prey_ends_the_episode():
    gap = CAPTURE_DISTANCE - 0.01
    env = placed([(0.0, 0.0)], [(gap, 0.0), (0.0, gap)], [], capture_bonus=3.0, capture_penalty=2.0)
    res = env.step(noops(env))
    assert res.info["captures"].item() == 2 and res.info["capture_rate"].item() == 1.0
    assert bool(res.terminated.all()) and not bool(res.truncated.any())
    assert res.reward["predator"].item() == pytest.approx(-gap + 2 * 3.0, abs=1e-6)
    assert res.reward["prey"].item() == pytest.approx(2 * (gap - 0.5 * gap) - 2 * 2.0, abs=1e-6)
    res = env.step(noops(env))  # after the end: no active prey, the distance terms vanish
    assert res.info["captures"].item() == 0
    assert res.reward["predator"].item() == 0.0 and res.reward["prey"].item() == 0.0
    # just outside the capture distance there is no capture
    env = placed([(0.0, 0.0)], [(CAPTURE_DISTANCE + 0.02, 0.0)], [])
    assert env.step(noops(env)).info["captures"].item() == 0


def test_sight_range_hides_entities_beyond_it_and_not_those_inside():
    pred, near_prey, far_prey, obstacle = (0.0, 0.0), (0.3, 0.0), (0.9, 0.0), (0.0, -0.4)
    layout = lambda o: {"obstacle": o[4:6], "others_pos": o[6:10], "others_vel": o[10:14]}  # noqa: E731
    env = placed([pred], [near_prey, far_prey], [obstacle], sight_range=0.5)
    env.vel[0, 1:3] = [(0.2, -0.1), (0.3, 0.4)]
    obs = env.observe()
    o = obs["predator"].obs[0, 0].numpy().astype(np.float64)
    assert o.shape == (4 + 2 + 5 * 2 + 1,)
    part = layout(o)
    assert np.allclose(part["obstacle"], [0.0, -0.4]) and np.allclose(part["others_pos"], [0.3, 0.0, 0, 0])
    assert np.allclose(part["others_vel"], [0.2, -0.1, 0, 0])
    assert o[14:].tolist() == [1.0, 1.0, 0.0]  # obstacle seen, near prey present, far prey hidden
    far = obs["prey"].obs[0, 1].numpy()  # the far prey sees nothing: everything is > 0.5 away
    assert (far[4:14] == 0).all() and far[14:].tolist() == [0.0, 0.0, 0.0]
    # fully observable: everything is there, flags are all one
    env = placed([pred], [near_prey, far_prey], [obstacle])
    env.vel[0, 1:3] = [(0.2, -0.1), (0.3, 0.4)]
    o = env.observe()["predator"].obs[0, 0].numpy().astype(np.float64)
    assert o.shape == (4 + 2 + 5 * 2,)
    assert np.allclose(layout(o)["others_pos"], [0.3, 0.0, 0.9, 0.0])
    assert np.allclose(layout(o)["others_vel"], [0.2, -0.1, 0.3, 0.4]) and o[14:].tolist() == [1.0, 1.0]


def test_config_validation():
    assert env_config({"name": "predator_prey", "n_prey": 4, "episode_limit": 150}).n_prey == 4
    for bad in ({"n_prey": 0}, {"sight_range": -1.0}, {"capture_bonus": -1}, {"arena": 2}):
        with pytest.raises(ConfigError):
            env_config({"name": "predator_prey", **bad})


def test_timeout_terminal_reports_the_limit_as_terminal():
    """With env.timeout=terminal, episodes that reach the limit end terminated, not truncated; episodes
    ended by captures end the same under both settings."""
    ends = {}
    for timeout in ("truncation", "terminal"):
        env = game(6, n_predators=3, n_prey=1, episode_limit=12, timeout=timeout)
        env.reset(list(range(6)))
        rng = np.random.default_rng(1)
        for _ in range(12):
            res = env.step(random_actions(env, rng))
        ends[timeout] = (res.terminated, res.truncated)
    (term, trunc), (term_t, trunc_t) = ends["truncation"], ends["terminal"]
    assert bool(trunc.any()), "no episode reached the limit: the test would check nothing"
    assert torch.equal(term_t, term | trunc) and not bool(trunc_t.any())
    with pytest.raises(ConfigError, match="timeout"):
        env_config({"name": "predator_prey", "timeout": "never"})
