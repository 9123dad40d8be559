"""`asae report ...` and `asae sync-mongo ...` (dispatched from experiments/cli.py).

    asae report table1 --runs results/          Table 1, ours beside the paper's (Markdown; --out writes .md/.csv/.tex)
    asae report curves --preset spread          learning curves (PNG/SVG)
    asae report ablation-m | ablation-clip | capture-rate | competitive | aggregate | claims
    asae report all --out report/               the whole reproduction report (Markdown + HTML)
    asae sync-mongo --url mongodb://host/db results/
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from validation import ConfigError

COMMANDS = {
    "table1": "Table 1: final test win rate per map x algorithm, ours beside the paper's",
    "curves": "learning curves (mean and 95% CI band over seeds), one panel per task",
    "ablation-m": "Fig. 9: ASAE by number of joint-action samples (learner.m)",
    "ablation-clip": "Fig. 11: ASAE by clip range (learner.clip)",
    "capture-rate": "Fig. 8: predators' capture rate per algorithm and N",
    "competitive": "Fig. 7: per-team returns of ASAE-vs-COMA predator-prey runs",
    "aggregate": "rliable IQM / mean / median / optimality gap and performance profiles over SMAC maps",
    "claims": "a verdict per claim of the paper (results/paper/claims.toml)",
    "all": "every table and figure and the claims on one page (index.md + index.html)",
}
PRINT_ONLY = ("table1", "claims")  # they write files only when given --out


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asae report", description="Regenerate the paper's tables and figures from runs.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="commands:\n" + "\n".join(f"  {k:<14} {v}" for k, v in COMMANDS.items()))
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="what to produce (listed below)")
    p.add_argument("--runs", default="results", help="a directory searched recursively for Sacred runs, "
                   "or mongodb://host:27017/db (default: results/)")
    p.add_argument("--db", default=None, help="MongoDB database name (overrides the URL's)")
    p.add_argument("--out", default=None, help="output directory (default: report/; table1 and claims print only)")
    p.add_argument("--preset", default=None, help="only runs of this preset: a `preset`/`tags` entry in their "
                   "config, else by config: table1 (smac), spread, predator_prey, competitive, ablation_m, "
                   "ablation_clip, appendix")
    p.add_argument("--metric", default=None, help="metric to plot or tabulate (default: the task's test win rate, "
                   "else test return)")
    p.add_argument("--last", type=int, default=None, help="a run's final value is the mean of its last K test "
                   "evaluations, in tables, figures, aggregates and claims (default 3)")
    p.add_argument("--baselines", default=None, help="directory of scripted-baseline records (default "
                   "results/baselines/; `asae baselines` writes them)")
    p.add_argument("--format", default="png,svg", help="figure formats (default png,svg)")
    p.add_argument("--paper", default=None, help="directory of the paper's reference data (default results/paper/)")
    p.add_argument("--any-settings", action="store_true", help="also use runs with other hyper-parameters than "
                   "the paper's (ASAE m != 10 or clip != 0.1) outside the ablations")
    p.add_argument("--all-runs", action="store_true", help="keep every Sacred run of a resumed run_key "
                   "(default: the latest COMPLETED one)")
    p.add_argument("--running", action="store_true", help="also use runs still RUNNING, e.g. to watch a sweep's "
                   "curves (default: skipped and listed, their last evaluation is not final)")
    return p


def check_out_dir(out: Path) -> None:
    """The --out directory, checked before any run is read: it, or the nearest part of it that exists,
    must be a writable directory (a file of that name is never replaced)."""
    path = str(out)
    existing = next(p for p in (out, *out.parents) if p.exists() or p.is_symlink())
    if not existing.is_dir():
        what = "is not a directory" if existing == out else f"cannot be created: {str(existing)!r} is not a directory"
        raise ConfigError(f"--out {path!r} {what}; name a directory for the output (it is created if missing)")
    from experiments.files import unwritable_dir

    why = unwritable_dir(existing)
    if not os.access(existing, os.W_OK | os.X_OK) or why is not None:
        raise ConfigError(f"--out {path!r}: the directory {str(existing)!r} is not writable"
                          + (f" ({why.split(' (', 1)[1]}" if why and " (" in why else ""))


def report_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from analysis.stats import LAST_K

    args.last = LAST_K if args.last is None else args.last
    if args.last < 1:
        raise ConfigError(f"--last={args.last} must be at least 1")
    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    bad = sorted(set(formats) - {"png", "svg", "pdf"})
    if bad or not formats:
        raise ConfigError(f"--format {args.format!r} is not valid; use png, svg and/or pdf")

    from analysis.loaders import load_runs
    from analysis.paper import load_paper
    from analysis.report import ABLATION_OF, preset_name, require_runs, select_preset

    out = Path(args.out or "report")
    if args.out or args.command not in PRINT_ONLY:
        check_out_dir(out)
    paper = load_paper(args.paper)
    source = args.runs
    if not source.startswith(("mongodb://", "mongodb+srv://")) and not Path(source).exists():
        raise ConfigError(f"runs directory {source!r} does not exist; train some with `asae train` or pass --runs DIR")
    frame = load_runs(source, latest_only=not args.all_runs, progress=True, db_name=args.db,
                      skip_running=not args.running)
    for where, why in frame.attrs.get("skipped") or []:
        _log(f"skipped {where}: {why}")
    for where, why in frame.attrs.get("flagged") or []:
        _log(f"flagged {where}: {why}")
    require_runs(frame, source)
    _log(f"loaded {frame['run_id'].nunique()} run(s) from {source} in {frame.attrs['load_seconds']:.1f}s")
    frame = select_preset(frame, args.preset)
    ablation = args.command in ("ablation-m", "ablation-clip") or preset_name(args.preset) in ABLATION_OF
    if not (ablation or args.command == "all" or args.any_settings):
        frame = paper.paper_settings(frame)
        if frame.empty:
            raise ConfigError("no runs with the paper's hyper-parameters (results/paper/settings.csv); "
                              "pass --any-settings to use the others")
    return HANDLERS[args.command](frame, paper, args, out, formats)


# ----------------------------------------------------------------------------- one handler per command

def _baselines(args, frame):
    """The scripted-baseline records (--baselines, default results/baselines), those of frame's envs."""
    from analysis.baselines import for_runs, load_baselines

    if args.baselines is not None and not Path(args.baselines).is_dir():
        raise ConfigError(f"--baselines {args.baselines!r} is not a directory of baseline records")
    records = load_baselines(args.baselines)
    return records if frame is None else for_runs(records, frame)


def _primary(frame):
    """One setting per task and algorithm; what is left out is said on stderr, one line each."""
    from analysis.loaders import primary_settings

    kept, notes = primary_settings(frame)
    for line in notes:
        _log(f"not pooled: {line}")
    return kept


def _table1(frame, paper, args, out, formats) -> int:
    from analysis.paper import WIN_RATE
    from analysis.report import table1_outputs, write_table

    metric = args.metric or WIN_RATE
    cells, display = table1_outputs(frame, paper, metric=metric, last=args.last, baselines=_baselines(args, frame))
    if cells["mean"].notna().sum() == 0:
        envs = sorted({str(e) for e in frame["env"].dropna().unique()})
        raise ConfigError(f"no run logs {metric} on a SMAC-like map (runs found: {', '.join(envs) or 'none'})")
    from analysis.render import markdown_table

    print(markdown_table(display))
    if args.out:
        for path in write_table(display, out, "table1", "Test win rates: ours beside the paper's Table 1", cells=cells):
            _log(f"wrote {path}")
    return 0


def _figure(fig, out: Path, stem: str, formats) -> None:
    from analysis.figures import save

    for path in save(fig, out, stem, formats):
        print(path)


def _print_table(df) -> None:
    from analysis.render import markdown_table

    print(markdown_table(df))


def _curves(frame, paper, args, out, formats) -> int:
    from analysis import figures
    from analysis.report import ABLATION_OF, ablation_frame, preset_name

    title = f"runs of preset {args.preset}" if args.preset else ""
    param = ABLATION_OF.get(preset_name(args.preset))
    if param:  # an ablation preset: one line per value of its parameter
        fig = figures.ablation(ablation_frame(frame, param, paper), param, metric=args.metric, title=title,
                               last=args.last)
    else:
        fig = figures.curves(_primary(frame), metric=args.metric, paper=paper, title=title, last=args.last)
    _figure(fig, out, f"curves-{args.preset}" if args.preset else "curves", formats)
    return 0


def _ablation(param: str):
    def handler(frame, paper, args, out, formats) -> int:
        from analysis import figures, tables
        from analysis.report import ablation_frame, fmt_summary

        frame = ablation_frame(frame, param, paper)
        _figure(figures.ablation(frame, param, metric=args.metric, last=args.last), out, f"ablation-{param}", formats)
        _print_table(fmt_summary(tables.param_table(frame, param, metric=args.metric, last=args.last),
                                 ["task", "metric", param]))
        return 0

    return handler


def _capture(frame, paper, args, out, formats) -> int:
    from analysis import figures, tables
    from analysis.report import fmt_summary

    table = tables.capture_table(frame, paper, last=args.last)
    _figure(figures.capture_bars(table), out, "capture-rate", formats)
    _print_table(fmt_summary(table, ["N", "setting"]))
    return 0


def _competitive(frame, paper, args, out, formats) -> int:
    from analysis import figures, tables
    from analysis.report import fmt_summary

    metric = args.metric or "test_return_mean"
    table = tables.competitive_table(frame, paper, metric=metric, last=args.last)
    _figure(figures.competitive(tables.competitive_runs(frame), paper, metric=metric), out, "competitive", formats)
    _print_table(fmt_summary(table, ["N", "setting", "team_label"]))
    return 0


def _aggregate(frame, paper, args, out, formats) -> int:
    from analysis import figures
    from analysis.paper import WIN_RATE
    from analysis.report import _aggregate_display, _profile_figure, aggregate_outputs, scripted_maps

    frame = _primary(frame)
    won = scripted_maps(paper, _baselines(args, frame))
    for map_name, why in sorted(won.items()):
        _log(f"left out of the aggregates: {map_name} ({why})")
    table = aggregate_outputs(frame, metric=args.metric or WIN_RATE, last=args.last, exclude=list(won))[0]
    _figure(figures.aggregates(table, paper), out, "aggregate", formats)
    _figure(_profile_figure(frame, paper, args.last, list(won)), out, "performance-profile", formats)
    _print_table(_aggregate_display(table, paper))
    return 0


def _claims(frame, paper, args, out, formats) -> int:
    from analysis.claims import evaluate

    verdicts = evaluate(frame, paper, last=args.last, baselines=_baselines(args, frame))
    _print_table(verdicts[["id", "paper", "ours", "verdict", "why"]])
    if args.out:
        from analysis.report import write_table

        for path in write_table(verdicts, out, "claims", "Claims"):
            _log(f"wrote {path}")
    return 0


def _all(frame, paper, args, out, formats) -> int:
    from analysis.report import build_report

    _log(f"writing the report to {out}/")
    for path in build_report(frame, paper, out, args.runs, formats=formats, last=args.last,
                             any_settings=args.any_settings, log=_log, baselines=_baselines(args, None)):
        print(path)
    return 0


HANDLERS = {"table1": _table1, "curves": _curves, "ablation-m": _ablation("m"), "ablation-clip": _ablation("clip"),
            "capture-rate": _capture, "competitive": _competitive, "aggregate": _aggregate, "claims": _claims,
            "all": _all}


# ----------------------------------------------------------------------------- sync-mongo

def sync_mongo_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="asae sync-mongo",
                                description="Copy Sacred file-storage runs into MongoDB (Sacred's schema) for "
                                            "Omniboard. Safe to repeat: runs already there are updated, not duplicated.")
    p.add_argument("directory", nargs="?", default="results", help="directory searched recursively for runs "
                   "(default: results/)")
    p.add_argument("--url", default=os.environ.get("ASAE_MONGO_URL"),
                   help="mongodb://host:27017/db or host:27017:db (default: $ASAE_MONGO_URL)")
    p.add_argument("--db", default=None, help="database name (overrides the URL's; default sacred)")
    args = p.parse_args(argv)
    if not Path(args.directory).is_dir():
        raise ConfigError(f"runs directory {args.directory!r} does not exist")
    from analysis.mongo import open_database, sync_runs

    db, name = open_database(args.url, args.db)
    result = sync_runs(args.directory, db, progress=True)
    for where, why in result.skipped or []:
        _log(f"skipped {where}: {why}")
    if result.inserted + result.updated == 0:
        raise ConfigError(f"no readable runs under {args.directory}"
                          + (f" ({len(result.skipped)} skipped)" if result.skipped else ""))
    print(f"synced {result.inserted + result.updated} run(s) into MongoDB database {name!r}: {result.inserted} new, "
          f"{result.updated} updated, {result.metrics} metric series")
    return 0
