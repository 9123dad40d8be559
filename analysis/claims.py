"""Verdicts on the paper's claims (results/paper/claims.toml) from the tidy frame.

Verdicts: "agrees", "disagrees", "inconclusive" (runs exist but are shorter than the paper's budget,
or the difference is within noise), "not run here" (no runs for the claim's task/algorithms, e.g. a
map that needs real StarCraft II). Each verdict comes with our number, the paper's and the reason.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.paper import Paper
from analysis.stats import convergence_step, curve_grid, final_values, summarize, t_interval
from analysis.tables import capture_metric, ci_text, competitive_runs, fmt_steps, learning_rows, rate_bounds

AGREES, DISAGREES, INCONCLUSIVE, NOT_RUN = "agrees", "disagrees", "inconclusive", "not run here"
BUDGET_SLACK = 0.95  # a run that reached 95% of the paper's budget counts as a full-length run


class Verdict(Exception):
    """Raised by an evaluator that can decide early (nothing to compare)."""

    def __init__(self, verdict: str, why: str, ours: str = "—"):
        super().__init__(why)
        self.verdict, self.why, self.ours = verdict, why, ours


def _rows(frame: pd.DataFrame, claim: dict, algo: str | None = None) -> pd.DataFrame:
    rows = learning_rows(frame)
    rows = rows[rows["metric"] == claim["metric"]]
    if "map" in claim:
        rows = rows[rows["map"] == claim["map"]]
    if "env" in claim:
        rows = rows[rows["env"] == claim["env"]]
    if "n" in claim:
        rows = rows[rows["N"] == claim["n"]]
    if "team" in claim:
        rows = rows[rows["team"] == claim["team"]]
    if algo is not None:
        rows = rows[rows["team_algo"] == algo]
    return rows


def _steps_per_iteration(frame: pd.DataFrame, run_ids) -> float:
    """Env steps of one paper iteration: every parallel env plays one full episode."""
    runs = frame[frame["run_id"].isin(run_ids)].drop_duplicates("run_id")
    if "n_envs" not in runs or "env.episode_limit" not in runs:
        return math.nan
    per = pd.to_numeric(runs["n_envs"].astype(object), errors="coerce") * \
        pd.to_numeric(runs["env.episode_limit"].astype(object), errors="coerce")
    per = per.dropna()
    return float(per.median()) if len(per) else math.nan


def _budget_steps(frame: pd.DataFrame, claim: dict, run_ids) -> float:
    budget = claim.get("budget")
    if budget is None:
        return math.nan
    if claim.get("budget_unit", "env_steps") == "iterations":
        return float(budget) * _steps_per_iteration(frame, run_ids)
    return float(budget)


def _summary(frame: pd.DataFrame, claim: dict, algo: str, paper: Paper) -> dict:
    rows = _rows(frame, claim, algo)
    if rows.empty:
        where = claim.get("map") or claim.get("env") or "this task"
        note = ""
        if "map" in claim and not paper.smax_can_run(claim["map"]):
            note = f" ({paper.map_note(claim['map'])})"
        raise Verdict(NOT_RUN, f"no {paper.label(algo)} runs on {where}{note}")
    finals = final_values(rows, claim["metric"])
    mean, low, high = t_interval(finals["final"])
    bounds = rate_bounds(claim["metric"])
    if bounds and np.isfinite(low):
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": mean, "low": low, "high": high, "n": len(finals), "steps": float(finals["final_step"].min()),
            "runs": list(finals["run_id"])}


def _short(frame: pd.DataFrame, claim: dict, summaries: list[dict]) -> str | None:
    """Why the runs are too short for the claim, or None."""
    runs = [r for s in summaries for r in s["runs"]]
    budget = _budget_steps(frame, claim, runs)
    reached = min(s["steps"] for s in summaries)
    if np.isfinite(budget) and reached < BUDGET_SLACK * budget:
        unit = claim.get("budget_unit", "env_steps")
        paper_budget = f"{claim['budget']:g} iterations = {fmt_steps(budget)} env steps" if unit == "iterations" \
            else f"{fmt_steps(budget)} env steps"
        return f"our runs stop at {fmt_steps(reached)} env steps; the paper trained for {paper_budget}"
    if claim.get("budget_unit") == "iterations" and not np.isfinite(budget):
        return "cannot convert the paper's iterations to env steps (config lacks n_envs or env.episode_limit)"
    return None


def _text(s: dict, digits: int = 2) -> str:
    return ci_text(s["mean"], s["low"], s["high"], s["n"], digits)


def _compare(a: dict, b: dict, tolerance: float) -> int:
    """+1 if a ends clearly above b, -1 if clearly below, 0 within noise (difference <= tolerance or
    overlapping 95% intervals)."""
    diff = a["mean"] - b["mean"]
    if abs(diff) <= tolerance:
        return 0
    if np.isfinite(a["low"]) and np.isfinite(b["low"]):
        apart = a["low"] > b["high"] if diff > 0 else a["high"] < b["low"]
        if not apart:
            return 0
    return 1 if diff > 0 else -1


def _value(frame, claim, paper):
    s = _summary(frame, claim, claim["algo"], paper)
    ours = _text(s)
    target, tol = float(claim["paper"]), float(claim.get("tolerance", 0.0))
    short = _short(frame, claim, [s])
    inside = np.isfinite(s["low"]) and s["low"] <= target <= s["high"]
    if abs(s["mean"] - target) <= tol or inside:
        return (INCONCLUSIVE, short, ours) if short else (AGREES, f"within {tol:g} of the paper" if not inside
                                                           else "the paper's value is inside our 95% interval", ours)
    if short:
        return INCONCLUSIVE, short, ours
    return DISAGREES, f"{abs(s['mean'] - target):.2f} away from the paper (tolerance {tol:g})", ours


def _pair(frame, claim, paper):
    a = _summary(frame, claim, claim["algo"], paper)
    b = _summary(frame, claim, claim["versus"], paper)
    ours = f"{paper.label(claim['algo'])} {_text(a)} vs {paper.label(claim['versus'])} {_text(b)}"
    return a, b, ours, _short(frame, claim, [a, b])


def _beats(frame, claim, paper):
    a, b, ours, short = _pair(frame, claim, paper)
    c = _compare(a, b, float(claim.get("tolerance", 0.0)))
    if short:
        return INCONCLUSIVE, short, ours
    if c > 0:
        return AGREES, "clearly above", ours
    if c < 0:
        return DISAGREES, "clearly below", ours
    return INCONCLUSIVE, "the difference is within noise (tolerance or overlapping 95% intervals)", ours


def _not_worse(frame, claim, paper):
    a, b, ours, short = _pair(frame, claim, paper)
    c = _compare(a, b, float(claim.get("tolerance", 0.0)))
    if short:
        return INCONCLUSIVE, short, ours
    return (DISAGREES, "clearly below", ours) if c < 0 else (AGREES, "not clearly below", ours)


def _best(frame, claim, paper):
    a = _summary(frame, claim, claim["algo"], paper)
    others = {}
    for name in str(claim["versus"]).split(","):
        try:
            others[name.strip()] = _summary(frame, claim, name.strip(), paper)
        except Verdict:
            continue
    if not others:
        raise Verdict(NOT_RUN, f"no baseline runs ({claim['versus']}) on this task",
                      f"{paper.label(claim['algo'])} {_text(a, 1)}")
    ours = "; ".join(f"{paper.label(k)} {_text(v, 1)}" for k, v in {claim["algo"]: a, **others}.items())
    short = _short(frame, claim, [a, *others.values()])
    if short:
        return INCONCLUSIVE, short, ours
    cmp = {k: _compare(a, v, float(claim.get("tolerance", 0.0))) for k, v in others.items()}
    missing = sorted(set(s.strip() for s in str(claim["versus"]).split(",")) - set(others))
    extra = f" (not run: {', '.join(missing)})" if missing else ""
    if any(c < 0 for c in cmp.values()):
        better = [paper.label(k) for k, c in cmp.items() if c < 0]
        return DISAGREES, f"{', '.join(better)} ends clearly higher{extra}", ours
    if all(c > 0 for c in cmp.values()):
        return AGREES, f"clearly above every baseline run{extra}", ours
    close = ", ".join(paper.label(k) for k, c in cmp.items() if c == 0)
    if all(a["mean"] >= v["mean"] for v in others.values()):
        return INCONCLUSIVE, f"highest mean, but within noise of {close}{extra}", ours
    return INCONCLUSIVE, f"another algorithm's mean is higher, within noise{extra}", ours


def _converges_by(frame, claim, paper):
    rows = _rows(frame, claim, claim["algo"])
    if rows.empty:
        raise Verdict(NOT_RUN, f"no {paper.label(claim['algo'])} runs on {claim.get('env')} N={claim.get('n')}")
    per_iter = _steps_per_iteration(frame, rows["run_id"].unique())
    grid = curve_grid(rows)
    mean = grid.groupby("step")["value"].mean()
    step = convergence_step(mean.index.to_numpy(), mean.to_numpy())
    iters = step / per_iter if np.isfinite(per_iter) else math.nan
    s = {"steps": float(rows.groupby("run_id", observed=True)["step"].max().min()),
         "runs": list(rows["run_id"].unique())}
    ours = (f"settles after {iters:.0f} iterations ({fmt_steps(step)} env steps)" if np.isfinite(iters)
            else "no convergence point found")
    short = _short(frame, claim, [s])
    if short:
        return INCONCLUSIVE, short, ours
    if not np.isfinite(iters):
        return INCONCLUSIVE, "the mean curve has no settling point", ours
    target, tol = float(claim["paper"]), float(claim.get("tolerance", 0.5))
    if abs(iters - target) <= tol * target:
        return AGREES, f"within {tol:.0%} of {target:g} iterations", ours
    return DISAGREES, f"{'later' if iters > target else 'earlier'} than {target:g} iterations +- {tol:.0%}", ours


def _gap_grows(frame, claim, paper):
    rows = competitive_runs(frame)
    metric = claim["metric"]
    if not rows.empty and metric not in set(rows["metric"].astype(str)):
        metric = capture_metric(rows)
    team, a, b = claim.get("team", "predator"), claim["algo"], claim["versus"]
    rows = rows[(rows["metric"] == metric) & (rows["team"] == team)]
    if rows.empty:
        raise Verdict(NOT_RUN, f"no competitive {paper.label(a)}-vs-{paper.label(b)} runs logging {team}/{metric}")
    finals = final_values(rows, metric, by=["N", "team_algo"])
    summary = summarize(finals, ["N", "team_algo"]).set_index(["N", "team_algo"])
    gaps = {}
    for n in sorted(finals["N"].dropna().unique()):
        if (n, a) in summary.index and (n, b) in summary.index:
            gaps[int(n)] = float(summary.loc[(n, a), "mean"] - summary.loc[(n, b), "mean"])
    ours = ", ".join(f"N={n}: {g:+.2f}" for n, g in gaps.items()) or "—"
    ours = f"{team} {metric}, {paper.label(a)} minus {paper.label(b)}: {ours}"
    if len(gaps) < 2:
        raise Verdict(NOT_RUN if not gaps else INCONCLUSIVE,
                      "needs both settings (each algorithm as the team) at two or more N", ours)
    s = {"steps": float(finals["final_step"].min()), "runs": list(finals["run_id"])}
    short = _short(frame, claim, [s])
    if short:
        return INCONCLUSIVE, short, ours
    values = list(gaps.values())
    if all(g > 0 for g in values) and values[-1] > values[0]:
        return AGREES, "positive at every N and larger at the largest N", ours
    return DISAGREES, ("not positive at every N" if not all(g > 0 for g in values)
                       else "does not grow from the smallest to the largest N"), ours


KINDS = {"value": _value, "beats": _beats, "not_worse": _not_worse, "best": _best,
         "converges_by": _converges_by, "gap_grows": _gap_grows}


def evaluate(frame: pd.DataFrame, paper: Paper) -> pd.DataFrame:
    """One row per claim: id, source, claim, paper, ours, verdict, why."""
    out = []
    for claim in paper.claims:
        paper_value = claim.get("paper")
        paper_text = f"{paper_value:g}" if isinstance(paper_value, (int, float)) else "as stated"
        if claim.get("kind") == "converges_by" and paper_value is not None:
            paper_text = f"{paper_value:g} iterations"
        evaluator = KINDS.get(claim.get("kind"))
        if evaluator is None:
            verdict, why, ours = INCONCLUSIVE, f"unknown claim kind {claim.get('kind')!r}; known: {', '.join(KINDS)}", "—"
        else:
            try:
                verdict, why, ours = evaluator(frame, claim, paper)
            except Verdict as v:
                verdict, why, ours = v.verdict, v.why, v.ours
        note = paper.map_note(claim["map"]) if "map" in claim else ""
        if note and note not in why:
            why = f"{why}. Note: {note}"
        out.append({"id": claim.get("id", "?"), "source": claim.get("source", ""), "claim": claim.get("text", ""),
                    "paper": paper_text, "ours": ours, "verdict": verdict, "why": why})
    return pd.DataFrame(out, columns=["id", "source", "claim", "paper", "ours", "verdict", "why"])
