"""IQL, VDN, QMIX: mixers, double-Q targets, exploration, replay masks, configs and exact resume."""
import json
import threading

import pytest
import torch

import algos
from algos.base import Common
from algos.batch import EpisodeBatch
from algos.exploration import EpsilonGreedyController, LinearSchedule, epsilon_greedy
from algos.iql import IQL
from algos.mixers import QMixer, VDNMixer
from algos.networks import RNNAgent
from algos.q_learning import n_step_targets
from algos.qmix import QMIX
from algos.replay import EpisodeReplayBuffer
from algos.vdn import VDN
from envs.base import TeamObs, TeamSpec
from validation import ConfigError, build

SPEC = TeamSpec("team", n_agents=3, obs_dim=4, state_dim=6, n_actions=4)
COMMON = Common(gamma=0.9, lr=1e-3, critic_lr=1e-3, batch_size=4, episode_limit=6, device=torch.device("cpu"))


def make(cls, common=COMMON, **overrides):
    torch.manual_seed(0)
    return cls(SPEC, build(cls.Config, overrides), common)


def ragged_batch(lengths, t=None, terminal=(), seed=0, spec=SPEC) -> EpisodeBatch:
    """Episodes of the given lengths padded to t steps; ``terminal`` lists episodes that end terminated."""
    g = torch.Generator().manual_seed(seed)
    b, n, a = len(lengths), spec.n_agents, spec.n_actions
    t = t or max(lengths)
    filled = torch.zeros(b, t)
    terminated = torch.zeros(b, t)
    for i, length in enumerate(lengths):
        filled[i, :length] = 1
        if i in terminal:
            terminated[i, length - 1] = 1
    avail = torch.rand(b, t + 1, n, a, generator=g) > 0.4
    avail[..., 0] = True
    actions = torch.multinomial(avail.reshape(-1, a).float(), 1, generator=g).reshape(b, t + 1, n)
    return EpisodeBatch(obs=torch.randn(b, t + 1, n, spec.obs_dim, generator=g),
                        state=torch.randn(b, t + 1, spec.state_dim, generator=g), avail=avail, actions=actions,
                        reward=torch.randn(b, t, generator=g) * filled, terminated=terminated, filled=filled)


# --- mixers -----------------------------------------------------------------------------------------
def test_vdn_is_the_sum():
    q = torch.randn(5, 7, 3)
    torch.testing.assert_close(VDNMixer()(q, torch.randn(5, 7, 6)), q.sum(-1))


@pytest.mark.parametrize("layers", [1, 2])
def test_qmix_shapes_and_monotonic(layers):
    for seed in range(5):
        torch.manual_seed(seed)
        mixer = QMixer(n_agents=3, state_dim=6, embed_dim=32, hypernet_dim=64, hypernet_layers=layers)
        q = (torch.randn(8, 5, 3) * 10).requires_grad_(True)
        states = torch.randn(8, 5, 6) * 3
        q_tot = mixer(q, states)
        assert q_tot.shape == (8, 5)
        (grad,) = torch.autograd.grad(q_tot.sum(), q)
        assert (grad >= 0).all(), "QMIX must be monotonic: dQ_tot/dQ_a >= 0"
        assert (grad > 0).any()
        # Each output depends only on its own (q, state) row.
        torch.testing.assert_close(mixer(q[2:3, 1:2], states[2:3, 1:2]), q_tot[2:3, 1:2])


def test_qmix_learner_uses_configured_mixer_sizes():
    learner = make(QMIX, mixing_embed_dim=16, hypernet_embed=24)
    assert learner.mixer.embed_dim == 16
    assert learner.mixer.hyper_w1[0].out_features == 24


# --- targets ----------------------------------------------------------------------------------------
def one_step_batch(terminated: bool) -> EpisodeBatch:
    """One transition (slot 0 -> slot 1), reward 1; action 2 unavailable at slot 1."""
    n, a = SPEC.n_agents, SPEC.n_actions
    avail = torch.ones(1, 2, n, a, dtype=torch.bool)
    avail[:, 1, :, 2] = False
    return EpisodeBatch(obs=torch.zeros(1, 2, n, SPEC.obs_dim), state=torch.zeros(1, 2, SPEC.state_dim), avail=avail,
                        actions=torch.zeros(1, 2, n, dtype=torch.long), reward=torch.ones(1, 1),
                        terminated=torch.full((1, 1), float(terminated)), filled=torch.ones(1, 1))


@pytest.mark.parametrize("cls", [IQL, VDN])
def test_double_q_takes_the_online_argmax_among_available_actions(cls):
    learner = make(cls)
    # Online net: the unavailable action 2 has the highest Q, action 1 is the best available one.
    online = torch.tensor([1.0, 5.0, 10.0, 0.0]).expand(1, 2, 3, 4).clone()
    # Target net: evaluates action 1 at 7; its own argmax (action 0) and the unavailable action differ.
    target = torch.tensor([100.0, 7.0, -50.0, 3.0]).expand(1, 2, 3, 4).clone()
    learner.agent_q = lambda net, batch: online if net is learner.agent else target
    per_agent = 1.0 + 0.9 * 7.0
    expected = torch.full((1, 1, 3), per_agent) if cls is IQL else torch.full((1, 1), 1.0 + 0.9 * 21.0)
    torch.testing.assert_close(learner.targets(one_step_batch(False), online), expected)
    # A terminal state does not bootstrap.
    torch.testing.assert_close(learner.targets(one_step_batch(True), online), torch.ones_like(expected))
    # Without double Q the target network's own max over available actions is used.
    plain = make(cls, double_q=False)
    plain.agent_q = lambda net, batch: online if net is plain.agent else target
    expected_plain = torch.full_like(expected, 1.0 + 0.9 * 100.0 * (1 if cls is IQL else 3))
    torch.testing.assert_close(plain.targets(one_step_batch(False), online), expected_plain)


def reference_n_step(batch: EpisodeBatch, values: torch.Tensor, gamma: float, n: int) -> torch.Tensor:
    """Plain loops: sum_{k<n} gamma^k r_{t+k} + gamma^n' (1 - term) V(t+n'), cut at the episode's end."""
    b, t_max = batch.reward.shape
    out = torch.zeros(b, t_max)
    for i in range(b):
        length = int(batch.filled[i].sum())
        for t in range(length):
            g, k = 0.0, 0
            while True:
                g += gamma ** k * float(batch.reward[i, t + k])
                last = t + k == length - 1
                if k == n - 1 or last:
                    g += gamma ** (k + 1) * (1 - float(batch.terminated[i, t + k])) * float(values[i, t + k + 1])
                    break
                k += 1
            out[i, t] = g
    return out


@pytest.mark.parametrize("n", [1, 3])
def test_n_step_targets_bootstrap_at_truncation_not_at_terminal(n):
    batch = ragged_batch([6, 3, 4, 1], terminal=(1,))
    values = torch.randn(4, 7)
    torch.testing.assert_close(n_step_targets(batch, values, 0.9, n), reference_n_step(batch, values, 0.9, n))
    # Per-agent values (IQL) broadcast the team reward over agents.
    per_agent = torch.stack([values, 2 * values], dim=-1)
    expected = torch.stack([reference_n_step(batch, v, 0.9, n) for v in (values, 2 * values)], dim=-1)
    torch.testing.assert_close(n_step_targets(batch, per_agent, 0.9, n), expected)


# --- exploration ------------------------------------------------------------------------------------
def test_epsilon_schedule_values():
    sched = LinearSchedule(1.0, 0.05, 50_000)
    assert sched(0) == 1.0
    assert sched(25_000) == pytest.approx(0.525)
    assert sched(40_000) == pytest.approx(0.24)
    assert sched(50_000) == pytest.approx(0.05)
    assert sched(1_000_000) == pytest.approx(0.05)
    defaults = build(QMIX.Config, {})
    assert (defaults.epsilon_start, defaults.epsilon_finish, defaults.epsilon_anneal_time) == (1.0, 0.05, 50_000)


@pytest.mark.parametrize("epsilon", [1.0, 0.525])
def test_epsilon_greedy_never_picks_an_unavailable_action(epsilon):
    torch.manual_seed(0)
    rows, a = 20_000, 5
    avail = torch.rand(rows, a) > 0.5
    avail[torch.arange(rows), torch.randint(0, a, (rows,))] = True  # at least one available action
    q = torch.randn(rows, a) + 100.0 * (~avail)  # unavailable actions look best
    actions = epsilon_greedy(q, avail, epsilon)
    assert avail.gather(1, actions.unsqueeze(1)).all()
    greedy = q.masked_fill(~avail, float("-inf")).argmax(1)
    frac_greedy = (actions == greedy).float().mean().item()
    n_avail = avail.sum(1).float()
    expected = (1 - epsilon) + epsilon * (1.0 / n_avail).mean().item()
    assert frac_greedy == pytest.approx(expected, abs=0.02)
    if epsilon == 1.0:  # uniform: every available action is taken
        full = avail.all(1)
        assert torch.bincount(actions[full], minlength=a).min() > 0


def test_controller_is_greedy_in_test_mode_and_explores_by_schedule():
    torch.manual_seed(0)
    n, a, b = 3, 5, 2000
    agent = RNNAgent(4 + a + n, 8, a)
    ctrl = EpsilonGreedyController(agent, TeamSpec("team", n, 4, 6, a), torch.device("cpu"), LinearSchedule(1.0, 0.05, 100))
    avail = torch.rand(b, n, a) > 0.5
    avail[..., 0] = True
    obs = TeamObs(obs=torch.randn(b, n, 4), state=torch.zeros(b, 6), avail=avail)
    last = torch.full((b, n), -1, dtype=torch.long)
    greedy, _ = ctrl.act(obs, last, ctrl.init_hidden(b), t_env=0, test_mode=True)
    again, _ = ctrl.act(obs, last, ctrl.init_hidden(b), t_env=0, test_mode=True)
    assert torch.equal(greedy, again)
    for t_env in (0, 50, 1000):
        acts, hidden = ctrl.act(obs, last, ctrl.init_hidden(b), t_env=t_env, test_mode=False)
        assert avail.gather(-1, acts.unsqueeze(-1)).all() and hidden.shape == (b, n, 8)
        assert ctrl.epsilon(t_env) == pytest.approx(LinearSchedule(1.0, 0.05, 100)(t_env))
    assert (acts == greedy).float().mean() > 0.9  # epsilon 0.05 at t_env = 1000


# --- replay and masks -------------------------------------------------------------------------------
def test_replay_sampling_respects_padding():
    buf = EpisodeReplayBuffer(capacity=5, episode_limit=6)
    buf.insert(ragged_batch([2, 4], seed=1))  # T = 4
    buf.insert(ragged_batch([6, 1, 3], seed=2))  # T = 6; wraps around the capacity
    assert len(buf) == 5
    lengths = sorted(int(x) for x in buf.storage["filled"].sum(1))
    assert lengths == [1, 2, 3, 4, 6]
    torch.manual_seed(0)
    for _ in range(10):
        sample = buf.sample(3)
        length = sample.filled.sum(1)
        assert sample.max_t == int(length.max())
        assert sample.obs.shape[1] == sample.max_t + 1
        for i in range(3):  # filled: ones then zeros; nothing after the end has reward or filled
            k = int(length[i])
            assert sample.filled[i, :k].eq(1).all() and sample.filled[i, k:].eq(0).all()
            assert sample.reward[i, k:].eq(0).all()
            assert sample.episode_end[i].sum() == 1 and sample.episode_end[i, k - 1] == 1


@pytest.mark.parametrize("cls", [IQL, VDN, QMIX])
def test_td_loss_ignores_everything_past_an_episodes_end(cls):
    learner = make(cls)
    batch = ragged_batch([5, 2, 3], t=5, terminal=(2,))
    chosen, targets, mask = learner.td_terms(batch)
    loss = ((chosen - targets) ** 2 * mask).sum() / mask.expand_as(chosen).sum()
    # Garbage after each episode's bootstrap slot (length + 1 onwards) and in its padded rewards.
    noisy = {k: v.clone() for k, v in vars(batch).items()}
    for i, length in enumerate([5, 2, 3]):
        noisy["obs"][i, length + 1:] = 1e3
        noisy["state"][i, length + 1:] = -1e3
        noisy["actions"][i, length + 1:] = 3
        noisy["reward"][i, length:] = 1e3
    noisy_terms = learner.td_terms(EpisodeBatch(**noisy))
    noisy_loss = ((noisy_terms[0] - noisy_terms[1]) ** 2 * noisy_terms[2]).sum() / noisy_terms[2].expand_as(chosen).sum()
    torch.testing.assert_close(noisy_loss, loss)
    steps = 10 * (3 if cls is IQL else 1)
    assert mask.expand_as(chosen).sum() == steps


# --- learner plumbing -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [IQL, VDN, QMIX])
def test_train_waits_for_a_batch_then_updates_and_hard_updates_targets(cls):
    common = Common(gamma=0.9, lr=1e-2, critic_lr=1e-3, batch_size=4, episode_limit=6, device=torch.device("cpu"))
    learner = make(cls, common=common, target_update_interval=6)
    metrics = learner.train(ragged_batch([6, 3], seed=1), t_env=9, episodes=2)
    assert set(metrics) == {"epsilon", "replay_size"} and learner.updates == 0
    metrics = learner.train(ragged_batch([4, 6], seed=2), t_env=19, episodes=4)
    # PyMARL: one gradient step per episode collected once the replay can sample (2 new episodes)
    assert {"td_loss", "q_mean", "target_mean", "grad_norm", "epsilon"} <= set(metrics) and learner.updates == 2
    assert metrics["epsilon"] == pytest.approx(1.0 - 0.95 * 19 / 50_000)
    first = next(learner.target_agent.parameters()).clone()
    assert not torch.equal(first, next(learner.agent.parameters()))  # online moved, target not yet
    learner.train(ragged_batch([2, 5], seed=3), t_env=26, episodes=6)  # 6 episodes: hard update
    for online, target in zip(learner.agent.parameters(), learner.target_agent.parameters()):
        assert torch.equal(online, target)
    assert not torch.equal(first, next(learner.target_agent.parameters()))


def test_fractional_updates_per_episode_carry_over_between_calls():
    """updates_per_episode=0.4 on 2-episode batches: 0.8 steps earned per call, taken whole, the rest kept."""
    common = Common(gamma=0.9, lr=1e-2, critic_lr=1e-3, batch_size=2, episode_limit=6, device=torch.device("cpu"))
    learner = make(VDN, common=common, updates_per_episode=0.4)
    taken = []
    for seed in range(5):
        learner.train(ragged_batch([6, 3], seed=seed), t_env=9 * (seed + 1), episodes=2 * (seed + 1))
        taken.append(learner.updates)
    assert taken == [0, 1, 2, 3, 4]  # credit 0.8, 1.6, 2.4, 3.2, 4.0 -> floor
    assert learner.update_credit == pytest.approx(0.0, abs=1e-9)


def test_registry_descriptions_and_config_overrides():
    for name in ("iql", "vdn", "qmix"):
        cls = algos.learner_class(name)
        assert cls.name == name and cls.description and not cls.on_policy
    cfg = algos.learner_config("qmix", {"mixing_embed_dim": 64})
    assert (cfg.mixing_embed_dim, cfg.hypernet_embed, cfg.rnn_hidden_dim, cfg.buffer_size) == (64, 64, 64, 5000)
    assert (cfg.target_update_interval, cfg.grad_norm_clip, cfg.double_q) == (200, 10.0, True)
    with pytest.raises(ConfigError, match="mixing_embed_dim"):
        algos.learner_config("qmix", {"mixing_embed_dim": 0})
    with pytest.raises(ConfigError, match="unknown config key learner.mixing_embed_dim"):
        algos.learner_config("vdn", {"mixing_embed_dim": 64})
    with pytest.raises(ConfigError, match="optimizer"):
        algos.learner_config("iql", {"optimizer": "sgd"})


def test_sacred_config_override():
    from experiments.api import resolve_config

    config = resolve_config({"algo": "qmix", "learner.mixing_embed_dim": 64})
    assert config["learner"]["mixing_embed_dim"] == 64 and config["learner"]["hypernet_embed"] == 64


# --- checkpoint / resume ----------------------------------------------------------------------------
TIMING = {"env_steps_per_sec"}
CONFIG = {"t_max": 1000, "n_envs": 4, "batch_size": 4, "test_interval": 500, "test_episodes": 4,
          "log_interval": 1, "checkpoint_interval": 100_000,
          "env": {"episode_limit": 25, "backend": "batched"},
          "learner": {"target_update_interval": 8, "epsilon_anneal_time": 600}}


def metric_values(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {name: (m["steps"], m["values"]) for name, m in metrics.items() if name not in TIMING}


@pytest.mark.parametrize("algo", ["iql", "vdn", "qmix"])
def test_resume_from_checkpoint_continues_exactly(workdir, algo):
    config = {**CONFIG, "algo": algo}
    full = train_run(config, "runs")
    stop = threading.Event()
    stop.set()  # stop after the first iteration (which already trains), with a checkpoint
    part = train_run(config, "runs", stop_event=stop)
    assert part.status == "INTERRUPTED" and (part.run_dir / "checkpoint.pt").is_file()
    resumed = train_run(config, "runs", resume_from=str(part.run_dir))
    assert resumed.status == "COMPLETED"
    values = metric_values(resumed.run_dir)
    assert values == metric_values(full.run_dir)
    assert len(values["td_loss"][0]) == 10 and len(set(values["td_loss"][1])) == 10
    assert values["epsilon"][1][-1] == pytest.approx(0.05)


def train_run(config, results_dir, **kwargs):
    from experiments.api import train

    return train(config, results_dir=results_dir, **kwargs)


# --- reward standardisation (EPyMARL's standardise_rewards) ------------------------------------------
def test_reward_standardiser_tracks_the_moments_of_every_real_reward_seen():
    from algos.base import RewardStandardiser

    std = RewardStandardiser()
    seen = []
    for seed, lengths in enumerate(([6, 3, 5, 1], [2, 6, 6, 4], [5, 5, 1, 6])):
        batch = ragged_batch(lengths, t=6, seed=seed)
        reward = batch.reward * 3.0 + 2.0 * batch.filled  # mean 2, std 3 over real steps
        out = std(reward, batch.filled)
        seen.append(reward[batch.filled.bool()])
        assert bool((out[batch.filled == 0] == 0).all())  # padding stays zero
        pooled = torch.cat(seen).double()
        assert std.mean == pytest.approx(float(pooled.mean()), rel=1e-3)
        assert std.var == pytest.approx(float(pooled.var(unbiased=False)), rel=0.1)  # per-batch unbiased var
        real = out[batch.filled.bool()].double()
        assert torch.allclose(real, (reward[batch.filled.bool()].double() - std.mean) / std.var ** 0.5, atol=1e-5)


def test_standardised_rewards_make_qmix_updates_blind_to_the_reward_scale_and_offset():
    """With standardise_rewards the learner trains on (r - mean) / std: rewards r and 10 r + 5 give the
    same update (up to the moments' prior); without it they do not."""
    batch = ragged_batch([6, 4, 6, 5], t=6, seed=3)
    scaled = EpisodeBatch(**{**batch.__dict__, "reward": (batch.reward * 10 + 5) * batch.filled})
    for standardise in (True, False):
        a, b = make(QMIX, standardise_rewards=standardise), make(QMIX, standardise_rewards=standardise)
        a.update(batch)
        b.update(scaled)
        gap = max(float((p - q).detach().abs().max()) for p, q in zip(a.params, b.params))  # measured: 1.6e-5 vs 0.02
        assert (gap < 1e-4) == standardise, gap
    trained = make(QMIX, standardise_rewards=True)
    trained.update(batch)
    restored = make(QMIX, standardise_rewards=True)
    restored.load_state_dict(trained.state_dict())  # checkpoints carry the moments
    moments = restored.reward_standardiser.state_dict()
    assert moments == trained.reward_standardiser.state_dict() and moments["count"] > 1


def test_feed_forward_agent_has_no_memory_and_acts_as_it_trains():
    """learner.use_rnn=false (EPyMARL's QMIX agent): the Q values at step t depend on step t's inputs
    only, and one ``step`` gives what ``forward`` gives for that time step."""
    from algos.networks import MLPAgent

    learner = make(QMIX, use_rnn=False)
    assert isinstance(learner.agent, MLPAgent) and isinstance(make(QMIX).agent, RNNAgent)
    torch.manual_seed(0)
    inputs = torch.randn(2, 5, 3, 7)
    agent = MLPAgent(7, 16, 4)
    out = agent(inputs)
    changed = inputs.clone()
    changed[:, 2] += 1.0  # change step 2 only
    out2 = agent(changed)
    assert torch.equal(out[:, [0, 1, 3, 4]], out2[:, [0, 1, 3, 4]]) and not torch.equal(out[:, 2], out2[:, 2])
    hidden = agent.init_hidden(2, 3)
    for t in range(5):
        q, hidden = agent.step(inputs[:, t], hidden)
        assert torch.allclose(q, out[:, t], atol=1e-6)
    before = [p.clone() for p in learner.params]
    learner.update(ragged_batch([6, 4, 6, 5], t=6))
    assert any(not torch.equal(p, q) for p, q in zip(before, learner.params))
