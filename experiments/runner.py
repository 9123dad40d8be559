"""Collect episodes from B envs at once: one batched action selection per team per step.

All B envs reset together and step until every one of them is done; envs that finished earlier keep
being stepped (their outputs are ignored and marked as padding), which keeps every step a single
vectorized call. Per step the work is O(teams) calls into torch and the env, never O(agents x envs).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from algos.base import Controller
from algos.batch import EpisodeBatch
from envs.base import TeamObs, VecEnv


@dataclass
class EpisodeStats:
    """Per-episode results of one team over one collection (lists over episodes)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    stats: dict[str, list[float]] = field(default_factory=dict)

    def first(self, n: int) -> "EpisodeStats":
        """The first n episodes (test evaluations play whole rounds of B envs but report exactly n)."""
        return EpisodeStats(self.returns[:n], self.lengths[:n], {k: v[:n] for k, v in self.stats.items()})

    def slice(self, start: int, stop: int) -> "EpisodeStats":
        """Episodes start..stop-1 (a pack's collection: one seed's envs)."""
        return EpisodeStats(self.returns[start:stop], self.lengths[start:stop],
                            {k: v[start:stop] for k, v in self.stats.items()})

    def extend(self, other: "EpisodeStats") -> None:
        self.returns += other.returns
        self.lengths += other.lengths
        for key, values in other.stats.items():
            self.stats.setdefault(key, []).extend(values)


class _TeamBuffer:
    def __init__(self, n_envs: int, limit: int, spec, first: TeamObs):
        b, t1, n = n_envs, limit + 1, spec.n_agents
        self.obs = torch.zeros(b, t1, n, spec.obs_dim)
        self.state = torch.zeros(b, t1, spec.state_dim)
        self.avail = torch.zeros(b, t1, n, spec.n_actions, dtype=torch.bool)
        self.actions = torch.zeros(b, t1, n, dtype=torch.long)
        self.reward = torch.zeros(b, limit)
        self.record(0, first)

    def record(self, t: int, obs: TeamObs) -> None:
        self.obs[:, t] = obs.obs
        self.state[:, t] = obs.state
        self.avail[:, t] = obs.avail

    def batch(self, t_used: int, terminated: torch.Tensor, filled: torch.Tensor) -> EpisodeBatch:
        return EpisodeBatch(obs=self.obs[:, :t_used + 1], state=self.state[:, :t_used + 1],
                            avail=self.avail[:, :t_used + 1], actions=self.actions[:, :t_used + 1],
                            reward=self.reward[:, :t_used], terminated=terminated[:, :t_used],
                            filled=filled[:, :t_used])


class EpisodeRunner:
    def __init__(self, env: VecEnv, controllers: dict[str, Controller]):
        self.env = env
        self.controllers = controllers
        self.specs = {spec.name: spec for spec in env.info.teams}

    def run(self, seeds: list[int], t_env: int, test_mode: bool) -> tuple[dict[str, EpisodeBatch], dict[str, EpisodeStats], int]:
        """Play one episode in each env. Returns (batches per team, stats per team, env steps taken)."""
        env, info = self.env, self.env.info
        b, limit = env.n_envs, info.episode_limit
        obs = env.reset(seeds)
        buffers = {name: _TeamBuffer(b, limit, spec, obs[name]) for name, spec in self.specs.items()}
        hidden = {name: ctrl.init_hidden(b) for name, ctrl in self.controllers.items()}
        last = {name: torch.full((b, spec.n_agents), -1, dtype=torch.long) for name, spec in self.specs.items()}
        env_terminated = torch.zeros(b, limit, dtype=torch.bool)  # as the env reported it, masked after the loop
        filled = torch.zeros(b, limit)
        done = torch.zeros(b, dtype=torch.bool)
        returns = {name: torch.zeros(b) for name in self.specs}
        episode_stats = {key: torch.zeros(b) for key in info.episode_stats}
        t_used = limit
        for t in range(limit):
            actions = {}
            for name, ctrl in self.controllers.items():
                actions[name], hidden[name] = ctrl.act(obs[name], last[name], hidden[name], t_env, test_mode)
                buffers[name].actions[:, t] = actions[name]
            last = actions
            result = env.step(actions)
            active = ~done
            active_f = active.float()
            filled[:, t] = active_f
            env_terminated[:, t] = result.terminated
            for name in self.specs:
                reward = result.reward[name] * active_f
                buffers[name].reward[:, t] = reward
                returns[name] += reward
            for key, how in info.episode_stats.items():
                value = result.info[key]
                if how == "sum":
                    episode_stats[key] += value * active_f
                else:  # "last": the value on the episode's final step
                    episode_stats[key] = torch.where(active, value, episode_stats[key])
            done = done | result.terminated | result.truncated
            obs = result.obs
            for name in self.specs:
                buffers[name].record(t + 1, obs[name])
            if bool(done.all()):
                t_used = t + 1
                break
        # An action at the final state (never executed): the bootstrap target needs Q(s_T, u_T).
        for name, ctrl in self.controllers.items():
            buffers[name].actions[:, t_used], _ = ctrl.act(obs[name], last[name], hidden[name], t_env, test_mode)
        terminated = (env_terminated & filled.bool()).float()
        lengths = filled.sum(1).long()  # sums of 0/1 floats: exact
        batches = {name: buf.batch(t_used, terminated, filled) for name, buf in buffers.items()}
        stats = {}
        for name in self.specs:
            stats[name] = EpisodeStats(returns=returns[name].tolist(), lengths=lengths.tolist(),
                                       stats={key: v.tolist() for key, v in episode_stats.items()})
        return batches, stats, int(lengths.sum())


def summarize(stats: EpisodeStats, prefix: str = "") -> dict[str, float]:
    """Episode stats -> scalar metrics: <prefix>return_mean, return_std, ep_length_mean, <stat>_mean."""
    if not stats.returns:
        return {}
    out = {f"{prefix}return_mean": float(np.mean(stats.returns)), f"{prefix}return_std": float(np.std(stats.returns)),
           f"{prefix}ep_length_mean": float(np.mean(stats.lengths))}
    for key, values in stats.stats.items():
        out[f"{prefix}{key}_mean"] = float(np.mean(values))
    return out
