"""`asae bench` on a tiny budget: a well-formed JSON report; bad input -> one line and a non-zero exit.
Correctness only: no assertion on how fast anything is."""
import json
import subprocess

import pytest

from tests.conftest import asae_cli

TINY = ["--repeats", "2", "--iters", "1", "--warmup", "0", "--n-envs", "2"]


def run_bench(*args, cwd):
    return subprocess.run(asae_cli() + ["bench", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def positive_summary(summary):
    assert set(summary) >= {"median", "min", "max", "values"}
    assert 0 < summary["min"] <= summary["median"] <= summary["max"]
    assert all(v > 0 for v in summary["values"])


def test_bench_writes_a_well_formed_report(workdir):
    proc = run_bench("--task", "spread3", "--env-arg", "episode_limit=10", "--algos", "asae,coma", "--profile",
                     "--out", "bench.json", *TINY, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((workdir / "bench.json").read_text())
    assert set(report) >= {"created", "command", "machine", "load_average", "settings", "results", "ratios"}
    assert report["settings"]["isolation"] == "process" and report["settings"]["repeats"] == 2
    results = {r["algo"] or "env_only": r for r in report["results"]}
    assert set(results) == {"env_only", "asae", "coma"}
    for name, r in results.items():
        assert r["task"] == "spread3" and r["n_envs"] == 2 and r["env"]["n_agents"] == 3
        positive_summary(r["env_steps_per_sec"])
        positive_summary(r["env_steps_per_cpu_sec"])
        assert len(r["env_steps_per_sec"]["values"]) == 2
        assert r["peak_rss_mb"] > 0 and r["work_rss_mb"] >= 0 and r["env_steps"] > 0
        assert r["profile"], name
        for part in r["profile"].values():
            assert part["calls"] > 0 and part["calls_per_unit"] > 0 and part["top"]
            assert {"function", "ncalls", "tottime_ms", "cumtime_ms"} <= set(part["top"][0])
    for name in ("asae", "coma"):
        r = results[name]
        positive_summary(r["update_ms"])
        positive_summary(r["collect_ms"])
        assert r["iterations"] == 2 and r["batch_size"] == 2 and r["learner"]
        assert set(r["profile"]) == {"collect", "update/team"}
    assert results["asae"]["learner"]["m"] == 10
    [ratios] = report["ratios"]
    assert ratios["asae_over_coma_time_per_step"]["median"] > 0
    assert set(ratios["train_over_env_only"]) == {"asae", "coma"}
    assert "env only" in proc.stdout and "ASAE/COMA" in proc.stdout


def test_bench_in_process_with_a_custom_env_and_learner_args(workdir):
    proc = run_bench("--env", "predator_prey", "--env-arg", "episode_limit=5", "--algos", "asae,coma",
                     "--learner-arg", "m=3", "--learner-arg", "ppo_epochs=1", "--no-env-only", "--in-process",
                     "--out", "b.json", *TINY, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((workdir / "b.json").read_text())
    assert report["settings"]["isolation"] == "none"
    asae, coma = report["results"]
    assert asae["algo"] == "asae" and asae["learner"]["m"] == 3 and asae["learner"]["ppo_epochs"] == 1
    assert coma["algo"] == "coma" and "m" not in coma["learner"]  # learner args reach the algos that have them
    for r in (asae, coma):
        assert r["env"] == {"name": "predator_prey", "episode_limit": 5}
        positive_summary(r["env_steps_per_sec"])
        positive_summary(r["update_ms"])
    [ratios] = report["ratios"]  # no env-only figure: only ASAE against COMA
    assert set(ratios) == {"task", "n_envs", "batch_size", "pack", "asae_over_coma_time_per_step"}


def test_bench_update_only_times_train_on_one_fixed_batch(workdir):
    """--update-only: each learner's train on one collected batch; off-policy learners fill their replay
    first, so their timed calls are real updates (a backward pass in the profiled one)."""
    proc = run_bench("--task", "spread3", "--env-arg", "episode_limit=8", "--algos", "asae,coma,qmix",
                     "--update-only", "--profile", "--out", "u.json", *TINY, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((workdir / "u.json").read_text())
    assert report["settings"]["update_only"] is True
    results = {r["algo"]: r for r in report["results"]}
    assert set(results) == {"asae", "coma", "qmix"}  # no env-only ceiling
    for name, r in results.items():
        assert r["kind"] == "update" and "env_steps_per_sec" not in r
        positive_summary(r["update_ms"])
        assert len(r["update_ms"]["values"]) == 2
        assert r["batch"]["team"] == {"episodes": 2, "max_t": 8, "real_steps": 16} and r["env_steps"] == 16
        [profile] = r["profile"].values()
        assert any("run_backward" in entry["function"] for entry in profile["top"]), name
    [ratios] = report["ratios"]
    assert ratios["asae_over_coma_update"]["median"] > 0 and "asae_over_coma_time_per_step" not in ratios
    assert "ASAE/COMA update time on one fixed batch" in proc.stdout


@pytest.mark.parametrize("out, must_name", [
    ("missing/bench.json", ["--out", "missing", "does not exist"]),
    (".", ["--out", "directory"]),
])
def test_an_unusable_out_path_stops_before_measuring(workdir, out, must_name):
    proc = run_bench("--task", "spread3", "--algos", "coma", "--out", out, *TINY, cwd=workdir)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in must_name:
        assert word in lines[0], lines[0]
    assert "[bench" not in proc.stderr  # nothing was measured


@pytest.mark.parametrize("args, must_name", [
    (["--task", "nope"], ["nope", "spread", "smax_", "predator_prey"]),
    (["--algos", "asae,nope"], ["nope", "asae", "coma"]),
    (["--n-envs", "0"], ["--n-envs", "at least 1"]),
    (["--n-envs", "8,x"], ["--n-envs", "x"]),
    (["--repeats", "-1"], ["--repeats"]),
    (["--iters", "1.5"], ["--iters", "whole number"]),
    (["--env", "nope"], ["nope", "mpe_spread"]),
    (["--env-arg", "n_agents"], ["n_agents", "KEY=VALUE"]),
    (["--env-arg", "n_agentz=3"], ["n_agentz", "n_agents"]),
    (["--learner-arg", "m=0"], ["learner.m=0"]),
    (["--learner-arg", "foo=1"], ["learner.foo", "td_lambda"]),
    (["--task", "spread3", "--env", "mpe_spread"], ["--task", "--env"]),
    (["--task", "smax_1c3s5z"], ["1c3s5z", "env=smac"]),
    (["--device", "tpu"], ["tpu"]),
    (["--no-such-flag"], ["--no-such-flag"]),
    (["--update-only", "--algos", ""], ["nothing to measure", "--update-only"]),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(workdir, args, must_name):
    proc = run_bench(*args, "--out", "bench.json", cwd=workdir)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in must_name:
        assert word in lines[0], lines[0]
    assert not (workdir / "bench.json").exists()


def test_bench_packs_seeds_and_compares_them_with_one_seed(workdir):
    proc = run_bench("--task", "spread3", "--env-arg", "episode_limit=10", "--algos", "coma,qmix", "--pack", "1,3",
                     "--no-env-only", "--out", "bench.json", *TINY, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((workdir / "bench.json").read_text())
    packs = {(r["algo"], r["pack"]): r for r in report["results"]}
    assert set(packs) == {("coma", 1), ("coma", 3), ("qmix", 1), ("qmix", 3)}
    for r in packs.values():
        positive_summary(r["env_steps_per_cpu_sec"])
    # a pack of 3 steps 3 seeds' envs per iteration: three times the env steps of one seed per iteration
    assert packs[("coma", 3)]["env_steps"] / packs[("coma", 3)]["iterations"] >= \
        2.5 * packs[("coma", 1)]["env_steps"] / packs[("coma", 1)]["iterations"]
    [ratio] = [e for e in report["ratios"] if e.get("pack") == 3]
    assert set(ratio["pack_over_single_per_cpu_s"]) == {"coma", "qmix"} and set(ratio["pack_over_single_rss"]) == {"coma", "qmix"}
    assert "S=3: coma packed / unpacked env-steps per CPU-second" in proc.stdout
