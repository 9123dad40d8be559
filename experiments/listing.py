"""`asae list`: algorithms, environments (with their options) and named configs."""
from __future__ import annotations

import dataclasses

import algos
import envs


def main(argv: list[str]) -> int:
    from experiments.experiment import ex

    print("Algorithms (with algo=NAME):")
    width = max(map(len, algos.REGISTRY))
    for name in sorted(algos.REGISTRY):
        print(f"  {name:<{width}}  {algos.learner_class(name).description}")
    print("\nEnvironments (with env=NAME, options as env.KEY=VALUE):")
    width = max(map(len, envs.ENVS))
    for name, entry in sorted(envs.ENVS.items()):
        print(f"  {name:<{width}}  {entry.description}")
        options = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(entry.load().Config))
        print(f"  {'':<{width}}  options: {options}")
    print("\nNamed configs (asae train with NAME):")
    width = max(map(len, ex.named_configs))
    for name, cfg in sorted(ex.named_configs.items()):
        doc = " ".join((getattr(cfg, "__doc__", None) or "").split())
        print(f"  {name:<{width}}  {doc}")
    return 0
