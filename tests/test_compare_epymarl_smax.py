"""`asae compare-epymarl --task smax_MAP`: EPyMARL's code driving this suite's SMAX env.

EPyMARL itself is not installed in CI. Its side is (1) real EPyMARL runs of a tiny budget on SMAX 3m
(tests/data/epymarl_tiny_smax/<algo>/seed0/, made by `asae compare-epymarl --task smax_3m --t-max 2000
--test-interval 1000 --test-episodes 4 --seeds 0` with the uoe-agents/epymarl checkout cbc38c0) and (2) a
stand-in for EPyMARL's `src/envs` package (its `MultiAgentEnv` base, a `REGISTRY` dict and the smaclite
import line the install makes optional), so that the install, the clash of the two top-level `envs`
packages and the env check run for real against this suite's real SMAX env."""
import json
import subprocess
import sys

import numpy as np
import pytest

from experiments import compare_epymarl as cmp
from tests.conftest import asae_cli

DATA = cmp.Path(__file__).resolve().parent / "data" / "epymarl_tiny_smax"

STAND_IN_INIT = '''from .multiagentenv import MultiAgentEnv
from .smaclite_wrapper import SMACliteWrapper

REGISTRY = {}
'''
STAND_IN_BASE = '''class MultiAgentEnv(object):
    def get_env_info(self):
        raise NotImplementedError
'''


def stand_in_checkout(root):
    """An EPyMARL-shaped checkout whose src/envs is a stand-in (see the module docstring)."""
    envs = root / "src" / "envs"
    envs.mkdir(parents=True)
    (root / "src" / "main.py").write_text("")
    (envs / "__init__.py").write_text(STAND_IN_INIT)
    (envs / "multiagentenv.py").write_text(STAND_IN_BASE)
    (envs / "smaclite_wrapper.py").write_text("import smaclite  # not installed here\n")
    (root / "src" / "config" / "envs").mkdir(parents=True)
    (root / "src" / "config" / "algs").mkdir(parents=True)
    for algo in ("coma", "qmix"):
        (root / "src" / "config" / "algs" / f"{algo}.yaml").write_text("")
    return root


def test_tasks_and_bad_task_arguments(tmp_path):
    task = cmp.task_of("smax_3s_vs_3z")
    assert task.smax and task.env_args == {"map_name": "3s_vs_3z"} and task.episode_limit == 150
    assert task.our_env == {"name": "smax", "map_name": "3s_vs_3z"} and task.default_metric == "test_battle_won_mean"
    assert cmp.task_of("spread") is cmp.SPREAD
    args = cmp.parse_args(["--task", "smax_3m"])
    assert args.metric == "test_battle_won_mean" and args.out == cmp.Path("results/fidelity/epymarl_smax_3m")
    assert cmp.output_paths(args)[1].name == "table.md"
    for argv, message in ((["--task", "mpe"], "valid tasks are spread and smax_MAP"),
                          (["--task", "smax_nomap"], "is not a SMAX map"),
                          (["--task", "smax_1c3s5z"], "env=smac"),
                          (["--metric", "test_battle_won_mean"], "spread has no battles"),
                          (["--task", "smax_3m", "--check-episodes", "0"], "at least 1")):
        proc = subprocess.run(asae_cli() + ["compare-epymarl", *argv], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, (argv, proc.stderr)


def test_epymarl_command_and_run_matching_on_smax():
    task = cmp.task_of("smax_3m")
    cmd = cmp.epymarl_command(cmp.Path("py"), "coma", 0, 2000, 1000, 4, task)
    assert cmd[1:5] == ["src/main.py", "--config=coma", "--env-config=asae_smax", "with"]
    assert "env_args.map_name=3m" in cmd and f"env_args.asae_root={cmp.SUITE_ROOT}" in cmd
    assert "t_max=3800" in cmd  # one round more per test (2000 / 1000 + 1): 10 envs x the 60-step limit
    assert "t_max=2180" in cmp.epymarl_command(cmp.Path("py"), "qmix", 0, 2000, 1000, 4, task)
    for algo in ("coma", "qmix"):
        run_dir = DATA / algo / "seed0"
        assert cmp.is_wanted_run(run_dir, algo, 0, 2000, 1000, 4, task)
        assert not cmp.is_wanted_run(run_dir, algo, 0, 2000, 1000, 4, cmp.task_of("smax_8m"))
        assert not cmp.is_wanted_run(run_dir, algo, 0, 2000, 1000, 4)  # not the spread task
        steps, wins = cmp.test_curve(run_dir, "test_battle_won_mean")  # EPyMARL keeps it in info.json
        assert steps[-1] >= 2000 and all(0 <= w <= 1 for w in wins)
    frame = cmp.curves_frame({"epymarl": {("coma", 0): DATA / "coma" / "seed0"}}, "test_battle_won_mean", task)
    assert list(frame.columns) == ["system", "algo", "seed", "t_env", "raw"]


def test_install_is_idempotent_and_the_env_check_runs_through_epymarls_registry(tmp_path):
    checkout = stand_in_checkout(tmp_path / "epymarl")
    cmp.install_smax_env(checkout)
    files = {p: p.read_text() for p in (checkout / "src").rglob("*") if p.is_file()}
    cmp.install_smax_env(checkout)
    assert {p: p.read_text() for p in (checkout / "src").rglob("*") if p.is_file()} == files
    registry = (checkout / "src" / "envs" / "__init__.py").read_text()
    assert registry.count("REGISTRY[\"asae_smax\"]") == 1 and "except ImportError:" in registry
    assert (checkout / "src" / "envs" / "asae_smax.py").read_text() == cmp.SMAX_ENV_CLASS.read_text()
    out = tmp_path / "out"
    args = cmp.parse_args(["--task", "smax_3s_vs_3z", "--epymarl", str(checkout), "--epymarl-python", sys.executable,
                           "--out", str(out), "--check-episodes", "3"])
    result = cmp.check_smax_env(args)
    assert result["identical"] and result["battles"] == 3 and result["steps"] > 3
    assert json.loads((out / "env_check.json").read_text()) == result
    assert set(result["compared"]) == {"obs", "state", "avail", "reward", "terminated", "truncated", "won"}
    assert not list(out.glob(".env_check*"))

    # the same battles with one reward changed: the replay finds it
    npz = tmp_path / "record.npz"
    spec = {"env": "asae_smax", "env_args": {"map_name": "3s_vs_3z", "asae_root": str(cmp.SUITE_ROOT)}, "seed": 1,
            "episodes": 2, "out": str(npz)}
    subprocess.run([sys.executable, "-c", cmp.CHECK_SCRIPT, json.dumps(spec)], cwd=checkout / "src", check=True,
                   capture_output=True, timeout=300)
    with np.load(npz) as data:
        record = {k: data[k] for k in data.files}
    ours = {"name": "smax", "map_name": "3s_vs_3z"}
    assert all(v["identical"] for v in cmp.replay_in_ours(record, ours).values())
    record["reward"] = record["reward"].copy()
    record["reward"][3] += 1e-3
    record["obs"] = record["obs"][:-1]  # one observation short
    report = cmp.replay_in_ours(record, ours)
    assert not report["reward"]["identical"] and report["reward"]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert not report["obs"]["identical"] and report["obs"]["max_abs_diff"] is None
    assert report["state"]["identical"]


def test_a_failing_env_check_is_one_line(tmp_path, capsys):
    checkout = stand_in_checkout(tmp_path / "epymarl")
    (checkout / "src" / "envs" / "multiagentenv.py").unlink()  # the registry cannot be imported
    argv = ["--task", "smax_3m", "--algos", "qmix", "--seeds", "0", "--t-max", "100", "--epymarl", str(checkout),
            "--epymarl-python", sys.executable, "--out", str(tmp_path / "out"), "--systems", "epymarl"]
    assert cmp.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("asae compare-epymarl: the env check in EPyMARL's python failed (exit 1): ModuleNotFoundError")
