"""Same seed and config -> identical metrics; a resumed run continues exactly like the uninterrupted one."""
import json
import threading

import pytest

from experiments.api import find_runs, train

# Wall-clock metrics differ between runs by nature.
TIMING = {"env_steps_per_sec"}
CONFIG = {"t_max": 1200, "n_envs": 4, "batch_size": 4, "test_interval": 400, "test_episodes": 4,
          "log_interval": 1, "checkpoint_interval": 100_000, "env": {"episode_limit": 25}}


def metric_values(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {name: (m["steps"], m["values"]) for name, m in metrics.items() if name not in TIMING}


@pytest.mark.parametrize("algo", ["asae", "coma"])
def test_same_seed_same_metrics(workdir, algo):
    a = train({**CONFIG, "algo": algo}, results_dir="runs_a")
    b = train({**CONFIG, "algo": algo}, results_dir="runs_b")
    assert a.status == b.status == "COMPLETED" and a.run_key == b.run_key
    assert metric_values(a.run_dir) == metric_values(b.run_dir)
    c = train({**CONFIG, "algo": algo, "seed": 1}, results_dir="runs_c")
    assert metric_values(c.run_dir) != metric_values(a.run_dir)


@pytest.mark.parametrize("algo", ["asae", "coma"])
def test_resume_from_checkpoint_continues_exactly(workdir, algo):
    full = train({**CONFIG, "algo": algo}, results_dir="runs")
    stop = threading.Event()
    stop.set()  # stop after the first iteration, with a checkpoint
    part = train({**CONFIG, "algo": algo}, results_dir="runs", stop_event=stop)
    assert part.status == "INTERRUPTED" and (part.run_dir / "checkpoint.pt").is_file()
    assert part.run_key == full.run_key
    resumed = train({**CONFIG, "algo": algo}, results_dir="runs", resume_from=str(part.run_dir))
    assert resumed.status == "COMPLETED"
    assert metric_values(resumed.run_dir) == metric_values(full.run_dir)
    statuses = [r.status for r in find_runs("runs", full.run_key)]
    assert statuses == ["COMPLETED", "INTERRUPTED", "COMPLETED"]


def test_resume_refuses_a_checkpoint_of_another_config(workdir):
    from validation import ConfigError

    stop = threading.Event()
    stop.set()
    part = train({**CONFIG, "algo": "coma"}, results_dir="runs", stop_event=stop)
    with pytest.raises(ConfigError, match="checkpoint of run"):
        train({**CONFIG, "algo": "coma", "seed": 5}, results_dir="runs", resume_from=str(part.run_dir))
