"""`asae sweep` and `asae status`: expand a preset into runs, submit what is not done, show where runs are.

    asae sweep list                                  the presets, with run counts
    asae sweep PRESET [--seeds N] [--set P=V] [--config K=V] [--dry-run] [--executor slurm|local|debug] ...
    asae status PRESET [the same arguments]          per run: pending / running / completed / failed / interrupted

Submitting is idempotent: every run is identified by its run_key; completed runs are skipped, runs that
a job is working on are left alone, interrupted and failed runs are resubmitted and resume from their
latest checkpoint. Every run config is validated before anything is submitted.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from validation import ConfigError
from experiments import sweeps
from slurm import executors
from slurm.executors import ExecutorOptions
from slurm.gitcommit import check_committable, commit_runs
from slurm.jobs import PackJob, RunJob
from slurm.state import STATUSES, RunStatus, SweepState, run_statuses

DEFAULT_RESULTS = "results"
MAX_RUNS = 20_000  # runs in one sweep (the largest preset has 200)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", help="a preset name (`asae sweep list`) or a path to a preset .toml file")
    p.add_argument("--seeds", help="seeds: a count (5 = seeds 0-4), a range (3-7) or a list (0,4,7); "
                                   "default: the preset's")
    p.add_argument("--set", dest="params", action="append", default=[], metavar="NAME=VALUE",
                   help="a preset parameter (e.g. --set map=3m); repeatable")
    p.add_argument("--only", action="append", default=[], metavar="KEY=V1,V2",
                   help="only the runs whose config has one of these values (e.g. --only algo=qmix "
                        "--only env.map_name=3m,8m); the same run keys as the whole preset; repeatable")
    p.add_argument("--config", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config update for every run (e.g. --config t_max=50000 --config device=cuda); "
                        "it changes the runs' identity")
    p.add_argument("--results", metavar="DIR",
                   help="results root: runs go to DIR/runs, the sweep's logs and state to DIR/sweeps/PRESET "
                        f"(default: the preset's `results`, else {DEFAULT_RESULTS})")
    p.add_argument("--preset-file", action="append", default=[], metavar="FILE", help="your own preset file; repeatable")
    p.add_argument("--preset-dir", action="append", default=[], metavar="DIR", help="a folder of preset files; repeatable")


def _add_executor(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("executor")
    g.add_argument("--executor", default="slurm", choices=executors.EXECUTORS,
                   help="slurm: one job array; local: a few runs at a time on this machine; debug: in this process")
    g.add_argument("--time", type=int, default=ExecutorOptions.time, metavar="MIN",
                   help="time limit per job in minutes (runs that need longer checkpoint and requeue) "
                        f"(default: {ExecutorOptions.time})")
    g.add_argument("--cpus-per-task", type=int, default=1, metavar="N", help="CPUs per run (and torch threads)")
    g.add_argument("--array-parallelism", "--parallel", "-j", type=int, metavar="N",
                   help="runs at once (slurm default: 256, local default: 2)")
    g.add_argument("--partition", help="slurm partition")
    g.add_argument("--gpus-per-task", type=int, metavar="N", help="slurm: GPUs per run")
    g.add_argument("--mem", help="slurm: memory per run, e.g. 16G")
    g.add_argument("--account", help="slurm account")
    g.add_argument("--qos", help="slurm quality of service")
    g.add_argument("--constraint", help="slurm node constraint")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option (e.g. --sbatch exclusive=true --sbatch mail-type=END); repeatable")


def _executor_options(args: argparse.Namespace) -> ExecutorOptions:
    extra = {}
    for item in args.sbatch:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--sbatch {item!r}: expected KEY=VALUE (e.g. --sbatch exclusive=true)")
        extra[key.strip().lstrip("-")] = value.strip()
    options = ExecutorOptions(
        executor=args.executor, time=args.time, cpus_per_task=args.cpus_per_task,
        array_parallelism=args.array_parallelism, partition=args.partition, gpus_per_task=args.gpus_per_task or None,
        mem=args.mem, account=args.account, qos=args.qos, constraint=args.constraint, sbatch=extra)
    options.check()
    return options


class Sweep:
    """A preset expanded with the user's arguments: its runs, validated, and where they live."""

    def __init__(self, args: argparse.Namespace):
        path = sweeps.locate(args.preset, args.preset_file, args.preset_dir)
        self.preset = sweeps.load_preset(path)
        sweeps.check_algos(self.preset)
        params = dict(sweeps.parse_assignment(p, "--set") for p in args.params)
        overrides = dict(sweeps.parse_assignment(c, "--config") for c in args.overrides)
        seeds = None if args.seeds is None else sweeps.parse_seeds(args.seeds)
        specs = sweeps.select(sweeps.expand(self.preset, seeds, params, overrides), sweeps.parse_only(args.only))
        if len(specs) > MAX_RUNS:
            raise ConfigError(f"{self.preset.name}: {len(specs)} runs; one sweep holds at most {MAX_RUNS} (validating "
                              f"them alone would take about {len(specs) * 0.011 / 60:.0f} min); use fewer --seeds, "
                              "--only or --set")
        configs = sweeps.resolve(self.preset, specs, _ValidationProgress() if len(specs) > 500 else None)
        no_tests = [c for c in configs if c.get("test_episodes") == 0]
        if no_tests:
            raise ConfigError(f"{self.preset.name}: test_episodes=0 in {len(no_tests)} run(s): a sweep's runs feed "
                              "the report, which reads their test metrics; use test_episodes >= 1")
        # One run per run_key, in preset order (a grid may name the same config twice).
        unique: dict[str, tuple[sweeps.RunSpec, dict[str, Any]]] = {}
        for spec, config in zip(specs, configs):
            unique.setdefault(config["run_key"], (spec, config))
        self.runs = unique
        self.columns = sweeps.varying_keys([spec for spec, _ in unique.values()])
        root = Path(args.results or self.preset.results or DEFAULT_RESULTS).resolve()
        existing = next((p for p in (root, *root.parents) if p.exists()), root)
        if not existing.is_dir():
            raise ConfigError(f"--results {str(args.results or root)!r}: {'it' if existing == root else existing} is not "
                              "a directory; name the directory the runs and sweep logs go to")
        self.results_dir = root / "runs"
        self.folder = root / "sweeps" / self.preset.name
        self.state = SweepState(self.folder)

    def statuses(self) -> list[RunStatus]:
        return run_statuses(list(self.runs), self.results_dir, self.state)

    def taken(self, run_key: str) -> str | None:
        """Why ``run_key`` need not run any more (None: it must): another sweep of this preset, in another
        terminal or on a machine sharing the results, completed it or is running it now."""
        [st] = run_statuses([run_key], self.results_dir, self.state)
        if not st.settled:
            return None
        if st.status == "completed":
            return f"completed meanwhile ({_short(st.run_dir)})"
        return f"another sweep is running it (job {st.job_id or '?'})"

    def job(self, run_key: str, threads: int | None, commit: bool = False) -> RunJob:
        spec, _ = self.runs[run_key]
        label = " ".join(f"{k}={v}" for k, v in sweeps.describe(spec, self.columns).items())
        message = f"results: {self.preset.name} run {run_key} completed ({label})" if commit else None
        return RunJob(spec.config_updates, spec.named_configs, str(self.results_dir), run_key, threads, message)

    def packs(self, run_keys: Sequence[str], size: int) -> list[list[str]]:
        """``run_keys`` grouped into packs of up to ``size`` runs that differ only by seed (preset order)."""
        groups: dict[str, list[str]] = {}
        for key in run_keys:
            spec, _ = self.runs[key]
            same = json.dumps({**{k: v for k, v in spec.config_updates.items() if k != "seed"},
                               "_named": list(spec.named_configs)}, sort_keys=True, default=str)
            groups.setdefault(same, []).append(key)
        return [keys[i:i + size] for keys in groups.values() for i in range(0, len(keys), size)]

    def pack_job(self, run_keys: Sequence[str], threads: int | None, commit: bool = False):
        if len(run_keys) == 1:
            return self.job(run_keys[0], threads, commit)
        specs = [self.runs[k][0] for k in run_keys]
        seeds = ", ".join(str(spec.config_updates.get("seed")) for spec in specs)
        label = " ".join(f"{k}={v}" for k, v in sweeps.describe(specs[0], self.columns).items() if k != "seed")
        message = (f"results: {self.preset.name} runs {', '.join(run_keys)} completed ({label} seeds {seeds}, one pack)"
                   if commit else None)
        return PackJob([(spec.config_updates, key) for spec, key in zip(specs, run_keys)], specs[0].named_configs,
                       str(self.results_dir), threads, message)

    def table(self, statuses: Sequence[RunStatus], extra: dict[str, list[str]] | None = None) -> str:
        headers = ["run_key", *self.columns, "status", "t_env", "job", "job_state", "run_dir"]
        rows = []
        for st in statuses:
            labels = sweeps.describe(self.runs[st.run_key][0], self.columns)
            rows.append([st.run_key, *labels.values(), st.status, str(st.t_env) if st.t_env else "-",
                         st.job_id or "-", st.job_state or "-", _short(st.run_dir)])
        if extra:
            for name, values in extra.items():
                headers.append(name)
                for row, value in zip(rows, values):
                    row.append(value)
        return format_table(headers, rows)


class _ValidationProgress:
    """A line every few seconds while a large sweep's runs are validated."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if time.monotonic() - self.last >= 2:
            self.last = time.monotonic()
            print(f"validating the runs: {done}/{total}", file=sys.stderr, flush=True)


def _short(path: Path | None) -> str:
    if path is None:
        return "-"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def summary(statuses: Sequence[RunStatus]) -> str:
    counts = {s: sum(st.status == s for st in statuses) for s in STATUSES}
    return f"{len(statuses)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())


def _action(st: RunStatus) -> str:
    if st.status == "completed":
        return "skip (completed)"
    if st.active:
        return f"skip ({st.status}{', job ' + st.job_id if st.job_id else ''})"
    if st.resume_from is not None:
        return f"resume ({_short(st.resume_from.parent)})"
    return "submit" if st.status == "pending" else "submit (from scratch)"


# --- asae sweep -----------------------------------------------------------------------------------
def sweep_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="asae sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_selection(p)
    _add_executor(p)
    p.add_argument("--pack-seeds", type=int, default=1, metavar="K",
                   help="train up to K runs that differ only by seed as one job, one process (a pack: each seed "
                        "still its own run); default 1: one job per run")
    p.add_argument("--dry-run", action="store_true", help="print the runs and the sbatch settings; submit nothing")
    p.add_argument("--wait", action="store_true", help="slurm: wait until the submitted runs end, with progress")
    p.add_argument("--commit", action="store_true", help="commit each run's config.json, run.json, metrics.json and info.json "
                   "to git when it completes (and, first, completed runs not committed yet), so the same command "
                   "on a fresh clone skips them; the runs must be in a git work tree that lets them in "
                   "(results/reproduction/, the repro_* presets' default)")
    return p


def list_presets(argv: Sequence[str]) -> int:
    p = _Parser(prog="asae sweep list", description="the sweep presets, with their run counts")
    p.add_argument("--preset-file", action="append", default=[], metavar="FILE")
    p.add_argument("--preset-dir", action="append", default=[], metavar="DIR")
    args = p.parse_args(argv)
    rows = []
    for name, path in sorted(sweeps.find_presets(args.preset_file, args.preset_dir).items()):
        preset = sweeps.load_preset(path)
        specs = sweeps.expand(preset)
        per_seed = len(specs) // preset.seeds
        params = " ".join(f"{k}={v}" for k, v in preset.params.items()) or "-"
        missing = sweeps.missing_components(preset, specs)
        note = f" [not registered yet: {', '.join(missing)}]" if missing else ""
        rows.append([name, str(len(specs)), f"{per_seed} x {preset.seeds}", params, preset.description + note])
    print(format_table(["preset", "runs", "configs x seeds", "params (--set)", "description"], rows))
    return 0


def sweep_main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if argv[:1] == ["list"]:
        return list_presets(argv[1:])
    args = sweep_parser().parse_args(argv)
    options = _executor_options(args)
    job_name = f"asae-{Path(args.preset).stem}"
    if options.executor == "slurm":
        executors.check_slurm_parameters(options, job_name)
    sweep = Sweep(args)  # a mistake in what to run is named before what the machine lacks to run it
    if options.executor == "slurm" and not args.dry_run:
        executors.require_sbatch()
    if args.commit:
        check_committable(sweep.results_dir)
    if not args.dry_run:
        from experiments.files import unwritable_dir

        why = unwritable_dir(sweep.folder)
        if why is not None:
            raise ConfigError(f"the sweep's logs cannot be written in {_short(sweep.folder)}: {why}; pass --results DIR")
    statuses = sweep.statuses()
    todo = [st for st in statuses if not st.settled]
    n_done = sum(st.status == "completed" for st in statuses)
    n_active = sum(st.active for st in statuses)
    n_resume = sum(st.resume_from is not None for st in todo)
    print(f"{sweep.preset.name}: {sweep.preset.description}")
    print(f"{len(statuses)} runs: {len(todo)} to submit ({n_resume} resume from a checkpoint), "
          f"{n_done} completed, {n_active} running or queued; runs in {_short(sweep.results_dir)}, "
          f"logs in {_short(sweep.folder)}")
    if args.pack_seeds < 1:
        raise ConfigError(f"--pack-seeds={args.pack_seeds} must be at least 1 (1: one job per run)")
    packs = sweep.packs([st.run_key for st in todo], args.pack_seeds)
    pack_of = {key: i for i, keys in enumerate(packs) for key in keys}
    if args.pack_seeds > 1:
        print(f"--pack-seeds {args.pack_seeds}: {len(todo)} runs in {len(packs)} jobs "
              f"({', '.join(str(len(p)) for p in packs) or '-'} seeds each)")
    if args.dry_run:
        print()
        extra = {"action": [_action(st) for st in statuses]}
        if args.pack_seeds > 1:
            extra["pack"] = [str(pack_of[st.run_key] + 1) if st.run_key in pack_of else "-" for st in statuses]
        print(sweep.table(statuses, extra))
        print()
        if options.executor == "slurm" and todo:
            print(f"sbatch script submitit would write for {len(packs)} job(s):")
            print(executors.sbatch_preview(options, job_name, sweep.folder / "logs", len(packs)))
        elif todo:
            print(f"--executor {options.executor}: {options.parallel if options.executor == 'local' else 1} run(s) "
                  f"at a time, time limit {options.time} min")
        print("dry run: nothing submitted")
        return 0
    if args.commit:
        done = [st.run_dir for st in statuses if st.status == "completed"]
        committed = commit_runs(done, f"results: completed runs of {sweep.preset.name} not committed yet")
        if committed:
            print(committed)
    if not todo:
        print("nothing to submit")
        return 0
    jobs = {keys[0]: sweep.pack_job(keys, options.cpus_per_task, args.commit) for keys in packs}
    members = {keys[0]: keys for keys in packs}

    def record(ids: dict[str, str]) -> None:  # every run of a pack is worked on by its pack's job
        sweep.state.record(options.executor, {key: job_id for first, job_id in ids.items() for key in members[first]})

    def taken(first: str) -> str | None:  # a pack is skipped only when every one of its runs is taken
        reasons = [sweep.taken(key) for key in members[first]]
        return reasons[0] if all(r is not None for r in reasons) else None
    if options.executor == "slurm":
        ids = executors.submit_slurm(jobs, options, sweep.folder / "logs", job_name)
        record(ids)
        first = next(iter(ids.values()))
        what = f"job array {first.split('_')[0]} ({len(ids)} tasks, at most {min(options.parallel, len(ids))} at once)" \
            if "_" in first else f"job {first}"
        print(f"submitted {len(ids)} run(s) as SLURM {what}")
        status_cmd = "asae status " + " ".join(shlex.quote(a) for a in argv if a not in ("--wait", "--dry-run", "--commit"))
        if args.wait:
            return wait_slurm(sweep, [key for first in ids for key in members[first]])
        print(f"follow with: {status_cmd}")
        return 0
    try:
        if options.executor == "local":
            outcomes = executors.run_local(jobs, options, sweep.folder / "logs", record, taken)
        else:
            outcomes = executors.run_debug(jobs, record)
    except executors.SweepStopped as stopped:
        _quiet_print(f"{summary(sweep.statuses())}; rerun the same command to resume the interrupted runs")
        return stopped.exit_status
    failed = [k for k, o in outcomes.items() if o.status == "failed"]
    print(summary(sweep.statuses()))
    return 1 if failed else 0


def _quiet_print(line: str) -> None:
    """Print, unless the terminal is gone (a hang-up: writes fail)."""
    try:
        print(line, flush=True)
    except (OSError, ValueError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python's flush at exit must not fail either


def wait_slurm(sweep: Sweep, run_keys: list[str], poll_s: float = 2.0) -> int:
    """Wait until no job works on these runs any more; show finished / submitted counts."""
    keys = set(run_keys)
    unknown_polls = {key: 0 for key in keys}  # squeue/sacct may miss a job for a moment: wait a few polls
    progress = executors.Progress(len(keys), "runs finished")
    try:
        while True:
            current = [st for st in sweep.statuses() if st.run_key in keys]
            for st in current:
                unknown_polls[st.run_key] = unknown_polls[st.run_key] + 1 if not st.job_state else 0
            finished = [st for st in current if not st.active
                        and (st.status == "completed" or st.job_state or unknown_polls[st.run_key] >= 5)]
            progress.update(len(finished), running=sum(st.status == "running" for st in current),
                            completed=sum(st.status == "completed" for st in current))
            if len(finished) == len(keys):
                break
            time.sleep(poll_s)
    finally:
        progress.close()
    print(summary(current))
    return 0 if all(st.status == "completed" for st in current) else 1


# --- asae status ----------------------------------------------------------------------------------
def status_main(argv: Sequence[str]) -> int:
    p = _Parser(prog="asae status", description="per-run status of a sweep (the same arguments as `asae sweep`; "
                                                "executor options are accepted and ignored)")
    _add_selection(p)
    _add_executor(p)
    for flag in ("--dry-run", "--wait", "--commit"):
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(list(argv))
    sweep = Sweep(args)
    statuses = sweep.statuses()
    print(sweep.table(statuses))
    print(summary(statuses))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(sweep_main(sys.argv[1:]))
