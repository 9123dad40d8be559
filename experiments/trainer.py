"""The training loop: collect -> train -> log -> test -> checkpoint, for every team of an env.

A run's whole state lives in a checkpoint written atomically at iteration boundaries: every learner
(networks, optimizers, replay data), the counters, the RNG states of torch and of the seed streams
that reset the envs, the metric history and the not-yet-logged statistics. Resuming from it continues
the run exactly: same next updates, no gap or repeat in the metrics. The checkpoint before the newest is
kept beside it (checkpoint.prev.pt), for when the newest turns out unreadable.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import algos
from algos.base import Common, Learner, RandomController
from algos.batch import EpisodeBatch
from envs import make_env
from envs.base import TeamSpec
from validation import ConfigError, require
from experiments import memory
from experiments.config import RunConfig
from experiments.files import atomic_write
from experiments.runner import EpisodeRunner, EpisodeStats, summarize

CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_CHECKPOINT_NAME = "checkpoint.prev.pt"
CHECKPOINT_VERSION = 1


class Diverged(Exception):
    """Training produced a non-finite loss, statistic or parameter: the run stops FAILED; the checkpoints
    written before it (all finite) are kept."""


class CheckpointWriteError(Exception):
    """A checkpoint could not be written (a full disk, a file system gone read-only): the message says
    which and what is kept."""


class CheckpointError(ConfigError):
    """A checkpoint that cannot be resumed from; the message names the file and what is wrong with it."""


def checkpoint_path(resume_from: str | Path) -> Path:
    """``resume_from`` (a checkpoint file, or a run directory meaning its newest checkpoint) -> the file."""
    path = Path(resume_from)
    if not path.is_dir():
        require(path.is_file(), f"resume_from={str(path)!r}: no checkpoint there")
        return path
    newest, previous = path / CHECKPOINT_NAME, path / PREVIOUS_CHECKPOINT_NAME
    if not newest.is_file() and previous.is_file():
        raise CheckpointError(f"resume_from={str(path)!r}: no {CHECKPOINT_NAME} there, only the one before it: "
                              f"resume_from={previous}")
    require(newest.is_file(), f"resume_from={str(path)!r}: no checkpoint there")
    return newest


def check_resume_from(resume_from: str | Path, config: dict[str, Any] | None = None) -> None:
    """Before a run starts: CheckpointError (or ConfigError) if ``resume_from`` cannot be resumed from; the
    message points to the checkpoint before it when there is one. With the run's ``config``, a checkpoint
    of another config is refused too, naming the keys that differ."""
    path = checkpoint_path(resume_from)
    try:
        state = read_checkpoint(path, mmap=True)
    except CheckpointError as exc:
        previous = path.with_name(PREVIOUS_CHECKPOINT_NAME)
        if path.name == CHECKPOINT_NAME and previous.is_file():
            raise CheckpointError(f"{exc}; the checkpoint before it may be readable: resume_from={previous}") from None
        raise
    if config is not None and config.get("run_key") and state.get("run_key") != config["run_key"]:
        raise ConfigError(_mismatch(path, state.get("run_key"), config))


def _mismatch(path: Path, theirs: str | None, config: dict[str, Any]) -> str:
    """The resume-mismatch line, naming the keys that differ when the checkpoint's run left its config.json."""
    from experiments.config import NON_IDENTITY_KEYS
    from experiments.files import read_json

    def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(tree, dict):
            return {prefix[:-1]: tree}
        out = {}
        for key, value in tree.items():
            if not prefix and (key in NON_IDENTITY_KEYS or key.startswith("_")):
                continue
            out.update(flat(value, f"{prefix}{key}."))
        return out

    line = (f"resume_from points at a checkpoint of run {theirs}, but this config is run {config['run_key']}; "
            "resume with the same config (only device, logging and checkpoint settings may change)")
    other = read_json(path.parent / "config.json")
    if isinstance(other, dict):
        mine, there = flat(config), flat(other)
        keys = sorted(k for k in set(mine) | set(there) if mine.get(k, "<unset>") != there.get(k, "<unset>"))
        if keys:
            line += "; it differs in " + ", ".join(f"{k} ({there.get(k, '<unset>')!r} there, {mine.get(k, '<unset>')!r} "
                                                   "here)" for k in keys[:5]) + (" ..." if len(keys) > 5 else "")
    return line


def read_checkpoint(path: Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The training state in a checkpoint file. A file that is no such state (empty, cut short, not a
    checkpoint, another format) raises CheckpointError naming it and what is wrong. ``mmap`` leaves the
    tensors on disk: a cheap check that the file can be resumed from."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            cut = f.read(4) == b"PK\x03\x04"
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its directory is at the very end
        raise CheckpointError(f"checkpoint {path} is cut short (an incomplete archive of {size} bytes)" if cut
                              else f"checkpoint {path} is not a PyTorch checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle: damaged inside, or written by other code
        first = (str(exc).splitlines() or [""])[0][:160]
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict) or "version" not in state:
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint of this suite "
                              f"(it holds a {type(state).__name__} without a format version)")
    if state["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {state['version']!r}; this version of the suite "
                              f"reads format {CHECKPOINT_VERSION} (resume it with the version that wrote it)")
    return state


class MetricLogger:
    """Sends scalars to Sacred (or any sink) and keeps the history that checkpoints carry."""

    def __init__(self, sink: Callable[[str, float, int], None] | None = None):
        self.sink = sink
        self.history: list[tuple[str, int, float]] = []

    def log(self, name: str, value: float, step: int) -> None:
        value = float(value)
        self.history.append((name, int(step), value))
        if self.sink is not None:
            self.sink(name, value, int(step))

    def replay(self, history: list[tuple[str, int, float]]) -> None:
        for name, step, value in history:
            self.log(name, value, step)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine; use device=cpu or auto")
    return torch.device(name)


@dataclass
class _Window:
    """Statistics accumulated since the last log line."""

    episodes: dict[str, EpisodeStats] = field(default_factory=dict)
    learner: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0


def build_learner(cfg: RunConfig, spec: TeamSpec, algo: str, episode_limit: int,
                  device: torch.device, seeds: int = 1) -> Learner:
    """One team's learner as a run builds it: its algo's class, the team's learner config and the run's
    common settings (gamma, learning rates, batch size, episode limit, device); ``seeds`` > 1: a packed
    learner of that many seeds (its weights are then loaded from the seeds' own learners)."""
    common = Common(gamma=cfg.gamma, lr=cfg.lr, critic_lr=cfg.critic_lr, batch_size=cfg.batch_size,
                    episode_limit=episode_limit, device=device, seeds=seeds)
    return algos.learner_class(algo)(spec, cfg.learner_config(spec.name, algo), common)


@dataclass
class Member:
    """One seed of a trainer, i.e. one run: its config, metric sink, checkpoint directory, seed streams,
    counters and not-yet-logged statistics. A trainer of one seed has one member; a pack has several,
    trained by one set of packed learners (algos/packing.py) on S x n_envs envs."""

    cfg: RunConfig
    logger: "MetricLogger"
    checkpoint_dir: Path | None
    train_rng: np.random.Generator = None
    test_rng: np.random.Generator = None
    t_env: int = 0
    episodes: int = 0
    iteration: int = 0
    last_test_t: int | None = None
    last_log_t: int | None = None
    last_ckpt_t: int | None = None
    window: _Window = field(default_factory=_Window)
    last_test: dict[str, float] = field(default_factory=dict)
    finished: bool = False  # reached t_max: its run is complete, the pack no longer records it
    failure: str | None = None  # why it failed (a non-finite loss); the pack goes on without it

    def __post_init__(self):
        self.train_rng = np.random.default_rng([self.cfg.seed, 0])
        self.test_rng = np.random.default_rng([self.cfg.seed, 1])

    @property
    def active(self) -> bool:
        return not self.finished and self.failure is None

    @property
    def seed(self) -> int:
        return self.cfg.seed


def pack_torch_seed(seeds: list[int]) -> int:
    """The torch seed of a pack (its one RNG stream after the seeds' own weights are loaded)."""
    return int(np.random.SeedSequence(list(seeds)).generate_state(1)[0])


PACK_REFUSAL = ("seeds={seeds} packs {packable}; {algo} trains one seed per process (give seed=N, or run a sweep "
                "without --pack-seeds)")


class Trainer:
    """Trains one run (``Trainer(cfg, logger, checkpoint_dir)``) or a pack of runs that differ only by
    seed (``Trainer.pack(cfgs, loggers, checkpoint_dirs)``): one loop, one env of S x n_envs envs, one
    packed learner per team; each member keeps its own counters, seed streams, metrics and checkpoints,
    so each seed's run is what that seed alone would be (the same weights at start, the same update on
    the same data up to float rounding; the episodes its own seed streams reset)."""

    def __init__(self, cfg: RunConfig, logger: "MetricLogger", checkpoint_dir: Path | None,
                 stop_event: threading.Event | None = None, progress: str = "off",
                 on_finished: Callable[["Member"], None] | None = None, _members: list[Member] | None = None):
        self.cfg = cfg
        self.members = _members or [Member(cfg, logger, checkpoint_dir)]
        self.n_seeds = len(self.members)
        self.stop_event = stop_event or threading.Event()
        self.progress = progress
        self.on_finished = on_finished
        self.device = resolve_device(cfg.device)
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        memory.check_envs(cfg, self.n_seeds)
        self.env = make_env(cfg.env, cfg.n_envs * self.n_seeds)
        info = self.env.info
        team_names = [t.name for t in info.teams]
        try:
            self.team_algos = cfg.team_algos(team_names)
            memory.check(cfg, info, self.team_algos, self.n_seeds)
        except ConfigError:
            self.env.close()
            raise
        self.multi_team = len(team_names) > 1
        self.learners = {}
        controllers = {}
        for spec in info.teams:
            algo = self.team_algos[spec.name]
            if algo == algos.RANDOM:
                controllers[spec.name] = RandomController()
                continue
            learner = self._build_learner(spec, algo, info.episode_limit)
            self.learners[spec.name] = learner
            controllers[spec.name] = learner.controller
        require(bool(self.learners), f"teams={self.team_algos} has no learning team; give one team an algo")
        if self.n_seeds > 1:
            torch.manual_seed(pack_torch_seed([m.seed for m in self.members]))
        self.runner = EpisodeRunner(self.env, controllers)
        on_policy = any(type(lr).on_policy for lr in self.learners.values())
        self.rounds = math.ceil(cfg.batch_size / cfg.n_envs) if on_policy else 1

    @classmethod
    def pack(cls, cfgs: list[RunConfig], loggers: list["MetricLogger"], checkpoint_dirs: list[Path | None],
             stop_event: threading.Event | None = None, progress: str = "off",
             on_finished: Callable[["Member"], None] | None = None) -> "Trainer":
        """A trainer of several runs that differ only by seed (their configs are otherwise the same)."""
        members = [Member(c, lg, d) for c, lg, d in zip(cfgs, loggers, checkpoint_dirs)]
        return cls(cfgs[0], loggers[0], checkpoint_dirs[0], stop_event, progress, on_finished, members)

    def _build_learner(self, spec: TeamSpec, algo: str, episode_limit: int) -> Learner:
        if self.n_seeds == 1:
            return build_learner(self.cfg, spec, algo, episode_limit, self.device)
        cls = algos.learner_class(algo)
        if not cls.packable:
            packable = ", ".join(sorted(n for n in algos.REGISTRY if algos.learner_class(n).packable))
            raise ConfigError(PACK_REFUSAL.format(seeds=[m.seed for m in self.members], packable=packable, algo=algo))
        from algos.packing import stack_tree

        states = []
        for member in self.members:  # each seed's weights exactly as a run of that seed alone starts from
            torch.manual_seed(member.seed)
            states.append(build_learner(member.cfg, spec, algo, episode_limit, self.device).state_dict())
        learner = build_learner(self.cfg, spec, algo, episode_limit, self.device, seeds=self.n_seeds)
        learner.load_state_dict(stack_tree(states))
        return learner

    # --- single-run view (a trainer of one seed) ----------------------------------------------------
    @property
    def logger(self) -> "MetricLogger":
        return self.members[0].logger

    @property
    def t_env(self) -> int:
        return self.members[0].t_env

    @property
    def episodes(self) -> int:
        return self.members[0].episodes

    @property
    def iteration(self) -> int:
        return self.members[0].iteration

    @property
    def window(self) -> _Window:
        return self.members[0].window

    def _schedule_t(self) -> int:
        """The t_env the pack's schedules (exploration) follow: its slowest active seed's (a pack of one:
        its own). Seeds of a pack differ in t_env only by their episodes' lengths."""
        active = [m for m in self.members if m.active] or self.members
        return min(m.t_env for m in active)

    def _schedule_episodes(self) -> int:
        active = [m for m in self.members if m.active] or self.members
        return min(m.episodes for m in active)

    # --- metrics ----------------------------------------------------------------------------------
    def _name(self, team: str, metric: str) -> str:
        return f"{team}/{metric}" if self.multi_team else metric

    def _seeds(self, rng: np.random.Generator | None) -> list[int]:
        if rng is None:  # a seed not collecting for its run this time (a pack's test of other seeds)
            return [0] * self.cfg.n_envs
        return [int(s) for s in rng.integers(0, 2**31 - 1, size=self.cfg.n_envs)]

    def _collect(self, test_mode: bool, n_episodes: int, rngs: list[np.random.Generator | None] | np.random.Generator):
        """Episodes of every member: (batches per team, folded seed-major; stats per member per team;
        env steps per member)."""
        if not isinstance(rngs, list):
            rngs = [rngs]
        n, s_count = self.cfg.n_envs, self.n_seeds
        rounds = max(1, math.ceil(n_episodes / n))
        per_team: dict[str, list[EpisodeBatch]] = {}
        stats = [dict() for _ in range(s_count)]
        steps = [0] * s_count
        for _ in range(rounds):
            seeds = [seed for rng in rngs for seed in self._seeds(rng)]
            batches, round_stats, _ = self.runner.run(seeds, self._schedule_t(), test_mode)
            for team, batch in batches.items():
                per_team.setdefault(team, []).append(batch)
            lengths = next(iter(round_stats.values())).lengths  # every team plays the same episodes
            for s in range(s_count):  # member s played envs s*n .. (s+1)*n - 1
                steps[s] += int(sum(lengths[s * n:(s + 1) * n]))
                for team, team_stats in round_stats.items():
                    stats[s].setdefault(team, EpisodeStats()).extend(team_stats.slice(s * n, (s + 1) * n))
        out = {}
        for team, parts in per_team.items():
            batch = EpisodeBatch.cat(parts)
            if s_count > 1 and rounds > 1:  # round-major -> seed-major
                order = torch.arange(rounds * s_count * n).reshape(rounds, s_count, n).transpose(0, 1).reshape(-1)
                batch = batch[order]
            out[team] = batch
        return out, stats, steps

    def evaluate(self, members: list[Member] | None = None) -> dict[str, float]:
        """Greedy test episodes for ``members`` (default: all); logged in each one's run. Returns the
        first member's test metrics (a run of one seed: its own)."""
        members = self.members if members is None else members
        for m in members:
            m.last_test_t = m.t_env  # also with test_episodes=0: the loop compares against it
        if self.cfg.test_episodes == 0 or not members:
            return {}
        with torch.no_grad():
            _, stats, _ = self._collect(True, self.cfg.test_episodes,
                                        [m.test_rng if m in members else None for m in self.members])
        for m, member_stats in zip(self.members, stats):
            if m not in members:
                continue
            out = {}
            for team, team_stats in member_stats.items():
                for key, value in summarize(team_stats.first(self.cfg.test_episodes), "test_").items():
                    out[self._name(team, key)] = value
            for name, value in out.items():
                m.logger.log(name, value, m.t_env)
            m.last_test = out
        return members[0].last_test

    def _log_window(self, m: Member) -> dict[str, float]:
        w = m.window
        out = {}
        for team, team_stats in w.episodes.items():
            out.update({self._name(team, k): v for k, v in summarize(team_stats).items()})
        for team, metrics in w.learner.items():
            out.update({self._name(team, k): float(np.mean(v)) for k, v in metrics.items()})
        if w.seconds > 0:
            out["env_steps_per_sec"] = w.steps / w.seconds
        out["episodes"] = float(m.episodes)
        for name, value in out.items():
            m.logger.log(name, value, m.t_env)
        m.window = _Window()
        m.last_log_t = m.t_env
        return out

    def non_finite(self, team: str, metrics: dict[str, float], s: int = 0) -> str | None:
        """What is not finite after an update of ``team`` for member ``s`` (a metric, else a parameter of its
        seed), or None."""
        bad = next((k for k, v in metrics.items() if not math.isfinite(float(v))), None)
        if bad is not None:
            return f"{self._name(team, bad)} is {float(metrics[bad])}"
        learner = self.learners[team]
        for attr in type(learner).state_attrs:
            module = getattr(learner, attr, None)
            if isinstance(module, torch.nn.Module):
                for name, param in module.named_parameters():
                    values = param if self.n_seeds == 1 else param[s]
                    if not bool(torch.isfinite(values).all()):
                        return f"parameter {attr}.{name}" + (f" of team {team}" if self.multi_team else "") + " is not finite"
        return None

    def _diverged(self, m: Member, where: str) -> str:
        """The one line of a member whose training diverged: which value, when, the checkpoint it keeps."""
        path = None if m.checkpoint_dir is None else m.checkpoint_dir / CHECKPOINT_NAME
        kept = (f"its last checkpoint ({path}, t_env={m.last_ckpt_t}) is kept" if path is not None and path.is_file()
                else "it wrote no checkpoint")
        return (f"training diverged: {where} after the update at t_env={m.t_env} (iteration {m.iteration}); {kept}; "
                "lower lr / critic_lr or check the config")

    # --- checkpoints ------------------------------------------------------------------------------
    def _learner_states(self) -> list[dict[str, Any]]:
        """Each member's learner states, in the format of a run of that seed alone."""
        if self.n_seeds == 1:
            return [{team: learner.state_dict() for team, learner in self.learners.items()}]
        from algos.packing import unstack_tree

        packed = {team: learner.state_dict() for team, learner in self.learners.items()}
        return [{team: unstack_tree(state, s) for team, state in packed.items()} for s in range(self.n_seeds)]

    def member_state(self, m: Member, learners: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION, "run_key": m.cfg.run_key,
            "counters": {"t_env": m.t_env, "episodes": m.episodes, "iteration": m.iteration,
                         "last_test_t": m.last_test_t, "last_log_t": m.last_log_t, "last_ckpt_t": m.last_ckpt_t},
            "learners": learners,
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "train": m.train_rng.bit_generator.state, "test": m.test_rng.bit_generator.state},
            "metrics": list(m.logger.history),
            "window": m.window,
        }

    def state_dict(self) -> dict[str, Any]:
        """The first member's checkpoint state (a run of one seed: the run's)."""
        return self.member_state(self.members[0], self._learner_states()[0])

    def load_states(self, states: list[dict[str, Any] | None]) -> None:
        """Each member's checkpoint state (None: that member starts afresh)."""
        resumed = [(m, st) for m, st in zip(self.members, states) if st is not None]
        if not resumed:
            return
        if self.n_seeds > 1:
            iterations = {st["counters"]["iteration"] for _, st in resumed}
            require(len(resumed) == self.n_seeds and len(iterations) == 1,
                    f"a pack resumes seeds at one point of training: seeds {[m.seed for m, _ in resumed]} resume at "
                    f"iterations {sorted(iterations)} and {self.n_seeds - len(resumed)} start afresh; run them as "
                    "separate packs (a sweep groups them so)")
        for m, state in resumed:
            require(state["run_key"] == m.cfg.run_key,
                    f"resume_from points at a checkpoint of run {state['run_key']}, but this config is run {m.cfg.run_key}; "
                    "resume with the same config (only device, logging and checkpoint settings may change)")
            c = state["counters"]
            m.t_env, m.episodes, m.iteration = c["t_env"], c["episodes"], c["iteration"]
            m.last_test_t, m.last_log_t, m.last_ckpt_t = c["last_test_t"], c["last_log_t"], c["last_ckpt_t"]
            m.train_rng.bit_generator.state = state["rng"]["train"]
            m.test_rng.bit_generator.state = state["rng"]["test"]
            m.logger.replay(state["metrics"])
            m.window = state["window"]
        if self.n_seeds == 1:
            for team, learner in self.learners.items():
                learner.load_state_dict(states[0]["learners"][team])
        else:
            from algos.packing import stack_tree

            for team, learner in self.learners.items():
                learner.load_state_dict(stack_tree([st["learners"][team] for st in states]))
        first = resumed[0][1]
        torch.set_rng_state(first["rng"]["torch"])
        if first["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(first["rng"]["cuda"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_states([state])

    def save_member_checkpoint(self, m: Member, learners: dict[str, Any]) -> Path | None:
        if m.checkpoint_dir is None:
            return None
        path = m.checkpoint_dir / CHECKPOINT_NAME
        before = m.last_ckpt_t
        m.last_ckpt_t = m.t_env
        state = self.member_state(m, learners)
        try:
            m.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: torch.save(state, f), keep_previous=m.checkpoint_dir / PREVIOUS_CHECKPOINT_NAME)
        except (OSError, RuntimeError) as exc:  # torch's zip writer reports a failed write as a RuntimeError
            m.last_ckpt_t = before
            raise CheckpointWriteError(_write_failure(path, exc, before, m.t_env)) from None
        return path

    def save_checkpoints(self, members: list[Member]) -> None:
        if not members:
            return
        states = self._learner_states()
        for m in members:
            self.save_member_checkpoint(m, states[self.members.index(m)])

    def save_checkpoint(self) -> Path | None:
        m = self.members[0]
        self.save_checkpoints([m])
        return None if m.checkpoint_dir is None else m.checkpoint_dir / CHECKPOINT_NAME

    def resume(self, resume_from: str | Path) -> None:
        self.load_state_dict(read_checkpoint(checkpoint_path(resume_from), map_location=self.device))

    def resume_members(self, resume_from: list[str | Path | None]) -> None:
        self.load_states([None if r is None else read_checkpoint(checkpoint_path(r), map_location=self.device)
                          for r in resume_from])

    # --- failures ---------------------------------------------------------------------------------
    def _fail(self, m: Member, reason: str) -> None:
        """A member whose training diverged: marked failed (its run ends FAILED with ``reason``, its last
        checkpoint kept). In a pack its slice of every learner is zeroed, so the others train on with it
        riding along harmlessly (a zero actor acts uniformly at random; nothing of it is recorded)."""
        m.failure = reason
        if self.n_seeds > 1:
            s = self.members.index(m)
            for learner in self.learners.values():
                zero_seed(learner, s)
        if self.on_finished is not None:
            self.on_finished(m)

    # --- the loop ---------------------------------------------------------------------------------
    def _finish(self, members: list[Member], bar: "_Progress") -> None:
        """Members that reached t_max: last log window, a final test if the last one is older, the final
        checkpoint; their runs are complete."""
        if not members:
            return
        for m in members:
            if m.window.steps:
                self._log_window(m)
        due = [m for m in members if m.last_test_t != m.t_env]
        if due:
            self.evaluate(due)
            for m in due:
                bar.update(m, {}, m.last_test)
        self.save_checkpoints(members)
        for m in members:
            m.finished = True
            if self.on_finished is not None:
                self.on_finished(m)

    def train(self) -> dict[str, float]:
        """Run until every member reaches t_max (or fails). Returns the first member's last test metrics.
        Raises Stopped if asked to stop early (every active member's checkpoint saved); a run of one seed
        raises Diverged when its training diverges."""
        cfg = self.cfg
        bar = _Progress(self.progress, cfg.t_max, self.members)
        try:
            self._finish([m for m in self.members if m.active and m.t_env >= cfg.t_max], bar)  # resumed at the end
            first = [m for m in self.members if m.active and m.last_test_t is None]
            if first:
                self.evaluate(first)
            while any(m.active for m in self.members):
                if self.stop_event.is_set():  # asked before this iteration: while the envs were built or tested
                    going = [m for m in self.members if m.active]
                    self.save_checkpoints([m for m in going if m.t_env != m.last_ckpt_t])
                    raise Stopped(min(m.t_env for m in going))
                start = time.perf_counter()
                active = [m for m in self.members if m.active]
                batches, stats, steps = self._collect(False, self.rounds * cfg.n_envs, [m.train_rng for m in self.members])
                for m, member_stats, member_steps in zip(self.members, stats, steps):
                    if m.active:
                        m.t_env += member_steps
                        m.episodes += len(next(iter(member_stats.values())).returns)
                        m.iteration += 1
                t_env, episodes = self._schedule_t(), self._schedule_episodes()
                for team, learner in self.learners.items():
                    metrics = learner.train(batches[team], t_env, episodes)
                    for s, m in enumerate(self.members):
                        if not m.active:
                            continue
                        mine = {k: (v[s] if isinstance(v, list) else v) for k, v in metrics.items()}
                        where = self.non_finite(team, mine, s)
                        if where is not None:
                            self._fail(m, self._diverged(m, where))
                            continue
                        for key, value in mine.items():
                            m.window.learner.setdefault(team, {}).setdefault(key, []).append(value)
                elapsed = time.perf_counter() - start
                active = [m for m in active if m.active]
                for m in active:
                    for team, team_stats in stats[self.members.index(m)].items():
                        m.window.episodes.setdefault(team, EpisodeStats()).extend(team_stats)
                    m.window.steps += steps[self.members.index(m)]
                    m.window.seconds += elapsed
                    if m.last_log_t is None or m.t_env - m.last_log_t >= cfg.log_interval:
                        bar.update(m, self._log_window(m), m.last_test)
                due = [m for m in active if m.t_env - m.last_test_t >= cfg.test_interval]
                if due:
                    self.evaluate(due)
                    for m in due:
                        bar.update(m, {}, m.last_test)
                bar.advance()
                done = [m for m in active if m.t_env >= cfg.t_max]
                going = [m for m in active if m.t_env < cfg.t_max]
                self._finish(done, bar)
                stop = self.stop_event.is_set()
                self.save_checkpoints([m for m in going if stop or m.t_env - (m.last_ckpt_t or 0) >= cfg.checkpoint_interval])
                if going and stop:
                    raise Stopped(min(m.t_env for m in going))
            if self.n_seeds == 1 and self.members[0].failure is not None:
                raise Diverged(self.members[0].failure)
        finally:
            bar.close()
            self.env.close()
        return self.members[0].last_test


def zero_seed(learner: Learner, s: int) -> None:
    """Zero seed s's slice of every tensor of a packed learner's state (networks, optimizer moments,
    replay data)."""
    def walk(tree):
        if isinstance(tree, torch.Tensor):
            if tree.dim() > 0 and tree.is_floating_point():
                tree[s] = 0
            return tree
        if isinstance(tree, dict):
            return {k: walk(v) for k, v in tree.items()}
        return tree

    with torch.no_grad():
        for name in learner.state_attrs:
            value = getattr(learner, name, None)
            if isinstance(value, torch.nn.Module):
                for p in value.state_dict().values():
                    if p.is_floating_point():
                        p[s] = 0
            elif isinstance(value, torch.optim.Optimizer):
                for st in value.state.values():
                    walk(st)


def _write_failure(path: Path, exc: BaseException, kept_t: int | None, t_env: int) -> str:
    """One line: which checkpoint could not be written, why, and what is intact."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    else:
        text = (str(exc).splitlines() or [""])[0]
        reason = "the write was cut short" if "unexpected pos" in text else text[:120]
    try:
        free = os.statvfs(path.parent).f_bavail * os.statvfs(path.parent).f_frsize
        if free < max(path.stat().st_size if path.is_file() else 0, 2**20):
            reason = f"{reason}: the disk is full, {free} bytes free"
    except OSError:
        pass
    kept = (f"the checkpoint at t_env={kept_t} ({path}) is intact" if kept_t is not None and path.is_file()
            else "no earlier checkpoint of this run exists")
    return f"writing the checkpoint at t_env={t_env} to {path} failed ({reason}); {kept}"


class Stopped(Exception):
    """Training stopped on request (signal, preemption) after saving a checkpoint."""

    def __init__(self, t_env: int):
        super().__init__(f"stopped at t_env={t_env} after saving a checkpoint")
        self.t_env = t_env


class _Progress:
    """A tqdm bar on a terminal, one log line per log interval otherwise."""

    def __init__(self, mode: str, total: int, members: list[Member]):
        self.mode = mode
        self.bar = None
        self.members = members
        start = min(m.t_env for m in members)
        self.last = start
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", unit_scale=True, dynamic_ncols=True, file=sys.stderr)
        self.total = total

    def advance(self) -> None:
        """The bar follows the pack's slowest seed (a run of one: its own t_env)."""
        t_env = min(min(m.t_env, self.total) if m.active else self.total for m in self.members)
        if self.bar is not None:
            self.bar.update(t_env - self.last)
        self.last = t_env

    def update(self, member: Member, train: dict[str, float], test: dict[str, float]) -> None:
        t_env = member.t_env
        fields = {} if len(self.members) == 1 else {"seed": member.seed}
        for key in ("return_mean", "test_return_mean", "test_battle_won_mean", "env_steps_per_sec"):
            for metrics in (train, test):
                for name, value in metrics.items():
                    if name == key or name.endswith("/" + key):
                        fields[name.replace("_mean", "").replace("env_steps_per_sec", "steps/s")] = value
        text = " ".join(f"{k}={v:.4g}" for k, v in fields.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
        elif self.mode == "log" and text:
            print(f"[asae] t_env {t_env}/{self.total} ({100 * t_env / self.total:.0f}%) {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
