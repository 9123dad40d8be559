"""The `asae` command as a user meets it: bad input -> one line and exit 2, a good run -> a complete Sacred run."""
import json
import subprocess

import pytest

from tests.conftest import asae_cli


def run_cli(*args, cwd):
    return subprocess.run(asae_cli() + list(args), cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, must_name", [
    (["train", "with", "algo=nope"], ["nope", "asae", "coma"]),
    (["train", "with", "t_max=-5"], ["t_max=-5", "positive"]),
    (["train", "with", "env=nope"], ["nope", "mpe_spread"]),
    (["train", "with", "env.n_agentz=4"], ["n_agentz", "n_agents"]),
    (["train", "with", "learner.m=0"], ["learner.m=0"]),
    (["train", "with", "nonsense=1"], ["nonsense"]),
    (["train", "with", "no_such_named_config"], ["no_such_named_config"]),
])
def test_bad_input_is_one_line_and_leaves_no_run(workdir, args, must_name):
    proc = run_cli(*args, cwd=workdir)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in must_name:
        assert word in lines[0], lines[0]
    runs = workdir / "results" / "runs"
    assert not runs.exists() or not any(p.name.isdigit() for p in runs.iterdir())


def test_unknown_command_lists_commands(workdir):
    proc = run_cli("trian", cwd=workdir)
    assert proc.returncode == 2 and "train" in proc.stderr and "Traceback" not in proc.stderr


def test_list_shows_algorithms_envs_and_named_configs(workdir):
    out = run_cli("list", cwd=workdir).stdout
    for word in ("asae", "coma", "mpe_spread", "mpe_paper", "smac_paper", "sight_range"):
        assert word in out


def test_print_config_shows_resolved_config(workdir):
    proc = run_cli("train", "print_config", "with", "algo=coma", "env.n_agents=4", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "n_agents = 4" in proc.stdout and "td_lambda" in proc.stdout and "run_key" in proc.stdout


def test_completed_run_has_config_run_and_metrics(workdir):
    proc = run_cli("train", "with", "algo=coma", "env.n_agents=4", "t_max=600", "n_envs=4", "batch_size=4",
                   "test_interval=300", "test_episodes=4", "log_interval=100", "seed=3", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run_dir = workdir / "results" / "runs" / "1"
    run = json.loads((run_dir / "run.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run["status"] == "COMPLETED"
    assert config["algo"] == "coma" and config["env"]["n_agents"] == 4 and config["seed"] == 3
    assert config["env_info"]["n_envs"] == 4 and "mpe2" in config["env_info"]["backend"]
    assert "env_step" in config["env_info"]["step_unit"]
    for name in ("return_mean", "test_return_mean", "ep_length_mean", "test_ep_length_mean", "critic_loss",
                 "actor_loss", "entropy", "env_steps_per_sec"):
        assert name in metrics, name
    assert metrics["test_return_mean"]["steps"][0] == 0 and metrics["test_return_mean"]["steps"][-1] == 600
    assert (run_dir / "checkpoint.pt").is_file()
