"""Real StarCraft II through oxwhirl's SMAC (``smac.env.StarCraft2Env``) behind the ``VecEnv`` interface.

Use it for maps SMAX cannot express (1c3s5z, 2c_vs_64zg, MMM2, ...) or to check SMAX results against
the real game. It needs three things this module cannot install: the oxwhirl ``smac`` package (NOT the
PyPI package named ``smac``, which is SMAC3, a hyperparameter optimizer), the StarCraft II binary, and the
SMAC maps under ``$SC2PATH/Maps/SMAC_Maps``. ``make`` checks all three and otherwise stops with one line
saying how to install them.

Each of the B games runs in its own worker process and the B games are stepped at the same time
(envs/smac_workers.py: shutdown, signals). A game that fails or whose worker dies ends the run with
``EnvCrashed``, one line naming the game. StarCraft2Env gets SMAC's own defaults for everything the user
does not set (``env.difficulty`` "7" and ``env.step_mul`` 8 are SMAC's defaults). Per step:
- ``reward`` is SMAC's (dense, scaled so the maximum episode return is 20);
- ``terminated`` means the episode ended in a terminal state: the battle ended, or, with
  ``env.timeout="terminal"`` (the default, PyMARL's: SMAC's ``continuing_episode=False``), the episode
  limit was hit; with ``env.timeout="truncation"`` the game is built with ``continuing_episode=True``, SMAC
  then reports ``info["episode_limit"]`` and a time-out is ``truncated`` (bootstrapped from the last state);
- info ``battle_won`` comes from SMAC's info dict;
- a finished game is not stepped again: until the next reset it returns its final observation, zero
  reward and the same done flags.
Seeding: StarCraft II takes a random seed only when a game is launched, so the seeds of the first
``reset`` seed the B games and later seeds are ignored (SC2 is not reproducible per episode anyway).
Actions are SMAC's: 0 no-op (dead agents only), 1 stop, 2-5 move north/south/east/west, 6 + j attack j.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional

import numpy as np
import torch

from envs import EnvCrashed, package_version
from envs.base import EnvInfo, StepResult, TeamObs, TeamSpec, Timeout, VecEnv
from validation import ConfigError, require
from envs.smac_maps import SMAC_MAPS
from envs.smac_workers import GameWorkers, WorkerError

INSTALL_HINT = (
    "install oxwhirl's SMAC next to this suite with `pip install --no-deps git+https://github.com/oxwhirl/smac.git "
    "pysc2==4.0.0 s2clientprotocol mpyq portpicker websocket-client` (docs/smac.md says why), the StarCraft II "
    "binary (Linux: https://github.com/Blizzard/s2client-proto#downloads) and the SMAC maps (SMAC_Maps.zip "
    "from https://github.com/oxwhirl/smac/releases unpacked into $SC2PATH/Maps/), then set SC2PATH to the "
    "StarCraft II directory; or use env=smax for maps SMAX can express"
)
# StarCraft2Env arguments the adapter sets itself, and what sets them; sc2_args may pass any other.
_RESERVED_ARGS = {"map_name": "env.map_name", "difficulty": "env.difficulty", "step_mul": "env.step_mul",
                  "continuing_episode": "env.timeout", "seed": "the run's seed"}


@dataclass(frozen=True)
class Config:
    map_name: str = "3m"
    episode_limit: Optional[int] = None  # None: SMAC's limit for the map
    difficulty: Literal["1", "2", "3", "4", "5", "6", "7", "8", "9", "A"] = "7"  # built-in AI; SMAC's default
    step_mul: int = 8  # game loops per env step; SMAC's default
    # Reaching the episode limit: "terminal" (no bootstrap; PyMARL's default, the paper's) or "truncation"
    # (bootstrap from the last state). docs/smac.md says why "terminal" is the default.
    timeout: Timeout = "terminal"
    # Further StarCraft2Env arguments, e.g. {"obs_last_action": true, "state_last_action": false}.
    sc2_args: Optional[dict] = None

    def check(self) -> None:
        require(self.map_name in SMAC_MAPS,
                f"env.map_name={self.map_name!r} is not a SMAC map; valid maps are: {', '.join(sorted(SMAC_MAPS))}")
        require(self.episode_limit is None or self.episode_limit >= 1,
                f"env.episode_limit={self.episode_limit} must be at least 1 (or null for SMAC's limit)")
        require(self.step_mul >= 1, f"env.step_mul={self.step_mul} must be at least 1 (game loops per env step)")
        clash = sorted(set(self.sc2_args or {}) & set(_RESERVED_ARGS))
        require(not clash, f"env.sc2_args may not set {clash[0] if clash else ''}: "
                           f"{_RESERVED_ARGS[clash[0]] if clash else ''} sets it")


def sc2_path() -> Path:
    """Where StarCraft II is: $SC2PATH, else pysc2's default location for this platform."""
    if os.environ.get("SC2PATH"):
        return Path(os.environ["SC2PATH"]).expanduser()
    if sys.platform == "darwin":
        return Path("/Applications/StarCraft II")
    if sys.platform == "win32":
        return Path("C:/Program Files (x86)/StarCraft II")
    return Path("~/StarCraftII").expanduser()


def import_starcraft2env() -> Callable[..., Any]:
    """oxwhirl's StarCraft2Env class, or ConfigError saying what to install."""
    try:
        from smac.env import StarCraft2Env
    except ImportError as exc:
        try:
            importlib.import_module("smac")
            other_smac = True
        except ImportError:
            other_smac = False
        if other_smac:
            raise ConfigError(
                "env=smac: the installed `smac` package is not oxwhirl's StarCraft Multi-Agent Challenge (PyPI's "
                "`smac` is SMAC3, a hyperparameter optimizer); run `pip uninstall smac`, then " + INSTALL_HINT
            ) from None
        raise ConfigError(f"env=smac needs the oxwhirl smac package ({exc}); {INSTALL_HINT}") from None
    except TypeError as exc:
        if "Descriptors cannot be created directly" not in str(exc):
            raise
        raise ConfigError(
            "env=smac: s2clientprotocol (StarCraft II's messages, used by smac) was generated for an older protobuf "
            f"than the installed {package_version('protobuf')}; set PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python "
            "(docs/smac.md)") from None
    return StarCraft2Env


def check_sc2_install(map_name: str) -> None:
    """ConfigError unless StarCraft II and the SMAC map file are where pysc2 will look for them."""
    root = sc2_path()
    where = f"SC2PATH={os.environ['SC2PATH']}" if os.environ.get("SC2PATH") else f"SC2PATH unset, looked in {root}"
    if not (root / "Versions").is_dir():
        raise ConfigError(f"env=smac: StarCraft II not found ({where}); {INSTALL_HINT}")
    if not (root / "Maps" / "SMAC_Maps" / f"{map_name}.SC2Map").is_file():
        raise ConfigError(f"env=smac: SMAC map {map_name}.SC2Map not found in {root / 'Maps' / 'SMAC_Maps'}; "
                          f"{INSTALL_HINT}")


def backend_name(cfg: Config) -> str:
    versions = sc2_path() / "Versions"
    builds = sorted(p.name for p in versions.iterdir()) if versions.is_dir() else []
    return f"{package_version('smac')}, StarCraft II {builds[-1] if builds else '(not found)'}"


def game_kwargs(cfg: Config, seed: Optional[int]) -> dict[str, Any]:
    """StarCraft2Env's arguments for one game. The env.* defaults are SMAC's own (a test holds them to
    StarCraft2Env's signature); everything else is SMAC's default unless sc2_args sets it."""
    return {"map_name": cfg.map_name, "difficulty": cfg.difficulty, "step_mul": cfg.step_mul,
            "continuing_episode": cfg.timeout == "truncation", "seed": seed, **(cfg.sc2_args or {})}


def check_sc2_args(factory: Callable[..., Any], cfg: Config) -> None:
    """ConfigError naming an sc2_args key that StarCraft2Env does not take (it would be a TypeError)."""
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(cfg.sc2_args or {}) - set(params))
    require(not unknown, f"env.sc2_args.{unknown[0] if unknown else ''} is not an argument of StarCraft2Env; "
                         f"valid ones are: {', '.join(sorted(set(params) - set(_RESERVED_ARGS)))}")


class SMACVecEnv(VecEnv):
    """B StarCraft2Env games, each in its own worker process (envs/smac_workers.py), stepped together.
    ``env_factory`` builds one game (StarCraft2Env, or a test double) from StarCraft2Env's arguments."""

    def __init__(self, cfg: Config, n_envs: int, env_factory: Callable[..., Any]):
        require(n_envs >= 1, f"n_envs={n_envs} must be at least 1")
        check_sc2_args(env_factory, cfg)
        self.cfg = cfg
        self._factory = env_factory
        # Building a StarCraft2Env does not launch the game, so a probe in this process can tell the shapes.
        probe = env_factory(**game_kwargs(cfg, seed=None))
        if cfg.episode_limit is not None:
            probe.episode_limit = cfg.episode_limit
        env_info = probe.get_env_info()
        probe.close()
        n, n_actions = env_info["n_agents"], env_info["n_actions"]
        spec = TeamSpec("team", n, env_info["obs_shape"], env_info["state_shape"], n_actions)
        self.info = EnvInfo(name="smac", n_envs=n_envs, episode_limit=env_info["episode_limit"], teams=(spec,),
                            backend=backend_name(cfg), episode_stats={"battle_won": "last"})
        self._workers: Optional[GameWorkers] = None  # started by the first reset, with its seeds
        self._seeds: list[int] = []
        self._obs = np.zeros((n_envs, n, spec.obs_dim), dtype=np.float32)
        self._state = np.zeros((n_envs, spec.state_dim), dtype=np.float32)
        self._avail = np.zeros((n_envs, n, n_actions), dtype=bool)
        self._terminated = np.zeros(n_envs, dtype=bool)
        self._truncated = np.zeros(n_envs, dtype=bool)

    @contextlib.contextmanager
    def _naming_the_game(self):
        """A game that fails or dies ends the run with one line that says which game and how."""
        try:
            yield
        except WorkerError as exc:
            raise EnvCrashed(f"env=smac: game {exc.game} of {self.n_envs} (map {self.cfg.map_name}, seed "
                             f"{self._seeds[exc.game]}) {exc.what}") from None

    def _observe(self, b: int, obs: np.ndarray, state: np.ndarray, avail: np.ndarray) -> None:
        self._obs[b], self._state[b], self._avail[b] = obs, state, avail

    def _team_obs(self) -> dict[str, TeamObs]:
        # copies: the runner may keep these tensors while the buffers are overwritten next step
        return {"team": TeamObs(torch.from_numpy(self._obs.copy()), torch.from_numpy(self._state.copy()),
                                torch.from_numpy(self._avail.copy()))}

    def reset(self, seeds: list[int]) -> dict[str, TeamObs]:
        require(len(seeds) == self.n_envs, f"reset needs {self.n_envs} seeds, got {len(seeds)}")
        with self._naming_the_game():
            if self._workers is None:
                self._seeds = [int(seed) % 2**32 for seed in seeds]  # RequestCreateGame's seed is a uint32
                self._workers = GameWorkers(self._factory, [game_kwargs(self.cfg, seed) for seed in self._seeds],
                                            self.cfg.episode_limit)
            for b, observed in self._workers.reset().items():
                self._observe(b, *observed)
        self._terminated[:] = False
        self._truncated[:] = False
        return self._team_obs()

    def step(self, actions: Mapping[str, torch.Tensor]) -> StepResult:
        if self._workers is None:
            raise RuntimeError("SMACVecEnv.step called before reset")
        acts = actions["team"].detach().cpu().numpy()
        # SMAC cannot step a finished game; the runner ignores a finished env until the next reset
        playing = np.flatnonzero(~(self._terminated | self._truncated))
        with self._naming_the_game():
            out = self._workers.step({int(b): acts[b].tolist() for b in playing})
        reward = np.zeros(self.n_envs, dtype=np.float32)
        won = np.zeros(self.n_envs, dtype=np.float32)
        for b, (r, done, info, *observed) in out.items():
            reward[b] = r
            won[b] = float(bool(info.get("battle_won", False)))
            # SMAC reports the time limit in info only when built with continuing_episode (timeout="truncation")
            limit_hit = bool(info.get("episode_limit", False))
            self._truncated[b] = done and limit_hit
            self._terminated[b] = done and not limit_hit
            self._observe(b, *observed)
        return StepResult(obs=self._team_obs(), reward={"team": torch.from_numpy(reward)},
                          terminated=torch.from_numpy(self._terminated.copy()),
                          truncated=torch.from_numpy(self._truncated.copy()),
                          info={"battle_won": torch.from_numpy(won)})

    def close(self) -> None:
        if self._workers is not None:
            self._workers.close()
        self._workers = None


def make(cfg: Config, n_envs: int) -> VecEnv:
    starcraft2env = import_starcraft2env()
    check_sc2_install(cfg.map_name)
    return SMACVecEnv(cfg, n_envs, env_factory=starcraft2env)
