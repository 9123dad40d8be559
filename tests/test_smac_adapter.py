"""The real-SMAC adapter (envs.smac) and its game workers (envs.smac_workers) against tests/smac_double.py.

Real StarCraft II cannot run on this machine (no SC2 binary, no SMAC maps, no oxwhirl smac package). The
double has StarCraft2Env's real signature and defaults, SMAC's protocol and rules, refuses what pysc2
could not take (a step_mul that is not an int >= 1, ...) and launches a real process per game, so these
tests see the arguments each game got, the games' processes and what is left of them after a shutdown.
The install checks are tested by hiding or faking the `smac` module.
"""
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from envs import ConfigError, EnvCrashed, env_config, make_env
from envs import smac as smac_env
from tests.conftest import ROOT, asae_cli
from tests.smac_double import StarCraft2Env as DoubleStarCraft2Env, fake_install

NO_OP, STOP, FIRST_ATTACK = 0, 1, 6


class Journal:
    """What the doubles wrote to $SC2_DOUBLE_JOURNAL: builds, launches and closes, with their pids."""

    def __init__(self, path: Path):
        self.path = path

    def events(self, kind: str) -> list[dict]:
        if not self.path.exists():
            return []
        return [e for e in map(json.loads, self.path.read_text().splitlines()) if e["event"] == kind]

    def games(self) -> list[dict]:
        """The arguments of every game built in a worker (not the probe built in this process)."""
        return [e["args"] for e in self.events("init") if e["pid"] != os.getpid()]

    def processes(self) -> set[int]:
        """Every worker process that launched a game, and every StarCraft II (stand-in) process launched."""
        return {pid for e in self.events("launch") for pid in (e["pid"], e["game_pid"])}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its parent has not collected it yet


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def all_gone(processes: set[int], seconds: float = 5) -> bool:
    """Whether every process has ended within a few seconds (SIGKILL takes effect when the victim next runs)."""
    return wait_until(lambda: not any(alive(p) for p in processes), seconds)


@pytest.fixture(autouse=True)
def journal(tmp_path, monkeypatch) -> Journal:
    path = tmp_path / "journal.jsonl"
    monkeypatch.setenv("SC2_DOUBLE_JOURNAL", str(path))
    monkeypatch.delenv("SC2_DOUBLE_STEP_MS", raising=False)
    monkeypatch.delenv("SC2_DOUBLE_CRASH", raising=False)
    return Journal(path)


@pytest.fixture
def envs_to_close():
    made = []
    yield made
    for env in made:
        env.close()


@pytest.fixture
def make_fake(envs_to_close):
    def make(n_envs, **cfg):
        env = smac_env.SMACVecEnv(env_config({"name": "smac", **cfg}), n_envs, env_factory=DoubleStarCraft2Env)
        envs_to_close.append(env)
        return env
    return make


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


# ---- StarCraft2Env's arguments -----------------------------------------------------------------------

def test_the_double_has_starcraft2envs_signature():
    real = pytest.importorskip("smac.env", reason="oxwhirl's smac is not installed; the double's signature is "
                                                  "copied from its smac/env/starcraft2/starcraft2.py")
    assert inspect.signature(DoubleStarCraft2Env) == inspect.signature(real.StarCraft2Env)


def test_what_the_user_does_not_set_is_smacs_default():
    smac_defaults = {name: p.default for name, p in inspect.signature(DoubleStarCraft2Env).parameters.items()}
    passed = smac_env.game_kwargs(env_config({"name": "smac"}), seed=None)
    del passed["map_name"]  # the suite's default map is 3m (SMAC's is 8m); a map is always named
    assert passed == {name: smac_defaults[name] for name in passed}
    assert passed["step_mul"] == 8 and passed["continuing_episode"] is False


def test_games_are_built_with_smacs_defaults_and_the_users_settings(make_fake, journal):
    make_fake(2).reset([11, 12])
    games = journal.games()
    assert sorted(g["seed"] for g in games) == [11, 12]
    for game in games:
        assert game == {**game, "map_name": "3m", "step_mul": 8, "difficulty": "7", "continuing_episode": False,
                        "obs_last_action": False, "move_amount": 2}
    journal.path.unlink()
    make_fake(1, step_mul=4, difficulty="3", timeout="truncation", sc2_args={"obs_last_action": True}).reset([5])
    (game,) = journal.games()
    assert (game["step_mul"], game["difficulty"], game["continuing_episode"], game["obs_last_action"]) == \
        (4, "3", True, True)


def test_step_mul_decides_how_far_the_game_advances(make_fake):
    # The enemy strikes every 16 game loops: every 2nd env step at step_mul 8, every 4th at step_mul 4.
    first_hit = {}
    for step_mul in (8, 4):
        steps = run(make_fake(1, step_mul=step_mul), [hold], [0], 4)
        health = [r.obs["team"].state[0, :3].sum().item() for r in steps]
        first_hit[step_mul] = next(t for t, h in enumerate(health) if h < 3)
    assert first_hit == {8: 1, 4: 3}


@pytest.mark.parametrize("step_mul", [None, 0, 8.0, True])
def test_the_double_refuses_a_step_mul_pysc2_cannot_send(step_mul):
    game = DoubleStarCraft2Env(map_name="3m", step_mul=step_mul)
    try:
        game.reset()
        with pytest.raises(ValueError, match="step_mul"):
            game.step([STOP] * 3)
    finally:
        game.close()


@pytest.mark.parametrize("args, error", [({"difficulty": "0"}, KeyError), ({"seed": 2**32}, ValueError),
                                         ({"seed": 1.5}, TypeError)])
def test_the_double_refuses_at_launch_what_pysc2_refuses(args, error):
    with pytest.raises(error):
        DoubleStarCraft2Env(map_name="3m", **args).reset()


def test_the_double_refuses_an_unknown_map_when_built():
    with pytest.raises(KeyError):
        DoubleStarCraft2Env(map_name="4m")


def test_config_checks_smacs_arguments_in_one_line():
    for name in ("1c3s5z", "2c_vs_64zg", "MMM2", "3m"):
        assert env_config({"name": "smac", "map_name": name}).map_name == name
    bad = [({"map_name": "4m"}, ["4m", "MMM2"]), ({"timeout": "bootstrap"}, ["terminal", "truncation"]),
           ({"step_mul": 0}, ["step_mul=0"]), ({"step_mul": None}, ["step_mul"]),
           ({"sc2_args": {"seed": 3}}, ["seed", "the run's seed"]),
           ({"sc2_args": {"continuing_episode": True}}, ["continuing_episode", "env.timeout"])]
    for cfg, words in bad:
        with pytest.raises(ConfigError) as err:
            env_config({"name": "smac", **cfg})
        assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_an_sc2_arg_starcraft2env_does_not_take_is_one_line(make_fake):
    with pytest.raises(ConfigError) as err:
        make_fake(1, sc2_args={"obs_last_actoin": True})
    assert "obs_last_actoin" in str(err.value) and "obs_last_action" in str(err.value)
    assert "\n" not in str(err.value)


# ---- SMAC's semantics through the adapter -------------------------------------------------------------

def test_info_and_shapes_come_from_get_env_info(make_fake, journal):
    env = make_fake(2, map_name="3m")
    (spec,) = env.info.teams
    assert (spec.name, spec.n_agents, spec.obs_dim, spec.state_dim, spec.n_actions) == ("team", 3, 10, 7, 9)
    assert env.info.name == "smac" and env.info.episode_limit == 60
    assert env.info.episode_stats == {"battle_won": "last"}
    first = env.reset([11, 2**32 + 12])["team"]
    assert first.obs.shape == (2, 3, 10) and first.obs.dtype == torch.float32
    assert first.state.shape == (2, 7) and first.state.dtype == torch.float32
    assert first.avail.shape == (2, 3, 9) and first.avail.dtype == torch.bool
    # the probe that told the shapes was built here and never launched; each game has its own process
    assert [e["pid"] for e in journal.events("init")][0] == os.getpid()
    assert [e["pid"] for e in journal.events("close")][0] == os.getpid()
    launches = journal.events("launch")
    assert sorted(e["seed"] for e in launches) == [11, 12]  # seeds fit SC2's uint32
    assert len({e["pid"] for e in launches} | {os.getpid()}) == 3


def test_win_and_loss_in_one_batch(make_fake):
    env = make_fake(3, map_name="3m", episode_limit=30)
    steps = run(env, [attack_first, hold, hold], [0, 1, 2], 32)
    won = torch.stack([r.info["battle_won"] for r in steps])
    term = torch.stack([r.terminated for r in steps])
    trunc = torch.stack([r.truncated for r in steps])
    ret = torch.stack([r.reward["team"] for r in steps]).sum(0)
    # env 0 kills one marine per step: won on step 3 with the maximum return of 20
    assert won[:, 0].tolist() == [0, 0, 1] + [0] * 29 and term[2:, 0].all() and not term[:2, 0].any()
    assert abs(ret[0].item() - 20.0) < 1e-5
    # envs 1 and 2 hold still: an ally falls every 6 steps, all three by step 18: lost, never won
    for b in (1, 2):
        assert term[17:, b].all() and not term[:17, b].any() and won[:, b].sum() == 0 and ret[b] == 0
    assert not trunc.any()
    # dead agents can only no-op, and the finished games were never stepped again (the double refuses it)
    last = steps[-1].obs["team"].avail[1]
    assert (last[:, NO_OP] & ~last[:, 1:].any(-1)).all()


@pytest.mark.parametrize("timeout", [None, "terminal", "truncation"])
def test_a_time_out_is_terminal_by_default_and_truncation_on_request(make_fake, timeout):
    env = make_fake(2, map_name="3m", episode_limit=5, **({"timeout": timeout} if timeout else {}))
    assert env.info.episode_limit == 5
    for t, r in enumerate(run(env, [hold, hold], [0, 1], 8)):
        ended = t >= 4
        assert r.terminated.tolist() == [ended and timeout != "truncation"] * 2
        assert r.truncated.tolist() == [ended and timeout == "truncation"] * 2
        assert (r.info["battle_won"] == 0).all()


def test_finished_games_are_frozen_until_reset(make_fake, journal):
    env = make_fake(2, map_name="2m_vs_1z")
    steps = run(env, [attack_first, hold], [0, 1], 12)
    # env 0 wins on step 2 (two marines, 3 hit points); afterwards its outputs repeat with zero reward
    final = steps[1].obs["team"].obs[0]
    for r in steps[2:]:
        assert r.terminated[0] and r.reward["team"][0] == 0 and r.info["battle_won"][0] == 0
        assert torch.equal(r.obs["team"].obs[0], final)
    assert steps[-1].terminated[1] and not steps[-2].terminated[1]  # env 1 has lost both marines by step 12
    # a new reset restarts the battles in the same games (SC2 is launched once per game) and clears the flags
    first = env.reset([5, 6])
    assert sorted(e["seed"] for e in journal.events("launch")) == [0, 1]
    assert first["team"].avail[0, :, FIRST_ATTACK].all()
    assert not env.step({"team": hold(first["team"].avail)}).terminated.any()


def test_returned_tensors_do_not_alias_the_next_step(make_fake):
    env = make_fake(1, map_name="3m")
    first = env.reset([0])["team"]
    kept = first.state.clone()
    env.step({"team": attack_first(first.avail)})
    assert torch.equal(first.state, kept)


# ---- games in worker processes -----------------------------------------------------------------------

def test_games_step_at_the_same_time(make_fake, monkeypatch, journal):
    monkeypatch.setenv("SC2_DOUBLE_STEP_MS", "300")
    env = make_fake(4)
    avail = env.reset([0, 1, 2, 3])["team"].avail
    start = time.perf_counter()
    env.step({"team": hold(avail)})
    assert time.perf_counter() - start < 0.9  # one after another, four 300 ms steps take 1.2 s
    assert len({e["pid"] for e in journal.events("launch")} - {os.getpid()}) == 4


def test_close_leaves_no_worker_or_game_process(make_fake, journal):
    env = make_fake(3)
    run(env, [hold] * 3, [0, 1, 2], 2)
    processes = journal.processes()
    assert len(processes) == 6 and all(alive(p) for p in processes)
    env.close()
    assert all_gone(processes)
    assert len(journal.events("close")) == 4  # the probe and every game closed their StarCraft II
    env.close()


def test_a_starcraft2_that_smac_loses_track_of_does_not_outlive_close(make_fake, journal):
    env = make_fake(1)
    run(env, [hold], [0], 2)
    env.reset([0])  # SMAC launches the game at every reset until its first episode has ended: now two
    processes = journal.processes()
    assert len(journal.events("launch")) == 2 and all(alive(p) for p in processes)
    env.close()
    assert all_gone(processes)


def test_a_worker_killed_mid_episode_is_one_line_naming_the_game(make_fake, monkeypatch, journal):
    monkeypatch.setenv("SC2_DOUBLE_CRASH", "13:3:exit")
    env = make_fake(3)
    with pytest.raises(EnvCrashed) as err:
        run(env, [hold] * 3, [11, 13, 15], 5)
    (worker,) = [e["pid"] for e in journal.events("launch") if e["seed"] == 13]
    assert str(err.value) == (f"env=smac: game 1 of 3 (map 3m, seed 13) died during step: its worker process "
                              f"(pid {worker}) was killed by SIGKILL")
    processes = journal.processes()
    env.close()
    assert all_gone(processes)  # the dead worker's StarCraft II too


def test_an_error_in_a_game_is_one_line_naming_the_game(make_fake, monkeypatch, journal):
    monkeypatch.setenv("SC2_DOUBLE_CRASH", "15:2:raise")
    env = make_fake(3)
    with pytest.raises(EnvCrashed) as err:
        run(env, [hold] * 3, [11, 13, 15], 5)
    assert str(err.value) == ("env=smac: game 2 of 3 (map 3m, seed 15) failed during step: ConnectionError: "
                              "Connection already closed. SC2 probably crashed. Check the error log.")
    processes = journal.processes()
    env.close()
    assert all_gone(processes)


def test_stop_signals_sent_to_every_process_leave_the_games_running(make_fake, journal):
    # SLURM sends USR2 (preemption, time limit) and scancel's signals to every process of a job: only the
    # trainer may act on them, the games must keep running until it has saved its checkpoint.
    env = make_fake(2)
    avail = env.reset([0, 1])["team"].avail
    processes = journal.processes()
    for pid in processes:
        os.kill(pid, signal.SIGUSR2)
        os.kill(pid, signal.SIGINT)
    time.sleep(0.2)
    assert all(alive(p) for p in processes)
    assert not env.step({"team": hold(avail)}).terminated.any()


def test_a_trainer_killed_outright_takes_its_games_along(journal, tmp_path):
    script = ("import sys; from envs import env_config; from envs.smac import SMACVecEnv; "
              "from tests.smac_double import StarCraft2Env; "
              "env = SMACVecEnv(env_config({'name': 'smac'}), 2, env_factory=StarCraft2Env); env.reset([0, 1]); "
              "print('ready', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "ready"
        processes = journal.processes()
        assert len(processes) == 4 and all(alive(p) for p in processes)
    finally:
        proc.kill()
        proc.wait()
    assert all_gone(processes, 20)


# ---- `asae train` with env=smac ------------------------------------------------------------------------

@pytest.fixture
def cli_env(tmp_path, journal):
    env = {**os.environ, **fake_install(tmp_path / "sc2"), "SC2_DOUBLE_STEP_MS": "20"}
    env["PYTHONPATH"] += os.pathsep + str(ROOT)  # this tree's code, whichever suite the venv installed
    return env


def start_training(workdir, env, *overrides):
    return subprocess.Popen(asae_cli() + ["train", "with", "env=smac", "algo=coma", "n_envs=4", "batch_size=4",
                                          "t_max=1000000", "test_episodes=0", "log_interval=200", *overrides],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # a process group of its own, as a shell gives a command


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stop_with_a_checkpoint_and_no_game_left(workdir, cli_env, journal, how):
    proc = start_training(workdir, cli_env)
    try:
        assert wait_until(lambda: len(journal.events("launch")) == 4, 120), proc.stderr
        time.sleep(1.0)  # mid-iteration
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground process group
        else:
            proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    lines = [ln for ln in stderr.splitlines() if ln.startswith("asae train:")]
    assert proc.returncode == 2 and len(lines) == 1 and "stopped at t_env=" in lines[0], stderr
    run_dir = workdir / "results" / "runs" / "1"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "INTERRUPTED"
    assert (run_dir / "checkpoint.pt").is_file()
    assert all_gone(journal.processes())


def test_a_game_that_dies_in_training_ends_the_run_with_one_line(workdir, cli_env, journal):
    proc = start_training(workdir, {**cli_env, "SC2_DOUBLE_CRASH": "*:3:exit"})
    try:
        _, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("asae train:")]
    assert re.fullmatch(r"asae train: env=smac: game 0 of 4 \(map 3m, seed \d+\) died during step: its worker "
                        r"process \(pid \d+\) was killed by SIGKILL; the run FAILED \(to continue from its last "
                        r"checkpoint, if it wrote one: asae train with .* resume_from=results/runs/1\)", line), line
    assert json.loads((workdir / "results" / "runs" / "1" / "run.json").read_text())["status"] == "FAILED"
    assert all_gone(journal.processes())


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
    assert "pip install --no-deps git+https://github.com/oxwhirl/smac.git pysc2" in msg and "SC2PATH" in msg
    assert "StarCraft II" in msg


def test_smac_with_a_too_new_protobuf_says_what_to_set(monkeypatch, tmp_path):
    # what importing oxwhirl's smac raises next to this suite's protobuf, unless told to use pure-Python parsing
    (tmp_path / "smac" / "env").mkdir(parents=True)
    (tmp_path / "smac" / "__init__.py").write_text("")
    (tmp_path / "smac" / "env" / "__init__.py").write_text(
        "raise TypeError('Descriptors cannot be created directly.\\nIf this call came from a _pb2.py file, your "
        "generated code is out of date and must be regenerated with protoc >= 3.19.0.')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "smac", raising=False)
    monkeypatch.delitem(sys.modules, "smac.env", raising=False)
    with pytest.raises(ConfigError) as err:
        make_env({"name": "smac", "map_name": "3m"}, 1)
    msg = _one_line(err)
    assert "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python" in msg and "protobuf" in msg


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
    sub.StarCraft2Env = DoubleStarCraft2Env
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


def test_make_with_everything_installed_builds_the_adapter(fake_smac_package, monkeypatch, tmp_path, journal,
                                                           envs_to_close):
    (tmp_path / "Versions" / "Base75689").mkdir(parents=True)
    (tmp_path / "Maps" / "SMAC_Maps").mkdir(parents=True)
    (tmp_path / "Maps" / "SMAC_Maps" / "3m.SC2Map").write_bytes(b"")
    monkeypatch.setenv("SC2PATH", str(tmp_path))
    env = make_env({"name": "smac", "map_name": "3m", "sc2_args": {"obs_last_action": True}}, 2)
    envs_to_close.append(env)
    assert isinstance(env, smac_env.SMACVecEnv) and "StarCraft II Base75689" in env.info.backend
    env.reset([0, 1])
    assert [g["obs_last_action"] for g in journal.games()] == [True, True]
