"""IQL (Tan, 1993; PyMARL's recurrent version): independent Q-learning with a shared GRU Q-network.

Each agent regresses its own Q(tau^a, u^a) on the team reward: one TD loss per agent, no mixer.
"""
from __future__ import annotations

from dataclasses import dataclass

from algos.q_learning import QLearner, QLearningConfig


@dataclass(frozen=True)
class IQLConfig(QLearningConfig):
    pass


class IQL(QLearner):
    name = "iql"
    description = "IQL: independent recurrent Q-learning per agent on the team reward (epsilon-greedy, replay, double Q)"
    Config = IQLConfig
