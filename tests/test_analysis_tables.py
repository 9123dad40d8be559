"""Table 1, the other tables and the claim verdicts, from Sacred runs that log known values."""
from __future__ import annotations

import dataclasses
import math

import pytest
from scipy import stats
from test_analysis_support import curve, make_experiment, plateau, run

from analysis import tables
from analysis.claims import evaluate
from analysis.loaders import load_runs
from analysis.paper import load_paper


@pytest.fixture(scope="module")
def paper():
    return load_paper()


def sacred_runs(root, specs):
    """specs: (algo, map, seed, final win rate); each run logs a rising test win-rate curve."""
    from sacred.observers import FileStorageObserver

    ex = make_experiment()
    obs = FileStorageObserver(str(root))
    for algo, map_name, seed, final in specs:
        run(ex, [obs], algo=algo, seed=seed, env={"name": "smax", "map_name": map_name},
            run_key=f"{algo}-{map_name}-{seed}", metrics={"test_battle_won_mean": plateau(final)})
    return load_runs(root)


def half_width(n: int, sd: float) -> float:
    return stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)


def test_table1_cells_are_exact(tmp_path, paper):
    frame = sacred_runs(tmp_path, [("asae", "3m", 0, 1.0), ("asae", "3m", 1, 0.8),
                                   ("coma", "3m", 0, 0.5), ("coma", "3m", 1, 0.7), ("coma", "3m", 2, 0.6),
                                   ("asae", "8m", 0, 0.9)])
    cells = tables.table1_cells(frame, paper, last=1)
    ours = cells[cells["mean"].notna()].set_index(["map", "algo"])
    assert sorted(ours.index) == [("3m", "asae"), ("3m", "coma"), ("8m", "asae")]
    asae = ours.loc[("3m", "asae")]
    assert asae["env"] == "smax" and asae["n_seeds"] == 2 and asae["steps"] == 5000
    assert asae["mean"] == pytest.approx(0.9) and asae["paper"] == 1.0
    # 0.9 +- 12.7 * 0.1 leaves [0, 1]: a win rate's interval is clipped to it.
    assert (asae["ci_low"], asae["ci_high"]) == (0.0, 1.0)
    coma = ours.loc[("3m", "coma")]
    assert coma["mean"] == pytest.approx(0.6) and coma["paper"] == 0.81 and coma["n_seeds"] == 3
    assert coma["ci_low"] == pytest.approx(0.6 - half_width(3, 0.1))
    assert coma["ci_high"] == pytest.approx(0.6 + half_width(3, 0.1))
    one = ours.loc[("8m", "asae")]
    assert one["mean"] == pytest.approx(0.9) and one["n_seeds"] == 1 and math.isnan(one["ci_low"])
    # Every cell of the paper's Table 1 is there, run or not.
    assert len(cells) == 40 + 0 and cells["paper"].notna().sum() == 40
    assert cells.set_index(["map", "algo"]).loc[("MMM2", "asae"), "paper"] == 0.78

    display = tables.table1_display(cells, paper).set_index("map")
    assert display.loc["3m", "backend"] == "smax"
    assert display.loc["3m", "ASAE ours"] == "0.90 [0.00, 1.00] n=2 (1.00 / 0.80)"
    assert display.loc["3m", "ASAE paper"] == "1.00"
    assert display.loc["3m", "COMA ours"] == "0.60 [0.35, 0.85] n=3 (0.50 / 0.70 / 0.60)"
    assert display.loc["8m", "ASAE ours"] == "0.90 n=1"
    assert display.loc["3s5z", "ASAE ours"] == "—" and display.loc["3s5z", "ASAE paper"] == "0.95"
    assert display.loc["MMM2", "note"].startswith("not run here; needs real StarCraft II")
    assert "scripted policy" in display.loc["2m_vs_1z", "note"]


def test_confidence_intervals_shrink_with_more_seeds(tmp_path, paper):
    widths = []
    for n in (2, 4, 8):
        specs = [("coma", "3m", s, 0.5 if s % 2 else 0.7) for s in range(n)]
        cells = tables.table1_cells(sacred_runs(tmp_path / str(n), specs), paper, last=1)
        cell = cells[(cells["algo"] == "coma") & cells["mean"].notna()].iloc[0]
        assert cell["mean"] == pytest.approx(0.6) and cell["n_seeds"] == n
        widths.append(cell["ci_high"] - cell["ci_low"])
    assert widths[0] > widths[1] > widths[2] > 0


def test_last_k_averages_the_final_evaluations(tmp_path, paper):
    from sacred.observers import FileStorageObserver

    run(make_experiment(), [FileStorageObserver(str(tmp_path))], run_key="r",
        metrics={"test_battle_won_mean": curve(1.0)})  # 0, 0.25, 0.5, 0.75, 1.0
    frame = load_runs(tmp_path)
    final = {k: tables.table1_cells(frame, paper, last=k).dropna(subset=["mean"])["mean"].iloc[0] for k in (1, 2)}
    assert final == {1: pytest.approx(1.0), 2: pytest.approx((0.75 + 1.0) / 2)}
    # The default is the mean of the last three evaluations.
    assert tables.table1_cells(frame, paper).dropna(subset=["mean"])["mean"].iloc[0] == pytest.approx(0.75)


def with_claims(paper, *claims):
    return dataclasses.replace(paper, claims=list(claims))


def claim(**fields):
    return {"id": "c", "text": "t", "metric": "test_battle_won_mean", "tolerance": 0.1, **fields}


def test_claim_verdicts(tmp_path, paper):
    frame = sacred_runs(tmp_path, [("asae", "3m", 0, 1.0), ("asae", "3m", 1, 1.0), ("asae", "3m", 2, 0.95),
                                   ("coma", "3m", 0, 0.0), ("coma", "3m", 1, 0.05), ("coma", "3m", 2, 0.0),
                                   ("asae", "8m", 0, 0.9), ("asae", "8m", 1, 1.0), ("asae", "8m", 2, 0.95),
                                   ("coma", "8m", 0, 0.85), ("coma", "8m", 1, 1.0), ("coma", "8m", 2, 0.9)])
    small = {"budget": 5000, "budget_unit": "env_steps"}
    p = with_claims(paper,
                    claim(id="value-ok", kind="value", map="3m", algo="asae", paper=1.0, **small),
                    claim(id="value-bad", kind="value", map="3m", algo="coma", paper=0.81, **small),
                    claim(id="too-short", kind="value", map="3m", algo="asae", paper=1.0, budget=3_000_000),
                    claim(id="beats", kind="beats", map="3m", algo="asae", versus="coma", **small),
                    claim(id="worse", kind="not_worse", map="3m", algo="coma", versus="asae", **small),
                    claim(id="best", kind="best", map="3m", algo="asae", versus="coma,qmix", **small),
                    claim(id="best-close", kind="best", map="8m", algo="asae", versus="coma", tolerance=0.0, **small),
                    claim(id="sc2", kind="value", map="MMM2", algo="asae", paper=0.78, **small),
                    claim(id="no-qmix", kind="not_worse", map="3m", algo="asae", versus="qmix", **small),
                    claim(id="huh", kind="nonsense"))
    verdicts = evaluate(frame, p).set_index("id")
    assert verdicts.loc["value-ok", "verdict"] == "agrees"
    assert verdicts.loc["value-bad", "verdict"] == "disagrees"
    # Shorter than the paper's budget and still rising: the budget is the reason.
    assert verdicts.loc["too-short", "verdict"] == "inconclusive"
    why = verdicts.loc["too-short", "why"]
    assert why.startswith("budget: our runs stop at 5k env steps") and "3M" in why and "ASAE" in why
    assert verdicts.loc["beats", "verdict"] == "agrees"
    assert verdicts.loc["worse", "verdict"] == "disagrees"
    # "Best" agrees only when every baseline it names ran: QMIX did not.
    assert verdicts.loc["best", "verdict"] == "inconclusive"
    assert "not every named baseline ran: QMIX missing (clearly above the 1 that ran)" in verdicts.loc["best", "why"]
    # The highest mean, but inside the other's noise: not evidence of "highest".
    assert verdicts.loc["best-close", "verdict"] == "inconclusive"
    assert "intervals too wide or no clear advantage over COMA" in verdicts.loc["best-close", "why"]
    assert "Welch t, p = " in verdicts.loc["beats", "ours"] and "Hedges' g" in verdicts.loc["beats", "ours"]
    assert verdicts.loc["sc2", "verdict"] == "not run here"
    assert "needs real StarCraft II" in verdicts.loc["sc2", "why"]
    assert verdicts.loc["no-qmix", "verdict"] == "not run here"
    assert verdicts.loc["huh", "verdict"] == "inconclusive" and "unknown claim kind" in verdicts.loc["huh", "why"]
    assert verdicts.loc["value-ok", "ours"].startswith("0.98 [")


def competitive_runs(root, captures):
    """captures: {(N, predator algo, prey algo): final capture rate}."""
    from sacred.observers import FileStorageObserver

    ex = make_experiment()
    obs = FileStorageObserver(str(root))
    for (n, pred, prey), rate in captures.items():
        for seed, r in enumerate((rate - 0.01, rate, rate + 0.01)):  # three seeds around the given mean
            run(ex, [obs], env={"name": "predator_prey", "n_predators": n, "n_prey": n, "episode_limit": 25},
                teams={"predator": pred, "prey": prey}, run_key=f"{n}-{pred}-{prey}-{seed}", n_envs=4, seed=seed,
                metrics={"predator/test_capture_rate_mean": plateau(r), "predator/test_return_mean": plateau(r * 10),
                         "prey/test_return_mean": plateau(-r * 10)})
    return load_runs(root)


def test_competitive_gap_claim_and_capture_table(tmp_path, paper):
    frame = competitive_runs(tmp_path, {(2, "asae", "coma"): 0.5, (2, "coma", "asae"): 0.4,
                                        (4, "asae", "coma"): 0.8, (4, "coma", "asae"): 0.3})
    table = tables.capture_table(frame, paper).set_index(["N", "setting"])
    assert table.loc[(2, "ASAE predator vs COMA prey"), "mean"] == pytest.approx(0.5)
    assert table.loc[(4, "COMA predator vs ASAE prey"), "mean"] == pytest.approx(0.3)
    returns = tables.competitive_table(frame, paper).set_index(["N", "setting", "team_label"])
    assert returns.loc[(4, "ASAE predator vs COMA prey", "prey (COMA)"), "mean"] == pytest.approx(-8.0)
    gap = claim(id="gap", kind="gap_grows", metric="test_capture_rate_mean", team="predator", algo="asae",
                versus="coma", budget=1, budget_unit="iterations")
    verdict = evaluate(frame, with_claims(paper, gap)).iloc[0]
    assert verdict["verdict"] == "agrees", verdict["why"]
    assert "N=2: difference +0.10 [" in verdict["ours"] and "N=4: difference +0.50 [" in verdict["ours"]
    shrinking = competitive_runs(tmp_path / "b", {(2, "asae", "coma"): 0.9, (2, "coma", "asae"): 0.1,
                                                  (4, "asae", "coma"): 0.6, (4, "coma", "asae"): 0.5})
    assert evaluate(shrinking, with_claims(paper, gap)).iloc[0]["verdict"] == "disagrees"


def test_param_table_compares_ablation_values(tmp_path):
    from sacred.observers import FileStorageObserver

    ex = make_experiment()
    obs = FileStorageObserver(str(tmp_path))
    for m, final in ((1, 0.2), (5, 0.6), (10, 0.9)):
        for seed in (0, 1):
            run(ex, [obs], learner={"m": m, "clip": 0.1}, seed=seed, run_key=f"m{m}-{seed}",
                metrics={"test_battle_won_mean": plateau(final)})
    table = tables.param_table(load_runs(tmp_path), "m")
    assert list(table["m"]) == [1, 5, 10]
    assert list(table["mean"].round(6)) == [0.2, 0.6, 0.9] and set(table["task"]) == {"smax 3m"}


def test_paper_settings_keep_asae_with_m10_clip01(tmp_path, paper):
    from sacred.observers import FileStorageObserver

    ex = make_experiment()
    obs = FileStorageObserver(str(tmp_path))
    for key, learner in (("paper", {"m": 10, "clip": 0.1}), ("m1", {"m": 1, "clip": 0.1}),
                         ("noclip", {"m": 10, "clip": None}), ("unknown", {})):
        run(ex, [obs], learner=learner, run_key=key, metrics={"test_battle_won_mean": plateau(1.0)})
    run(ex, [obs], algo="coma", learner={"m": 3}, run_key="coma", metrics={"test_battle_won_mean": plateau(1.0)})
    frame = load_runs(tmp_path)
    assert set(paper.paper_settings(frame)["run_key"]) == {"paper", "unknown", "coma"}


def test_ablations_hold_the_other_paper_setting_fixed(tmp_path, paper):
    from sacred.observers import FileStorageObserver

    from analysis.report import ablation_frame

    ex = make_experiment()
    obs = FileStorageObserver(str(tmp_path))
    for key, learner, final in (("paper", {"m": 10, "clip": 0.1}, 0.9), ("m1", {"m": 1, "clip": 0.1}, 0.2),
                                ("clip3", {"m": 10, "clip": 0.3}, 0.5), ("noclip", {"m": 10, "clip": None}, 0.4),
                                ("both", {"m": 1, "clip": 0.3}, 0.0)):
        run(ex, [obs], learner=learner, run_key=key, metrics={"test_battle_won_mean": plateau(final)})
    frame = load_runs(tmp_path)
    by_m = tables.param_table(ablation_frame(frame, "m", paper), "m")
    assert dict(zip(by_m["m"], by_m["mean"].round(6))) == {1: 0.2, 10: 0.9}
    by_clip = tables.param_table(ablation_frame(frame, "clip", paper), "clip")
    assert dict(zip(by_clip["clip"], by_clip["mean"].round(6))) == {"0.1": 0.9, "0.3": 0.5, "none": 0.4}


def test_curves_of_seeds_share_x_even_when_test_steps_differ():
    import numpy as np
    import pandas as pd

    from analysis.stats import convergence_step, curve_grid

    rows = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 3, "team": "team", "step": [0, 5010, 10030, 0, 5040, 10000],
                         "value": [0.0, 1.0, 2.0, 0.0, 3.0, 4.0]})
    grid = curve_grid(rows)
    assert grid.groupby("step")["value"].mean().round(6).to_dict() == {0.0: 0.0, 5025.0: 2.0, 10015.0: 3.0}
    steps = np.arange(100) * 1000.0
    rising = np.minimum(steps / 40_000, 1.0)  # reaches its final level at 40k steps
    assert 36_000 <= convergence_step(steps, rising) <= 42_000


def test_runs_of_different_budgets_or_settings_never_share_a_cell(tmp_path, paper):
    """A 3M-step run beside 500k runs (and one with another learning rate) gets its own Table 1 row;
    the primary selection keeps one setting per map and algorithm and says in one line what it left out."""
    from sacred.observers import FileStorageObserver

    from analysis.loaders import primary_settings, run_settings

    ex = make_experiment()
    obs = FileStorageObserver(str(tmp_path))
    for seed, final in enumerate((0.5, 0.6, 0.4)):
        run(ex, [obs], algo="asae", seed=seed, t_max=500_000, lr=0.001, run_key=f"short-{seed}",
            metrics={"test_battle_won_mean": plateau(final)})
    run(ex, [obs], algo="asae", seed=0, t_max=3_000_000, lr=0.001, run_key="long",
        metrics={"test_battle_won_mean": plateau(1.0)})
    run(ex, [obs], algo="asae", seed=0, t_max=500_000, lr=0.0005, run_key="lr",
        metrics={"test_battle_won_mean": plateau(0.9)})
    frame = load_runs(tmp_path)
    settings = run_settings(frame).set_index("run_id")
    assert sorted(settings["budget"]) == [5e5, 5e5, 5e5, 5e5, 3e6]
    assert sorted(set(settings["setting"])) == ["lr=0.0005", "lr=0.001"]

    cells = tables.table1_cells(frame, paper, last=1)
    ours = cells[cells["mean"].notna() & (cells["map"] == "3m")]
    assert len(ours) == 3  # three cells, none pooled
    short = ours[(ours["budget"] == 5e5) & (ours["setting"] == "lr=0.001")].iloc[0]
    assert short["n_seeds"] == 3 and short["mean"] == pytest.approx(0.5)
    assert short["seeds"] == pytest.approx((0.5, 0.6, 0.4))
    assert ours[ours["budget"] == 3e6]["mean"].iloc[0] == pytest.approx(1.0)
    display = tables.table1_display(cells, paper)
    rows = display[display["map"] == "3m"]
    assert sorted(rows["budget"]) == ["3M (lr=0.001)", "500k (lr=0.0005)", "500k (lr=0.001)"]
    assert rows.set_index("budget").loc["500k (lr=0.001)", "ASAE ours"] == \
        "0.50 [0.25, 0.75] n=3 (0.50 / 0.60 / 0.40)"

    kept, notes = primary_settings(frame)
    assert kept["run_id"].nunique() == 3 and set(kept["budget"]) == {5e5}
    assert len(notes) == 2 and all("left out" in n for n in notes)
    assert any("t_max=3M" in n for n in notes) and any("lr=0.0005" in n for n in notes)
