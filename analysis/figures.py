"""The paper's figures as functions of the tidy frame (seaborn; mean over seeds with a 95% bootstrap
CI band; x = env steps). Each returns a matplotlib Figure; `save` writes it as PNG and/or SVG."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from validation import ConfigError  # noqa: E402

from analysis.paper import Paper  # noqa: E402
from analysis.render import replace_whole  # noqa: E402
from analysis.stats import AGGREGATES, curve_grid  # noqa: E402
from analysis.tables import TASK_TEAM, ablation_rows, learning_rows, primary_metric, task_team_label  # noqa: E402

N_BOOT = 1000
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


def curves(frame: pd.DataFrame, metric: str | None = None, hue: str = "team_algo", paper: Paper | None = None,
           title: str = "", points: int = 100) -> plt.Figure:
    """Learning curves, one panel per task (env, map, N), one line per ``hue`` value."""
    rows = learning_rows(frame)
    tasks = rows[TASK_TEAM].drop_duplicates().sort_values(TASK_TEAM, na_position="first")
    panels = []
    for env, map_name, n, team in tasks.itertuples(index=False):
        task = rows[(rows["env"] == env) & _eq(rows["map"], map_name) & _eq(rows["N"], n) & (rows["team"] == team)]
        name = metric or primary_metric(task)
        data = task[task["metric"] == name]
        if not data.empty:
            panels.append((task_team_label(env, map_name, n, team), name, data))
    if not panels:
        raise ConfigError(f"no learning curve of {metric or 'a test metric'} in the selected runs")
    hue_values = sorted({str(v) for _, _, d in panels for v in d[hue].dropna().unique()}, key=_natural)
    palette = _palette(hue_values, paper) if hue in ("team_algo", "algo") else \
        dict(zip(hue_values, sns.color_palette("viridis", len(hue_values))))
    fig, axes = _grid_axes(len(panels))
    for ax, (label, name, data) in zip(axes, panels):
        grid = curve_grid(data, points=points)
        grid[hue] = grid[hue].astype(str)
        present = [h for h in hue_values if h in set(grid[hue])]
        sns.lineplot(data=grid, x="step", y="value", hue=hue, hue_order=present, palette=palette,
                     errorbar=("ci", 95), n_boot=N_BOOT, seed=0, ax=ax,
                     legend="brief" if ax is axes[0] else False)
        ax.set_title(label, fontsize=10)
        ax.set_ylabel(metric_label(name))
        _steps_axis(ax)
    counts = {}
    for _, _, data in panels:
        for h, n in data.assign(_h=data[hue].astype(str)).groupby("_h")["run_id"].nunique().items():
            counts[h] = counts.get(h, 0) + n
    _legend(fig, axes[0], hue, paper, counts)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _legend(fig, ax, hue: str, paper: Paper | None, counts: dict[str, int]) -> None:
    """Legend on the first panel, with each line's number of runs (all panels together)."""
    legend = ax.get_legend()
    if legend is None:
        return
    handles, labels = ax.get_legend_handles_labels()
    named = [paper.label(lb) if paper is not None and hue in ("team_algo", "algo") else lb for lb in labels]
    labels = [f"{name} ({counts.get(lb, 0)} run{'' if counts.get(lb, 0) == 1 else 's'})"
              for name, lb in zip(named, labels)]
    legend.remove()
    title = {"team_algo": "algorithm", "algo": "algorithm"}.get(hue, hue)
    ax.legend(handles, labels, title=title, fontsize=8, title_fontsize=8)


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
             title: str = "") -> plt.Figure:
    """Figs 9 / 11: ``algo``'s curves by the value of ``param`` (e.g. "m", "clip"), on the tasks
    where that parameter varies."""
    rows = ablation_rows(frame, param, algo)
    rows = rows.assign(**{param: rows[param].astype(str)})
    return curves(rows, metric=metric, hue=param, title=title)


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
        sns.lineplot(data=grid, x="step", y="value", hue="team_label", errorbar=("ci", 95), n_boot=N_BOOT,
                     seed=0, ax=ax, palette=PALETTE)
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
