"""SMAX (envs.smax) against the VecEnv contract, and the SMAC map rules.

Every (map, variant, B) costs a JIT compile of several seconds, so the 3m env is built once per module
and reused; a different episode limit shares its compiled code.
"""
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from envs import ConfigError, env_config, make_env
from envs.scripted import focus_fire, uniform as scripted_uniform
from envs.smac_maps import PAPER_MAPS, SMAC_MAPS, SMAX_SHIPPED_MAPS, SMAX_UNIT_TYPES, smax_unit_type_ids

B = 16
STOP, EAST, FIRST_ATTACK = 4, 1, 5


scripted = focus_fire  # attack the lowest-numbered enemy in range, else walk east, else stop


def uniform(generator: torch.Generator):
    return lambda avail: scripted_uniform(avail, generator)


def rollout(env, policy, seeds, extra_steps=2):
    """Run one episode per env plus a few steps past the end; record every step and the alive units."""
    first = env.reset(seeds)["team"]
    steps, avail = [], first.avail
    for _ in range(env.info.episode_limit + extra_steps):
        actions = policy(avail)
        result = env.step({"team": actions})
        steps.append((actions, result, env.unit_alive().copy()))
        avail = result.obs["team"].avail
    return first, steps


def episode_summary(steps):
    """Per env: return, whether the episode was won, terminated, and its length."""
    n = steps[0][1].reward["team"].shape[0]
    done = torch.zeros(n, dtype=torch.bool)
    ret, length = torch.zeros(n), torch.zeros(n)
    won, terminated = torch.zeros(n), torch.zeros(n, dtype=torch.bool)
    for _, r, _ in steps:
        live = ~done
        ret += torch.where(live, r.reward["team"], 0.0)
        length += live.float()
        won = torch.where(live, r.info["battle_won"], won)
        terminated = torch.where(live, r.terminated, terminated)
        done |= r.terminated | r.truncated
    return ret, won, terminated, length


@pytest.fixture(scope="module")
def env3m():
    return make_env({"name": "smax", "map_name": "3m"}, B)


@pytest.fixture(scope="module")
def random_run(env3m):
    return rollout(env3m, uniform(torch.Generator().manual_seed(0)), list(range(B)))


# ---- configuration: no JAX needed -------------------------------------------------------------------

def test_unknown_map_lists_the_valid_names():
    with pytest.raises(ConfigError) as err:
        env_config({"name": "smax", "map_name": "4m"})
    msg = str(err.value)
    assert "\n" not in msg and "'4m'" in msg
    for name in ("3m", "8m", "3s5z", "2m_vs_1z", "3s_vs_3z", "smacv2_5_units"):
        assert name in msg


@pytest.mark.parametrize("map_name,missing", [("1c3s5z", "colossus"), ("2c_vs_64zg", "colossus"),
                                              ("MMM2", "medivac")])
def test_inexpressible_paper_maps_say_why_in_one_line(map_name, missing):
    with pytest.raises(ConfigError) as err:
        env_config({"name": "smax", "map_name": map_name})
    msg = str(err.value)
    assert "\n" not in msg and missing in msg and "env=smac" in msg and "StarCraft II" in msg


def test_every_other_paper_map_is_accepted_under_its_smac_name():
    runnable = [m for m in PAPER_MAPS if m not in ("1c3s5z", "2c_vs_64zg", "MMM2")]
    assert runnable == ["3m", "8m", "3s5z", "2m_vs_1z", "3s_vs_3z"]
    for name in runnable:
        assert env_config({"name": "smax", "map_name": name}).map_name == name


def test_episode_limit_defaults_to_smacs():
    limits = {m: env_config({"name": "smax", "map_name": m}).limit
              for m in ("3m", "8m", "3s5z", "2m_vs_1z", "3s_vs_3z")}
    assert limits == {"3m": 60, "8m": 120, "3s5z": 150, "2m_vs_1z": 150, "3s_vs_3z": 150}
    assert env_config({"name": "smax", "map_name": "3m", "episode_limit": 7}).limit == 7
    with pytest.raises(ConfigError):
        env_config({"name": "smax", "episode_limit": 0})
    with pytest.raises(ConfigError):
        env_config({"name": "smax", "reward_scale": "sc2"})


def test_importing_the_module_does_not_import_jax():
    code = "import sys, envs.smax, envs.smac; assert 'jax' not in sys.modules and 'jaxmarl' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_map_table_agrees_with_jaxmarl():
    from jaxmarl.environments.smax import SMAX
    from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO

    assert tuple(inspect.signature(SMAX).parameters["unit_type_names"].default) == SMAX_UNIT_TYPES
    assert SMAX_SHIPPED_MAPS == set(MAP_NAME_TO_SCENARIO)
    for name in SMAX_SHIPPED_MAPS & set(SMAC_MAPS):
        scenario = MAP_NAME_TO_SCENARIO[name]
        assert np.asarray(scenario.unit_types).tolist() == smax_unit_type_ids(name), name
        assert (scenario.num_allies, scenario.num_enemies) == (SMAC_MAPS[name].n_allies, SMAC_MAPS[name].n_enemies)


# ---- the 3m env ---------------------------------------------------------------------------------------

def test_info_and_shapes(env3m, random_run):
    info = env3m.info
    assert info.name == "smax" and info.n_envs == B and info.episode_limit == 60
    assert info.backend.startswith("jaxmarl ") and info.episode_stats == {"battle_won": "last"}
    (spec,) = info.teams
    assert (spec.name, spec.n_agents, spec.n_actions) == ("team", 3, 8)
    first, steps = random_run
    for team in [first] + [r.obs["team"] for _, r, _ in steps]:
        assert team.obs.shape == (B, 3, spec.obs_dim) and team.obs.dtype == torch.float32
        assert team.state.shape == (B, spec.state_dim) and team.state.dtype == torch.float32
        assert team.avail.shape == (B, 3, 8) and team.avail.dtype == torch.bool
        assert torch.isfinite(team.obs).all() and torch.isfinite(team.state).all()
        assert team.avail[..., STOP].all()  # stop is always possible
    assert first.avail[..., :4].all()  # everyone alive and free to move at the start
    assert not first.avail[..., FIRST_ATTACK:].any()  # the armies start out of range
    for _, r, _ in steps:
        assert r.reward["team"].shape == (B,) and r.reward["team"].dtype == torch.float32
        assert r.terminated.dtype == torch.bool and r.truncated.dtype == torch.bool
        assert r.info["battle_won"].shape == (B,) and r.info["battle_won"].dtype == torch.float32
        assert torch.isfinite(r.reward["team"]).all()
        assert not (r.terminated & r.truncated).any()


def test_dead_agents_can_only_stop(env3m, random_run):
    _, steps = random_run
    saw_dead = False
    for _, r, alive in steps:
        dead = torch.from_numpy(~alive[:, :3])
        only_stop = torch.zeros(8, dtype=torch.bool)
        only_stop[STOP] = True
        assert (r.obs["team"].avail[dead] == only_stop).all()
        assert (r.obs["team"].obs[dead] == 0).all()  # a dead agent sees nothing
        saw_dead |= bool(dead.any())
    assert saw_dead


def test_win_flag_is_set_exactly_when_the_last_enemy_dies(env3m):
    _, steps = rollout(env3m, scripted, list(range(100, 100 + B)))
    done = np.zeros(B, dtype=bool)
    wins = 0
    for _, r, alive in steps:
        won_now = ~alive[:, 3:].any(1) & alive[:, :3].any(1) & ~done
        assert np.array_equal(r.info["battle_won"].numpy(), won_now.astype(np.float32))
        battle_over = ~alive[:, 3:].any(1) | ~alive[:, :3].any(1)
        assert np.array_equal(r.terminated.numpy(), battle_over)
        wins += int(won_now.sum())
        done |= (r.terminated | r.truncated).numpy()
    assert done.all() and wins > 0


def test_finished_envs_are_frozen(env3m, random_run):
    _, steps = random_run
    done = torch.zeros(B, dtype=torch.bool)
    last = {}
    for _, r, _ in steps:
        if done.any():
            assert (r.reward["team"][done] == 0).all() and (r.info["battle_won"][done] == 0).all()
            assert ((r.terminated | r.truncated)[done]).all()
            assert torch.equal(r.obs["team"].obs[done], last["obs"][done])
        done |= r.terminated | r.truncated
        last["obs"] = r.obs["team"].obs.clone()
    assert done.all()


def test_reset_seeds_determine_the_episode(env3m):
    seeds = [5, 6, 7, 2**40 + 5] + list(range(B - 4))
    a = rollout(env3m, uniform(torch.Generator().manual_seed(1)), seeds, extra_steps=0)
    b = rollout(env3m, uniform(torch.Generator().manual_seed(1)), seeds, extra_steps=0)
    assert torch.equal(a[0].obs, b[0].obs) and torch.equal(a[0].state, b[0].state)
    for (_, ra, _), (_, rb, _) in zip(a[1], b[1]):
        assert torch.equal(ra.obs["team"].obs, rb.obs["team"].obs)
        assert torch.equal(ra.obs["team"].state, rb.obs["team"].state)
        assert torch.equal(ra.reward["team"], rb.reward["team"])
    first = a[0].state
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[0], first[3])


def test_random_rarely_wins_and_scripted_often_with_smac_returns(env3m, random_run):
    ret, won, terminated, _ = episode_summary(random_run[1])
    assert won.mean() <= 0.1
    _, steps = rollout(env3m, scripted, list(range(1000, 1000 + B)))
    ret, won, terminated, _ = episode_summary(steps)
    assert won.mean() >= 0.3  # the heuristic enemy plays the same script: about even
    assert torch.allclose(ret[won == 1], torch.tensor(20.0), atol=1e-4)  # SMAC scale: a win returns 20
    assert (ret[won == 0] < 20).all() and (ret >= 0).all()


def test_episode_limit_truncates_and_shares_the_compiled_step(env3m, random_run):
    # The kernels are shared by every 3m env of the process (other tests compile other batch sizes):
    # what matters is that a different episode limit adds no compile for this B.
    compiled = (env3m._k.step._cache_size(), env3m._k.reset._cache_size())
    short = make_env({"name": "smax", "map_name": "3m", "episode_limit": 5, "timeout": "truncation"}, B)
    assert short._k is env3m._k
    _, steps = rollout(short, lambda avail: torch.full(avail.shape[:-1], STOP), list(range(B)))
    for t, (_, r, _) in enumerate(steps):
        assert not r.terminated.any()  # standing still, nobody is in range within 5 steps
        assert bool(r.truncated.all()) == (t >= 4)
    # the default, SMAC's and PyMARL's: the limit ends the episode as a terminal state (no bootstrap)
    terminal = make_env({"name": "smax", "map_name": "3m", "episode_limit": 5}, B)
    _, steps = rollout(terminal, lambda avail: torch.full(avail.shape[:-1], STOP), list(range(B)))
    for t, (_, r, _) in enumerate(steps):
        assert not r.truncated.any() and bool(r.terminated.all()) == (t >= 4)
        assert not r.info["battle_won"].any()
    assert (env3m._k.step._cache_size(), env3m._k.reset._cache_size()) == compiled  # no second compile


def test_observations_hide_what_smac_agents_do_not_see():
    """SMAC's agents see enemies' health, position and type, not their last actions or weapon cooldowns
    (SMAX shows both): hidden by default, shown with see_enemy_actions / see_enemy_cooldowns."""
    def enemy_blocks(cfg):
        env = make_env({"name": "smax", "map_name": "3m", **cfg}, 4)
        first = env.reset([0, 1, 2, 3])["team"]
        attack = torch.where(first.avail[..., 5:].any(-1), 5 + first.avail[..., 5:].float().argmax(-1), 4)
        obs = env.step({"team": attack}).obs["team"].obs  # 3m: 2 ally blocks, 3 enemy blocks, own features
        for _ in range(3):
            obs = env.step({"team": torch.full((4, 3), 1)}).obs["team"].obs  # move: enemies come in range
        return obs[..., 2 * 13:5 * 13].reshape(4, 3, 3, 13)  # [B, agent, enemy, features]

    hidden, shown = enemy_blocks({}), enemy_blocks({"see_enemy_actions": True, "see_enemy_cooldowns": True})
    assert (hidden[..., 3:7] == 0).all()  # last movement (2), last target, weapon cooldown
    assert (shown[..., 3:7] != 0).any()
    torch.testing.assert_close(hidden[..., :3], shown[..., :3])  # health and position the same


# ---- maps built here ----------------------------------------------------------------------------------

def test_2m_vs_1z_built_from_a_scenario_with_smax_rewards():
    env = make_env({"name": "smax", "map_name": "2m_vs_1z", "reward_scale": "smax"}, 4)
    (spec,) = env.info.teams
    assert (spec.n_agents, spec.n_actions, env.info.episode_limit) == (2, 6, 150)
    first, steps = rollout(env, scripted, [0, 1, 2, 3], extra_steps=0)
    ret, won, _, length = episode_summary(steps)
    assert (won == 1).all()  # SMAX's balance: focus fire always beats the lone zealot (not so in SC2)
    assert torch.allclose(ret, torch.tensor(2.0), atol=1e-4)  # SMAX scale: all damage (1) + win bonus (1)
    assert (length < 150).all()
