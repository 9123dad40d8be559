"""Runs that cannot learn say so, and configs that could never train (or never make sense) are refused
before any run directory exists: one line, non-zero exit, no traceback. Through the CLI, real runs."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import asae_cli
from tests.conftest_slurm import tiny_preset

TINY = ["env.backend=batched", "env.n_agents=2", "n_envs=2", "test_episodes=2", "log_interval=50"]


def asae(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*asae_cli(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_line(proc: subprocess.CompletedProcess, prefix: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_diverging_loss_fails_the_run_with_one_line_naming_it(tmp_path):
    runs = tmp_path / "runs"
    proc = asae("train", "-F", str(runs), "with", "algo=coma", *TINY, "batch_size=2", "t_max=2000", "lr=1e6",
                "critic_lr=1e6", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc, "asae train:")
    assert "training diverged: critic_loss is nan after the update at t_env=50 (iteration 1)" in line, line
    assert "the run FAILED" in line
    assert json.loads((runs / "1" / "run.json").read_text())["status"] == "FAILED"
    assert 'Started run with ID "1"' in (runs / "1" / "cout.txt").read_text(), "cout.txt holds what the run printed"


def test_a_diverged_run_keeps_its_last_finite_checkpoint(tmp_path):
    """QMIX collects 4 iterations before its first update (batch_size=8 episodes, 2 per iteration), writing
    checkpoints meanwhile; the first updates with lr=1e6 blow up, and the checkpoint before them stays."""
    from experiments.trainer import read_checkpoint

    runs = tmp_path / "runs"
    proc = asae("train", "-F", str(runs), "with", "algo=qmix", *TINY, "batch_size=8", "t_max=2000", "lr=1e6",
                "checkpoint_interval=50", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    line = one_line(proc, "asae train:")
    assert "training diverged:" in line and "the run FAILED" in line, line
    checkpoint = runs / "1" / "checkpoint.pt"
    assert f"its last checkpoint ({checkpoint}, t_env=" in line, line
    state = read_checkpoint(checkpoint)
    kept_at = int(line.split(f"{checkpoint}, t_env=")[1].split(")")[0])
    assert state["counters"]["t_env"] == kept_at
    for team_state in state["learners"].values():
        for name in ("agent", "mixer"):
            for tensor in team_state[name].values():
                assert bool(tensor.isfinite().all()), name


@pytest.mark.parametrize("args, says", [
    (["algo=qmix", "batch_size=32", "learner.buffer_size=16"], "batch_size=32 is larger than learner.buffer_size=16"),
    (["seed=-1"], "seed=-1 is not valid"),
    (["seed=99999999999999999999"], "seed=99999999999999999999 is not valid"),
    (["learner=5"], "learner=5 is not valid"),
    (["env=5"], "env=5 is not valid"),
], ids=["batch-over-buffer", "seed-negative", "seed-huge", "learner-int", "env-int"])
def test_a_config_that_cannot_run_is_refused_before_a_run_directory_exists(tmp_path, args, says):
    runs = tmp_path / "runs"
    proc = asae("train", "-F", str(runs), "with", *args, "t_max=100", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert says in one_line(proc, "asae train:")
    assert not runs.exists() or not any(runs.glob("[0-9]*"))


@pytest.mark.parametrize("argv, says", [
    (["-F", ""], "it got an empty string (an unset variable?)"),
    (["-F", "with", "t_max=10"], "it got 'with' (an unset variable?)"),
    (["--file_storage="], "it got an empty string"),
], ids=["empty", "unquoted-unset", "long-empty"])
def test_an_empty_file_storage_dir_is_refused(tmp_path, argv, says):
    proc = asae("train", *argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert says in one_line(proc, "asae train:")
    assert list(tmp_path.iterdir()) == []


def test_sweep_refuses_what_cannot_run(tmp_path):
    preset = tiny_preset(tmp_path)
    cases = [(["--config", "test_episodes=0"], "test_episodes=0 in 2 run(s)"),
             (["--config", "env=5"], "env=5 is not valid"),
             (["--config", "learner=5"], "learner=5 is not valid")]
    for extra, says in cases:
        proc = asae("sweep", str(preset), "--executor", "local", "--results", str(tmp_path / "r"), *extra, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert says in one_line(proc, "asae sweep:")
    assert not (tmp_path / "r").exists()


def test_a_runaway_seed_count_is_refused_at_once(tmp_path):
    for seeds in ("1000000", "0-99999999999999999"):
        start = time.monotonic()
        proc = asae("sweep", "ablation_m", "--seeds", seeds, "--dry-run", cwd=tmp_path, timeout=60)
        took = time.monotonic() - start
        assert proc.returncode == 2
        assert "at most 1000 seeds in one sweep" in one_line(proc, "asae sweep:")
        assert took < 20, f"{took:.1f} s"


def test_sizes_that_do_not_fit_in_memory_are_refused_with_the_estimate(tmp_path):
    runs = tmp_path / "runs"
    cases = [(["n_envs=100000"], "this run needs about", "episode buffers (100000 episodes of 26 steps)"),
             (["env.episode_limit=100000000"], "this run needs about", "episodes x 100000001 steps"),
             (["algo=qmix", "learner.buffer_size=100000000"], "this run needs about",
              "team replay (buffer_size=100000000 episodes of 26 steps)"),
             (["n_envs=100000", "env.backend=mpe2"], "n_envs=100000 mpe_spread envs (backend mpe2) need about", "")]
    for args, says, part in cases:
        start = time.monotonic()
        proc = asae("train", "-F", str(runs), "with", *args, "t_max=10", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        line = one_line(proc, "asae train:")
        assert says in line and part in line and "of this machine's" in line, line
        assert time.monotonic() - start < 60
    # Found once Sacred had made the run's directory, before anything trained: the directory goes again.
    assert not any(runs.glob("[0-9]*")), list(runs.iterdir())


def test_sigterm_while_the_envs_are_built_stops_before_the_first_iteration(tmp_path):
    """600 mpe2 envs take seconds to build and their first test round more: a SIGTERM sent as the run
    starts ends it INTERRUPTED at t_env=0, with a checkpoint, instead of training on."""
    import signal

    runs = tmp_path / "runs"
    proc = subprocess.Popen([*asae_cli(), "train", "-F", str(runs), "with", "algo=coma", "env.backend=mpe2",
                             "n_envs=600", "batch_size=600", "test_episodes=600", "t_max=100000"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "Started run" in line:
                proc.send_signal(signal.SIGTERM)
                break
        err = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 2, err
    assert "stopped at t_env=0 after saving a checkpoint; the run is INTERRUPTED" in err, err
    assert json.loads((runs / "1" / "run.json").read_text())["status"] == "INTERRUPTED"
    assert (runs / "1" / "checkpoint.pt").is_file()


def test_null_is_accepted_where_the_message_offers_it(tmp_path):
    from experiments.api import resolve_config
    from experiments.config import validate

    config = resolve_config({"learner.clip": "null"})  # what `with learner.clip=null` passes on
    assert validate(config).learner_config("team", "asae").clip is None
    proc = asae("train", "print_config", "with", "learner.clip=null", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_errors_found_once_the_run_directory_exists_leave_none_and_a_mismatch_names_the_key(tmp_path):
    runs = tmp_path / "runs"
    first = asae("train", "-F", str(runs), "with", "algo=coma", *TINY, "batch_size=2", "t_max=100",
                 "checkpoint_interval=50", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    cases = [(["lr=0.001", f"resume_from={runs / '1'}"], "it differs in lr (0.0005 there, 0.001 here)"),
             (['teams={"nobody": "coma"}'], "teams.nobody is not a team of env 'mpe_spread'")]
    import torch

    if not torch.cuda.is_available():
        cases.append((["device=cuda"], "device='cuda' but CUDA is not available on this machine"))
    for extra, says in cases:
        proc = asae("train", "-F", str(runs), "with", "algo=coma", *TINY, "batch_size=2", "t_max=100", *extra,
                    cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert says in one_line(proc, "asae train:")
    assert sorted(p.name for p in runs.glob("[0-9]*")) == ["1"]
