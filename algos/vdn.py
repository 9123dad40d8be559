"""VDN (Sunehag et al., 2018): value decomposition, Q_tot = sum_a Q_a(tau^a, u^a), trained end to end
on the team reward with one TD loss on Q_tot."""
from __future__ import annotations

from dataclasses import dataclass

from algos.mixers import VDNMixer
from algos.q_learning import QLearner, QLearningConfig


@dataclass(frozen=True)
class VDNConfig(QLearningConfig):
    pass


class VDN(QLearner):
    name = "vdn"
    description = "VDN: Q_tot = sum of per-agent recurrent Q values (epsilon-greedy, replay, double Q)"
    Config = VDNConfig

    def make_mixer(self):
        return VDNMixer()
