"""What a run's buffers will take in memory, checked against the machine before anything is allocated.

The sizes a config sets (n_envs, the episode limit, the replay's buffer_size, batch_size, test_episodes)
multiply into tensors allocated whole: the runner's episode buffers for n_envs episodes, the batch of one
update, the replay of off-policy learners (buffer_size padded episodes) and the activations of an update.
The estimate counts these from the env's team shapes; the networks themselves are small beside them.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import algos
from validation import ConfigError

# What building one env takes before any episode runs, where it is not negligible: mpe2's PettingZoo envs are
# one Python world each (measured: 1.9 GB for 1000 simple-spread envs; the batched backend shares arrays).
PER_ENV_BYTES = {("mpe_spread", "mpe2"): 2 * 2**20}
HEADROOM = 0.8  # refuse a run whose estimate exceeds this share of the machine's memory
ACTIVATION_FACTOR = 12  # floats kept per agent, step and hidden unit by an update (layers, gradients, optimizer)


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _step_bytes(spec) -> int:
    """One step of one episode of a team, as EpisodeBatch stores it (obs, state, avail, actions, reward,
    terminated, filled)."""
    n = spec.n_agents
    return 4 * n * spec.obs_dim + 4 * spec.state_dim + n * spec.n_actions + 8 * n + 12


def estimate(cfg: Any, info: Any, team_algos: dict[str, str]) -> tuple[int, list[str]]:
    """(bytes, the largest parts in words) for a run of ``cfg`` on an env described by ``info``."""
    limit = info.episode_limit
    learning = {t.name: t for t in info.teams if team_algos.get(t.name) not in (None, algos.RANDOM)}
    on_policy = any(algos.learner_class(team_algos[name]).on_policy for name in learning)
    rounds = math.ceil(cfg.batch_size / cfg.n_envs) if on_policy else 1
    per_episode = sum(_step_bytes(spec) for spec in info.teams) * (limit + 1)
    parts: dict[str, int] = {}
    # The runner's buffers, the rounds of one iteration joined into the update's batch (and a copy).
    parts[f"episode buffers ({rounds * cfg.n_envs} episodes of {limit + 1} steps)"] = 3 * rounds * cfg.n_envs * per_episode
    test = math.ceil(cfg.test_episodes / cfg.n_envs) * cfg.n_envs if cfg.test_episodes else 0
    parts[f"test episodes ({test})"] = 2 * test * per_episode
    for name, spec in learning.items():
        algo = team_algos[name]
        learner = cfg.learner_config(name, algo)
        hidden = max(int(getattr(learner, key, 0) or 0) for key in ("rnn_hidden_dim", "hidden_dim", "critic_hidden_dim")) or 64
        episodes = cfg.batch_size if not algos.learner_class(algo).on_policy else rounds * cfg.n_envs
        label = f"{name} update activations ({episodes} episodes x {limit + 1} steps x {spec.n_agents} agents x {hidden} units)"
        parts[label] = ACTIVATION_FACTOR * 4 * episodes * (limit + 1) * spec.n_agents * hidden
        capacity = getattr(learner, "buffer_size", None)
        if not algos.learner_class(algo).on_policy and isinstance(capacity, int):
            parts[f"{name} replay (buffer_size={capacity} episodes of {limit + 1} steps)"] = \
                capacity * _step_bytes(spec) * (limit + 1)
    total = sum(parts.values())
    biggest = sorted(parts.items(), key=lambda kv: -kv[1])[:2]
    return total, [f"{what}: {gib(size)}" for what, size in biggest]


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**29 else f"{n / 2**20:.0f} MiB"


def check_envs(cfg: Any, seeds: int = 1) -> None:
    """Before the envs are built: ConfigError if n_envs of them (per seed of a pack) would not fit in memory."""
    per_env = PER_ENV_BYTES.get((cfg.env.get("name"), cfg.env.get("backend")), 0)
    need, have = per_env * cfg.n_envs * seeds, machine_memory()
    if need > HEADROOM * have:
        pack = f" x {seeds} seeds" if seeds > 1 else ""
        raise ConfigError(f"n_envs={cfg.n_envs}{pack} {cfg.env.get('name')} envs (backend {cfg.env.get('backend')}) need about "
                          f"{gib(need)} of memory before training starts ({gib(per_env)} each), more than "
                          f"{HEADROOM:.0%} of this machine's {gib(have)}; lower n_envs or use another backend")


def check(cfg: Any, info: Any, team_algos: dict[str, str], seeds: int = 1) -> int:
    """ConfigError (one line, with the estimate) if the run (a pack: its ``seeds`` runs, each with buffers
    of its own) would not fit in this machine's memory; else the estimate in bytes."""
    need, biggest = estimate(cfg, info, team_algos)
    need *= seeds
    have = machine_memory()
    if need > HEADROOM * have:
        what = "this run needs" if seeds == 1 else f"this pack of {seeds} seeds needs"
        raise ConfigError(f"{what} about {gib(need)} of memory ({'; '.join(biggest)}), more than "
                          f"{HEADROOM:.0%} of this machine's {gib(have)}; lower n_envs, env.episode_limit, "
                          "batch_size or learner.buffer_size")
    return need
