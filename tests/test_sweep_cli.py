"""`asae sweep` / `asae status` without SLURM: listing, dry runs, bad input, the debug executor, run statuses."""
import datetime as dt
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments.cli import main
from slurm import state as sweep_state
from tests.conftest_slurm import runs_of, tiny_preset


def run(args, capsys):
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_sweep_list_shows_every_preset_with_its_run_count(capsys):
    code, out, _ = run(["sweep", "list"], capsys)
    assert code == 0
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert rows == {"table1": "200", "spread": "75", "predator_prey": "25", "competitive": "30",
                    "ablation_m": "15", "ablation_clip": "15", "appendix": "27", "repro_table1": "39",
                    "repro_spread": "12", "repro_ablation_m": "15", "repro_ablation_clip": "15",
                    "repro_table1_3m": "45", "repro_control_spread": "15", "repro_fig5_rest": "15"}
    assert "map=3s5z" in out and "Table 1" in out


def test_dry_run_prints_runs_and_sbatch_settings_and_submits_nothing(tmp_path, capsys):
    code, out, err = run(["sweep", "ablation_clip", "--seeds", "2", "--set", "map=3m", "--dry-run",
                          "--partition", "gpu", "--time", "720", "--gpus-per-task", "1", "--array-parallelism", "4",
                          "--mem", "16G", "--sbatch", "exclusive=true", "--results", str(tmp_path)], capsys)
    assert code == 0, err
    assert "10 runs: 10 to submit" in out
    table = [line for line in out.splitlines() if line.endswith("  submit")]
    assert len(table) == 10
    for flag in ("--partition=gpu", "--time=720", "--gpus-per-task=1", "--array=0-9%4", "--mem=16G",
                 "--exclusive", "--signal=USR2@90", "--job-name=asae-ablation_clip"):
        assert f"#SBATCH {flag}" in out, flag
    assert "dry run: nothing submitted" in out
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, must_name", [
    (["sweep", "tabel1"], ["tabel1", "table1"]),
    (["sweep", "table1", "--executor", "cloud"], ["cloud", "slurm"]),
    (["sweep", "table1", "--time", "0"], ["--time"]),
    (["sweep", "table1", "--time", "ten"], ["--time"]),
    (["sweep", "table1", "--mem", "16X"], ["--mem"]),
    (["sweep", "table1", "--array-parallelism", "0"], ["--array-parallelism"]),
    (["sweep", "table1", "--executor", "local", "--gpus-per-task", "1"], ["--gpus-per-task", "slurm"]),
    (["sweep", "table1", "--executor", "local", "--partition", "gpu"], ["--partition", "slurm"]),
    (["sweep", "table1", "--sbatch", "exclusive"], ["--sbatch", "KEY=VALUE"]),
    (["sweep", "table1", "--sbatch", "time=5"], ["--sbatch", "--time"]),
    (["sweep", "ablation_m", "--set", "mapp=3m"], ["mapp", "map"]),
    (["sweep", "ablation_m", "--set", "map=9x9"], ["9x9"]),
    (["sweep", "ablation_m", "--seeds", "0"], ["--seeds"]),
    (["sweep", "ablation_m", "--config", "t_mx=5"], ["t_mx"]),
    (["status", "tabel1"], ["tabel1"]),
    (["sweep", "repro_table1", "--only", "algo=iql"], ["--only", "iql", "asae, coma, qmix"]),
    (["sweep", "repro_table1", "--only", "env.map=3m"], ["--only", "env.map", "env.map_name"]),
    (["status", "repro_table1", "--only", "algo"], ["--only", "KEY=VALUE"]),
])
def test_bad_input_is_one_line_exit_2_and_submits_nothing(tmp_path, capsys, args, must_name):
    code, out, err = run(args + ["--results", str(tmp_path)], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for word in must_name:
        assert word in lines[0], lines[0]
    assert not any(tmp_path.iterdir())


def test_only_selects_a_part_of_a_preset_with_the_whole_presets_run_keys(tmp_path, capsys):
    def planned(*extra):
        code, out, err = run(["sweep", "repro_table1", "--dry-run", "--results", str(tmp_path), *extra], capsys)
        assert code == 0, err
        return {line.split()[0]: line.split() for line in out.splitlines() if line.endswith("  submit")}

    whole = planned()
    part = planned("--only", "algo=qmix,coma", "--only", "env.map_name=3m")
    assert len(whole) == 39 and len(part) == 6
    expected = {key for key, row in whole.items() if "3m" in row and ("qmix" in row or "coma" in row)}
    assert set(part) == expected


def test_a_typo_in_a_user_preset_file_names_file_and_key(tmp_path, capsys):
    path = tiny_preset(tmp_path / "presets", "mine")
    path.write_text(path.read_text().replace('algo = "coma"', 'algo = "comma"'))
    code, _, err = run(["sweep", "mine", "--preset-file", str(path), "--executor", "debug",
                        "--results", str(tmp_path / "results")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(path) in err and "config.algo" in err and "comma" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_debug_sweep_runs_in_process_then_resubmission_skips_everything(tmp_path, capsys):
    preset = tiny_preset(tmp_path)
    results = tmp_path / "results"
    args = [str(preset), "--results", str(results)]
    code, out, err = run(["sweep", *args, "--executor", "debug"], capsys)
    assert code == 0, err
    runs = runs_of(results)
    assert [r["status"] for r in runs] == ["COMPLETED", "COMPLETED"]
    assert len({r["run_key"] for r in runs}) == 2

    code, out, _ = run(["sweep", *args, "--executor", "debug"], capsys)
    assert code == 0 and "2 completed" in out and "nothing to submit" in out
    assert len(runs_of(results)) == 2

    code, out, _ = run(["status", *args], capsys)
    assert code == 0
    rows = out.splitlines()[1:-1]
    assert len(rows) == 2 and all(" completed " in row and "in-process" in row for row in rows)
    assert out.splitlines()[-1].startswith("2 runs: 0 pending, 0 running, 2 completed")


# --- statuses from runs on disk and jobs ---------------------------------------------------------
def fake_run(tmp_path, name, status, heartbeat_age_s=0.0, checkpoint=False, last_step=0):
    run_dir = tmp_path / name
    run_dir.mkdir()
    beat = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=heartbeat_age_s)
    (run_dir / "run.json").write_text(json.dumps({"status": status, "heartbeat": beat.isoformat()}))
    (run_dir / "metrics.json").write_text(json.dumps({"return_mean": {"steps": [50, last_step], "values": [0, 0]}}))
    ckpt = run_dir / "checkpoint.pt" if checkpoint else None
    if ckpt:
        ckpt.write_bytes(b"x")
    return SimpleNamespace(run_dir=run_dir, status=status, checkpoint=ckpt, t_env=0)


def classify(records, entry=None, slurm=None):
    return sweep_state.classify("k", records, entry, slurm or {})


def test_status_of_runs_on_disk_without_any_scheduler(tmp_path):
    assert classify([]).status == "pending"
    done = classify([fake_run(tmp_path, "1", "INTERRUPTED", checkpoint=True), fake_run(tmp_path, "2", "COMPLETED")])
    assert done.status == "completed" and done.run_dir.name == "2" and not done.active
    alive = classify([fake_run(tmp_path, "3", "RUNNING", heartbeat_age_s=5, last_step=400)])
    assert alive.status == "running" and alive.active and alive.t_env == 400
    dead = classify([fake_run(tmp_path, "4", "RUNNING", heartbeat_age_s=600, checkpoint=True)])
    assert dead.status == "interrupted" and not dead.active and dead.resume_from.parent.name == "4"
    failed = classify([fake_run(tmp_path, "5", "FAILED")])
    assert failed.status == "failed" and failed.resume_from is None


def test_status_follows_the_slurm_job(tmp_path):
    entry = {"executor": "slurm", "job_id": "12_3"}
    assert classify([], entry, {"12_3": "PENDING"}).status == "pending"
    assert classify([], entry, {"12_3": "PENDING"}).active
    assert classify([], entry, {"12_3": "FAILED"}).status == "failed"
    interrupted = fake_run(tmp_path, "1", "INTERRUPTED", checkpoint=True)
    requeued = classify([interrupted], entry, {"12_3": "PENDING"})
    assert requeued.status == "pending" and requeued.active and requeued.job_id == "12_3"
    # The run still says RUNNING, its heartbeat is fresh, but SLURM says the job is gone (kill -9, node down).
    stale = fake_run(tmp_path, "2", "RUNNING", heartbeat_age_s=1)
    assert classify([stale], entry, {"12_3": "CANCELLED"}).status == "interrupted"
    assert classify([stale], entry, {"12_3": "RUNNING"}).status == "running"


def test_status_of_a_local_job_checks_its_process(tmp_path):
    import socket

    stale = fake_run(tmp_path, "1", "RUNNING", heartbeat_age_s=1, checkpoint=True)
    gone = {"executor": "local", "job_id": "999999999", "host": socket.gethostname()}
    assert classify([stale], gone).status == "interrupted"
    not_submitit = {"executor": "local", "job_id": str(os.getpid()), "host": socket.gethostname()}
    assert classify([stale], not_submitit).job_state == "EXITED"
    elsewhere = {"executor": "local", "job_id": "1", "host": "another-host"}
    assert classify([stale], elsewhere).status == "running"  # cannot see it: trust the heartbeat


def test_expand_slurm_array_ids():
    assert sweep_state._expand_ids("12_[0-3%2]") == ["12_0", "12_1", "12_2", "12_3"]
    assert sweep_state._expand_ids("12_[1,4]") == ["12_1", "12_4"]
    assert sweep_state._expand_ids("12_7") == ["12_7"] and sweep_state._expand_ids("12") == ["12"]


def test_state_file_keeps_earlier_jobs(tmp_path):
    st = sweep_state.SweepState(tmp_path / "sweep")
    st.record("slurm", {"a": "1_0", "b": "1_1"})
    st.record("slurm", {"a": "2"})
    runs = st.load()
    assert runs["a"]["job_id"] == "2" and runs["a"]["earlier_jobs"] == ["1_0"] and runs["b"]["job_id"] == "1_1"
    assert Path(st.path).is_file()


def test_slurm_executor_without_sbatch_says_what_to_do(tmp_path, capsys, monkeypatch):
    from slurm import executors

    monkeypatch.setattr(executors.shutil, "which", lambda name: None)
    code, _, err = run(["sweep", str(tiny_preset(tmp_path)), "--results", str(tmp_path / "r")], capsys)
    assert code == 2 and "sbatch not found" in err and "local_cluster.sh" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
