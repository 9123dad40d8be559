"""The paper's tables as functions of the tidy frame: Table 1 beside the paper's numbers, ablation
summaries (Figs 9, 11), capture rates (Fig 8) and competitive returns (Fig 7)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from validation import ConfigError

from analysis.loaders import CLIP_KEYS, M_KEYS, RUN_WIDE, with_settings
from analysis.paper import WIN_RATE, Paper
from analysis.stats import LAST_K, final_values, summarize

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


def ci_text(mean: float, low: float, high: float, n: int, digits: int = 2, seeds: Sequence[float] = ()) -> str:
    """"0.59 [0.20, 0.99] n=3", with each seed's value after it when ``seeds`` are given
    ("... (0.27 / 0.51 / 0.99)")."""
    if not np.isfinite(mean):
        return "—"
    core = f"{mean:.{digits}f}"
    text = f"{core} [{low:.{digits}f}, {high:.{digits}f}] n={n}" if np.isfinite(low) else f"{core} n={n}"
    if len(seeds) > 1:
        text += " (" + " / ".join(f"{v:.{digits}f}" for v in seeds) + ")"
    return text


# ----------------------------------------------------------------------------- Table 1

CELL_KEY = ["map", "env", "budget", "setting"]


def map_final_values(frame: pd.DataFrame, metric: str = WIN_RATE, last: int = LAST_K) -> pd.DataFrame:
    """Per run on a SMAC-like map (team rows): the final value of ``metric``, with map, env, algorithm,
    budget (config t_max) and setting (what else differs from the other runs of its map and algorithm)."""
    rows = frame[(frame["metric"] == metric) & frame["map"].notna() & (frame["team"] != RUN_WIDE)]
    if "budget" not in rows.columns:
        rows = with_settings(rows)
    return final_values(rows, metric, last=last, by=[*CELL_KEY, "team_algo"])


def table1_cells(frame: pd.DataFrame, paper: Paper, metric: str = WIN_RATE, last: int = LAST_K) -> pd.DataFrame:
    """One row per (map, env backend, budget, setting, algorithm) with runs, plus the paper's cells nobody
    ran: map, env, budget, setting, algo, mean, ci_low, ci_high, std, n_seeds, steps, seeds, paper. Runs
    that differ in budget or in any setting never share a row."""
    finals = map_final_values(frame, metric, last)
    columns = [*CELL_KEY, "algo", "mean", "ci_low", "ci_high", "std", "n_seeds", "steps", "seeds"]
    if finals.empty:
        ours = pd.DataFrame(columns=columns)
    else:
        ours = summarize(finals, [*CELL_KEY, "team_algo"], bounds=(0.0, 1.0)).rename(columns={"team_algo": "algo"})
        ours[["map", "env", "algo", "setting"]] = ours[["map", "env", "algo", "setting"]].astype(str)
    ref = paper.table1.rename(columns={"win_rate": "paper"})[["map", "algo", "paper"]]
    cells = ours.merge(ref, on=["map", "algo"], how="outer")
    order = {m: i for i, m in enumerate(paper.map_order)}
    algo_order = {a: i for i, a in enumerate(paper.algo_order)}
    cells["_m"] = cells["map"].map(lambda m: order.get(m, len(order)))
    cells["_a"] = cells["algo"].map(lambda a: algo_order.get(a, len(algo_order)))
    cells["_b"] = -pd.to_numeric(cells["budget"], errors="coerce").fillna(-1.0)
    cells = cells.sort_values(["_m", "map", "env", "_b", "setting", "_a", "algo"], na_position="first")
    return cells.drop(columns=["_m", "_a", "_b"]).reset_index(drop=True)


def table1_display(cells: pd.DataFrame, paper: Paper, baselines: pd.DataFrame | None = None,
                   code: Mapping[tuple, str] | None = None) -> pd.DataFrame:
    """Wide table for people: a row per map, backend, budget and setting; "ours" (mean [95% t interval]
    n=seeds (each seed)) beside "paper" per algorithm; the scripted policies' win rates on that map and
    backend when ``baselines`` (analysis.baselines.load_baselines) has them; ``code`` maps
    (map, env, budget, setting) to the code versions the row's runs came from."""
    algos = list(paper.algo_order) + sorted(set(cells["algo"].dropna()) - set(paper.algo_order))
    maps = list(paper.map_order) + sorted(set(cells["map"].dropna()) - set(paper.map_order))
    maps_only = None if baselines is None or baselines.empty else \
        baselines[baselines["map"].notna() & pd.to_numeric(baselines["win_rate"], errors="coerce").notna()]
    policies = [] if maps_only is None else list(dict.fromkeys(maps_only["label"]))  # MPE records have no map
    out = []
    for map_name in maps:
        here = cells[cells["map"] == map_name]
        ran = here[here["env"].notna()]
        keys = ran[["env", "budget", "setting"]].drop_duplicates().itertuples(index=False, name=None)
        for env, budget, setting in list(keys) or [(None, math.nan, "")]:
            row = {"map": map_name, "backend": env or "—",
                   "budget": fmt_steps(budget) if np.isfinite(_num(budget)) else "—"}
            if setting:
                row["budget"] += f" ({setting})"
            for algo in algos:
                cell = ran[(ran["algo"] == algo) & (ran["env"] == env) & _same(ran["budget"], budget)
                           & (ran["setting"] == setting)] if env else ran.iloc[0:0]
                label = paper.label(algo)
                if len(cell) and np.isfinite(cell["mean"].iloc[0]):
                    c = cell.iloc[0]
                    row[f"{label} ours"] = ci_text(c["mean"], c["ci_low"], c["ci_high"], int(c["n_seeds"]),
                                                   seeds=c["seeds"] if isinstance(c["seeds"], tuple) else ())
                else:
                    row[f"{label} ours"] = "—"
                if algo in paper.algo_order:
                    ref = paper.win_rate(map_name, algo)
                    row[f"{label} paper"] = "—" if ref is None else f"{ref:.2f}"
            for policy in policies:
                hit = baselines[(baselines["map"] == map_name) & (baselines["label"] == policy)
                                & ((baselines["env"] == env) if env else True)]
                row[f"{policy} (scripted)"] = "—" if hit.empty or not np.isfinite(hit["win_rate"].iloc[0]) else \
                    f"{hit['win_rate'].iloc[0]:.2f} [{hit['win_lo'].iloc[0]:.2f}, {hit['win_hi'].iloc[0]:.2f}]"
            notes = ["not run here"] if env is None else []
            if paper.map_note(map_name):
                notes.append(paper.map_note(map_name))
            steps = ran[(ran["env"] == env) & _same(ran["budget"], budget) & (ran["setting"] == setting)]["steps"] \
                if env else pd.Series(dtype=float)
            steps = steps.dropna()
            if len(steps) and env:
                notes.append(f"runs reach {fmt_steps(steps.min())} env steps")
            if code is not None and env:
                notes.append(f"code: {code.get(cell_key(map_name, env, budget, setting), 'unknown')}")
            row["note"] = "; ".join(notes)
            out.append(row)
    return pd.DataFrame(out)


def cell_key(map_name, env, budget, setting) -> tuple:
    """A Table 1 row's key, with a missing budget as None (NaN never equals itself)."""
    b = _num(budget)
    return (str(map_name), str(env), b if np.isfinite(b) else None, str(setting or ""))


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _same(series: pd.Series, value) -> pd.Series:
    """Equal budgets, NaN matching NaN (a run without t_max)."""
    numbers = pd.to_numeric(series, errors="coerce")
    value = _num(value)
    return numbers.isna() if not np.isfinite(value) else numbers == value


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
PARAM_KEYS = {"m": M_KEYS, "clip": CLIP_KEYS}  # the config entries an ablation's parameter is read from


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


def param_table(frame: pd.DataFrame, param: str, algo: str = "asae", metric: str | None = None, last: int = LAST_K
                ) -> pd.DataFrame:
    """Final value per task and value of ``param`` for ``algo``'s runs (see ablation_rows)."""
    out = []
    rows = ablation_rows(frame, param, algo)
    rows = with_settings(rows, exclude=PARAM_KEYS.get(param, (param,)))
    for (env, map_name, n, team), task in rows.groupby(TASK_TEAM, observed=True, dropna=False):
        name = metric or primary_metric(task)
        finals = final_values(task, name, last=last, by=[param, "budget", "setting"])
        if finals.empty:
            continue
        summary = summarize(finals, [param, "budget", "setting"], bounds=rate_bounds(name))
        summary.insert(0, "metric", name)
        summary.insert(0, "task", task_team_label(env, map_name, n, team))
        out.append(summary)
    if not out:
        return pd.DataFrame(columns=["task", "metric", param, "budget", "setting", "mean", "ci_low", "ci_high", "std",
                                     "n_seeds", "steps", "seeds"])
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


def capture_table(frame: pd.DataFrame, paper: Paper | None = None, last: int = LAST_K) -> pd.DataFrame:
    """Fig 8: final capture rate of the predators per setting (who plays predator / prey) and N."""
    name = capture_metric(frame)
    rows = frame[frame["metric"] == name]
    teams = set(rows["team"].astype(str))
    if "predator" in teams:
        rows = rows[rows["team"] == "predator"]
    setting = team_setting(frame[frame["run_id"].isin(rows["run_id"].unique())], paper)
    rows = with_settings(rows)
    finals = final_values(rows, name, last=last, by=["N", "team_algo", "budget"])
    finals["setting"] = finals["run_id"].map(setting).fillna(
        finals["team_algo"].astype(str).map(lambda a: (paper.label(a) if paper else a) + " predator"))
    summary = summarize(finals, ["N", "setting", "budget"], bounds=(0.0, 1.0))
    summary.insert(0, "metric", name)
    return summary


def competitive_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of runs where two learning algorithms play each other (ASAE vs COMA, Fig 7)."""
    learn = learning_rows(frame)
    per_run = learn.groupby("run_id", observed=True)["team"].nunique()
    ids = per_run[per_run >= 2].index
    return frame[frame["run_id"].isin(ids) & (frame["team"] != RUN_WIDE)]


def competitive_table(frame: pd.DataFrame, paper: Paper | None = None, metric: str = "test_return_mean",
                      last: int = LAST_K) -> pd.DataFrame:
    """Fig 7 in numbers: final return of each team per setting and N."""
    rows = competitive_runs(frame)
    if rows.empty:
        raise ConfigError("no competitive runs (config `teams` with two learning algorithms, e.g. "
                          '{"predator": "asae", "prey": "coma"}); run the competitive preset first')
    setting = team_setting(rows, paper)
    rows = with_settings(rows)
    finals = final_values(rows, metric, last=last, by=["N", "team_algo", "budget"])
    finals["setting"] = finals["run_id"].map(setting)
    finals["team_label"] = [f"{t} ({paper.label(str(a)) if paper else a})"
                            for t, a in zip(finals["team"], finals["team_algo"])]
    summary = summarize(finals, ["N", "setting", "team_label", "budget"], bounds=rate_bounds(metric))
    summary.insert(0, "metric", metric)
    return summary
