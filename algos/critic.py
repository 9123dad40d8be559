"""COMA's centralised critic Q(s, u^{-a}, .) and its TD(lambda) training, shared by COMA and ASAE.

For agent a the critic sees the global state, a's observation, the other agents' actions (a's own slot
zeroed), the last joint action and a's id, and outputs one Q value per action of a. ASAE evaluates it on
m joint-action samples per step. Feeding the one-hot actions through the first layer is a sum of weight
rows, so the first layer is split: a dense part for the per-step inputs and one embedding row per
(agent, action) for the sampled actions; in the dense part, the state and last joint action (the same
for all agents of a step) are multiplied once per step, not once per agent. That is the same function
as the concatenated-input MLP, but one forward over [B, T, m, n] costs O(m n H), not O(m n^2 |U| H).
Callers evaluate it on packed rows (the real steps of a padded batch), never on padding.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from algos.batch import EpisodeBatch
from algos.packing import Linear, seed_linear, stacked_param
from envs.base import TeamSpec


class CriticInputs(NamedTuple):
    """The critic's parameter-free inputs: ``step`` [B, T+1, state + n|U|] (state and last joint action,
    the same for every agent of a step) and ``obs`` [B, T+1, n, obs_dim]. Built once per update and
    shared by the target critic and every critic epoch; ``rows`` packs the slots that matter."""
    step: torch.Tensor
    obs: torch.Tensor

    def rows(self, slots: tuple[torch.Tensor, torch.Tensor] | torch.Tensor) -> "CriticInputs":
        """The slots (episode index, time index) of ``SeedAxis.slot_index`` -> [R, ...]; on packed inputs, an index
        of rows."""
        return CriticInputs(self.step[slots], self.obs[slots])


class CentralQCritic(nn.Module):
    def __init__(self, spec: TeamSpec, hidden_dim: int = 128, seeds: int = 1):
        super().__init__()
        n, a = spec.n_agents, spec.n_actions
        self.n_agents, self.n_actions, self.seeds = n, a, seeds
        self.state_dim, self.obs_dim = spec.state_dim, spec.obs_dim
        # The first layer of the concatenated input [state, own obs, last joint action, agent id, others'
        # actions], as two parameters: ``base`` for the per-step inputs (columns in that order) and
        # ``action_rows`` for the others' one-hot actions.
        base_dim = spec.state_dim + spec.obs_dim + n * a + n
        self.base = Linear(seeds, base_dim, hidden_dim)
        # Rows of the first layer's weight that multiply the others' one-hot actions, per (agent, action).
        bound = 1.0 / math.sqrt(base_dim + n * a)  # nn.Linear's init for the full concatenated input
        self.action_rows = stacked_param(seeds, n, a, hidden_dim, init=lambda p: nn.init.uniform_(p, -bound, bound))
        nn.init.uniform_(self.base.weight, -bound, bound)
        nn.init.uniform_(self.base.bias, -bound, bound)
        self.fc2 = Linear(seeds, hidden_dim, hidden_dim)
        self.out = Linear(seeds, hidden_dim, a)

    def base_inputs(self, batch: EpisodeBatch) -> CriticInputs:
        """The per-step inputs of every slot [B, T+1, ...] (no parameters: build once per update)."""
        b, t1, n, _ = batch.obs.shape
        last_joint = batch.last_actions_onehot().reshape(b, t1, n * self.n_actions)
        return CriticInputs(torch.cat([batch.state, last_joint], dim=-1), batch.obs)

    def features(self, inputs: CriticInputs) -> torch.Tensor:
        """First-layer pre-activations of the per-step inputs: [..., n, H].

        The state and the last joint action are the same for all n agents of a step, so their part of the
        first layer is computed once per step, not once per agent; the agent id's part is a weight column.
        """
        w, s, o, n = self.base.weight, self.state_dim, self.obs_dim, self.n_agents
        width = w.shape[-1]
        per_step = seed_linear(inputs.step, torch.cat([w[..., :s], w[..., s + o:width - n]], dim=-1))
        per_agent = seed_linear(inputs.obs, w[..., s:s + o], self.base.bias)
        ids = w[..., width - n:].transpose(-1, -2)  # [n, H] (a pack: [S, n, H])
        if ids.dim() == 3:  # the folded rows of seed s take seed s's id columns
            per_agent = (per_agent.reshape(self.seeds, -1, n, per_agent.shape[-1]) + ids.unsqueeze(1)).reshape(per_agent.shape)
        else:
            per_agent = per_agent + ids
        return per_agent + per_step.unsqueeze(-2)

    def base_features(self, batch: EpisodeBatch) -> torch.Tensor:
        """First-layer pre-activations of every slot of ``batch``: [B, T+1, n, H]."""
        return self.features(self.base_inputs(batch))

    def forward(self, base: torch.Tensor, joint_actions: torch.Tensor) -> torch.Tensor:
        """base [..., n, H], joint_actions [..., m, n] -> Q [..., m, n, |U|] (one forward for all samples).

        The [..., m, n, H] activations are the memory traffic of ASAE's m samples: they are updated in
        place (same arithmetic, same order) instead of allocating a new tensor per operation.
        """
        n, a = self.n_agents, self.n_actions
        # [..., m, n, H]: the row of agent j's action, as one embedding lookup (the same values and
        # gradients as indexing action_rows[j, u], a few times faster on CPU)
        first_row = torch.arange(0, n * a, a, device=joint_actions.device)
        if self.seeds > 1:  # seed s's folded rows look up seed s's table
            lead = joint_actions.shape[0]
            seed = torch.arange(self.seeds, device=joint_actions.device).repeat_interleave(lead // self.seeds)
            first_row = first_row + (seed * n * a).reshape((lead,) + (1,) * (joint_actions.dim() - 1))
        rows = F.embedding(joint_actions + first_row, self.action_rows.reshape(self.seeds * n * a, -1))
        h = torch.sub(rows.sum(dim=-2, keepdim=True), rows, out=rows if not rows.requires_grad else None)
        h += base.unsqueeze(-3)  # for agent a: base_a + sum over j != a of agent j's row
        h = F.relu(h, inplace=True)
        return self.out(F.relu(self.fc2(h), inplace=True))

    def q_taken(self, base: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q of the executed joint action: (all action values [..., n, |U|], taken value [..., n])."""
        q = self.forward(base, actions.unsqueeze(-2)).squeeze(-3)
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
