"""`asae compare-epymarl` on a tiny budget. EPyMARL is never run here: its side is a real EPyMARL run of
the same tiny budget (tests/data/epymarl_tiny/<algo>/seed0/: config.json, info.json and metrics.json as
EPyMARL's Sacred observer wrote them, made by this script with --systems epymarl and TINY), and the
"EPyMARL python" is a stub that records being called."""
import csv
import json
import shutil
import subprocess

import pytest

from experiments import compare_epymarl as cmp
from tests.conftest import asae_cli

DATA = cmp.Path(__file__).resolve().parent / "data" / "epymarl_tiny"
TINY = ["--t-max", "500", "--test-interval", "250", "--test-episodes", "10", "--seeds", "0"]


def fake_checkout(root):
    """An EPyMARL-shaped directory and a venv-shaped python that leaves a marker when run, then fails."""
    (root / "src" / "config" / "algs").mkdir(parents=True)
    (root / "src" / "main.py").write_text("")
    for algo in ("coma", "qmix"):
        (root / "src" / "config" / "algs" / f"{algo}.yaml").write_text("")
    (root / "venv" / "bin").mkdir(parents=True)
    (root / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = root / "venv" / "bin" / "python"
    python.write_text(f"#!/bin/sh\ntouch {root / 'was_run'}\nexit 3\n")
    python.chmod(0o755)
    return root, python


def run_cli(*args, cwd):
    return subprocess.run(asae_cli() + ["compare-epymarl", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_bad_arguments_give_one_line_and_exit_2(tmp_path):
    checkout, python = fake_checkout(tmp_path / "epymarl")
    not_venv = tmp_path / "python"
    not_venv.write_text("#!/bin/sh\n")
    not_venv.chmod(0o755)
    cases = [
        (["--epymarl", str(tmp_path / "missing")], "not an EPyMARL checkout"),
        (["--epymarl", str(checkout), "--epymarl-python", str(not_venv)], "not a venv's python"),
        (["--epymarl", str(checkout), "--epymarl-python", str(tmp_path / "nope")], "no executable there"),
        (["--epymarl", str(checkout)], "no executable there"),  # default CHECKOUT/.venv/bin/python absent
        (["--algos", "coma,iql"], "unknown algo 'iql'"),
        (["--seeds", "x"], "comma-separated list of int"),
    ]
    for args, message in cases:
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, (args, proc.stderr)
    assert not (checkout / "was_run").exists()


def test_reads_real_epymarl_runs_and_puts_them_on_one_scale(tmp_path):
    args = cmp.parse_args(TINY + ["--out", str(tmp_path)])
    for algo, first_test in (("coma", 250), ("qmix", 25)):  # EPyMARL tests after its first runner round
        run_dir = DATA / algo / "seed0"
        assert cmp.is_wanted_run(run_dir, algo, 0, 500, 250, 10)
        assert not cmp.is_wanted_run(run_dir, algo, 1, 500, 250, 10)
        assert not cmp.is_wanted_run(run_dir, algo, 0, 1000, 250, 10)
        assert not cmp.is_wanted_run(run_dir, algo, 0, 500, 250, 20)
        steps, values = cmp.test_curve(run_dir)
        assert steps[0] == first_test and steps[-1] >= 500 and len(steps) == len(values) >= 3
        assert all(-250 < v < 0 for v in values)  # sums over 3 agents of 24 steps of negative reward
        # info.json (EPyMARL's logger, jsonpickled numpy scalars) holds the same curve as metrics.json
        only_info = tmp_path / algo
        shutil.copytree(run_dir, only_info)
        (only_info / "metrics.json").unlink()
        assert cmp.test_curve(only_info) == (steps, pytest.approx(values))
        speed = cmp.throughput(run_dir)
        assert speed["wall_s"] > 0 and speed["steps_per_s"] > 0
        # an interrupted run (its curve stops short of t_max) is not taken
        cut = tmp_path / f"{algo}_cut"
        shutil.copytree(run_dir, cut)
        metrics = json.loads((cut / "metrics.json").read_text())
        metrics["test_return_mean"] = {k: v[:1] for k, v in metrics["test_return_mean"].items()}
        (cut / "metrics.json").write_text(json.dumps(metrics))
        assert not cmp.is_wanted_run(cut, algo, 0, 500, 250, 10)
    frame = cmp.curves_frame({"epymarl": {("coma", 0): DATA / "coma" / "seed0"}})
    row = frame.iloc[0]
    assert row["per_agent_step"] == pytest.approx(row["raw"] / 72)
    assert row["gain_vs_random"] == pytest.approx((row["raw"] + 76.1) / 76.1)
    assert cmp.milestones(args.t_max) == [125, 250, 375, 500]


def test_compares_on_a_tiny_budget_reusing_finished_runs(workdir, capsys):
    checkout, python = fake_checkout(workdir / "epymarl")
    out = workdir / "cmp"
    shutil.copytree(DATA, out / "epymarl")  # EPyMARL's side is done: the stub python must not run
    argv = TINY + ["--epymarl", str(checkout), "--epymarl-python", str(python), "--out", str(out)]
    assert cmp.main(argv) == 0
    assert not (checkout / "was_run").exists()
    table = capsys.readouterr().out
    assert table == (out / "table.md").read_text()
    rows = list(csv.DictReader((out / "curves.csv").open()))
    assert list(rows[0]) == ["system", "algo", "seed", "t_env", "raw", "per_agent_step", "gain_vs_random"]
    assert {(r["system"], r["algo"]) for r in rows} == {(s, a) for s in ("epymarl", "ours") for a in ("coma", "qmix")}
    ours = [r for r in rows if r["system"] == "ours"]
    assert {int(r["t_env"]) for r in ours} == {0, 250, 500}
    for r in ours:
        assert float(r["per_agent_step"]) == pytest.approx(float(r["raw"]) / 25, rel=1e-4)
    for algo in ("coma", "qmix"):
        for t in ("125", "250", "375", "500"):
            assert any(line.startswith(f"| {algo} | {t} | 1, 1 |") for line in table.splitlines()), (algo, t)
    assert "| EPyMARL | coma | 1 |" in table and "| ours | qmix | 1 |" in table
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp*"))
    our_runs = sorted(p.name for p in (out / "ours").iterdir() if p.name.isdigit())
    assert len(our_runs) == 2
    assert cmp.main(argv) == 0  # everything done: nothing runs again
    assert sorted(p.name for p in (out / "ours").iterdir() if p.name.isdigit()) == our_runs


def test_a_missing_epymarl_run_is_run_and_a_failure_is_one_line(workdir, capsys):
    checkout, python = fake_checkout(workdir / "epymarl")
    argv = TINY + ["--algos", "qmix", "--epymarl", str(checkout), "--epymarl-python", str(python), "--out", "cmp"]
    assert cmp.main(argv) == 1
    assert (checkout / "was_run").exists()
    err = capsys.readouterr().err
    assert "EPyMARL qmix seed 0 failed (exit 3); see cmp/logs/epymarl-qmix-seed0.log" in err
    assert cmp.epymarl_command(python, "qmix", 0, 500, 250, 10)[1:] == [
        "src/main.py", "--config=qmix", "--env-config=gymma", "with", "env_args.key=pz-mpe-simple-spread-v3",
        "env_args.time_limit=25", "t_max=525", "test_interval=250", "test_nepisode=10", "log_interval=125",
        "runner_log_interval=125", "learner_log_interval=125", "seed=0"]
    # without a checkout, a missing run is a usage error
    with pytest.raises(cmp.ConfigError, match="give --epymarl CHECKOUT"):
        cmp.main(TINY + ["--out", "cmp"])
