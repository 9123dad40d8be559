"""Environment registry: names -> (config dataclass, factory). Backends import their heavy libraries
(jax, mpe2, smac) only when an env is made, so listing and validating envs stays instant."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

from envs.base import EnvInfo, StepResult, TeamObs, TeamSpec, VecEnv
from validation import ConfigError, build, to_dict

__all__ = [
    "ENVS", "EnvInfo", "StepResult", "TeamObs", "TeamSpec", "VecEnv", "ConfigError", "EnvCrashed",
    "register_env", "env_config", "make_env",
]


class EnvCrashed(RuntimeError):
    """A process an env depends on (e.g. a StarCraft II game) failed or died: the run cannot go on. The
    message is one line naming the game and what happened."""


@dataclass(frozen=True)
class EnvEntry:
    name: str
    module: str  # module defining `Config` (a dataclass) and `make(config, n_envs) -> VecEnv`
    description: str

    def load(self):
        return importlib.import_module(self.module)


ENVS: dict[str, EnvEntry] = {}


def register_env(name: str, module: str, description: str) -> None:
    ENVS[name] = EnvEntry(name, module, description)


register_env("mpe_spread", "envs.mpe_spread",
             "MPE simple spread (mpe2, or backend=batched: the same env in numpy): N agents cover N landmarks; "
             "optional sight range")
register_env("predator_prey", "envs.predator_prey",
             "MPE predator-prey of the paper (batched numpy, mpe2 physics): predator vs prey teams, walls, "
             "2 obstacles, captures")
register_env("smax", "envs.smax",
             "SMAC maps in SMAX (JaxMARL, batched JAX) vs the heuristic enemy; maps SMAX cannot express point "
             "to env=smac")
register_env("smac", "envs.smac",
             "real StarCraft II through oxwhirl's smac package (needs smac, StarCraft II and the SMAC maps)")


def _entry(name: Any) -> EnvEntry:
    if name not in ENVS:
        raise ConfigError(f"unknown env {name!r}; valid envs are: {', '.join(sorted(ENVS))}")
    return ENVS[name]


def env_config(cfg: Mapping[str, Any]) -> Any:
    """Validate an env config dict ({"name": ..., **args}) into the env's typed Config."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"env={cfg!r} is not valid; use env=NAME (`asae list`) or env.KEY=VALUE")
    cfg = dict(cfg)
    entry = _entry(cfg.pop("name", None))
    return build(entry.load().Config, cfg, where="env")


def env_defaults(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The full env config dict: the user's keys over the env's defaults (validated)."""
    config = env_config(cfg)
    return {"name": cfg.get("name"), **to_dict(config)}


def describe(cfg: Mapping[str, Any], n_envs: int) -> dict[str, Any]:
    """What a run's env steps mean, recorded in config.json so runs from different machines compare."""
    entry = _entry(cfg.get("name"))
    module = entry.load()
    backend = module.backend_name(env_config(cfg)) if hasattr(module, "backend_name") else "unknown"
    return {
        "step_unit": "env_step: one step of one environment with every agent acting (t_env counts these)",
        "n_envs": n_envs,
        "backend": backend,
    }


def package_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{package} {version(package)}"
    except PackageNotFoundError:
        return f"{package} (not installed)"


def make_env(cfg: Mapping[str, Any], n_envs: int) -> VecEnv:
    entry = _entry(cfg.get("name"))
    return entry.load().make(env_config(cfg), n_envs)
