"""mpe_spread conforms to the VecEnv contract (envs/base.py) with both backends, and its sight range
hides exactly the entities beyond it."""
import numpy as np
import pytest
import torch

from envs import ConfigError, env_config, make_env

BACKENDS = ["mpe2", "batched"]
B, LIMIT = 3, 6


def spread(backend, n_agents=3, sight_range=None, n_envs=B):
    return make_env({"name": "mpe_spread", "backend": backend, "n_agents": n_agents,
                     "sight_range": sight_range, "episode_limit": LIMIT}, n_envs)


def rollout(env, seeds, steps, action_seed=0):
    """Observations, states and rewards of one episode driven by seeded random actions."""
    rng = np.random.default_rng(action_seed)
    first = env.reset(seeds)["team"]
    out = [first.obs, first.state]
    for _ in range(steps):
        res = env.step({"team": torch.from_numpy(rng.integers(0, 5, (len(seeds), env.info.teams[0].n_agents)))})
        out += [res.obs["team"].obs, res.obs["team"].state, res.reward["team"]]
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sight_range", [None, 0.5])
def test_contract_shapes_dtypes_masks_truncation(backend, sight_range):
    n = 4
    env = spread(backend, n, sight_range)
    (spec,) = env.info.teams
    assert (spec.name, spec.n_agents, spec.n_actions, spec.state_dim) == ("team", n, 5, 6 * n)
    assert spec.obs_dim == 6 * n + (2 * n - 1 if sight_range else 0)
    assert env.info.episode_limit == LIMIT and env.n_envs == B
    obs = env.reset([1, 2, 3])["team"]
    for t in range(LIMIT + 2):  # two steps past the end: allowed, finite, ignored by the runner
        assert obs.obs.shape == (B, n, spec.obs_dim) and obs.obs.dtype == torch.float32
        assert obs.state.shape == (B, spec.state_dim) and obs.state.dtype == torch.float32
        assert obs.avail.shape == (B, n, 5) and obs.avail.dtype == torch.bool and bool(obs.avail.all())
        assert torch.isfinite(obs.obs).all() and torch.isfinite(obs.state).all()
        res = env.step({"team": torch.randint(0, 5, (B, n))})
        obs = res.obs["team"]
        assert res.reward["team"].shape == (B,) and res.reward["team"].dtype == torch.float32
        assert torch.isfinite(res.reward["team"]).all()
        assert res.terminated.dtype == torch.bool and not bool(res.terminated.any())
        assert bool(res.truncated.all()) == (t + 1 >= LIMIT) and bool(res.truncated.any()) == (t + 1 >= LIMIT)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeds_determine_the_episode(backend):
    env, other = spread(backend), spread(backend)
    first = rollout(env, [5, 6, 7], LIMIT)
    rollout(env, [8, 9, 10], 3, action_seed=1)  # a different, unfinished episode in between
    again = rollout(env, [5, 6, 7], LIMIT)
    fresh = rollout(other, [5, 6, 7], LIMIT)
    for x, y, z in zip(first, again, fresh):
        assert torch.equal(x, y) and torch.equal(x, z)
    changed = rollout(env, [5, 6, 8], 0)[0]  # each env's seed decides that env alone
    assert torch.equal(changed[:2], first[0][:2]) and not torch.equal(changed[2], first[0][2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_sight_range_hides_exactly_what_is_beyond_it(backend):
    n, sight = 3, 0.8
    seeds = list(range(8))
    full, partial = spread(backend, n, None, 8), spread(backend, n, sight, 8)
    rng = np.random.default_rng(0)
    obs_full, obs_part = full.reset(seeds)["team"], partial.reset(seeds)["team"]
    hidden = shown = 0
    for _ in range(4):
        state = obs_full.state.numpy().astype(np.float64)
        pos, landmarks = state[:, :2 * n].reshape(-1, n, 2), state[:, 4 * n:].reshape(-1, n, 2)
        f, p = obs_full.obs.numpy(), obs_part.obs.numpy()
        assert np.array_equal(p[..., :4], f[..., :4])  # own velocity and position are always known
        for i in range(n):
            others = [j for j in range(n) if j != i]
            targets = [(landmarks[:, k], 4 + 2 * k, 6 * n + k) for k in range(n)]
            targets += [(pos[:, j], 4 + 2 * n + 2 * s, 7 * n + s) for s, j in enumerate(others)]
            for where, slot, flag in targets:
                # the margin keeps float32 state rounding away from the boundary
                far = np.linalg.norm(where - pos[:, i], axis=-1) > sight + 1e-5
                near = np.linalg.norm(where - pos[:, i], axis=-1) < sight - 1e-5
                assert (p[far, i, slot:slot + 2] == 0).all() and (p[far, i, flag] == 0).all()
                assert np.array_equal(p[near, i, slot:slot + 2], f[near, i, slot:slot + 2])
                assert (p[near, i, flag] == 1).all()
                hidden, shown = hidden + far.sum(), shown + near.sum()
        # comm slots are zero for silent agents either way
        assert (p[..., 4 + 2 * n + 2 * (n - 1):6 * n] == 0).all()
        acts = {"team": torch.from_numpy(rng.integers(0, 5, (8, n)))}
        obs_full, obs_part = full.step(acts).obs["team"], partial.step(acts).obs["team"]
    assert hidden > 0 and shown > 0
    assert torch.equal(obs_full.state, obs_part.state)  # the global state stays complete


def test_config_rejects_unknown_backend_and_bad_values():
    assert env_config({"name": "mpe_spread", "backend": "batched"}).backend == "batched"
    with pytest.raises(ConfigError, match="backend"):
        env_config({"name": "mpe_spread", "backend": "jax"})
    with pytest.raises(ConfigError, match="sight_range"):
        env_config({"name": "mpe_spread", "sight_range": 0})


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_terminal_ends_the_episode_at_its_limit_as_a_terminal_state(backend):
    """env.timeout: truncation (default, bootstrapped) or terminal (PyMARL's and EPyMARL's treatment);
    nothing else of the step changes."""
    ends = {}
    for timeout in ("truncation", "terminal"):
        env = make_env({"name": "mpe_spread", "backend": backend, "episode_limit": LIMIT, "timeout": timeout}, B)
        env.reset([4, 5, 6])
        rng = np.random.default_rng(0)
        steps = []
        for _ in range(LIMIT):
            res = env.step({"team": torch.from_numpy(rng.integers(0, 5, (B, 3)))})
            steps.append((res.terminated.clone(), res.truncated.clone(), res.reward["team"], res.obs["team"].obs))
        ends[timeout] = steps
    for t, (plain, terminal) in enumerate(zip(ends["truncation"], ends["terminal"])):
        last = t == LIMIT - 1
        assert plain[0].tolist() == [False] * B and plain[1].tolist() == [last] * B
        assert terminal[0].tolist() == [last] * B and terminal[1].tolist() == [False] * B
        assert torch.equal(plain[2], terminal[2]) and torch.equal(plain[3], terminal[3])


def test_timeout_rejects_other_values():
    with pytest.raises(ConfigError, match="timeout"):
        env_config({"name": "mpe_spread", "timeout": "bootstrap"})
