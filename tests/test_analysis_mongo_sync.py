"""`asae sync-mongo`: file runs -> MongoDB in Sacred's schema, idempotently. No MongoDB server runs on
these machines: the database is mongomock's (in memory), patched in where pymongo would connect."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from test_analysis_support import curve, make_experiment, run

from analysis.loaders import load_runs
from analysis.mongo import sync_runs

mongomock = pytest.importorskip("mongomock")


@pytest.fixture
def file_runs(tmp_path):
    from sacred.observers import FileStorageObserver

    ex = make_experiment()
    obs = FileStorageObserver(str(tmp_path / "results" / "runs"))
    run(ex, [obs], seed=0, run_key="a", metrics={"test_battle_won_mean": curve(1.0), "return_mean": curve(2.0)})
    run(ex, [obs], seed=1, run_key="b", teams={"predator": "asae", "prey": "coma"},
        env={"name": "predator_prey", "n_predators": 2},
        metrics={"predator/test_return_mean": curve(3.0), "prey/test_return_mean": curve(-3.0)})
    with pytest.raises(RuntimeError):
        run(ex, [obs], seed=2, run_key="c", fail=True, metrics={"test_battle_won_mean": curve(0.5, steps=2)})
    return tmp_path / "results"


@pytest.fixture
def db():
    import mongomock.gridfs

    mongomock.gridfs.enable_gridfs_integration()
    return mongomock.MongoClient()["asae"]


def snapshot(db) -> tuple[list, list]:
    runs = sorted(db["runs"].find({}), key=lambda d: d["_id"])
    metrics = sorted(db["metrics"].find({}), key=lambda d: (d["run_id"], d["name"]))
    return runs, metrics


def test_sync_writes_sacred_schema(file_runs, db):
    result = sync_runs(file_runs, db)
    assert (result.inserted, result.updated, result.metrics) == (3, 0, 5)
    runs, metrics = snapshot(db)
    assert [r["_id"] for r in runs] == [1, 2, 3]
    first = runs[0]
    for key in ("experiment", "format", "command", "host", "start_time", "heartbeat", "stop_time", "config",
                "meta", "status", "resources", "artifacts", "captured_out", "info", "result"):
        assert key in first, key
    assert isinstance(first["start_time"], dt.datetime) and isinstance(first["heartbeat"], dt.datetime)
    assert first["status"] == "COMPLETED" and runs[2]["status"] == "FAILED" and "fail_trace" in runs[2]
    assert first["config"]["run_key"] == "a" and first["info"]["source"]["kind"] == "file"
    # info.metrics links each metric document by id, as Sacred's MongoObserver does (Omniboard follows it).
    by_id = {str(m["_id"]): m for m in metrics}
    for r in runs:
        for entry in r["info"]["metrics"]:
            m = by_id[entry["id"]]
            assert m["run_id"] == r["_id"] and m["name"] == entry["name"]
    won = next(m for m in metrics if m["run_id"] == 1 and m["name"] == "test_battle_won_mean")
    assert won["steps"] == [0, 1000, 2000, 3000, 4000] and won["values"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(isinstance(t, dt.datetime) for t in won["timestamps"])
    # Sources are in GridFS, referenced as [name, file id].
    name, file_id = first["experiment"]["sources"][0]
    import gridfs

    assert name.endswith("test_analysis_support.py") and gridfs.GridFS(db).get(file_id).read()


def test_sync_twice_creates_no_duplicates(file_runs, db):
    sync_runs(file_runs, db)
    runs1, metrics1 = snapshot(db)
    n_files = db["fs.files"].count_documents({})
    result = sync_runs(file_runs, db)
    assert (result.inserted, result.updated) == (0, 3)
    runs2, metrics2 = snapshot(db)
    assert db["runs"].count_documents({}) == 3 and db["metrics"].count_documents({}) == 5
    assert [m["_id"] for m in metrics1] == [m["_id"] for m in metrics2]
    assert [(m["steps"], m["values"]) for m in metrics1] == [(m["steps"], m["values"]) for m in metrics2]
    assert [r["info"]["metrics"] for r in runs1] == [r["info"]["metrics"] for r in runs2]
    assert db["fs.files"].count_documents({}) == n_files


def test_a_run_that_progressed_is_updated_in_place(file_runs, db):
    sync_runs(file_runs, db)
    run_dir = file_runs / "runs" / "1"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["return_mean"]["steps"].append(5000)
    metrics["return_mean"]["values"].append(9.0)
    metrics["return_mean"]["timestamps"].append(dt.datetime.now().isoformat())
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    sync_runs(file_runs, db)
    doc = db["metrics"].find_one({"run_id": 1, "name": "return_mean"})
    assert doc["steps"][-1] == 5000 and doc["values"][-1] == 9.0 and len(doc["steps"]) == 6
    assert db["metrics"].count_documents({"run_id": 1}) == 2


def test_synced_runs_read_back_like_the_files_and_keep_observer_runs(file_runs, db):
    import gridfs
    from sacred.observers import MongoObserver

    # A run that a live MongoObserver already wrote keeps its id; synced runs come after it.
    observer = MongoObserver.create_from(db["runs"], gridfs.GridFS(db), metrics_collection=db["metrics"])
    run(make_experiment(), [observer], run_key="live", metrics={"return_mean": curve(1.0)})
    sync_runs(file_runs, db)
    assert sorted(d["_id"] for d in db["runs"].find({}, {"_id": 1})) == [1, 2, 3, 4]
    from_mongo = load_runs(None, client=db.client, db_name="asae")
    from_files = load_runs(file_runs)
    cols = ["run_key", "algo", "team_algo", "env", "N", "seed", "team", "metric", "step", "value", "status"]
    key = ["run_key", "team", "metric", "step"]
    mongo_part = from_mongo[from_mongo["run_key"] != "live"][cols].astype(str).sort_values(key).reset_index(drop=True)
    assert mongo_part.equals(from_files[cols].astype(str).sort_values(key).reset_index(drop=True))


def test_sync_mongo_command(file_runs, capsys, monkeypatch):
    from experiments.cli import main

    monkeypatch.delenv("ASAE_MONGO_URL", raising=False)
    with mongomock.patch(servers=(("localhost", 27017),)):
        url = "mongodb://localhost:27017/omni"
        assert main(["sync-mongo", "--url", url, str(file_runs)]) == 0
        assert "3 run(s) into MongoDB database 'omni': 3 new, 0 updated" in capsys.readouterr().out
        monkeypatch.setenv("ASAE_MONGO_URL", url)
        assert main(["sync-mongo", str(file_runs)]) == 0
        assert "0 new, 3 updated" in capsys.readouterr().out
        import pymongo

        assert pymongo.MongoClient(url)["omni"]["runs"].count_documents({}) == 3


def test_sync_mongo_needs_a_url_and_a_directory(tmp_path, capsys, monkeypatch):
    from experiments.cli import main

    monkeypatch.delenv("ASAE_MONGO_URL", raising=False)
    (tmp_path / "empty").mkdir()
    assert main(["sync-mongo", str(tmp_path / "empty")]) == 2
    assert main(["sync-mongo", "--url", "mongodb://localhost:27017/x", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["asae sync-mongo: no MongoDB URL; pass --url mongodb://host:27017/db or set ASAE_MONGO_URL",
                   f"asae sync-mongo: runs directory {str(tmp_path / 'missing')!r} does not exist"]


def test_sync_skips_broken_runs(file_runs, db):
    (file_runs / "runs" / "2" / "metrics.json").write_text('{"predator/test_return_mean": {"steps": [0, 1')
    result = sync_runs(file_runs, db)
    assert result.inserted == 2 and [Path(p).name for p, _ in result.skipped] == ["2"]
