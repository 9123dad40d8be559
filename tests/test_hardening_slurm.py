"""Submitting to a real SLURM that says no or does not answer: a refused job array leaves none of its
pickles behind; an sbatch that hangs (slurmctld stopped with SIGSTOP, then continued) is ended after the
time-out with one line instead of hanging the sweep.

Run alone with:  .venv/bin/pytest -m slurm -v tests/test_hardening_slurm.py
"""
import os
import signal
import subprocess
import time

import pytest

from tests.conftest_slurm import asae, slurm_cluster, tiny_preset  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]


def test_a_refused_submission_leaves_no_pickles(tmp_path):
    preset = tiny_preset(tmp_path)
    results = tmp_path / "results"
    proc = asae("sweep", str(preset), "--results", str(results), "--executor", "slurm", "--time", "5",
                "--partition", "no_such_partition", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("asae sweep:")]
    assert "sbatch refused the job array" in line and "partition" in line.lower(), line
    logs = results / "sweeps" / "tiny" / "logs"
    assert not [p for p in logs.rglob("*") if p.suffix == ".pkl" or p.name.startswith(".submission_file_")], \
        sorted(p.name for p in logs.rglob("*"))


def test_a_hanging_sbatch_is_ended_with_one_line(tmp_path):
    pids = subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True, text=True).stdout.split()
    if not pids:
        pytest.skip("no slurmctld process on this machine to stop")
    preset = tiny_preset(tmp_path)
    results = tmp_path / "results"
    for pid in pids:
        os.kill(int(pid), signal.SIGSTOP)
    try:
        start = time.monotonic()
        proc = asae("sweep", str(preset), "--results", str(results), "--executor", "slurm", "--time", "5",
                    cwd=tmp_path, env={**os.environ, "ASAE_SBATCH_TIMEOUT_S": "5"}, timeout=120)
        took = time.monotonic() - start
    finally:
        for pid in pids:
            os.kill(int(pid), signal.SIGCONT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("asae sweep:")]
    assert "sbatch did not answer within 5 s" in line, line
    assert took < 60, f"{took:.0f} s"
    assert subprocess.run(["pgrep", "-x", "sbatch"], capture_output=True).returncode != 0, "sbatch left running"
