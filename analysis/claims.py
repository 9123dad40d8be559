"""Verdicts on the paper's claims (results/paper/claims.toml) from the tidy frame.

Verdicts: "agrees", "disagrees", "inconclusive", "not run here" (no runs for the claim's task or
algorithms, e.g. a map that needs real StarCraft II). Each verdict comes with our number, the paper's and
the reason; an inconclusive verdict names its real reason: the budget (runs shorter than the paper's that
are still moving), the simulator (a scripted policy wins the map, so the map cannot tell the algorithms
apart), too few seeds, a named baseline that did not run, intervals too wide to decide, or a verdict that
changes with the convergence rule's tolerance. docs/analysis.md states every rule.

"Final" is the mean of each seed's last ``last`` test evaluations (stats.LAST_K by default), as in the
tables and figures. A comparison of two algorithms is Welch's t on the seeds' finals, reported with the
difference's 95% interval, p and Hedges' g; it decides only when that interval does.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.loaders import primary_settings
from analysis.paper import Paper
from analysis.stats import LAST_K, final_values, is_flat, settling_step, t_interval, welch, welch_text
from analysis.tables import capture_metric, ci_text, competitive_runs, fmt_steps, learning_rows, rate_bounds

AGREES, DISAGREES, INCONCLUSIVE, NOT_RUN = "agrees", "disagrees", "inconclusive", "not run here"
BUDGET_SLACK = 0.95  # a run that reached 95% of the paper's budget counts as a full-length run
TOLERANCES = (0.02, 0.05, 0.10)  # the convergence rule must give the same verdict at each
SMOOTH = 5  # evaluations in the centred moving mean a seed's curve is smoothed with before settling
PLATEAU = 0.05  # a short run counts as settled when its last evaluations moved by at most this (rates),
#                 or by this fraction of the final value (returns)


class Verdict(Exception):
    """Raised by an evaluator that can decide early (nothing to compare)."""

    def __init__(self, verdict: str, why: str, ours: str = "—"):
        super().__init__(why)
        self.verdict, self.why, self.ours = verdict, why, ours


class Context:
    """What every evaluator needs: the frame, the paper, k for "final", the scripted baselines."""

    def __init__(self, frame: pd.DataFrame, paper: Paper, last: int = LAST_K, baselines: pd.DataFrame | None = None):
        self.frame, self.paper, self.last = frame, paper, last
        self.baselines = baselines if baselines is not None else pd.DataFrame()

    def scripted_win(self, map_name: str | None) -> str | None:
        """Why a map cannot tell algorithms apart: a scripted policy wins it (>= 0.95), or None."""
        if not map_name:
            return None
        b = self.baselines
        if not b.empty and "win_rate" in b:
            hit = b[(b["map"] == map_name) & (b["win_rate"] >= 0.95)]
            if len(hit):
                r = hit.sort_values("win_rate").iloc[-1]
                return f"a scripted policy ({r['label']}) wins SMAX's {map_name} {r['win_rate']:.2f} of the time"
        if self.paper.scripted_wins(map_name):
            return self.paper.map_note(map_name) or f"a scripted policy wins SMAX's {map_name}"
        return None


def _rows(frame: pd.DataFrame, claim: dict, algo: str | None = None) -> pd.DataFrame:
    rows = learning_rows(frame)
    rows = rows[rows["metric"] == claim["metric"]]
    for key, col in (("map", "map"), ("env", "env"), ("n", "N"), ("team", "team")):
        if key in claim:
            rows = rows[rows[col] == claim[key]]
    if algo is not None:
        rows = rows[rows["team_algo"] == algo]
    return rows


def steps_per_iteration(frame: pd.DataFrame, run_ids) -> float:
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
        return float(budget) * steps_per_iteration(frame, run_ids)
    return float(budget)


def _where(claim: dict) -> str:
    if "map" in claim:
        return claim["map"]
    if "env" in claim:
        return f"{claim['env']}" + (f" N={claim['n']}" if "n" in claim else "")
    return "this task"


def _summary(ctx: Context, claim: dict, algo: str) -> dict:
    rows = _rows(ctx.frame, claim, algo)
    if rows.empty:
        note = ""
        if "map" in claim and not ctx.paper.smax_can_run(claim["map"]):
            note = f" ({ctx.paper.map_note(claim['map'])})"
        raise Verdict(NOT_RUN, f"no {ctx.paper.label(algo)} runs on {_where(claim)}{note}")
    finals = final_values(rows, claim["metric"], last=ctx.last).sort_values("seed", kind="stable")
    mean, low, high = t_interval(finals["final"])
    bounds = rate_bounds(claim["metric"])
    if bounds and np.isfinite(low):
        low, high = max(low, bounds[0]), min(high, bounds[1])
    curves = {rid: g.sort_values("step")["value"].to_numpy(float) for rid, g in rows.groupby("run_id", observed=True)}
    flat_tol = PLATEAU if bounds else PLATEAU * max(abs(mean), 1e-9)
    budgets = pd.to_numeric(rows["budget"], errors="coerce").dropna().unique() if "budget" in rows else []
    return {"algo": algo, "mean": mean, "low": low, "high": high, "n": len(finals),
            "budget": float(budgets[0]) if len(budgets) == 1 else math.nan,
            "steps": float(finals["final_step"].min()), "runs": list(finals["run_id"]),
            "finals": finals["final"].to_numpy(float), "seeds": tuple(finals["final"]),
            "flat": all(is_flat(c, ctx.last, flat_tol) for c in curves.values())}


def _text(s: dict, digits: int = 2) -> str:
    return ci_text(s["mean"], s["low"], s["high"], s["n"], digits, seeds=s["seeds"])


def _budget(ctx: Context, claim: dict, summaries: list[dict]) -> tuple[str | None, str | None]:
    """(blocking reason, remark): runs shorter than the paper's budget that are still moving block a
    verdict ("budget: ..."); short runs whose every seed has settled only get a remark."""
    runs = [r for s in summaries for r in s["runs"]]
    budget = _budget_steps(ctx.frame, claim, runs)
    if claim.get("budget_unit") == "iterations" and not np.isfinite(budget):
        return "budget: cannot convert the paper's iterations to env steps (no n_envs or env.episode_limit)", None
    reached = min(s["steps"] for s in summaries)
    if not (np.isfinite(budget) and reached < BUDGET_SLACK * budget):
        return None, None
    unit = claim.get("budget_unit", "env_steps")
    paper_budget = f"{claim['budget']:g} iterations = {fmt_steps(budget)} env steps" if unit == "iterations" \
        else f"{fmt_steps(budget)} env steps"
    moving = [ctx.paper.label(s["algo"]) for s in summaries if not s["flat"]]
    if moving:
        return (f"budget: our runs stop at {fmt_steps(reached)} env steps, the paper trained for {paper_budget}, "
                f"and some seeds still move (last {ctx.last} evaluations vs the {ctx.last} before, by more than "
                f"{PLATEAU:g}{'' if rate_bounds(claim['metric']) else ' of the final value'}): {', '.join(moving)}"), None
    return None, (f"at {fmt_steps(reached)} env steps of the paper's {paper_budget}; every seed has settled "
                  f"(its last {ctx.last} evaluations within {PLATEAU:g} of the {ctx.last} before)")


def _blockers(ctx: Context, claim: dict, summaries: list[dict]) -> tuple[list[str], str | None]:
    """Reasons that leave a claim inconclusive whatever the numbers say, and a remark for the why."""
    reasons = []
    why = ctx.scripted_win(claim.get("map"))
    if why:
        reasons.append(f"simulator: {why}, so the map cannot tell learners apart")
    few = [f"{ctx.paper.label(s['algo'])} n={s['n']}" for s in summaries if s["n"] < 2]
    if few:
        reasons.append(f"too few seeds ({', '.join(few)}) for an interval")
    budgets = {s["budget"] for s in summaries if np.isfinite(s.get("budget", math.nan))}
    if len(budgets) > 1:  # e.g. ASAE at 3M beside QMIX at 500k: a comparison needs one budget
        reasons.append("budgets differ: " + ", ".join(f"{ctx.paper.label(s['algo'])} t_max={fmt_steps(s['budget'])}"
                                                       for s in summaries if np.isfinite(s["budget"])))
    budget, remark = _budget(ctx, claim, summaries)
    if budget:
        reasons.append(budget)
    return reasons, remark


def _decide(ctx, claim, summaries, outcome: tuple[str, str], ours: str):
    reasons, remark = _blockers(ctx, claim, summaries)
    verdict, why = outcome
    if reasons:
        extra = f" (the numbers alone: {verdict}, {why})" if verdict != INCONCLUSIVE else f"; also {why}"
        return INCONCLUSIVE, "; ".join(reasons) + extra, ours
    if remark:
        why = f"{why}; {remark}"
    return verdict, why, ours


def _value(ctx, claim):
    s = _summary(ctx, claim, claim["algo"])
    target, tol = float(claim["paper"]), float(claim.get("tolerance", 0.0))
    lo_band, hi_band = target - tol, target + tol
    if not np.isfinite(s["low"]):
        outcome = (INCONCLUSIVE, "no interval")
    elif lo_band <= s["low"] and s["high"] <= hi_band:
        outcome = (AGREES, f"the whole 95% interval lies within {tol:g} of the paper's {target:g}")
    elif s["high"] < lo_band or s["low"] > hi_band:
        outcome = (DISAGREES, f"the whole 95% interval lies more than {tol:g} from the paper's {target:g}")
    else:
        outcome = (INCONCLUSIVE, f"intervals too wide: the 95% interval reaches both inside and outside "
                                 f"{target:g} +- {tol:g}")
    return _decide(ctx, claim, [s], outcome, _text(s))


def _pair(ctx, claim, versus=None):
    versus = versus or claim["versus"]
    a = _summary(ctx, claim, claim["algo"])
    b = _summary(ctx, claim, versus)
    w = welch(a["finals"], b["finals"])
    ours = f"{ctx.paper.label(claim['algo'])} {_text(a)} vs {ctx.paper.label(versus)} {_text(b)}; {welch_text(w)}"
    return a, b, w, ours


def _beats_outcome(w: dict, tol: float, name: str) -> tuple[str, str]:
    """a beats b: the difference's interval lies above 0 and its mean above ``tol``; no meaningful
    advantage: the interval lies below ``tol``; else too wide."""
    if not np.isfinite(w["low"]):
        return INCONCLUSIVE, "no interval of the difference"
    if w["low"] > 0 and w["diff"] > tol:
        return AGREES, f"clearly above {name} (the difference's 95% interval excludes 0, its mean exceeds {tol:g})"
    if w["high"] < tol:
        return DISAGREES, f"no advantage of {tol:g} or more over {name} (the difference's 95% interval stays below it)"
    return INCONCLUSIVE, f"intervals too wide: the difference to {name} could be below or above {tol:g}"


def _beats(ctx, claim):
    a, b, w, ours = _pair(ctx, claim)
    outcome = _beats_outcome(w, float(claim.get("tolerance", 0.0)), ctx.paper.label(claim["versus"]))
    return _decide(ctx, claim, [a, b], outcome, ours)


def _not_worse(ctx, claim):
    a, b, w, ours = _pair(ctx, claim)
    tol = float(claim.get("tolerance", 0.0))
    name = ctx.paper.label(claim["versus"])
    if not np.isfinite(w["low"]):
        outcome = (INCONCLUSIVE, "no interval of the difference")
    elif w["low"] > -tol:
        outcome = (AGREES, f"not below {name} by {tol:g} or more (the difference's 95% interval stays above -{tol:g})")
    elif w["high"] < 0 and w["diff"] < -tol:
        outcome = (DISAGREES, f"clearly below {name} (the difference's 95% interval excludes 0)")
    else:
        outcome = (INCONCLUSIVE, f"intervals too wide: the difference to {name} could be above or below -{tol:g}")
    return _decide(ctx, claim, [a, b], outcome, ours)


def _versus(claim) -> list[str]:
    return [v.strip() for v in str(claim["versus"]).split(",") if v.strip()]


def _best(ctx, claim):
    a = _summary(ctx, claim, claim["algo"])
    others, missing = {}, []
    for name in _versus(claim):
        try:
            others[name] = _summary(ctx, claim, name)
        except Verdict:
            missing.append(name)
    if not others:
        raise Verdict(NOT_RUN, f"no baseline runs ({claim['versus']}) on this task",
                      f"{ctx.paper.label(claim['algo'])} {_text(a, 1)}")
    tol = float(claim.get("tolerance", 0.0))
    tests = {k: welch(a["finals"], v["finals"]) for k, v in others.items()}
    ours = f"{ctx.paper.label(claim['algo'])} {_text(a, 1)}; " + "; ".join(
        f"{ctx.paper.label(k)} {_text(v, 1)} ({welch_text(tests[k], 1)})" for k, v in others.items())
    outcomes = {k: _beats_outcome(w, tol, ctx.paper.label(k)) for k, w in tests.items()}
    below = [ctx.paper.label(k) for k, w in tests.items() if np.isfinite(w["high"]) and w["high"] < 0]
    if below:
        outcome = (DISAGREES, f"clearly below {', '.join(below)}")
    elif missing:
        outcome = (INCONCLUSIVE, "not every named baseline ran: "
                   + ", ".join(ctx.paper.label(m) for m in missing) + " missing"
                   + ("" if not all(o[0] == AGREES for o in outcomes.values())
                      else f" (clearly above the {len(others)} that ran)"))
    elif all(o[0] == AGREES for o in outcomes.values()):
        outcome = (AGREES, "clearly above every named baseline")
    else:
        undecided = [ctx.paper.label(k) for k, o in outcomes.items() if o[0] != AGREES]
        outcome = (INCONCLUSIVE, f"intervals too wide or no clear advantage over {', '.join(undecided)}")
    return _decide(ctx, claim, [a, *others.values()], outcome, ours)


def _count_beats(ctx, claim):
    """`algo` clearly above every `versus` on at least `need` of the claim's `maps`."""
    maps, need = list(claim["maps"]), int(claim["need"])
    tol = float(claim.get("tolerance", 0.0))
    won, lost, open_, lines = [], [], [], []
    for map_name in maps:
        sub = {**claim, "map": map_name}
        try:
            a = _summary(ctx, sub, claim["algo"])
        except Verdict:
            open_.append(f"{map_name} (not run)")
            continue
        results = []
        for versus in _versus(claim):
            try:
                b = _summary(ctx, sub, versus)
            except Verdict:
                results.append((INCONCLUSIVE, f"no {ctx.paper.label(versus)}", None, versus))
                continue
            w = welch(a["finals"], b["finals"])
            verdict, why, _ = _decide(ctx, sub, [a, b], _beats_outcome(w, tol, ctx.paper.label(versus)), "")
            results.append((verdict, why, w, versus))
        diffs = ", ".join(f"{ctx.paper.label(r[3])} {r[2]['diff']:+.2f}" for r in results if r[2] is not None)
        if all(r[0] == AGREES for r in results):
            won.append(map_name)
        elif any(r[0] == DISAGREES for r in results):
            lost.append(map_name)
        else:
            reason = next(r[1] for r in results if r[0] != AGREES).split(":")[0]
            open_.append(f"{map_name} ({reason})")
        lines.append(f"{map_name} {diffs or '—'}")
    ours = (f"clearly above on {len(won)} of {len(maps)}: " + (", ".join(won) or "none")
            + f"; not above on {len(lost)}: " + (", ".join(lost) or "none")
            + f"; undecided on {len(open_)}: " + (", ".join(open_) or "none")
            + f". {ctx.paper.label(claim['algo'])} minus each: " + "; ".join(lines))
    if len(won) >= need:
        return AGREES, f"clearly above on {len(won)} maps, {need} needed", ours
    if len(maps) - len(lost) < need:
        return DISAGREES, (f"not above on {len(lost)} of the {len(maps)} maps (each a Welch test with "
                           f"tolerance {tol:g}), so at most {len(maps) - len(lost)} can agree; {need} needed"), ours
    return INCONCLUSIVE, f"{len(won)} clear, {len(open_)} undecided or not run; {need} needed", ours


def _settling(ctx, claim, algo) -> tuple[dict, pd.DataFrame]:
    rows = _rows(ctx.frame, claim, algo)
    if rows.empty:
        raise Verdict(NOT_RUN, f"no {ctx.paper.label(algo)} runs on {_where(claim)}")
    per_iter = steps_per_iteration(ctx.frame, rows["run_id"].unique())
    bounded = rate_bounds(claim["metric"]) is not None
    table = []
    for rid, g in rows.groupby("run_id", observed=True):
        g = g.sort_values("step")
        x, y = g["step"].to_numpy(float), g["value"].to_numpy(float)
        plateau = float(np.nanmean(y[-ctx.last:]))
        scale = 1.0 if bounded else abs(plateau)
        row = {"run_id": rid, "seed": g["seed"].iloc[0]}
        for tol in TOLERANCES:
            row[tol] = settling_step(x, y, tol, ctx.last, scale=scale, window=SMOOTH)
        table.append(row)
    s = {"algo": algo, "steps": float(rows.groupby("run_id", observed=True)["step"].max().min()),
         "runs": list(rows["run_id"].unique()), "flat": True, "n": len(table), "per_iter": per_iter}
    return s, pd.DataFrame(table).sort_values("seed", kind="stable")


def _iters(step: float, per_iter: float) -> str:
    if not np.isfinite(step):
        return "never"
    return f"{step / per_iter:.0f}" if np.isfinite(per_iter) else fmt_steps(step)


def _converges_by(ctx, claim):
    s, seeds = _settling(ctx, claim, claim["algo"])
    per_iter = s["per_iter"]
    target, tol = float(claim["paper"]), float(claim.get("tolerance", 0.5))
    lo, hi = target * (1 - tol), target * (1 + tol)
    verdicts = {}
    for t in TOLERANCES:
        its = seeds[t].to_numpy(float) / per_iter if np.isfinite(per_iter) else np.full(len(seeds), np.nan)
        inside = np.isfinite(its) & (its >= lo) & (its <= hi)
        verdicts[t] = AGREES if inside.all() else DISAGREES if not inside.any() else INCONCLUSIVE
    unit = "iterations" if np.isfinite(per_iter) else "env steps"
    ours = "per seed, settles after (" + unit + f", tolerance {'/'.join(f'{t:.0%}' for t in TOLERANCES)}): " + "; ".join(
        f"seed {r['seed']}: " + "/".join(_iters(r[t], per_iter) for t in TOLERANCES) for _, r in seeds.iterrows())
    main = verdicts[0.05]
    if len(set(verdicts.values())) > 1:
        outcome = (INCONCLUSIVE, "the verdict changes with the rule's tolerance ("
                   + ", ".join(f"{t:.0%}: {v}" for t, v in verdicts.items()) + ")")
    elif main == AGREES:
        outcome = (AGREES, f"every seed settles within {lo:g}-{hi:g} iterations at every tolerance")
    elif main == DISAGREES:
        outcome = (DISAGREES, f"no seed settles within {lo:g}-{hi:g} iterations ('never': not before its last "
                              f"{ctx.last} evaluations)")
    else:
        outcome = (INCONCLUSIVE, f"seeds disagree: some settle within {lo:g}-{hi:g} iterations, some do not")
    return _decide(ctx, claim, [s], outcome, ours)


def _converges_slower(ctx, claim):
    """`algo` settles later than `versus`: every seed of one after every seed of the other, at every tolerance."""
    a, sa = _settling(ctx, claim, claim["algo"])
    b, sb = _settling(ctx, claim, claim["versus"])
    la, lb = ctx.paper.label(claim["algo"]), ctx.paper.label(claim["versus"])
    verdicts = {}
    for t in TOLERANCES:
        x = np.nan_to_num(sa[t].to_numpy(float), nan=np.inf)
        y = np.nan_to_num(sb[t].to_numpy(float), nan=np.inf)
        verdicts[t] = AGREES if x.min() > y.max() else DISAGREES if x.max() < y.min() else INCONCLUSIVE
    ours = f"settling env steps per seed at 5%: {la} " + "/".join(fmt_steps(v) if np.isfinite(v) else "never"
                                                                     for v in sa[0.05]) + \
        f"; {lb} " + "/".join(fmt_steps(v) if np.isfinite(v) else "never" for v in sb[0.05])
    if len(set(verdicts.values())) > 1:
        outcome = (INCONCLUSIVE, "the verdict changes with the rule's tolerance ("
                   + ", ".join(f"{t:.0%}: {v}" for t, v in verdicts.items()) + ")")
    elif verdicts[0.05] == AGREES:
        outcome = (AGREES, f"every {la} seed settles after every {lb} seed")
    elif verdicts[0.05] == DISAGREES:
        outcome = (DISAGREES, f"every {la} seed settles before every {lb} seed")
    else:
        outcome = (INCONCLUSIVE, "the seeds' settling steps overlap")
    return _decide(ctx, claim, [a, b], outcome, ours)


def _stability(ctx, claim, algo) -> dict:
    """Per seed, the standard deviation of its evaluations over the last third of training."""
    rows = _rows(ctx.frame, claim, algo)
    if rows.empty:
        raise Verdict(NOT_RUN, f"no {ctx.paper.label(algo)} runs on {_where(claim)}")
    sds = []
    for _, g in rows.groupby("run_id", observed=True):
        g = g.sort_values("step")
        late = g[g["step"] >= g["step"].max() * 2 / 3]["value"].to_numpy(float)
        sds.append(float(np.std(late, ddof=1)) if late.size > 1 else math.nan)
    s = _summary(ctx, claim, algo)
    mean, low, high = t_interval(sds)
    return {**s, "mean": mean, "low": low, "high": high, "finals": np.asarray(sds), "seeds": tuple(sds)}


def _most_stable(ctx, claim):
    a = _stability(ctx, claim, claim["algo"])
    others, missing = {}, []
    for name in _versus(claim):
        try:
            others[name] = _stability(ctx, claim, name)
        except Verdict:
            missing.append(name)
    if not others:
        raise Verdict(NOT_RUN, f"no baseline runs ({claim['versus']}) on this task")
    tests = {k: welch(v["finals"], a["finals"]) for k, v in others.items()}  # > 0: the other varies more
    ours = "std of the test return over the last third of training, per seed: " + "; ".join(
        f"{ctx.paper.label(s['algo'])} {_text(s, 1)}" for s in (a, *others.values())) + "; " + "; ".join(
        f"{ctx.paper.label(k)} - {ctx.paper.label(claim['algo'])}: {welch_text(w, 1)}" for k, w in tests.items())
    clear = {k: np.isfinite(w["low"]) and w["low"] > 0 for k, w in tests.items()}
    worse = [ctx.paper.label(k) for k, w in tests.items() if np.isfinite(w["high"]) and w["high"] < 0]
    if worse:
        outcome = (DISAGREES, f"{', '.join(worse)} varies clearly less")
    elif missing:
        outcome = (INCONCLUSIVE, "not every named baseline ran: " + ", ".join(ctx.paper.label(m) for m in missing)
                   + " missing")
    elif all(clear.values()):
        outcome = (AGREES, "varies clearly less than every named baseline")
    else:
        outcome = (INCONCLUSIVE, "intervals too wide to rank the seeds' variation")
    return _decide(ctx, claim, [a, *others.values()], outcome, ours)


def _growth(w0: dict, w1: dict) -> tuple[float, float]:
    """How much a difference grows from w0 to w1 (two Welch results), and the half-width of its 95%
    interval: the two standard errors added in quadrature, t with the smaller degrees of freedom."""
    from scipy import stats

    if not (np.isfinite(w0["low"]) and np.isfinite(w1["low"])):
        return w1["diff"] - w0["diff"], math.nan
    df0, df1 = w0.get("df", math.inf), w1.get("df", math.inf)
    se0 = (w0["high"] - w0["diff"]) / stats.t.ppf(0.975, df0) if np.isfinite(df0) else 0.0
    se1 = (w1["high"] - w1["diff"]) / stats.t.ppf(0.975, df1) if np.isfinite(df1) else 0.0
    df = min(df0, df1)
    half = float(stats.t.ppf(0.975, df)) * math.hypot(se0, se1) if np.isfinite(df) else 0.0
    return w1["diff"] - w0["diff"], half


def _gap_grows_n(ctx, claim):
    """`algo` minus `versus` (finals) is positive at every N and larger at the largest N than the smallest,
    the growth's interval (Welch, summed variances) excluding 0."""
    gaps = {}
    for n in claim["ns"]:
        sub = {**claim, "n": n}
        try:
            a, b = _summary(ctx, sub, claim["algo"]), _summary(ctx, sub, claim["versus"])
        except Verdict:
            continue
        gaps[n] = (a, b, welch(a["finals"], b["finals"]))
    if len(gaps) < 2:
        raise Verdict(NOT_RUN, f"needs {ctx.paper.label(claim['algo'])} and {ctx.paper.label(claim['versus'])} runs "
                               f"at two or more N on {claim.get('env')}")
    ns = sorted(gaps)
    ours = "; ".join(f"N={n}: {welch_text(gaps[n][2], 1)}" for n in ns)
    growth, half = _growth(gaps[ns[0]][2], gaps[ns[-1]][2])
    ours += f"; growth N={ns[0]} -> N={ns[-1]}: {growth:+.1f} [{growth - half:+.1f}, {growth + half:+.1f}]"
    if growth - half > 0 and all(g[2]["low"] > 0 for g in gaps.values()):
        outcome = (AGREES, "positive at every N and clearly larger at the largest N")
    elif growth + half < 0:
        outcome = (DISAGREES, "the gap clearly shrinks from the smallest to the largest N")
    else:
        outcome = (INCONCLUSIVE, "intervals too wide: the growth's 95% interval includes 0")
    summaries = [s for n in ns for s in gaps[n][:2]]
    return _decide(ctx, claim, summaries, outcome, ours)


def _gap_grows(ctx, claim):
    frame, paper = ctx.frame, ctx.paper
    rows = competitive_runs(frame)
    metric = claim["metric"]
    if not rows.empty and metric not in set(rows["metric"].astype(str)):
        metric = capture_metric(rows)
    team, a, b = claim.get("team", "predator"), claim["algo"], claim["versus"]
    rows = rows[(rows["metric"] == metric) & (rows["team"] == team)]
    if rows.empty:
        raise Verdict(NOT_RUN, f"no competitive {paper.label(a)}-vs-{paper.label(b)} runs logging {team}/{metric}")
    finals = final_values(rows, metric, last=ctx.last, by=["N", "team_algo"])
    gaps = {}
    for n in sorted(finals["N"].dropna().unique()):
        x = finals[(finals["N"] == n) & (finals["team_algo"] == a)]["final"]
        y = finals[(finals["N"] == n) & (finals["team_algo"] == b)]["final"]
        if len(x) and len(y):
            gaps[int(n)] = welch(x, y)
    ours = "; ".join(f"N={n}: {welch_text(w)}" for n, w in gaps.items()) or "—"
    ours = f"{team} {metric}, {paper.label(a)} minus {paper.label(b)}: {ours}"
    if len(gaps) < 2:
        raise Verdict(NOT_RUN if not gaps else INCONCLUSIVE,
                      "needs both settings (each algorithm as the team) at two or more N", ours)
    s = {"algo": a, "steps": float(finals["final_step"].min()), "runs": list(finals["run_id"]), "flat": False,
         "n": int(finals.groupby(["N", "team_algo"]).size().min())}
    ns = sorted(gaps)
    growth, half = _growth(gaps[ns[0]], gaps[ns[-1]])
    if np.isfinite(half):
        ours += f"; growth N={ns[0]} -> N={ns[-1]}: {growth:+.2f} [{growth - half:+.2f}, {growth + half:+.2f}]"
    if all(w["low"] > 0 for w in gaps.values()) and growth - half > 0:
        outcome = (AGREES, "clearly positive at every N and clearly larger at the largest N")
    elif any(w["high"] < 0 for w in gaps.values()):
        outcome = (DISAGREES, "clearly negative at some N")
    elif growth + half < 0:
        outcome = (DISAGREES, "the gap clearly shrinks from the smallest to the largest N")
    else:
        outcome = (INCONCLUSIVE, "intervals too wide at some N, or for the growth")
    return _decide(ctx, claim, [s], outcome, ours)


KINDS = {"value": _value, "beats": _beats, "not_worse": _not_worse, "best": _best, "count_beats": _count_beats,
         "converges_by": _converges_by, "converges_slower": _converges_slower, "most_stable": _most_stable,
         "gap_grows": _gap_grows, "gap_grows_n": _gap_grows_n}


def evaluate(frame: pd.DataFrame, paper: Paper, last: int = LAST_K, baselines: pd.DataFrame | None = None
             ) -> pd.DataFrame:
    """One row per claim: id, source, claim, paper, ours, verdict, why. Per task and algorithm only the
    runs of one setting count (loaders.primary_settings: nothing pooled across budgets or settings)."""
    frame, _ = primary_settings(frame)
    ctx = Context(frame, paper, last=last, baselines=baselines)
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
                verdict, why, ours = evaluator(ctx, claim)
            except Verdict as v:
                verdict, why, ours = v.verdict, v.why, v.ours
        note = paper.map_note(claim["map"]) if "map" in claim else ""
        if note and note not in why:
            why = f"{why}. Note: {note}"
        out.append({"id": claim.get("id", "?"), "source": claim.get("source", ""), "claim": claim.get("text", ""),
                    "paper": paper_text, "ours": ours, "verdict": verdict, "why": why})
    return pd.DataFrame(out, columns=["id", "source", "claim", "paper", "ours", "verdict", "why"])
