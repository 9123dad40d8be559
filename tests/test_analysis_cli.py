"""`asae report ...`: one clear line and a non-zero exit on an empty or missing runs directory; the
whole report from a small set of real Sacred runs; preset selection by config and tags."""
from __future__ import annotations

import pytest
from test_analysis_support import curve, make_experiment, run

from analysis.cli import COMMANDS
from experiments.cli import main


def report(*argv: str) -> int:
    return main(["report", *argv])


@pytest.mark.parametrize("command", list(COMMANDS))
def test_missing_and_empty_directories_give_one_line(command, tmp_path, capsys):
    missing = tmp_path / "nothing-here"
    assert report(command, "--runs", str(missing), "--out", str(tmp_path / "out")) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"asae report: runs directory {str(missing)!r} does not exist; train some with `asae train` or pass --runs DIR"]
    assert captured.out == ""
    empty = tmp_path / "empty"
    (empty / "runs" / "_sources").mkdir(parents=True)
    assert report(command, "--runs", str(empty), "--out", str(tmp_path / "out")) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"asae report: no runs found in {empty}; train some with `asae train` or pass --runs DIR"]
    assert not (tmp_path / "out").exists()


def test_default_runs_directory_is_results(workdir, capsys):
    assert report("table1") == 2
    assert "runs directory 'results' does not exist" in capsys.readouterr().err


def test_only_broken_runs_say_so(tmp_path, capsys):
    from sacred.observers import FileStorageObserver

    r = run(make_experiment(), [FileStorageObserver(str(tmp_path))], run_key="x", metrics={"return_mean": curve(1.0)})
    (tmp_path / "1" / "metrics.json").write_text("{")
    assert r.status == "COMPLETED" and report("curves", "--runs", str(tmp_path)) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"skipped {tmp_path / '1'}: metrics.json is truncated (Expecting property name enclosed in double quotes "
        "at line 1 column 2)",
        f"asae report: no runs found in {tmp_path} (1 unreadable run directory skipped); "
        "train some with `asae train` or pass --runs DIR"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A small suite of runs: SMAX 3m (ASAE, COMA), spread N=3 (tagged), an m ablation, competitive."""
    from sacred.observers import FileStorageObserver

    root = tmp_path_factory.mktemp("results")
    ex = make_experiment()
    obs = FileStorageObserver(str(root / "runs"))
    for algo, finals in (("asae", (1.0, 0.9)), ("coma", (0.1, 0.0))):
        for seed, final in enumerate(finals):
            run(ex, [obs], algo=algo, seed=seed, run_key=f"{algo}-3m-{seed}", metrics={"test_battle_won_mean": curve(final)})
    spread = {"name": "mpe_spread", "n_agents": 3, "episode_limit": 25}
    for algo, base in (("asae", -20.0), ("coma", -40.0)):
        for seed in range(2):
            run(ex, [obs], algo=algo, seed=seed, env=spread, tags=["spread"], run_key=f"{algo}-spread-{seed}",
                metrics={"test_return_mean": [[k * 1000, base - 30 + 30 * k / 4 + seed] for k in range(5)]})
    for m in (1, 10):
        for seed in range(2):
            run(ex, [obs], learner={"m": m, "clip": 0.1}, seed=seed, env=spread, run_key=f"m{m}-{seed}",
                metrics={"test_return_mean": [[k * 1000, -60 + m * k] for k in range(5)]})
    for n in (2, 3):
        for pred, prey in (("asae", "coma"), ("coma", "asae")):
            rate = 0.2 * n if pred == "asae" else 0.1
            run(ex, [obs], env={"name": "predator_prey", "n_predators": n, "n_prey": n},
                teams={"predator": pred, "prey": prey}, run_key=f"{n}{pred}",
                metrics={"predator/test_capture_rate_mean": curve(rate), "predator/test_return_mean": curve(rate * 9),
                         "prey/test_return_mean": curve(-rate * 9)})
    return root


def test_table1_prints_markdown_and_writes_files(results, tmp_path, capsys):
    assert report("table1", "--runs", str(results), "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| map | backend | ASAE ours | ASAE paper | COMA ours | COMA paper |")
    row = next(line for line in out if line.startswith("| 3m | smax"))
    assert "| 0.95 [0.31, 1.00] n=2 | 1.00 | 0.05 [0.00, 0.69] n=2 | 0.81 |" in row
    assert {p.name for p in tmp_path.iterdir()} == {"table1.md", "table1.csv", "table1.tex"}
    assert "\\begin{tabular}" in (tmp_path / "table1.tex").read_text()


def test_figure_commands_write_images(results, tmp_path, capsys):
    for command, stem in (("curves", "curves-spread"), ("ablation-m", "ablation-m"), ("capture-rate", "capture-rate"),
                          ("competitive", "competitive"), ("aggregate", "aggregate")):
        extra = ["--preset", "spread"] if command == "curves" else []
        assert report(command, "--runs", str(results), "--out", str(tmp_path), "--format", "png", *extra) == 0, command
        assert (tmp_path / f"{stem}.png").stat().st_size > 5000
    out = capsys.readouterr().out
    assert "| mpe_spread N=3 | test_return_mean | 10 |" in out  # the m ablation table
    assert report("ablation-clip", "--runs", str(results), "--out", str(tmp_path)) == 2
    assert "no asae runs that vary clip" in capsys.readouterr().err


def test_presets_select_by_tag_or_config(results):
    from analysis.loaders import load_runs
    from analysis.report import select_preset

    frame = load_runs(results)
    tagged = set(select_preset(frame, "spread")["run_key"])
    assert {"asae-spread-0", "coma-spread-1", "m1-0", "m10-1"} <= tagged  # tags, and untagged by config
    smac = {"asae-3m-0", "asae-3m-1", "coma-3m-0", "coma-3m-1"}
    assert set(select_preset(frame, "smax")["run_key"]) == set(select_preset(frame, "table1")["run_key"]) == smac
    assert set(select_preset(frame, "competitive")["run_key"]) == {"2asae", "2coma", "3asae", "3coma"}
    from envs.config import ConfigError

    with pytest.raises(ConfigError, match="unknown preset 'nope'; known: smac, spread, predator, competitive, ablation_m, ablation_clip"):
        select_preset(frame, "nope")
    with pytest.raises(ConfigError, match="no runs of preset 'predator'"):
        select_preset(frame, "predator")


def test_report_all_writes_one_page_with_claims(results, tmp_path, capsys):
    out = tmp_path / "report"
    assert report("all", "--runs", str(results), "--out", str(out), "--format", "png") == 0
    md = (out / "index.md").read_text()
    page = (out / "index.html").read_text()
    assert "## Claims of the paper" in md and "## Table 1" in md
    assert "scripted policy every time" in md
    assert "| Table 1 | ASAE reaches a win rate of 1.0 on 3m | 1 |" in md
    assert "not run here" in md and "inconclusive" in md
    # The m = 1 ablation runs stay out of Fig. 5 and the claims; the m = 10 ones (paper settings) count.
    assert "2 run(s) with other hyper-parameters than the paper's" in md
    assert "| mpe_spread N=3 | test_return_mean | ASAE | -19.75 [-20.55, -18.95] n=4 | 4k |" in md
    for stem in ("curves-smac", "curves-spread", "competitive", "capture-rate", "ablation-m", "aggregate",
                 "performance-profile"):
        assert (out / "figures" / f"{stem}.png").is_file(), stem
        assert f"figures/{stem}.png" in md and f'src="figures/{stem}.png"' in page
    assert "Fig. 11: not in these runs: no asae runs that vary clip" in md
    assert (out / "tables" / "claims.csv").is_file() and (out / "tables" / "table1.tex").is_file()
    assert '<td class="notrun">not run here</td>' in page
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "index.md"), str(out / "index.html")]
