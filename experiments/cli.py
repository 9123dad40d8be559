"""The `asae` command. Each subcommand lives in its own module and is imported only when used, so
`asae list` or a typo answers instantly without importing torch, jax or submitit.

Every subcommand is a function ``main(argv: list[str]) -> int``. A user mistake raises
``validation.ConfigError`` (or argparse's own exit 2); it is printed as one line, exit status 2.
"""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "train": ("experiments.train:main", "train one run (arguments go to Sacred: with KEY=VALUE, named configs, -F, -m, print_config)"),
    "list": ("experiments.listing:main", "algorithms, environments and named configs"),
    "sweep": ("slurm.cli:sweep_main", "expand a paper preset into runs and submit them (slurm / local / debug)"),
    "status": ("slurm.cli:status_main", "per-run status of a sweep, with SLURM job ids"),
    "report": ("analysis.cli:report_main", "regenerate the paper's tables and figures from runs"),
    "sync-mongo": ("analysis.cli:sync_mongo_main", "copy file-stored runs into MongoDB for Omniboard"),
    "bench": ("experiments.bench:main", "measure env and training throughput, update time and memory"),
    "baselines": ("experiments.baselines:main", "scripted policies' scores (random, focus fire, ...) per env, cached for reports and train"),
    "provenance": ("experiments.provenance:main", "which code made runs: `recover RUNS_DIR` for runs made before they recorded it"),
    "compare-epymarl": ("experiments.compare_epymarl:main", "COMA and QMIX beside EPyMARL's own code on MPE spread or SMAX (fidelity)"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: asae COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "`asae COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"asae: unknown command {name!r}; valid commands are: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module_name, func_name = SUBCOMMANDS[name][0].split(":")
    from validation import ConfigError

    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(rest) or 0)
    except ConfigError as exc:
        print(f"asae {name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"asae {name}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file system or device that says no (full, read-only, /proc, permissions)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"asae {name}: {where}{exc.strerror or exc}; files written before it are whole (each is written "
              "through a temporary file and renamed)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
