"""The local executor: a few runs at a time on this machine; a run killed with -9 resumes on resubmission;
two sweeps of one preset never run a run twice."""
import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.files import read_json
from tests.conftest_slurm import asae, assert_continuous, runs_of, tiny_preset, wait_until

pytestmark = pytest.mark.slow

T_MAX = 2000
CHECKPOINT_INTERVAL = 100


def logged_t_env(logs: Path) -> int:
    """The furthest t_env the local jobs printed (progress lines reach the log at once: python -u)."""
    found = [int(m) for f in logs.glob("*_log.*") for m in re.findall(r"t_env (\d+)/", f.read_text())]
    return max(found, default=0)


def kill_local_job(job_id: str) -> None:
    """kill -9 a local submitit job: its process (the job id is its pid) and the run it started."""
    pid = int(job_id)
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for p in (*map(int, children), pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def test_kill_9_of_a_local_run_then_resubmission_resumes_from_the_last_checkpoint(tmp_path):
    preset = tiny_preset(tmp_path, t_max=T_MAX, agents="[2]")
    results = tmp_path / "results"
    args = [str(preset), "--executor", "local", "--results", str(results)]
    exe = str(Path(sys.executable).with_name("asae"))
    sweep = subprocess.Popen([exe, "sweep", *args], cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logs = results / "sweeps" / "tiny" / "logs"
    try:
        wait_until(lambda: logged_t_env(logs) >= 3 * CHECKPOINT_INTERVAL, 120, "the run to pass a few checkpoints")
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)  # the sweep, submitit's controller and the run, all at once
        sweep.wait()
    killed_at = logged_t_env(logs)
    assert killed_at < T_MAX, "the run finished before it could be killed: raise T_MAX"
    [killed] = runs_of(results)
    assert killed["status"] == "RUNNING"  # what a kill -9 leaves behind

    proc = asae("status", *args, cwd=tmp_path)
    assert proc.returncode == 0 and " interrupted " in proc.stdout, proc.stdout

    proc = asae("sweep", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 resume from a checkpoint" in proc.stdout
    first, resumed = runs_of(results)
    assert resumed["status"] == "COMPLETED"
    assert resumed["config"]["resume_from"] == str(first["dir"] / "checkpoint.pt")
    # At most one checkpoint interval (plus the iteration under way) was lost.
    assert killed_at - CHECKPOINT_INTERVAL - 50 <= resumed["info"]["resumed_at_t_env"] <= killed_at
    assert_continuous(resumed, T_MAX)

    proc = asae("sweep", *args, cwd=tmp_path)
    assert proc.returncode == 0 and "nothing to submit" in proc.stdout


def test_two_sweeps_of_one_preset_never_run_a_run_twice(tmp_path):
    """A second terminal runs the same sweep while the first still has a run queued: the second runs it;
    the first, when that run's turn comes, skips it with one line instead of running it a second time."""
    long_run, short_run = 10 ** 6, T_MAX  # the long run holds the first sweep's only slot until it is killed
    preset = tiny_preset(tmp_path, t_max=[long_run, short_run], agents="[2]")
    results = tmp_path / "results"
    args = [str(preset), "--executor", "local", "--results", str(results), "-j", "1"]
    exe = str(Path(sys.executable).with_name("asae"))
    first = subprocess.Popen([exe, "sweep", *args], cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: logged_t_env(results / "sweeps" / "tiny" / "logs") > 0, 120, "the long run to start")
        second = asae("sweep", *args, cwd=tmp_path)  # runs the short run, which the first sweep still queues
        assert second.returncode == 0, second.stdout + second.stderr
        assert "1 to submit" in second.stdout and "1 running or queued" in second.stdout, second.stdout
        # End the long run (a local job's id is its pid); the first sweep then takes its next queued run.
        [long_key] = [r["run_key"] for r in runs_of(results) if r["config"]["t_max"] == long_run]
        kill_local_job(read_json(results / "sweeps" / "tiny" / "state.json")["runs"][long_key]["job_id"])
        out_first, _ = first.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the sweep and whatever it left running
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    runs = runs_of(results)
    assert sorted(r["config"]["t_max"] for r in runs) == [short_run, long_run], [r["dir"] for r in runs]
    [short] = [r for r in runs if r["config"]["t_max"] == short_run]
    assert short["status"] == "COMPLETED"
    assert f"run {short['run_key']} skipped: completed meanwhile" in out_first, out_first
