"""MAPPO, IPPO and DOP learn MPE simple_spread (N = 3) within a small fixed budget and seed: the greedy
test return ends clearly above a uniform random policy's (-26.50 +- 0.26 over 1024 episodes).

Greedy test return (``test_return_mean``, 25-step episodes) at t_env = 0 and at the end. Seen on this
machine (torch 2.13 CPU, one thread), first -> last:
  mappo (40k steps, 32 test episodes): seed 0 -43.3 -> -22.8, seed 1 -34.6 -> -19.8
  ippo  (60k steps, 64 test episodes): seed 0 -44.6 -> -21.8, seed 1 -35.0 -> -23.2, seed 2 -60.3 -> -19.9
  dop   (60k steps, 32 test episodes): seed 0 -43.3 -> -23.0, seed 1 -34.6 -> -21.0, seed 2 -58.9 -> -21.0
IPPO had 40k steps before and failed on another machine (-31.05): at 40k seed 1 ended at -28.1, below
random, so 40k was too short for it; at 60k its worst seed keeps 2.3 of room over the bar.
Asserted: the last test return (64 episodes, s.e. about 1.0) is 1.0 above random, and the untrained
greedy policy's is below random (what is above it is learned).
"""
import json

import pytest

from experiments.api import train

BUDGET = {"t_max": 40_000, "n_envs": 8, "batch_size": 8, "test_interval": 20_000, "test_episodes": 64,
          "log_interval": 5_000, "checkpoint_interval": 1_000_000, "seed": 0, "device": "cpu",
          "env": {"name": "mpe_spread", "n_agents": 3, "episode_limit": 25, "backend": "batched"}}
RANDOM_RETURN = -26.5  # uniform random policy, 25-step episodes, mean of agents' rewards
SETTINGS = {
    "mappo": {},
    "ippo": {"t_max": 60_000, "test_interval": 30_000},
    "dop": {"lr": 1e-3, "t_max": 60_000},  # one actor step per update: slower per env step than PPO's epochs
}


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(SETTINGS))
def test_learns_simple_spread(workdir, algo):
    result = train({**BUDGET, "algo": algo, **SETTINGS[algo]}, results_dir="runs")
    assert result.status == "COMPLETED"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    test = metrics["test_return_mean"]
    assert test["steps"][0] == 0 and test["steps"][-1] == SETTINGS[algo].get("t_max", BUDGET["t_max"])
    first, last = test["values"][0], test["values"][-1]
    print(f"{algo}: test return {first:.1f} -> {last:.1f} (random policy {RANDOM_RETURN})")
    assert first < RANDOM_RETURN
    assert last > RANDOM_RETURN + 1.0, f"{algo}: greedy test return {last:.2f}, random {RANDOM_RETURN}"
