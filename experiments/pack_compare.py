"""Packed against separate seeds, over whole training runs: does packing change what is learned?

    python -m experiments.pack_compare --algo coma --seeds 8 --t-max 60000 --out results/pack_compare/coma.json

Trains seeds 0 .. N-1 of one config twice, as one pack and as N runs of their own, and compares the
greedy test returns: per seed the mean of the last three evaluations ("final") and the area under the
whole test curve (mean over evaluations). The two sets of N values are compared with Welch's t-test and
the Mann-Whitney U test, with the difference of means and its 95% interval, and the paired differences
per seed (the same seed packed and alone starts from the same weights and resets its envs from the same
seed streams; packing changes only the random draws of the shared torch RNG and float rounding).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from validation import ConfigError

TASKS = {"spread3": {"name": "mpe_spread", "n_agents": 3}, "smax_3m": {"name": "smax", "map_name": "3m"}}


def test_curve(run_dir: Path) -> list[float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics["test_return_mean"]["values"]


def summarize(curves: list[list[float]]) -> dict[str, list[float]]:
    return {"final": [sum(c[-3:]) / len(c[-3:]) for c in curves], "auc": [sum(c) / len(c) for c in curves]}


def compare(a: list[float], b: list[float]) -> dict[str, Any]:
    from scipy import stats

    n_a, n_b = len(a), len(b)
    mean_a, mean_b = sum(a) / n_a, sum(b) / n_b
    var_a = sum((x - mean_a) ** 2 for x in a) / (n_a - 1)
    var_b = sum((x - mean_b) ** 2 for x in b) / (n_b - 1)
    welch = stats.ttest_ind(a, b, equal_var=False)
    se = math.sqrt(var_a / n_a + var_b / n_b)
    dof = (var_a / n_a + var_b / n_b) ** 2 / ((var_a / n_a) ** 2 / (n_a - 1) + (var_b / n_b) ** 2 / (n_b - 1)) if se else 1
    half = float(stats.t.ppf(0.975, dof)) * se
    pooled = math.sqrt((var_a + var_b) / 2)
    paired = [x - y for x, y in zip(a, b)]
    return {"packed_mean": mean_a, "separate_mean": mean_b, "difference": mean_a - mean_b,
            "difference_ci95": [mean_a - mean_b - half, mean_a - mean_b + half],
            "cohens_d": (mean_a - mean_b) / pooled if pooled else 0.0,
            "welch_p": float(welch.pvalue), "mann_whitney_p": float(stats.mannwhitneyu(a, b).pvalue),
            "paired_differences": paired}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.pack_compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", default="coma")
    p.add_argument("--task", default="spread3", choices=sorted(TASKS))
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--t-max", type=int, default=60_000)
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--out", help="write the comparison as JSON here")
    args = p.parse_args(argv)
    if args.seeds < 2:
        raise ConfigError("--seeds must be at least 2 (a comparison needs a spread on each side)")
    from experiments.api import train, train_pack

    config = {"algo": args.algo, "env": TASKS[args.task], "t_max": args.t_max, "n_envs": args.n_envs,
              "batch_size": args.n_envs, "test_interval": max(args.t_max // 20, 1), "test_episodes": 32,
              "checkpoint_interval": 10 ** 9, "device": "cpu"}
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        packed = train_pack(config, seeds=seeds, results_dir=Path(tmp) / "packed")
        alone = [train({**config, "seed": s}, results_dir=Path(tmp) / "separate") for s in seeds]
        bad = [r for r in packed + alone if r.status != "COMPLETED"]
        if bad:
            raise RuntimeError(f"runs did not complete: {bad}")
        curves = {"packed": [test_curve(r.run_dir) for r in packed], "separate": [test_curve(r.run_dir) for r in alone]}
    summary = {side: summarize(c) for side, c in curves.items()}
    report = {"command": "python -m experiments.pack_compare " + " ".join(argv), "config": config, "seeds": seeds,
              "curves": curves, "summary": summary,
              "tests": {what: compare(summary["packed"][what], summary["separate"][what]) for what in ("final", "auc")}}
    for what, t in report["tests"].items():
        print(f"{args.algo} {args.task} {what} test return: packed {t['packed_mean']:.2f}, separate "
              f"{t['separate_mean']:.2f}, difference {t['difference']:.2f} [{t['difference_ci95'][0]:.2f}, "
              f"{t['difference_ci95'][1]:.2f}], d = {t['cohens_d']:.2f}, Welch p = {t['welch_p']:.2f}, "
              f"Mann-Whitney p = {t['mann_whitney_p']:.2f} (n = {len(seeds)} + {len(seeds)})")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ConfigError as exc:
        print(f"pack_compare: {exc}", file=sys.stderr)
        sys.exit(2)
