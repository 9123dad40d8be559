"""One run of a sweep as a submitit job that survives preemption, timeouts and requeues.

The job finds its own state on disk when it starts (``experiments.api.find_runs`` by run_key): a
completed run is not run again, and an unfinished one resumes from the newest checkpoint that can be read
(a damaged one is skipped with a line saying so; with none left, the run starts afresh). So every way
a job can be restarted ends in one correct run: submitit's requeue after ``checkpoint()`` (USR2 on
preemption or before the time limit), a bare ``scontrol requeue`` (which reruns the original pickle),
a node failure, or the user resubmitting the sweep.

Training runs in a worker thread so that the main thread stays free for signal handlers:
``checkpoint()`` (submitit's USR2) sets the stop event, the trainer saves a checkpoint at the end of its
iteration and the Sacred run ends INTERRUPTED, the thread is joined, and the returned DelayedSubmission is
requeued. INT, TERM and HUP (Ctrl-C, ``scancel``, a closed terminal, a local sweep being stopped) do the
same without the requeue: the job returns ``status: INTERRUPTED`` and rerunning the sweep resumes the run.
"""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import submitit


def checkpoint_candidates(records) -> list[Path]:
    """Checkpoints to resume from, best first: of the newest run of the run_key that wrote one, its newest
    checkpoint and the one before it, then those of the runs before (a resumed run only moves forward
    from the checkpoint it started at, so newer means further)."""
    from experiments.trainer import PREVIOUS_CHECKPOINT_NAME

    out = []
    for record in reversed(records):
        if record.checkpoint is None:
            continue
        out.append(record.checkpoint)
        previous = record.checkpoint.with_name(PREVIOUS_CHECKPOINT_NAME)
        if previous != record.checkpoint and previous.is_file():
            out.append(previous)
    return out


def latest_checkpoint(records) -> Path | None:
    candidates = checkpoint_candidates(records)
    return candidates[0] if candidates else None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def readable_checkpoint(run_key: str, records) -> Path | None:
    """The best checkpoint that can be read; each one skipped, and starting afresh, get a line."""
    from experiments.trainer import CheckpointError, read_checkpoint

    candidates = checkpoint_candidates(records)
    for i, candidate in enumerate(candidates):
        try:
            read_checkpoint(candidate, mmap=True)
            return candidate
        except CheckpointError as exc:
            then = ("falling back to the one before it" if i + 1 < len(candidates)
                    else "no readable checkpoint left: starting the run afresh")
            print(f"[asae] run {run_key}: {exc}; {then}", flush=True)
    return None


def run_on_disk(config_updates: dict[str, Any], named_configs: tuple[str, ...], results_dir: str, submitted_key: str):
    """What a job finds of its run when it starts: (run_key now, its Sacred runs on disk, the COMPLETED ones);
    a warning when the code changed what identifies the run since it was submitted."""
    from experiments.api import find_runs, resolve_config

    run_key = resolve_config(config_updates, named_configs)["run_key"]
    if run_key != submitted_key:
        print(f"[asae] warning: this config is now run {run_key}, submitted as {submitted_key} "
              "(the code changed what identifies a run)", file=sys.stderr, flush=True)
    records = find_runs(results_dir, run_key)
    return run_key, records, [r for r in records if r.status == "COMPLETED"]


class RunJob(submitit.helpers.Checkpointable):
    def __init__(self, config_updates: dict[str, Any], named_configs: tuple[str, ...], results_dir: str,
                 run_key: str, threads: int | None = None, commit_message: str | None = None):
        self.config_updates = config_updates
        self.named_configs = tuple(named_configs)
        self.results_dir = str(results_dir)
        self.run_key = run_key
        self.threads = threads
        self.commit_message = commit_message  # commit the run's result files to git when it completes
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._stopped_by: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_stop", "_thread", "_stopped_by")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _stop=None, _thread=None, _stopped_by=None)

    def _stop_on_signals(self):
        """INT, TERM and HUP set the stop event (once; repeats are ignored: the run is already stopping).
        A local sweep starts its jobs with these signals blocked, so one sent while the job was still
        starting waits and arrives here. Returns the function that puts the previous handlers back."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def stop(signum, frame):
            if self._stopped_by is None:
                self._stopped_by = signal.Signals(signum).name
                print(f"[asae] run {self.run_key}: {self._stopped_by} received: stopping after this iteration "
                      "with a checkpoint", flush=True)
            if self._stop is not None:
                self._stop.set()

        previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return restore

    def __call__(self) -> dict[str, Any]:
        self._stop = threading.Event()
        restore = self._stop_on_signals()
        try:
            return self._run()
        finally:
            restore()

    def _run(self) -> dict[str, Any]:
        from experiments.api import train
        from experiments.observers import mongo_from_environment

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        run_key, records, done = run_on_disk(self.config_updates, self.named_configs, self.results_dir, self.run_key)
        if done:
            print(f"[asae] run {run_key} already completed in {done[-1].run_dir}", flush=True)
            return {"run_key": run_key, "status": "COMPLETED", "run_dir": str(done[-1].run_dir), "ran": False}
        if self._stopped_by is not None:  # stopped before its run started: nothing to save
            return {"run_key": run_key, "status": "NOT_STARTED", "run_dir": None, "ran": False}
        resume = readable_checkpoint(run_key, records)
        if resume is not None:
            print(f"[asae] run {run_key}: resuming from {resume}", flush=True)
        mongo_url, mongo_required = mongo_from_environment()
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["result"] = train(self.config_updates, self.named_configs, self.results_dir,
                                          resume_from=None if resume is None else str(resume),
                                          stop_event=self._stop, progress="log", mongo_url=mongo_url,
                                          mongo_required=mongo_required)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                outcome["error"] = exc

        self._join(target, f"asae-run-{run_key}")
        if "error" in outcome:
            raise outcome["error"]
        result = outcome["result"]
        if result.status == "INTERRUPTED" and self._stopped_by is not None:
            print(f"[asae] run {run_key}: interrupted ({self._stopped_by}) at t_env={result.t_env} with a checkpoint "
                  f"in {result.run_dir}", flush=True)
            return {"run_key": run_key, "status": "INTERRUPTED", "run_dir": str(result.run_dir), "ran": True,
                    "t_env": result.t_env, "signal": self._stopped_by}
        if result.status != "COMPLETED":
            raise RuntimeError(f"run {run_key} ended {result.status} in {result.run_dir}")
        if self.commit_message is not None:
            from slurm.gitcommit import commit_runs

            committed = commit_runs([result.run_dir], self.commit_message)
            if committed:
                print(f"[asae] {committed}", flush=True)
        return {"run_key": run_key, "status": result.status, "run_dir": str(result.run_dir), "ran": True}

    def _join(self, target, name: str) -> None:
        """Train in a worker thread (``target``), the main thread waiting in short steps so that signal
        handlers run between them."""
        self._thread = threading.Thread(target=target, name=name)
        self._thread.start()
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)  # short waits: signal handlers run between them
        except KeyboardInterrupt:  # only where no handler could be installed (not the main thread)
            self._stop.set()
            while self._thread.is_alive():
                try:
                    self._thread.join(timeout=0.5)
                except KeyboardInterrupt:
                    pass  # already stopping: the checkpoint is being written
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on USR2 (preemption, time limit): stop at the end of the current iteration
        with a checkpoint saved, then requeue this job; when it restarts it resumes from that checkpoint."""
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()
        print(f"[asae] run {self.run_key}: checkpoint saved, requeueing", flush=True)
        return submitit.helpers.DelayedSubmission(self)


class PackJob(RunJob):
    """Several runs of a sweep that differ only by seed, as one submitit job training them as one pack
    (experiments/packs.py). Like a RunJob it finds its runs' state on disk when it starts: completed
    seeds are not run again, interrupted ones resume from their newest readable checkpoint; seeds at
    different points of training (a checkpoint each, at different iterations, or none) train as
    separate packs, one after the other. USR2 (preemption, time limit) checkpoints every seed and
    requeues the job."""

    def __init__(self, members: list[tuple[dict[str, Any], str]], named_configs: tuple[str, ...], results_dir: str,
                 threads: int | None = None, commit_message: str | None = None):
        first_updates, first_key = members[0]
        super().__init__(first_updates, named_configs, results_dir, first_key, threads, commit_message)
        self.members = [(dict(updates), key) for updates, key in members]

    @property
    def run_keys(self) -> list[str]:
        return [key for _, key in self.members]

    def _run(self) -> dict[str, Any]:
        from experiments.api import train_pack
        from experiments.observers import mongo_from_environment
        from experiments.trainer import read_checkpoint

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        groups: dict[Any, list[tuple[int, str | None]]] = {}
        shared = {k: v for k, v in self.members[0][0].items() if k != "seed"}
        done = []
        for updates, submitted_key in self.members:
            run_key, records, completed = run_on_disk(updates, self.named_configs, self.results_dir, submitted_key)
            if completed:
                print(f"[asae] run {run_key} (seed {updates['seed']}) already completed in {completed[-1].run_dir}", flush=True)
                done.append(str(completed[-1].run_dir))
                continue
            resume = readable_checkpoint(run_key, records)
            point = None
            if resume is not None:
                point = read_checkpoint(resume, mmap=True)["counters"]["iteration"]
                print(f"[asae] run {run_key} (seed {updates['seed']}): resuming from {resume}", flush=True)
            groups.setdefault(point, []).append((updates["seed"], None if resume is None else str(resume)))
        mongo_url, mongo_required = mongo_from_environment()
        results = []
        for point, members in groups.items():
            if self._stopped_by is not None:  # stopped: the groups not started yet wait for the next job
                break
            seeds = [seed for seed, _ in members]
            resume_from = [path for _, path in members] if point is not None else None
            outcome: dict[str, Any] = {}

            def target() -> None:
                try:
                    outcome["result"] = train_pack(shared, self.named_configs, self.results_dir, seeds=seeds,
                                                   resume_from=resume_from, stop_event=self._stop, progress="log",
                                                   mongo_url=mongo_url, mongo_required=mongo_required)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                    outcome["error"] = exc

            self._join(target, f"asae-pack-{self.run_key}")
            if "error" in outcome:
                raise outcome["error"]
            results += outcome["result"]
        if self._stopped_by is not None and all(r.status in ("COMPLETED", "INTERRUPTED") for r in results):
            stopped = [r for r in results if r.status == "INTERRUPTED"]
            print(f"[asae] pack {', '.join(r.run_key for r in stopped)}: interrupted ({self._stopped_by}) with every "
                  "seed's checkpoint saved", flush=True)
            return {"run_key": self.run_key, "run_keys": self.run_keys, "status": "INTERRUPTED" if stopped else "COMPLETED",
                    "run_dir": str(stopped[0].run_dir) if stopped else None, "ran": True, "signal": self._stopped_by,
                    "t_env": None}
        bad = [r for r in results if r.status != "COMPLETED"]
        if self.commit_message is not None:
            from slurm.gitcommit import commit_runs

            committed = commit_runs([r.run_dir for r in results if r.status == "COMPLETED"], self.commit_message)
            if committed:
                print(f"[asae] {committed}", flush=True)
        if bad:
            raise RuntimeError("; ".join(f"run {r.run_key} ended {r.status} in {r.run_dir}" for r in bad))
        return {"run_keys": self.run_keys, "status": "COMPLETED", "ran": [str(r.run_dir) for r in results], "done": done}
