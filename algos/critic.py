"""COMA's centralised critic Q(s, u^{-a}, .) and its TD(lambda) training, shared by COMA and ASAE.

For agent a the critic sees the global state, a's observation, the other agents' actions (a's own slot
zeroed), the last joint action and a's id, and outputs one Q value per action of a. ASAE evaluates it on
m joint-action samples per step. Feeding the one-hot actions through the first layer is a sum of weight
rows, so the first layer is split: a dense part for the per-step inputs, computed once, and one
embedding row per (agent, action) for the sampled actions. That is the same function as the
concatenated-input MLP, but one forward over [B, T, m, n] costs O(m n H), not O(m n^2 |U| H).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from algos.batch import EpisodeBatch
from envs.base import TeamSpec


class CentralQCritic(nn.Module):
    def __init__(self, spec: TeamSpec, hidden_dim: int = 128):
        super().__init__()
        n, a = spec.n_agents, spec.n_actions
        self.n_agents, self.n_actions = n, a
        base_dim = spec.state_dim + spec.obs_dim + n * a + n  # state, own obs, last joint action, agent id
        self.base = nn.Linear(base_dim, hidden_dim)
        # Rows of the first layer's weight that multiply the others' one-hot actions, per (agent, action).
        self.action_rows = nn.Parameter(torch.empty(n, a, hidden_dim))
        bound = 1.0 / math.sqrt(base_dim + n * a)  # nn.Linear's init for the full concatenated input
        nn.init.uniform_(self.action_rows, -bound, bound)
        nn.init.uniform_(self.base.weight, -bound, bound)
        nn.init.uniform_(self.base.bias, -bound, bound)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, a)

    def base_inputs(self, batch: EpisodeBatch) -> torch.Tensor:
        """The per-step inputs [B, T+1, n, state + obs + n|U| + n]: no parameters, so one tensor serves the
        critic, its target copy and every critic epoch of an update."""
        b, t1, n, _ = batch.obs.shape
        state = batch.state.unsqueeze(2).expand(b, t1, n, batch.state.shape[-1])
        last_joint = batch.last_actions_onehot().reshape(b, t1, 1, n * self.n_actions).expand(b, t1, n, n * self.n_actions)
        ids = torch.eye(n, device=batch.obs.device).expand(b, t1, n, n)
        return torch.cat([state, batch.obs, last_joint, ids], dim=-1)

    def base_features(self, batch: EpisodeBatch, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """First-layer pre-activations of the per-step inputs: [B, T+1, n, H]."""
        return self.base(self.base_inputs(batch) if inputs is None else inputs)

    def forward(self, base: torch.Tensor, joint_actions: torch.Tensor) -> torch.Tensor:
        """base [B, T, n, H], joint_actions [B, T, m, n] -> Q [B, T, m, n, |U|] (one forward for all samples).

        The [B, T, m, n, H] activations are the memory traffic of ASAE's m samples: they are updated in
        place (same arithmetic, same order) instead of allocating a new tensor per operation.
        """
        n, a = self.n_agents, self.n_actions
        # [B, T, m, n, H]: the row of agent j's action, as one embedding lookup (the same values and
        # gradients as indexing action_rows[j, u], a few times faster on CPU)
        first_row = torch.arange(0, n * a, a, device=joint_actions.device)
        rows = F.embedding(joint_actions + first_row, self.action_rows.view(n * a, -1))
        h = torch.sub(rows.sum(dim=-2, keepdim=True), rows, out=rows if not rows.requires_grad else None)
        h += base.unsqueeze(2)  # for agent a: base_a + sum over j != a of agent j's row
        h = F.relu(h, inplace=True)
        return self.out(F.relu(self.fc2(h), inplace=True))

    def q_taken(self, base: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q of the executed joint action: (all action values [B, T, n, |U|], taken value [B, T, n])."""
        q = self.forward(base, actions.unsqueeze(2)).squeeze(2)
        return q, q.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def td_lambda_targets(batch: EpisodeBatch, target_q: torch.Tensor, gamma: float, td_lambda: float) -> torch.Tensor:
    """TD(lambda) returns G_t per agent from target values Q(s_{t+1}, u_{t+1}) ([B, T+1, n]) -> [B, T, n].

    G_t = r_t + gamma (1 - term_t) [(1 - lambda) Q_{t+1} + lambda G_{t+1}], and at the last real step of
    an episode G_t = r_t + gamma (1 - term_t) Q_{t+1}: a time-limit truncation bootstraps, a terminal
    state does not. Padding steps are zero.
    """
    # Everything that does not depend on G_{t+1} is computed for all t at once (the same products as the
    # recursion's, so the same values), leaving a few torch calls per step in the loop over time.
    q_next = target_q[:, 1:]
    end = batch.episode_end.unsqueeze(-1)
    bootstrap = (end * q_next).unbind(1)  # end_t Q_{t+1}
    not_end = (1 - end).unbind(1)
    lambda_free = ((1 - td_lambda) * q_next).unbind(1)  # (1 - lambda) Q_{t+1}
    discount = (gamma * (1.0 - batch.terminated).unsqueeze(-1)).unbind(1)  # gamma (1 - term_t)
    reward = batch.reward.unsqueeze(-1).unbind(1)
    filled = batch.filled.unsqueeze(-1).unbind(1)
    out = []
    nxt = torch.zeros_like(target_q[:, 0])
    for t in reversed(range(batch.max_t)):
        tail = bootstrap[t] + not_end[t] * (lambda_free[t] + td_lambda * nxt)
        nxt = filled[t] * (reward[t] + discount[t] * tail)
        out.append(nxt)
    return torch.stack(out[::-1], dim=1)
