"""The report's reader is bounded: a FIFO, a device or an oversized sparse file named metrics.json is
skipped by type or size without being read (one line each), an integer too large for a float or a
non-numeric value is left out with one line for its run, and a run whose final value is NaN is excluded,
so n counts only the seeds that were used. Real Sacred runs, a real FIFO, /dev/zero, a sparse file; the
report through the CLI."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sacred.observers import FileStorageObserver
from test_analysis_support import curve, make_experiment, run

from analysis.loaders import MAX_RUN_FILE_BYTES
from tests.conftest import asae_cli


def test_the_report_skips_what_it_must_not_read_and_excludes_bad_values(tmp_path):
    runs = tmp_path / "results" / "runs"
    ex = make_experiment()
    for seed, final in enumerate((1.0, 0.8, 0.9)):
        run(ex, [FileStorageObserver(str(runs))], algo="asae", seed=seed, run_key=f"asae-3m-{seed}",
            metrics={"test_battle_won_mean": curve(final)})

    def edit(run_id: str, index: int, literal: str) -> None:
        path = runs / run_id / "metrics.json"
        text = path.read_text()
        values = text.split('"values": [', 1)
        items = values[1].split("]", 1)
        numbers = [x.strip() for x in items[0].split(",")]
        numbers[index] = literal
        path.write_text(values[0] + '"values": [' + ", ".join(numbers) + "]" + items[1])

    edit("1", 2, '"abc"')       # a string in the middle: that point is left out
    edit("2", 1, "1" + "0" * 400)  # an integer too large for a float: that point is left out
    edit("3", 4, "NaN")         # the final value: the series (the run's only one) is left out
    for name in ("fifo", "zero", "sparse"):
        shutil.copytree(runs / "1", runs / name)
        (runs / name / "metrics.json").unlink()
    os.mkfifo(runs / "fifo" / "metrics.json")
    (runs / "zero" / "metrics.json").symlink_to("/dev/zero")
    with open(runs / "sparse" / "metrics.json", "wb") as f:
        f.truncate(MAX_RUN_FILE_BYTES * 4)

    start = time.monotonic()
    # Through a small parent of its own, so that the peak memory measured is the report's alone.
    measure = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
               "print('peak_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", measure, *asae_cli(), "report", "table1", "--runs",
                           str(tmp_path / "results"), "--any-settings", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    [peak] = [ln for ln in proc.stderr.splitlines() if ln.startswith("peak_kib ")]
    peak_mib = int(peak.split()[1]) / 1024
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert took < 60, f"{took:.0f} s"
    assert peak_mib < 1024, f"{peak_mib:.0f} MiB"
    lines = proc.stderr.splitlines()

    def line_for(prefix: str) -> str:
        [found] = [ln for ln in lines if ln.startswith(prefix)]
        return found

    assert line_for(f"skipped {runs / 'fifo'}:").endswith("metrics.json is a FIFO, not a file: not read")
    assert line_for(f"skipped {runs / 'zero'}:").endswith("metrics.json is a character device, not a file: not read")
    assert "metrics.json is 1024 MiB, over the 256 MiB a run file may have: not read" in line_for(
        f"skipped {runs / 'sparse'}:")
    assert line_for(f"skipped {runs / '3'}:").endswith("no metric holds a finite number")
    assert line_for(f"flagged {runs / '1'}:").endswith(
        "1 metric value(s) not finite numbers, excluded from the statistics: test_battle_won_mean: 1 of 5 points "
        "left out (the first: value a str at point 2)")
    assert "value an integer too large for a float at point 1" in line_for(f"flagged {runs / '2'}:")
    # Seeds 0 and 1 (finals, the mean of their last 3 evaluations: 0.67 and 0.60) are what the cell uses; seed
    # 2's NaN final is not a zero.
    [row] = [ln for ln in proc.stdout.splitlines() if ln.startswith("| 3m |")]
    assert "| 0.63 [" in row and "n=2 (0.67 / 0.60) |" in row, row
    assert "runs reach 4k env steps" in row, row


def test_a_running_run_without_a_heartbeat_says_so(tmp_path):
    from analysis.loaders import RawRun, _still_running

    raw = RawRun(run_id="file:1", source="file", sacred_id="1", config={}, run={"status": "RUNNING"}, info={},
                 metrics={"test_return_mean": {"steps": [0, 50], "values": [1.0, 2.0]}})
    assert _still_running(raw) == "still RUNNING (t_env 50, no heartbeat recorded): its numbers are not final yet"
