"""Loaders on runs written by real Sacred observers: FileStorageObserver in a temp dir, and MongoObserver /
QueuedMongoObserver against mongomock (no MongoDB server runs on these machines, so the database is
mongomock's in-memory one; the documents are the ones Sacred's observers write)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_analysis_support import curve, make_experiment, run

from analysis.loaders import load_runs, runs_table

mongomock = pytest.importorskip("mongomock")


@pytest.fixture
def ex():
    return make_experiment()


def file_observer(path: Path):
    from sacred.observers import FileStorageObserver

    return FileStorageObserver(str(path))


def mongo_db():
    import gridfs
    import mongomock.gridfs

    mongomock.gridfs.enable_gridfs_integration()
    client = mongomock.MongoClient()
    return client, client["asae"], gridfs


def mongo_observer(db, gridfs):
    from sacred.observers import MongoObserver

    return MongoObserver.create_from(db["runs"], gridfs.GridFS(db), metrics_collection=db["metrics"])


def value_at(frame, metric, step, **where):
    rows = frame[(frame["metric"] == metric) & (frame["step"] == step)]
    for col, val in where.items():
        rows = rows[rows[col] == val]
    assert len(rows) == 1, rows
    return float(rows["value"].iloc[0])


def test_file_runs_become_a_tidy_frame(tmp_path, ex):
    obs = file_observer(tmp_path / "results" / "runs")
    run(ex, [obs], seed=0, run_key="a", learner={"m": 10, "clip": 0.1},
        metrics={"test_battle_won_mean": curve(1.0), "return_mean": curve(2.0)})
    run(ex, [obs], seed=1, run_key="b", algo="coma", metrics={"test_battle_won_mean": curve(0.5)})
    frame = load_runs(tmp_path / "results")
    assert frame.attrs["skipped"] == []
    assert set(frame["run_id"]) == {"file:runs/1", "file:runs/2"}
    assert value_at(frame, "test_battle_won_mean", 4000, algo="asae") == 1.0
    assert value_at(frame, "test_battle_won_mean", 2000, algo="coma") == 0.25
    assert value_at(frame, "return_mean", 1000) == 0.5
    runs = runs_table(frame).set_index("algo")
    assert runs.loc["asae", "map"] == "3m" and runs.loc["asae", "env"] == "smax"
    assert runs.loc["asae", "m"] == 10 and runs.loc["asae", "clip"] == pytest.approx(0.1)
    assert runs.loc["asae", "status"] == "COMPLETED" and runs.loc["asae", "run_key"] == "a"
    assert runs.loc["coma", "seed"] == 1 and runs.loc["coma", "m"] is pd.NA
    assert runs.loc["asae", "n_envs"] == 4 and runs.loc["asae", "learner.m"] == 10  # config columns
    assert set(frame["team"]) == {"team"} and set(frame["team_algo"]) == {"asae", "coma"}
    assert frame["step"].dtype == "int64" and frame["value"].dtype == "float64"


def test_multi_team_metrics_split_into_team_and_metric(tmp_path, ex):
    obs = file_observer(tmp_path / "runs")
    metrics = {"predator/test_return_mean": curve(4.0), "prey/test_return_mean": curve(-4.0),
               "predator/test_capture_rate_mean": curve(0.6), "env_steps_per_sec": [[0, 100.0]]}
    env = {"name": "predator_prey", "n_predators": 3, "n_prey": 3}
    run(ex, [obs], run_key="vs", env=env, teams={"predator": "asae", "prey": "coma"}, metrics=metrics)
    run(ex, [obs], run_key="rnd", env=env, algo="coma", metrics=metrics)  # no teams: prey act randomly
    frame = load_runs(tmp_path)
    vs = frame[frame["run_key"] == "vs"]
    assert value_at(vs, "test_return_mean", 4000, team="prey") == -4.0
    assert value_at(vs, "test_capture_rate_mean", 4000, team="predator") == 0.6
    assert value_at(vs, "env_steps_per_sec", 0, team="") == 100.0  # run-wide metric: no team
    algo_of = vs.drop_duplicates("team").set_index("team")["team_algo"].astype(str).to_dict()
    assert algo_of == {"predator": "asae", "prey": "coma", "": "asae"}
    rnd = frame[frame["run_key"] == "rnd"].drop_duplicates("team").set_index("team")["team_algo"].astype(str)
    assert rnd.to_dict() == {"predator": "coma", "prey": "random", "": "coma"}
    assert set(frame["N"].dropna()) == {3}


def test_broken_and_running_runs_are_reported_and_skipped(tmp_path, ex):
    root = tmp_path / "results"
    obs = file_observer(root / "runs")
    good = {"test_battle_won_mean": curve(1.0)}
    run(ex, [obs], run_key="good", metrics=good)
    truncated = Path(run(ex, [obs], run_key="trunc", metrics=good).observers[0].dir)
    text = (truncated / "metrics.json").read_text()
    (truncated / "metrics.json").write_text(text[: len(text) // 2])
    no_config = Path(run(ex, [obs], run_key="noconf", metrics=good).observers[0].dir)
    (no_config / "config.json").unlink()
    bad_run = Path(run(ex, [obs], run_key="badrun", metrics=good).observers[0].dir)
    (bad_run / "run.json").write_text('{"status": "COMPL')
    # A run still RUNNING, seen by copying its directory from inside the run (after a heartbeat),
    # and one that has logged nothing yet.
    snapshots = root / "elsewhere"

    def copy_running(sacred_run):
        src = Path(sacred_run.observers[0].dir)
        shutil.copytree(src, snapshots / f"running-{src.name}")

    run(ex, [obs], during=copy_running, run_key="live", seed=5, metrics={"test_battle_won_mean": curve(0.5, steps=3)})
    run(ex, [obs], during=copy_running, run_key="empty", metrics={})
    frame = load_runs(root)
    skipped = dict((Path(p).name, why) for p, why in frame.attrs["skipped"])
    assert "metrics.json is truncated" in skipped[truncated.name]
    assert "config.json is missing" in skipped[no_config.name]
    assert "run.json is truncated" in skipped[bad_run.name]
    empty = [why for p, why in frame.attrs["skipped"] if "running-" in p]
    assert empty == ["no metrics logged (status RUNNING)"]
    lost = no_config.parent / "lost"  # a run directory whose metrics.json never got written
    shutil.copytree(no_config.parent / "1", lost)
    (lost / "metrics.json").unlink()
    assert dict(load_runs(root).attrs["skipped"])[str(lost)] == "metrics.json is missing (status COMPLETED)"
    # The snapshot shares its run_key with the finished run (which wins); alone, it loads as RUNNING.
    live = load_runs(snapshots)
    assert list(runs_table(live)["status"]) == ["RUNNING"] and list(runs_table(live)["seed"]) == [5]
    assert value_at(live, "test_battle_won_mean", 2000) == 0.5
    runs = runs_table(frame)
    assert set(runs["run_key"]) == {"good", "live"}  # "empty" logged nothing: skipped


def test_runs_are_found_recursively_and_sources_ignored(tmp_path, ex):
    run(ex, [file_observer(tmp_path / "a" / "runs")], run_key="x", metrics={"return_mean": curve(1.0)})
    run(ex, [file_observer(tmp_path / "b" / "c" / "d")], run_key="y", metrics={"return_mean": curve(1.0)})
    assert (tmp_path / "a" / "runs" / "_sources").is_dir()
    frame = load_runs(tmp_path)
    assert set(frame["run_id"]) == {"file:a/runs/1", "file:b/c/d/1"}
    assert frame.attrs["skipped"] == []


def test_fidelity_comparisons_are_read_only_on_purpose(tmp_path, ex):
    """results/fidelity/ holds other codebases' runs (asae compare-epymarl): not searched from above it."""
    run(ex, [file_observer(tmp_path / "runs")], run_key="x", metrics={"return_mean": curve(1.0)})
    run(ex, [file_observer(tmp_path / "fidelity" / "spread" / "ours")], run_key="y", metrics={"return_mean": curve(1.0)})
    assert set(load_runs(tmp_path)["run_key"]) == {"x"}
    assert set(load_runs(tmp_path / "fidelity" / "spread")["run_key"]) == {"y"}


def test_resumed_runs_keep_the_latest_completed_one(tmp_path, ex):
    obs = file_observer(tmp_path)
    with pytest.raises(RuntimeError):  # first attempt dies at 2000 steps
        run(ex, [obs], run_key="r", fail=True, metrics={"test_return_mean": curve(2.0)[:3]})
    run(ex, [obs], run_key="r", metrics={"test_return_mean": curve(4.0)})  # resumed: repeats the history
    with pytest.raises(RuntimeError):  # a later re-run that failed again must not win
        run(ex, [obs], run_key="r", fail=True, metrics={"test_return_mean": [[0, -9.0]]})
    with pytest.raises(RuntimeError):
        run(ex, [obs], run_key="only-failed", fail=True, metrics={"test_return_mean": [[0, 1.0]]})
    with pytest.raises(RuntimeError):
        run(ex, [obs], run_key="only-failed", fail=True, metrics={"test_return_mean": [[0, 2.0]]})
    frame = load_runs(tmp_path)
    runs = runs_table(frame).set_index("run_key")
    assert runs.loc["r", "sacred_id"] == "2" and runs.loc["r", "status"] == "COMPLETED"
    assert runs.loc["only-failed", "sacred_id"] == "5"
    assert value_at(frame, "test_return_mean", 4000, run_key="r") == 4.0
    assert load_runs(tmp_path, latest_only=False)["run_id"].nunique() == 5


def test_mongo_observer_runs_load_like_file_runs(tmp_path, ex):
    client, db, gridfs = mongo_db()
    observers = [file_observer(tmp_path), mongo_observer(db, gridfs)]
    run(ex, observers, seed=0, run_key="a", metrics={"test_battle_won_mean": curve(1.0)})
    run(ex, observers, seed=1, run_key="b", teams={"predator": "asae", "prey": "coma"},
        env={"name": "predator_prey", "n_predators": 2}, metrics={"predator/test_return_mean": curve(3.0)})
    from_mongo = load_runs("mongodb://localhost:27017/asae", client=client)
    from_files = load_runs(tmp_path)
    assert from_mongo.attrs["skipped"] == []
    assert set(from_mongo["run_id"]) == {"mongo:asae/1", "mongo:asae/2"}
    cols = ["run_key", "algo", "team_algo", "env", "map", "N", "seed", "team", "metric", "step", "value", "status"]
    key = ["run_key", "team", "metric", "step"]
    a = from_mongo[cols].astype(str).sort_values(key).reset_index(drop=True)
    b = from_files[cols].astype(str).sort_values(key).reset_index(drop=True)
    assert a.equals(b)


def test_mongo_running_run_is_readable_while_it_runs(ex):
    client, db, gridfs = mongo_db()
    seen = {}

    def look(_sacred_run):
        seen["frame"] = load_runs(None, client=client)

    run(ex, [mongo_observer(db, gridfs)], during=look, run_key="live", metrics={"test_return_mean": curve(1.0)})
    frame = seen["frame"]
    assert list(runs_table(frame)["status"]) == ["RUNNING"]
    assert value_at(frame, "test_return_mean", 4000) == 1.0
    assert list(runs_table(load_runs(None, client=client))["status"]) == ["COMPLETED"]


def test_queued_mongo_observer_runs_are_readable(ex):
    """The suite's `-m URL` observer (QueuedMongoObserver); mongomock stands in for the server."""
    import pymongo
    from sacred.observers import QueuedMongoObserver

    with mongomock.patch(servers=(("localhost", 27017),)):
        obs = QueuedMongoObserver(url="mongodb://localhost:27017", db_name="asae", interval=0.05)
        run(ex, [obs], run_key="q", metrics={"test_return_mean": curve(2.0), "predator/kl": [[5, 0.01]]})
        frame = load_runs(None, client=pymongo.MongoClient("mongodb://localhost:27017"), db_name="asae")
    runs = runs_table(frame)
    assert list(runs["status"]) == ["COMPLETED"] and list(runs["run_key"]) == ["q"]
    assert value_at(frame, "test_return_mean", 2000) == 1.0


def test_mongo_run_without_metrics_is_skipped(ex):
    client, db, gridfs = mongo_db()
    run(ex, [mongo_observer(db, gridfs)], run_key="nothing", metrics={})
    db["runs"].insert_one({"_id": 99, "status": "COMPLETED"})  # no config at all
    frame = load_runs(None, client=client)
    assert frame.empty
    reasons = dict(frame.attrs["skipped"])
    assert reasons["mongo:asae/1"] == "no metrics logged (status COMPLETED)"
    assert reasons["mongo:asae/99"] == "the run has no config"


def test_info_json_run_key_is_used_when_config_has_none(tmp_path, ex):
    r = run(ex, [file_observer(tmp_path)], metrics={"return_mean": curve(1.0)})
    run_dir = Path(r.observers[0].dir)
    (run_dir / "info.json").write_text(json.dumps({"run_key": "from-info"}))
    assert list(runs_table(load_runs(tmp_path))["run_key"]) == ["from-info"]


def test_files_no_run_can_be_read_from_are_skipped_with_one_reason_each(tmp_path, ex):
    root = tmp_path / "results"
    obs = file_observer(root / "runs")
    good = {"test_battle_won_mean": curve(1.0)}
    dirs = [Path(run(ex, [obs], run_key=f"r{i}", metrics=good).observers[0].dir) for i in range(7)]
    (dirs[1] / "run.json").write_bytes(b"\x00\xff\xfe")
    (dirs[2] / "metrics.json").write_bytes('{"return_mean": "caf\xe9"}'.encode("latin-1"))
    (dirs[3] / "config.json").write_text("")
    (dirs[4] / "metrics.json").write_text("{}")
    (dirs[5] / "metrics.json").unlink()
    (dirs[5] / "metrics.json").symlink_to("metrics.json")
    (dirs[6] / "info.json").write_bytes(b"\x00\xff")  # optional: the run loads without it
    (root / "runs" / "loop").symlink_to("..")
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    # Runs linked in from elsewhere are read, once however many links lead to them.
    run(ex, [file_observer(tmp_path / "scratch")], run_key="linked", metrics=good)
    (root / "again").symlink_to(tmp_path / "scratch")
    (root / "linked").symlink_to(tmp_path / "scratch")
    frame = load_runs(root)
    assert sorted(frame.attrs["skipped"]) == sorted([
        (str(dirs[1]), "run.json is binary, not JSON (a NUL byte at offset 0)"),
        (str(dirs[2]), "metrics.json is not UTF-8 text (byte 0xe9 at offset 20)"),
        (str(dirs[3]), "config.json is empty"),
        (str(dirs[4]), "no metrics logged (status COMPLETED)"),
        (str(dirs[5]), "metrics.json is unreadable (a symlink loop)"),
        (str(root / "runs" / "loop"), f"a symlink loop (leads back to {root})"),
        (str(root / "a"), "a symlink loop (it never reaches a file)"),
        (str(root / "b"), "a symlink loop (it never reaches a file)"),
        (str(root / "linked"), f"the same directory as {root / 'again'}, searched there"),
    ])
    assert set(runs_table(frame)["run_key"]) == {"r0", "r6", "linked"}


def test_running_runs_are_skipped_on_request_with_how_far_they_got(tmp_path, ex):
    snapshot = tmp_path / "snapshot"

    def copy_running(sacred_run):
        shutil.copytree(sacred_run.observers[0].dir, snapshot / "1")

    run(ex, [file_observer(tmp_path / "runs")], during=copy_running, run_key="live",
        metrics={"test_battle_won_mean": curve(0.5, steps=3)})
    assert list(runs_table(load_runs(snapshot))["status"]) == ["RUNNING"]  # kept by default (watching a sweep)
    frame = load_runs(snapshot, skip_running=True)
    assert frame.empty
    [(where, why)] = frame.attrs["skipped"]
    assert where == str(snapshot / "1")
    assert re.fullmatch(r"still RUNNING \(t_env 2000, last heartbeat \d+ s ago\): its numbers are not final yet", why)


def test_run_times_count_every_attempt_and_running_runs_until_their_heartbeat(tmp_path, ex):
    obs = file_observer(tmp_path)
    with pytest.raises(RuntimeError):
        run(ex, [obs], run_key="r", fail=True, tags=["preset:p"], metrics={"return_mean": curve(1.0)})
    run(ex, [obs], run_key="r", tags=["preset:p"], torch_threads=2, metrics={"return_mean": curve(1.0)})
    run(ex, [obs], run_key="s", metrics={"return_mean": curve(1.0)})
    times = {"1": ("2026-01-01T10:00:00", "2026-01-01T11:00:00", None),  # failed after an hour
             "2": ("2026-01-01T12:00:00", "2026-01-01T12:30:00", None),  # the resume: 30 min
             "3": ("2026-01-01T12:00:00", None, "2026-01-01T12:06:00")}  # killed: its last heartbeat
    for sacred_id, (start, stop, beat) in times.items():
        path = tmp_path / sacred_id / "run.json"
        record = json.loads(path.read_text())
        record.update(start_time=start, stop_time=stop, heartbeat=beat, status="RUNNING" if beat else record["status"])
        path.write_text(json.dumps(record))
    by_id = {t["run_id"]: t for t in load_runs(tmp_path).attrs["run_times"]}
    assert {k: (t["run_key"], t["preset"], t["status"], t["seconds"], t["threads"]) for k, t in by_id.items()} == {
        "file:1": ("r", "p", "FAILED", 3600.0, 1), "file:2": ("r", "p", "COMPLETED", 1800.0, 2),
        "file:3": ("s", None, "RUNNING", 360.0, 1)}
