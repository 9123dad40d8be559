"""Every run records the code that made it (experiments/provenance.py), in info.json and in its MongoDB
copy; runs made before that are recovered from git history by `asae provenance recover`.

The MongoDB server is mongomock's (no MongoDB server runs on these machines); everything else is real:
real runs, the real git checkout the tests run from, real git repositories built in temporary dirs.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from experiments import provenance
from tests.conftest import ROOT, asae_cli

TINY = {"algo": "coma", "n_envs": 2, "batch_size": 2, "test_episodes": 2, "test_interval": 200, "t_max": 200,
        "log_interval": 50, "checkpoint_interval": 100, "env": {"name": "mpe_spread", "n_agents": 2}}


def git(cwd: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})}).stdout.strip()


def test_a_run_records_the_checkout_commit_and_dirty_state_in_info_json_and_mongodb(workdir):
    mongomock = pytest.importorskip("mongomock")
    import mongomock.gridfs
    import pymongo
    import torch

    from experiments.api import train
    from experiments.config import run_key

    mongomock.gridfs.enable_gridfs_integration()
    url = "mongodb://localhost:27017/asae"
    with mongomock.patch(servers=(("localhost", 27017),), on_new="pymongo"):
        result = train(TINY, results_dir="runs", mongo_url=url)
        live = pymongo.MongoClient(url)["asae"]["runs"].find_one()
    assert result.status == "COMPLETED"
    record = json.loads((result.run_dir / "info.json").read_text())["provenance"]
    assert provenance.source_dir() == ROOT  # the editable install imports from this checkout
    assert record["source"] == "git"
    assert record["commit"] == git(ROOT, "rev-parse", "HEAD")
    dirty = bool(git(ROOT, "status", "--porcelain", "--untracked-files=no"))
    assert record["dirty"] is dirty
    if dirty:
        diff = subprocess.run(["git", "-C", str(ROOT), "diff", "HEAD"], capture_output=True, check=True).stdout
        assert record["diff_sha1"] == hashlib.sha1(diff).hexdigest()
    else:
        assert record["diff_sha1"] is None
    assert record["packages"]["torch"] == torch.__version__
    assert record["packages"]["sacred"] == "0.8.7" and record["packages"]["python"].startswith("3.")
    assert "note" not in record
    assert live["info"]["provenance"] == record  # the database copy carries the same record
    # Provenance is no part of the run's identity: the key is the config's, as before.
    config = json.loads((result.run_dir / "config.json").read_text())
    assert "provenance" not in config and config["run_key"] == result.run_key
    assert run_key({k: v for k, v in config.items() if k != "run_key"}) == result.run_key
    assert provenance.run_provenance(result.run_dir) == record


def test_code_outside_a_git_checkout_says_so(tmp_path):
    wheel_like = tmp_path / "site-packages"
    wheel_like.mkdir()
    record = provenance.collect(wheel_like)
    assert record["source"] == "no git checkout" and record["commit"] is None and record["dirty"] is None
    # a wheel in a virtual environment that lies inside some other git work tree is no checkout of the suite
    git(tmp_path, "init", "-q")
    assert provenance.collect(wheel_like)["source"] == "no git checkout"


def test_a_run_whose_code_is_outside_a_checkout_records_that(workdir, monkeypatch):
    from experiments.api import train

    elsewhere = workdir / "installed"
    elsewhere.mkdir()
    monkeypatch.setattr(provenance, "source_dir", lambda: elsewhere)
    result = train(TINY, results_dir="runs")
    record = json.loads((result.run_dir / "info.json").read_text())["provenance"]
    assert result.status == "COMPLETED" and record["source"] == "no git checkout" and record["commit"] is None


def test_without_git_on_the_path_the_record_says_why_and_nothing_fails(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    record = provenance.collect(ROOT)
    assert record["commit"] is None and record["note"].endswith("git is not installed")
    assert record["packages"]["numpy"]


# ----------------------------------------------------------------------------- recovering old runs

def _commit(repo: Path, files: dict[str, str], when: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    stamp = {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", when, env=stamp)
    return git(repo, "rev-parse", "HEAD")


def _run(runs: Path, name: str, start: str, sources: dict[str, str], experiment: str = "asae") -> Path:
    d = runs / name
    d.mkdir(parents=True)
    md5 = {n: hashlib.md5(t.encode()).hexdigest() for n, t in sources.items()}
    run = {"experiment": {"name": experiment, "base_dir": "/elsewhere/experiments",
                          "dependencies": ["asae-suite==0.1.0", "numpy==2.4.6", "sacred==0.8.7"],
                          "sources": [[n, f"_sources/{Path(n).stem}_{md5[n]}.py"] for n in sources]},
           "host": {"python_version": "3.11.7"}, "start_time": start, "status": "COMPLETED"}
    (d / "run.json").write_text(json.dumps(run))
    return d


def test_recover_finds_the_head_at_start_and_checks_the_sources_against_it(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    v1 = {"experiments/config.py": "A = 1\n", "experiments/experiment.py": "E = 1\n"}
    v2 = {"experiments/config.py": "A = 2\n", "experiments/experiment.py": "E = 1\n"}
    c1 = _commit(repo, v1, "2026-01-01T10:00:00+0000")
    c2 = _commit(repo, {"README": "x\n"}, "2026-01-01T12:00:00+0000")  # sources unchanged
    c3 = _commit(repo, v2, "2026-01-01T14:00:00+0000")
    names = lambda v: {k.split("/", 1)[1]: t for k, t in v.items()}  # noqa: E731  (base_dir is experiments/)
    runs = tmp_path / "results" / "runs"
    clean = _run(runs, "1", "2026-01-01T11:00:00.5", names(v1))  # HEAD c1, files c1's
    after_readme = _run(runs, "2", "2026-01-01T13:00:00", names(v1))  # HEAD c2, files the same as c1's and c2's
    ahead = _run(runs, "3", "2026-01-01T13:30:00", names(v2))  # HEAD c2, but the tree already held c3's config
    dirty = _run(runs, "4", "2026-01-01T15:00:00", {"config.py": "A = 99\n", "experiment.py": "E = 1\n"})
    _run(runs, "5", "2026-01-01T15:00:00", names(v1), experiment="pymarl")  # another codebase's run
    own = _run(runs, "6", "2026-01-01T15:00:00", names(v2))  # recorded its own: nothing to recover
    (own / "info.json").write_text(json.dumps({"provenance": {"source": "git", "commit": "e" * 40}}))
    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}

    proc = subprocess.run(asae_cli() + ["provenance", "recover", str(runs), "--repo", str(repo)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "4 runs" in proc.stdout and "1 Sacred runs of other code left out" in proc.stdout
    assert "1 runs that recorded their own left out" in proc.stdout
    out = tmp_path / "results" / "provenance.json"
    data = json.loads(out.read_text())
    assert sorted(data["runs"]) == ["runs/1", "runs/2", "runs/3", "runs/4"]
    assert data["command"].startswith("asae provenance recover ")
    got = {name: provenance.run_provenance(d) for name, d in
           (("clean", clean), ("after_readme", after_readme), ("ahead", ahead), ("dirty", dirty))}
    assert {k: (r["commit"], r["recovered"]["sources_commit"]) for k, r in got.items()} == {
        "clean": (c1, c1), "after_readme": (c2, c2), "ahead": (c2, c3), "dirty": (c3, None)}
    assert got["ahead"]["recovered"]["sources"] == f"match commit {c3}"
    assert got["dirty"]["recovered"]["sources"] == "match no commit (dirty tree)"
    for record in got.values():
        assert record["source"] == "recovered" and record["dirty"] is None and record["branch"] == "main"
        assert record["recovered"]["method"] == "start time vs git log"
        assert record["recovered"]["confidence"] == "HEAD at start time; dirty state unknown"
        assert record["packages"]["numpy"] == "2.4.6" and record["packages"]["torch"] is None
    assert {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()} == before  # run files untouched
    assert provenance.run_provenance(own)["commit"] == "e" * 40
    # A run that recorded its own provenance is read from its info.json first.
    (clean / "info.json").write_text(json.dumps({"provenance": {"source": "git", "commit": "f" * 40}}))
    assert provenance.run_provenance(clean)["commit"] == "f" * 40


@pytest.mark.parametrize("args, words", [
    (["recover", "no/such/dir"], "is not a directory"),
    (["recover", "."], "is not a commit"),  # --ref nosuchbranch below
    ([], "needs an action"),
])
def test_bad_input_is_one_line(tmp_path, args, words):
    if args == ["recover", "."]:
        args = ["recover", str(tmp_path), "--ref", "nosuchbranch"]
    proc = subprocess.run(asae_cli() + ["provenance", *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_every_committed_run_says_which_code_made_it():
    """Each committed reproduction run has a record: its own committed info.json, or a recovered entry."""
    runs = ROOT / "results" / "reproduction" / "runs"
    ours, _ = provenance.find_runs(runs)
    tracked = set(subprocess.run(["git", "-C", str(ROOT), "ls-files", "results/reproduction/runs"],
                                 capture_output=True, text=True).stdout.split())
    if not tracked:
        pytest.skip("no git checkout: the committed runs cannot be told from local ones")
    for run_dir in ours:
        rel = run_dir.relative_to(ROOT).as_posix()
        if f"{rel}/run.json" not in tracked:
            continue  # a local run, not committed (yet)
        record = provenance.run_provenance(run_dir)
        assert record is not None, f"{rel}: no provenance (commit its info.json or run asae provenance recover)"
        if record["source"] != "recovered":
            assert f"{rel}/info.json" in tracked, f"{rel}: its own record is not committed"
        assert len(record["commit"]) == 40
