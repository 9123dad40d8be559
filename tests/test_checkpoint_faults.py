"""Checkpoints that cannot be read (cut short, empty, not a checkpoint, another format): one line naming
the file and what is wrong, never a traceback; a sweep job falls back to the checkpoint before, or starts
afresh, and says so. Checkpoints are written whole or not at all, and the one before the newest is kept."""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
import torch

from experiments.api import find_runs, resolve_config, train
from experiments.files import atomic_write
from experiments.trainer import CHECKPOINT_NAME, CHECKPOINT_VERSION, PREVIOUS_CHECKPOINT_NAME, CheckpointError, read_checkpoint
from tests.conftest import asae_cli

# 50 env steps an iteration, a checkpoint after each.
TINY = {"algo": "coma", "n_envs": 2, "batch_size": 2, "test_episodes": 2, "test_interval": 200, "log_interval": 50,
        "checkpoint_interval": 50, "t_max": 1000, "env": {"name": "mpe_spread", "n_agents": 2}}


def interrupted_run(results: Path):
    """A run of TINY stopped (as by Ctrl-C) once it has written two checkpoints: it then writes a third."""
    stop = threading.Event()

    def stop_at_the_second_checkpoint():
        while not stop.wait(0.01):
            if list(results.glob(f"*/{PREVIOUS_CHECKPOINT_NAME}")):
                stop.set()

    threading.Thread(target=stop_at_the_second_checkpoint, daemon=True).start()
    result = train(TINY, results_dir=results, stop_event=stop)
    assert result.status == "INTERRUPTED"
    return result


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "cut":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_text("not a checkpoint\n")
    elif how == "foreign":
        torch.save({"model": torch.zeros(2)}, path)
    elif how == "older":
        state = torch.load(path, weights_only=False)
        torch.save({**state, "version": CHECKPOINT_VERSION - 1}, path)


WHAT_IS_WRONG = {
    "cut": "is cut short (an incomplete archive of",
    "empty": "is empty (0 bytes)",
    "text": "is not a PyTorch checkpoint",
    "foreign": "is not a training checkpoint of this suite (it holds a dict without a format version)",
    "older": f"has format {CHECKPOINT_VERSION - 1}; this version of the suite reads format {CHECKPOINT_VERSION}",
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One interrupted run with both checkpoints, copied by the tests that damage them."""
    return interrupted_run(tmp_path_factory.mktemp("saved") / "runs").run_dir


def test_the_last_two_checkpoints_are_kept(saved):
    newest = read_checkpoint(saved / CHECKPOINT_NAME)
    previous = read_checkpoint(saved / PREVIOUS_CHECKPOINT_NAME)
    assert 0 < previous["counters"]["t_env"] < newest["counters"]["t_env"] < TINY["t_max"]
    assert not list(saved.glob(".*tmp*")), "a temporary file was left behind"


def test_a_failed_write_leaves_the_checkpoints_as_they_were(tmp_path):
    path, previous = tmp_path / CHECKPOINT_NAME, tmp_path / PREVIOUS_CHECKPOINT_NAME
    path.write_bytes(b"new"), previous.write_bytes(b"old")

    def disk_full(f):
        f.write(b"half of a checkpoint")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, disk_full, keep_previous=previous)
    assert (path.read_bytes(), previous.read_bytes()) == (b"new", b"old")
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIOUS_CHECKPOINT_NAME, CHECKPOINT_NAME]


@pytest.mark.parametrize("how", list(WHAT_IS_WRONG))
def test_resume_from_an_unreadable_checkpoint_is_one_line_before_any_run(saved, tmp_path, how):
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    bad = run_dir / CHECKPOINT_NAME
    bad.write_bytes((saved / CHECKPOINT_NAME).read_bytes())
    damage(bad, how)
    with pytest.raises(CheckpointError) as caught:
        train(TINY, results_dir=tmp_path / "runs", resume_from=str(run_dir))
    assert str(caught.value).startswith(f"checkpoint {bad} {WHAT_IS_WRONG[how]}")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "runs").exists(), "a run was started"


def test_the_cli_names_the_file_and_points_to_the_one_before_it(saved, workdir):
    run_dir = workdir / "old"
    run_dir.mkdir()
    for name in (CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME):
        (run_dir / name).write_bytes((saved / name).read_bytes())
    damage(run_dir / CHECKPOINT_NAME, "cut")
    args = [f"{k}={v}" for k, v in TINY.items() if k != "env"]
    proc = subprocess.run(asae_cli() + ["train", "-F", "runs", "with", *args, "env.n_agents=2",
                                        f"resume_from={run_dir}"], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    size = len((saved / CHECKPOINT_NAME).read_bytes()) // 2
    assert proc.stderr.strip().splitlines() == [
        f"asae train: checkpoint {run_dir / CHECKPOINT_NAME} is cut short (an incomplete archive of {size} bytes); "
        f"the checkpoint before it may be readable: resume_from={run_dir / PREVIOUS_CHECKPOINT_NAME}"]
    assert not (workdir / "runs").exists()


def _copy_run(saved: Path, results: Path) -> Path:
    """The saved run as this sweep's first run (same run_key: the tests' config is TINY)."""
    run_dir = results / "1"
    run_dir.mkdir(parents=True)
    for path in saved.iterdir():
        if path.is_file():
            (run_dir / path.name).write_bytes(path.read_bytes())
    return run_dir


def _job(results: Path):
    from slurm.jobs import RunJob

    return RunJob(TINY, (), str(results), resolve_config(TINY)["run_key"])


def test_a_sweep_job_falls_back_to_the_checkpoint_before_a_damaged_one(saved, tmp_path, capsys):
    results = tmp_path / "runs"
    old = _copy_run(saved, results)
    damage(old / CHECKPOINT_NAME, "cut")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    outcome = _job(results)()
    assert outcome["status"] == "COMPLETED"
    out = capsys.readouterr().out.splitlines()
    key = resolve_config(TINY)["run_key"]
    assert [line for line in out if line.startswith(f"[asae] run {key}")] == [
        f"[asae] run {key}: checkpoint {old / CHECKPOINT_NAME} is cut short (an incomplete archive of "
        f"{len(before[CHECKPOINT_NAME])} bytes); falling back to the one before it",
        f"[asae] run {key}: resuming from {old / PREVIOUS_CHECKPOINT_NAME}"]
    first, resumed = find_runs(results, key)
    assert resumed.status == "COMPLETED"
    resumed_info = json.loads((resumed.run_dir / "info.json").read_text())
    previous = read_checkpoint(old / PREVIOUS_CHECKPOINT_NAME)
    assert resumed_info["resumed_at_t_env"] == previous["counters"]["t_env"]
    # The resumed run holds the whole curve, and the old run directory is as it was.
    steps = json.loads((resumed.run_dir / "metrics.json").read_text())["return_mean"]["steps"]
    assert steps == list(range(50, TINY["t_max"] + 1, 50))
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before


def test_a_sweep_job_with_no_readable_checkpoint_starts_afresh(saved, tmp_path, capsys):
    results = tmp_path / "runs"
    old = _copy_run(saved, results)
    damage(old / CHECKPOINT_NAME, "empty")
    damage(old / PREVIOUS_CHECKPOINT_NAME, "older")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    outcome = _job(results)()
    assert outcome["status"] == "COMPLETED"
    key = resolve_config(TINY)["run_key"]
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"[asae] run {key}")] == [
        f"[asae] run {key}: checkpoint {old / CHECKPOINT_NAME} is empty (0 bytes); falling back to the one before it",
        f"[asae] run {key}: checkpoint {old / PREVIOUS_CHECKPOINT_NAME} {WHAT_IS_WRONG['older']} (resume it with the "
        "version that wrote it); no readable checkpoint left: starting the run afresh"]
    fresh = find_runs(results, key)[-1]
    assert fresh.status == "COMPLETED"
    assert json.loads((fresh.run_dir / "config.json").read_text())["resume_from"] is None
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
