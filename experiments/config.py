"""The experiment's typed configuration: Sacred's config dict in, a validated RunConfig out.

Validation happens in a Sacred config hook, i.e. before any observer starts: a bad value never leaves a
run directory behind. ``run_key`` identifies a run by the config fields that change its results (not by
where it runs, how often it logs or where it resumes from), so sweeps can find a run again. The code
version is not part of it: each run records that in its info (experiments/provenance.py).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

import algos
import envs
from validation import ConfigError, build, require

# Keys that do not change what a run computes: excluded from its identity.
NON_IDENTITY_KEYS = frozenset({
    "run_key", "resume_from", "seeds", "device", "torch_threads", "progress", "log_interval", "checkpoint_interval", "env_info", "tags",
})

# Options added after runs were completed and committed, each with the value that reproduces what runs
# did before the option existed. While a run holds that value the option stays out of its identity, so
# adding an option does not orphan the runs a sweep already has (results/reproduction/runs). A run that
# sets another value gets a new key, as it computes something new. Changing a default is not this: the
# new default differs from the recorded value, so the runs' keys change, as they must.
ADDED_LATER: dict[tuple[str, ...], Any] = {
    ("env", "timeout"): "truncation",  # mpe: episodes ending at max_cycles bootstrapped, as before the option
    ("learner", "standardise_rewards"): False,  # raw rewards, as before the option
    ("learner", "use_rnn"): True,  # iql, vdn, qmix: the GRU agent, as before the option
}


@dataclass(frozen=True)
class RunConfig:
    algo: str
    env: dict
    learner: dict
    seed: int
    t_max: int
    n_envs: int
    batch_size: int
    gamma: float
    lr: float
    critic_lr: float
    test_interval: int
    test_episodes: int
    log_interval: int
    checkpoint_interval: int
    device: str
    torch_threads: int = 1
    seeds: list = field(default_factory=list)  # a pack: these seeds trained at once, each its own run
    teams: dict = field(default_factory=dict)  # team -> algo name or "random"
    team_learners: dict = field(default_factory=dict)  # team -> learner overrides (when its algo != algo)
    resume_from: Optional[Any] = None  # a checkpoint or run directory; for a pack, one (or null) per seed
    progress: Literal["auto", "bar", "log", "off"] = "auto"
    tags: list = field(default_factory=list)
    run_key: str = ""
    env_info: dict = field(default_factory=dict)

    def check(self) -> None:
        algos.learner_class(self.algo)
        require(0 <= self.seed < 2**32, f"seed={self.seed} is not valid; use a seed in [0, 2**32 - 1]")
        require(self.t_max > 0, f"t_max={self.t_max} is not valid; it must be a positive number of env steps")
        require(self.n_envs >= 1, f"n_envs={self.n_envs} must be at least 1")
        require(self.batch_size >= 1, f"batch_size={self.batch_size} must be at least 1")
        require(0.0 <= self.gamma <= 1.0, f"gamma={self.gamma} must be in [0, 1]")
        require(self.lr > 0 and self.critic_lr > 0, f"lr={self.lr} and critic_lr={self.critic_lr} must be positive")
        for name in ("test_interval", "log_interval", "checkpoint_interval"):
            require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be a positive number of env steps")
        require(self.torch_threads >= 1, f"torch_threads={self.torch_threads} must be at least 1")
        require(self.test_episodes >= 0, f"test_episodes={self.test_episodes} must be >= 0")
        require(all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in self.seeds),
                f"seeds={self.seeds} must be a list of seeds (integers from 0 to 2**32 - 1)")
        require(len(set(self.seeds)) == len(self.seeds), f"seeds={self.seeds} names a seed twice")
        if isinstance(self.resume_from, list) or (isinstance(self.resume_from, str) and self.resume_from.startswith("[")
                                                  and len(self.seeds) > 1):
            pass  # a pack's list (checked by the pack)
        if isinstance(self.resume_from, list):
            require(len(self.seeds) > 1 and len(self.resume_from) == len(self.seeds),
                    f"resume_from as a list gives one checkpoint (or null) per seed of a pack; seeds={self.seeds} "
                    f"has {len(self.seeds)}, resume_from has {len(self.resume_from)}")
        else:
            require(self.resume_from is None or isinstance(self.resume_from, str),
                    f"resume_from={self.resume_from!r} must be a checkpoint file or run directory")
        require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                f"device={self.device!r} is not valid; use auto, cpu, cuda or cuda:N")
        for team, algo in self.teams.items():
            if algo != algos.RANDOM:
                algos.learner_class(algo)
        unknown = sorted(set(self.team_learners) - set(self.teams))
        require(not unknown, f"team_learners.{unknown[0] if unknown else ''} names a team not in teams={self.teams}")

    def team_algos(self, team_names: list[str]) -> dict[str, str]:
        """Which algo (or "random") drives each team: `teams`, else the first team learns with `algo`."""
        unknown = sorted(set(self.teams) - set(team_names))
        require(not unknown, f"teams.{unknown[0] if unknown else ''} is not a team of env {self.env['name']!r}; "
                             f"its teams are: {', '.join(team_names)}")
        return {team: self.teams.get(team, self.algo if i == 0 and not self.teams else algos.RANDOM)
                for i, team in enumerate(team_names)}

    def learner_config(self, team: str, algo: str) -> Any:
        if team in self.team_learners or algo != self.algo:
            return algos.learner_config(algo, self.team_learners.get(team, {}), where=f"team_learners.{team}")
        return algos.learner_config(algo, self.learner)


def validate(config: Mapping[str, Any]) -> RunConfig:
    cfg = build(RunConfig, {k: v for k, v in config.items() if k in RunConfig.__dataclass_fields__}, where="")
    envs.env_config(cfg.env)
    _check_can_train(cfg.algo, algos.learner_config(cfg.algo, cfg.learner), cfg.batch_size, "learner")
    return cfg


def _check_can_train(algo: str, learner: Any, batch_size: int, where: str) -> None:
    """Refuse a config under which the learner could never take a gradient step."""
    buffer_size = getattr(learner, "buffer_size", None)
    if not algos.learner_class(algo).on_policy and isinstance(buffer_size, int):
        require(batch_size <= buffer_size,
                f"batch_size={batch_size} is larger than {where}.buffer_size={buffer_size}: {algo} samples "
                f"batch_size episodes from a replay that never holds more than buffer_size, so it would never "
                f"train; use batch_size <= {where}.buffer_size")


def run_key(config: Mapping[str, Any]) -> str:
    """Stable 12-hex-digit id of a run from its resolved config (identity keys only)."""
    identity = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS and not k.startswith("_")}
    for path, value in ADDED_LATER.items():
        identity = _without(identity, path, value)
    blob = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _without(tree: Mapping[str, Any], path: tuple[str, ...], value: Any) -> Mapping[str, Any]:
    """``tree`` without the entry at ``path`` if it holds ``value`` (copies only along the path)."""
    head, *rest = path
    if head not in tree:
        return tree
    if rest:
        if not isinstance(tree[head], Mapping):
            return tree
        return {**tree, head: _without(tree[head], tuple(rest), value)}
    if tree[head] == value and type(tree[head]) is type(value):
        return {k: v for k, v in tree.items() if k != head}
    return tree


def unknown_top_level(config: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in config if k not in RunConfig.__dataclass_fields__ and k != "seed" and not k.startswith("_"))


__all__ = ["RunConfig", "ConfigError", "validate", "run_key", "NON_IDENTITY_KEYS", "ADDED_LATER"]
