"""Programmatic entry points used by the CLI, sweeps (slurm/) and tests.

    resolve_config(updates, named_configs) -> the full validated config dict, with its run_key
    train(updates, named_configs, results_dir, ...) -> RunResult(run_dir, status, run_key)
    train_pack(updates, named_configs, results_dir, seeds=[...], ...) -> one RunResult per seed
    find_runs(results_dir, run_key) -> the Sacred runs of that run_key on disk, oldest first
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from validation import ConfigError

DEFAULT_RESULTS_DIR = Path("results") / "runs"


@dataclass(frozen=True)
class RunResult:
    run_dir: Path | None
    status: str
    run_key: str
    t_env: int | None = None  # how far it got (completed or interrupted)


@dataclass(frozen=True)
class RunRecord:
    run_dir: Path
    status: str
    checkpoint: Path | None
    t_env: int


def normalize_updates(updates: Mapping[str, Any]) -> dict[str, Any]:
    """Accept the CLI's shorthands programmatically too: env="smax" means env={"name": "smax"}; dotted keys nest."""
    out: dict[str, Any] = {}
    for key, value in updates.items():
        if key == "env" and isinstance(value, str):
            value = {"name": value}
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = dict(value) if isinstance(value, Mapping) else value
    return out


def _sacred_errors():
    from sacred.utils import ConfigAddedError

    return ConfigAddedError


def added_key_message(exc) -> str:
    """One line for Sacred's ConfigAddedError (a key that no config scope defines)."""
    keys = [str(k) for k in getattr(exc, "__conflicting_configs__", ())]
    key = keys[0] if keys else "?"
    return f"unknown config key {key!r} (`asae train print_config` shows the valid ones)"


def resolve_config(updates: Mapping[str, Any] | None = None, named_configs: Sequence[str] = ()) -> dict[str, Any]:
    """The config a run with these updates would get (validated; raises ConfigError). Starts nothing."""
    from sacred.initialize import create_run

    from experiments.experiment import ex

    _check_named(named_configs)
    try:
        run = create_run(ex, ex.default_command, normalize_updates(updates or {}), list(named_configs))
    except _sacred_errors() as exc:
        raise ConfigError(added_key_message(exc)) from None
    return dict(run.config)


def _check_named(named_configs: Sequence[str]) -> None:
    from experiments.experiment import ex

    for name in named_configs:
        if name not in ex.named_configs:
            raise ConfigError(f"unknown named config {name!r}; valid named configs are: {', '.join(sorted(ex.named_configs))}")


def train(updates: Mapping[str, Any] | None = None, named_configs: Sequence[str] = (),
          results_dir: str | Path = DEFAULT_RESULTS_DIR, *, resume_from: str | None = None,
          stop_event: threading.Event | None = None, progress: str = "off",
          mongo_url: str | None = None, mongo_required: bool = False) -> RunResult:
    """Run one Sacred run with a FileStorageObserver in ``results_dir`` (and a copy in MongoDB if
    ``mongo_url``; see experiments/observers.py).

    If ``stop_event`` is set during training, the run saves a checkpoint at the end of the current
    iteration and ends INTERRUPTED. A ConfigError (a bad config, an unreadable checkpoint to resume
    from) or MongoUnreachable (``mongo_required`` and no answer) is raised before any run directory is
    created.
    """
    from sacred.observers import FileStorageObserver

    from experiments import experiment
    from experiments.observers import mongo_copy
    from experiments.trainer import check_resume_from

    updates = normalize_updates(updates or {})
    if resume_from is not None:
        updates["resume_from"] = str(resume_from)
    config = resolve_config(updates, named_configs)
    if config.get("resume_from"):
        check_resume_from(config["resume_from"])
    observers = [FileStorageObserver(str(results_dir))]
    if mongo_url:
        observers.append(mongo_copy(mongo_url, required=mongo_required))
    experiment.RUNTIME.update(stop_event=stop_event, progress=progress)
    ex = experiment.ex
    saved = list(ex.observers)
    ex.observers[:] = observers
    try:
        run = ex.run(config_updates=updates, named_configs=list(named_configs))
        status = run.status
        t_env = (run.result or {}).get("t_env") if isinstance(run.result, dict) else None
    except experiment.Interrupted as exc:
        run, status, t_env = ex.current_run, "INTERRUPTED", getattr(exc, "t_env", None)
    finally:
        ex.observers[:] = saved
        experiment.RUNTIME.update(stop_event=None, progress="off")
    run_dir = Path(observers[0].dir) if getattr(observers[0], "dir", None) else None
    return RunResult(run_dir=run_dir, status=status, run_key=config["run_key"], t_env=t_env)


def train_pack(updates: Mapping[str, Any] | None, named_configs: Sequence[str] = (),
               results_dir: str | Path = DEFAULT_RESULTS_DIR, *, seeds: Sequence[int],
               resume_from: Sequence[str | None] | None = None, stop_event: threading.Event | None = None,
               progress: str = "off", mongo_url: str | None = None, mongo_required: bool = False) -> list[RunResult]:
    """Train ``seeds`` of one config as one pack (experiments/packs.py): one Sacred run per seed, each in
    ``results_dir`` with the files and run_key a run of that seed alone has. ``resume_from``: one
    checkpoint or run directory (or None) per seed. Returns one RunResult per seed, in order."""
    from sacred.observers import FileStorageObserver

    from experiments import experiment
    from experiments.observers import mongo_copy
    from experiments.packs import run_pack
    from experiments.trainer import check_resume_from

    seeds = list(seeds)
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds} must name at least one seed, each once")
    resume = list(resume_from) if resume_from is not None else [None] * len(seeds)
    if len(resume) != len(seeds):
        raise ConfigError(f"resume_from gives {len(resume)} checkpoints for {len(seeds)} seeds")
    base = normalize_updates(updates or {})
    from experiments.packs import check_packable

    check_packable({**resolve_config(base, named_configs), "seeds": seeds})
    keys = []
    for seed, path in zip(seeds, resume):  # every seed's config valid and resumable before any run starts
        keys.append(resolve_config({**base, "seed": seed, "seeds": [], "resume_from": None if path is None else str(path)},
                                   named_configs)["run_key"])
        if path:
            check_resume_from(path)
    ex = experiment.ex

    def create(i: int):
        run = ex._create_run(config_updates={**base, "seed": seeds[i], "seeds": [],
                                             "resume_from": None if resume[i] is None else str(resume[i])},
                             named_configs=list(named_configs))
        run.observers = [FileStorageObserver(str(results_dir))]
        if mongo_url:
            run.observers.append(mongo_copy(mongo_url, required=mongo_required))
        return run

    saved = dict(experiment.RUNTIME)
    experiment.RUNTIME.update(stop_event=stop_event, progress=progress)
    try:
        outcomes = run_pack([lambda i=i: create(i) for i in range(len(seeds))], stop_event, progress)
    finally:
        experiment.RUNTIME.update(stop_event=saved["stop_event"], progress=saved["progress"])
    results = []
    for key, (run, _error) in zip(keys, outcomes):
        run_dir = Path(run.observers[0].dir) if getattr(run.observers[0], "dir", None) else None
        results.append(RunResult(run_dir=run_dir, status=run.status, run_key=key))
    return results


def find_runs(results_dir: str | Path, run_key: str) -> list[RunRecord]:
    """Sacred file-storage runs of ``run_key`` under ``results_dir``, oldest first (by Sacred id)."""
    root = Path(results_dir)
    records = []
    if not root.is_dir():
        return records
    for run_json in root.glob("*/run.json"):
        run_dir = run_json.parent
        try:
            run = json.loads(run_json.read_text())
            config = json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError):
            continue  # a half-written run directory: not a run to skip or resume
        if config.get("run_key") != run_key:
            continue
        t_env = int((run.get("result") or {}).get("t_env", 0)) if isinstance(run.get("result"), dict) else 0
        records.append(RunRecord(run_dir, run.get("status", "UNKNOWN"), _newest_checkpoint(run_dir), t_env))
    return sorted(records, key=lambda r: (int(r.run_dir.name) if r.run_dir.name.isdigit() else 0, str(r.run_dir)))


def _newest_checkpoint(run_dir: Path) -> Path | None:
    """checkpoint.pt, else the one before it (a crash between the two renames of a save leaves only that)."""
    from experiments.trainer import CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME

    for name in (CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME):
        if (run_dir / name).is_file():
            return run_dir / name
    return None
