"""MAPPO, IPPO and DOP: GAE, value clipping, DOP's linear mixing and tree-backup targets by hand,
config validation, and exact checkpoint/resume through the trainer."""
import dataclasses
import threading

import pytest
import torch

import algos.dop
from algos.dop import DOP, DecomposedCritic, tree_backup_targets
from algos.ippo import IPPO
from algos.mappo import MAPPO
from algos.ppo import gae, value_loss
from validation import ConfigError, build
from experiments.api import find_runs, resolve_config, train
from tests.test_asae_math import COMMON, SPEC, random_batch
from tests.test_determinism import metric_values

GAMMA, LAM = 0.5, 0.8


def two_episodes():
    """Episode 0 is truncated by the time limit after 3 steps; episode 1 terminates at t = 1."""
    batch = random_batch(b=2, t=3, ragged=False)
    batch.reward[:] = torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]])
    batch.terminated[:] = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    batch.filled[:] = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    return batch


def test_gae_matches_hand_computation_with_truncation_and_terminal():
    batch = two_episodes()
    values = torch.tensor([[10.0, 20.0, 30.0, 40.0], [5.0, 6.0, 7.0, 8.0]]).unsqueeze(-1)  # one agent
    adv, ret = gae(batch, values, GAMMA, LAM)
    # Episode 0, truncated: the last step bootstraps from V(final observation) = 40.
    # delta_2 = 3 + .5 * 40 - 30 = -7, delta_1 = 2 + .5 * 30 - 20 = -3, delta_0 = 1 + .5 * 20 - 10 = 1
    # A_2 = -7, A_1 = -3 + .4 * -7 = -5.8, A_0 = 1 + .4 * -5.8 = -1.32
    # Episode 1, terminal at t = 1: no bootstrap from V = 7 there; t = 2 is padding.
    # delta_1 = 0 - 6 = -6, delta_0 = 1 + .5 * 6 - 5 = -1; A_1 = -6, A_0 = -1 + .4 * -6 = -3.4
    expected = torch.tensor([[-1.32, -5.8, -7.0], [-3.4, -6.0, 0.0]])
    torch.testing.assert_close(adv.squeeze(-1), expected)
    torch.testing.assert_close(ret.squeeze(-1), torch.tensor([[8.68, 14.2, 23.0], [1.6, 0.0, 0.0]]))


def test_gae_is_per_agent_and_lambda_limits():
    batch = two_episodes()
    values = torch.randn(2, 4, 3)
    adv, ret = gae(batch, values, GAMMA, LAM)
    for a in range(3):
        torch.testing.assert_close(adv[..., a], gae(batch, values[..., a:a + 1], GAMMA, LAM)[0][..., 0])
    # lambda = 0: one-step TD errors; lambda = 1 on episode 1: the discounted return minus V_0.
    one_step = gae(batch, values, GAMMA, 0.0)[0]
    torch.testing.assert_close(one_step[0, 0], batch.reward[0, 0] + GAMMA * values[0, 1] - values[0, 0])
    mc = gae(batch, values, GAMMA, 1.0)[0]
    torch.testing.assert_close(mc[1, 0], batch.reward[1, 0] + GAMMA * batch.reward[1, 1] - values[1, 0])


def test_value_clipping_is_pessimistic_and_stops_the_gradient():
    old, ret, mask = torch.tensor([1.0]), torch.tensor([3.0]), torch.ones(1)
    towards = torch.tensor([2.0], requires_grad=True)  # moved 1.0 towards the return, beyond the clip 0.2
    loss = value_loss(towards, old, ret, mask, clip=0.2)
    torch.testing.assert_close(loss, torch.tensor((1.2 - 3.0) ** 2))  # the clipped error is the larger one
    loss.backward()
    assert towards.grad.abs().item() == 0.0  # no incentive to move further this update
    away = torch.tensor([0.5])  # moved away: the unclipped (larger) error is kept
    torch.testing.assert_close(value_loss(away, old, ret, mask, clip=0.2), torch.tensor(2.5 ** 2))
    torch.testing.assert_close(value_loss(towards.detach(), old, ret, mask, clip=None), torch.tensor(1.0))
    inside = torch.tensor([1.1])  # within the clip range: plain squared error
    torch.testing.assert_close(value_loss(inside, old, ret, mask, clip=0.2), torch.tensor(1.9 ** 2))


def test_dop_mixing_weights_are_non_negative_and_q_tot_is_linear_in_agent_qs():
    torch.manual_seed(0)
    critic = DecomposedCritic(SPEC, hidden_dim=16, embed_dim=8)
    with torch.no_grad():  # push the hypernetwork towards negative outputs: |.| must still hold
        critic.hyper_k[-1].bias.fill_(-3.0)
    state = torch.randn(64, SPEC.state_dim)
    k, b = critic.mixing(state)
    assert k.shape == (64, SPEC.n_agents) and (k >= 0).all() and (k > 0).any()
    x, y = torch.randn(64, SPEC.n_agents), torch.randn(64, SPEC.n_agents)
    q = lambda v: critic.q_tot(v, state) - b  # noqa: E731
    torch.testing.assert_close(q(2.0 * x - 3.0 * y), 2.0 * q(x) - 3.0 * q(y), rtol=1e-5, atol=1e-5)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(critic.q_tot(x, state).sum(), x)
    torch.testing.assert_close(grad, k)  # dQ_tot / dQ_a = k_a(s) >= 0


def test_tree_backup_targets_match_hand_computation():
    batch = two_episodes()
    q = torch.tensor([[10.0, 20.0, 30.0, 40.0], [5.0, 6.0, 7.0, 8.0]])
    expected_q = q + torch.tensor([[1.0], [0.5]])
    trace = torch.tensor([[0.9, 0.5, 0.4, 0.2], [0.3, 0.6, 0.7, 0.8]])
    # gamma lambda = .4. Episode 0 (truncated: the last delta bootstraps from E_3 = 41):
    # delta = [1 + .5*21 - 10, 2 + .5*31 - 20, 3 + .5*41 - 30] = [1.5, -2.5, -6.5]
    # y_2 = 30 - 6.5 = 23.5; y_1 = 20 - 2.5 + .4 * c_2 * -6.5 = 16.46
    # y_0 = 10 + 1.5 + .4 * c_1 * -2.5 + .4^2 * c_1 * c_2 * -6.5 = 10.792
    # Episode 1 (terminal at t = 1): delta = [1 + .5 * 6.5 - 5, 0 - 6] = [-.75, -6]
    # y_1 = 6 - 6 = 0; y_0 = 5 - .75 + .4 * c_1 * -6 = 2.81; padding 0.
    full = tree_backup_targets(batch, q, expected_q, trace, GAMMA, LAM, n_steps=None)
    torch.testing.assert_close(full, torch.tensor([[10.792, 16.46, 23.5], [2.81, 0.0, 0.0]]))
    # Truncated after two terms: y_0 drops the third; one term is expected SARSA r + gamma E_{t+1}.
    two = tree_backup_targets(batch, q, expected_q, trace, GAMMA, LAM, n_steps=2)
    torch.testing.assert_close(two, torch.tensor([[11.0, 16.46, 23.5], [2.81, 0.0, 0.0]]))
    one = tree_backup_targets(batch, q, expected_q, trace, GAMMA, LAM, n_steps=1)
    torch.testing.assert_close(one, torch.tensor([[11.5, 17.5, 23.5], [4.25, 0.0, 0.0]]))


def test_dop_off_policy_traces_are_joint_current_policy_probabilities(monkeypatch):
    torch.manual_seed(0)
    learner = DOP(SPEC, build(DOP.Config, {}), COMMON)
    batch = random_batch()
    seen = {}

    def spy(b, q_taken, expected, trace, *args):
        seen["trace"] = trace
        return tree_backup_targets(b, q_taken, expected, trace, *args)

    monkeypatch.setattr(algos.dop, "tree_backup_targets", spy)
    learner.off_policy_targets(batch)
    with torch.no_grad():
        pi = learner.policy_log_probs(batch).exp()
    joint = torch.ones(batch.actions.shape[:2])
    for a in range(SPEC.n_agents):
        joint = joint * pi[:, :, a].gather(-1, batch.actions[:, :, a:a + 1]).squeeze(-1)
    torch.testing.assert_close(seen["trace"], joint)


@pytest.mark.parametrize("cls", [MAPPO, IPPO, DOP])
def test_update_reports_metrics(cls):
    torch.manual_seed(0)
    learner = cls(SPEC, build(cls.Config, {}), COMMON)
    metrics = learner.train(random_batch(), t_env=0, episodes=4)
    keys = ("critic_loss", "actor_loss", "entropy", "q_mean") if cls is DOP else \
        ("critic_loss", "actor_loss", "entropy", "clip_frac", "kl", "actor_grad_norm", "critic_grad_norm")
    for key in keys:
        assert key in metrics and metrics[key] == metrics[key]  # present and not NaN


def test_ippo_critic_sees_only_own_inputs_and_mappo_critic_sees_the_state():
    torch.manual_seed(0)
    batch = random_batch()
    other = random_batch(seed=1)
    mixed = dataclasses.replace(batch, state=other.state)
    ippo = IPPO(SPEC, build(IPPO.Config, {}), COMMON)
    mappo = MAPPO(SPEC, build(MAPPO.Config, {}), COMMON)
    torch.testing.assert_close(ippo.values(batch), ippo.values(mixed))
    assert not torch.allclose(mappo.values(batch), mappo.values(mixed))


def test_learner_options_come_from_the_config_and_are_checked(workdir):
    cfg = resolve_config({"algo": "mappo", "learner.clip": 0.3, "learner.value_clip": 0.5})
    assert cfg["learner"]["clip"] == 0.3 and cfg["learner"]["value_clip"] == 0.5
    assert cfg["learner"]["gae_lambda"] == 0.95
    assert resolve_config({"algo": "dop"})["learner"]["tb_lambda"] == 0.93
    with pytest.raises(ConfigError, match="learner.clip"):
        resolve_config({"algo": "ippo", "learner.clip": 1.5})
    with pytest.raises(ConfigError, match="learner.off_policy_weight"):
        resolve_config({"algo": "dop", "learner.off_policy_weight": 2})
    with pytest.raises(ConfigError, match="unknown config key learner.tb_lambda"):
        resolve_config({"algo": "mappo", "learner.tb_lambda": 0.9})


RESUME = {"t_max": 600, "n_envs": 4, "batch_size": 4, "test_interval": 200, "test_episodes": 4,
          "log_interval": 1, "checkpoint_interval": 100_000,
          "env": {"name": "mpe_spread", "episode_limit": 25, "backend": "batched"},
          "learner": {"rnn_hidden_dim": 16, "critic_hidden_dim": 16}}


@pytest.mark.parametrize("algo", ["mappo", "ippo", "dop"])
def test_resume_from_checkpoint_continues_exactly(workdir, algo):
    config = {**RESUME, "algo": algo}
    if algo != "dop":
        config["learner"] = {**RESUME["learner"], "minibatches": 2}  # random minibatches: the RNG must resume too
    full = train(config, results_dir="runs")
    stop = threading.Event()
    stop.set()  # stop after the first iteration, with a checkpoint
    part = train(config, results_dir="runs", stop_event=stop)
    assert part.status == "INTERRUPTED" and part.run_key == full.run_key
    resumed = train(config, results_dir="runs", resume_from=str(part.run_dir))
    assert resumed.status == "COMPLETED"
    values = metric_values(full.run_dir)
    assert "actor_loss" in values and len(values["actor_loss"][0]) >= 5  # the compared curves hold updates
    assert metric_values(resumed.run_dir) == values
    assert [r.status for r in find_runs("runs", full.run_key)] == ["COMPLETED", "INTERRUPTED", "COMPLETED"]
