"""submitit executors for sweeps: ``slurm`` (one job array), ``local`` (a few runs at a time on this
machine, with a progress bar) and ``debug`` (one after another in this process)."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from validation import ConfigError, require
from slurm.jobs import STOP_SIGNALS, RunJob

EXECUTORS = ("slurm", "local", "debug")
MAX_TIMEOUT_REQUEUES = 20  # a run longer than the time limit is requeued (and resumed) this many times
SLURM_ONLY = ("partition", "gpus_per_task", "mem", "account", "qos", "constraint", "sbatch")


@dataclass
class ExecutorOptions:
    executor: str = "slurm"
    time: int = 240  # minutes per job (slurm: the time limit; USR2 comes before it and the run requeues)
    cpus_per_task: int = 1
    array_parallelism: int | None = None  # slurm: tasks running at once (default 256); local: runs at once (2)
    partition: str | None = None
    gpus_per_task: int | None = None
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch: dict[str, str] = field(default_factory=dict)  # more sbatch options: --sbatch KEY=VALUE

    def check(self) -> None:
        require(self.executor in EXECUTORS, f"--executor {self.executor!r} is not valid; choose one of {', '.join(EXECUTORS)}")
        require(self.time >= 1, f"--time {self.time} is not valid; give the time limit in minutes (>= 1)")
        require(self.cpus_per_task >= 1, f"--cpus-per-task {self.cpus_per_task} must be at least 1")
        require(self.array_parallelism is None or self.array_parallelism >= 1,
                f"--array-parallelism {self.array_parallelism} must be at least 1")
        require(self.gpus_per_task is None or self.gpus_per_task >= 0, f"--gpus-per-task {self.gpus_per_task} must be >= 0")
        require(self.mem is None or re.fullmatch(r"\d+(\.\d+)?[KMGT]?B?", self.mem, re.I) is not None,
                f"--mem {self.mem!r} is not valid; use e.g. 16G or 4000M")
        for key in self.sbatch:
            require(re.fullmatch(r"[a-z][a-z0-9\-_]*", key) is not None,
                    f"--sbatch {key!r}: not an sbatch option name (e.g. --sbatch exclusive=true --sbatch mail-type=END)")
            own = key.replace("-", "_")
            require(own not in ("time", "cpus_per_task", "array", "partition", "gpus_per_task", "mem", "account",
                                "qos", "constraint", "output", "error", "job_name"),
                    f"--sbatch {key}: use the sweep's own option (--{key.replace('_', '-')}) instead")
        if self.executor != "slurm":
            for name in SLURM_ONLY:
                value = getattr(self, name)
                require(not value, f"--{name.replace('_', '-')} only applies to --executor slurm "
                                   f"(this sweep runs with --executor {self.executor})")

    @property
    def parallel(self) -> int:
        return self.array_parallelism or (256 if self.executor == "slurm" else 2)

    def slurm_parameters(self, job_name: str) -> dict[str, Any]:
        """submitit SlurmExecutor parameters (names as in submitit's sbatch writer)."""
        params: dict[str, Any] = {"job_name": job_name, "time": self.time, "cpus_per_task": self.cpus_per_task,
                                  "array_parallelism": self.parallel}
        for name in ("partition", "gpus_per_task", "mem", "account", "qos", "constraint"):
            value = getattr(self, name)
            if value:
                params[name] = value
        if self.sbatch:
            params["additional_parameters"] = {k.replace("-", "_"): _sbatch_value(v) for k, v in self.sbatch.items()}
        return params


def _sbatch_value(value: Any) -> Any:
    return True if value is True or str(value).lower() == "true" else str(value)


def sbatch_preview(options: ExecutorOptions, job_name: str, folder: Path, n_jobs: int) -> str:
    """The sbatch script submitit would write for this sweep (without submitting or needing SLURM)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = f"{sys.executable} -u -m submitit.core._submit {folder}"
    return _make_sbatch_string(command=command, folder=str(folder), map_count=n_jobs if n_jobs > 1 else None,
                               **options.slurm_parameters(job_name))


def check_slurm_parameters(options: ExecutorOptions, job_name: str) -> None:
    """Let submitit's own sbatch writer reject what it cannot express, as a one-line error."""
    try:
        sbatch_preview(options, job_name, Path("/nonexistent"), 1)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"executor options: {str(exc).splitlines()[0]}") from None


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm: sbatch not found on this machine; start a local cluster "
                          "(slurm/local_cluster.sh start) or use --executor local / debug")


def submit_slurm(jobs: Mapping[str, RunJob], options: ExecutorOptions, folder: Path, job_name: str) -> dict[str, str]:
    """Submit all runs as one job array. Returns run_key -> SLURM job id ('123_4', or '123' for one run)."""
    import submitit

    require_sbatch()
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_TIMEOUT_REQUEUES)
    executor.update_parameters(**options.slurm_parameters(job_name))
    before = set(folder.iterdir()) if folder.is_dir() else set()
    outcome: dict[str, Any] = {}

    def submit() -> None:
        try:
            with executor.batch():
                outcome["jobs"] = [executor.submit(job) for job in jobs.values()]
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    worker = threading.Thread(target=submit, name="asae-sbatch", daemon=True)
    worker.start()
    worker.join(sbatch_timeout_s())
    if worker.is_alive():  # sbatch hangs (slurmctld down or stuck): end it, say so
        for pid in _children(os.getpid()):
            if _command_name(pid) == "sbatch":
                _signal(pid, signal.SIGKILL)
        worker.join(10)
        _remove_new_submission_files(folder, before)
        raise ConfigError(f"sbatch did not answer within {sbatch_timeout_s():.0f} s (is slurmctld up? `squeue` tells); "
                          "it was stopped: check `squeue --me` for the job array before submitting again "
                          f"(${SBATCH_TIMEOUT_ENV} sets the wait)")
    if "error" in outcome:  # sbatch refused (bad partition, too much time...): submitit raises its output
        _remove_new_submission_files(folder, before)
        exc = outcome["error"]
        lines = [ln for ln in str(exc).splitlines() if "error" in ln.lower()] or str(exc).splitlines() or [repr(exc)]
        raise ConfigError(f"sbatch refused the job array: {lines[-1].strip()}")
    return {key: job.job_id for key, job in zip(jobs, outcome["jobs"])}


SBATCH_TIMEOUT_ENV = "ASAE_SBATCH_TIMEOUT_S"


def sbatch_timeout_s() -> float:
    try:
        return max(1.0, float(os.environ.get(SBATCH_TIMEOUT_ENV, "120")))
    except ValueError:
        raise ConfigError(f"${SBATCH_TIMEOUT_ENV}={os.environ[SBATCH_TIMEOUT_ENV]!r} is not a number of seconds") from None


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _remove_new_submission_files(folder: Path, before: set[Path]) -> None:
    """The pickles and sbatch script a submission that did not happen left in the log folder."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path not in before and (path.suffix == ".pkl" or path.name.startswith(".submission_file_")):
            with contextlib.suppress(OSError):
                path.unlink()


class Progress:
    """finished / total counts: a tqdm bar on a terminal, one line per change in a log file."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.last = total, desc, None
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", desc=desc, dynamic_ncols=True)

    def update(self, finished: int, **counts: int) -> None:
        if self.bar is not None:
            self.bar.n = finished
            self.bar.set_postfix(counts, refresh=False)
            self.bar.refresh()
            return
        line = f"{self.desc}: {finished}/{self.total} " + " ".join(f"{k}={v}" for k, v in counts.items())
        if line != self.last:
            print(line, file=sys.stderr, flush=True)
            self.last = line

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class SweepStopped(Exception):
    """A local or debug sweep stopped by a signal; its running runs were checkpointed and INTERRUPTED."""

    def __init__(self, signum: int, outcomes: dict[str, "Outcome"]):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.outcomes = signum, outcomes

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


@dataclass
class Outcome:
    """How a run of a local or debug sweep ended: completed, interrupted (checkpoint saved), failed, or
    not started (the sweep stopped first, or another sweep took it)."""

    status: str  # completed | interrupted | failed | skipped | not started
    message: str = ""


class _StopSignals:
    """INT, TERM and HUP to the sweep: record them (the first stops the sweep gracefully, a second kills)."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __enter__(self) -> "_StopSignals":
        self.previous = {sig: signal.signal(sig, lambda signum, frame: self.received.append(signum))
                         for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def children_shielded(self) -> Iterator[None]:
        """Start a job's processes with Ctrl-C and hang-up ignored by submitit's controller (which, on
        SIGINT, would kill its job a second after passing the signal on) and INT, TERM and HUP blocked in
        the job until it installs its own handlers (slurm/jobs.py): a signal sent while it starts is kept,
        not lost. A signal to the sweep in this window is held too and handled right after."""
        held = {signal.SIGINT, signal.SIGHUP, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGHUP)}
        try:
            yield
        finally:
            for sig, handler in ignored.items():
                signal.signal(sig, handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(stat.parent.name))
    return out


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _say(progress: "Progress", message: str) -> None:
    """A line to the terminal, which may be gone (SIGHUP: writes fail with EIO)."""
    with contextlib.suppress(OSError, ValueError):
        progress.write(message)


def _outcome(key: str, job: Any, killed: bool = False) -> Outcome:
    try:
        result = job.result()
    except Exception as exc:  # noqa: BLE001 - reported per run, the others go on
        if killed:
            return Outcome("interrupted", f"run {key} killed: it keeps its last periodic checkpoint")
        return Outcome("failed", f"run {key} failed: {_last_line(exc)} (log: {job.paths.stderr})")
    status = result.get("status") if isinstance(result, dict) else "COMPLETED"
    if status == "INTERRUPTED":
        return Outcome("interrupted", f"run {key} interrupted at t_env={result.get('t_env')}: checkpoint saved in "
                                      f"{result.get('run_dir')}")
    if status == "NOT_STARTED":
        return Outcome("not started", f"run {key} not started (stopped while it was starting)")
    return Outcome("completed")


def run_local(jobs: Mapping[str, RunJob], options: ExecutorOptions, folder: Path,
              on_submit: Callable[[dict[str, str]], None],
              taken: Callable[[str], str | None] = lambda key: None) -> dict[str, Outcome]:
    """Run the jobs as local processes, ``options.parallel`` at a time. Returns run_key -> Outcome.

    A run waits in this queue for hours; ``taken(run_key)`` is asked just before it starts and says why it
    no longer needs to (another sweep of the same preset completed or started it meanwhile), or None.

    INT, TERM or HUP (Ctrl-C, kill, a closed terminal) stop the sweep: no queued run starts, every running
    one gets TERM, saves a checkpoint at the end of its iteration and ends INTERRUPTED (one line each),
    and SweepStopped is raised once every job's processes have exited. A second signal kills them at once
    (they keep their last periodic checkpoint)."""
    import submitit

    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_TIMEOUT_REQUEUES)
    executor.update_parameters(timeout_min=options.time)
    queue = list(jobs.items())
    running: dict[str, Any] = {}
    outcomes: dict[str, Outcome] = {}
    progress = Progress(len(queue), "local runs finished")
    signalled: set[int] = set()  # job processes already sent TERM
    announced = 0
    with _StopSignals() as stop:
        try:
            while running or (queue and not stop.received):
                while queue and len(running) < options.parallel and not stop.received:
                    key, job = queue.pop(0)
                    reason = taken(key)
                    if reason is not None:
                        outcomes[key] = Outcome("skipped")
                        _say(progress, f"run {key} skipped: {reason}")
                        continue
                    with stop.children_shielded():
                        running[key] = executor.submit(job)
                    on_submit({key: running[key].job_id})
                if stop.received:
                    kill = len(stop.received) > 1
                    if not announced or (kill and announced == 1):
                        announced = 2 if kill else 1
                        _say(progress, f"{signal.Signals(stop.received[-1]).name}: " + (
                            f"killing {len(running)} running run(s) now (they keep their last periodic checkpoint)"
                            if kill else f"stopping {len(running)} running run(s) after their current iteration, "
                                         "with a checkpoint (signal again to kill them now)"))
                    for key, job in running.items():  # a job whose process has not started yet: next round
                        for pid in _children(int(job.job_id)):
                            if kill or pid not in signalled:
                                _signal(pid, signal.SIGKILL if kill else signal.SIGTERM)
                                signalled.add(pid)
                        if kill:
                            _signal(int(job.job_id), signal.SIGKILL)
                for key, job in list(running.items()):
                    if not job.done():
                        continue
                    del running[key]
                    outcomes[key] = _outcome(key, job, killed=len(stop.received) > 1)
                    if outcomes[key].message:
                        _say(progress, outcomes[key].message)
                counts = {s: sum(o.status == s for o in outcomes.values()) for s in ("completed", "failed")}
                with contextlib.suppress(OSError, ValueError):
                    progress.update(len(outcomes), running=len(running), **counts)
                if running:
                    time.sleep(0.5)
        finally:
            with contextlib.suppress(OSError, ValueError):
                progress.close()
        if stop.received:
            for key, _ in queue:
                outcomes[key] = Outcome("not started")
            if queue:
                _say(progress, f"{len(queue)} queued run(s) not started")
            raise SweepStopped(stop.received[0], outcomes)
    return outcomes


def run_debug(jobs: Mapping[str, RunJob], on_submit: Callable[[dict[str, str]], None]) -> dict[str, Outcome]:
    """Run the jobs one after another in this process (breakpoints and tracebacks work as usual). A run
    stopped by INT, TERM or HUP ends INTERRUPTED with a checkpoint and the sweep stops (SweepStopped)."""
    outcomes: dict[str, Outcome] = {}
    keys = list(jobs)
    for i, (key, job) in enumerate(jobs.items()):
        print(f"[asae] debug run {i + 1}/{len(jobs)}: {key}", flush=True)
        on_submit({key: "in-process"})
        try:
            result = job()
        except Exception as exc:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            outcomes[key] = Outcome("failed", f"run {key} failed: {_last_line(exc)}")
            continue
        if job._stopped_by is not None:
            if result.get("status") == "INTERRUPTED":
                outcomes[key] = Outcome("interrupted", f"run {key} interrupted at t_env={result.get('t_env')}: "
                                                       f"checkpoint saved in {result.get('run_dir')}")
                print(outcomes[key].message, file=sys.stderr, flush=True)
            else:
                outcomes[key] = Outcome("completed" if result.get("status") == "COMPLETED" else "not started")
            for rest in keys[i + 1:]:
                outcomes[rest] = Outcome("not started")
            raise SweepStopped(signal.Signals[job._stopped_by], outcomes)
        outcomes[key] = Outcome("completed")
    return outcomes


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
