"""IPPO (de Witt et al., 2020, "Is Independent Learning All You Need in the StarCraft Multi-Agent
Challenge?"): PPO where each agent's critic sees only what its actor sees.

The critic V(tau^a) is a GRU over the agent's own inputs (observation, last action, one-hot id), the same
network shape as the actor (``RNNAgent`` with one output), weights shared across agents like the actor's.
Everything else is ``algos.ppo_family``: GAE(0.95), clip 0.2, optional value clipping, epochs over
episode minibatches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from algos.batch import EpisodeBatch
from algos.networks import RNNAgent, agent_input_dim, batch_agent_inputs
from algos.ppo_family import PPOConfig, PPOFamily


@dataclass(frozen=True)
class IPPOConfig(PPOConfig):
    pass


class IPPO(PPOFamily):
    name = "ippo"
    description = "IPPO: independent PPO, shared GRU actor and a decentralised GRU V(own observations) critic, GAE"
    Config = IPPOConfig

    def build_critic(self) -> nn.Module:
        spec, cfg = self.spec, self.cfg
        return RNNAgent(agent_input_dim(spec.obs_dim, spec.n_actions, spec.n_agents, cfg.obs_last_action),
                        cfg.critic_hidden_dim, 1, self.common.seeds)

    def values(self, batch: EpisodeBatch) -> torch.Tensor:
        return self.critic(batch_agent_inputs(batch, self.cfg.obs_last_action)).squeeze(-1)
