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
                  device: torch.device) -> Learner:
    """One team's learner as a run builds it: its algo's class, the team's learner config and the run's
    common settings (gamma, learning rates, batch size, episode limit, device)."""
    common = Common(gamma=cfg.gamma, lr=cfg.lr, critic_lr=cfg.critic_lr, batch_size=cfg.batch_size,
                    episode_limit=episode_limit, device=device)
    return algos.learner_class(algo)(spec, cfg.learner_config(spec.name, algo), common)


class Trainer:
    def __init__(self, cfg: RunConfig, logger: MetricLogger, checkpoint_dir: Path | None,
                 stop_event: threading.Event | None = None, progress: str = "off"):
        self.cfg, self.logger, self.checkpoint_dir = cfg, logger, checkpoint_dir
        self.stop_event = stop_event or threading.Event()
        self.progress = progress
        self.device = resolve_device(cfg.device)
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        memory.check_envs(cfg)
        self.env = make_env(cfg.env, cfg.n_envs)
        info = self.env.info
        team_names = [t.name for t in info.teams]
        try:
            self.team_algos = cfg.team_algos(team_names)
            memory.check(cfg, info, self.team_algos)
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
            learner = build_learner(cfg, spec, algo, info.episode_limit, self.device)
            self.learners[spec.name] = learner
            controllers[spec.name] = learner.controller
        require(bool(self.learners), f"teams={self.team_algos} has no learning team; give one team an algo")
        self.runner = EpisodeRunner(self.env, controllers)
        on_policy = any(type(lr).on_policy for lr in self.learners.values())
        self.rounds = math.ceil(cfg.batch_size / cfg.n_envs) if on_policy else 1
        self.train_rng = np.random.default_rng([cfg.seed, 0])
        self.test_rng = np.random.default_rng([cfg.seed, 1])
        self.t_env = self.episodes = self.iteration = 0
        self.last_test_t = self.last_log_t = self.last_ckpt_t = None
        self.window = _Window()

    # --- metrics ----------------------------------------------------------------------------------
    def _name(self, team: str, metric: str) -> str:
        return f"{team}/{metric}" if self.multi_team else metric

    def _seeds(self, rng: np.random.Generator) -> list[int]:
        return [int(s) for s in rng.integers(0, 2**31 - 1, size=self.cfg.n_envs)]

    def _collect(self, test_mode: bool, n_episodes: int, rng: np.random.Generator):
        rounds = max(1, math.ceil(n_episodes / self.cfg.n_envs))
        per_team: dict[str, list[EpisodeBatch]] = {}
        stats: dict[str, EpisodeStats] = {}
        steps = 0
        for _ in range(rounds):
            batches, round_stats, round_steps = self.runner.run(self._seeds(rng), self.t_env, test_mode)
            steps += round_steps
            for team, batch in batches.items():
                per_team.setdefault(team, []).append(batch)
                stats.setdefault(team, EpisodeStats()).extend(round_stats[team])
        return {team: EpisodeBatch.cat(b) for team, b in per_team.items()}, stats, steps

    def evaluate(self) -> dict[str, float]:
        self.last_test_t = self.t_env  # also with test_episodes=0: the loop compares against it
        if self.cfg.test_episodes == 0:
            return {}
        with torch.no_grad():
            _, stats, _ = self._collect(True, self.cfg.test_episodes, self.test_rng)
        out = {}
        for team, team_stats in stats.items():
            for key, value in summarize(team_stats.first(self.cfg.test_episodes), "test_").items():
                out[self._name(team, key)] = value
        for name, value in out.items():
            self.logger.log(name, value, self.t_env)
        return out

    def _log_window(self) -> dict[str, float]:
        w = self.window
        out = {}
        for team, team_stats in w.episodes.items():
            out.update({self._name(team, k): v for k, v in summarize(team_stats).items()})
        for team, metrics in w.learner.items():
            out.update({self._name(team, k): float(np.mean(v)) for k, v in metrics.items()})
        if w.seconds > 0:
            out["env_steps_per_sec"] = w.steps / w.seconds
        out["episodes"] = float(self.episodes)
        for name, value in out.items():
            self.logger.log(name, value, self.t_env)
        self.window = _Window()
        self.last_log_t = self.t_env
        return out

    def check_finite(self, team: str, metrics: dict[str, float]) -> None:
        """Diverged (one line: which value, at which step, which checkpoint is kept) when an update of
        ``team`` gave a non-finite metric or left a non-finite parameter."""
        bad = next((k for k, v in metrics.items() if not math.isfinite(float(v))), None)
        where = None if bad is None else f"{self._name(team, bad)} is {float(metrics[bad])}"
        if where is None:
            learner = self.learners[team]
            for attr in type(learner).state_attrs:
                module = getattr(learner, attr, None)
                if isinstance(module, torch.nn.Module):
                    for name, param in module.named_parameters():
                        if not bool(torch.isfinite(param).all()):
                            where = f"parameter {attr}.{name}" + (f" of team {team}" if self.multi_team else "") + \
                                " is not finite"
                            break
                if where is not None:
                    break
        if where is None:
            return
        path = None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME
        kept = (f"its last checkpoint ({path}, t_env={self.last_ckpt_t}) is kept" if path is not None and path.is_file()
                else "it wrote no checkpoint")
        raise Diverged(f"training diverged: {where} after the update at t_env={self.t_env} (iteration "
                       f"{self.iteration}); {kept}; lower lr / critic_lr or check the config")

    # --- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION, "run_key": self.cfg.run_key,
            "counters": {"t_env": self.t_env, "episodes": self.episodes, "iteration": self.iteration,
                         "last_test_t": self.last_test_t, "last_log_t": self.last_log_t, "last_ckpt_t": self.last_ckpt_t},
            "learners": {team: learner.state_dict() for team, learner in self.learners.items()},
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "train": self.train_rng.bit_generator.state, "test": self.test_rng.bit_generator.state},
            "metrics": list(self.logger.history),
            "window": self.window,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        require(state["run_key"] == self.cfg.run_key,
                f"resume_from points at a checkpoint of run {state['run_key']}, but this config is run {self.cfg.run_key}; "
                "resume with the same config (only device, logging and checkpoint settings may change)")
        c = state["counters"]
        self.t_env, self.episodes, self.iteration = c["t_env"], c["episodes"], c["iteration"]
        self.last_test_t, self.last_log_t, self.last_ckpt_t = c["last_test_t"], c["last_log_t"], c["last_ckpt_t"]
        for team, learner in self.learners.items():
            learner.load_state_dict(state["learners"][team])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.train_rng.bit_generator.state = state["rng"]["train"]
        self.test_rng.bit_generator.state = state["rng"]["test"]
        self.logger.replay(state["metrics"])
        self.window = state["window"]

    def save_checkpoint(self) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        path = self.checkpoint_dir / CHECKPOINT_NAME
        before = self.last_ckpt_t
        self.last_ckpt_t = self.t_env
        state = self.state_dict()
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: torch.save(state, f), keep_previous=self.checkpoint_dir / PREVIOUS_CHECKPOINT_NAME)
        except (OSError, RuntimeError) as exc:  # torch's zip writer reports a failed write as a RuntimeError
            self.last_ckpt_t = before
            raise CheckpointWriteError(_write_failure(path, exc, before, self.t_env)) from None
        return path

    def resume(self, resume_from: str | Path) -> None:
        self.load_state_dict(read_checkpoint(checkpoint_path(resume_from), map_location=self.device))

    # --- the loop ---------------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        """Run until t_max. Returns the last test metrics. Raises Stopped if asked to stop early."""
        cfg = self.cfg
        bar = _Progress(self.progress, cfg.t_max, self.t_env)
        last_test = {}
        if self.last_test_t is None:
            last_test = self.evaluate()
        try:
            while self.t_env < cfg.t_max:
                if self.stop_event.is_set():  # asked before this iteration: while the envs were built or tested
                    if self.t_env != self.last_ckpt_t:
                        self.save_checkpoint()
                    raise Stopped(self.t_env)
                start = time.perf_counter()
                batches, stats, steps = self._collect(False, self.rounds * cfg.n_envs, self.train_rng)
                self.t_env += steps
                self.episodes += len(next(iter(stats.values())).returns)
                self.iteration += 1
                for team, learner in self.learners.items():
                    metrics = learner.train(batches[team], self.t_env, self.episodes)
                    self.check_finite(team, metrics)
                    for key, value in metrics.items():
                        self.window.learner.setdefault(team, {}).setdefault(key, []).append(value)
                for team, team_stats in stats.items():
                    self.window.episodes.setdefault(team, EpisodeStats()).extend(team_stats)
                self.window.steps += steps
                self.window.seconds += time.perf_counter() - start
                if self.last_log_t is None or self.t_env - self.last_log_t >= cfg.log_interval:
                    bar.update(self.t_env, self._log_window(), last_test)
                if self.t_env - self.last_test_t >= cfg.test_interval:
                    last_test = self.evaluate()
                    bar.update(self.t_env, {}, last_test)
                bar.advance(self.t_env)
                done = self.t_env >= cfg.t_max
                if not done and (self.stop_event.is_set()
                                 or self.t_env - (self.last_ckpt_t or 0) >= cfg.checkpoint_interval):
                    self.save_checkpoint()
                if not done and self.stop_event.is_set():
                    raise Stopped(self.t_env)
            if self.window.steps:
                self._log_window()
            if self.last_test_t != self.t_env:
                last_test = self.evaluate()
                bar.update(self.t_env, {}, last_test)
            self.save_checkpoint()
        finally:
            bar.close()
            self.env.close()
        return last_test


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

    def __init__(self, mode: str, total: int, start: int):
        self.mode = mode
        self.bar = None
        self.last = start
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", unit_scale=True, dynamic_ncols=True, file=sys.stderr)
        self.total = total

    def advance(self, t_env: int) -> None:
        if self.bar is not None:
            self.bar.update(t_env - self.last)
        self.last = t_env

    def update(self, t_env: int, train: dict[str, float], test: dict[str, float]) -> None:
        fields = {}
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
