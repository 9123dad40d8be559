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

Whatever cannot be read is skipped and listed in ``frame.attrs["skipped"]`` as (location, reason)
pairs, never raised: a run file missing, empty, truncated, binary, not UTF-8, unreadable or a symlink
loop; a directory that cannot be listed; a run with no metrics; on request, a run still RUNNING.
A resumed run is several Sacred runs with one run_key: by default only the latest COMPLETED one is
kept (its metrics repeat the history), else the latest one; ``latest_only=False`` keeps them all.
"""
from __future__ import annotations

import errno
import json
import math
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from validation import ConfigError

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
    flagged: list[tuple[str, str]] = field(default_factory=list)  # runs read with some values left out


def _number(value: Any) -> float | None:
    """A metric value or step as a finite float, or None (NaN, infinite, too large, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def _describe(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return "an integer too large for a float"
    if isinstance(value, float):
        return str(value)
    return f"a {type(value).__name__}"


def exclude_bad_values(raw: RawRun, report: LoadReport) -> None:
    """Leave out the points of ``raw``'s metrics whose step or value is not a finite number, with one line
    per run in ``report.flagged``. A series whose last point is bad is left out whole: its final value is
    unknown, and an earlier point must not stand in for it."""
    notes, bad_total = [], 0
    for name, series in list(raw.metrics.items()):
        if not isinstance(series, Mapping):
            continue
        steps, values = series.get("steps"), series.get("values")
        if not isinstance(steps, list) or not isinstance(values, list):
            continue
        n = min(len(steps), len(values))
        keep, first_bad = [], None
        for i in range(n):
            step, value = _number(steps[i]), _number(values[i])
            if step is None or value is None:
                if first_bad is None:
                    first_bad = (i, steps[i] if step is None else values[i], "step" if step is None else "value")
                continue
            keep.append(i)
        if first_bad is None:
            continue
        bad = n - len(keep)
        bad_total += bad
        i, what, kind = first_bad
        if n and keep and keep[-1] == n - 1:
            raw.metrics[name] = {**series, "steps": [steps[k] for k in keep], "values": [values[k] for k in keep]}
            notes.append(f"{name}: {bad} of {n} points left out (the first: {kind} {_describe(what)} at point {i})")
        else:
            del raw.metrics[name]
            notes.append(f"{name}: left out whole, its last point is not a finite number ({bad} of {n} bad; the "
                         f"first: {kind} {_describe(what)} at point {i})")
    if notes:
        report.flagged.append((raw.location, f"{bad_total} metric value(s) not finite numbers, excluded from the "
                                             f"statistics: " + "; ".join(notes)))


# ----------------------------------------------------------------------------- file storage

def find_run_dirs(root: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """Directories under ``root`` (recursively) holding any of Sacred's run files.

    Directory symlinks are followed (runs linked in from a scratch disk count), each real directory once:
    a link back into its own ancestors (a loop) or to a directory already searched is not entered. What
    cannot be searched (a symlink loop, a directory that cannot be listed) goes to ``skipped`` as
    (path, reason), so a report says what it did not read.
    """
    found: list[Path] = []
    seen: dict[str, str] = {}  # real path -> the path it was first searched as

    def cannot_list(exc: OSError) -> None:
        skipped.append((str(exc.filename), f"cannot list this directory ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=cannot_list, followlinks=True):
        seen.setdefault(os.path.realpath(dirpath), dirpath)
        if any(name in filenames for name in RUN_FILES):
            dirnames.clear()  # a run directory holds no further runs
            found.append(Path(dirpath))
            continue
        keep = []
        for name in sorted(d for d in dirnames if d not in NOT_RUN_DIRS and not d.startswith(".")):
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if real in seen:
                back = os.path.commonpath([real, os.path.realpath(dirpath)]) == real
                skipped.append((path, f"a symlink loop (leads back to {seen[real]})" if back
                                else f"the same directory as {seen[real]}, searched there"))
            else:
                seen[real] = path
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:  # os.walk files an endless link (a -> b -> a) among the files
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and _loops(path):
                skipped.append((path, "a symlink loop (it never reaches a file)"))
    return found


def _loops(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


MAX_RUN_FILE_BYTES = 256 * 2**20  # a run file over this is skipped unread (a 3M-step run's metrics.json: ~2 MB)
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _read_bounded(path: Path) -> bytes:
    """A run file's bytes, if it is a regular file of at most MAX_RUN_FILE_BYTES. Opened without blocking
    (a FIFO would wait forever for a writer) and checked by type on the open file, so what is read is
    what was checked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _Missing(f"{path.name} is missing") from None
    except OSError as exc:
        reason = "a symlink loop" if exc.errno == errno.ELOOP else exc.strerror
        raise _Broken(f"{path.name} is unreadable ({reason})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "not a regular file")
            raise _Broken(f"{path.name} is {kind}, not a file: not read")
        if st.st_size > MAX_RUN_FILE_BYTES:
            raise _Broken(f"{path.name} is {st.st_size / 2**20:.0f} MiB, over the {MAX_RUN_FILE_BYTES // 2**20} MiB "
                          "a run file may have: not read")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_RUN_FILE_BYTES + 1)
    except OSError as exc:
        raise _Broken(f"{path.name} is unreadable ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_RUN_FILE_BYTES:  # it grew while being read
        raise _Broken(f"{path.name} is over the {MAX_RUN_FILE_BYTES // 2**20} MiB a run file may have: not read")
    return data


def _read_json(path: Path) -> Any:
    data = _read_bounded(path)
    if not data.strip():
        raise _Broken(f"{path.name} is empty")
    nul = data.find(b"\0")
    if nul >= 0:  # JSON text never holds a NUL byte: a binary file, or the zeros a crash can leave
        raise _Broken(f"{path.name} is binary, not JSON (a NUL byte at offset {nul})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Broken(f"{path.name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        cut = exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
        where = "truncated" if cut else "not valid JSON"
        raise _Broken(f"{path.name} is {where} ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise _Broken(f"{path.name} cannot be read ({str(exc).splitlines()[0][:120]})") from None
    except RecursionError:
        raise _Broken(f"{path.name} is nested too deeply to read") from None


class _Broken(Exception):
    """Why a run cannot be read (a one-line reason)."""


class _Missing(_Broken):
    """A run file that does not exist (the caller may add what the run's status says)."""


def read_file_run(run_dir: Path, root: Path) -> RawRun:
    rel = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
    run = _read_json(run_dir / "run.json")
    config = _read_json(run_dir / "config.json")
    if not isinstance(run, dict) or not isinstance(config, dict):
        raise _Broken("run.json or config.json does not hold a JSON object")
    status = run.get("status", "?")
    try:
        metrics = _read_json(run_dir / "metrics.json")
    except _Missing:
        raise _Broken(f"metrics.json is missing (status {status})") from None
    if not isinstance(metrics, dict):
        raise _Broken("metrics.json does not hold a JSON object")
    if not metrics:
        raise _Broken(f"no metrics logged (status {status})")
    try:
        info = _read_json(run_dir / "info.json")
    except _Broken:
        info = {}  # info.json is optional (Sacred writes it only when info is non-empty)
    info = {**(run["info"] if isinstance(run.get("info"), dict) else {}), **(info if isinstance(info, dict) else {})}
    return RawRun(run_id=f"file:{rel}", source="file", sacred_id=run_dir.name, config=config, run=run,
                  info=info, metrics=metrics, location=str(run_dir))


def read_file_runs(root: str | os.PathLike, progress: bool = False) -> LoadReport:
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"runs directory {str(root)!r} does not exist; pass --runs DIR (default results/)")
    if not root.is_dir():
        raise ConfigError(f"{str(root)!r} is not a directory of runs")
    report = LoadReport()
    dirs = find_run_dirs(root, report.skipped)
    for run_dir in _progress(dirs, progress, f"reading runs under {root}"):
        try:
            raw = read_file_run(run_dir, root)
        except _Broken as exc:
            report.skipped.append((str(run_dir), str(exc)))
            continue
        exclude_bad_values(raw, report)
        if raw.metrics:
            report.runs.append(raw)
        else:
            report.skipped.append((str(run_dir), "no metric holds a finite number"))
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
        raw = RawRun(run_id=location, source="mongo", sacred_id=str(doc["_id"]), config=config,
                     run=doc, info=doc.get("info") or {}, metrics=metrics, location=location)
        exclude_bad_values(raw, report)
        if raw.metrics:
            report.runs.append(raw)
        else:
            report.skipped.append((location, "no metric holds a finite number"))
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
    """A naive UTC time (Sacred writes naive UTC times; an aware one is converted)."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return pd.NaT
    if ts is pd.NaT:
        return ts
    return ts.tz_convert(None) if ts.tzinfo else ts


def run_time(raw: RawRun) -> dict[str, Any]:
    """When a Sacred run started and last showed life: its stop time, else (still RUNNING, or killed
    before it could write one) its last heartbeat."""
    start = _timestamp(raw.run.get("start_time"))
    end = _timestamp(raw.run.get("stop_time"))
    if end is pd.NaT:
        end = _timestamp(raw.run.get("heartbeat"))
    seconds = (end - start).total_seconds() if start is not pd.NaT and end is not pd.NaT else math.nan
    threads = raw.config.get("torch_threads")
    return {"run_id": raw.run_id, "status": str(raw.run.get("status") or "UNKNOWN"), "start": start, "end": end,
            "seconds": seconds, "threads": threads if isinstance(threads, int) and threads > 0 else 1}


def _still_running(raw: RawRun) -> str:
    steps = [s[-1] for m in raw.metrics.values() if isinstance(m, Mapping)
             for s in [m.get("steps")] if isinstance(s, list) and s]
    beat = run_time(raw)["end"]
    age = (pd.Timestamp.now(tz="UTC").tz_convert(None) - beat).total_seconds() if beat is not pd.NaT else math.nan
    reached = f"t_env {max(_as_floats(steps)):.0f}, " if steps else ""
    beat_text = f"last heartbeat {duration_text(age)} ago" if math.isfinite(age) else "no heartbeat recorded"
    return f"still RUNNING ({reached}{beat_text}): its numbers are not final yet"


def duration_text(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


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


def to_frame(report: LoadReport, latest_only: bool = True, skip_running: bool = False) -> pd.DataFrame:
    """Tidy frame (see the module docstring) of the runs in ``report``; with ``skip_running``, runs still
    RUNNING go to ``attrs["skipped"]`` instead (their last evaluation is not their final one)."""
    fields = [run_fields(raw) for raw in report.runs]
    keep = latest_runs(fields) if latest_only else list(range(len(fields)))
    skipped = list(report.skipped)
    if skip_running:
        running = {i for i in keep if fields[i]["status"] == "RUNNING"}
        skipped += [(report.runs[i].location, _still_running(report.runs[i])) for i in sorted(running)]
        keep = [i for i in keep if i not in running]
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
    frame.attrs["skipped"] = skipped
    frame.attrs["flagged"] = list(report.flagged)
    frame.attrs["provenance"] = {raw.run_id: recorded_provenance(raw) for raw in (report.runs[i] for i in keep)}
    # Every Sacred run read, attempts of resumed runs and RUNNING ones included: what the runs cost.
    frame.attrs["run_times"] = [{**run_time(raw), "run_key": f["run_key"], "preset": f["preset"]}
                                for raw, f in zip(report.runs, fields)]
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
              db_name: str | None = None, client=None, skip_running: bool = False) -> pd.DataFrame:
    """Load every run under a directory (recursively) or from a MongoDB URL into one tidy frame.

    ``source`` is a directory of Sacred FileStorageObserver runs, or ``mongodb://host:port/db``
    (``client`` may be given instead, e.g. a mongomock client in tests). Unreadable runs (and, with
    ``skip_running``, runs still RUNNING) are listed in ``frame.attrs["skipped"]`` as (location, reason);
    ``frame.attrs["run_times"]`` holds every Sacred run's start, end, duration and torch threads;
    ``frame.attrs["load_seconds"]`` says how long loading took.
    """
    started = time.monotonic()
    text = str(source) if source is not None else ""
    if client is not None or text.startswith(("mongodb://", "mongodb+srv://")):
        from analysis.mongo import open_database

        db, label = open_database(text or None, db_name, client=client)
        report = read_mongo_runs(db, progress=progress, label=label)
    else:
        report = read_file_runs(text, progress=progress)
    frame = to_frame(report, latest_only=latest_only, skip_running=skip_running)
    frame.attrs["load_seconds"] = round(time.monotonic() - started, 2)
    return frame


def runs_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the standard run columns and the flattened config."""
    cols = [c for c in frame.columns if c not in ("team", "team_algo", "metric", "step", "value")]
    return frame[cols].drop_duplicates("run_id").reset_index(drop=True)


# ----------------------------------------------------------------------------- cells: what may be pooled

# Config entries that change neither what a run learns nor what it measures: bookkeeping, where output
# goes, how the work is split. Every other entry (t_max, learning rates, env options, the env backend's
# version in env_info.backend, test_episodes, ...) separates runs that would otherwise share a cell.
NOT_SETTINGS = frozenset({
    "seed", "seeds", "run_key", "tags", "preset", "resume_from", "checkpoint_interval", "log_interval", "progress",
    "device", "torch_threads", "env_info.step_unit", "env_info.teams", "name", "db", "mongo_url", "observers",
})
NOT_SETTING_PREFIXES = ("provenance.", "slurm.", "mongo.")
BUDGET_KEY = "t_max"
TEAM_PREFIX = "teams."


def _setting_value(value: Any) -> str | None:
    """A config value as comparable text (10 and 10.0 alike); None for a missing entry."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:g}" if math.isfinite(number) else str(value)


def run_settings(frame: pd.DataFrame, group: Iterable[str] = ("env", "map", "N", "algo"),
                 exclude: Iterable[str] = ()) -> pd.DataFrame:
    """Per run: its budget (config `t_max`, NaN when not recorded) and its setting, the entries of its
    config that differ between runs of the same ``group`` (task and algorithm), as "key=value, ..." text
    ("" when its group's runs agree on everything that changes results). An entry a run does not record
    (an older config) is unknown, not different. ``exclude`` names entries a caller compares on purpose
    (an ablation's parameter)."""
    runs = runs_table(frame)
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "budget", "setting"])
    skip = set(NOT_SETTINGS) | set(exclude) | set(STANDARD) | {BUDGET_KEY}
    # Who plays which team (config `teams`) is part of the task, like the map: it joins the group.
    group = [*group, *sorted(c for c in runs.columns if c.startswith(TEAM_PREFIX))]
    keys = [c for c in runs.columns if c not in skip and not c.startswith((*NOT_SETTING_PREFIXES, TEAM_PREFIX))]
    budget = pd.to_numeric(runs[BUDGET_KEY].astype(object), errors="coerce") if BUDGET_KEY in runs \
        else pd.Series(np.nan, index=runs.index)
    labels = pd.Series("", index=runs.index, dtype=object)
    group = [g for g in group if g in runs.columns]
    for _, sub in (runs.groupby(group, observed=True, dropna=False) if group else [((), runs)]):
        varied = []
        for key in keys:
            values = sub[key].astype(object).map(_setting_value)
            if values.dropna().nunique() > 1:
                varied.append((key, values))
        for idx in sub.index:
            parts = [f"{key}={values[idx]}" for key, values in varied if values[idx] is not None]
            labels[idx] = ", ".join(parts)
    return pd.DataFrame({"run_id": runs["run_id"].astype(str).to_numpy(), "budget": budget.to_numpy(dtype=float),
                         "setting": labels.to_numpy()})


def with_settings(frame: pd.DataFrame, exclude: Iterable[str] = ()) -> pd.DataFrame:
    """``frame`` with the columns `budget` and `setting` of run_settings (replacing any already there)."""
    settings = run_settings(frame, exclude=exclude).set_index("run_id")
    ids = frame["run_id"].astype(str)
    out = frame.drop(columns=[c for c in ("budget", "setting") if c in frame.columns])
    out = out.assign(budget=ids.map(settings["budget"]).to_numpy(dtype=float),
                     setting=ids.map(settings["setting"]).fillna("").to_numpy(dtype=object))
    out.attrs = dict(frame.attrs)
    return out


def setting_text(budget: float, setting: str) -> str:
    """"t_max=500k" or "t_max=500k, lr=0.0005": what a group of runs shares, for people."""
    parts = [f"t_max={_steps_text(budget)}" if np.isfinite(budget) else "t_max unknown"]
    return ", ".join(parts + ([setting] if setting else []))


def _steps_text(steps: float) -> str:
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(steps) >= div:
            return f"{steps / div:.3g}{unit}"
    return f"{int(steps)}"


def primary_settings(frame: pd.DataFrame, group: Iterable[str] = ("env", "map", "N", "algo"),
                     exclude: Iterable[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """Per task and algorithm, the runs of one setting: the one most runs share, ties going to the
    longest budget. Returns those rows (with `budget` and `setting` columns) and one line per group of
    runs left out, saying which runs and why, so nothing is pooled in silence and nothing dropped unsaid."""
    frame = with_settings(frame, exclude=exclude)
    runs = frame.drop_duplicates("run_id")
    group = [g for g in [*group, *sorted(c for c in runs.columns if str(c).startswith(TEAM_PREFIX))]
             if g in runs.columns]
    keep, notes = set(), []
    for key, sub in (runs.groupby(group, observed=True, dropna=False) if group else [((), runs)]):
        key = key if isinstance(key, tuple) else (key,)
        sets = sub.groupby(["budget", "setting"], dropna=False)["run_id"].agg(list).reset_index()
        sets["n"] = sets["run_id"].map(len)
        sets["_b"] = sets["budget"].fillna(-1.0)
        sets = sets.sort_values(["n", "_b", "setting"], ascending=[False, False, True]).reset_index(drop=True)
        keep.update(sets.loc[0, "run_id"])
        if len(sets) > 1:
            what = " ".join(str(k) for k in key if k is not None and k is not pd.NA and str(k) not in ("nan", "<NA>"))
            kept = setting_text(sets.loc[0, "budget"], sets.loc[0, "setting"])
            for row in sets.iloc[1:].itertuples(index=False):
                notes.append(f"{what}: {row.n} run(s) with {setting_text(row.budget, row.setting)} left out "
                             f"(they differ from the {sets.loc[0, 'n']} run(s) with {kept} shown)")
    out = frame[frame["run_id"].astype(str).isin(keep)]
    out.attrs = dict(frame.attrs)
    return out, notes


# ----------------------------------------------------------------------------- provenance

PROVENANCE_FILE = "provenance.json"
PROVENANCE_DEPTH = 4  # parent directories searched for a provenance.json of recovered records


def recorded_provenance(raw: RawRun, _cache: dict | None = None) -> dict | None:
    """Which code made a run: its own record (info.json / the Mongo run's info, key "provenance"), else
    the entry for its directory in the nearest provenance.json of a parent directory (recovered for runs
    that predate the record; keys are run directories relative to that file), else None (unknown)."""
    own = raw.info.get("provenance") if isinstance(raw.info, Mapping) else None
    if isinstance(own, Mapping):
        return dict(own)
    if raw.source != "file" or not raw.location:
        return None
    run_dir = Path(raw.location)
    cache = _PROVENANCE_FILES if _cache is None else _cache
    for parent in list(run_dir.parents)[:PROVENANCE_DEPTH]:
        path = parent / PROVENANCE_FILE
        key = str(path)
        if key not in cache:
            try:
                data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
            except (OSError, ValueError):
                data = None
            cache[key] = data.get("runs") if isinstance(data, Mapping) and isinstance(data.get("runs"), Mapping) else None
        runs = cache[key]
        if runs is not None:
            entry = runs.get(run_dir.relative_to(parent).as_posix())
            return dict(entry) if isinstance(entry, Mapping) else None
    return None


_PROVENANCE_FILES: dict[str, Any] = {}


# What a run's training imports: a commit that changes none of these ran the same code as its parent.
CODE_PATHS = ("algos", "envs", "experiments", "validation", "pyproject.toml")
REPO_ROOT = Path(__file__).resolve().parents[1]
_CODE_COMMIT: dict[str, str] = {}


def code_commit(commit: str, repo: Path = REPO_ROOT) -> str:
    """The latest commit at or before ``commit`` that changed the code training runs (CODE_PATHS), from
    this checkout's git history; ``commit`` itself where git or the commit is not available. The sweep
    commits each finished run, so runs start at many commits that differ only in results/."""
    if commit in _CODE_COMMIT:
        return _CODE_COMMIT[commit]
    found = commit
    if (repo / ".git").exists():
        import subprocess

        try:
            out = subprocess.run(["git", "-C", str(repo), "rev-list", "-1", commit, "--", *CODE_PATHS],
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                found = out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    _CODE_COMMIT[commit] = found
    return found


def code_versions(provenance: Mapping[str, Any], run_ids: Iterable[str], repo: Path | None = REPO_ROOT) -> str:
    """What code a group of runs came from, for people: "1 code version (2090e2f)", "3 code versions
    (2090e2f, 6c9b48b, b3cb15a), recovered from start times", "... 1 run from a modified tree", "unknown"
    or "2 runs unknown". A commit counts by the last commit before it that changed the code training runs
    (code_commit; with ``repo`` None, or without git, by itself). A recovered record counts by the commit
    checked out when the run started."""
    commits: dict[str, int] = {}
    unknown = dirty = recovered = no_git = 0
    for rid in run_ids:
        p = provenance.get(rid)
        if not isinstance(p, Mapping):
            unknown += 1
            continue
        commit = p.get("commit")
        if not commit and isinstance(p.get("recovered"), Mapping):
            commit = p["recovered"].get("commit")
        if p.get("source") == "recovered":
            recovered += 1
        if p.get("source") == "no git checkout":
            no_git += 1
        if p.get("dirty"):
            dirty += 1
        if commit:
            code = code_commit(str(commit), repo) if repo is not None else str(commit)
            commits[code[:7]] = commits.get(code[:7], 0) + 1
        elif p.get("source") != "no git checkout":
            unknown += 1
    parts = []
    if commits:
        names = ", ".join(sorted(commits, key=lambda c: (-commits[c], c)))
        parts.append(f"{len(commits)} code version{'s' if len(commits) > 1 else ''} ({names})")
        if recovered:
            parts.append("recovered from start times" if recovered == sum(commits.values())
                         else f"{recovered} recovered from start times")
    if dirty:
        parts.append(f"{dirty} run{'s' if dirty > 1 else ''} from a modified tree")
    if no_git:
        parts.append(f"{no_git} run{'s' if no_git > 1 else ''} installed without a git checkout")
    if unknown:
        parts.append("unknown" if not parts else f"{unknown} run{'s' if unknown > 1 else ''} unknown")
    return ", ".join(parts) or "unknown"
