"""QMIX (Rashid et al., 2018): Q_tot = monotonic mixing of per-agent Q values by a network whose
non-negative weights come from hypernetworks of the global state (see algos/mixers.py)."""
from __future__ import annotations

from dataclasses import dataclass

from algos.mixers import QMixer
from algos.q_learning import QLearner, QLearningConfig
from validation import require


@dataclass(frozen=True)
class QMIXConfig(QLearningConfig):
    mixing_embed_dim: int = 32
    hypernet_embed: int = 64  # hidden units of the two-layer weight hypernetworks
    hypernet_layers: int = 2  # 1: linear hypernetworks; 2: one hidden layer of hypernet_embed units

    def check(self) -> None:
        super().check()
        for name in ("mixing_embed_dim", "hypernet_embed"):
            require(getattr(self, name) >= 1, f"learner.{name}={getattr(self, name)} must be at least 1")
        require(self.hypernet_layers in (1, 2), f"learner.hypernet_layers={self.hypernet_layers} must be 1 or 2")


class QMIX(QLearner):
    name = "qmix"
    description = "QMIX: monotonic state-conditioned hypernetwork mixer of per-agent recurrent Q values (double Q)"
    Config = QMIXConfig

    def make_mixer(self):
        cfg = self.cfg
        return QMixer(self.spec.n_agents, self.spec.state_dim, cfg.mixing_embed_dim, cfg.hypernet_embed, cfg.hypernet_layers,
                      self.common.seeds)
