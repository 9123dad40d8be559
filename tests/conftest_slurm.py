"""Shared by the sweep and SLURM tests: tiny presets, the local SLURM cluster fixture, run checks."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.files import read_json

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "slurm" / "local_cluster.sh"

# A few seconds of coma on 2-agent simple spread (numpy backend): 50 env steps per iteration, a metric
# line every iteration, a checkpoint every other one.
TINY = """
description = "tiny sweep for tests"
seeds = 1
[config]
algo = "coma"
n_envs = 2
batch_size = 2
test_episodes = 2
test_interval = 250
log_interval = 50
checkpoint_interval = 100
env = {{ name = "mpe_spread", backend = "batched" }}
[grid]
t_max = {t_max}
"env.n_agents" = {agents}
"""


def tiny_preset(folder: Path, name: str = "tiny", t_max: int | list[int] = 500, agents: str = "[2, 3]") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(TINY.format(t_max=t_max if isinstance(t_max, list) else [t_max], agents=agents))
    return path


def asae(*args: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("asae"))
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)


def runs_of(results: Path) -> list[dict]:
    """Every Sacred run under results/runs: id, status, run_key, config, metrics (if flushed), info."""
    out = []
    for run_dir in sorted((results / "runs").glob("[0-9]*"), key=lambda p: int(p.name)):
        read = lambda name: read_json(run_dir / name) or {}  # noqa: E731  (half a file while Sacred rewrites it)
        config, run = read("config.json"), read("run.json")
        out.append({"dir": run_dir, "status": run.get("status"), "run_key": config.get("run_key"), "config": config,
                    "metrics": read("metrics.json"), "info": read("info.json")})
    return out


def assert_continuous(run: dict, t_max: int, log_every: int = 50, test_every: int = 250) -> None:
    """The completed run holds the whole curve: every logged step once, none missing, none repeated."""
    steps = run["metrics"]["return_mean"]["steps"]
    assert steps == list(range(log_every, t_max + 1, log_every)), steps
    tests = run["metrics"]["test_return_mean"]["steps"]
    assert tests == list(range(0, t_max + 1, test_every)), tests


def wait_until(condition, timeout: float, what: str, poll: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node SLURM with accounting, installed and started by slurm/local_cluster.sh (as CI
    does on a fresh machine), stopped again afterwards if this fixture started it."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM tests install and start a local cluster: they need root (CI runs as root)")
    was_running = subprocess.run([str(CLUSTER), "status"], capture_output=True).returncode == 0
    start = time.monotonic()
    proc = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"local_cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"\n[slurm] cluster ready in {time.monotonic() - start:.1f} s ({'already running' if was_running else 'started'})")
    yield
    if not was_running:
        subprocess.run([str(CLUSTER), "stop"], capture_output=True, timeout=120)
