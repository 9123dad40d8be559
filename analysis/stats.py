"""Statistics over seeds and tasks, all functions of the tidy frame (analysis.loaders).

- Per cell (one task x algorithm): the mean over seeds of each run's final value, with a Student-t
  95% interval. With the 3-5 seeds MARL papers use, a percentile bootstrap of one cell is too narrow
  (it can never be wider than the observed range); t is exact for normal noise and honest for few seeds.
- Across tasks: rliable's aggregate metrics (IQM, mean, median, optimality gap) with stratified
  bootstrap intervals (runs resampled within each task), and performance profiles, as in Agarwal et al.
  2021. rliable 1.2's bootstrap classes (rliable.library) cannot be imported next to pandas 3 (arch 7
  breaks on pandas 3; arch 8 rejects the `random_state` argument rliable passes), so the resampling is
  done here with a seeded numpy Generator; the statistics themselves are rliable.metrics.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

TASK = ["env", "map", "N"]
CI_LEVEL = 0.95
# "Final" = the mean of each run's last LAST_K test evaluations (docs/analysis.md argues the choice).
LAST_K = 3


def final_values(frame: pd.DataFrame, metric: str, last: int = LAST_K, by: Sequence[str] = ()) -> pd.DataFrame:
    """One row per run (and team): the mean of the run's last ``last`` logged values of ``metric``,
    the step it reached, and the ``by`` columns."""
    rows = frame[frame["metric"] == metric]
    if rows.empty:
        return pd.DataFrame(columns=[*by, "run_id", "team", "final", "final_step"])
    rows = rows.sort_values(["run_id", "team", "step"], kind="stable")
    keys = ["run_id", "team"]
    tail = rows.groupby(keys, observed=True, sort=False).tail(last)
    out = tail.groupby(keys, observed=True, sort=False).agg(final=("value", "mean"), final_step=("step", "max"))
    info_cols = [c for c in dict.fromkeys([*by, "team_algo", "algo", "seed", "status", *TASK, "budget", "setting"])
                 if c not in keys and c in rows.columns]
    info = rows.drop_duplicates(keys).set_index(keys)[info_cols]
    return out.join(info).reset_index()


def t_interval(values: Iterable[float], level: float = CI_LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean; low = high = NaN with one value."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def summarize(finals: pd.DataFrame, by: Sequence[str], bounds: tuple[float, float] | None = None) -> pd.DataFrame:
    """Mean over seeds and t interval per group of ``by``; ``bounds`` clips the interval (win rates)."""
    rows = []
    for key, group in finals.groupby(list(by), observed=True, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high = t_interval(group["final"])
        if bounds is not None and np.isfinite(low):
            low, high = max(low, bounds[0]), min(high, bounds[1])
        ordered = group.sort_values("seed", kind="stable") if "seed" in group else group
        rows.append({**dict(zip(by, key)), "mean": mean, "ci_low": low, "ci_high": high,
                     "std": float(group["final"].std(ddof=1)) if len(group) > 1 else math.nan,
                     "n_seeds": int(len(group)), "steps": float(group["final_step"].min()),
                     "seeds": tuple(float(v) for v in ordered["final"])})
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "std", "n_seeds", "steps", "seeds"])


# ----------------------------------------------------------------------------- rliable aggregates

def stratified_bootstrap(scores: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], reps: int = 2000,
                         level: float = CI_LEVEL, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate and percentile interval [2, k] of ``statistic`` on a (runs x tasks) matrix,
    resampling runs independently within each task (rliable's StratifiedBootstrap)."""
    rng = np.random.default_rng(seed)
    n_runs, n_tasks = scores.shape
    point = np.atleast_1d(statistic(scores))
    samples = np.empty((reps, point.size))
    cols = np.arange(n_tasks)[None, :]
    for r in range(reps):
        rows = rng.integers(0, n_runs, size=(n_runs, n_tasks))
        samples[r] = statistic(scores[rows, cols])
    alpha = (1 - level) / 2
    return point, np.quantile(samples, [alpha, 1 - alpha], axis=0)


def score_matrices(finals: pd.DataFrame, algo_col: str = "team_algo", task_cols: Sequence[str] = TASK
                   ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Per algorithm a (runs x tasks) matrix over the tasks every algorithm ran; an algorithm's
    seeds are cut to its smallest per-task count (rliable needs a rectangle)."""
    finals = finals.copy()
    finals["task"] = finals[list(task_cols)].astype(str).agg(" ".join, axis=1)
    per_algo = {a: set(g["task"]) for a, g in finals.groupby(algo_col, observed=True)}
    if not per_algo:
        return {}, []
    tasks = sorted(set.intersection(*per_algo.values()))
    out = {}
    for algo, group in finals.groupby(algo_col, observed=True):
        cols = [group[group["task"] == t]["final"].to_numpy() for t in tasks]
        n = min((len(c) for c in cols), default=0)
        if n:
            out[str(algo)] = np.stack([c[:n] for c in cols], axis=1)
    return out, tasks


AGGREGATES = ("IQM", "Mean", "Median", "Optimality gap")


def aggregate_table(matrices: dict[str, np.ndarray], reps: int = 2000) -> pd.DataFrame:
    """IQM, mean, median and optimality gap (rliable.metrics) per algorithm, with bootstrap CIs."""
    from rliable import metrics

    def stat(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x), metrics.aggregate_median(x),
                         metrics.aggregate_optimality_gap(x)])

    rows = []
    for algo, scores in matrices.items():
        point, ci = stratified_bootstrap(scores, stat, reps=reps)
        for k, name in enumerate(AGGREGATES):
            rows.append({"algo": algo, "statistic": name, "value": point[k], "ci_low": ci[0, k],
                         "ci_high": ci[1, k], "runs": scores.shape[0], "tasks": scores.shape[1]})
    return pd.DataFrame(rows)


def performance_profiles(matrices: dict[str, np.ndarray], taus: np.ndarray, reps: int = 2000
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fraction of runs scoring above each tau, with stratified-bootstrap bands (rliable's score
    distribution, ``create_performance_profile``)."""
    profiles, cis = {}, {}
    for algo, scores in matrices.items():
        stat = lambda x: np.array([(x > tau).mean() for tau in taus])  # noqa: E731
        profiles[algo], cis[algo] = stratified_bootstrap(scores, stat, reps=reps)
    return profiles, cis


# ----------------------------------------------------------------------------- curves

def curve_grid(rows: pd.DataFrame, points: int = 100, group: Sequence[str] = ()) -> pd.DataFrame:
    """Put every run's curve on x values shared by all runs, so seeds can be averaged per x.

    Evaluations happen every `test_interval` env steps, but at a t_env that differs a little between
    runs (episodes end at different times). When a group has at most 2 x ``points`` such evaluations,
    each is assigned to the nearest multiple k of the typical spacing and drawn at the mean step of
    all runs' k-th evaluations. Denser series are interpolated onto ``points`` even steps within each
    run's range.
    """
    out = []
    for _, sub in rows.groupby(list(group), observed=True, dropna=False) if group else [((), rows)]:
        sub = sub[np.isfinite(sub["value"].to_numpy(dtype=float))]
        if sub.empty:
            continue
        gaps = np.concatenate([np.diff(np.unique(r)) for r in sub.groupby(["run_id", "team"], observed=True)["step"]
                               .apply(np.asarray)])
        spacing = float(np.median(gaps)) if gaps.size else 1.0
        if sub["step"].max() / max(spacing, 1.0) <= 2 * points:
            k = np.round(sub["step"].to_numpy() / max(spacing, 1.0))
            x = pd.Series(sub["step"].to_numpy(dtype=float)).groupby(k).transform("mean").to_numpy()
            snapped = sub.assign(step=x)  # the k-th evaluation of every run at the mean step of k-th evaluations
            keys = [c for c in snapped.columns if c != "value"]
            out.append(snapped.groupby(keys, observed=True, dropna=False, sort=False)["value"].mean().reset_index())
            continue
        grid = np.linspace(0, sub["step"].max(), points)
        for _, run in sub.groupby(["run_id", "team"], observed=True):
            run = run.sort_values("step")
            x, y = run["step"].to_numpy(float), run["value"].to_numpy(float)
            inside = (grid >= x[0]) & (grid <= x[-1])
            frame = pd.DataFrame({"step": grid[inside], "value": np.interp(grid[inside], x, y)})
            for col in run.columns.drop(["step", "value"]):
                frame[col] = run[col].iloc[0]
            out.append(frame)
    if not out:
        return pd.DataFrame(columns=[*rows.columns])
    return pd.concat(out, ignore_index=True)


def convergence_step(steps: np.ndarray, mean_curve: np.ndarray, tolerance: float = 0.05,
                     window: int = 5) -> float:
    """First step after which the (smoothed) mean curve stays within ``tolerance`` x its total rise
    of its final level. NaN when the curve is flat or too short."""
    y = pd.Series(mean_curve).rolling(window, min_periods=1, center=True).mean().to_numpy()
    ok = np.isfinite(y)
    steps, y = np.asarray(steps)[ok], y[ok]
    if y.size < 2 * window:
        return math.nan
    final = float(np.mean(y[-window:]))
    rise = final - float(np.mean(y[:window]))
    if abs(rise) < 1e-12:
        return math.nan
    outside = np.abs(y - final) > tolerance * abs(rise)
    last_out = np.nonzero(outside)[0]
    k = 0 if last_out.size == 0 else int(last_out[-1]) + 1
    return float(steps[min(k, len(steps) - 1)])


# ----------------------------------------------------------------------------- two algorithms

def welch(a: Iterable[float], b: Iterable[float], level: float = CI_LEVEL) -> dict:
    """Difference of means a - b over seeds: Welch's t interval and two-sided test (unequal variances;
    Welch-Satterthwaite degrees of freedom) and Hedges' g (the difference in pooled standard deviations,
    small-sample corrected). With no spread in either group the interval is the difference itself, p is
    0 (different) or 1 (equal) and g is not defined (NaN)."""
    from scipy import stats

    x = np.asarray([v for v in a if np.isfinite(v)], dtype=float)
    y = np.asarray([v for v in b if np.isfinite(v)], dtype=float)
    out = {"diff": math.nan, "low": math.nan, "high": math.nan, "p": math.nan, "g": math.nan,
           "n_a": int(x.size), "n_b": int(y.size), "test": "Welch t"}
    if x.size == 0 or y.size == 0:
        return out
    diff = float(x.mean() - y.mean())
    out["diff"] = diff
    if x.size < 2 or y.size < 2:
        return out
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(va + vb)
    if se < 1e-12:
        out.update(low=diff, high=diff, p=0.0 if abs(diff) > 1e-12 else 1.0)
        return out
    df = (va + vb) ** 2 / ((va ** 2) / (x.size - 1) + (vb ** 2) / (y.size - 1)) if va + vb > 0 else x.size + y.size - 2
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    pooled = math.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2))
    g = diff / pooled * (1 - 3 / (4 * (x.size + y.size) - 9)) if pooled > 1e-12 else math.nan
    out.update(low=diff - half, high=diff + half, p=float(2 * stats.t.sf(abs(diff) / se, df)), g=g, df=df)
    return out


def welch_text(w: dict, digits: int = 2) -> str:
    """"difference -0.10 [-0.58, 0.38] (Welch t, p = 0.55), Hedges' g = -0.41"."""
    if not np.isfinite(w["diff"]):
        return "no difference to compute"
    text = f"difference {w['diff']:+.{digits}f}"
    if np.isfinite(w["low"]):
        text += f" [{w['low']:+.{digits}f}, {w['high']:+.{digits}f}] ({w['test']}, p = {w['p']:.2g})"
    else:
        text += " (too few seeds for a test)"
    if np.isfinite(w["g"]):
        text += f", Hedges' g = {w['g']:+.1f}"
    return text


# ----------------------------------------------------------------------------- one seed's curve

def settling_step(steps: np.ndarray, values: np.ndarray, tolerance: float = 0.05, last: int = LAST_K,
                  scale: float | None = None, window: int = 1) -> float:
    """When one seed's curve settles: the first evaluation after which it stays within ``tolerance`` x
    ``scale`` of its own plateau (the mean of its last ``last`` evaluations). The first evaluation (the
    untrained policy at t = 0) plays no part, neither as a settling point nor in the scale; ``scale``
    defaults to the seed's range after it (max - min from the second evaluation on). NaN when the seed
    only settles inside its final window (it has not settled) or the curve is too short."""
    order = np.argsort(steps)
    x, y = np.asarray(steps, dtype=float)[order], np.asarray(values, dtype=float)[order]
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if y.size < last + 2:
        return math.nan
    x, y = x[1:], y[1:]
    if window > 1:
        y = pd.Series(y).rolling(window, min_periods=1, center=True).mean().to_numpy()
    plateau = float(y[-last:].mean())
    if scale is None:
        scale = float(y.max() - y.min())
    band = tolerance * scale
    outside = np.nonzero(np.abs(y - plateau) > band)[0]
    k = 0 if outside.size == 0 else int(outside[-1]) + 1
    return float(x[k]) if k < y.size - last + 1 else math.nan


def is_flat(values: np.ndarray, last: int = LAST_K, tolerance: float = 0.05) -> bool:
    """A seed has plateaued: the mean of its last ``last`` evaluations is within ``tolerance`` of the
    mean of the ``last`` before them."""
    y = np.asarray(values, dtype=float)
    y = y[np.isfinite(y)]
    if y.size < 2 * last:
        return False
    return abs(float(y[-last:].mean() - y[-2 * last:-last].mean())) <= tolerance
