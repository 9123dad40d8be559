"""Scripted baselines (experiments/baselines.py, envs/scripted.py): measured with the real SMAX and MPE
envs and the suite's episode runner, cached by `asae baselines`, and printed by `asae train` at its end."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from experiments import baselines
from tests.conftest import ROOT, asae_cli


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(asae_cli() + list(args), cwd=cwd, capture_output=True, text=True, timeout=600)


def smax(map_name: str) -> dict:
    from envs import env_defaults

    return env_defaults({"name": "smax", "map_name": map_name})


def test_focus_fire_beats_random_on_3m_and_always_wins_2m_vs_1z():
    three = baselines.measure(smax("3m"), 96, only=("random", "focus_fire"))["policies"]
    assert three["random"]["win_rate"] <= 0.05
    assert three["focus_fire"]["win_ci"][0] > three["random"]["win_ci"][1]  # the intervals do not overlap
    assert 0.3 <= three["focus_fire"]["win_rate"] <= 0.7  # the heuristic enemy plays the same script: about even
    two = baselines.measure(smax("2m_vs_1z"), 32, only=("focus_fire",))["policies"]
    assert two["focus_fire"]["win_rate"] == 1.0  # SMAX's balance: focus fire always beats the lone zealot
    assert two["focus_fire"]["return_mean"] == pytest.approx(20.0, abs=1e-3)  # SMAC's scale: a win returns 20


def test_the_command_writes_a_well_formed_file_that_its_own_command_remakes(tmp_path):
    proc = cli("baselines", "--env", "mpe_spread", "--n-agents", "2", "--episodes", "40", "--out", "bl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "bl").iterdir()
    assert path.name == "mpe_spread_n2_limit25.json"
    data = json.loads(path.read_text())
    assert data["env"]["n_agents"] == 2 and data["n_episodes"] == 40 and data["metric"] == "return"
    assert data["backend"].startswith("batched numpy") and data["episode_seeds"] == [0, 39]
    assert data["provenance"]["packages"]["torch"]
    assert list(data["policies"]) == ["random", "untrained_asae", "nearest_landmark", "assigned_landmark"]
    for entry in data["policies"].values():
        low, high = entry["return_ci"]
        assert low < entry["return_mean"] < high and entry["win_rate"] is None and entry["win_ci"] is None
        assert entry["ep_length_mean"] == 25.0 and entry["label"]
    scores = {k: v["return_mean"] for k, v in data["policies"].items()}
    assert scores["assigned_landmark"] > scores["nearest_landmark"] > scores["random"]  # each rule does better
    assert data["command"] == "asae baselines --env mpe_spread --n-agents 2 --episodes 40"
    # The recorded command measures the same numbers again (same episodes, seeded random draws).
    again = cli(*data["command"].split()[1:], "--out", "again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / path.name).read_text())["policies"] == data["policies"]
    # Found for a run's env config; backend and timeout do not matter, every other option does.
    env = dict(data["env"])
    assert baselines.find_baseline(env, tmp_path / "bl")["policies"] == data["policies"]
    assert baselines.find_baseline({**env, "backend": "mpe2", "timeout": "terminal"}, tmp_path / "bl") is not None
    assert baselines.find_baseline({**env, "episode_limit": 26}, tmp_path / "bl") is None
    assert baselines.find_baseline({**env, "sight_range": 1.0}, tmp_path / "bl") is None


@pytest.mark.parametrize("args, words", [
    (["--env", "smac"], "measures smax and mpe_spread"),
    (["--env", "smax", "--map", "4m"], "'4m' is not a SMAX map"),
    (["--env", "smax", "--map", "MMM"], "env=smac"),
    (["--map", "3m"], "need --env"),
    (["--env", "mpe_spread", "--map", "3m"], "--map is for --env smax"),
    (["--env", "smax", "--n-agents", "3"], "--n-agents is for --env mpe_spread"),
    (["--env", "mpe_spread", "--set", "episode_limit=0"], "env.episode_limit=0"),
    (["--env", "mpe_spread", "--set", "nope=1"], "nope"),
    (["--env", "mpe_spread", "--set", "episode_limit"], "is not KEY=VALUE"),
    (["--env", "mpe_spread", "--with", "no_such_config"], "no_such_config"),
    (["--env", "mpe_spread", "--episodes", "1"], "at least 2 episodes"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, words):
    proc = cli("baselines", *args, "--out", "bl", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "bl").exists()


TRAIN = ["t_max=100", "n_envs=2", "batch_size=2", "test_episodes=4", "test_interval=100", "log_interval=50",
         "checkpoint_interval=100"]


def test_train_ends_with_its_final_test_beside_the_cached_baselines(workdir):
    made = cli("baselines", "--env", "mpe_spread", "--n-agents", "2", "--episodes", "20", cwd=workdir)
    assert made.returncode == 0, made.stderr
    proc = cli("train", "with", "env.n_agents=2", *TRAIN, "-F", "runs", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "final test return" in x]
    result = json.loads((workdir / "runs" / "1" / "run.json").read_text())["result"]
    metrics = json.loads((workdir / "runs" / "1" / "metrics.json").read_text())["test_return_mean"]
    assert f"final test return {result['test_return_mean']:.1f} (" in line
    assert f"this run at t_env 0 {metrics['values'][0]:.1f}" in line
    cached = json.loads((workdir / "results" / "baselines" / "mpe_spread_n2_limit25.json").read_text())
    for entry in cached["policies"].values():
        lo, hi = entry["return_ci"]
        assert f"{entry['label']} {entry['return_mean']:.1f} [{lo:.1f}, {hi:.1f}]" in line
    assert line.rstrip().endswith("20 episodes each)")

    # An env no file was measured on: one line saying how to make one, and that command works.
    proc = cli("train", "with", "env.n_agents=2", "env.episode_limit=10", *TRAIN, "-F", "runs", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "final test return" in x]
    hint = re.search(r"no cached baseline for this env; `(asae baselines [^`]+)` makes one$", line)
    assert hint, line
    assert hint[1] == "asae baselines --env mpe_spread --n-agents 2 --set episode_limit=10 --episodes 1000"
    remade = cli(*hint[1].split()[1:-2], "--episodes", "4", cwd=workdir)
    assert remade.returncode == 0, remade.stderr
    assert (workdir / "results" / "baselines" / "mpe_spread_n2_limit10.json").is_file()


def test_every_smax_map_and_the_paper_spread_tasks_have_committed_baselines():
    from envs.smac_maps import smax_map_names

    root = ROOT / "results" / "baselines"
    for name in smax_map_names():
        data = baselines.find_baseline(smax(name), root)
        assert data is not None and data["n_episodes"] >= 1000, name
        assert {"random", "focus_fire"} <= set(data["policies"]) and data["metric"] == "win_rate"
    for n in (3, 4, 5):
        data = baselines.find_baseline(baselines._spread_paper(n), root)
        assert data is not None and data["n_episodes"] >= 1000 and data["env"]["episode_limit"] == 150
    from envs import env_defaults

    assert baselines.find_baseline(env_defaults({"name": "mpe_spread"}), root) is not None  # `asae train`'s default
