"""`asae report ...`: one clear line and a non-zero exit on an empty or missing runs directory or an --out
that is a file; the whole report from a small set of real Sacred runs, also beside broken, running and
unreadable ones (each skipped with one line); preset selection by config and tags."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import asae_cli
from test_analysis_support import curve, make_experiment, plateau, run

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
        f"asae report: no runs found in {tmp_path} (1 skipped, listed above); "
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
            run(ex, [obs], algo=algo, seed=seed, run_key=f"{algo}-3m-{seed}",
                metrics={"test_battle_won_mean": plateau(final)})
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
    assert out[0].startswith("| map | backend | budget | ASAE ours | ASAE paper | COMA ours | COMA paper |")
    row = next(line for line in out if line.startswith("| 3m | smax"))
    assert "| 0.95 [0.31, 1.00] n=2 (1.00 / 0.90) | 1.00 | 0.05 [0.00, 0.69] n=2 (0.10 / 0.00) | 0.81 |" in row
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
    from validation import ConfigError

    with pytest.raises(ConfigError, match="unknown preset 'nope'; known: smac, spread, predator, competitive, ablation_m, ablation_clip"):
        select_preset(frame, "nope")
    with pytest.raises(ConfigError, match="no runs of preset 'predator'"):
        select_preset(frame, "predator")


def test_runs_a_sweep_tagged_are_found_under_their_experiment(tmp_path):
    """`asae sweep` tags its runs preset:NAME; a reproduction preset's runs are its experiment's runs."""
    from sacred.observers import FileStorageObserver

    from analysis.loaders import load_runs
    from analysis.report import select_preset

    ex, obs = make_experiment(), FileStorageObserver(str(tmp_path))
    for key, tag in (("t", "preset:repro_table1"), ("a", "preset:repro_ablation_m"), ("s", "preset:repro_spread")):
        env = {"name": "mpe_spread", "n_agents": 3} if key == "s" else {"name": "smax", "map_name": "3m"}
        run(ex, [obs], run_key=key, tags=[tag], env=env, metrics={"test_return_mean": curve(1.0)})
    frame = load_runs(tmp_path)
    assert set(select_preset(frame, "smac")["run_key"]) == set(select_preset(frame, "table1")["run_key"]) == {"t"}
    assert set(select_preset(frame, "ablation_m")["run_key"]) == {"a"}
    assert set(select_preset(frame, "spread")["run_key"]) == {"s"}


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
    # Final = the mean of the last 3 evaluations: (-27.5, -26.5) and the m = 10 runs' -30, -30.
    assert ("| mpe_spread N=3 | test_return_mean | ASAE | t_max unknown | -28.50 [-31.33, -25.67] n=4 "
            "(-30.00 / -27.50 / -30.00 / -26.50) | 4k |") in md
    for stem in ("curves-smac", "curves-spread", "competitive", "capture-rate", "ablation-m", "aggregate",
                 "performance-profile"):
        assert (out / "figures" / f"{stem}.png").is_file(), stem
        assert f"figures/{stem}.png" in md and f'src="figures/{stem}.png"' in page
    assert "Fig. 11: not in these runs: no asae runs that vary clip" in md
    assert (out / "tables" / "claims.csv").is_file() and (out / "tables" / "table1.tex").is_file()
    assert '<td class="notrun">not run here</td>' in page
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "index.md"), str(out / "index.html")]


def broken_beside_real_runs(results, root):
    """A copy of the real runs plus every kind of directory a disk can hold beside them; returns the
    skipped lines `asae report` must print, one per broken thing."""
    shutil.copytree(results, root)
    runs = root / "runs"
    template = runs / "1"

    def clone(name: str) -> Path:
        shutil.copytree(template, runs / name)
        return runs / name

    clone("binary-run").joinpath("run.json").write_bytes(b"\x00\xff\xfe")
    clone("latin1-metrics").joinpath("metrics.json").write_bytes('{"x": "caf\xe9"}'.encode("latin-1"))
    clone("empty-config").joinpath("config.json").write_text("")
    clone("no-metrics").joinpath("metrics.json").unlink()
    running = clone("running")  # a run of its own config, killed 3 h ago (Sacred writes naive UTC times)
    config = json.loads((running / "config.json").read_text())
    (running / "config.json").write_text(json.dumps({**config, "run_key": "running", "seed": 7}))
    record = json.loads((running / "run.json").read_text())
    del record["stop_time"]
    beat = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(hours=3)
    (running / "run.json").write_text(json.dumps({**record, "status": "RUNNING", "heartbeat": beat.isoformat()}))
    (runs / "loop").symlink_to("..")
    looping = clone("looping-run")
    (looping / "metrics.json").unlink()
    (looping / "metrics.json").symlink_to("metrics.json")
    return {
        f"skipped {runs / 'binary-run'}: run.json is binary, not JSON (a NUL byte at offset 0)",
        f"skipped {runs / 'latin1-metrics'}: metrics.json is not UTF-8 text (byte 0xe9 at offset 10)",
        f"skipped {runs / 'empty-config'}: config.json is empty",
        f"skipped {runs / 'no-metrics'}: metrics.json is missing (status COMPLETED)",
        f"skipped {runs / 'running'}: still RUNNING (t_env 5000, last heartbeat 3.0 h ago): its numbers are not final yet",
        f"skipped {runs / 'loop'}: a symlink loop (leads back to {root})",
        f"skipped {runs / 'looping-run'}: metrics.json is unreadable (a symlink loop)",
    }


def test_report_all_skips_what_it_cannot_read_with_one_line_each_and_writes_the_report(results, tmp_path, capsys):
    root = tmp_path / "results"
    expected = broken_beside_real_runs(results, root)
    out = tmp_path / "report"
    assert report("all", "--runs", str(root), "--out", str(out), "--format", "png") == 0
    err = capsys.readouterr().err.splitlines()
    assert {line for line in err if line.startswith("skipped ")} == expected
    assert len([line for line in err if line.startswith("skipped ")]) == len(expected)
    md = (out / "index.md").read_text()
    assert f"from `{root}`: 16 run(s), 7 skipped (unreadable or still running; listed at the end)" in md
    assert f"| {root / 'runs' / 'binary-run'} | run.json is binary, not JSON (a NUL byte at offset 0) |" in md
    assert (out / "index.html").is_file() and (out / "figures" / "curves-smac.png").is_file()


def test_out_naming_a_file_is_one_line_and_the_file_stays(results, tmp_path, capsys):
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    for command, out in (("all", keep), ("curves", keep / "sub"), ("table1", keep)):
        assert report(command, "--runs", str(results), "--out", str(out)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        where = "is not a directory" if out == keep else f"cannot be created: {str(keep)!r} is not a directory"
        assert lines == [f"asae report: --out {str(out)!r} {where}; name a directory for the output "
                         "(it is created if missing)"]
    assert keep.read_text() == "mine"


def unprivileged(command: list[str]) -> list[str]:
    """``command`` run so that file permissions hold. Root reads a chmod 000 file, so as root the command
    runs without the two capabilities that let it (setpriv drops them from its bounding set): a real
    "Permission denied", not a simulated one."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, where chmod 000 does not stop reads, and setpriv (util-linux) is missing")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]


def test_unreadable_run_files_and_directories_are_skipped(results, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(results, root)
    runs = root / "runs"
    shutil.copytree(runs / "1", runs / "locked-file")
    shutil.copytree(runs / "1", runs / "locked-dir" / "1")
    (runs / "locked-file" / "run.json").chmod(0)
    (runs / "locked-dir").chmod(0)
    out = tmp_path / "report"
    try:
        proc = subprocess.run(unprivileged([*asae_cli(), "report", "all", "--runs", str(root), "--out", str(out),
                                            "--format", "png"]), capture_output=True, text=True, timeout=300)
    finally:
        (runs / "locked-dir").chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped ")]
    assert sorted(skipped) == [f"skipped {runs / 'locked-dir'}: cannot list this directory (Permission denied)",
                               f"skipped {runs / 'locked-file'}: run.json is unreadable (Permission denied)"]
    assert (out / "index.md").is_file()


def test_report_says_what_the_runs_took_per_preset(tmp_path, capsys):
    """Per preset tag: runs, attempts, wall time (first start to last end), run time (sum of durations,
    a still running run until its heartbeat) and CPU hours (duration x torch_threads)."""
    from sacred.observers import FileStorageObserver

    ex, obs = make_experiment(), FileStorageObserver(str(tmp_path / "runs"))
    won = {"test_battle_won_mean": curve(1.0)}
    with pytest.raises(RuntimeError):  # an attempt that failed, then its resume
        run(ex, [obs], run_key="a0", tags=["preset:table"], fail=True, metrics=won)
    run(ex, [obs], run_key="a0", tags=["preset:table"], metrics=won)
    run(ex, [obs], run_key="a1", tags=["preset:table"], torch_threads=2, seed=1, metrics=won)
    run(ex, [obs], run_key="b0", tags=["preset:spread"], env={"name": "mpe_spread", "n_agents": 3},
        metrics={"test_return_mean": curve(-10.0)})
    times = {"1": ("10:00", "11:00"), "2": ("12:00", "12:30"), "3": ("12:00", "14:00"), "4": ("13:00", None)}
    for sacred_id, (start, stop) in times.items():
        path = tmp_path / "runs" / sacred_id / "run.json"
        record = {**json.loads(path.read_text()), "start_time": f"2026-01-01T{start}:00", "stop_time": None}
        if stop:
            record["stop_time"] = f"2026-01-01T{stop}:00"
        else:  # killed: the heartbeat is where it ended
            record.update(status="RUNNING", heartbeat="2026-01-01T13:06:00")
        path.write_text(json.dumps(record))
    assert report("all", "--runs", str(tmp_path), "--out", str(tmp_path / "report"), "--format", "png") == 0
    md = (tmp_path / "report" / "index.md").read_text()
    table = md[md.index("| preset | runs |"):].split("\n\n")[0].splitlines()
    assert table == [
        "| preset | runs | Sacred runs | still running | wall time | run time | CPU hours |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        "| spread | 1 | 1 | 1 | 6.0 min | 6.0 min | 0.10 |",
        "| table | 2 | 3 | 0 | 4.0 h | 3.5 h | 5.50 |",
        "| all | 3 | 4 | 1 | 4.0 h | 3.6 h | 5.60 |",
    ]


def test_an_interrupted_write_leaves_the_previous_file_whole(tmp_path):
    from analysis.render import replace_whole

    page = tmp_path / "index.md"
    page.write_text("the previous report")

    def dies_half_way(tmp):
        tmp.write_text("half of a new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_whole(page, dies_half_way)
    assert page.read_text() == "the previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["index.md"]
