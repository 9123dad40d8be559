"""What the learners did, from the training metrics they log: softmax entropy of the policy, KL between
the policies before and after an update, the fraction of samples at the clip bound, and ASAE's
asynchrony gap. One line per task, algorithm and metric, per seed, so a reader sees whether the policy
still moves and whether the clip bound ever binds (which decides whether an m or clip ablation can show
anything)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.tables import TASK_TEAM, learning_rows, task_team_label

DIAGNOSTICS = ("entropy_softmax", "kl", "clip_frac", "async_gap")
LABELS = {"entropy_softmax": "softmax entropy (nats)", "kl": "KL per update", "clip_frac": "clip fraction",
          "async_gap": "asynchrony gap"}
WARMUP = 0.2  # the first fifth of training (epsilon annealing, the critic's first fit) is left out
DETERMINISTIC = 0.05  # softmax entropy below this (nats): the policy picks one action almost always


def _num(x: float) -> str:
    if not np.isfinite(x):
        return "—"
    if x == 0:
        return "0"
    return f"{x:.2g}" if abs(x) < 0.01 or abs(x) >= 100 else f"{x:.3g}"


def _steps(x: float) -> str:
    from analysis.tables import fmt_steps

    return fmt_steps(x)


def per_seed(rows: pd.DataFrame, metric: str, warmup: float = WARMUP) -> list[dict]:
    """Per run: its values of ``metric`` after the warm-up, and the first step from which the softmax
    entropy stays below DETERMINISTIC (NaN if it never does)."""
    out = []
    for rid, g in rows[rows["metric"] == metric].groupby("run_id", observed=True):
        g = g.sort_values("step")
        x, y = g["step"].to_numpy(float), g["value"].to_numpy(float)
        ok = np.isfinite(y)
        x, y = x[ok], y[ok]
        if not y.size:
            continue
        late = y[x >= warmup * x.max()]
        above = np.nonzero(y >= DETERMINISTIC)[0]
        since = math.nan if (above.size and above[-1] == y.size - 1) else (x[0] if not above.size else x[above[-1] + 1])
        out.append({"run_id": rid, "seed": g["seed"].iloc[0], "late": late, "since": since, "end": float(x.max())})
    return sorted(out, key=lambda r: (r["seed"] is pd.NA, r["seed"]))


def summary_line(rows: pd.DataFrame, metric: str) -> str | None:
    seeds = per_seed(rows, metric)
    if not seeds:
        return None
    n = len(seeds)
    if metric == "entropy_softmax":
        settled = [s for s in seeds if np.isfinite(s["since"])]
        med = " / ".join(_num(float(np.median(s["late"]))) for s in seeds)
        if settled:
            since = _steps(float(np.median([s["since"] for s in settled])))
            return (f"< {DETERMINISTIC:g} nats from {since} steps on (median) in {len(settled)} of {n} seeds; "
                    f"median {med}")
        return f"above {DETERMINISTIC:g} nats in all {n} seeds; median {med}"
    if metric == "clip_frac":
        means = [float(np.mean(s["late"])) if s["late"].size else math.nan for s in seeds]
        zeros = sum(int((s["late"] == 0).sum()) for s in seeds)
        logs = sum(int(s["late"].size) for s in seeds)
        return (f"bound binds in {np.nanmean(means):.1%} of samples (" + " / ".join(f"{m:.1%}" for m in means)
                + f"); exactly 0 in {zeros} of {logs} logs")
    return "median " + " / ".join(_num(float(np.median(s["late"]))) for s in seeds)


def diagnostics_table(frame: pd.DataFrame, label=lambda a: str(a).upper()) -> pd.DataFrame:
    """One row per task and algorithm, a one-line summary per diagnostic metric logged (per seed, after
    the warm-up; "—" where the algorithm does not log it)."""
    rows = frame[frame["metric"].isin(DIAGNOSTICS)]
    rows = learning_rows(rows) if not rows.empty else rows
    columns = ["task", "algorithm", "seeds", *(LABELS[m] for m in DIAGNOSTICS)]
    out = []
    for (env, map_name, n, team, algo), group in rows.groupby([*TASK_TEAM, "team_algo"], observed=True, dropna=False):
        row = {"task": task_team_label(env, map_name, n, team), "algorithm": label(algo),
               "seeds": group["run_id"].nunique()}
        for metric in DIAGNOSTICS:
            row[LABELS[metric]] = summary_line(group, metric) or "—"
        out.append(row)
    return pd.DataFrame(out, columns=columns)


def moved(frame: pd.DataFrame, param: str) -> pd.DataFrame:
    """Per value of an ablation's parameter: did the clip bound bind and did the policy move? Mean clip
    fraction and median softmax entropy after warm-up, seeds with a near-deterministic policy."""
    out = []
    for value, group in frame.groupby(param, observed=True, dropna=False):
        clip = [float(np.mean(s["late"])) for s in per_seed(group, "clip_frac") if s["late"].size]
        ent = per_seed(group, "entropy_softmax")
        kl = [float(np.median(s["late"])) for s in per_seed(group, "kl") if s["late"].size]
        det = sum(1 for s in ent if np.isfinite(s["since"]))
        out.append({param: value, "clip fraction after warm-up": " / ".join(f"{c:.1%}" for c in clip) or "—",
                    "median KL per update": " / ".join(_num(k) for k in kl) or "—",
                    "median softmax entropy": " / ".join(_num(float(np.median(s["late"]))) for s in ent) or "—",
                    "near-deterministic seeds": f"{det} of {len(ent)}" if ent else "—"})
    return pd.DataFrame(out)
