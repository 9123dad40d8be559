"""The ASAE math of DESIGN.md, checked against COMA and against exact enumeration."""
import dataclasses
import itertools

import pytest
import torch

from algos.asae import ASAE
from algos.base import Common
from algos.batch import EpisodeBatch
from algos.coma import COMA
from algos.networks import sample_available
from envs.base import TeamSpec
from validation import build

SPEC = TeamSpec("team", n_agents=3, obs_dim=4, state_dim=6, n_actions=4)
COMMON = Common(gamma=0.9, lr=1e-3, critic_lr=1e-3, batch_size=4, episode_limit=5, device=torch.device("cpu"))


def random_batch(b=4, t=5, spec=SPEC, seed=0, ragged=True) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    n, a = spec.n_agents, spec.n_actions
    avail = torch.rand(b, t + 1, n, a, generator=g) > 0.3
    avail[..., 0] = True  # no-op always available, as in the envs
    probs = torch.ones(b, t + 1, n, a)
    actions = sample_available(probs, avail, generator=g)
    filled = torch.ones(b, t)
    terminated = torch.zeros(b, t)
    if ragged:  # one episode ends early in a terminal state
        filled[0, 3:] = 0
        terminated[0, 2] = 1
    return EpisodeBatch(obs=torch.randn(b, t + 1, n, spec.obs_dim, generator=g),
                        state=torch.randn(b, t + 1, spec.state_dim, generator=g), avail=avail, actions=actions,
                        reward=torch.randn(b, t, generator=g) * filled, terminated=terminated, filled=filled)


def make(cls, **overrides):
    torch.manual_seed(123)
    return cls(SPEC, build(cls.Config, overrides), COMMON)


def actor_gradient(learner, batch):
    """The gradient of the learner's first actor step on ``batch`` (the step itself is not applied)."""
    grads = []

    def record(loss):
        grads.append(torch.autograd.grad(loss, list(learner.actor.parameters())))
        return 0.0

    learner.step_actor = record
    learner.train(batch, t_env=0, episodes=0)
    return grads[0]


def test_m1_unclipped_one_epoch_asae_gradient_equals_coma():
    batch = random_batch()
    asae = make(ASAE, m=1, clip=None, ppo_epochs=1, log_async_gap=False)
    coma = make(COMA)
    for g_asae, g_coma in zip(actor_gradient(asae, batch), actor_gradient(coma, batch)):
        assert g_coma.abs().sum() > 0
        torch.testing.assert_close(g_asae, g_coma, rtol=1e-5, atol=1e-7)


def test_clipping_changes_the_gradient_once_ratios_move():
    """Sanity of the comparison above: a different estimator (m > 1) does change the gradient."""
    batch = random_batch()
    g_m1 = actor_gradient(make(ASAE, m=1, clip=None, ppo_epochs=1, log_async_gap=False), batch)
    g_m8 = actor_gradient(make(ASAE, m=8, clip=None, ppo_epochs=1, log_async_gap=False), batch)
    assert any(not torch.allclose(a, b) for a, b in zip(g_m1, g_m8))


class TabularCritic:
    """Q(s, u^{-a}, .) from an explicit table over joint actions: Q_a(u'; u^{-a}) = table[u with u^a = u']."""

    def __init__(self, table: torch.Tensor):
        self.table = table  # [A] * n
        self.n = table.dim()

    def base_features(self, batch):  # no features: a zero per agent, shaped like the real critic's [B, T+1, n, H]
        return torch.zeros(*batch.actions.shape, 1)

    def __call__(self, base, joint):  # joint [..., m, n] -> [..., m, n, A]
        out = []
        for a in range(self.n):
            idx = [joint[..., j] for j in range(self.n)]
            per_action = []
            for u in range(self.table.shape[a]):
                idx[a] = torch.full_like(joint[..., a], u)
                per_action.append(self.table[tuple(idx)])
            out.append(torch.stack(per_action, dim=-1))
        return torch.stack(out, dim=-2)


def exact_marginal_advantage(table, pi, executed, avail):
    """Enumerate u^{-a} under pi^{-a}: A_a = sum_{u^-a} pi^-a(u^-a) [Q(u^a, u^-a) - sum_u' pi^a(u') Q(u', u^-a)]."""
    n, a_n = table.dim(), table.shape[0]
    out = torch.zeros(n)
    for a in range(n):
        others = [j for j in range(n) if j != a]
        for combo in itertools.product(range(a_n), repeat=n - 1):
            p = 1.0
            joint = [0] * n
            for j, u in zip(others, combo):
                p *= float(pi[j, u])
                joint[j] = u
            joint[a] = int(executed[a])
            q_exec = table[tuple(joint)]
            baseline = 0.0
            for u in range(a_n):
                joint[a] = u
                baseline += float(pi[a, u]) * table[tuple(joint)]
            out[a] += p * (q_exec - baseline)
    return out


def test_marginal_advantage_converges_to_enumeration_as_m_grows():
    torch.manual_seed(0)
    spec, a_n = SPEC, SPEC.n_actions
    batch = random_batch(b=1, t=1, ragged=False)
    learner = make(ASAE)
    table = torch.randn([a_n] * spec.n_agents)
    learner.critic = TabularCritic(table)
    logits = torch.randn(1, 2, spec.n_agents, a_n)
    pi = torch.softmax(logits.masked_fill(~batch.avail, -1e10), -1)
    exact = exact_marginal_advantage(table, pi[0, 0], batch.actions[0, 0], batch.avail[0, 0])
    errors = {}
    for m in (1, 10, 100, 2000):
        estimates = torch.stack([learner.marginal_advantage(batch, pi, m)[0, 0] for _ in range(20)])
        errors[m] = (estimates - exact).abs().mean().item()
    assert errors[2000] < 0.05 * max(errors[1], 1e-3) + 0.02
    assert errors[1] > errors[10] > errors[100] > errors[2000]


def test_sampled_joint_actions_never_pick_unavailable_actions():
    g = torch.Generator().manual_seed(1)
    avail = torch.rand(64, 6, 5, 7, generator=g) > 0.6
    avail[..., 3] = True
    probs = torch.softmax(torch.randn(64, 6, 5, 7, generator=g), -1)  # mass on unavailable actions too
    for _ in range(20):
        actions = sample_available(probs, avail, generator=g)
        assert avail.gather(-1, actions.unsqueeze(-1)).all()


def test_marginal_advantage_samples_respect_masks():
    """Through the learner: every joint sample fed to the critic is available."""
    batch = random_batch(b=8, t=6)
    learner = make(ASAE, m=16)
    seen = []

    class Recorder(TabularCritic):
        def __call__(self, base, joint):
            seen.append(joint)
            return super().__call__(base, joint)

    learner.critic = Recorder(torch.randn([SPEC.n_actions] * SPEC.n_agents))
    pi = torch.softmax(torch.randn(8, 7, SPEC.n_agents, SPEC.n_actions), -1)
    learner.marginal_advantage(batch, pi, m=16)
    joint = seen[0]  # [R, m, n]: the real steps of the batch, packed
    real = batch.filled.bool()
    assert joint.shape == (int(real.sum()), 16, SPEC.n_agents)
    avail = batch.avail[:, :-1][real].unsqueeze(1).expand(*joint.shape, SPEC.n_actions)
    assert avail.gather(-1, joint.unsqueeze(-1)).all()
    torch.testing.assert_close(joint[:, 0], batch.actions[:, :-1][real])  # sample 1 is the executed joint action
    assert (joint[:, 1:] != joint[:, :1]).any()  # the others are drawn, not copies


@pytest.mark.parametrize("kind", ["coma", "td"])
def test_asae_update_runs_and_reports_diagnostics(kind):
    learner = make(ASAE, advantage=kind)
    metrics = learner.train(random_batch(), t_env=0, episodes=4)
    for key in ("critic_loss", "actor_loss", "entropy", "kl", "clip_frac", "async_gap"):
        assert key in metrics and metrics[key] == metrics[key]  # present and not NaN
    assert metrics["kl"] > 0


@pytest.mark.parametrize("kind", ["coma", "td"])
def test_packed_advantage_equals_the_whole_batch_formula(kind):
    """Only real steps (and for "td" the step after each) go through the critic; the result is the
    formula evaluated on every slot of the padded batch, then masked."""
    batch = random_batch(b=5, t=6)
    learner = make(ASAE)
    pi = torch.softmax(torch.randn(5, 7, SPEC.n_agents, SPEC.n_actions).masked_fill(~batch.avail, -1e10), -1)
    packed = learner.marginal_advantage(batch, pi, m=1, kind=kind)
    with torch.no_grad():
        q = learner.critic(learner.critic.base_features(batch), batch.actions.unsqueeze(2)).squeeze(2)  # [B, T+1, n, A]
        v = (q * pi).sum(-1)
        if kind == "coma":
            whole = q.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1) - v
            whole = whole[:, :-1]
        else:
            whole = batch.reward[..., None] + COMMON.gamma * (1 - batch.terminated[..., None]) * v[:, 1:] - v[:, :-1]
    torch.testing.assert_close(packed, whole * batch.filled[..., None], rtol=1e-5, atol=1e-6)
    assert packed.abs().sum() > 0


def test_rerun_with_the_same_policies_reproduces_the_estimate_without_the_critic():
    """The asynchrony gap's rerun uses the update's random numbers: unchanged policies -> the same
    estimate exactly (a gap of 0, not Monte-Carlo noise), and no joint sample needs the critic again."""
    batch = random_batch(b=6, t=5)
    learner = make(ASAE)
    pi = torch.softmax(torch.randn(6, 6, SPEC.n_agents, SPEC.n_actions).masked_fill(~batch.avail, -1e10), -1)
    first, samples = learner.marginal_estimate(batch, pi, m=10)
    calls = []
    critic = learner.critic
    learner.critic = lambda base, joint: calls.append(joint.shape) or critic(base, joint)
    learner.critic.base_features = critic.base_features
    again, _ = learner.marginal_estimate(batch, pi, m=10, rerun=samples)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert calls == []  # nothing to re-evaluate
    independent = learner.marginal_advantage(batch, pi, m=10)
    assert (independent - first).abs().sum() > 0  # fresh draws do differ


@pytest.mark.parametrize("kind", ["coma", "td"])
def test_rerun_reevaluates_only_changed_samples_and_equals_a_full_recomputation(kind):
    batch = random_batch(b=6, t=5)
    learner = make(ASAE)
    logits = torch.randn(6, 6, SPEC.n_agents, SPEC.n_actions)
    pi_old = torch.softmax(logits.masked_fill(~batch.avail, -1e10), -1)
    pi_new = torch.softmax((logits + 0.5 * torch.randn_like(logits)).masked_fill(~batch.avail, -1e10), -1)
    _, samples = learner.marginal_estimate(batch, pi_old, m=10, kind=kind)
    partial, new_samples = learner.marginal_estimate(batch, pi_new, m=10, kind=kind, rerun=samples)
    everything_changed = samples._replace(joint=torch.full_like(samples.joint, -1))
    full, _ = learner.marginal_estimate(batch, pi_new, m=10, kind=kind, rerun=everything_changed)
    torch.testing.assert_close(partial, full, rtol=1e-5, atol=1e-6)
    moved = (new_samples.joint != samples.joint).any(-1)
    assert 0 < int(moved.sum()) < moved.numel()  # some samples moved, some did not
    assert (new_samples.joint[:, 0] == samples.joint[:, 0]).all()  # sample 1 stays the executed action


def test_gumbel_max_draws_follow_the_masked_policy_and_never_pick_unavailable_actions():
    from algos.networks import gumbel_max_available

    torch.manual_seed(0)
    avail = torch.tensor([[True, False, True, True], [False, True, False, True]])
    probs = torch.tensor([[0.1, 0.6, 0.2, 0.1], [0.5, 0.0, 0.5, 0.0]])  # row 2: no mass on what is available
    n = 40000
    noise = -torch.log(-torch.log(torch.rand(n, 2, 4)))
    draws = gumbel_max_available(probs, avail, noise)  # [n, 2]
    assert avail.gather(-1, draws.t()).all()
    freq = torch.stack([torch.bincount(draws[:, r], minlength=4).float() / n for r in range(2)])
    expected = torch.tensor([[0.25, 0.0, 0.5, 0.25], [0.0, 0.5, 0.0, 0.5]])  # renormalised / uniform fallback
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)


@pytest.mark.parametrize("cls", [COMA, ASAE])
def test_standardised_rewards_make_the_actor_critic_update_blind_to_reward_scale_and_offset(cls):
    """standardise_rewards (EPyMARL's): rewards r and 10 r + 5 give the same critic and actor update (up
    to the moments' prior); raw rewards do not."""
    batch = random_batch(seed=5)
    scaled = dataclasses.replace(batch, reward=(batch.reward * 10 + 5) * batch.filled)
    for standardise in (True, False):
        a, b = make(cls, standardise_rewards=standardise), make(cls, standardise_rewards=standardise)
        torch.manual_seed(7)
        a.train(batch, t_env=0, episodes=4)
        torch.manual_seed(7)  # the same marginal-advantage draws
        b.train(scaled, t_env=0, episodes=4)
        gap = max(float((p - q).detach().abs().max()) for net in ("actor", "critic")
                  for p, q in zip(getattr(a, net).parameters(), getattr(b, net).parameters()))
        assert (gap < 1e-4) == standardise, gap
