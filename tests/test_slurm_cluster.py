"""Sweeps on a real single-node SLURM (slurm/local_cluster.sh): job arrays through sbatch, idempotent
resubmission, preemption (USR2) and a bare `scontrol requeue` both ending in one continuous run.

Run alone with:  .venv/bin/pytest -m slurm -v -s tests/test_slurm_cluster.py
"""
import json
import subprocess
import time

import pytest

from tests.conftest_slurm import asae, assert_continuous, runs_of, slurm_cluster, tiny_preset, wait_until  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

# --time 60: a USR2 within the first 48 minutes is a preemption (a later one counts as a time-out).
SLURM = ["--executor", "slurm", "--time", "60", "--cpus-per-task", "1"]


def sacct(job: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", job.split("_")[0]],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def settled_sacct(job: str, timeout: float = 60.0) -> list[str]:
    """sacct once every task has left RUNNING/PENDING: a task whose result is already written (what
    `--wait` waits for) can still be exiting for a moment in SLURM's accounting."""
    deadline = time.monotonic() + timeout
    while True:
        rows = sacct(job)
        if not any(r.endswith(("|RUNNING", "|PENDING", "|COMPLETING")) for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(1.0)


def jobs_of(results, preset: str) -> dict[str, str]:
    state = json.loads((results / "sweeps" / preset / "state.json").read_text())["runs"]
    return {key: entry["job_id"] for key, entry in state.items()}


def test_sweep_runs_as_a_job_array_and_resubmission_submits_nothing(tmp_path):
    preset = tiny_preset(tmp_path, t_max=500, agents="[2, 3]")  # 2 configs x 2 seeds
    results = tmp_path / "results"
    args = [str(preset), "--seeds", "2", "--results", str(results)]
    start = time.monotonic()
    proc = asae("sweep", *args, *SLURM, "--array-parallelism", "2", "--wait", cwd=tmp_path, timeout=240)
    print(f"\n[slurm] 4-run job array: {time.monotonic() - start:.1f} s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted 4 run(s) as SLURM job array" in proc.stdout
    jobs = jobs_of(results, "tiny")
    assert len(jobs) == 4 and len({j.split("_")[0] for j in jobs.values()}) == 1  # one array, four tasks
    assert sorted(j.split("_")[1] for j in jobs.values()) == ["0", "1", "2", "3"]
    assert sorted(settled_sacct(next(iter(jobs.values())))) == sorted(f"{j}|COMPLETED" for j in jobs.values())
    runs = runs_of(results)
    assert sorted(r["run_key"] for r in runs) == sorted(jobs) and all(r["status"] == "COMPLETED" for r in runs)

    proc = asae("sweep", *args, *SLURM, cwd=tmp_path)
    assert proc.returncode == 0 and "nothing to submit" in proc.stdout and "4 completed" in proc.stdout
    assert jobs_of(results, "tiny") == jobs and len(runs_of(results)) == 4

    proc = asae("status", *args, cwd=tmp_path)
    rows = proc.stdout.splitlines()[1:-1]
    assert len(rows) == 4 and all(" completed " in r and " COMPLETED " in r for r in rows), proc.stdout
    assert {r.split()[0]: r.split()[5] for r in rows} == jobs  # run_key -> its SLURM job id


def test_preempted_and_requeued_jobs_resume_from_their_checkpoints(tmp_path):
    """Task 0 is preempted (USR2: checkpoint, then submitit requeues it); task 1 gets a bare
    `scontrol requeue` (SIGTERM: the job checkpoints and ends its run INTERRUPTED within KillWait, the
    original pickle reruns and finds that checkpoint on disk). Both must end in one COMPLETED run with every metric step exactly once."""
    # The requeued run must outlast KillWait (5 s) after the signal, or it simply completes meanwhile.
    t_preempt, t_requeue = 8_000, 12_000
    preset = tiny_preset(tmp_path, t_max=[t_preempt, t_requeue], agents="[2]")
    results = tmp_path / "results"
    args = [str(preset), "--results", str(results)]
    proc = asae("sweep", *args, *SLURM, "--array-parallelism", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = jobs_of(results, "tiny")
    by_task = {job.split("_")[1]: (key, job) for key, job in jobs.items()}
    (preempt_key, preempt_job), (requeue_key, requeue_job) = by_task["0"], by_task["1"]

    def has_checkpoint(key):
        return any(r["run_key"] == key and (r["dir"] / "checkpoint.pt").is_file() for r in runs_of(results))

    # Each is signalled as soon as it has a checkpoint, long before it could finish.
    wait_until(lambda: has_checkpoint(preempt_key), 120, "the run of task 0 to checkpoint")
    subprocess.run(["scancel", "--signal=USR2", preempt_job], check=True)
    start = time.monotonic()
    wait_until(lambda: has_checkpoint(requeue_key), 120, "the run of task 1 to checkpoint")
    subprocess.run(["scontrol", "requeue", requeue_job], check=True)

    def finished():
        runs = runs_of(results)
        return all(any(r["run_key"] == k and r["status"] == "COMPLETED" for r in runs) for k in (preempt_key, requeue_key))

    wait_until(finished, 180, "both runs to complete after preemption and requeue", poll=1)
    print(f"\n[slurm] preempt/requeue to both completed: {time.monotonic() - start:.1f} s")

    runs = runs_of(results)
    preempted = [r for r in runs if r["run_key"] == preempt_key]
    assert [r["status"] for r in preempted] == ["INTERRUPTED", "COMPLETED"]
    assert preempted[1]["config"]["resume_from"] == str(preempted[0]["dir"] / "checkpoint.pt")
    assert_continuous(preempted[1], t_preempt)

    requeued = [r for r in runs if r["run_key"] == requeue_key]
    # SIGTERM stopped the run with a checkpoint before KillWait ran out; the rerun resumes it.
    assert [r["status"] for r in requeued] == ["INTERRUPTED", "COMPLETED"], [r["status"] for r in requeued]
    assert requeued[1]["config"]["resume_from"] == str(requeued[0]["dir"] / "checkpoint.pt")
    assert requeued[1]["info"]["resumed_at_t_env"] > 0
    assert_continuous(requeued[1], t_requeue)

    proc = asae("status", *args, cwd=tmp_path)
    assert proc.stdout.splitlines()[-1].startswith("2 runs: 0 pending, 0 running, 2 completed"), proc.stdout
    assert asae("sweep", *args, *SLURM, cwd=tmp_path).stdout.rstrip().endswith("nothing to submit")
