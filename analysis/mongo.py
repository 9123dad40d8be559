"""MongoDB in Sacred's schema: open a database from a URL, and copy file-stored runs into it.

Sacred's MongoObserver writes a `runs` document per run (_id an int, experiment, format, command, host,
start_time, stop_time, heartbeat, config, meta, status, resources, artifacts, captured_out, info,
result, fail_trace) and one `metrics` document per (run, metric name): run_id, name, steps, values,
timestamps; the run's ``info.metrics`` lists {"id": str(metric _id), "name": ...}. Omniboard reads
exactly these, so `sync_runs` writes them the same way.

Idempotence: a synced run carries ``info.source`` = {"kind": "file", "key": ..., "path": ...}, where
the key (run_key / Sacred id / start time) identifies the file run independently of where the
results directory lives. A second sync finds the run by that key and overwrites it and its metrics
in place (a run that was RUNNING at the first sync gets its newer status and points). The live
observer (experiments/observers.py) writes the same key, so a sync also completes a run whose live copy
the database did not fully get.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from validation import ConfigError
from experiments.observers import (DEFAULT_DB, MONGO_FORMAT, MongoUnreachable, bson_safe, connect, insert_run,
                                   parse_mongo_url, redact, source_key, upload_source)

from analysis.loaders import RawRun, read_file_runs


def open_database(url: str | None, db_name: str | None = None, client=None, timeout_ms: int = 5000):
    """(database, label). ``client`` (e.g. mongomock.MongoClient()) replaces connecting to ``url``."""
    if client is None:
        if not url:
            raise ConfigError("no MongoDB URL; pass --url mongodb://host:27017/db or set ASAE_MONGO_URL")
        address, name = parse_mongo_url(url)
        name = db_name or name
        try:
            # No socket timeout: a sync writes whole metric series, which may take a while on a slow link.
            client = connect(url, timeout_s=timeout_ms / 1000, socket_timeout_s=None).client
        except MongoUnreachable as exc:
            raise ConfigError(f"cannot reach MongoDB at {redact(address)}: {exc}") from None
    else:
        name = db_name or (parse_mongo_url(url)[1] if url else DEFAULT_DB)
    return client[name], name


# ----------------------------------------------------------------------------- file runs -> MongoDB

def file_source_key(raw: RawRun) -> str:
    return source_key(raw.config.get("run_key") or raw.info.get("run_key"), raw.sacred_id, raw.run.get("start_time"))


def _datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime) or value is None:
        return value
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _sources(db, raw: RawRun) -> list:
    """Upload the run's copied sources (Sacred's _sources/ files) to GridFS, as MongoObserver does."""
    out = []
    base = Path(raw.location).parent
    for entry in (raw.run.get("experiment") or {}).get("sources") or []:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            continue
        name, stored = entry
        path = base / str(stored)
        if not path.is_file():
            continue
        out.append([name, upload_source(db, str(name), path.read_bytes())])
    return out


def _captured_out(raw: RawRun, limit: int = 1 << 20) -> str:
    try:
        text = (Path(raw.location) / "cout.txt").read_text(errors="replace")
    except OSError:
        return ""
    return text if len(text) <= limit else "[... earlier output cut by asae sync-mongo ...]\n" + text[-limit:]


def _run_document(raw: RawRun, key: str, path: str) -> dict:
    run = raw.run
    # "mongo" says how complete the database copy was when the run ended: not part of the copy itself.
    info = {k: v for k, v in raw.info.items() if k not in ("metrics", "mongo")}
    info["source"] = {"kind": "file", "key": key, "path": path, "sacred_id": raw.sacred_id}
    experiment = dict(run.get("experiment") or {})
    doc = {
        "experiment": experiment,
        "format": MONGO_FORMAT,
        "command": run.get("command", "main"),
        "host": run.get("host") or {},
        "start_time": _datetime(run.get("start_time")),
        "heartbeat": _datetime(run.get("heartbeat")),
        "config": raw.config,
        "meta": run.get("meta") or {},
        "status": run.get("status", "UNKNOWN"),
        "resources": run.get("resources") or [],
        "artifacts": [],  # file artifacts (checkpoints) stay on disk; info.source.path points to them
        "captured_out": _captured_out(raw),
        "info": info,
        "result": run.get("result"),
    }
    if run.get("stop_time") is not None:
        doc["stop_time"] = _datetime(run["stop_time"])
    if run.get("fail_trace") is not None:
        doc["fail_trace"] = run["fail_trace"]
    return bson_safe(doc)


@dataclass
class SyncResult:
    inserted: int = 0
    updated: int = 0
    metrics: int = 0
    skipped: list[tuple[str, str]] | None = None


def sync_runs(directory: str | os.PathLike, db, progress: bool = False,
              log: Callable[[str], None] | None = None) -> SyncResult:
    """Copy every Sacred run under ``directory`` into ``db`` (runs + metrics), idempotently."""
    import pymongo

    report = read_file_runs(directory, progress=progress)
    result = SyncResult(skipped=list(report.skipped))
    runs, metrics = db["runs"], db["metrics"]
    runs.create_index("info.source.key", sparse=True)
    metrics.create_index([("run_id", 1), ("name", 1)])
    root = Path(directory).resolve()
    for raw in report.runs:
        key = file_source_key(raw)
        path = str(Path(raw.location).resolve().relative_to(root)) if raw.location else raw.run_id
        doc = _run_document(raw, key, path)
        existing = runs.find_one({"info.source.key": key}, {"_id": 1, "experiment.sources": 1})
        if existing is None:
            doc["experiment"]["sources"] = _sources(db, raw)
            run_id = insert_run(runs, doc)
            result.inserted += 1
        else:
            run_id = existing["_id"]
            doc["experiment"]["sources"] = (existing.get("experiment") or {}).get("sources", [])
        entries = []
        for name, series in raw.metrics.items():
            series = series or {}
            steps, values = list(series.get("steps") or []), list(series.get("values") or [])
            stamps = [_datetime(t) for t in series.get("timestamps") or []]
            n = min(len(steps), len(values))
            mdoc = metrics.find_one_and_update(
                {"run_id": run_id, "name": name},
                {"$set": {"steps": steps[:n], "values": values[:n], "timestamps": stamps[:n]}},
                upsert=True, return_document=pymongo.ReturnDocument.AFTER, projection={"_id": 1})
            entries.append({"id": str(mdoc["_id"]), "name": name})
            result.metrics += 1
        doc["info"]["metrics"] = entries
        doc.pop("_id", None)
        runs.update_one({"_id": run_id}, {"$set": doc})
        if existing is not None:
            result.updated += 1
        if log is not None:
            log(f"{'updated' if existing is not None else 'inserted'} run {run_id} <- {raw.location}")
    return result
