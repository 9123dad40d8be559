"""Learner registry: algorithm name -> (module, class). Modules load on first use."""
from __future__ import annotations

import importlib
from typing import Any, Mapping

from validation import ConfigError, build, to_dict

REGISTRY: dict[str, str] = {
    "asae": "algos.asae:ASAE",
    "coma": "algos.coma:COMA",
    "mappo": "algos.mappo:MAPPO",
    "ippo": "algos.ippo:IPPO",
    "dop": "algos.dop:DOP",
    "iql": "algos.iql:IQL",
    "vdn": "algos.vdn:VDN",
    "qmix": "algos.qmix:QMIX",
}
RANDOM = "random"  # not a learner: a fixed uniform policy over available actions (e.g. random prey)


def register(name: str, target: str) -> None:
    REGISTRY[name] = target


def learner_class(name: Any):
    if name not in REGISTRY:
        raise ConfigError(f"unknown algo {name!r}; valid algos are: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def learner_config(name: str, overrides: Mapping[str, Any] | None, where: str = "learner") -> Any:
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}={overrides!r} is not valid; set the algo's hyper-parameters as "
                          f"{where}.KEY=VALUE (`asae train print_config` shows them)")
    return build(learner_class(name).Config, overrides, where=where)


def learner_defaults(name: str, overrides: Mapping[str, Any] | None, where: str = "learner") -> dict[str, Any]:
    """The algo's full hyper-parameter dict: user overrides over its defaults (validated)."""
    return to_dict(learner_config(name, overrides, where))
