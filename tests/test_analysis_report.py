"""What the report adds around the numbers: each run's code version (its own record or one recovered
beside the runs), the scripted baselines beside Table 1 and out of the aggregates, the learners'
diagnostics in one line each, and figures whose bands are the tables' intervals and whose legends count
the seeds of each panel."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_analysis_support import make_experiment, plateau, run

from analysis import figures, tables
from analysis.baselines import for_runs, load_baselines
from analysis.diagnostics import diagnostics_table, summary_line
from analysis.loaders import code_versions, load_runs
from analysis.paper import load_paper
from analysis.report import aggregate_outputs, scripted_maps, table1_outputs

DATA = Path(__file__).parent / "data" / "baselines"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


@pytest.fixture(scope="module")
def paper():
    return load_paper()


def smax_runs(root: Path, specs, info=None):
    from sacred.observers import FileStorageObserver

    ex, obs = make_experiment(), FileStorageObserver(str(root))

    def record(provenance):
        return lambda r: r.info.update(provenance=provenance)

    for algo, map_name, seed, final in specs:
        prov = (info or {}).get((algo, map_name, seed))
        run(ex, [obs], during=record(prov) if prov else None, algo=algo, seed=seed,
            env={"name": "smax", "map_name": map_name}, run_key=f"{algo}-{map_name}-{seed}",
            metrics={"test_battle_won_mean": plateau(final)})
    return root


def test_code_versions_come_from_the_runs_record_or_a_recovered_file(tmp_path, paper):
    own = {"source": "git", "commit": COMMIT_A, "dirty": True, "diff_sha1": "c" * 40, "packages": {}}
    root = smax_runs(tmp_path / "runs", [("asae", "3m", 0, 0.5), ("asae", "3m", 1, 0.6), ("asae", "3m", 2, 0.7)],
                     info={("asae", "3m", 0): own})
    recovered = {"source": "recovered", "commit": None, "dirty": None, "diff_sha1": None,
                 "recovered": {"method": "start time vs git log", "commit": COMMIT_B, "confidence": "HEAD at start"}}
    (tmp_path / "provenance.json").write_text(json.dumps({"command": "test", "runs": {"runs/2": recovered}}))
    frame = load_runs(root)
    prov = frame.attrs["provenance"]
    assert prov["file:1"]["commit"] == COMMIT_A and prov["file:2"]["source"] == "recovered"
    assert prov["file:3"] is None
    # Commits this checkout does not know count as themselves.
    assert code_versions(prov, ["file:1"]) == "1 code version (aaaaaaa), 1 run from a modified tree"
    assert code_versions(prov, ["file:3"]) == "unknown"
    text = code_versions(prov, ["file:1", "file:2", "file:3"])
    assert text == "2 code versions (aaaaaaa, bbbbbbb), 1 recovered from start times, 1 run from a modified tree, " \
                   "1 run unknown"
    _, display = table1_outputs(frame, paper)
    row = display.set_index("map").loc["3m"]
    assert "code: 2 code versions (" in row["note"] and "1 run unknown" in row["note"]


def test_commits_that_change_only_results_are_one_code_version(tmp_path):
    """A sweep commits each finished run: runs that start at those commits ran the same code."""
    import subprocess

    from analysis.loaders import code_commit

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    commits = []
    for path in ("algos/a.py", "results/r1.json", "results/r2.json", "algos/a.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(str(len(commits)))
        git("add", "-A")
        git("commit", "-qm", path)
        commits.append(git("rev-parse", "HEAD"))
    assert [code_commit(c, tmp_path) for c in commits] == [commits[0], commits[0], commits[0], commits[3]]
    prov = {f"r{i}": {"source": "recovered", "commit": c} for i, c in enumerate(commits)}
    assert code_versions(prov, ["r0", "r1", "r2"], repo=tmp_path) == \
        f"1 code version ({commits[0][:7]}), recovered from start times"
    assert code_versions(prov, list(prov), repo=tmp_path).startswith("2 code versions (")


def test_scripted_baselines_beside_table1_and_out_of_the_aggregates(tmp_path, paper):
    root = smax_runs(tmp_path, [(a, m, s, f + 0.01 * s) for m in ("3m", "2m_vs_1z")
                                for a, f in (("asae", 0.6), ("coma", 0.5)) for s in range(3)])
    frame = load_runs(root)
    records = load_baselines(DATA)
    assert set(records["label"]) == {"uniform random", "focus fire"}
    mine = for_runs(records, frame)
    assert len(mine) == 4
    other = frame.assign(**{"env.map_name": "8m"})
    assert for_runs(records, other).empty  # a baseline of another map never applies
    _, display = table1_outputs(frame, paper, baselines=mine)
    mpe = mine.iloc[:1].assign(map=None, env="mpe_spread", label="nearest landmark", win_rate=float("nan"))
    _, display = table1_outputs(frame, paper, baselines=pd.concat([mine, mpe], ignore_index=True))
    assert "nearest landmark (scripted)" not in display.columns  # a spread policy has no win rate on a map
    row = display.set_index("map").loc["3m"]
    assert row["focus fire (scripted)"] == "0.49 [0.46, 0.52]" and row["uniform random (scripted)"] == "0.00 [0.00, 0.00]"
    won = scripted_maps(paper, mine)
    assert list(won) == ["2m_vs_1z"] and "focus fire" in won["2m_vs_1z"]
    table, matrices, tasks = aggregate_outputs(frame, exclude=list(won))
    assert tasks == ["smax 3m"] and set(table["tasks"]) == {1}


def test_diagnostics_say_whether_the_policy_and_the_clip_bound_moved(tmp_path):
    from sacred.observers import FileStorageObserver

    ex, obs = make_experiment(), FileStorageObserver(str(tmp_path))
    steps = [k * 10_000 for k in range(11)]
    for seed in range(3):
        run(ex, [obs], algo="asae", seed=seed, run_key=f"d{seed}",
            metrics={"test_battle_won_mean": plateau(0.5),
                     "entropy_softmax": [[s, 1.4 if s < 40_000 else 0.01] for s in steps],
                     "clip_frac": [[s, 0.3 if s < 20_000 else (0.01 if seed else 0.0)] for s in steps],
                     "kl": [[s, 1e-6] for s in steps]})
    frame = load_runs(tmp_path)
    rows = frame[frame["team_algo"] == "asae"]
    assert summary_line(rows, "entropy_softmax") == "< 0.05 nats from 40k steps on (median) in 3 of 3 seeds; " \
                                                    "median 0.01 / 0.01 / 0.01"
    clip = summary_line(rows, "clip_frac")
    assert clip.startswith("bound binds in 0.7% of samples (0.0% / 1.0% / 1.0%); exactly 0 in 9 of 27 logs")
    table = diagnostics_table(frame)
    assert len(table) == 1 and table.iloc[0]["asynchrony gap"] == "—"
    assert table.iloc[0]["KL per update"] == "median 1e-06 / 1e-06 / 1e-06"


def test_curves_show_seeds_the_tables_interval_and_reference_lines(tmp_path, paper):
    root = smax_runs(tmp_path, [("asae", "3m", s, f) for s, f in enumerate((0.4, 0.6, 0.8))]
                     + [("coma", "8m", s, 0.5) for s in range(2)])
    frame = load_runs(root)
    fig = figures.curves(frame, paper=paper, lines=lambda env, m, n, team: [(0.49, "focus fire", "0.5", ":")])
    ax3m, ax8m = fig.axes
    # One 0-1 scale for every panel (the axis runs on above 1 only to hold the legend).
    assert ax3m.get_title() == "smax 3m" and ax3m.get_ylim() == ax8m.get_ylim()
    assert ax3m.get_ylim()[0] == -0.03 and list(ax3m.get_yticks()) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    labels = [t.get_text() for t in ax3m.get_legend().get_texts()]
    assert labels == ["ASAE (3 seeds)", "focus fire"]  # seeds of this panel, not of the figure
    assert [t.get_text() for t in ax8m.get_legend().get_texts()] == ["COMA (2 seeds)", "focus fire"]
    # The final marker's error bar is Table 1's interval.
    cell = tables.table1_cells(frame, paper).dropna(subset=["mean"]).set_index(["map", "algo"]).loc[("3m", "asae")]
    caps = [line for line in ax3m.lines if line.get_marker() == "o"]
    assert caps and caps[0].get_ydata()[0] == pytest.approx(cell["mean"])
    bars = [c for c in ax3m.collections if c.__class__.__name__ == "LineCollection"]
    segment = bars[-1].get_segments()[0]
    assert (segment[0][1], segment[1][1]) == (pytest.approx(cell["ci_low"]), pytest.approx(cell["ci_high"]))
    thin = [line for line in ax3m.lines if line.get_linewidth() < 1]
    assert len(thin) == 3  # one per seed


def test_iterations_axis_marks_the_papers_point(tmp_path, paper):
    from sacred.observers import FileStorageObserver

    ex, obs = make_experiment(), FileStorageObserver(str(tmp_path))
    for seed in range(2):
        run(ex, [obs], algo="asae", seed=seed, n_envs=4, run_key=f"s{seed}",
            env={"name": "mpe_spread", "n_agents": 3, "episode_limit": 150},
            metrics={"test_return_mean": [[k * 24_000, -3000.0 if k == 0 else -100.0 - k] for k in range(41)]})
    frame = load_runs(tmp_path)
    from analysis.claims import steps_per_iteration

    fig = figures.curves(frame, paper=paper, mark=800, zoom=True,
                         per_iteration=lambda rows: steps_per_iteration(rows, rows["run_id"].unique()))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "iterations (600 env steps each)"
    assert any(len(line.get_xdata()) == 2 and np.allclose(line.get_xdata(), [800, 800]) for line in ax.lines)
    low, high = ax.get_ylim()
    assert low > -200 and high < -90  # the first evaluation (-3000) does not set the scale


def test_every_shipped_preset_reaches_a_report_section():
    """A preset's runs carry its name; the report's sections pick runs by name (SELECTORS, ALIASES). A preset
    left out of ALIASES has its runs dropped from every figure without a word (repro_table1_3m's 3M curves
    were, until this test)."""
    from pathlib import Path

    from analysis.report import SELECTORS, preset_name

    presets = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "experiments" / "presets").glob("*.toml"))
    assert presets
    unmapped = [p for p in presets if preset_name(p) not in SELECTORS]
    assert unmapped == [], f"presets no report section selects: {unmapped} (add them to analysis.report.ALIASES)"
