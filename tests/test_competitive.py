"""Competitive predator-prey (paper Figs. 7-8): two learning teams, each with its own learner, optimizer
and reward; the named configs compose with command-line overrides."""
import json
import subprocess

import pytest
import torch

from algos.asae import ASAE
from algos.coma import COMA
from experiments.api import resolve_config, train
from experiments.config import validate
from experiments.trainer import MetricLogger, Trainer
from tests.conftest import asae_cli

# One iteration: 2 envs x at most 10 steps, no test episodes.
ONE_ITERATION = {"env": {"episode_limit": 10, "n_predators": 2, "n_prey": 2}, "n_envs": 2, "batch_size": 2,
                 "t_max": 1, "test_episodes": 0}


def tensors(state):
    """Every tensor of a (nested) state dict, by path."""
    if isinstance(state, torch.Tensor):
        return {"": state.clone()}
    if isinstance(state, dict):
        return {f"{k}.{p}": t for k, v in state.items() for p, t in tensors(v).items()}
    return {}


def optimizer_params(learner):
    return {id(p) for opt in vars(learner).values() if isinstance(opt, torch.optim.Optimizer)
            for group in opt.param_groups for p in group["params"]}


@pytest.mark.parametrize("named, predator_cls, prey_cls", [
    ("competitive_paper", ASAE, COMA), ("competitive_paper_reverse", COMA, ASAE)])
def test_each_team_trains_its_own_learner_on_its_own_reward(named, predator_cls, prey_cls):
    trainer = Trainer(validate(resolve_config(ONE_ITERATION, [named])), MetricLogger(), checkpoint_dir=None)
    learners = trainer.learners
    assert type(learners["predator"]) is predator_cls and type(learners["prey"]) is prey_cls
    assert optimizer_params(learners["predator"]) and optimizer_params(learners["prey"])
    assert not optimizer_params(learners["predator"]) & optimizer_params(learners["prey"])

    env_rewards = {"predator": [], "prey": []}
    env_step = trainer.env.step

    def recording_step(actions):
        result = env_step(actions)
        for team in env_rewards:
            env_rewards[team].append(result.reward[team].clone())
        return result

    trainer.env.step = recording_step
    received = {}
    for team, learner in learners.items():
        def spy(batch, t_env, episodes, team=team, train=learner.train):
            received[team] = batch
            return train(batch, t_env, episodes)
        learner.train = spy
    before = {team: tensors(learner.state_dict()) for team, learner in learners.items()}

    trainer.train()

    assert trainer.iteration == 1 and set(received) == {"predator", "prey"}
    for team, batch in received.items():
        spec = trainer.env.info.teams[0 if team == "predator" else 1]
        assert batch.obs.shape[2] == spec.n_agents and batch.obs.shape[3] == spec.obs_dim
        steps = batch.reward.shape[1]
        own = torch.stack(env_rewards[team][:steps], dim=1) * batch.filled
        assert torch.equal(batch.reward, own), team
    assert not torch.equal(received["predator"].reward, received["prey"].reward)
    for team, learner in learners.items():
        after = tensors(learner.state_dict())
        for net in ("actor.", "critic."):
            changed = [k for k in after if k.startswith(net) and not torch.equal(before[team][k], after[k])]
            assert changed, f"{team} {net[:-1]} parameters did not change"


def test_competitive_paper_composes_with_cli_overrides_and_logs_both_teams(workdir):
    args = ["train", "with", "competitive_paper", "env.n_predators=4", "env.n_prey=4", "env.episode_limit=10",
            "t_max=40", "n_envs=2", "batch_size=2", "test_episodes=2", "log_interval=1", "seed=2"]
    proc = subprocess.run(asae_cli() + args, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_dir = workdir / "results" / "runs" / "1"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"]["n_predators"] == config["env"]["n_prey"] == 4 and config["env"]["episode_limit"] == 10
    assert config["teams"] == {"predator": "asae", "prey": "coma"} and config["t_max"] == 40
    assert config["gamma"] == 0.98 and config["lr"] == 5e-5 and config["critic_lr"] == 5e-4
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for team in ("predator", "prey"):
        for name in ("return_mean", "test_return_mean", "critic_loss", "actor_loss", "entropy", "capture_rate_mean",
                     "test_capture_rate_mean"):
            assert f"{team}/{name}" in metrics, f"{team}/{name}"
    assert "predator/kl" in metrics and "prey/kl" not in metrics  # ASAE's diagnostics belong to its team only


def test_reverse_direction_takes_learner_overrides_for_the_asae_prey(workdir):
    result = train({**ONE_ITERATION, "test_episodes": 2, "team_learners": {"prey": {"m": 3}}},
                   named_configs=["competitive_paper_reverse"], results_dir="runs")
    assert result.status == "COMPLETED"
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["algo"] == "coma" and config["teams"] == {"predator": "coma", "prey": "asae"}
    assert config["team_learners"] == {"prey": {"m": 3}}
    assert validate(config).learner_config("prey", "asae").m == 3
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert "prey/kl" in metrics and "predator/kl" not in metrics
    assert "predator/test_capture_rate_mean" in metrics and "prey/test_return_mean" in metrics
