"""DOP: off-policy multi-agent decomposed policy gradients (Wang et al., ICLR 2021), stochastic version,
the baseline of the ASAE paper's appendix comparison (Fig. 10).

Critic, linearly decomposed (DOP eq. 4):  Q_tot(s, u) = sum_a k_a(s) Q_a(s, o^a, u^a) + b(s),  k_a(s) >= 0.
Because Q_tot is linear in the Q_a, the expectation of Q_tot under the factored joint policy is exact and
cheap: E_pi[Q_tot(s, .)] = sum_a k_a(s) sum_u pi^a(u) Q_a(s, o^a, u) + b(s). That makes tree backup work.

Critic loss (DOP sec. 4.1.2), mixing an off-policy and an on-policy target:
  L = kappa * L_TB(replay) + (1 - kappa) * L_TD(lambda)(fresh episodes)
- TB(lambda) on ``batch_size`` episodes sampled from the replay buffer (this learner's own
  ``EpisodeReplayBuffer``): y_t = Q'_tot(s_t, u_t) + sum_{j<k} (gamma lambda)^j (prod_{l=1..j} pi(u_{t+l}|tau_{t+l}))
  delta_{t+j}, with delta_t = r_t + gamma (1 - term_t) E_pi[Q'_tot(s_{t+1}, .)] - Q'_tot(s_t, u_t), pi the
  current joint policy (product over agents), Q' the target critic. No importance ratios: the traces are
  the target policy's probabilities, so stale replay data is safe.
- TD(lambda) on the episodes just collected, from the target critic's Q'_tot of the executed (and, at
  slot T, the sampled) joint action, exactly as COMA's critic (``algos.critic.td_lambda_targets``).
Both bootstrap at a time-limit truncation (slot T+1 holds the final observation) and not at a terminal.

Actor (DOP's stochastic decomposed policy gradient), on the episodes just collected:
  grad J = E[ sum_a k_a(s) grad log pi^a(u^a|tau^a) (Q_a(u^a) - sum_u' pi^a(u') Q_a(u')) ]
with the current critic's k and Q_a (no gradient into the critic), plus an entropy bonus.

Choices where the paper leaves room (DOP's code in brackets where it differs):
- Q_a sees the global state, the agent's observation and its id (an MLP), standing in for the paper's
  Q_a(tau, u^a); the same inputs as DOP's code.
- k(s) = |MLP(s)| and b(s) = MLP(s), as the paper's equation [the code normalises k to sum to 1 and
  drops b].
- kappa = 0.5 is explicit [the code concatenates 16 on-policy and 32 replay episodes in one mean].
- TB truncated at ``tb_steps`` = 5 with lambda 0.93, the code's values; ``tb_steps=null`` runs to the episode end.
- ``critic_steps`` = 8 full-batch critic steps per update [the code steps once per time slice of 48
  episodes], hard target updates every ``target_update_interval`` = 40 episodes [the code: every 600
  slice steps, i.e. about 40 episodes of SMAC's ~60-step episodes]. On simple_spread N=3 these learn
  clearly faster than 1 step and 200 episodes (tests/test_learning_policy_gradient.py).
- Exploration by the stochastic policy plus an entropy bonus, so the behaviour policy is pi and the TD(lambda)
  targets of fresh episodes are on-policy [the code mixes in epsilon-uniform actions, 0.5 -> 0.05].
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from algos.base import Common, Learner, PolicyController
from algos.packing import Linear
from algos.batch import EpisodeBatch
from algos.critic import td_lambda_targets
from algos.networks import RNNAgent, agent_input_dim, batch_agent_inputs, entropy, masked_log_softmax
from algos.replay import EpisodeReplayBuffer
from envs.base import TeamSpec
from validation import require



@dataclass(frozen=True)
class DOPConfig:
    rnn_hidden_dim: int = 64
    critic_hidden_dim: int = 128
    mixing_embed_dim: int = 32  # hidden width of the k(s) and b(s) hypernetworks
    td_lambda: float = 0.8  # on-policy TD(lambda) targets
    tb_lambda: float = 0.93  # off-policy tree-backup traces
    tb_steps: Optional[int] = 5  # truncation of the tree-backup sum; null: to the episode end
    off_policy_weight: float = 0.5  # kappa: weight of the tree-backup loss against the on-policy one
    buffer_size: int = 5000  # replay capacity in episodes
    critic_steps: int = 8  # full-batch critic steps per update
    target_update_interval: int = 40  # episodes between hard target-critic updates
    grad_norm_clip: float = 10.0
    entropy_coef: float = 0.01
    obs_last_action: bool = True

    def check(self) -> None:
        for name in ("td_lambda", "tb_lambda", "off_policy_weight"):
            require(0.0 <= getattr(self, name) <= 1.0, f"learner.{name}={getattr(self, name)} must be in [0, 1]")
        for name in ("rnn_hidden_dim", "critic_hidden_dim", "mixing_embed_dim", "buffer_size", "critic_steps",
                     "target_update_interval"):
            require(getattr(self, name) >= 1, f"learner.{name}={getattr(self, name)} must be at least 1")
        require(self.tb_steps is None or self.tb_steps >= 1, f"learner.tb_steps={self.tb_steps} must be at least 1 or null")
        require(self.grad_norm_clip > 0, f"learner.grad_norm_clip={self.grad_norm_clip} must be positive")
        require(self.entropy_coef >= 0, f"learner.entropy_coef={self.entropy_coef} must be >= 0")


class DecomposedCritic(nn.Module):
    """Per-agent Q_a(s, o^a, .) and the state-conditioned linear mixing k(s) >= 0, b(s)."""

    def __init__(self, spec: TeamSpec, hidden_dim: int, embed_dim: int, seeds: int = 1):
        super().__init__()
        n, s = spec.n_agents, spec.state_dim
        self.n_agents = n
        self.q = nn.Sequential(Linear(seeds, s + spec.obs_dim + n, hidden_dim), nn.ReLU(),
                               Linear(seeds, hidden_dim, hidden_dim), nn.ReLU(), Linear(seeds, hidden_dim, spec.n_actions))
        self.hyper_k = nn.Sequential(Linear(seeds, s, embed_dim), nn.ReLU(), Linear(seeds, embed_dim, n))
        self.hyper_b = nn.Sequential(Linear(seeds, s, embed_dim), nn.ReLU(), Linear(seeds, embed_dim, 1))

    def agent_qs(self, batch: EpisodeBatch) -> torch.Tensor:
        """Q_a(s_t, o^a_t, .) for every slot: [B, T+1, n, |U|]."""
        b, t1, n, _ = batch.obs.shape
        state = batch.state.unsqueeze(2).expand(b, t1, n, batch.state.shape[-1])
        ids = torch.eye(n, device=batch.obs.device).expand(b, t1, n, n)
        return self.q(torch.cat([state, batch.obs, ids], dim=-1))

    def mixing(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """state [..., S] -> (k [..., n] >= 0, b [...])."""
        return self.hyper_k(state).abs(), self.hyper_b(state).squeeze(-1)

    def q_tot(self, agent_values: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """sum_a k_a(s) x_a + b(s) for per-agent values x [..., n] (taken Q_a, or their expectation under pi)."""
        k, b = self.mixing(state)
        return (k * agent_values).sum(-1) + b


def tree_backup_targets(batch: EpisodeBatch, q_taken: torch.Tensor, expected_q: torch.Tensor, trace: torch.Tensor,
                        gamma: float, lam: float, n_steps: int | None) -> torch.Tensor:
    """TB(lambda) targets [B, T] from Q_tot of the executed actions, its expectation under pi and the
    joint policy probability of the executed actions, all for every slot ([B, T+1]).

    y_t = Q_t + sum_{j=0}^{n-1} (gamma lambda)^j (prod_{l=1}^{j} c_{t+l}) delta_{t+j},
    delta_t = r_t + gamma (1 - term_t) E_{t+1} - Q_t, c_l = pi(u_l|tau_l); delta is zero on padding, so
    the sum stops at the episode end. Term j+1 at t is gamma lambda c_{t+1} times term j at t+1.
    """
    filled = batch.filled
    delta = filled * (batch.reward + gamma * (1.0 - batch.terminated) * expected_q[:, 1:] - q_taken[:, :-1])
    total, term = delta.clone(), delta
    for _ in range((n_steps or batch.max_t) - 1):
        shifted = torch.cat([term[:, 1:], torch.zeros_like(term[:, :1])], dim=1)
        term = gamma * lam * trace[:, 1:] * shifted
        total = total + term
    return filled * (q_taken[:, :-1] + total)


class DOP(Learner):
    packable = True
    state_attrs = ("actor", "critic", "target_critic", "actor_opt", "critic_opt", "buffer", "episodes_since_target_update")

    name = "dop"
    description = "DOP: off-policy decomposed policy gradients, linear k(s)-weighted critic, tree-backup + TD(lambda)"
    Config = DOPConfig
    on_policy = False

    def __init__(self, spec: TeamSpec, cfg: DOPConfig, common: Common):
        super().__init__(spec, cfg, common)
        in_dim = agent_input_dim(spec.obs_dim, spec.n_actions, spec.n_agents, cfg.obs_last_action)
        seeds = common.seeds
        self.actor = RNNAgent(in_dim, cfg.rnn_hidden_dim, spec.n_actions, seeds).to(self.device)
        self.critic = DecomposedCritic(spec, cfg.critic_hidden_dim, cfg.mixing_embed_dim, seeds).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = self.axis.optimizer(self.actor.parameters(), common.lr, "adam")
        self.critic_opt = self.axis.optimizer(self.critic.parameters(), common.critic_lr, "adam")
        self.controller = PolicyController(self.actor, spec, self.device, cfg.obs_last_action)
        self.buffer = EpisodeReplayBuffer(cfg.buffer_size, common.episode_limit, self.device, seeds=seeds)
        self.episodes_since_target_update = 0

    def policy_log_probs(self, batch: EpisodeBatch) -> torch.Tensor:
        return masked_log_softmax(self.actor(batch_agent_inputs(batch, self.cfg.obs_last_action)), batch.avail)

    def _q_tot_taken(self, critic: DecomposedCritic, batch: EpisodeBatch) -> torch.Tensor:
        taken = critic.agent_qs(batch).gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
        return critic.q_tot(taken, batch.state)  # [B, T+1]

    @torch.no_grad()
    def on_policy_targets(self, batch: EpisodeBatch) -> torch.Tensor:
        target_taken = self._q_tot_taken(self.target_critic, batch).unsqueeze(-1)
        return td_lambda_targets(batch, target_taken, self.common.gamma, self.cfg.td_lambda).squeeze(-1)

    @torch.no_grad()
    def off_policy_targets(self, batch: EpisodeBatch) -> torch.Tensor:
        pi = self.policy_log_probs(batch).exp()
        q = self.target_critic.agent_qs(batch)
        q_taken = self.target_critic.q_tot(q.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1), batch.state)
        expected = self.target_critic.q_tot((pi * q).sum(-1), batch.state)
        trace = pi.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1).prod(-1)
        return tree_backup_targets(batch, q_taken, expected, trace, self.common.gamma, self.cfg.tb_lambda, self.cfg.tb_steps)

    def train_critic(self, fresh: EpisodeBatch, replay: EpisodeBatch) -> dict[str, float]:
        axis, kappa = self.axis, self.cfg.off_policy_weight
        y_on, y_off = self.on_policy_targets(fresh), self.off_policy_targets(replay)
        for _ in range(self.cfg.critic_steps):
            q_on = self._q_tot_taken(self.critic, fresh)[:, :-1]
            loss_on = axis.masked_mean((q_on - y_on) ** 2, fresh.filled)
            loss_off = axis.masked_mean((self._q_tot_taken(self.critic, replay)[:, :-1] - y_off) ** 2, replay.filled)
            loss = kappa * loss_off + (1.0 - kappa) * loss_on
            self.critic_opt.zero_grad()
            axis.total(loss).backward()
            grad_norm = axis.clip_grad_norm(self.critic.parameters(), self.cfg.grad_norm_clip)
            axis.step(self.critic_opt)
        self.episodes_since_target_update += fresh.batch_size // self.common.seeds
        if self.episodes_since_target_update >= self.cfg.target_update_interval:
            self.target_critic.load_state_dict(self.critic.state_dict())
            self.episodes_since_target_update = 0
        metric = axis.metric
        return {"critic_loss": metric(loss), "critic_loss_on": metric(loss_on), "critic_loss_off": metric(loss_off),
                "critic_grad_norm": metric(grad_norm), "q_mean": metric(axis.masked_mean(q_on.detach(), fresh.filled))}

    def train_actor(self, batch: EpisodeBatch) -> dict[str, float]:
        mask = batch.filled.unsqueeze(-1)
        logp = self.policy_log_probs(batch)[:, :-1]
        with torch.no_grad():
            q = self.critic.agent_qs(batch)[:, :-1]
            k, _ = self.critic.mixing(batch.state[:, :-1])
            actions = batch.actions[:, :-1].unsqueeze(-1)
            advantages = q.gather(-1, actions).squeeze(-1) - (logp.exp() * q).sum(-1)
        axis = self.axis
        ent = axis.masked_mean(entropy(logp), mask)
        loss = -axis.masked_mean(k * advantages * logp.gather(-1, actions).squeeze(-1), mask) - self.cfg.entropy_coef * ent
        self.actor_opt.zero_grad()
        axis.total(loss).backward()
        grad_norm = axis.clip_grad_norm(self.actor.parameters(), self.cfg.grad_norm_clip)
        axis.step(self.actor_opt)
        metric = axis.metric
        return {"actor_loss": metric(loss), "entropy": metric(ent), "actor_grad_norm": metric(grad_norm),
                "k_mean": metric(axis.masked_mean(k, mask)), "advantage_mean": metric(axis.masked_mean(advantages, mask))}

    def train(self, batch: EpisodeBatch, t_env: int, episodes: int) -> dict[str, float]:
        """Store the new episodes; once the replay holds ``batch_size`` episodes, one critic and one actor update."""
        batch = batch.to(self.device)
        self.buffer.insert(batch)
        if not self.buffer.can_sample(self.common.batch_size):
            return {}
        replay = self.buffer.sample(self.common.batch_size).to(self.device)
        return {**self.train_critic(batch, replay), **self.train_actor(batch)}

