"""Sacred runs (FileStorageObserver directories or MongoDB) -> one tidy pandas DataFrame.

One row per (run, team, metric, step). Columns:

    run_id      "file:<path relative to the scanned root>" or "mongo:<db>/<_id>"
    source      "file" | "mongo"
    sacred_id   Sacred's id (directory name / Mongo _id)
    run_key     the suite's stable id of a run config (several Sacred runs share it when resumed)
    status      RUNNING | COMPLETED | FAILED | INTERRUPTED | QUEUED
    algo        config `algo` (the run's main algorithm)
    team_algo   the algorithm driving this row's team (config `teams`, else `algo` for the first
                team and "random" for the others)
    env, map, N, m, clip, seed, preset
    team        "team" in single-team envs, the team's name in multi-team envs ("" for run-wide metrics)
    metric      the metric name without the team prefix ("predator/test_return_mean" ->
                team "predator", metric "test_return_mean")
    step        t_env (env steps)
    value       float
    + every config entry flattened to dotted names (`learner.m`, `env.n_agents`, `teams.prey`, ...)

Broken run directories (config.json or metrics.json missing or truncated, run.json unreadable) are
skipped and listed in ``frame.attrs["skipped"]`` as (location, reason) pairs, never raised.
A resumed run is several Sacred runs with one run_key: by default only the latest COMPLETED one is
kept (its metrics repeat the history), else the latest one; ``latest_only=False`` keeps them all.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from envs.config import ConfigError

RUN_FILES = ("run.json", "config.json", "metrics.json")
# Sacred FileStorageObserver keeps copied sources and resources beside the run directories. fidelity/
# holds side-by-side comparisons with other codebases (`asae compare-epymarl`): their runs are not runs of
# the paper's experiments (pass --runs results/fidelity/... to read them on purpose).
NOT_RUN_DIRS = {"_sources", "_resources", "paper", "fidelity", "__pycache__", ".git"}

# Config entries the suite's envs and learners use for the standard columns, first match wins.
# Tolerant on purpose: runs from older versions or other envs may spell them differently.
MAP_KEYS = ("env.map_name", "env.map", "env.scenario")
N_KEYS = ("env.n_agents", "env.N", "env.n_predators", "env.num_agents", "env.num_adversaries")
M_KEYS = ("learner.m", "learner.n_samples", "learner.num_samples", "learner.samples")
CLIP_KEYS = ("learner.clip", "learner.clip_range", "learner.clip_eps", "learner.eps_clip",
             "learner.clip_epsilon")
STANDARD = ["run_id", "source", "sacred_id", "run_key", "status", "algo", "team_algo", "env", "map",
            "N", "m", "clip", "seed", "preset", "team", "metric", "step", "value"]
RUN_COLUMNS = [c for c in STANDARD if c not in ("team", "team_algo", "metric", "step", "value")]
SINGLE_TEAM = "team"
RUN_WIDE = ""


@dataclass
class RawRun:
    """One Sacred run as read from disk or MongoDB, before it becomes rows."""

    run_id: str
    source: str
    sacred_id: str
    config: dict
    run: dict  # run.json / the Mongo run document: status, start_time, host, ...
    info: dict
    metrics: dict[str, dict]  # name -> {"steps": [...], "values": [...], "timestamps": [...]}
    location: str = ""  # a path or mongo URL, for messages


@dataclass
class LoadReport:
    runs: list[RawRun] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------- file storage

def find_run_dirs(root: Path) -> Iterator[Path]:
    """Directories under ``root`` (recursively) holding any of Sacred's run files."""
    for dirpath, dirnames, filenames in os.walk(root):
        if any(name in filenames for name in RUN_FILES):
            dirnames.clear()  # a run directory holds no further runs
            yield Path(dirpath)
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in NOT_RUN_DIRS and not d.startswith("."))


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise _Broken(f"{path.name} is missing") from None
    except OSError as exc:
        raise _Broken(f"{path.name} is unreadable ({exc.strerror})") from None
    if not text.strip():
        raise _Broken(f"{path.name} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        cut = exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
        where = "truncated" if cut else "not valid JSON"
        raise _Broken(f"{path.name} is {where} ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


class _Broken(Exception):
    """Why a run cannot be read (a one-line reason)."""


def read_file_run(run_dir: Path, root: Path) -> RawRun:
    rel = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
    run = _read_json(run_dir / "run.json")
    config = _read_json(run_dir / "config.json")
    if not isinstance(run, dict) or not isinstance(config, dict):
        raise _Broken("run.json or config.json does not hold a JSON object")
    if not (run_dir / "metrics.json").exists():
        status = run.get("status", "?")
        raise _Broken(f"metrics.json is missing (status {status})")
    metrics = _read_json(run_dir / "metrics.json")
    if not isinstance(metrics, dict):
        raise _Broken("metrics.json does not hold a JSON object")
    if not metrics:
        raise _Broken(f"no metrics logged (status {run.get('status', '?')})")
    try:
        info = json.loads((run_dir / "info.json").read_text())
    except (OSError, json.JSONDecodeError):
        info = {}  # info.json is optional (Sacred writes it only when info is non-empty)
    info = {**(run.get("info") or {}), **(info if isinstance(info, dict) else {})}
    return RawRun(run_id=f"file:{rel}", source="file", sacred_id=run_dir.name, config=config, run=run,
                  info=info, metrics=metrics, location=str(run_dir))


def read_file_runs(root: str | os.PathLike, progress: bool = False) -> LoadReport:
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"runs directory {str(root)!r} does not exist; pass --runs DIR (default results/)")
    if not root.is_dir():
        raise ConfigError(f"{str(root)!r} is not a directory of runs")
    report = LoadReport()
    dirs = list(find_run_dirs(root))
    for run_dir in _progress(dirs, progress, f"reading runs under {root}"):
        try:
            report.runs.append(read_file_run(run_dir, root))
        except _Broken as exc:
            report.skipped.append((str(run_dir), str(exc)))
    return report


def _progress(items: list, enabled: bool, desc: str) -> Iterable:
    if not enabled or len(items) < 20:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="run", file=sys.stderr, mininterval=0.5, disable=None)  # None: terminals only


# ----------------------------------------------------------------------------- MongoDB

def read_mongo_runs(db, query: Mapping | None = None, progress: bool = False, label: str = "") -> LoadReport:
    """Runs of a pymongo/mongomock database written by Sacred's (Queued)MongoObserver or `sync-mongo`."""
    report = LoadReport()
    projection = {"captured_out": 0, "experiment.sources": 0}
    docs = list(db["runs"].find(dict(query or {}), projection))
    label = label or db.name
    for doc in _progress(docs, progress, f"reading runs from MongoDB {label}"):
        location = f"mongo:{label}/{doc.get('_id')}"
        config = doc.get("config")
        if not isinstance(config, dict):
            report.skipped.append((location, "the run has no config"))
            continue
        metrics = {}
        for mdoc in db["metrics"].find({"run_id": doc["_id"]}):
            metrics[mdoc.get("name", "?")] = mdoc
        if not metrics:
            report.skipped.append((location, f"no metrics logged (status {doc.get('status', '?')})"))
            continue
        report.runs.append(RawRun(run_id=location, source="mongo", sacred_id=str(doc["_id"]), config=config,
                                  run=doc, info=doc.get("info") or {}, metrics=metrics, location=location))
    return report


# ----------------------------------------------------------------------------- normalisation

def flatten(mapping: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested config -> dotted keys; lists and other non-scalars become JSON text (hashable)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple, Mapping)):
            out[name] = json.dumps(value, sort_keys=True, default=str)
        else:
            out[name] = value
    return out


def _first(flat: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        if flat.get(key) is not None:
            return flat[key]
    return None


def tag_list(config: Mapping) -> list[str]:
    tags = config.get("tags")
    if isinstance(tags, str):
        return [tags] if tags else []
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, (list, tuple)) else []


def _preset(config: Mapping) -> str | None:
    """A run's preset: config `preset`, else a `preset:NAME` tag, else its first tag (both optional)."""
    preset = config.get("preset")
    if isinstance(preset, str) and preset:
        return preset
    tags = tag_list(config)
    for tag in tags:
        if tag.startswith(("preset:", "preset=")):
            return tag[7:]
    return tags[0] if tags else None


def team_order(config: Mapping, metric_names: Iterable[str]) -> list[str]:
    """Teams in env order: env_info.teams when recorded, else the metric prefixes sorted by name."""
    teams = (config.get("env_info") or {}).get("teams") if isinstance(config.get("env_info"), Mapping) else None
    names = [t.get("name") if isinstance(t, Mapping) else t for t in teams or []]
    names = [n for n in names if isinstance(n, str)]
    return names or sorted({name.split("/", 1)[0] for name in metric_names if "/" in name}) or [SINGLE_TEAM]


def run_fields(raw: RawRun) -> dict[str, Any]:
    """The standard per-run columns of one run."""
    config = raw.config
    flat = flatten(config)
    env = config.get("env")
    env_name = env.get("name") if isinstance(env, Mapping) else env
    n = _first(flat, N_KEYS)
    if n is None:
        teams = (config.get("env_info") or {}).get("teams") if isinstance(config.get("env_info"), Mapping) else None
        if teams and isinstance(teams[0], Mapping):
            n = teams[0].get("n_agents")
    run_key = config.get("run_key") or raw.info.get("run_key") or raw.run_id
    return {
        "run_id": raw.run_id, "source": raw.source, "sacred_id": raw.sacred_id, "run_key": str(run_key),
        "status": str(raw.run.get("status") or "UNKNOWN"), "algo": config.get("algo"), "env": env_name,
        "map": _first(flat, MAP_KEYS), "N": n, "m": _first(flat, M_KEYS), "clip": _first(flat, CLIP_KEYS),
        "seed": config.get("seed"), "preset": _preset(config),
        "start_time": _timestamp(raw.run.get("start_time")), "flat": flat,
    }


def _timestamp(value: Any) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return pd.NaT
    if ts is pd.NaT:
        return ts
    return ts.tz_localize(None) if ts.tzinfo else ts


def latest_runs(fields: list[dict]) -> list[int]:
    """Indices of the Sacred runs to keep: per run_key the latest COMPLETED run, else the latest run."""
    best: dict[str, int] = {}

    def rank(i: int):
        f = fields[i]
        start = f["start_time"]
        sid = f["sacred_id"]
        return (f["status"] == "COMPLETED", start.value if start is not pd.NaT else -1,
                int(sid) if str(sid).isdigit() else -1, str(sid))

    for i, f in enumerate(fields):
        key = f["run_key"]
        if key not in best or rank(i) > rank(best[key]):
            best[key] = i
    return sorted(best.values())


def _split(name: str, multi_team: bool) -> tuple[str, str]:
    if "/" in name:
        team, metric = name.split("/", 1)
        return team, metric
    return (RUN_WIDE if multi_team else SINGLE_TEAM), name


def _as_floats(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            out[i] = math.nan
    return out


def to_frame(report: LoadReport, latest_only: bool = True) -> pd.DataFrame:
    """Tidy frame (see the module docstring) of the runs in ``report``."""
    fields = [run_fields(raw) for raw in report.runs]
    keep = latest_runs(fields) if latest_only else list(range(len(fields)))
    kept = [fields[i] for i in keep]
    # One entry per metric series; rows are built by repeating these, not one Python step per row.
    s_run, s_team, s_algo, s_metric, s_len, steps, values = [], [], [], [], [], [], []
    for j, i in enumerate(keep):
        raw, f = report.runs[i], fields[i]
        names = list(raw.metrics)
        multi = any("/" in n for n in names)
        f["team_order"] = team_order(raw.config, names)
        for name in names:
            series = raw.metrics[name] if isinstance(raw.metrics[name], Mapping) else {}
            s, v = list(series.get("steps") or []), list(series.get("values") or [])
            n = min(len(s), len(v))
            team, metric = _split(name, multi)
            s_run.append(j)
            s_team.append(team)
            s_algo.append(_team_algo(f, team))
            s_metric.append(metric)
            s_len.append(n)
            steps.append(_as_floats(s[:n]))
            values.append(_as_floats(v[:n]))
    lengths = np.asarray(s_len, dtype=np.int64)
    idx = np.repeat(np.asarray(s_run, dtype=np.int64), lengths)

    def per_series(labels: list) -> pd.Categorical:
        cats = pd.Categorical(labels)
        return pd.Categorical.from_codes(np.repeat(cats.codes, lengths), categories=cats.categories)

    runs = pd.DataFrame([{k: f[k] for k in RUN_COLUMNS} for f in kept], columns=RUN_COLUMNS)
    # Nullable numbers: some runs lack them (no map on MPE, no m on COMA).
    for col in ("N", "m", "seed"):
        runs[col] = pd.to_numeric(runs[col], errors="coerce").astype("Int64")
    runs["clip"] = pd.to_numeric(runs["clip"], errors="coerce").astype("Float64")
    data: dict[str, Any] = {}
    for col in RUN_COLUMNS:
        column = runs[col] if col in ("N", "m", "seed", "clip") else runs[col].astype("category")
        data[col] = column.take(idx).reset_index(drop=True)
    data["team"] = per_series(s_team)
    data["team_algo"] = per_series(s_algo)
    data["metric"] = per_series(s_metric)
    step = np.concatenate(steps) if steps else np.zeros(0)
    data["step"] = np.nan_to_num(step, nan=-1).astype(np.int64)
    data["value"] = np.concatenate(values) if values else np.zeros(0)
    frame = pd.DataFrame({c: data[c] for c in STANDARD})
    config = pd.DataFrame([f["flat"] for f in kept])
    for col in config.columns:
        if col not in frame.columns and col not in ("algo", "seed"):
            frame[col] = config[col].astype("category").take(idx).reset_index(drop=True)
    frame.attrs["skipped"] = list(report.skipped)
    return frame


def _team_algo(f: dict, team: str) -> str:
    """Which algorithm drives ``team``: config `teams` (team -> algo or "random"); with no `teams`,
    `algo` drives the first team and the others act randomly (docs/interfaces.md)."""
    teams = {k.split(".", 1)[1]: v for k, v in f["flat"].items() if k.startswith("teams.")}
    if team in teams:
        return str(teams[team])
    if team in (SINGLE_TEAM, RUN_WIDE) or (not teams and team == f["team_order"][0]):
        return str(f["algo"])
    return "random"


# ----------------------------------------------------------------------------- entry point

def load_runs(source: str | os.PathLike | None = "results", latest_only: bool = True, progress: bool = False,
              db_name: str | None = None, client=None) -> pd.DataFrame:
    """Load every run under a directory (recursively) or from a MongoDB URL into one tidy frame.

    ``source`` is a directory of Sacred FileStorageObserver runs, or ``mongodb://host:port/db``
    (``client`` may be given instead, e.g. a mongomock client in tests). Unreadable runs are listed in
    ``frame.attrs["skipped"]``; ``frame.attrs["load_seconds"]`` says how long loading took.
    """
    started = time.monotonic()
    text = str(source) if source is not None else ""
    if client is not None or text.startswith(("mongodb://", "mongodb+srv://")):
        from analysis.mongo import open_database

        db, label = open_database(text or None, db_name, client=client)
        report = read_mongo_runs(db, progress=progress, label=label)
    else:
        report = read_file_runs(text, progress=progress)
    frame = to_frame(report, latest_only=latest_only)
    frame.attrs["load_seconds"] = round(time.monotonic() - started, 2)
    return frame


def runs_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the standard run columns and the flattened config."""
    cols = [c for c in frame.columns if c not in ("team", "team_algo", "metric", "step", "value")]
    return frame[cols].drop_duplicates("run_id").reset_index(drop=True)
