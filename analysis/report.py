"""Run selection by preset, and the reproduction report: every table and figure of the paper from the
runs, our numbers beside the paper's, and a verdict per claim (Markdown + HTML page)."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from validation import ConfigError

from analysis import tables
from analysis.baselines import for_runs, load_baselines
from analysis.loaders import code_versions, primary_settings, runs_table, setting_text, with_settings
from analysis.paper import WIN_RATE, Paper
from analysis.render import Document, latex_table, markdown_table, replace_whole, write_text
from analysis.stats import LAST_K, aggregate_table, final_values, performance_profiles, score_matrices, summarize


# ----------------------------------------------------------------------------- selecting runs

def _env_has(frame: pd.DataFrame, *words: str) -> pd.Series:
    env = frame["env"].astype(str).str.lower()
    mask = pd.Series(False, index=frame.index)
    for word in words:
        mask |= env.str.contains(word, regex=False)
    return mask


def _competitive(frame: pd.DataFrame) -> pd.Series:
    return frame["run_id"].isin(tables.competitive_runs(frame)["run_id"].unique())


# What each paper experiment is, by config (env / map / teams), for runs that carry no preset tag.
SELECTORS: dict[str, tuple[str, Callable[[pd.DataFrame], pd.Series]]] = {
    "smac": ("SMAC-like maps (runs with env.map_name): Table 1, Figs 3 and 10", lambda f: f["map"].notna()),
    "spread": ("MPE simple spread: Fig 5", lambda f: _env_has(f, "spread")),
    "predator": ("predator-prey, learned predators vs random prey: Fig 6",
                 lambda f: _env_has(f, "predator", "prey", "tag") & ~_competitive(f)),
    "competitive": ("predator-prey, two learning algorithms against each other: Figs 7 and 8", _competitive),
    "ablation_m": ("ASAE runs, by learner.m: Fig 9", lambda f: f["team_algo"] == "asae"),
    "ablation_clip": ("ASAE runs, by learner.clip: Fig 11", lambda f: f["team_algo"] == "asae"),
}
# The sweep presets' names (experiments/presets/*.toml) and other spellings of the experiments above.
ALIASES = {"table1": "smac", "repro_table1": "smac", "appendix": "smac", "smax": "smac", "sc2": "smac",
           "mpe_spread": "spread", "simple_spread": "spread", "repro_spread": "spread", "predator_prey": "predator",
           "predator-prey": "predator", "tag": "predator", "ablation-m": "ablation_m", "repro_ablation_m": "ablation_m",
           "ablation-clip": "ablation_clip", "repro_ablation_clip": "ablation_clip", "repro_table1_3m": "smac",
           "repro_control_spread": "spread", "repro_fig5_rest": "spread"}
ABLATION_OF = {"ablation_m": "m", "ablation_clip": "clip"}


def preset_name(preset: str | None) -> str | None:
    return ALIASES.get(preset, preset) if preset else None


def select_preset(frame: pd.DataFrame, preset: str | None) -> pd.DataFrame:
    """Runs of a preset: those tagged with it or with a preset of the same experiment (config `preset` or
    `tags`: a `table1` sweep's runs are SMAC runs), plus untagged runs whose config matches the preset's
    experiment (SELECTORS). Directory names play no part."""
    if not preset:
        return frame
    runs = runs_table(frame)
    name = preset_name(preset)
    tags = runs["tags"].astype(object) if "tags" in runs else pd.Series([None] * len(runs))
    tag_sets = [set(json.loads(t)) if isinstance(t, str) and t.startswith("[") else set() for t in tags]
    tagged = {rid for rid, p, ts in zip(runs["run_id"], runs["preset"], tag_sets)
              if p == preset or preset in ts or f"preset:{preset}" in ts
              or (name in SELECTORS and isinstance(p, str) and preset_name(p) == name)}
    untagged = {rid for rid, p in zip(runs["run_id"], runs["preset"]) if not isinstance(p, str)}
    ids = set(tagged)
    if name in SELECTORS:
        matched = frame[SELECTORS[name][1](frame)]["run_id"].unique()
        ids |= untagged & set(matched)
    elif not tagged:
        seen = sorted({p for p in runs["preset"] if isinstance(p, str)})
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(SELECTORS)}"
                          + (f"; presets tagged in these runs: {', '.join(seen)}" if seen else ""))
    selected = frame[frame["run_id"].isin(ids)]
    if selected.empty:
        raise ConfigError(f"no runs of preset {preset!r} ({SELECTORS[name][0] if name in SELECTORS else 'by tag'})")
    return selected


def require_runs(frame: pd.DataFrame, where: str) -> None:
    if frame.empty:
        skipped = frame.attrs.get("skipped") or []
        extra = f" ({len(skipped)} skipped, listed above)" if skipped else ""
        raise ConfigError(f"no runs found in {where}{extra}; train some with `asae train` or pass --runs DIR")


# ----------------------------------------------------------------------------- pieces

def table1_outputs(frame: pd.DataFrame, paper: Paper, metric: str = WIN_RATE, last: int = LAST_K,
                   baselines: pd.DataFrame | None = None):
    """Table 1's cells (one per map, backend, budget, setting and algorithm) and the wide display, with
    the scripted baselines and each row's code versions."""
    cells = tables.table1_cells(frame, paper, metric=metric, last=last)
    finals = tables.map_final_values(frame, metric, last)
    provenance = frame.attrs.get("provenance") or {}
    code = {}
    if not finals.empty:
        for key, group in finals.groupby(tables.CELL_KEY, observed=True, dropna=False):
            code[tables.cell_key(*key)] = code_versions(provenance, group["run_id"].astype(str))
    return cells, tables.table1_display(cells, paper, baselines=baselines, code=code)


def write_table(df: pd.DataFrame, directory: Path, stem: str, caption: str = "",
                cells: pd.DataFrame | None = None) -> list[Path]:
    """`stem`.md (people), .tex (papers), .csv (the numbers: ``cells`` when given)."""
    directory.mkdir(parents=True, exist_ok=True)
    return [write_text(directory / f"{stem}.md", (f"*{caption}*\n\n" if caption else "") + markdown_table(df) + "\n"),
            write_text(directory / f"{stem}.tex", latex_table(df, caption=caption, label=f"tab:{stem}") + "\n"),
            replace_whole(directory / f"{stem}.csv", lambda tmp: (df if cells is None else cells).to_csv(tmp, index=False))]


def scripted_maps(paper: Paper, baselines: pd.DataFrame | None) -> dict[str, str]:
    """Maps a scripted policy wins (win rate >= 0.95 in results/baselines, or maps.csv scripted_wins),
    with the reason: they cannot tell learners apart and stay out of the aggregates."""
    out = {}
    if baselines is not None and not baselines.empty:
        for r in baselines[baselines["win_rate"] >= 0.95].itertuples(index=False):
            out.setdefault(str(r.map), f"the scripted {r.label} policy wins {r.win_rate:.2f} of battles there")
    for m in paper.maps["map"]:
        if paper.scripted_wins(m):
            out.setdefault(str(m), "a scripted policy wins every battle there, results/paper/maps.csv")
    return out


def aggregate_outputs(frame: pd.DataFrame, metric: str = WIN_RATE, last: int = LAST_K,
                      exclude: Sequence[str] = (), algos: Sequence[str] | None = None):
    """rliable aggregates over the SMAC-like maps every algorithm (of ``algos``, default all) ran, less
    the ``exclude``d maps."""
    finals = tables.map_final_values(frame, metric, last)
    finals = finals[~finals["map"].astype(str).isin(set(exclude))]
    if algos is not None:
        finals = finals[finals["team_algo"].astype(str).isin(set(algos))]
    if finals.empty:
        raise ConfigError(f"no runs log {metric} on a SMAC-like map")
    matrices, tasks = score_matrices(finals, task_cols=["env", "map"])
    if not tasks or not matrices:
        raise ConfigError("the algorithms share no map: aggregate scores need the same tasks for all")
    return aggregate_table(matrices), matrices, tasks


def summary_by_task(frame: pd.DataFrame, paper: Paper, last: int = LAST_K) -> pd.DataFrame:
    """Final value of each task's main test metric per algorithm, budget and setting (mean, 95% t interval
    and each seed's value)."""
    rows = with_settings(tables.learning_rows(frame))
    out = []
    for (env, map_name, n), task in rows.groupby(["env", "map", "N"], observed=True, dropna=False):
        metric = tables.primary_metric(task)
        summary = summarize(final_values(task, metric, last=last, by=["team_algo", "budget", "setting"]),
                            ["team_algo", "budget", "setting"], bounds=tables.rate_bounds(metric))
        for r in summary.itertuples(index=False):
            out.append({"task": tables.task_label(env, map_name, n), "metric": metric,
                        "algorithm": paper.label(r.team_algo), "budget": setting_text(r.budget, r.setting),
                        "final (mean [95% CI] n (seeds))": tables.ci_text(r.mean, r.ci_low, r.ci_high, r.n_seeds,
                                                                          seeds=r.seeds),
                        "env steps": tables.fmt_steps(r.steps)})
    return pd.DataFrame(out)


def runs_overview(frame: pd.DataFrame) -> pd.DataFrame:
    runs = runs_table(frame)
    reached = frame.groupby("run_id", observed=True)["step"].max()
    out = runs[["run_id", "algo", "env", "map", "N", "m", "clip", "seed", "status"]].copy()
    out["t_max"] = pd.to_numeric(runs["t_max"].astype(object), errors="coerce").map(tables.fmt_steps) \
        if "t_max" in runs else "?"
    out["env steps"] = out["run_id"].map(reached).map(tables.fmt_steps)
    provenance = frame.attrs.get("provenance") or {}
    out["code"] = [code_versions(provenance, [rid]) for rid in out["run_id"].astype(str)]
    return out.sort_values(["env", "map", "N", "algo", "seed"], na_position="first").reset_index(drop=True)


NO_PRESET = "(no preset tag)"
COST_NOTE = ("How long the runs took, per sweep preset (the `preset:NAME` tag `asae sweep` gives its runs; "
             "other runs are \"" + NO_PRESET + "\"), from every Sacred run read, attempts of resumed runs and "
             "runs still RUNNING included. A run's duration is its run.json `stop_time` minus `start_time`, or its "
             "last `heartbeat` minus `start_time` when it is still running or was killed before it could stop. "
             "*Run time* is the sum of the durations; *CPU hours* the sum of duration x `torch_threads` (the cores "
             "each run was given; threads JAX starts for SMAX are not counted); *wall time* runs from the first "
             "start to the last end, so it counts parallel runs once and includes any pause between sessions.")


def cost_by_preset(run_times: Sequence[dict]) -> pd.DataFrame:
    """Per preset (and in total): runs, Sacred runs (attempts), those still running, wall time, run time
    and CPU hours, from loaders.run_time records (``frame.attrs["run_times"]``)."""
    from analysis.loaders import duration_text

    times = pd.DataFrame(list(run_times), columns=["run_key", "preset", "status", "start", "end", "seconds", "threads"])
    times["preset"] = times["preset"].map(lambda p: p if isinstance(p, str) and p else NO_PRESET)

    def row(name: str, group: pd.DataFrame) -> dict:
        wall = (group["end"].max() - group["start"].min()).total_seconds() if group["seconds"].notna().any() else np.nan
        return {"preset": name, "runs": group["run_key"].nunique(), "Sacred runs": len(group),
                "still running": int((group["status"] == "RUNNING").sum()), "wall time": duration_text(wall),
                "run time": duration_text(group["seconds"].sum()),
                "CPU hours": f"{(group['seconds'] * group['threads']).sum() / 3600:.2f}"}

    rows = [row(name, group) for name, group in times.groupby("preset", sort=True)]
    if len(rows) > 1:
        rows.append(row("all", times))
    return pd.DataFrame(rows)


def fmt_summary(df: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    """A summarize() frame for people: key columns, budget (and setting), "mean [CI] n (each seed)",
    steps reached."""
    out = df[list(key)].copy()
    if "budget" in df:
        settings = df["setting"] if "setting" in df else pd.Series("", index=df.index)
        out["budget"] = [setting_text(b, s if isinstance(s, str) else "") for b, s in zip(df["budget"], settings)]
    out["final (mean [95% CI] n (seeds))"] = [
        tables.ci_text(r.mean, r.ci_low, r.ci_high, r.n_seeds, seeds=r.seeds if isinstance(r.seeds, tuple) else ())
        for r in df.itertuples(index=False)]
    out["env steps"] = df["steps"].map(tables.fmt_steps)
    return out


# ----------------------------------------------------------------------------- the whole report

def build_report(frame: pd.DataFrame, paper: Paper, out: Path, source: str, formats: Sequence[str] = ("png", "svg"),
                 last: int = LAST_K, any_settings: bool = False, log: Callable[[str], None] = lambda s: None,
                 baselines: pd.DataFrame | None = None) -> list[Path]:
    """Write index.md, index.html, figures/ and tables/ into ``out``. Everything but the ablations uses
    the runs with the paper's hyper-parameters (ASAE m = 10, clip 0.1) unless ``any_settings``; per task
    and algorithm one setting (loaders.primary_settings), the others named. ``baselines`` are the
    scripted-baseline records (analysis.baselines.load_baselines; default results/baselines)."""
    from analysis import claims as claims_mod
    from analysis import diagnostics as diag
    from analysis import figures

    out.mkdir(parents=True, exist_ok=True)
    figdir, tabdir = out / "figures", out / "tables"
    doc = Document("ASAE reproduction report")
    n_runs = frame["run_id"].nunique()
    skipped = frame.attrs.get("skipped") or []
    everything, frame = frame, (frame if any_settings else paper.paper_settings(frame))
    variants = n_runs - frame["run_id"].nunique()
    primary, left_out = primary_settings(frame)
    scripted = for_runs(load_baselines() if baselines is None else baselines, everything)
    won_maps = scripted_maps(paper, scripted)
    doc.text(f"Generated {dt.datetime.now().isoformat(timespec='seconds')} from `{source}`: {n_runs} run(s)"
             + (f", {len(skipped)} skipped (unreadable or still running; listed at the end)" if skipped else "")
             + ". Paper: Wan et al., *Multi-agent Policy Optimization with Approximatively Synchronous Advantage "
               "Estimation* (arXiv 2012.03488).")
    doc.text(f"**How to read the numbers.** A run's *final* value is the mean of its last {last} test evaluations "
             f"(`--last {last}`; tables, figures, aggregates and claims alike). A cell is the mean over seeds with a "
             "95% Student-t interval, n = seeds, and each seed's final value in brackets. Runs that differ in "
             "anything that changes results other than the seed (budget `t_max`, any hyper-parameter, the env "
             "backend) never share a cell. Two algorithms are compared with Welch's t test on the seeds' finals, "
             "reported with the difference, its 95% interval, p and Hedges' g. docs/analysis.md states every rule."
             + (f" {variants} run(s) with other hyper-parameters than the paper's (e.g. ASAE m != 10 or clip != 0.1) "
                "appear only in the ablations." if variants else ""))
    if left_out:
        doc.text("**Not pooled.** " + " ".join(f"{line}." for line in left_out))

    def figure(stem: str, caption: str, make: Callable[[], object]) -> None:
        try:
            fig = make()
        except ConfigError as exc:
            doc.text(f"{caption.split(':')[0]}: not in these runs: {exc}")
            return
        figures.save(fig, figdir, stem, formats)
        doc.figure(f"figures/{stem}.{formats[0]}", caption)
        log(f"  figure {stem}")

    def table(stem: str, caption: str, make: Callable[[], pd.DataFrame], cells=None) -> pd.DataFrame | None:
        try:
            df = make()
        except ConfigError as exc:
            doc.text(f"{caption}: not in these runs: {exc}")
            return None
        if df is None or df.empty:
            doc.text(f"{caption}: not in these runs.")
            return None
        write_table(df, tabdir, stem, caption)
        doc.table(df, caption)
        return df

    # Claims first: the verdicts are what a reader wants.
    doc.heading("Claims of the paper")
    verdicts = claims_mod.evaluate(frame, paper, last=last, baselines=scripted)
    counts = verdicts["verdict"].value_counts()
    doc.text(", ".join(f"{counts.get(v, 0)} {v}" for v in
                       (claims_mod.AGREES, claims_mod.DISAGREES, claims_mod.INCONCLUSIVE, claims_mod.NOT_RUN))
             + ". A claim agrees or disagrees only when the 95% interval decides it (a wide interval is *inconclusive*, "
               "never *agrees*). Runs shorter than the paper's budget leave a claim inconclusive while they still "
               "move; once every seed has settled, the verdict stands and names the budget. A map a scripted policy "
               "wins cannot tell learners apart (inconclusive: simulator). \"Best\" needs every baseline it names. "
               "Convergence is judged per seed, without the first (untrained) evaluation, and must give the same "
               "verdict at tolerances of 2%, 5% and 10%. Maps SMAX cannot express are *not run here*.")
    write_table(verdicts, tabdir, "claims", "Claims")
    doc.table(verdicts[["source", "claim", "paper", "ours", "verdict", "why"]])
    if paper.captions:
        doc.text("Stated only as figure captions, with no claim in the text, and so not checked: "
                 + "; ".join(f"{c.get('figure', '?')} (\"{c.get('text', '')}\")" for c in paper.captions)
                 + ". The ablations below show what our runs did for Figs. 9 and 11.")

    doc.heading("Table 1: test win rate after training (SMAC maps)")
    cells, display = table1_outputs(frame, paper, last=last, baselines=scripted)
    write_table(display, tabdir, "table1", "Test win rates: ours beside the paper's Table 1", cells=cells)
    doc.table(display, f"Ours: mean [95% t interval] n=seeds (each seed's final value) of the mean of each run's "
                       f"last {last} test win rates, one row per map, backend and budget. Paper: Table 1 (3M steps). "
                       "Scripted: fixed policies measured by the suite (results/baselines), 95% Wilson intervals.")
    notes = [f"{r.map}: {r.note}" for r in paper.maps.itertuples(index=False) if isinstance(r.note, str) and r.note]
    doc.text("SMAX (JaxMARL) stands in for StarCraft II where it can express a map; its unit balance is not "
             "SMAC's, so its numbers are comparable in trend, not digit by digit. "
             + " ".join(f"{n}." for n in notes)
             + ("" if not scripted.empty else " No scripted baselines are recorded for these maps "
                "(results/baselines; `asae baselines` measures them)."))
    agg_caption = ("rliable aggregates over the SMAC-like maps all algorithms ran"
                   + (", without " + "; ".join(f"{m} ({w})" for m, w in sorted(won_maps.items()))
                      if won_maps else "")
                   + " (95% stratified bootstrap intervals)")
    agg = table("aggregate", agg_caption,
                lambda: _aggregate_display(aggregate_outputs(primary, last=last, exclude=list(won_maps))[0], paper))
    ran = sorted({str(a) for a in tables.map_final_values(primary, WIN_RATE, last)["team_algo"]}
                 if not primary.empty else set())
    if agg is not None and {"asae", "coma"} <= set(ran) and len(ran) > 2:
        table("aggregate-asae-coma", agg_caption.replace("all algorithms ran", "ASAE and COMA both ran"),
              lambda: _aggregate_display(aggregate_outputs(primary, last=last, exclude=list(won_maps),
                                                           algos=["asae", "coma"])[0], paper))
    if agg is not None:
        doc.text("With 3 seeds per map the stratified bootstrap resamples 3 values per map: its intervals understate "
                 "the uncertainty (they cannot be wider than what 3 seeds show). Read them with Table 1's per-seed values.")
    try:
        agg_maps = ", ".join(t.split(" ", 1)[-1] for t in aggregate_outputs(primary, last=last,
                                                                             exclude=list(won_maps))[2])
    except ConfigError:
        agg_maps = ""
    figure("aggregate", f"Aggregate win rate (IQM, mean, median, optimality gap) over {agg_maps or 'the shared maps'}, "
                        "with 95% stratified bootstrap intervals",
           lambda: figures.aggregates(aggregate_outputs(primary, last=last, exclude=list(won_maps))[0], paper))
    figure("performance-profile", f"Performance profiles over {agg_maps or 'the shared maps'}: fraction of runs "
                                  "with final win rate above tau",
           lambda: _profile_figure(primary, paper, last, list(won_maps)))
    figure("curves-smac", f"Fig. 3: test win rate vs env steps on SMAC-like maps: each seed thin, the mean with its "
                          f"95% t interval, at the right the final value (mean of the last {last}) with Table 1's "
                          "interval; dashed: the paper's Table 1 value; grey: scripted policies",
           lambda: figures.curves(select_preset(primary, "smac"), paper=paper, last=last,
                                  lines=_reference_lines(primary, paper, scripted)))

    doc.heading("What the learners did (diagnostics)")
    diag_table = diag.diagnostics_table(primary, paper.label)
    if diag_table.empty:
        doc.text("No run logs entropy_softmax, kl, clip_frac or async_gap.")
    else:
        doc.text(f"From the training metrics each learner logs, per seed, after the first {diag.WARMUP:.0%} of "
                 "training: the policy's softmax entropy (near 0: it picks one action almost always), the KL between "
                 "the policy before and after an update, the fraction of samples whose ratio sits at the clip bound, "
                 "and ASAE's asynchrony gap. COMA logs only the entropy; QMIX none of them.")
        write_table(diag_table, tabdir, "diagnostics", "Diagnostics per task and algorithm")
        doc.table(diag_table)
        for stem, words in (("diagnostics-smax", "smax"), ("diagnostics-spread", "spread")):
            figure(stem, f"Diagnostics over training ({words}): each seed thin, the median bold",
                   lambda w=words: figures.diagnostics(primary[_env_has(primary, w)], paper=paper))

    doc.heading("Simple spread (Fig. 5)")
    figure("curves-spread", "Fig. 5: test return on simple spread in paper iterations (the paper's 800 dotted); each "
                            "seed thin, the mean with its 95% t interval, the final value with the table's interval. "
                            "The y range starts after the warm-up: the first evaluations (down to -4000) lie below it. "
                            "Grey: scripted policies (those far outside the range are left out)",
           lambda: figures.curves(select_preset(primary, "spread"), paper=paper, last=last, mark=800, zoom=True,
                                  lines=_reference_lines(primary, paper, scripted, with_paper=False),
                                  per_iteration=lambda rows: claims_mod.steps_per_iteration(rows, rows["run_id"].unique())))
    table("spread", "Final test return on simple spread", lambda: summary_by_task(select_preset(primary, "spread"), paper, last))
    doc.text("The paper counts MPE training in iterations: one iteration = every parallel env playing one "
             "episode (4 envs x 150 steps = 600 env steps with the paper's settings, `asae train with mpe_paper`).")

    doc.heading("Predator-prey (Figs. 6-8)")
    figure("curves-predator", "Fig. 6: predators' test return vs random prey",
           lambda: figures.curves(select_preset(primary, "predator"), paper=paper, last=last))
    figure("competitive", "Fig. 7: competitive training, each team's test return (mean over seeds, 95% t interval)",
           lambda: figures.competitive(tables.competitive_runs(primary), paper=paper))
    table("competitive", "Fig. 7 in numbers: final test return per team",
          lambda: fmt_summary(tables.competitive_table(primary, paper, last=last), ["N", "setting", "team_label"]))
    figure("capture-rate", "Fig. 8: capture rate of the trained predators (95% t interval over seeds)",
           lambda: figures.capture_bars(tables.capture_table(primary, paper, last=last)))
    table("capture-rate", "Fig. 8 in numbers: final capture rate",
          lambda: fmt_summary(tables.capture_table(primary, paper, last=last), ["N", "setting"]))

    doc.heading("Ablations (Figs. 9 and 11)")
    for param, fig_no, what in (("m", 9, "number of joint-action samples m"), ("clip", 11, "clip range")):
        figure(f"ablation-{param}", f"Fig. {fig_no}: ASAE with different {what}: each seed thin, the mean with its "
                                    "95% t interval",
               lambda p=param: figures.ablation(ablation_frame(everything, p, paper), p, last=last,
                                                lines=_reference_lines(primary, paper, scripted, with_paper=False)))
        table(f"ablation-{param}", f"Fig. {fig_no} in numbers: final value by {what}",
              lambda p=param: fmt_summary(tables.param_table(ablation_frame(everything, p, paper), p, last=last),
                                          ["task", "metric", p]))
        _ablation_moves(doc, ablation_frame(everything, param, paper), param, what)

    doc.heading("Runs")
    doc.text("Code: the commit each run was made from, from its own record (info.json `provenance`) or, for runs "
             "that predate it, recovered from its start time against the git history (provenance.json beside the "
             "runs); \"unknown\" where neither exists.")
    doc.table(runs_overview(everything))
    doc.heading("What the runs took", 3)
    doc.text(COST_NOTE)
    cost = cost_by_preset(frame.attrs.get("run_times") or [])
    write_table(cost, tabdir, "cost", "What the runs took")
    doc.table(cost)
    if skipped:
        doc.heading("Skipped (unreadable or still running)", 3)
        doc.table(pd.DataFrame(skipped, columns=["run", "reason"]))
    return doc.write(out)


def _reference_lines(frame: pd.DataFrame, paper: Paper, scripted: pd.DataFrame, with_paper: bool = True) -> Callable:
    """Per SMAC panel: the paper's Table 1 value of each algorithm that ran there (dashed, its colour) and
    the scripted policies' win rates (grey)."""
    from analysis import figures

    algos = sorted({str(a) for a in frame["team_algo"].dropna().unique()})
    palette = figures._palette(algos, paper)
    greys = ["0.35", "0.6", "0.8"]

    def lines(env, map_name, n, team):
        out = []
        ran = set(frame[(frame["map"] == map_name)]["team_algo"].astype(str))
        for algo in [a for a in paper.algo_order if a in ran and with_paper]:
            value = paper.win_rate(map_name, algo)
            if value is not None:
                out.append((value, f"paper {paper.label(algo)} {value:.2f}", palette.get(algo), "--"))
        if scripted.empty:
            return out
        if isinstance(map_name, str):
            here, column, fmt = scripted[(scripted["map"] == map_name) & (scripted["env"] == env)], "win_rate", ".2f"
        else:  # MPE: by env and N, the scripted policies' mean test return
            same_n = pd.to_numeric(scripted["N"], errors="coerce") == (float(n) if pd.notna(n) else np.nan)
            here, column, fmt = scripted[(scripted["env"] == env) & same_n], "return_mean", ".0f"
        for k, r in enumerate(here.itertuples(index=False)):
            y = getattr(r, column)
            if np.isfinite(y):
                out.append((y, f"{r.label} (scripted) {y:{fmt}}", greys[k % len(greys)], ":"))
        return out

    return lines


def _ablation_moves(doc: Document, frame: pd.DataFrame, param: str, what: str) -> None:
    """Whether the clip bound bound and the policy moved in each arm of an ablation: a flat ablation with
    a clip bound that never binds and a near-deterministic policy cannot show an effect."""
    from analysis import diagnostics as diag

    try:
        rows = tables.ablation_rows(frame, param)
    except ConfigError:
        return
    moved = diag.moved(rows, param)
    if moved.empty:
        return
    doc.table(moved, f"Did the clip bound bind and did the policy move? Per value of the {what}, per seed, "
                     f"after the first {diag.WARMUP:.0%} of training")
    clip = [float(v.rstrip("%")) for cell in moved["clip fraction after warm-up"] for v in cell.split(" / ")
            if v.endswith("%")]
    det = [tuple(int(x) for x in c.split(" of ")) for c in moved["near-deterministic seeds"] if " of " in c]
    n_det, n_all = sum(d for d, _ in det), sum(a for _, a in det)
    if clip:
        doc.text(f"Across the arms the clip bound binds in {min(clip):.1f}-{max(clip):.1f}% of samples per seed after "
                 f"warm-up, and {n_det} of {n_all} seeds end with a near-deterministic policy (softmax entropy below "
                 f"{diag.DETERMINISTIC:g} nats). "
                 + ("With the bound rarely binding and most policies no longer exploring, the updates barely move the "
                    "policy, so this ablation cannot show an effect of the parameter: its flatness does not point at "
                    "the critic, or at anything the parameter does." if max(clip) < 5 and n_det * 2 > n_all else
                    "The policy still moves in some arms: differences between arms can come from the parameter."))


def ablation_frame(frame: pd.DataFrame, param: str, paper: Paper) -> pd.DataFrame:
    """The runs of the ablation of ``param``: the paper's other settings held fixed (the clip ablation
    keeps m = 10 runs, the m ablation keeps clip = 0.1 runs); clip values become labels, and ASAE
    without clipping (learner.clip = null) is "none"."""
    keep = np.ones(len(frame), dtype=bool)
    for algo, group in paper.settings.groupby("algo"):
        own = (frame["algo"] == algo).to_numpy() & (frame["team_algo"] == algo).to_numpy()  # its own config
        for other, value in zip(group["param"], group["value"]):
            if other != param:
                column = pd.to_numeric(frame[other].astype(object), errors="coerce").to_numpy(dtype=float)
                keep &= ~own | np.isclose(column, float(value))
    frame = frame[keep]
    if param != "clip":
        return frame
    frame = frame.copy()
    labels = frame["clip"].astype(object).map(lambda v: None if pd.isna(v) else f"{v:g}")
    own = (frame["algo"] == "asae").to_numpy() & (frame["team_algo"] == "asae").to_numpy()
    labels[own & frame["clip"].isna().to_numpy()] = "none"
    frame["clip"] = labels
    return frame


def _aggregate_display(table: pd.DataFrame, paper: Paper) -> pd.DataFrame:
    out = pd.DataFrame({"algorithm": table["algo"].map(paper.label), "statistic": table["statistic"],
                        "value [95% CI]": [f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in
                                           zip(table["value"], table["ci_low"], table["ci_high"])],
                        "runs x maps": [f"{r} x {t}" for r, t in zip(table["runs"], table["tasks"])]})
    return out


def _profile_figure(frame: pd.DataFrame, paper: Paper, last: int, exclude: Sequence[str] = ()):
    from analysis import figures

    _, matrices, _ = aggregate_outputs(frame, last=last, exclude=exclude)
    taus = np.linspace(0.0, 1.0, 41)
    profiles, cis = performance_profiles(matrices, taus)
    return figures.performance_profile(profiles, cis, taus, paper)
