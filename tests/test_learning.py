"""ASAE and COMA learn simple spread (N=3): greedy test return clearly above the first evaluation.

Budget: 40k env steps (1600 episodes of 25 steps, batch 8), about half a minute each on one core.
Seen with seed 0 (test_return_mean, first -> last): ASAE -43.3 -> about -21, COMA -43.3 -> about -23.
"""
import json

import pytest

from experiments.api import train

BUDGET = {"t_max": 40_000, "test_interval": 10_000, "test_episodes": 32, "log_interval": 10_000,
          "seed": 0, "env": {"name": "mpe_spread", "n_agents": 3}}


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["asae", "coma"])
def test_learns_simple_spread(workdir, algo):
    result = train({**BUDGET, "algo": algo}, results_dir="runs")
    assert result.status == "COMPLETED"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    test = metrics["test_return_mean"]
    assert test["steps"][0] == 0 and test["steps"][-1] >= BUDGET["t_max"]
    first, last_two = test["values"][0], test["values"][-2:]
    assert min(last_two) > first + 10.0, test["values"]
    train_returns = metrics["return_mean"]["values"]
    assert train_returns[-1] > train_returns[0] + 3.0, train_returns
