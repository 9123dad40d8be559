"""MAPPO (Yu et al., 2022, "The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games").

PPO with the shared GRU actor and a centralised value function V(s, a): an MLP over the global state
with the agent's one-hot id appended (one value per agent, all estimating the shared team return).
Choice: the plain global state plus id rather than MAPPO's agent-specific feature-pruned state, which
needs env-specific features. The critic is feed-forward: the state is (close to) Markov, so no
recurrence is needed. Everything else is ``algos.ppo_family``: GAE(0.95), clip 0.2, optional value
clipping, epochs over episode minibatches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from algos.batch import EpisodeBatch
from algos.packing import Linear
from algos.ppo_family import PPOConfig, PPOFamily


class CentralVCritic(nn.Module):
    def __init__(self, state_dim: int, n_agents: int, hidden_dim: int, seeds: int = 1):
        super().__init__()
        self.n_agents = n_agents
        self.net = nn.Sequential(Linear(seeds, state_dim + n_agents, hidden_dim), nn.ReLU(),
                                 Linear(seeds, hidden_dim, hidden_dim), nn.ReLU(), Linear(seeds, hidden_dim, 1))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """state [B, T, S] -> V [B, T, n]."""
        b, t, s = state.shape
        ids = torch.eye(self.n_agents, device=state.device).expand(b, t, self.n_agents, self.n_agents)
        return self.net(torch.cat([state.unsqueeze(2).expand(b, t, self.n_agents, s), ids], dim=-1)).squeeze(-1)


@dataclass(frozen=True)
class MAPPOConfig(PPOConfig):
    pass


class MAPPO(PPOFamily):
    name = "mappo"
    description = "MAPPO: PPO with the shared GRU actor and a centralised V(state, agent id) critic, GAE"
    Config = MAPPOConfig

    def build_critic(self) -> nn.Module:
        return CentralVCritic(self.spec.state_dim, self.spec.n_agents, self.cfg.critic_hidden_dim, self.common.seeds)

    def values(self, batch: EpisodeBatch) -> torch.Tensor:
        return self.critic(batch.state)
