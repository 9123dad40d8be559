"""MongoDB for Omniboard, never in the way of training.

Every run goes to files (FileStorageObserver); MongoDB gets a copy of it through `MongoCopyObserver`:

- at start, one probe with a short timeout. A database that does not answer means a run with files only,
  one line saying so and how to copy the run in later (`asae sync-mongo`); or, if the database is
  required, one line and no run at all;
- during the run, Sacred's events only update what is to be sent, and a background thread sends it. When
  the database is down, slow or drops connections, training goes on: what is unsent is kept (bounded)
  and retried;
- at the end, the run waits a few seconds at most for what is unsent, then leaves it to `asae sync-mongo`
  and says so. The run's info (info.json, key "mongo") records how complete the database copy is.

Sacred's QueuedMongoObserver does none of this: its start waits for pymongo's 30 s server selection and
fails the run, and its join retries forever, so the process never exits while the database is down. The
plain MongoObserver can stop writing silently on long runs (IDSIA/sacred#434).

The documents are those of Sacred's MongoObserver (see analysis/mongo.py). Each run also carries
``info.source.key``, the key `asae sync-mongo` identifies a file run by: a sync finds the live copy and
completes it in place instead of adding a second one.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from sacred.observers.base import RunObserver

from experiments.files import atomic_write

DEFAULT_DB = "asae"
MONGO_FORMAT = "MongoObserver-0.7.0"  # what Sacred 0.8.7's MongoObserver writes in `format`

# A database that is down costs seconds, not pymongo's default 30 s server selection. The connection
# timeout is shorter, so that a server that accepts and never answers is reported as such ("timed out").
SELECTION_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 2.0
# A database that accepts connections and never answers: an unanswered write gives up after this.
SOCKET_TIMEOUT_S = 5.0
RETRY_INTERVAL_S = 5.0
# How long the end of a run waits for the database to take what is still unsent.
FINAL_WAIT_S = 5.0
# Metric points kept while the database does not answer (a few tens of MB at most); newer ones go to
# the files only, and `asae sync-mongo` copies them later.
MAX_UNSENT_POINTS = 100_000
# Points per metric update: a document update stays far below MongoDB's 16 MB limit.
BATCH_POINTS = 10_000


class MongoUnreachable(Exception):
    """The database did not answer; the message says why in a few words."""


def parse_mongo_url(url: str) -> tuple[str, str]:
    """'mongodb://host:port/db' or Sacred's '[host:port:]db' -> (client url, db name)."""
    if url.startswith(("mongodb://", "mongodb+srv://")):
        db = urlparse(url).path.lstrip("/") or DEFAULT_DB
        return url, db
    if "://" in url:
        from validation import ConfigError

        raise ConfigError(f"MongoDB URL {redact(url)!r} is not valid (not a mongodb:// URL); use mongodb://host:port/db "
                          "or host:port:db")
    parts = url.split(":")
    if len(parts) == 1:
        return "mongodb://localhost:27017", parts[0] or DEFAULT_DB
    if len(parts) == 3:
        return f"mongodb://{parts[0]}:{parts[1]}", parts[2]
    from validation import ConfigError

    raise ConfigError(f"MongoDB URL {url!r} is not valid; use mongodb://host:port/db or host:port:db")


def redact(url: str) -> str:
    """The URL as printed and recorded: a password never goes to logs or run files."""
    return re.sub(r"^(mongodb(?:\+srv)?://[^:/@]*:)[^@]*@", r"\1***@", url)


def mongo_from_environment() -> tuple[str | None, bool]:
    """($ASAE_MONGO_URL or None, whether $ASAE_MONGO_REQUIRED asks for the database to be required)."""
    return os.environ.get("ASAE_MONGO_URL") or None, os.environ.get("ASAE_MONGO_REQUIRED", "") not in ("", "0")


def error_reason(exc: BaseException) -> str:
    """pymongo's error in a few words: its first line without the timeouts, topology and server address."""
    text = (str(exc).splitlines() or [""])[0].split(" (configured timeouts")[0].split(", Timeout:")[0]
    text = re.sub(r"^\[?[\w.:-]+\]?:\d+: ", "", text)  # "127.0.0.1:27017: timed out" -> "timed out"
    if text.startswith("No servers found yet"):  # pymongo's first check of the server has not finished
        return "no server answered"
    return text[:200] or type(exc).__name__


def connect(url: str, timeout_s: float = SELECTION_TIMEOUT_S, socket_timeout_s: float | None = SOCKET_TIMEOUT_S):
    """The database of ``url``, after it answered a ping within ``timeout_s``; MongoUnreachable if it did not.
    Every later operation gives up after ``timeout_s`` without a server, ``socket_timeout_s`` without a reply."""
    import pymongo
    import pymongo.errors

    from validation import ConfigError

    address, name = parse_mongo_url(url)
    try:
        client = pymongo.MongoClient(address, serverSelectionTimeoutMS=int(timeout_s * 1000),
                                     connectTimeoutMS=int(min(timeout_s, CONNECT_TIMEOUT_S) * 1000),
                                     socketTimeoutMS=None if socket_timeout_s is None else int(socket_timeout_s * 1000))
        client[name]  # pymongo checks the database name here (no '/', '.', ' ', '$'; not empty)
    except (pymongo.errors.ConfigurationError, pymongo.errors.InvalidName, ValueError, TypeError) as exc:
        raise ConfigError(f"MongoDB URL {redact(url)!r} is not valid ({(str(exc).splitlines() or [''])[0][:160]}); "
                          "use mongodb://host:port/db or host:port:db") from None
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as exc:
        client.close()
        raise MongoUnreachable(error_reason(exc)) from None
    return client[name]


# ----------------------------------------------------------------------------- Sacred's schema, shared
# with `asae sync-mongo` (analysis/mongo.py), so that a synced run and a live one are the same documents.

def source_key(run_key: str | None, sacred_id: Any, start_time: str | None) -> str:
    """A file run's identity in MongoDB (``info.source.key``): it survives moving the results directory."""
    return f"{run_key or '-'}/{sacred_id}/{start_time or '-'}"


def bson_safe(obj: Any) -> Any:
    """MongoDB keys may not contain '.' or start with '$'."""
    if isinstance(obj, Mapping):
        return {(k.replace(".", "_").replace("$", "_") if isinstance(k, str) else k): bson_safe(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [bson_safe(v) for v in obj]
    return obj


def upload_source(db, name: str, data: bytes) -> Any:
    """A source file in GridFS, stored once per content (as Sacred's MongoObserver does); -> its file id."""
    import gridfs

    fs = gridfs.GridFS(db)
    md5 = hashlib.md5(data).hexdigest()
    existing = fs.find_one({"filename": name, "metadata.md5": md5})
    return existing._id if existing is not None else fs.put(data, filename=name, metadata={"md5": md5})


def insert_run(runs, doc: dict) -> int:
    """Insert a run document under the next free integer _id, as Sacred numbers runs; -> the _id."""
    import pymongo.errors

    for _attempt in range(100):  # another writer may take the id first
        last = list(runs.find({"_id": {"$type": "number"}}, {"_id": 1}).sort("_id", -1).limit(1))
        doc["_id"] = int(last[0]["_id"]) + 1 if last else 1
        try:
            runs.insert_one(doc)
            return doc["_id"]
        except pymongo.errors.DuplicateKeyError:
            continue
    raise RuntimeError("no free run id in MongoDB after 100 attempts")


# ----------------------------------------------------------------------------- the observer

def mongo_copy(url: str, required: bool = False) -> "MongoCopyObserver":
    """The observer that copies a run to MongoDB at ``url``, after probing it (a few seconds at most).
    If it does not answer: MongoUnreachable when ``required``, else an observer that records the copy as
    missing."""
    label = redact(url)
    try:
        database = connect(url)
    except MongoUnreachable as exc:
        if required:
            raise MongoUnreachable(f"MongoDB at {label} is unreachable ({exc}); not training, because the "
                                   "database is required (--mongo-required or ASAE_MONGO_REQUIRED)") from None
        return MongoCopyObserver(label, None, error=str(exc))
    return MongoCopyObserver(label, database)


def mongo_copy_of(run) -> "MongoCopyObserver | None":
    return next((obs for obs in run.observers if isinstance(obs, MongoCopyObserver)), None)


@dataclass
class _Series:
    """One metric's points on their way to its `metrics` document."""

    doc_id: Any  # chosen here, so that a retried first write cannot create a second document
    sent: int = 0  # points the document holds
    points: list[tuple[Any, Any, Any]] = field(default_factory=list)  # (step, value, timestamp) not yet sent
    in_flight: int = 0  # the first points being written; retried as exactly this batch until it is stored


class MongoCopyObserver(RunObserver):
    """Copies a run to ``database`` (a pymongo database, None when it was unreachable at start) from a
    background thread, which takes ``database`` afresh at every attempt."""

    # After the FileStorageObserver (priority 20): the file run is started first and gives the run its id.
    priority = 10

    def __init__(self, url: str, database, error: str | None = None, max_unsent_points: int = MAX_UNSENT_POINTS):
        self.url = url
        self.database = database  # None: unreachable at start, the run has files only
        self.max_unsent_points = max_unsent_points
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._writer_done = threading.Event()
        self._writer: threading.Thread | None = None
        self._ending = self._ended = self._give_up = False
        self._doc: dict[str, Any] = {}
        self._doc_version = self._sent_version = 0
        self._sources: list[tuple[str, bytes]] = []
        self._source_refs: list[list[Any]] = []
        self._source_info: dict[str, Any] = {}
        self._run_id: int | None = None
        self._series: dict[str, _Series] = {}
        self._unsent = self._dropped = 0
        self._error = error
        self._down = False
        self._info: dict | None = None
        self._run_dir: Path | None = None

    # --- what the run's files say about the copy ------------------------------------------------------
    def attach(self, info: dict, run_dir: Path | None) -> None:
        """Called by the run's main function: the copy's state goes into the run's info (info.json), and
        the lines about it name the run directory to sync."""
        self._info, self._run_dir = info, None if run_dir is None else Path(run_dir).resolve()
        info["mongo"] = self.record()
        if self.database is None:
            self._say(f"is unreachable ({self._error}): training with files only; to copy this run in later: "
                      f"{self.sync_command()}")

    def sync_command(self) -> str:
        return f"asae sync-mongo --url {self.url} {self._run_dir if self._run_dir is not None else '<run directory>'}"

    def record(self) -> dict[str, Any]:
        with self._lock:
            unsent = self._unsent
            status_unsent = self._doc_version != self._sent_version
            if self.database is None or (self._ended and self._run_id is None):
                copy = "missing"
            elif not self._ended:
                copy = "live"
            else:
                copy = "complete" if not (unsent or status_unsent or self._dropped) else "incomplete"
            out: dict[str, Any] = {"url": self.url, "copy": copy}
            if self._run_id is not None:
                out["id"] = self._run_id
            if copy != "complete" and self._error:
                out["error"] = self._error
            if unsent:
                out["unsent_points"] = unsent
            if self._dropped:
                out["dropped_points"] = self._dropped
            if copy in ("missing", "incomplete"):
                out["sync"] = self.sync_command()
            return out

    def _say(self, text: str) -> None:
        print(f"[asae] MongoDB at {self.url} {text}", file=sys.stderr, flush=True)

    # --- Sacred's events: never wait for the database -------------------------------------------------
    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        from sacred.serializer import flatten

        if self.database is None:
            return None
        # The file observer has replaced ex_info's sources by its stored copies; read the originals.
        for name, _ in ex_info.get("sources", []):
            try:
                self._sources.append((name, Path(ex_info["base_dir"], name).read_bytes()))
            except OSError:
                continue
        start = start_time.isoformat()
        self._source_info = {"kind": "file", "key": source_key(config.get("run_key"), _id, start), "sacred_id": str(_id)}
        self._doc = {
            "experiment": dict(ex_info), "format": MONGO_FORMAT, "command": command, "host": dict(host_info),
            "start_time": start_time, "config": flatten(config), "meta": meta_info, "status": "RUNNING",
            "resources": [], "artifacts": [], "captured_out": "", "info": {}, "heartbeat": None, "result": None,
        }
        self._doc_version = 1
        self._writer = threading.Thread(target=self._write_loop, name="asae-mongo-copy", daemon=True)
        self._writer.start()
        return None  # the run's id is the file run's

    def heartbeat_event(self, info, captured_out, beat_time, result):
        from sacred.serializer import flatten

        if self._info is not None:
            info["mongo"] = self.record()  # written to info.json by the file observer's next heartbeat
        if self.database is None:
            return
        with self._lock:
            self._doc.update(info={k: v for k, v in flatten(info).items() if k != "mongo"},
                             captured_out=captured_out, heartbeat=beat_time, result=flatten(result))
            self._doc_version += 1
        self._wake.set()

    def log_metrics(self, metrics_by_name, info):
        from bson import ObjectId

        if self.database is None:
            return
        with self._lock:
            first_drop = not self._dropped
            for name, metric in metrics_by_name.items():
                points = list(zip(metric["steps"], metric["values"], metric["timestamps"]))
                kept = points[: max(0, self.max_unsent_points - self._unsent)]
                self._dropped += len(points) - len(kept)
                self._unsent += len(kept)
                if kept:
                    self._series.setdefault(name, _Series(ObjectId())).points.extend(kept)
            first_drop = first_drop and self._dropped
        if first_drop:
            self._say(f"has {self.max_unsent_points} metric points waiting, as many as are kept; newer ones go to "
                      "the run's files only (`asae sync-mongo` copies them later)")
        self._wake.set()

    def completed_event(self, stop_time, result):
        from sacred.serializer import flatten

        self._end(stop_time=stop_time, result=flatten(result), status="COMPLETED")

    def interrupted_event(self, interrupt_time, status):
        self._end(stop_time=interrupt_time, status=status)

    def failed_event(self, fail_time, fail_trace):
        self._end(stop_time=fail_time, status="FAILED", fail_trace=fail_trace)

    def _end(self, **final) -> None:
        """Give the writer FINAL_WAIT_S to send what is left, whatever the database does; then record and
        say how complete the copy is. The writer, a daemon thread, stops after its current attempt."""
        if self._writer is not None:
            with self._lock:
                self._doc.update(final)
                self._doc_version += 1
                self._ending = True
            self._wake.set()
            self._writer_done.wait(FINAL_WAIT_S)
            self._give_up = True
            self._wake.set()
        with self._lock:
            self._ended = True
        record = self.record()
        if record["copy"] == "missing":
            self._say(f"has no copy of this run ({self._error}); the run's files have it all: {record['sync']}")
        elif record["copy"] == "incomplete":
            parts = [f"{record['unsent_points']} metric points unsent"] if record.get("unsent_points") else []
            if self._doc_version != self._sent_version:
                parts.append(f"its last status ({final['status']}) unwritten")
            if record.get("dropped_points"):
                parts.append(f"{record['dropped_points']} points never kept")
            self._say(f"has an incomplete copy of this run ({', '.join(parts)}; {self._error}); the run's files "
                      f"have it all: {record['sync']}")
        if self._info is not None and self._run_dir is not None:
            import json

            from sacred.serializer import flatten

            self._info["mongo"] = record
            text = json.dumps(flatten(self._info), sort_keys=True, indent=2).encode()
            atomic_write(self._run_dir / "info.json", lambda f: f.write(text))

    # --- the writer thread ----------------------------------------------------------------------------
    def _write_loop(self) -> None:
        try:
            while not self._give_up:
                self._wake.clear()
                try:
                    self._send()
                except Exception as exc:  # noqa: BLE001 - whatever the database does, keep the data and retry
                    self._failed(exc)
                    self._wake.wait(0.5 if self._ending else RETRY_INTERVAL_S)
                    continue
                if self._down:
                    self._down = False
                    self._say("answers again: what was kept meanwhile is written")
                with self._lock:
                    finished = self._ending and not self._unsent and self._doc_version == self._sent_version
                if finished:
                    break
                self._wake.wait()
        finally:
            self._writer_done.set()
            self.database.client.close()

    def _failed(self, exc: BaseException) -> None:
        self._error = error_reason(exc)
        if not self._down and not self._ending:
            self._say(f"stopped answering ({self._error}): training goes on; what is not written yet is kept "
                      f"(up to {self.max_unsent_points} metric points) and retried every {RETRY_INTERVAL_S:.0f} s")
        self._down = True

    def _send(self) -> None:
        db = self.database
        if self._run_id is None:
            self._source_refs = [[name, upload_source(db, name, data)] for name, data in self._sources]
            with self._lock:
                doc, version = self._snapshot()
            # An earlier attempt whose reply was lost, or `asae sync-mongo`, may have written the run already.
            existing = db["runs"].find_one({"info.source.key": self._source_info["key"]}, {"_id": 1})
            run_id = existing["_id"] if existing is not None else insert_run(db["runs"], doc)
            with self._lock:
                self._run_id = run_id
                if existing is None:
                    self._sent_version = version
        for name in list(self._series):
            while self._send_batch(db, name):
                pass
        with self._lock:
            if self._doc_version == self._sent_version:
                return
            doc, version = self._snapshot()
        doc.pop("_id", None)
        db["runs"].update_one({"_id": self._run_id}, {"$set": doc})
        with self._lock:
            self._sent_version = max(self._sent_version, version)

    def _snapshot(self) -> tuple[dict, int]:
        """The run document as it should be now (call with the lock held)."""
        doc = dict(self._doc)
        doc["experiment"] = {**doc["experiment"], "sources": self._source_refs}
        metrics = [{"id": str(s.doc_id), "name": name} for name, s in self._series.items() if s.sent]
        doc["info"] = {**doc["info"], "metrics": metrics,
                       "source": {**self._source_info, "path": str(self._run_dir or "")}}
        return bson_safe(doc), self._doc_version

    def _send_batch(self, db, name: str) -> bool:
        """Write the next batch of one metric's points; -> whether one was written."""
        import pymongo.errors

        with self._lock:
            series = self._series[name]
            if not series.in_flight:
                series.in_flight = min(len(series.points), BATCH_POINTS)
            if not series.in_flight:
                return False
            steps, values, stamps = (list(col) for col in zip(*series.points[: series.in_flight]))
            sent = series.sent
        try:
            # Appends only if the document does not hold this batch yet: a retry after a lost reply cannot
            # add the points twice (the upsert then hits the existing _id instead).
            db["metrics"].update_one(
                {"_id": series.doc_id, f"steps.{sent}": {"$exists": False}},
                {"$setOnInsert": {"run_id": self._run_id, "name": name},
                 "$push": {"steps": {"$each": steps}, "values": {"$each": values}, "timestamps": {"$each": stamps}}},
                upsert=True)
        except pymongo.errors.DuplicateKeyError:
            pass  # an earlier attempt stored this batch; its reply was lost
        with self._lock:
            del series.points[: series.in_flight]
            series.sent += series.in_flight
            self._unsent -= series.in_flight
            series.in_flight = 0
            if sent == 0:  # its document exists now: the run document's info.metrics lists it
                self._doc_version += 1
        return True
