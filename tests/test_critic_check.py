"""experiments.critic_check: a trained run's COMA critic set beside Monte-Carlo returns from copied SMAX
battles (a diagnostic behind docs/fidelity.md)."""
import json

import pytest
import torch

from experiments import critic_check
from experiments.api import train

TINY = {"algo": "asae", "env": {"name": "smax", "map_name": "3m"}, "seed": 0, "t_max": 256, "n_envs": 4,
        "batch_size": 4, "test_interval": 10_000, "test_episodes": 0, "log_interval": 10_000,
        "checkpoint_interval": 100}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    result = train(TINY, results_dir=str(tmp_path_factory.mktemp("runs")))
    assert result.status == "COMPLETED" and (result.run_dir / "checkpoint.pt").is_file()
    return result.run_dir


@pytest.mark.slow
def test_copied_battles_replay_the_original_when_nothing_differs(run_dir):
    """The Monte-Carlo copies start from the snapshot: with the executed joint action and the policy's
    greedy play a copy ends exactly as the original battle does."""
    cfg, env, learner, t_env = critic_check.load(run_dir, 6)
    rec, snap, hidden, done = critic_check.play_to(env, learner.controller, t_env, 3, list(range(6)))
    copy_env = critic_check.make_env(cfg.env, 6)
    copy_env.reset(list(range(6)))
    copy_env._state, copy_env._keys = snap

    def finish(e, actions, h):
        ret, over = torch.zeros(6), torch.zeros(6, dtype=torch.bool)
        res = e.step({"team": actions})
        for _ in range(e.info.episode_limit + 1):
            ret += torch.where(over, 0.0, res.reward["team"])
            over |= res.terminated | res.truncated
            if bool(over.all()):
                return ret
            actions, h = learner.controller.act(res.obs["team"], actions, h, t_env, test_mode=True)
            res = e.step({"team": actions})
        return ret

    original = finish(env, rec["actions"][-1], hidden)
    copied = finish(copy_env, rec["actions"][-1], hidden)
    assert torch.equal(original, copied)


@pytest.mark.slow
def test_report_lines_and_bad_input(run_dir, capsys, tmp_path):
    assert critic_check.main([str(run_dir), "--envs", "8", "--rollouts", "2", "--step", "2"]) == 0
    out = capsys.readouterr().out
    for line in ("correlation of centred action values", "best action agrees", "advantage sign agrees",
                 "MC standard error"):
        assert line in out
    assert critic_check.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint.pt" in err[0]
