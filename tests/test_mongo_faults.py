"""A MongoDB that is down, black-holed or dropping connections never stops, slows or hangs a run.

The faults are real sockets: a closed port, a listener that accepts connections and never answers, one
that closes every connection a moment after accepting it; pymongo meets them as it would on a cluster.
No MongoDB server can run on these machines, so where a database must answer and its documents are
checked, it is mongomock's (in memory); a run that loses its database midway has its observer's
database handle switched from mongomock to one of the faulty sockets.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_analysis_support import curve, make_experiment, run

from experiments.observers import (CONNECT_TIMEOUT_S, FINAL_WAIT_S, SELECTION_TIMEOUT_S, SOCKET_TIMEOUT_S,
                                   MongoCopyObserver, mongo_copy, mongo_copy_of)
from tests.conftest import asae_cli

mongomock = pytest.importorskip("mongomock")
import mongomock.gridfs  # noqa: E402

mongomock.gridfs.enable_gridfs_integration()  # run sources go to GridFS, as with a real server

# A tiny, fast training run (2-agent simple spread, numpy backend): ~50 env steps an iteration.
TINY = {"algo": "coma", "n_envs": 2, "batch_size": 2, "test_episodes": 2, "test_interval": 200,
        "log_interval": 50, "checkpoint_interval": 100, "env": {"name": "mpe_spread", "n_agents": 2}}
TINY_ARGS = ["algo=coma", "n_envs=2", "batch_size=2", "test_episodes=2", "test_interval=200", "log_interval=50",
             "checkpoint_interval=100", "env.n_agents=2"]
MOCK_URL = "mongodb://localhost:27017/asae"  # served by mongomock inside `mongomock_server()`


class FaultyServer:
    """A real TCP listener on 127.0.0.1 where MongoDB should be: ``blackhole`` accepts connections and
    never answers; ``closing`` closes every connection shortly after accepting it."""

    def __init__(self, mode: str, close_after_s: float = 0.2):
        self.mode, self.close_after_s = mode, close_after_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"mongodb://127.0.0.1:{self.port}/asae"
        self.conns: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            if self.mode == "closing":
                threading.Timer(self.close_after_s, self._hang_up, [conn]).start()

    @staticmethod
    def _hang_up(conn: socket.socket):
        try:
            conn.settimeout(0.1)
            conn.recv(1 << 16)  # what the client sent, so that closing is a clean end of stream, not a reset
        except OSError:  # nothing sent in time, or the server is closed already
            pass
        conn.close()

    def close(self):
        self.stopped.set()
        self.thread.join()
        for conn in self.conns + [self.sock]:
            conn.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"mongodb://127.0.0.1:{s.getsockname()[1]}/asae"  # nothing listens once it is closed


@pytest.fixture(params=["closed", "blackhole", "closing"])
def fault(request):
    """(kind, url, the reason a user is shown)."""
    if request.param == "closed":
        yield request.param, closed_port_url(), "Connection refused"
        return
    server = FaultyServer(request.param)
    yield request.param, server.url, {"blackhole": "timed out", "closing": "connection closed"}[request.param]
    server.close()


def mongomock_server():
    """pymongo.MongoClient gives mongomock for localhost:27017 and real pymongo clients for the rest."""
    return mongomock.patch(servers=(("localhost", 27017),), on_new="pymongo")


def fault_database(url: str):
    """A real pymongo database handle on a faulty socket, with the timeouts the suite uses."""
    import pymongo

    return pymongo.MongoClient(url, serverSelectionTimeoutMS=int(SELECTION_TIMEOUT_S * 1000),
                               connectTimeoutMS=int(CONNECT_TIMEOUT_S * 1000),
                               socketTimeoutMS=int(SOCKET_TIMEOUT_S * 1000))["asae"]


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout_s} s")


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(asae_cli() + list(args), cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and "WARNING" not in line]


# ----------------------------------------------------------------------------- unreachable at start

def test_the_start_probe_gives_up_within_seconds(fault):
    kind, url, reason = fault
    start = time.monotonic()
    observer = mongo_copy(url)
    assert time.monotonic() - start < SELECTION_TIMEOUT_S + 1.5
    record = observer.record()
    assert observer.database is None and record["copy"] == "missing" and reason in record["error"], record


def test_unreachable_database_the_run_trains_with_files_and_sync_copies_it_later(workdir):
    server = FaultyServer("blackhole")
    try:
        proc = cli("train", "-F", "runs", "-m", server.url, "with", *TINY_ARGS, "t_max=400", cwd=workdir)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    run_dir = workdir / "runs" / "1"
    sync = f"asae sync-mongo --url {server.url} {run_dir.resolve()}"
    said = [line for line in proc.stderr.splitlines() if "MongoDB" in line]
    assert said == [
        f"[asae] MongoDB at {server.url} is unreachable (timed out): training with files only; "
        f"to copy this run in later: {sync}",
        f"[asae] MongoDB at {server.url} has no copy of this run (timed out); the run's files have "
        f"it all: {sync}"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    assert json.loads((run_dir / "info.json").read_text())["mongo"] == {
        "url": server.url, "copy": "missing", "error": "timed out", "sync": sync}

    from analysis.mongo import sync_runs

    db = mongomock.MongoClient()["asae"]
    result = sync_runs(run_dir, db)
    assert (result.inserted, result.updated) == (1, 0)
    doc = db["runs"].find_one()
    assert doc["status"] == "COMPLETED" and "mongo" not in doc["info"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name, series in metrics.items():
        assert db["metrics"].find_one({"run_id": doc["_id"], "name": name})["steps"] == series["steps"]


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_required_database_that_is_down_stops_before_training(workdir, how):
    url = closed_port_url()
    args = ["-m", url, "--mongo-required"] if how == "flag" else []
    env = {"ASAE_MONGO_URL": url, "ASAE_MONGO_REQUIRED": "1"} if how == "environment" else {}
    proc = cli("train", "-F", "runs", *args, "with", *TINY_ARGS, "t_max=400", cwd=workdir, env=env)
    assert proc.returncode == 1
    assert stderr_lines(proc.stderr) == [
        f"asae train: MongoDB at {url} is unreachable ([Errno 111] Connection refused); not training, because the "
        "database is required (--mongo-required or ASAE_MONGO_REQUIRED)"]
    assert not (workdir / "runs").exists() or not any((workdir / "runs").iterdir())


@pytest.mark.parametrize("sig, kind", [(signal.SIGTERM, "blackhole"), (signal.SIGINT, "closing")])
def test_signals_checkpoint_and_exit_within_seconds_while_the_database_is_unreachable(workdir, sig, kind):
    server = FaultyServer(kind)
    lines: list[str] = []
    proc = subprocess.Popen(asae_cli() + ["train", "-F", "runs", "-m", server.url, "with", *TINY_ARGS,
                                          "t_max=1000000"], cwd=workdir, stderr=subprocess.PIPE, text=True)
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("[asae] t_env" in line for line in lines), 120, "training progress")
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
        server.close()
    reader.join()
    assert took < 10, f"{took:.1f} s from {sig.name} to exit"
    assert proc.returncode == 2 and "Traceback" not in "".join(lines)
    run_dir = workdir / "runs" / "1"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "INTERRUPTED"
    assert (run_dir / "checkpoint.pt").is_file()
    assert json.loads((run_dir / "info.json").read_text())["mongo"]["copy"] == "missing"


# ----------------------------------------------------------------------------- lost during the run

def test_a_database_lost_midway_costs_training_nothing_and_gets_everything_once_it_is_back(tmp_path, capsys):
    from sacred.observers import FileStorageObserver

    server = FaultyServer("blackhole")
    lost = fault_database(server.url)
    db = mongomock.MongoClient()["asae"]
    observer = MongoCopyObserver(MOCK_URL, db, max_unsent_points=10)
    files = FileStorageObserver(str(tmp_path / "runs"))
    beats: list[float] = []

    def during(sacred_run):
        wait_for(lambda: db["metrics"].count_documents({}) == 1, 5, "the first points in the database")
        observer.database = lost  # the database stops answering
        for step in range(5, 25):  # 20 more points: 10 fit in what is kept, 10 do not
            sacred_run.log_scalar("return_mean", float(step), step * 1000)
        start = time.monotonic()
        sacred_run._emit_heartbeat()
        beats.append(time.monotonic() - start)
        wait_for(lambda: "error" in observer.record(), SELECTION_TIMEOUT_S + 3, "the failed write")
        record = observer.record()
        assert record["copy"] == "live" and record["unsent_points"] == 10 and record["dropped_points"] == 10
        observer.database = db  # it answers again
        sacred_run._emit_heartbeat()
        wait_for(lambda: "unsent_points" not in observer.record(), 5, "the kept points to be written")

    try:
        sacred_run = run(make_experiment(), [files, observer], during=during, run_key="lost",
                         metrics={"return_mean": curve(1.0)})
    finally:
        server.close()
    assert beats[0] < 0.5, f"a heartbeat waited {beats[0]:.1f} s for the database"
    said = [line for line in capsys.readouterr().err.splitlines() if "MongoDB" in line]
    assert said[0] == (f"[asae] MongoDB at {MOCK_URL} has 10 metric points waiting, as many as are kept; newer ones "
                       "go to the run's files only (`asae sync-mongo` copies them later)")
    assert said[1] == (f"[asae] MongoDB at {MOCK_URL} stopped answering (timed out): training goes on; "
                       "what is not written yet is kept (up to 10 metric points) and retried every 5 s")
    assert said[2] == f"[asae] MongoDB at {MOCK_URL} answers again: what was kept meanwhile is written"
    assert sacred_run.status == "COMPLETED" and observer.record()["copy"] == "incomplete"
    # Every point kept was written once, in order; the 10 that did not fit are missing, and sync adds them.
    steps = db["metrics"].find_one({"name": "return_mean"})["steps"]
    assert steps == [k * 1000 for k in list(range(5)) + list(range(5, 15))]
    assert db["runs"].find_one()["status"] == "COMPLETED"

    from analysis.mongo import sync_runs

    result = sync_runs(tmp_path / "runs", db)
    assert (result.inserted, result.updated) == (0, 1) and db["runs"].count_documents({}) == 1
    assert db["metrics"].find_one({"name": "return_mean"})["steps"] == [k * 1000 for k in range(25)]


def test_a_write_whose_reply_was_lost_is_not_stored_twice(tmp_path, monkeypatch):
    """A database that stores a write and then drops the connection before replying: the retry must not
    add the points again. Standing in for that server: mongomock, with the first reply of each metrics
    update replaced by the error pymongo raises for a dropped connection."""
    import pymongo.errors
    from sacred.observers import FileStorageObserver

    db = mongomock.MongoClient()["asae"]
    metrics, answered = db["metrics"], set()
    store = metrics.update_one

    def update_then_lose_the_reply(query, *args, **kwargs):
        result = store(query, *args, **kwargs)
        if str(query) not in answered:
            answered.add(str(query))
            raise pymongo.errors.AutoReconnect("connection closed")
        return result

    monkeypatch.setattr(metrics, "update_one", update_then_lose_the_reply)
    observer = MongoCopyObserver(MOCK_URL, db)

    def during(sacred_run):
        sacred_run.log_scalar("return_mean", 9.0, 5000)
        sacred_run._emit_heartbeat()

    import experiments.observers as observers

    monkeypatch.setattr(observers, "RETRY_INTERVAL_S", 0.1)  # each first reply is lost: retry at once
    run(make_experiment(), [FileStorageObserver(str(tmp_path)), observer], during=during, run_key="lost-reply",
        metrics={"return_mean": curve(1.0), "test_return_mean": curve(2.0)})
    assert len(answered) == 3  # three batches (two metrics, then one more point): each reply lost once
    assert observer.record()["copy"] == "complete"
    assert db["metrics"].find_one({"name": "return_mean"})["steps"] == [0, 1000, 2000, 3000, 4000, 5000]
    assert db["metrics"].find_one({"name": "test_return_mean"})["steps"] == [0, 1000, 2000, 3000, 4000]


def _train_in_thread(stop: threading.Event, results: Path, **kwargs):
    from experiments import experiment
    from experiments.api import train

    before = experiment.ex.current_run
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = train({**TINY, "t_max": 1_000_000}, results_dir=results, stop_event=stop, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - looked at by the test
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    sacred_run = wait_for(lambda: experiment.ex.current_run is not before and experiment.ex.current_run, 60, "the run")
    return thread, outcome, sacred_run


@pytest.mark.parametrize("kind", ["blackhole", "closing"])
def test_stopping_a_run_whose_database_went_away_ends_within_seconds_and_sync_completes_it(workdir, capsys, kind):
    """What SIGTERM and Ctrl-C do (their handler sets the stop event; the CLI test above checks that part)."""
    from analysis.mongo import sync_runs

    server = FaultyServer(kind)
    lost = fault_database(server.url)
    stop = threading.Event()
    with mongomock_server():
        thread, outcome, sacred_run = _train_in_thread(stop, workdir / "runs", mongo_url=MOCK_URL)
        observer = wait_for(lambda: mongo_copy_of(sacred_run), 10, "the MongoDB observer")
        wait_for(lambda: observer.record().get("id"), 30, "the run in the database")
        observer.database = lost
        time.sleep(1)  # a few iterations with the database gone
        sent = time.monotonic()
        stop.set()
        thread.join(timeout=60)
        took = time.monotonic() - sent
        server.close()
        assert not thread.is_alive() and "error" not in outcome, outcome
        assert took < FINAL_WAIT_S + 5, f"{took:.1f} s from the stop to the end of the run"
        result = outcome["result"]
        assert result.status == "INTERRUPTED" and (result.run_dir / "checkpoint.pt").is_file()
        record = json.loads((result.run_dir / "info.json").read_text())["mongo"]
        sync = f"asae sync-mongo --url {MOCK_URL} {result.run_dir.resolve()}"
        assert record["copy"] == "incomplete" and record["id"] == 1 and record["sync"] == sync
        said = [line for line in capsys.readouterr().err.splitlines() if "incomplete copy" in line]
        assert len(said) == 1 and "its last status (INTERRUPTED) unwritten" in said[0] and said[0].endswith(sync)

        import pymongo

        db = pymongo.MongoClient(MOCK_URL)["asae"]
        assert db["runs"].find_one({"_id": 1})["status"] == "RUNNING"  # what the database got
        sync_runs(result.run_dir, db)
        assert db["runs"].count_documents({}) == 1 and db["runs"].find_one({"_id": 1})["status"] == "INTERRUPTED"
        metrics = json.loads((result.run_dir / "metrics.json").read_text())
        for name, series in metrics.items():
            assert db["metrics"].find_one({"run_id": 1, "name": name})["steps"] == series["steps"], name


def test_usr2_preemption_checkpoints_and_requeues_within_seconds_while_the_database_drops_connections(
        workdir, monkeypatch):
    """SLURM's USR2 makes submitit call the job's checkpoint() (from its signal handler, in the job's main
    thread) and then requeue the DelayedSubmission it returns; here the test calls it, as that handler would."""
    import submitit

    from experiments import experiment
    from experiments.api import resolve_config
    from slurm.jobs import RunJob

    server = FaultyServer("closing")
    lost = fault_database(server.url)
    monkeypatch.setenv("ASAE_MONGO_URL", MOCK_URL)
    config = {**TINY, "t_max": 1_000_000}
    job = RunJob(config, (), str(workdir / "runs"), resolve_config(config)["run_key"])
    before = experiment.ex.current_run
    errors: list[BaseException] = []

    def call():
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - the interrupted run ends the job's call with an error
            errors.append(exc)

    with mongomock_server():
        thread = threading.Thread(target=call)
        thread.start()
        sacred_run = wait_for(lambda: experiment.ex.current_run is not before and experiment.ex.current_run, 60, "run")
        observer = wait_for(lambda: mongo_copy_of(sacred_run), 10, "the MongoDB observer")
        wait_for(lambda: observer.record().get("id"), 30, "the run in the database")
        observer.database = lost
        time.sleep(1)
        sent = time.monotonic()
        requeue = job.checkpoint()
        took = time.monotonic() - sent
        thread.join(timeout=30)
    server.close()
    assert took < FINAL_WAIT_S + 5, f"{took:.1f} s from USR2 to requeue"
    assert isinstance(requeue, submitit.helpers.DelayedSubmission)
    assert "ended INTERRUPTED" in str(errors[0])
    run_dir = workdir / "runs" / "1"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "INTERRUPTED"
    assert (run_dir / "checkpoint.pt").is_file()
    assert json.loads((run_dir / "info.json").read_text())["mongo"]["copy"] == "incomplete"


# ----------------------------------------------------------------------------- what Omniboard reads

def test_a_live_run_carries_what_omniboard_shows_and_a_later_sync_writes_the_same(workdir):
    import pymongo

    from analysis.loaders import load_runs
    from analysis.mongo import sync_runs
    from experiments.api import train

    with mongomock_server():
        result = train({**TINY, "algo": "asae", "learner": {"m": 5, "clip": 0.2}, "t_max": 400, "seed": 3},
                       results_dir="runs", mongo_url=MOCK_URL)
        live_db = pymongo.MongoClient(MOCK_URL)["asae"]
        live = live_db["runs"].find_one()
        assert json.loads((result.run_dir / "info.json").read_text())["mongo"] == {
            "url": MOCK_URL, "copy": "complete", "id": live["_id"]}
        # What Omniboard lists and plots.
        assert live["status"] == "COMPLETED" and live["heartbeat"] and live["stop_time"] and live["start_time"]
        config = live["config"]
        assert (config["algo"], config["env"]["name"], config["env"]["n_agents"], config["seed"]) == ("asae", "mpe_spread", 2, 3)
        assert (config["learner"]["m"], config["learner"]["clip"]) == (5, 0.2)
        metric_docs = {m["name"]: m for m in live_db["metrics"].find({"run_id": live["_id"]})}
        files = json.loads((result.run_dir / "metrics.json").read_text())
        assert set(metric_docs) == set(files) and {e["name"] for e in live["info"]["metrics"]} == set(files)
        for name, series in files.items():
            assert metric_docs[name]["steps"] == series["steps"] and metric_docs[name]["values"] == series["values"]
        for entry in live["info"]["metrics"]:
            assert str(metric_docs[entry["name"]]["_id"]) == entry["id"]

        # The same run copied later by `asae sync-mongo` into another database: the same documents.
        synced_db = mongomock.MongoClient()["other"]
        sync_runs(workdir / "runs", synced_db)
        synced = synced_db["runs"].find_one()
        for key in set(live) | set(synced):
            if key == "experiment":
                assert {**live[key], "sources": None} == {**synced[key], "sources": None}
                assert [n for n, _ in live[key]["sources"]] == [n for n, _ in synced[key]["sources"]]
            elif key == "info":
                strip = lambda info: {k: v for k, v in info.items() if k not in ("metrics", "source")}  # noqa: E731
                assert strip(live[key]) == strip(synced[key])
                assert live[key]["source"]["key"] == synced[key]["source"]["key"]
            else:
                assert live.get(key) == synced.get(key), key
        columns = ["algo", "env", "map", "N", "seed", "m", "clip", "status", "metric", "step", "value"]
        frames = [load_runs(None, client=db.client, db_name=db.name)[columns].astype(str)
                  .sort_values(["metric", "step"]).reset_index(drop=True) for db in (live_db, synced_db)]
        assert frames[0].equals(frames[1])
        assert (frames[0][["algo", "env", "N", "seed", "m", "clip"]].iloc[0] == ["asae", "mpe_spread", "2", "3", "5", "0.2"]).all()

        # Syncing a run the database already holds updates it in place.
        again = sync_runs(workdir / "runs", live_db)
        assert (again.inserted, again.updated) == (0, 1) and live_db["runs"].count_documents({}) == 1
        assert live_db["metrics"].count_documents({}) == len(files)
