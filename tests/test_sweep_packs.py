"""`asae sweep --pack-seeds K`: a preset's runs that differ only by seed train as packs, each seed still
its own run; a pack job skips its completed seeds and resumes the others."""
import json

import pytest

from experiments.api import find_runs, resolve_config, train
from slurm.jobs import PackJob
from tests.conftest_slurm import asae, runs_of, tiny_preset

pytestmark = pytest.mark.slow


def test_dry_run_shows_the_packs_and_a_local_sweep_trains_them(tmp_path):
    preset = tiny_preset(tmp_path, t_max=300, agents="[2]")
    results = tmp_path / "results"
    args = [str(preset), "--executor", "local", "--results", str(results), "--seeds", "3", "--pack-seeds", "2"]
    dry = asae("sweep", *args, "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "--pack-seeds 2: 3 runs in 2 jobs (2, 1 seeds each)" in dry.stdout
    header = next(line for line in dry.stdout.splitlines() if line.startswith("run_key"))
    assert header.split()[-1] == "pack"
    rows = [line.split() for line in dry.stdout.splitlines() if line[:12].isalnum() and len(line.split()) == len(header.split())]
    assert sorted((row[1], row[-1]) for row in rows) == [("0", "1"), ("1", "1"), ("2", "2")]  # seed -> pack
    proc = asae("sweep", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = runs_of(results)
    assert sorted(r["config"]["seed"] for r in runs) == [0, 1, 2]
    assert all(r["status"] == "COMPLETED" for r in runs)
    packed = [r for r in runs if r["info"].get("pack")]
    assert sorted(r["info"]["pack"]["seeds"] for r in packed) == [[0, 1], [0, 1]]
    again = asae("sweep", *args, cwd=tmp_path)
    assert "nothing to submit" in again.stdout


def test_a_pack_job_skips_completed_seeds_and_trains_the_rest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = {"algo": "coma", "t_max": 300, "n_envs": 2, "batch_size": 2, "test_episodes": 2, "test_interval": 250,
            "log_interval": 50, "checkpoint_interval": 100, "env": {"name": "mpe_spread", "n_agents": 2}}
    done = train({**base, "seed": 1}, results_dir="runs")
    assert done.status == "COMPLETED"
    members = [({**base, "seed": s}, resolve_config({**base, "seed": s})["run_key"]) for s in (0, 1, 2)]
    out = PackJob(members, (), "runs")()
    assert out["done"] == [str(done.run_dir)]
    for updates, key in members:
        assert [r.status for r in find_runs("runs", key)] == ["COMPLETED"]
    ran = [json.loads((p / "info.json").read_text())["pack"]["seeds"] for p in map(__import__("pathlib").Path, out["ran"])]
    assert ran == [[0, 2], [0, 2]]
