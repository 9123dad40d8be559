"""Real StarCraft II through oxwhirl's SMAC (``smac.env.StarCraft2Env``) behind the ``VecEnv`` interface.

Use it for maps SMAX cannot express (1c3s5z, 2c_vs_64zg, MMM2, ...) or to check SMAX results against
the real game. It needs three things this module cannot install: the oxwhirl ``smac`` package (NOT the
PyPI package named ``smac``, which is SMAC3, a hyperparameter optimizer), the StarCraft II binary, and the
SMAC maps under ``$SC2PATH/Maps/SMAC_Maps``. ``make`` checks all three and otherwise stops with one line
saying how to install them.

B games run one after another in Python (each is its own StarCraft II process). Per step:
- ``reward`` is SMAC's (dense, scaled so the maximum episode return is 20);
- ``terminated`` means the battle ended; ``truncated`` means SMAC's episode limit was hit (the adapter
  builds the game with ``continuing_episode=True`` so SMAC reports ``info["episode_limit"]``);
- info ``battle_won`` comes from SMAC's info dict;
- a finished game is not stepped again: until the next reset it returns its final observation, zero
  reward and the same done flags.
Seeding: StarCraft II takes a random seed only when a game is launched, so the seeds of the first
``reset`` seed the B games and later seeds are ignored (SC2 is not reproducible per episode anyway).
Actions are SMAC's: 0 no-op (dead agents only), 1 stop, 2-5 move north/south/east/west, 6 + j attack j.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Optional

import numpy as np
import torch

from envs.base import EnvInfo, StepResult, TeamObs, TeamSpec, VecEnv
from envs.config import ConfigError, require
from envs.smac_maps import SMAC_MAPS

INSTALL_HINT = (
    "install oxwhirl's SMAC with `pip install git+https://github.com/oxwhirl/smac.git`, the StarCraft II "
    "binary (Linux: https://github.com/Blizzard/s2client-proto#downloads) and the SMAC maps (SMAC_Maps.zip "
    "from https://github.com/oxwhirl/smac/releases unpacked into $SC2PATH/Maps/), then set SC2PATH to the "
    "StarCraft II directory; or use env=smax for maps SMAX can express"
)
# Arguments the adapter sets itself; sc2_args may pass any other StarCraft2Env argument.
_RESERVED_ARGS = ("map_name", "seed", "difficulty", "step_mul", "continuing_episode")


@dataclass(frozen=True)
class Config:
    map_name: str = "3m"
    episode_limit: Optional[int] = None  # None: SMAC's limit for the map
    difficulty: Literal["1", "2", "3", "4", "5", "6", "7", "8", "9", "A"] = "7"  # built-in AI; SMAC's default
    step_mul: Optional[int] = None  # game steps per env step; None: SMAC's default (8)
    # Further StarCraft2Env arguments, e.g. {"obs_last_action": true, "state_last_action": false}.
    sc2_args: Optional[dict] = None

    def check(self) -> None:
        require(self.map_name in SMAC_MAPS,
                f"env.map_name={self.map_name!r} is not a SMAC map; valid maps are: {', '.join(sorted(SMAC_MAPS))}")
        require(self.episode_limit is None or self.episode_limit >= 1,
                f"env.episode_limit={self.episode_limit} must be at least 1 (or null for SMAC's limit)")
        require(self.step_mul is None or self.step_mul >= 1, f"env.step_mul={self.step_mul} must be at least 1")
        clash = sorted(set(self.sc2_args or {}) & set(_RESERVED_ARGS))
        require(not clash, f"env.sc2_args may not set {', '.join(clash)}: use the env.* keys of the same name "
                           f"(continuing_episode is always on, to tell time limits from battle ends)")


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
    from envs import package_version

    versions = sc2_path() / "Versions"
    builds = sorted(p.name for p in versions.iterdir()) if versions.is_dir() else []
    return f"{package_version('smac')}, StarCraft II {builds[-1] if builds else '(not found)'}"


class SMACVecEnv(VecEnv):
    """B StarCraft2Env games stepped one by one. ``env_factory`` builds one game (StarCraft2Env or a fake)."""

    def __init__(self, cfg: Config, n_envs: int, env_factory: Callable[..., Any]):
        require(n_envs >= 1, f"n_envs={n_envs} must be at least 1")
        self.cfg = cfg
        self._factory = functools.partial(env_factory, map_name=cfg.map_name, difficulty=cfg.difficulty,
                                          step_mul=cfg.step_mul, continuing_episode=True, **(cfg.sc2_args or {}))
        # Building a StarCraft2Env does not launch the game, so a probe can tell the shapes.
        probe = self._new_game(seed=None)
        env_info = probe.get_env_info()
        probe.close()
        n, n_actions = env_info["n_agents"], env_info["n_actions"]
        spec = TeamSpec("team", n, env_info["obs_shape"], env_info["state_shape"], n_actions)
        self.info = EnvInfo(name="smac", n_envs=n_envs, episode_limit=env_info["episode_limit"], teams=(spec,),
                            backend=backend_name(cfg), episode_stats={"battle_won": "last"})
        self._games: list[Any] = [None] * n_envs  # launched lazily by the first reset, with its seeds
        self._obs = np.zeros((n_envs, n, spec.obs_dim), dtype=np.float32)
        self._state = np.zeros((n_envs, spec.state_dim), dtype=np.float32)
        self._avail = np.zeros((n_envs, n, n_actions), dtype=bool)
        self._terminated = np.zeros(n_envs, dtype=bool)
        self._truncated = np.zeros(n_envs, dtype=bool)

    def _new_game(self, seed: Optional[int]):
        game = self._factory(seed=seed)
        if self.cfg.episode_limit is not None:
            game.episode_limit = self.cfg.episode_limit
        return game

    def _observe(self, b: int) -> None:
        game = self._games[b]
        self._obs[b] = np.asarray(game.get_obs(), dtype=np.float32)
        self._state[b] = np.asarray(game.get_state(), dtype=np.float32)
        self._avail[b] = np.asarray(game.get_avail_actions(), dtype=bool)

    def _team_obs(self) -> dict[str, TeamObs]:
        # copies: the runner may keep these tensors while the buffers are overwritten next step
        return {"team": TeamObs(torch.from_numpy(self._obs.copy()), torch.from_numpy(self._state.copy()),
                                torch.from_numpy(self._avail.copy()))}

    def reset(self, seeds: list[int]) -> dict[str, TeamObs]:
        require(len(seeds) == self.n_envs, f"reset needs {self.n_envs} seeds, got {len(seeds)}")
        for b, seed in enumerate(seeds):
            if self._games[b] is None:
                self._games[b] = self._new_game(seed=int(seed) % 2**32)
            self._games[b].reset()
            self._observe(b)
        self._terminated[:] = False
        self._truncated[:] = False
        return self._team_obs()

    def step(self, actions: Mapping[str, torch.Tensor]) -> StepResult:
        if self._games[0] is None:
            raise RuntimeError("SMACVecEnv.step called before reset")
        acts = actions["team"].detach().cpu().numpy()
        reward = np.zeros(self.n_envs, dtype=np.float32)
        won = np.zeros(self.n_envs, dtype=np.float32)
        for b, game in enumerate(self._games):
            if self._terminated[b] or self._truncated[b]:
                continue  # SMAC cannot step a finished game; the runner ignores this env until reset
            r, done, info = game.step([int(a) for a in acts[b]])
            reward[b] = r
            won[b] = float(bool(info.get("battle_won", False)))
            limit_hit = bool(info.get("episode_limit", False))
            self._truncated[b] = bool(done) and limit_hit
            self._terminated[b] = bool(done) and not limit_hit
            self._observe(b)
        return StepResult(obs=self._team_obs(), reward={"team": torch.from_numpy(reward)},
                          terminated=torch.from_numpy(self._terminated.copy()),
                          truncated=torch.from_numpy(self._truncated.copy()),
                          info={"battle_won": torch.from_numpy(won)})

    def close(self) -> None:
        for game in self._games:
            if game is not None:
                game.close()
        self._games = [None] * self.n_envs


def make(cfg: Config, n_envs: int) -> VecEnv:
    starcraft2env = import_starcraft2env()
    check_sc2_install(cfg.map_name)
    return SMACVecEnv(cfg, n_envs, env_factory=starcraft2env)
