"""The paper's figures as functions of the tidy frame. Learning curves show each seed as a thin line and
the mean over seeds with the tables' 95% Student-t interval as a band, ending in the final value (the
mean of each seed's last k evaluations) with its interval; x = env steps, or paper iterations where the
paper counts in iterations. Each function returns a matplotlib Figure; `save` writes it as PNG and/or SVG."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from validation import ConfigError  # noqa: E402

from analysis.paper import Paper  # noqa: E402
from analysis.render import replace_whole  # noqa: E402
from analysis.stats import AGGREGATES, LAST_K, curve_grid, final_values, t_interval  # noqa: E402
from analysis.tables import (TASK_TEAM, ablation_rows, learning_rows, primary_metric, rate_bounds,  # noqa: E402
                             task_team_label)

PALETTE = "colorblind"


def _palette(values: Sequence, paper: Paper | None) -> dict:
    ordered = list(paper.algo_order) if paper else []
    ordered += sorted(str(v) for v in values if str(v) not in ordered)
    colors = sns.color_palette(PALETTE, max(len(ordered), 1))
    return {a: colors[i % len(colors)] for i, a in enumerate(ordered)}


def _grid_axes(n: int, width: float = 4.2, height: float = 3.2, ncols: int = 3):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _steps_axis(ax) -> None:
    ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    ax.set_xlabel("env steps")
    ax.grid(alpha=0.3)


def metric_label(metric: str) -> str:
    return {"test_battle_won_mean": "test win rate", "test_return_mean": "test return",
            "test_capture_rate": "capture rate"}.get(metric, metric)


def band(grid: pd.DataFrame, hue: str) -> pd.DataFrame:
    """Mean over seeds and the 95% Student-t interval at each x, per ``hue`` value: the same interval as
    the tables' (stats.t_interval), not a bootstrap over 3 seeds."""
    rows = []
    for (h, x), g in grid.groupby([hue, "step"], observed=True, sort=True):
        mean, low, high = t_interval(g["value"].to_numpy(float))
        rows.append({hue: h, "step": x, "mean": mean, "low": low, "high": high, "n": len(g)})
    return pd.DataFrame(rows, columns=[hue, "step", "mean", "low", "high", "n"])


def curves(frame: pd.DataFrame, metric: str | None = None, hue: str = "team_algo", paper: Paper | None = None,
           title: str = "", points: int = 100, last: int = LAST_K, lines: Callable | None = None,
           per_iteration: Callable | None = None, mark: float | None = None, rates: bool | None = None,
           zoom: bool = False) -> plt.Figure:
    """Learning curves, one panel per task (env, map, N), one colour per ``hue`` value: each seed as a
    thin line, the mean over seeds with its 95% t interval as a band, and at the right end the final
    value (mean of each seed's last ``last`` evaluations) with the tables' interval. Legends count the
    seeds in each panel.

    ``lines(env, map, N, team)`` gives horizontal reference lines for a panel: (y, label, colour, style).
    ``per_iteration(rows)`` gives env steps per paper iteration: the x axis is then in iterations, with
    ``mark`` (e.g. the paper's 800) drawn. ``rates`` puts every panel on one 0-1 scale (default: for
    win and capture rates). ``zoom`` sets each panel's y range from the curves after the warm-up (the
    first evaluations of an untrained policy can be 30x worse and would flatten everything else)."""
    rows = learning_rows(frame)
    tasks = rows[TASK_TEAM].drop_duplicates().sort_values(TASK_TEAM, na_position="first")
    panels = []
    for env, map_name, n, team in tasks.itertuples(index=False):
        task = rows[(rows["env"] == env) & _eq(rows["map"], map_name) & _eq(rows["N"], n) & (rows["team"] == team)]
        name = metric or primary_metric(task)
        data = task[task["metric"] == name]
        if not data.empty:
            panels.append(((env, map_name, n, team), task_team_label(env, map_name, n, team), name, data))
    if not panels:
        raise ConfigError(f"no learning curve of {metric or 'a test metric'} in the selected runs")
    if paper is not None:  # SMAC maps in the paper's order
        order = {m: i for i, m in enumerate(paper.map_order)}
        panels.sort(key=lambda p: (str(p[0][0]), order.get(p[0][1], len(order))))
    hue_values = sorted({str(v) for *_, d in panels for v in d[hue].dropna().unique()}, key=_natural)
    palette = _palette(hue_values, paper) if hue in ("team_algo", "algo") else \
        dict(zip(hue_values, sns.color_palette("viridis", len(hue_values))))
    if rates is None:
        rates = all(rate_bounds(name) is not None for _, _, name, _ in panels)
    fig, axes = _grid_axes(len(panels), height=3.4) if len(panels) > 1 else _grid_axes(1, width=6.4, height=4.2)
    alpha = 0.18 if len(hue_values) <= 3 else 0.08  # many bands: lighter, so each stays visible
    for ax, (key, label, name, data) in zip(axes, panels):
        data = data.assign(**{hue: data[hue].astype(str)})
        scale = per_iteration(data) if per_iteration is not None else math.nan
        xdiv = scale if np.isfinite(scale) and scale > 0 else 1.0
        grid = curve_grid(data, points=points)
        grid[hue] = grid[hue].astype(str)
        finals = final_values(data, name, last=last, by=[hue])
        present = [h for h in hue_values if h in set(grid[hue])]
        late_values = []
        for k, h in enumerate(present):
            color = palette.get(h)
            sub = grid[grid[hue] == h]
            for _, seed in sub.groupby("run_id", observed=True):
                seed = seed.sort_values("step")
                ax.plot(seed["step"] / xdiv, seed["value"], color=color, lw=0.6, alpha=0.35)
            b = band(sub, hue)
            if rate_bounds(name) is not None:
                b[["low", "high"]] = b[["low", "high"]].clip(0.0, 1.0)
            n_seeds = sub["run_id"].nunique()
            name_h = paper.label(h) if paper is not None and hue in ("team_algo", "algo") else f"{hue}={h}"
            ax.plot(b["step"] / xdiv, b["mean"], color=color, lw=1.8,
                    label=f"{name_h} ({n_seeds} seed{'s' if n_seeds != 1 else ''})")
            ax.fill_between(b["step"] / xdiv, b["low"], b["high"], color=color, alpha=alpha, lw=0)
            f = finals[finals[hue].astype(str) == h]
            if len(f):
                mean, low, high = t_interval(f["final"].to_numpy(float))
                bounds = rate_bounds(name)
                if bounds and np.isfinite(low):
                    low, high = max(low, bounds[0]), min(high, bounds[1])
                x_end = float(b["step"].max()) / xdiv * (1.02 + 0.015 * k)  # side by side, one per line
                err = None if not np.isfinite(low) else [[mean - low], [high - mean]]
                ax.errorbar([x_end], [mean], yerr=err, fmt="o", ms=3.5, color=color, capsize=2.5, lw=1.2)
            warm = sub[sub["step"] >= 0.2 * sub["step"].max()]["value"].to_numpy(float)
            late_values.append(warm[np.isfinite(warm)])
        refs = lines(*key) if lines is not None else []
        if zoom and not rates and late_values and np.concatenate(late_values).size:
            v = np.concatenate(late_values)
            span = float(np.max(v) - np.min(v)) or 1.0
            refs = [r for r in refs if np.min(v) - span <= r[0] <= np.max(v) + span]  # near enough to read
            late_values.append(np.array([r[0] for r in refs]))
        for y, text, color, style in refs:
            ax.axhline(y, color=color, ls=style, lw=1.0, alpha=0.9, label=text)
        if mark is not None and np.isfinite(scale):
            ax.axvline(mark, color="tab:red", ls="--", lw=1.0, alpha=0.8, label=f"paper: {mark:g} iterations")
        ax.set_title(label, fontsize=10)
        ax.set_ylabel(metric_label(name))
        if rates:  # one 0-1 scale; the space above 1 holds the legend, clear of the curves
            ax.set_ylim(-0.03, 1.03 if lines is None else 1.6)
            ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        elif zoom and late_values:
            v = np.concatenate(late_values)
            if v.size:
                lo, hi = float(np.min(v)), float(np.max(v))
                pad = 0.08 * (hi - lo or abs(hi) or 1.0)
                ax.set_ylim(lo - pad, hi + pad)
        if np.isfinite(scale):
            ax.set_xlabel(f"iterations ({scale:g} env steps each)")
            ax.grid(alpha=0.3)
        else:
            _steps_axis(ax)
        if rates and lines is not None:
            ax.legend(fontsize=5.8, loc="upper center", ncol=2, framealpha=0.9, columnspacing=0.8)
        else:
            ax.legend(fontsize=6.5, loc="best", framealpha=0.8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _eq(series: pd.Series, value) -> pd.Series:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return series.isna()
    return (series == value).fillna(False).astype(bool)


def _natural(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def ablation(frame: pd.DataFrame, param: str, algo: str = "asae", metric: str | None = None,
             title: str = "", **kwargs) -> plt.Figure:
    """Figs 9 / 11: ``algo``'s curves by the value of ``param`` (e.g. "m", "clip"), on the tasks
    where that parameter varies (``kwargs`` go to curves)."""
    rows = ablation_rows(frame, param, algo)
    rows = rows.assign(**{param: rows[param].astype(str)})
    return curves(rows, metric=metric, hue=param, title=title, **kwargs)


def diagnostics(frame: pd.DataFrame, paper: Paper | None = None, hue: str = "team_algo",
                metrics: Sequence[str] | None = None) -> plt.Figure:
    """What the learners did over training: a row per diagnostic metric (softmax entropy, KL per update,
    clip fraction, asynchrony gap), a column per task; each seed a thin line, the median over seeds bold.
    KL and the asynchrony gap span decades: log scale."""
    from analysis.diagnostics import DETERMINISTIC, DIAGNOSTICS, LABELS

    rows = learning_rows(frame[frame["metric"].isin(metrics or DIAGNOSTICS)])
    if rows.empty:
        raise ConfigError("no run logs entropy_softmax, kl, clip_frac or async_gap")
    names = [m for m in (metrics or DIAGNOSTICS) if m in set(rows["metric"].astype(str))]
    tasks = rows[TASK_TEAM].drop_duplicates().sort_values(TASK_TEAM, na_position="first")
    tasks = list(tasks.itertuples(index=False))
    if paper is not None:  # SMAC maps in the paper's order
        order = {m: i for i, m in enumerate(paper.map_order)}
        tasks.sort(key=lambda t: (str(t[0]), order.get(t[1], len(order))))
    hue_values = sorted({str(v) for v in rows[hue].dropna().unique()}, key=_natural)
    palette = _palette(hue_values, paper) if hue in ("team_algo", "algo") else \
        dict(zip(hue_values, sns.color_palette("viridis", len(hue_values))))
    fig, axes = plt.subplots(len(names), len(tasks), figsize=(3.3 * len(tasks), 2.4 * len(names)), squeeze=False)
    for j, (env, map_name, n, team) in enumerate(tasks):
        task = rows[(rows["env"] == env) & _eq(rows["map"], map_name) & _eq(rows["N"], n) & (rows["team"] == team)]
        for i, name in enumerate(names):
            ax = axes[i][j]
            data = task[task["metric"] == name]
            for h in hue_values:
                sub = data[data[hue].astype(str) == h]
                if sub.empty:
                    continue
                color = palette.get(h)
                for _, seed in sub.groupby("run_id", observed=True):
                    seed = seed.sort_values("step")
                    y = seed["value"].to_numpy(float)
                    if name in ("kl", "async_gap"):
                        y = np.where(y > 0, y, np.nan)
                    ax.plot(seed["step"], y, color=color, lw=0.6, alpha=0.45)
                grid = curve_grid(sub, points=60)
                med = grid.groupby("step")["value"].median()
                n_seeds = sub["run_id"].nunique()
                label = paper.label(h) if paper is not None and hue in ("team_algo", "algo") else f"{hue}={h}"
                ax.plot(med.index, med.where(med > 0) if name in ("kl", "async_gap") else med, color=color, lw=1.6,
                        label=f"{label} ({n_seeds} seeds)")
            if name in ("kl", "async_gap"):
                ax.set_yscale("log")
            if name == "entropy_softmax":
                ax.axhline(DETERMINISTIC, color="0.4", ls=":", lw=0.9)
            if i == 0:
                ax.set_title(task_team_label(env, map_name, n, team), fontsize=9)
            if j == 0:
                ax.set_ylabel(LABELS.get(name, name), fontsize=8)
            ax.tick_params(labelsize=7)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
            ax.grid(alpha=0.3)
            if i == 0 and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6.5)
    for ax in axes[-1]:
        ax.set_xlabel("env steps", fontsize=8)
    fig.tight_layout()
    return fig


def capture_bars(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """Fig 8: final capture rate per N and setting, bars with 95% t intervals over seeds."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    settings = sorted(table["setting"].unique())
    ns = sorted(table["N"].dropna().unique())
    width = 0.8 / max(len(settings), 1)
    colors = sns.color_palette(PALETTE, max(len(settings), 1))
    for k, setting in enumerate(settings):
        sub = table[table["setting"] == setting].set_index("N")
        x = np.arange(len(ns)) + (k - (len(settings) - 1) / 2) * width
        means = [sub["mean"].get(n, np.nan) for n in ns]
        low = [sub["ci_low"].get(n, np.nan) for n in ns]
        high = [sub["ci_high"].get(n, np.nan) for n in ns]
        err = np.array([np.subtract(means, low), np.subtract(high, means)])  # NaN (one seed): no bar
        ax.bar(x, means, width, yerr=err, capsize=3, label=setting, color=colors[k])
        for xi, mean, n in zip(x, means, [sub["n_seeds"].get(n, 0) for n in ns]):
            if np.isfinite(mean):
                ax.annotate(f"n={n}", (xi, mean), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(ns)), [f"N={int(n)}" for n in ns])
    ax.set_ylabel("capture rate")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def competitive(rows: pd.DataFrame, paper: Paper | None = None, metric: str = "test_return_mean",
                title: str = "", points: int = 100) -> plt.Figure:
    """Fig 7: per N and setting (who plays predator / prey), each team's return over training."""
    from analysis.tables import team_setting

    rows = rows[rows["metric"] == metric]
    if rows.empty:
        raise ConfigError(f"the competitive runs log no {metric}")
    setting = team_setting(rows, paper)
    rows = rows.assign(setting=rows["run_id"].map(setting).astype(str),
                       team_label=[f"{t} ({paper.label(str(a)) if paper else a})"
                                   for t, a in zip(rows["team"], rows["team_algo"])])
    panels = rows[["N", "setting"]].drop_duplicates().sort_values(["N", "setting"])
    fig, axes = _grid_axes(len(panels), ncols=2)
    for ax, (n, name) in zip(axes, panels.itertuples(index=False)):
        data = rows[_eq(rows["N"], n) & (rows["setting"] == name)]
        grid = curve_grid(data, points=points, group=["team"])
        colors = sns.color_palette(PALETTE, max(grid["team_label"].nunique(), 1))
        for color, (label, sub) in zip(colors, grid.groupby("team_label", sort=True)):
            b = band(sub, "team_label")  # the tables' t interval, as in curves()
            ax.plot(b["step"], b["mean"], color=color, lw=1.8, label=label)
            ax.fill_between(b["step"], b["low"], b["high"], color=color, alpha=0.18, lw=0)
        runs = data["run_id"].nunique()
        ax.set_title(f"N={n}: {name} ({runs} run{'s' if runs > 1 else ''})", fontsize=9)
        ax.set_ylabel(metric_label(metric))
        ax.legend(fontsize=8)
        _steps_axis(ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def aggregates(table: pd.DataFrame, paper: Paper | None = None, title: str = "") -> plt.Figure:
    """rliable-style interval plot: IQM, mean, median, optimality gap per algorithm."""
    from rliable import plot_utils

    algos = list(dict.fromkeys(table["algo"]))
    label = (lambda a: paper.label(a)) if paper else str
    rows = {a: table[table["algo"] == a].set_index("statistic").loc[list(AGGREGATES)] for a in algos}
    point = {label(a): r["value"].to_numpy() for a, r in rows.items()}
    interval = {label(a): r[["ci_low", "ci_high"]].to_numpy().T for a, r in rows.items()}
    colors = {label(a): c for a, c in _palette(algos, paper).items() if a in algos}
    fig, _ = plot_utils.plot_interval_estimates(point, interval, metric_names=list(AGGREGATES),
                                                algorithms=[label(a) for a in algos], colors=colors,
                                                xlabel="final win rate", subfigure_width=3.4, row_height=0.6,
                                                xlabel_y_coordinate=-0.35 - 0.1 / max(len(algos), 1))
    for ax in fig.axes:  # win rates and their optimality gap all live in [0, 1]
        ax.set_xlim(-0.02, 1.02)
        ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
    if title:
        fig.suptitle(title, y=1.08)
    return fig


def performance_profile(profiles: dict, cis: dict, taus: np.ndarray, paper: Paper | None = None,
                        title: str = "") -> plt.Figure:
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    colors = _palette(list(profiles), paper)
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, colors=colors, ax=ax,
                                         xlabel=r"win rate $\tau$", ylabel=r"fraction of runs > $\tau$")
    handles = [plt.Line2D([], [], color=colors[a], label=paper.label(a) if paper else a) for a in profiles]
    ax.legend(handles=handles, fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, directory: Path, stem: str, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        paths.append(replace_whole(directory / f"{stem}.{fmt}",
                                   lambda tmp: fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight")))
    plt.close(fig)
    return paths
