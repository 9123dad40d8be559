"""Episode replay buffer for off-policy learners (IQL, VDN, QMIX, DOP), PyMARL style.

Capacity is counted in episodes; each slot holds a whole episode padded to the episode limit, with
``filled`` marking real steps. Sampling returns an EpisodeBatch cut to the longest sampled episode.
The buffer's contents are part of a learner's state_dict: a resume restores the replay data too.

A packed learner's buffer (``seeds`` > 1) keeps one region of ``capacity`` episodes per seed: batches
come folded seed-major (algos/packing.py), each seed's episodes go to its own region, and a sample of n
is n episodes of each seed, drawn from its own region. Its state is the seeds' states, stacked.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch

from algos.batch import EpisodeBatch


class EpisodeReplayBuffer:
    def __init__(self, capacity: int, episode_limit: int, device: torch.device | str = "cpu", seeds: int = 1):
        self.capacity, self.episode_limit, self.device = capacity, episode_limit, torch.device(device)
        self.seeds = seeds
        self.storage: dict[str, torch.Tensor] | None = None
        self.next_index = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def can_sample(self, n: int) -> bool:
        return self.size >= n

    def _allocate(self, batch: EpisodeBatch) -> None:
        t = self.episode_limit
        self.storage = {}
        for f in fields(EpisodeBatch):
            x = getattr(batch, f.name)
            length = t + 1 if x.shape[1] == batch.max_t + 1 else t
            self.storage[f.name] = torch.zeros((self.seeds * self.capacity, length) + tuple(x.shape[2:]), dtype=x.dtype,
                                               device=self.device)

    def insert(self, batch: EpisodeBatch) -> None:
        if self.storage is None:
            self._allocate(batch)
        n = batch.batch_size // self.seeds  # episodes per seed
        idx = self._regions((torch.arange(n) + self.next_index) % self.capacity)
        for name, store in self.storage.items():
            x = getattr(batch, name).to(self.device)
            store[idx] = 0
            store[idx, : x.shape[1]] = x
        self.next_index = int((self.next_index + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator | None = None) -> EpisodeBatch:
        if not self.can_sample(n):
            raise ValueError(f"replay holds {self.size} episodes, cannot sample {n}")
        idx = self._regions(*[torch.randperm(self.size, generator=generator)[:n] for _ in range(self.seeds)])
        filled = self.storage["filled"][idx]
        t = int(filled.sum(1).max().item()) if n else 0
        t = max(t, 1)
        parts = {name: store[idx, : (t + 1 if store.shape[1] == self.episode_limit + 1 else t)]
                 for name, store in self.storage.items()}
        return EpisodeBatch(**parts)

    def _regions(self, *per_seed: torch.Tensor) -> torch.Tensor:
        """Slots of seed s's region for each seed's indices (one index set reused for every seed if one
        is given) -> seed-major storage indices."""
        if self.seeds == 1:
            return per_seed[0]
        parts = per_seed if len(per_seed) == self.seeds else per_seed * self.seeds
        return torch.cat([p + s * self.capacity for s, p in enumerate(parts)])

    def state_dict(self) -> dict[str, Any]:
        if self.storage is None:
            stored = None
        elif self.seeds == 1:
            stored = {k: v[: self.size].clone() for k, v in self.storage.items()}
        else:  # [S, size, ...]: each seed's slice is the state of its buffer alone
            stored = {k: v.reshape(self.seeds, self.capacity, *v.shape[1:])[:, : self.size].clone()
                      for k, v in self.storage.items()}
        return {"storage": stored, "next_index": self.next_index, "size": self.size, "capacity": self.capacity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_index, self.size = state["next_index"], state["size"]
        if state["storage"] is None:
            self.storage = None
            return
        self.storage = {}
        for name, data in state["storage"].items():
            if self.seeds == 1:
                data = data.unsqueeze(0)
            store = torch.zeros((self.seeds, self.capacity) + tuple(data.shape[2:]), dtype=data.dtype, device=self.device)
            store[:, : data.shape[1]] = data.to(self.device)
            self.storage[name] = store.reshape(self.seeds * self.capacity, *store.shape[2:])
