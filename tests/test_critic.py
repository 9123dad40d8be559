"""COMA's critic: the split first layer is the concatenated-input MLP; TD(lambda) targets by hand."""
import torch
import torch.nn.functional as F

from algos.critic import CentralQCritic, td_lambda_targets
from tests.test_asae_math import SPEC, random_batch


def test_split_first_layer_equals_concatenated_input_mlp():
    torch.manual_seed(0)
    critic = CentralQCritic(SPEC, hidden_dim=16)
    batch = random_batch()
    n, a = SPEC.n_agents, SPEC.n_actions
    q_fast = critic(critic.base_features(batch), batch.actions.unsqueeze(2)).squeeze(2)
    # The textbook input: state, own obs, others' one-hot actions (own slot zeroed), last joint action, id.
    b, t1 = batch.obs.shape[:2]
    onehot = F.one_hot(batch.actions, a).float().reshape(b, t1, 1, n * a).expand(b, t1, n, n * a)
    own_zeroed = onehot * (1 - torch.eye(n).repeat_interleave(a, dim=1))
    inputs = torch.cat([batch.state.unsqueeze(2).expand(b, t1, n, -1), batch.obs,
                        batch.last_actions_onehot().reshape(b, t1, 1, n * a).expand(b, t1, n, n * a),
                        torch.eye(n).expand(b, t1, n, n), own_zeroed], dim=-1)
    w = torch.cat([critic.base.weight, critic.action_rows.reshape(n * a, -1).t()], dim=1)
    h = F.relu(inputs @ w.t() + critic.base.bias)
    q_slow = critic.out(F.relu(critic.fc2(h)))
    torch.testing.assert_close(q_fast, q_slow, rtol=1e-5, atol=1e-6)


def test_td_lambda_targets_match_hand_computation():
    batch = random_batch(b=2, t=3, ragged=False)
    batch.reward[:] = torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]])
    batch.terminated[:] = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    batch.filled[:] = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    q = torch.tensor([[10.0, 20.0, 30.0, 40.0], [5.0, 6.0, 7.0, 8.0]]).unsqueeze(-1).expand(2, 4, SPEC.n_agents)
    g, lam = 0.5, 0.8
    out = td_lambda_targets(batch, q.contiguous(), g, lam)[..., 0]
    # Episode 0 is truncated after 3 steps: bootstrap from Q_3 = 40.
    g2 = 3 + g * 40
    g1 = 2 + g * ((1 - lam) * 30 + lam * g2)
    g0 = 1 + g * ((1 - lam) * 20 + lam * g1)
    # Episode 1 terminates at t = 1: no bootstrap there.
    h1 = 0.0
    h0 = 1 + g * ((1 - lam) * 6 + lam * h1)
    torch.testing.assert_close(out, torch.tensor([[g0, g1, g2], [h0, h1, 0.0]]))


def test_packed_critic_fit_equals_the_masked_whole_batch_loss():
    """The critic update computes only real slots (and the slot after each for the targets); its loss and
    mean target are the masked means over the whole padded batch."""
    from algos.coma import COMA
    from tests.test_asae_math import COMMON, make

    batch = random_batch(b=5, t=6)  # episode 0 ends early: padding slots
    learner = make(COMA, critic_train_mode="batch", critic_epochs=1)
    with torch.no_grad():
        _, target_taken = learner.target_critic.q_taken(learner.target_critic.base_features(batch), batch.actions)
        targets = td_lambda_targets(batch, target_taken, COMMON.gamma, learner.cfg.td_lambda)
        _, taken = learner.critic.q_taken(learner.critic.base_features(batch), batch.actions)
    mask = batch.filled.unsqueeze(-1).expand_as(targets)
    loss = (((taken[:, :-1] - targets) ** 2) * mask).sum() / mask.sum()
    metrics = learner.train_critic(batch)
    assert abs(metrics["critic_loss"] - loss.item()) < 1e-5 * max(1.0, loss.item())
    assert abs(metrics["target_mean"] - ((targets * mask).sum() / mask.sum()).item()) < 1e-5
