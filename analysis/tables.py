"""The paper's tables as functions of the tidy frame: Table 1 beside the paper's numbers, ablation
summaries (Figs 9, 11), capture rates (Fig 8) and competitive returns (Fig 7)."""
from __future__ import annotations

import math
import numpy as np
import pandas as pd

from validation import ConfigError

from analysis.loaders import RUN_WIDE
from analysis.paper import WIN_RATE, Paper
from analysis.stats import final_values, summarize

LEARNING_TEAMS_EXCLUDE = {"random", ""}


def task_label(env, map_name, n) -> str:
    parts = [str(env)] if isinstance(env, str) and env else []
    if isinstance(map_name, str) and map_name:
        parts.append(map_name)
    if n is not None and n is not pd.NA and not (isinstance(n, float) and math.isnan(n)):
        parts.append(f"N={int(n)}")
    return " ".join(parts) or "?"


def rate_bounds(metric: str) -> tuple[float, float] | None:
    """Win and capture rates live in [0, 1]; their intervals are clipped to it."""
    return (0.0, 1.0) if ("battle_won" in metric or "capture_rate" in metric) else None


def ci_text(mean: float, low: float, high: float, n: int, digits: int = 2) -> str:
    if not np.isfinite(mean):
        return "—"
    core = f"{mean:.{digits}f}"
    if np.isfinite(low):
        return f"{core} [{low:.{digits}f}, {high:.{digits}f}] n={n}"
    return f"{core} n={n}"


# ----------------------------------------------------------------------------- Table 1

def map_final_values(frame: pd.DataFrame, metric: str = WIN_RATE, last: int = 1) -> pd.DataFrame:
    """Per run on a SMAC-like map (team rows): the final value of ``metric``, with map, env and algorithm."""
    rows = frame[(frame["metric"] == metric) & frame["map"].notna() & (frame["team"] != RUN_WIDE)]
    return final_values(rows, metric, last=last, by=["map", "env", "team_algo"])


def table1_cells(frame: pd.DataFrame, paper: Paper, metric: str = WIN_RATE, last: int = 1) -> pd.DataFrame:
    """One row per (map, env backend, algorithm) with runs, plus the paper's cells nobody ran:
    map, env, algo, mean, ci_low, ci_high, std, n_seeds, steps, paper."""
    finals = map_final_values(frame, metric, last)
    if finals.empty:
        ours = pd.DataFrame(columns=["map", "env", "algo", "mean", "ci_low", "ci_high", "std", "n_seeds", "steps"])
    else:
        ours = summarize(finals, ["map", "env", "team_algo"], bounds=(0.0, 1.0)).rename(columns={"team_algo": "algo"})
        ours[["map", "env", "algo"]] = ours[["map", "env", "algo"]].astype(str)
    ref = paper.table1.rename(columns={"win_rate": "paper"})[["map", "algo", "paper"]]
    cells = ours.merge(ref, on=["map", "algo"], how="outer")
    order = {m: i for i, m in enumerate(paper.map_order)}
    algo_order = {a: i for i, a in enumerate(paper.algo_order)}
    cells["_m"] = cells["map"].map(lambda m: order.get(m, len(order)))
    cells["_a"] = cells["algo"].map(lambda a: algo_order.get(a, len(algo_order)))
    cells = cells.sort_values(["_m", "map", "env", "_a", "algo"], na_position="first").drop(columns=["_m", "_a"])
    return cells.reset_index(drop=True)


def table1_display(cells: pd.DataFrame, paper: Paper) -> pd.DataFrame:
    """Wide table for people: a row per map (and backend), "ours" beside "paper" per algorithm."""
    algos = list(paper.algo_order) + sorted(set(cells["algo"].dropna()) - set(paper.algo_order))
    maps = list(paper.map_order) + sorted(set(cells["map"].dropna()) - set(paper.map_order))
    out = []
    for map_name in maps:
        here = cells[cells["map"] == map_name]
        envs = sorted(set(here["env"].dropna()))
        for env in envs or [None]:
            row = {"map": map_name, "backend": env or "—"}
            for algo in algos:
                cell = here[(here["algo"] == algo) & ((here["env"] == env) if env else here["env"].isna())]
                label = paper.label(algo)
                if len(cell) and np.isfinite(cell["mean"].iloc[0]):
                    c = cell.iloc[0]
                    row[f"{label} ours"] = ci_text(c["mean"], c["ci_low"], c["ci_high"], int(c["n_seeds"]))
                else:
                    row[f"{label} ours"] = "—"
                if algo in paper.algo_order:
                    ref = paper.win_rate(map_name, algo)
                    row[f"{label} paper"] = "—" if ref is None else f"{ref:.2f}"
            notes = ["not run here"] if env is None else []
            if paper.map_note(map_name):
                notes.append(paper.map_note(map_name))
            steps = here["steps"].dropna()
            if len(steps) and env:
                notes.append(f"runs reach {fmt_steps(steps.min())} env steps")
            row["note"] = "; ".join(notes)
            out.append(row)
    return pd.DataFrame(out)


def fmt_steps(steps: float) -> str:
    if not np.isfinite(steps):
        return "?"
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(steps) >= div:
            return f"{steps / div:.3g}{unit}"
    return f"{int(steps)}"


# ----------------------------------------------------------------------------- other tables

def primary_metric(rows: pd.DataFrame) -> str:
    """The metric a task is judged by: the test win rate where logged, else the test return."""
    names = set(rows["metric"].astype(str).unique())
    for name in (WIN_RATE, "test_return_mean", "return_mean"):
        if name in names:
            return name
    raise ConfigError(f"no test metric in these runs; metrics present: {', '.join(sorted(names)[:12])}")


def learning_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of teams driven by a learner (not the random teams, not run-wide metrics)."""
    return frame[~frame["team_algo"].astype(str).isin(LEARNING_TEAMS_EXCLUDE) & (frame["team"] != RUN_WIDE)]


TASK_TEAM = ["env", "map", "N", "team"]


def task_team_label(env, map_name, n, team) -> str:
    label = task_label(env, map_name, n)
    return label if team in ("team", "", None) else f"{label} ({team})"


def ablation_rows(frame: pd.DataFrame, param: str, algo: str = "asae") -> pd.DataFrame:
    """Rows of ``algo``'s runs (its own config, not a team override) on the tasks where ``param``
    (e.g. "m", "clip") takes several values: the ablations of Figs 9 and 11."""
    rows = learning_rows(frame)
    rows = rows[(rows["algo"] == algo) & (rows["team_algo"] == algo) & rows[param].notna()]
    varied = rows.groupby(TASK_TEAM, observed=True, dropna=False)[param].transform("nunique") > 1
    rows = rows[varied]
    if rows.empty:
        raise ConfigError(f"no {algo} runs that vary {param} on one task; run the ablation preset first")
    return rows


def param_table(frame: pd.DataFrame, param: str, algo: str = "asae", metric: str | None = None, last: int = 1
                ) -> pd.DataFrame:
    """Final value per task and value of ``param`` for ``algo``'s runs (see ablation_rows)."""
    out = []
    for (env, map_name, n, team), task in ablation_rows(frame, param, algo).groupby(
            TASK_TEAM, observed=True, dropna=False):
        name = metric or primary_metric(task)
        finals = final_values(task, name, last=last, by=[param])
        if finals.empty:
            continue
        summary = summarize(finals, [param], bounds=rate_bounds(name))
        summary.insert(0, "metric", name)
        summary.insert(0, "task", task_team_label(env, map_name, n, team))
        out.append(summary)
    if not out:
        return pd.DataFrame(columns=["task", "metric", param, "mean", "ci_low", "ci_high", "std", "n_seeds", "steps"])
    return pd.concat(out, ignore_index=True)


def team_setting(frame: pd.DataFrame, paper: Paper | None = None) -> pd.Series:
    """Per run id, who plays whom: e.g. "ASAE predator vs COMA prey" (multi-team runs only)."""
    pairs = frame[frame["team"] != RUN_WIDE][["run_id", "team", "team_algo"]].drop_duplicates()
    label = paper.label if paper is not None else (lambda a: str(a).upper())
    out = {}
    for run_id, group in pairs.groupby("run_id", observed=True):
        if len(group) < 2:
            continue
        group = group.sort_values("team", key=lambda s: s.astype(str))
        out[run_id] = " vs ".join(f"{label(str(a))} {t}" for t, a in zip(group["team"], group["team_algo"]))
    return pd.Series(out, dtype=object)


def capture_metric(frame: pd.DataFrame) -> str:
    names = sorted(set(frame["metric"].astype(str).unique()))
    preferred = ["test_capture_rate", "test_capture_rate_mean", "capture_rate_mean", "capture_rate"]
    for name in preferred + [n for n in names if "capture" in n and n.startswith("test_")] + \
            [n for n in names if "capture" in n]:
        if name in names:
            return name
    raise ConfigError("no run logs a capture rate (e.g. predator/test_capture_rate); "
                      "run the predator-prey presets first")


def capture_table(frame: pd.DataFrame, paper: Paper | None = None, last: int = 1) -> pd.DataFrame:
    """Fig 8: final capture rate of the predators per setting (who plays predator / prey) and N."""
    name = capture_metric(frame)
    rows = frame[frame["metric"] == name]
    teams = set(rows["team"].astype(str))
    if "predator" in teams:
        rows = rows[rows["team"] == "predator"]
    setting = team_setting(frame[frame["run_id"].isin(rows["run_id"].unique())], paper)
    finals = final_values(rows, name, last=last, by=["N", "team_algo"])
    finals["setting"] = finals["run_id"].map(setting).fillna(
        finals["team_algo"].astype(str).map(lambda a: (paper.label(a) if paper else a) + " predator"))
    summary = summarize(finals, ["N", "setting"], bounds=(0.0, 1.0))
    summary.insert(0, "metric", name)
    return summary


def competitive_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs where two learning algorithms play each other (ASAE vs COMA, Fig 7)."""
    learn = learning_rows(frame)
    per_run = learn.groupby("run_id", observed=True)["team"].nunique()
    ids = per_run[per_run >= 2].index
    return frame[frame["run_id"].isin(ids) & (frame["team"] != RUN_WIDE)]


def competitive_table(frame: pd.DataFrame, paper: Paper | None = None, metric: str = "test_return_mean",
                      last: int = 1) -> pd.DataFrame:
    """Fig 7 in numbers: final return of each team per setting and N."""
    rows = competitive_runs(frame)
    if rows.empty:
        raise ConfigError("no competitive runs (config `teams` with two learning algorithms, e.g. "
                          '{"predator": "asae", "prey": "coma"}); run the competitive preset first')
    setting = team_setting(rows, paper)
    finals = final_values(rows, metric, last=last, by=["N", "team_algo"])
    finals["setting"] = finals["run_id"].map(setting)
    finals["team_label"] = [f"{t} ({paper.label(str(a)) if paper else a})"
                            for t, a in zip(finals["team"], finals["team_algo"])]
    summary = summarize(finals, ["N", "setting", "team_label"], bounds=rate_bounds(metric))
    summary.insert(0, "metric", metric)
    return summary
