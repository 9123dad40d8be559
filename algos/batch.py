"""Episode batches: what the runner collects and every learner trains on.

Time has T+1 slots for observations, states, masks and actions: slot T holds the observation after the
last step and an action sampled there but never executed, so targets can bootstrap from Q(s_T, u_T)
(as PyMARL does). ``filled[:, t]`` marks real transitions; slots after an env finished are padding.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F


@dataclass
class EpisodeBatch:
    obs: torch.Tensor  # [B, T+1, n, obs_dim] float32
    state: torch.Tensor  # [B, T+1, state_dim] float32
    avail: torch.Tensor  # [B, T+1, n, n_actions] bool
    actions: torch.Tensor  # [B, T+1, n] int64 (slot T: sampled at the final state, not executed)
    reward: torch.Tensor  # [B, T] float32 (team reward)
    terminated: torch.Tensor  # [B, T] float32, 1 where a true terminal state was reached
    filled: torch.Tensor  # [B, T] float32, 1 for real transitions

    @property
    def batch_size(self) -> int:
        return self.obs.shape[0]

    @property
    def max_t(self) -> int:
        return self.reward.shape[1]

    @property
    def n_actions(self) -> int:
        return self.avail.shape[-1]

    @property
    def episode_end(self) -> torch.Tensor:
        """[B, T] 1 at the last real transition of each episode (bootstrap there unless terminated)."""
        nxt = torch.cat([self.filled[:, 1:], torch.zeros_like(self.filled[:, :1])], dim=1)
        return self.filled * (1.0 - nxt)

    def actions_onehot(self) -> torch.Tensor:
        """[B, T+1, n, n_actions] float32."""
        return F.one_hot(self.actions, self.n_actions).float()

    def last_actions_onehot(self) -> torch.Tensor:
        """[B, T+1, n, n_actions]: the previous step's actions (zeros at t = 0)."""
        onehot = self.actions_onehot()
        return torch.cat([torch.zeros_like(onehot[:, :1]), onehot[:, :-1]], dim=1)

    def to(self, device: torch.device | str) -> "EpisodeBatch":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __getitem__(self, index) -> "EpisodeBatch":
        """Select episodes (first dimension)."""
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def cat(batches: list["EpisodeBatch"]) -> "EpisodeBatch":
        """Concatenate episodes, padding time to the longest batch (padding is not ``filled``)."""
        if len(batches) == 1:
            return batches[0]
        t_max = max(b.max_t for b in batches)
        out = {}
        for f in fields(EpisodeBatch):
            parts = []
            for b in batches:
                x = getattr(b, f.name)
                extra = t_max - b.max_t
                if extra:
                    pad = x[:, -1:].expand(x.shape[0], extra, *x.shape[2:]) if f.name in ("obs", "state", "avail", "actions") \
                        else torch.zeros(x.shape[0], extra, *x.shape[2:], dtype=x.dtype, device=x.device)
                    x = torch.cat([x, pad], dim=1)
                parts.append(x)
            out[f.name] = torch.cat(parts, dim=0)
        return EpisodeBatch(**out)
