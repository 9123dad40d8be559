"""The reference behaviours of docs/fidelity.md, each checked against an independent computation:
the clipped surrogate's gradient, COMA's textbook advantage (m = 1), PyMARL's epsilon floor and its
per-time-step critic schedule with target updates counted in critic steps."""
import copy

import pytest
import torch
import torch.nn.functional as F

from algos.asae import ASAE
from algos.base import PolicyController
from algos.coma import COMA
from algos.critic import td_lambda_targets
from algos.networks import batch_agent_inputs, epsilon_floor, masked_log_softmax
from algos.ppo import clipped_surrogate_loss
from envs.base import TeamObs
from tests.test_asae_math import COMMON, SPEC, actor_gradient, make, random_batch


# --- the clipped surrogate (eq. 18) -----------------------------------------------------------------
def test_clipped_surrogate_gradient_is_zero_exactly_where_the_clip_binds():
    """min(r A, clip(r) A): the gradient vanishes for r > 1 + eps with A > 0 and for r < 1 - eps with
    A < 0, and is the plain -r A / N elsewhere (including outside the range on the other sign)."""
    eps = 0.1
    ratio = torch.tensor([1.3, 1.3, 0.7, 0.7, 1.05, 0.95])
    adv = torch.tensor([2.0, -2.0, -2.0, 2.0, 1.5, -1.5])
    binds = torch.tensor([True, False, True, False, False, False])
    logp_old = torch.log(torch.tensor([0.2, 0.3, 0.4, 0.5, 0.25, 0.35]))
    logp = (logp_old + ratio.log()).requires_grad_(True)
    mask = torch.ones(6)
    loss, clip_frac = clipped_surrogate_loss(logp, logp_old, adv, mask, eps)
    (grad,) = torch.autograd.grad(loss, logp)
    assert (grad[binds] == 0).all()
    torch.testing.assert_close(grad[~binds], -(ratio * adv)[~binds] / 6)
    assert clip_frac.item() == pytest.approx(4 / 6)  # |r - 1| > eps for the first four
    # and the loss is the pessimistic bound: swapping min for max would change these values
    expected = -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean()
    torch.testing.assert_close(loss, expected)


# --- m = 1 against COMA's textbook advantage --------------------------------------------------------
def textbook_coma_gradient(learner, batch, t_env):
    """-E[A^a log pi^a(u^a)] with A^a = Q(s, u)[u^a] - sum_u' pi^a(u') Q(s, (u^-a, u')), Q from the
    critic's weights as the concatenated-input MLP and pi the floored masked softmax, written out here."""
    critic, n, a = learner.critic, SPEC.n_agents, SPEC.n_actions
    b, t1 = batch.obs.shape[:2]
    onehot = F.one_hot(batch.actions, a).float().reshape(b, t1, 1, n * a).expand(b, t1, n, n * a)
    inputs = torch.cat([batch.state.unsqueeze(2).expand(b, t1, n, -1), batch.obs,
                        batch.last_actions_onehot().reshape(b, t1, 1, n * a).expand(b, t1, n, n * a),
                        torch.eye(n).expand(b, t1, n, n), onehot * (1 - torch.eye(n).repeat_interleave(a, dim=1))],
                       dim=-1)
    w = torch.cat([critic.base.weight, critic.action_rows.reshape(n * a, -1).t()], dim=1)
    with torch.no_grad():
        q = critic.out(F.relu(critic.fc2(F.relu(inputs @ w.t() + critic.base.bias))))[:, :-1]
    logits = learner.actor(batch_agent_inputs(batch))[:, :-1]
    avail = batch.avail[:, :-1]
    eps = learner.epsilon(t_env)
    softmax = torch.softmax(logits.masked_fill(~avail, -1e10), dim=-1)
    pi = ((1 - eps) * softmax + eps * avail / avail.sum(-1, keepdim=True)) * avail
    executed = batch.actions[:, :-1].unsqueeze(-1)
    adv = (q.gather(-1, executed).squeeze(-1) - (pi.detach() * q).sum(-1))
    mask = batch.filled.unsqueeze(-1).expand_as(adv)
    loss = -(adv * pi.gather(-1, executed).squeeze(-1).log() * mask).sum() / mask.sum()
    return torch.autograd.grad(loss, list(learner.actor.parameters()))


@pytest.mark.parametrize("cls,options", [(COMA, {}), (ASAE, {"m": 1, "clip": None, "ppo_epochs": 1,
                                                             "log_async_gap": False})])
@pytest.mark.parametrize("t_env", [0, 60_000, 500_000])  # floor 0.5, 0.206, 0.01
def test_m1_actor_gradient_is_comas_textbook_gradient(cls, options, t_env):
    batch = random_batch()
    learner = make(cls, **options)
    learner.train_critic = lambda batch: {}  # keep the critic fixed: the textbook side reads its weights
    grads = []
    learner.step_actor = lambda loss: grads.append(torch.autograd.grad(loss, list(learner.actor.parameters()))) or 0.0
    learner.train(batch, t_env=t_env, episodes=0)
    for got, want in zip(grads[0], textbook_coma_gradient(learner, batch, t_env)):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_m10_asae_gradient_differs_from_the_textbook_coma_gradient():
    """The comparison above can fail: with m = 10 the advantages, and so the gradient, move."""
    batch = random_batch()
    learner = make(ASAE, m=10, clip=None, ppo_epochs=1, log_async_gap=False)
    learner.train_critic = lambda batch: {}
    got = actor_gradient(learner, batch)
    want = textbook_coma_gradient(learner, batch, 0)
    assert any(not torch.allclose(g, w, rtol=1e-3, atol=1e-5) for g, w in zip(got, want))


# --- PyMARL's epsilon floor -------------------------------------------------------------------------
def test_epsilon_floor_mixes_uniform_over_available_actions_only():
    logits = torch.tensor([[8.0, 0.0, -3.0, 1.0]])
    avail = torch.tensor([[True, True, False, True]])
    pi = epsilon_floor(masked_log_softmax(logits, avail), avail, 0.3).exp()
    soft = torch.softmax(logits.masked_fill(~avail, float("-inf")), dim=-1)
    torch.testing.assert_close(pi, 0.7 * soft + 0.3 * avail / 3)
    assert pi[0, 2] == 0 and pi.sum().item() == pytest.approx(1.0)
    assert (pi[avail] >= 0.1 - 1e-7).all()


def test_learner_floor_follows_pymarls_schedule_and_acting_uses_it():
    learner = make(COMA)
    assert [learner.epsilon(t) for t in (0, 50_000, 100_000, 10**7)] == pytest.approx([0.5, 0.255, 0.01, 0.01])
    batch = random_batch()
    with torch.no_grad():
        for t_env, eps in ((0, 0.5), (10**6, 0.01)):
            pi = learner.policy_log_probs(batch, t_env).exp()
            floor = (eps / batch.avail.sum(-1)).unsqueeze(-1)
            assert ((pi >= floor - 1e-7) | ~batch.avail).all() and (pi[~batch.avail] == 0).all()
    # acting: a policy that puts all its mass on action 0 still takes the others at the floor's rate
    controller = learner.controller
    assert isinstance(controller, PolicyController)
    with torch.no_grad():
        for p in learner.actor.fc2.parameters():
            p.zero_()
        learner.actor.fc2.bias[0] = 50.0
    n_envs = 4000
    obs = TeamObs(torch.zeros(n_envs, SPEC.n_agents, SPEC.obs_dim), torch.zeros(n_envs, SPEC.state_dim),
                  torch.ones(n_envs, SPEC.n_agents, SPEC.n_actions, dtype=torch.bool))
    last = torch.full((n_envs, SPEC.n_agents), -1)
    torch.manual_seed(0)
    acts, _ = controller.act(obs, last, controller.init_hidden(n_envs), t_env=0, test_mode=False)
    others = (acts != 0).float().mean().item()
    assert others == pytest.approx(0.5 * 3 / 4, abs=0.02)  # eps 0.5, 3 of 4 actions are "other"
    greedy, _ = controller.act(obs, last, controller.init_hidden(n_envs), t_env=0, test_mode=True)
    assert (greedy == 0).all()


# --- PyMARL's critic schedule -----------------------------------------------------------------------
def test_seq_critic_takes_one_step_per_time_step_latest_first_as_pymarl():
    """One RMSprop step per time step t = T-1 .. 0 on the masked mean over (episode, agent) of that step,
    written out here on a copy; the parameters match, and the steps count toward the target interval."""
    batch = random_batch(b=5, t=6)  # episode 0 ends early: its later steps are padding
    learner = make(COMA, target_update_interval=10)
    reference = copy.deepcopy(learner.critic)
    initial_target = copy.deepcopy(learner.target_critic)
    opt = torch.optim.RMSprop(reference.parameters(), lr=COMMON.critic_lr, alpha=0.99, eps=1e-5)
    with torch.no_grad():
        _, target_taken = learner.target_critic.q_taken(learner.target_critic.base_features(batch), batch.actions)
        targets = td_lambda_targets(batch, target_taken, COMMON.gamma, learner.cfg.td_lambda)
    steps = 0
    for t in reversed(range(batch.max_t)):
        mask = batch.filled[:, t].unsqueeze(-1).expand(-1, SPEC.n_agents)
        if mask.sum() == 0:
            continue
        _, taken = reference.q_taken(reference.base_features(batch)[:, t], batch.actions[:, t])
        loss = (((taken - targets[:, t]) ** 2) * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 10.0)
        opt.step()
        steps += 1
    learner.train_critic(batch)
    for got, want in zip(learner.critic.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert learner.critic_steps == steps == 6
    for target, initial in zip(learner.target_critic.parameters(), initial_target.parameters()):
        assert torch.equal(target, initial)  # 6 critic steps < 10: not refreshed yet
    learner.train_critic(batch)  # 12 critic steps >= 10: the target critic is refreshed
    for online, target in zip(learner.critic.parameters(), learner.target_critic.parameters()):
        assert torch.equal(online, target)
    assert learner.last_target_update_step == 12
