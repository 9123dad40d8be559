"""The real-SMAC adapter (envs.smac) against a fake StarCraft2Env.

Real StarCraft II cannot run on this machine (no SC2 binary, no SMAC maps, no oxwhirl smac package), so a
fake with the real class's methods and semantics (get_obs, get_state, get_avail_actions, step, reset,
get_env_info, close; SMAC's action layout, info keys and episode-limit rules) is the only way to cover the
adapter's code path. The install checks are tested by hiding or faking the `smac` module.
"""
import sys
import types

import numpy as np
import pytest
import torch

from envs import ConfigError, env_config, make_env
from envs import smac as smac_env

NO_OP, STOP, FIRST_ATTACK = 0, 1, 6


class FakeStarCraft2Env:
    """A tiny marines-only battle with StarCraft2Env's interface and rules.

    Units have 3 hit points; an attack action removes 1 from its target. The enemy hits the first living
    ally once every 2 steps. Like SMAC: no-op only for dead agents (asserted), `step` returns
    (reward, terminated, info) with info["battle_won"] and, when continuing_episode, info["episode_limit"];
    the reward is damage + 10 per kill + 200 on a win, scaled to a maximum episode return of 20.
    """

    instances: list["FakeStarCraft2Env"] = []

    def __init__(self, map_name="8m", step_mul=None, difficulty="7", seed=None, continuing_episode=False,
                 **kwargs):
        self.n_agents, self.n_enemies = {"3m": (3, 3), "2m_vs_1z": (2, 1)}[map_name]
        self.episode_limit = {"3m": 60, "2m_vs_1z": 150}[map_name]
        self.map_name, self.seed, self.kwargs = map_name, seed, kwargs
        self.continuing_episode = continuing_episode
        self.n_actions = FIRST_ATTACK + self.n_enemies
        self.max_reward = 3 * self.n_enemies + 10 * self.n_enemies + 200
        self.launched = self.closed = False
        self.resets = 0
        self.finished = True
        FakeStarCraft2Env.instances.append(self)

    def get_env_info(self):
        return {"state_shape": self.get_state_size(), "obs_shape": self.get_obs_size(),
                "n_actions": self.n_actions, "n_agents": self.n_agents, "episode_limit": self.episode_limit}

    def get_obs_size(self):
        return 4 + self.n_enemies + self.n_agents

    def get_state_size(self):
        return self.n_agents + self.n_enemies + 1

    def reset(self):
        self.launched = True
        self.resets += 1
        self.ally_hp = np.full(self.n_agents, 3.0)
        self.enemy_hp = np.full(self.n_enemies, 3.0)
        self.t = 0
        self.finished = False
        return self.get_obs(), self.get_state()

    def get_obs(self):
        return [np.concatenate([[self.ally_hp[a] / 3, self.t / 100, 0.5, 0.25], self.enemy_hp / 3, self.ally_hp / 3])
                .astype(np.float32) for a in range(self.n_agents)]

    def get_state(self):
        return np.concatenate([self.ally_hp / 3, self.enemy_hp / 3, [self.t / self.episode_limit]]).astype(np.float32)

    def get_avail_agent_actions(self, a):
        if self.ally_hp[a] <= 0:
            return [1] + [0] * (self.n_actions - 1)
        return [0, 1, 1, 1, 1, 1] + [int(hp > 0) for hp in self.enemy_hp]

    def get_avail_actions(self):
        return [self.get_avail_agent_actions(a) for a in range(self.n_agents)]

    def step(self, actions):
        assert not self.finished, "SMAC games must be reset after the episode ends"
        assert len(actions) == self.n_agents
        for a, act in enumerate(actions):
            assert self.get_avail_agent_actions(a)[act] == 1, f"agent {a} cannot perform action {act}"
        before = self.enemy_hp.copy()
        for act in actions:
            if act >= FIRST_ATTACK:
                self.enemy_hp[act - FIRST_ATTACK] = max(0.0, self.enemy_hp[act - FIRST_ATTACK] - 1)
        self.t += 1
        if self.t % 2 == 0 and (self.enemy_hp > 0).any():
            alive = np.flatnonzero(self.ally_hp > 0)
            if len(alive):
                self.ally_hp[alive[0]] -= 1
        reward = (before - self.enemy_hp).sum() + 10 * ((before > 0) & (self.enemy_hp <= 0)).sum()
        info = {"battle_won": False}
        terminated = False
        if not (self.enemy_hp > 0).any() or not (self.ally_hp > 0).any():
            terminated = True
            if (self.ally_hp > 0).any():
                info["battle_won"] = True
                reward += 200
        elif self.t >= self.episode_limit:
            terminated = True
            if self.continuing_episode:
                info["episode_limit"] = True
        self.finished = terminated
        return reward / (self.max_reward / 20), terminated, info

    def close(self):
        self.closed = True


@pytest.fixture(autouse=True)
def _fresh_fakes():
    FakeStarCraft2Env.instances.clear()
    yield


def make_fake(n_envs, **cfg):
    return smac_env.SMACVecEnv(env_config({"name": "smac", **cfg}), n_envs, env_factory=FakeStarCraft2Env)


def attack_first(avail):
    attack = avail[..., FIRST_ATTACK:]
    return torch.where(attack.any(-1), attack.float().argmax(-1) + FIRST_ATTACK,
                       torch.where(avail[..., STOP], STOP, NO_OP))


def hold(avail):
    return torch.where(avail[..., STOP], STOP, NO_OP)


def run(env, policies, seeds, steps):
    """Env b follows policies[b]; returns every StepResult."""
    avail = env.reset(seeds)["team"].avail
    out = []
    for _ in range(steps):
        actions = torch.stack([policies[b](avail[b]) for b in range(env.n_envs)])
        out.append(env.step({"team": actions}))
        avail = out[-1].obs["team"].avail
    return out


def test_info_and_shapes_come_from_get_env_info():
    env = make_fake(2, map_name="3m")
    (spec,) = env.info.teams
    assert (spec.name, spec.n_agents, spec.obs_dim, spec.state_dim, spec.n_actions) == ("team", 3, 10, 7, 9)
    assert env.info.name == "smac" and env.info.episode_limit == 60
    assert env.info.episode_stats == {"battle_won": "last"}
    first = env.reset([11, 12])["team"]
    assert first.obs.shape == (2, 3, 10) and first.obs.dtype == torch.float32
    assert first.state.shape == (2, 7) and first.state.dtype == torch.float32
    assert first.avail.shape == (2, 3, 9) and first.avail.dtype == torch.bool
    # the probe that told the shapes was never launched; the games were built with the reset seeds
    probe, *games = FakeStarCraft2Env.instances
    assert not probe.launched and probe.closed
    assert [g.seed for g in games] == [11, 12] and all(g.continuing_episode for g in games)


def test_win_loss_and_time_limit_in_one_batch():
    env = make_fake(3, map_name="3m", episode_limit=30)
    steps = run(env, [attack_first, hold, hold], [0, 1, 2], 32)
    won = torch.stack([r.info["battle_won"] for r in steps])
    term = torch.stack([r.terminated for r in steps])
    trunc = torch.stack([r.truncated for r in steps])
    ret = torch.stack([r.reward["team"] for r in steps]).sum(0)
    # env 0 kills one marine per step: won on step 3 with the maximum return of 20
    assert won[:, 0].tolist() == [0, 0, 1] + [0] * 29 and term[2:, 0].all() and not term[:2, 0].any()
    assert abs(ret[0].item() - 20.0) < 1e-5 and not trunc[:, 0].any()
    # envs 1 and 2 hold still: an ally falls every 6 steps, all three by step 18: lost, never won
    assert term[17:, 1].all() and not term[:17, 1].any() and won[:, 1].sum() == 0 and ret[1] == 0
    # episode_limit=30 > 18, so env 2 loses too (test_time_limit_is_truncation_not_termination covers limits)
    assert term[17:, 2].all() and not trunc.any()
    # dead agents can only no-op, and the finished games were never stepped again (the fake asserts it)
    last = steps[-1].obs["team"].avail[1]
    assert (last[:, NO_OP] & ~last[:, 1:].any(-1)).all()


def test_time_limit_is_truncation_not_termination():
    env = make_fake(2, map_name="3m", episode_limit=5)
    assert env.info.episode_limit == 5
    steps = run(env, [hold, hold], [0, 1], 8)
    for t, r in enumerate(steps):
        assert bool(r.truncated.all()) == (t >= 4) and not r.terminated.any()
        assert (r.info["battle_won"] == 0).all()


def test_finished_games_are_frozen_until_reset():
    env = make_fake(2, map_name="2m_vs_1z")
    steps = run(env, [attack_first, hold], [0, 1], 6)
    # env 0 wins on step 2 (two marines, 3 hit points); afterwards its outputs repeat with zero reward
    final = steps[1].obs["team"].obs[0]
    for r in steps[2:]:
        assert r.terminated[0] and r.reward["team"][0] == 0 and r.info["battle_won"][0] == 0
        assert torch.equal(r.obs["team"].obs[0], final)
    game0 = FakeStarCraft2Env.instances[1]
    assert game0.t == 2
    # a new reset restarts the same games (SC2 is launched once) and clears the flags
    first = env.reset([5, 6])
    assert FakeStarCraft2Env.instances[1] is game0 and game0.resets == 2 and game0.seed == 0
    assert first["team"].avail[0, :, FIRST_ATTACK].all()
    assert not env.step({"team": hold(first["team"].avail)}).terminated.any()


def test_returned_tensors_do_not_alias_the_next_step():
    env = make_fake(1, map_name="3m")
    first = env.reset([0])["team"]
    kept = first.state.clone()
    env.step({"team": attack_first(first.avail)})
    assert torch.equal(first.state, kept)


def test_close_closes_every_game():
    env = make_fake(2, map_name="3m")
    env.reset([0, 1])
    env.close()
    assert all(g.closed for g in FakeStarCraft2Env.instances)


def test_config_accepts_every_smac_map_and_lists_them_otherwise():
    for name in ("1c3s5z", "2c_vs_64zg", "MMM2", "3m"):
        assert env_config({"name": "smac", "map_name": name}).map_name == name
    with pytest.raises(ConfigError) as err:
        env_config({"name": "smac", "map_name": "4m"})
    assert "MMM2" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError):
        env_config({"name": "smac", "sc2_args": {"seed": 3}})


# ---- install checks ----------------------------------------------------------------------------------

def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_smac_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "smac", None)  # makes `import smac` fail
    with pytest.raises(ConfigError) as err:
        make_env({"name": "smac", "map_name": "3m"}, 1)
    msg = _one_line(err)
    assert "pip install git+https://github.com/oxwhirl/smac.git" in msg and "SC2PATH" in msg
    assert "StarCraft II" in msg


def test_pypi_smac3_is_recognised(monkeypatch):
    smac3 = types.ModuleType("smac")
    smac3.__path__ = []  # a package without an `env` subpackage, like SMAC3
    monkeypatch.setitem(sys.modules, "smac", smac3)
    monkeypatch.delitem(sys.modules, "smac.env", raising=False)
    with pytest.raises(ConfigError) as err:
        make_env({"name": "smac", "map_name": "3m"}, 1)
    msg = _one_line(err)
    assert "SMAC3" in msg and "pip uninstall smac" in msg and "oxwhirl/smac.git" in msg


@pytest.fixture
def fake_smac_package(monkeypatch):
    pkg, sub = types.ModuleType("smac"), types.ModuleType("smac.env")
    pkg.__path__ = []
    sub.StarCraft2Env = FakeStarCraft2Env
    pkg.env = sub
    monkeypatch.setitem(sys.modules, "smac", pkg)
    monkeypatch.setitem(sys.modules, "smac.env", sub)


def test_missing_starcraft2_or_maps_says_how_to_install(fake_smac_package, monkeypatch, tmp_path):
    monkeypatch.setenv("SC2PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError) as err:
        make_env({"name": "smac", "map_name": "3m"}, 1)
    msg = _one_line(err)
    assert "StarCraft II not found" in msg and "SC2PATH" in msg and "SMAC_Maps" in msg
    (tmp_path / "sc2" / "Versions" / "Base75689").mkdir(parents=True)
    monkeypatch.setenv("SC2PATH", str(tmp_path / "sc2"))
    with pytest.raises(ConfigError) as err:
        make_env({"name": "smac", "map_name": "3m"}, 1)
    assert "3m.SC2Map not found" in _one_line(err)


def test_make_with_everything_installed_builds_the_adapter(fake_smac_package, monkeypatch, tmp_path):
    (tmp_path / "Versions" / "Base75689").mkdir(parents=True)
    (tmp_path / "Maps" / "SMAC_Maps").mkdir(parents=True)
    (tmp_path / "Maps" / "SMAC_Maps" / "3m.SC2Map").write_bytes(b"")
    monkeypatch.setenv("SC2PATH", str(tmp_path))
    env = make_env({"name": "smac", "map_name": "3m", "sc2_args": {"obs_last_action": True}}, 2)
    assert isinstance(env, smac_env.SMACVecEnv) and "StarCraft II Base75689" in env.info.backend
    env.reset([0, 1])
    assert FakeStarCraft2Env.instances[-1].kwargs == {"obs_last_action": True}
