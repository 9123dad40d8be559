"""Mixing networks: per-agent Q values [B, T, n] (+ global state [B, T, S]) -> Q_tot [B, T].

VDN (Sunehag et al., 2018): Q_tot = sum_a Q_a.
QMIX (Rashid et al., 2018): Q_tot = w2^T elu(W1^T q + b1) + V(s), where hypernetworks of the global
state produce W1 [n, E], b1 [E], w2 [E] and V(s); |.| on W1 and w2 makes Q_tot monotonic in every
Q_a (dQ_tot/dQ_a >= 0), so the per-agent argmax is the joint argmax.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from algos.packing import Linear


class VDNMixer(nn.Module):
    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        return agent_qs.sum(dim=-1)


def _hypernet(in_dim: int, out_dim: int, hidden_dim: int, layers: int, seeds: int = 1) -> nn.Module:
    if layers == 1:
        return Linear(seeds, in_dim, out_dim)
    return nn.Sequential(Linear(seeds, in_dim, hidden_dim), nn.ReLU(), Linear(seeds, hidden_dim, out_dim))


class QMixer(nn.Module):
    def __init__(self, n_agents: int, state_dim: int, embed_dim: int = 32, hypernet_dim: int = 64,
                 hypernet_layers: int = 2, seeds: int = 1):
        super().__init__()
        self.n_agents, self.embed_dim = n_agents, embed_dim
        self.hyper_w1 = _hypernet(state_dim, n_agents * embed_dim, hypernet_dim, hypernet_layers, seeds)
        self.hyper_w2 = _hypernet(state_dim, embed_dim, hypernet_dim, hypernet_layers, seeds)
        self.hyper_b1 = Linear(seeds, state_dim, embed_dim)
        self.hyper_v = nn.Sequential(Linear(seeds, state_dim, embed_dim), nn.ReLU(), Linear(seeds, embed_dim, 1))

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """agent_qs [..., n], states [..., S] -> Q_tot [...]."""
        lead = agent_qs.shape[:-1]
        q = agent_qs.reshape(-1, 1, self.n_agents)
        s = states.reshape(-1, states.shape[-1])
        w1 = self.hyper_w1(s).abs().view(-1, self.n_agents, self.embed_dim)
        b1 = self.hyper_b1(s).view(-1, 1, self.embed_dim)
        hidden = F.elu(torch.bmm(q, w1) + b1)  # [N, 1, E]
        w2 = self.hyper_w2(s).abs().view(-1, self.embed_dim, 1)
        v = self.hyper_v(s).view(-1, 1, 1)
        return (torch.bmm(hidden, w2) + v).reshape(lead)
