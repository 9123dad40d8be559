"""ASAE learns SMAX 3m: the greedy test win rate rises from 0 to clearly above a random policy's; and
the SMAX learning pipeline beats the scripted focus fire: MAPPO with the same batch and learning rate.

Setup: the paper's learner (m = 10, clip 0.1, lr 1e-3 for actor and critic, gamma 0.99, SMAC reward
scale, i.e. `smac_paper` but for the budget) with PyMARL's defaults where the paper is silent (epsilon
floor 0.5 -> 0.01 over 100k steps, RMSprop, per-step critic); 32 vectorized envs, one episode per env per
update; 40k env steps (~2.8k episodes, ~90 updates), greedy test over 64 episodes every 10k steps.
A uniform random policy wins none of the 3m battles against SMAX's heuristic (tests/test_smax_env.py);
the scripted focus fire of tests/test_smax_env.py wins 0.49 (512 battles).

Seen (test_battle_won_mean): seed 0 at 10k / 20k: 0.56, 0.47 (32 battles); seeds 0, 1, 2 at 25k-50k
(64-100 battles): 0.42-0.53. The training win rate stays low in this budget: the floor still takes a
random action 30% of the time at 40k. What this test does not assert, and why: ASAE's test win rate
above the scripted focus fire's. With the paper's settings ASAE reaches the scripted level within 50k
steps and stays there for hundreds of thousands of steps (its softmax saturates while the floor is
large; docs/fidelity.md, "SMAX 3m"), so no test budget tells it apart from the script.

MAPPO against the script: the same env, 32 envs, lr 1e-3, 100k env steps, greedy tests of 128 battles;
measured (seeds 0-3), the mean of the last two tests (80k, 100k): 0.64, 0.74, 0.73, 0.73; the script,
measured in the test on 256 battles: 0.52. The bar is the script's rate + 0.05 (0.57; seeds 0-3 average 0.71, sd 0.05).
"""
import json

import pytest

from envs import make_env
from experiments.api import train
from tests.test_smax_env import episode_summary, rollout, scripted

BUDGET = {"algo": "asae", "env": {"name": "smax", "map_name": "3m"}, "seed": 0,
          "t_max": 40_000, "n_envs": 32, "batch_size": 32, "gamma": 0.99, "lr": 1e-3, "critic_lr": 1e-3,
          "learner": {"m": 10, "clip": 0.1},
          "test_interval": 10_000, "test_episodes": 64, "log_interval": 10_000}
RANDOM_WIN_RATE = 0.1  # upper bound asserted for a uniform random policy on 3m in tests/test_smax_env.py


@pytest.mark.slow
def test_asae_learns_smax_3m(workdir):
    result = train(BUDGET, results_dir="runs")
    assert result.status == "COMPLETED"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    won = metrics["test_battle_won_mean"]
    assert won["steps"][0] == 0 and won["steps"][-1] >= BUDGET["t_max"]
    first, last_two = won["values"][0], won["values"][-2:]
    assert first <= RANDOM_WIN_RATE, won["values"]
    assert min(last_two) >= 0.3 and min(last_two) >= first + 0.25, won["values"]
    train_won = metrics["battle_won_mean"]["values"]
    assert train_won[0] <= RANDOM_WIN_RATE and max(train_won) > train_won[0], train_won


MAPPO_BUDGET = {"algo": "mappo", "env": {"name": "smax", "map_name": "3m"}, "seed": 0,
                "t_max": 100_000, "n_envs": 32, "batch_size": 32, "gamma": 0.99, "lr": 1e-3, "critic_lr": 1e-3,
                "test_interval": 20_000, "test_episodes": 128, "log_interval": 20_000}
MARGIN_OVER_SCRIPT = 0.05


@pytest.mark.slow
def test_learning_on_smax_3m_beats_the_scripted_focus_fire(workdir):
    env = make_env({"name": "smax", "map_name": "3m"}, 256)
    script = float(episode_summary(rollout(env, scripted, list(range(7000, 7256)))[1])[1].mean())
    assert 0.35 <= script <= 0.65, script  # the script and SMAX's heuristic enemy are about even
    result = train(MAPPO_BUDGET, results_dir="runs")
    assert result.status == "COMPLETED"
    won = json.loads((result.run_dir / "metrics.json").read_text())["test_battle_won_mean"]
    assert won["steps"][-1] >= MAPPO_BUDGET["t_max"] and won["values"][0] == 0.0
    last_two = sum(won["values"][-2:]) / 2
    assert last_two >= script + MARGIN_OVER_SCRIPT, (script, won["values"])
