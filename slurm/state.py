"""What each run of a sweep is doing: Sacred runs on disk + the job that was submitted for it.

A sweep keeps a small state file in its log folder (results/sweeps/PRESET/state.json): run_key ->
the executor and job id of its latest submission (and the earlier ones). The status of a run combines
    - its Sacred runs (``experiments.api.find_runs``): a COMPLETED one means done;
    - its job: SLURM's squeue/sacct when present, the process of a local job;
    - without a job to ask, the Sacred heartbeat (a RUNNING run whose heartbeat stopped is dead).
Everything here works on a machine without SLURM.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from experiments.files import read_json

STATE_FILE = "state.json"
STATUSES = ("pending", "running", "completed", "failed", "interrupted")
# SLURM job states (squeue/sacct) grouped by what they mean for a run.
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "RESV_DEL_HOLD"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"}
HEARTBEAT_TIMEOUT_S = 90  # Sacred beats every 10 s; a RUNNING run silent for longer is dead


class SweepState:
    """The sweep's state file: run_key -> {executor, job_id, host, submitted, earlier_jobs}."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / STATE_FILE

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.path.read_text()).get("runs", {})
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}  # a torn file from an old crash: statuses fall back to the runs on disk

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / (STATE_FILE + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def record(self, executor: str, jobs: Mapping[str, str]) -> None:
        """Remember that run_key -> job_id was submitted with ``executor`` (atomic; safe across processes)."""
        now = dt.datetime.now().isoformat(timespec="seconds")
        with self._locked():
            runs = self.load()
            for run_key, job_id in jobs.items():
                old = runs.get(run_key)
                earlier = (old.get("earlier_jobs", []) + [old["job_id"]]) if old else []
                runs[run_key] = {"executor": executor, "job_id": str(job_id), "host": socket.gethostname(),
                                 "submitted": now, "earlier_jobs": earlier[-20:]}
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"runs": runs}, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


# --- SLURM ----------------------------------------------------------------------------------------
def _expand_ids(job_id: str) -> list[str]:
    """'12_[0-3%2]' -> ['12_0', ..., '12_3']; '12_4' -> ['12_4']; '12' -> ['12']."""
    from submitit.slurm.slurm import read_job_id

    try:
        parts = read_job_id(job_id)
    except ValueError:
        return [job_id]
    out = []
    for main, *rest in parts:
        if not rest:
            out.append(main)
        elif len(rest) == 1:
            out.append(f"{main}_{rest[0]}")
        else:
            out += [f"{main}_{i}" for i in range(int(rest[0]), int(rest[1]) + 1)]
    return out


def _run(command: list[str]) -> str | None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def slurm_job_states(job_ids: Sequence[str]) -> dict[str, str]:
    """job id ('12_3' or '12') -> SLURM state, from sacct (finished jobs) and squeue (live ones, which win)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    wanted = set(job_ids)
    bases = sorted({j.split("_")[0] for j in job_ids})
    states: dict[str, str] = {}
    if shutil.which("sacct"):
        out = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(bases)])
        for line in (out or "").splitlines():
            job, _, state = line.partition("|")
            for jid in _expand_ids(job.strip()):
                if jid in wanted:
                    states[jid] = state.split()[0] if state.strip() else "UNKNOWN"
    out = _run(["squeue", "-h", "-r", "--me", "-o", "%i|%T"])
    for line in (out or "").splitlines():
        job, _, state = line.partition("|")
        for jid in _expand_ids(job.strip()):
            if jid in wanted:
                states[jid] = state.strip()
    return states


def local_job_alive(entry: Mapping[str, Any]) -> bool | None:
    """Whether the process of a local job runs (None: it ran on another host, we cannot tell)."""
    if entry.get("host") != socket.gethostname():
        return None
    try:
        pid = int(entry["job_id"])
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (ValueError, KeyError, ProcessLookupError, PermissionError, FileNotFoundError):
        return False
    return b"submitit" in cmdline  # not a recycled pid


# --- runs on disk ---------------------------------------------------------------------------------
def heartbeat_age_s(run_dir: Path) -> float | None:
    run = read_json(run_dir / "run.json") or {}
    beat = run.get("heartbeat") or run.get("start_time")
    if not beat:
        return None
    try:
        when = dt.datetime.fromisoformat(beat)
    except ValueError:
        return None
    if when.tzinfo is None:  # Sacred writes naive UTC times
        when = when.replace(tzinfo=dt.timezone.utc)
    return (dt.datetime.now(dt.timezone.utc) - when).total_seconds()


def last_t_env(run_dir: Path) -> int:
    """How far a run got: the last step it logged (metrics.json; step = t_env)."""
    metrics = read_json(run_dir / "metrics.json") or {}
    steps = [s for m in metrics.values() if isinstance(m, dict) for s in m.get("steps", [])[-1:]]
    return int(max(steps)) if steps else 0


@dataclass
class RunStatus:
    run_key: str
    status: str  # one of STATUSES
    t_env: int = 0
    run_dir: Path | None = None
    resume_from: Path | None = None  # the checkpoint a (re)submitted job would start from
    job_id: str = ""
    job_state: str = ""  # SLURM state or local process state, "" when unknown
    active: bool = False  # a job (or a live process) is working on it: do not submit again

    @property
    def settled(self) -> bool:
        """Nothing to submit: the run completed, or a job is working on it."""
        return self.status == "completed" or self.active


def classify(run_key: str, records: Sequence[Any], entry: Mapping[str, Any] | None,
             slurm_states: Mapping[str, str]) -> RunStatus:
    from slurm.jobs import latest_checkpoint

    job_id = str(entry.get("job_id", "")) if entry else ""
    job_state = ""
    if entry and entry.get("executor") == "slurm":
        job_state = slurm_states.get(job_id, "")
    elif entry and entry.get("executor") == "local":
        alive = local_job_alive(entry)
        job_state = "" if alive is None else ("RUNNING" if alive else "EXITED")
    latest = records[-1] if records else None
    base = dict(run_key=run_key, job_id=job_id, job_state=job_state,
                run_dir=latest.run_dir if latest else None, resume_from=latest_checkpoint(records))

    completed = [r for r in records if r.status == "COMPLETED"]
    if completed:
        return RunStatus(status="completed", t_env=completed[-1].t_env or last_t_env(completed[-1].run_dir),
                         **{**base, "run_dir": completed[-1].run_dir, "resume_from": None})
    t_env = last_t_env(latest.run_dir) if latest else 0
    if job_state in RUNNING:
        return RunStatus(status="running", t_env=t_env, active=True, **base)
    if job_state in QUEUED:
        return RunStatus(status="pending", t_env=t_env, active=True, **base)
    if latest is None:
        # Submitted, but the job ended without ever starting a run (e.g. it failed on import).
        ended = bool(job_state) and entry is not None
        return RunStatus(status="failed" if ended else "pending", **base)
    if latest.status == "RUNNING":
        if job_state:  # its job is known and no longer running: the run died with it
            return RunStatus(status="interrupted", t_env=t_env, **base)
        age = heartbeat_age_s(latest.run_dir)
        alive = age is not None and age < HEARTBEAT_TIMEOUT_S
        return RunStatus(status="running" if alive else "interrupted", t_env=t_env, active=alive, **base)
    if latest.status == "FAILED":
        return RunStatus(status="failed", t_env=t_env, **base)
    if latest.status in ("INTERRUPTED", "TIMEOUT", "TIMED_OUT"):
        return RunStatus(status="interrupted", t_env=t_env, **base)
    return RunStatus(status="pending", t_env=t_env, **base)  # QUEUED or unknown


def run_statuses(run_keys: Sequence[str], results_dir: str | Path, state: SweepState) -> list[RunStatus]:
    from experiments.api import find_runs

    entries = state.load()
    slurm_ids = [e["job_id"] for k, e in entries.items() if k in set(run_keys) and e.get("executor") == "slurm"]
    slurm_states = slurm_job_states(slurm_ids)
    all_records = _records_by_key(results_dir, run_keys, find_runs)
    return [classify(k, all_records.get(k, []), entries.get(k), slurm_states) for k in run_keys]


def _records_by_key(results_dir: str | Path, run_keys: Sequence[str], find_runs) -> dict[str, list[Any]]:
    """find_runs for many run keys, reading each run directory once (one config.json per run)."""
    root = Path(results_dir)
    wanted = set(run_keys)
    keys_on_disk = set()
    if root.is_dir():
        for config in root.glob("*/config.json"):
            key = (read_json(config) or {}).get("run_key")
            if key in wanted:
                keys_on_disk.add(key)
    return {k: find_runs(results_dir, k) for k in keys_on_disk}
