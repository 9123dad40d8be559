"""Stopping a local sweep: Ctrl-C to its process group, SIGINT or SIGTERM to its pid, or the terminal
closing (a real pty hung up) checkpoint every running run, end it INTERRUPTED with one line, start no
queued run, leave no process of the sweep alive (submitit's controller and the job included), and the same
command resumes. Real processes and real signals on the local executor."""
from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import signal
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.conftest_slurm import asae, runs_of, tiny_preset, wait_until

pytestmark = pytest.mark.slow

T_MAX = 4000


def logged_t_env(logs: Path) -> int:
    found = [int(m) for f in logs.glob("*_log.*") for m in re.findall(r"t_env (\d+)/", f.read_text())]
    return max(found, default=0)


def processes_naming(text: str) -> list[str]:
    """Live processes whose command line mentions ``text`` (the sweep's log folder: submitit's controller
    and its job both name it)."""
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in command and state != "Z":
            out.append(f"{cmdline.parent.name}: {command}")
    return out


def start_sweep(tmp_path: Path, terminal: bool = False):
    preset = tiny_preset(tmp_path, t_max=T_MAX, agents="[2, 3]")
    results = tmp_path / "results"
    args = [str(preset), "--executor", "local", "--results", str(results), "-j", "1"]
    exe = str(Path(sys.executable).with_name("asae"))
    if not terminal:
        proc = subprocess.Popen([exe, "sweep", *args], cwd=tmp_path, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return proc, args, results, None
    master, slave = pty.openpty()

    def controlling_terminal():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([exe, "sweep", *args], cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
                            preexec_fn=controlling_terminal)
    os.close(slave)
    os.set_blocking(master, False)  # read in the test's own polls: a thread blocked in read() would keep
    return proc, args, results, master  # the terminal open after close()


def drain(master: int) -> None:
    """Read what the sweep wrote to its terminal, so that it never blocks on a full one."""
    with contextlib.suppress(BlockingIOError):
        while os.read(master, 65536):
            pass


def interrupted_run_and_clean_exit(proc, results: Path, expected_status: int, output: str | None):
    logs = results / "sweeps" / "tiny" / "logs"
    runs = runs_of(results)
    assert len(runs) == 1, "the queued run must not start"
    [run] = runs
    assert run["status"] == "INTERRUPTED", run
    assert (run["dir"] / "checkpoint.pt").is_file()
    assert run["metrics"].get("return_mean"), "metrics.json holds the curve so far"
    assert proc.returncode == expected_status, output
    assert processes_naming(str(logs)) == []
    if output is not None:
        lines = [ln for ln in output.splitlines() if f"run {run['run_key']} interrupted at t_env=" in ln]
        assert len(lines) == 1, output
        assert "checkpoint saved in" in lines[0]
        assert "1 queued run(s) not started" in output, output
        assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    job_log = "".join(f.read_text() for f in logs.glob("*_log.*"))
    assert "Traceback" not in job_log and "terminate called" not in job_log, job_log
    return run


@pytest.mark.parametrize("sig, to_group", [
    (signal.SIGINT, True),    # Ctrl-C: the terminal signals the whole foreground process group
    (signal.SIGINT, False),   # kill -INT <sweep pid>
    (signal.SIGTERM, False),  # kill <sweep pid>
], ids=["ctrl-c", "sigint-pid", "sigterm-pid"])
def test_a_stopped_local_sweep_checkpoints_its_run_and_leaves_nothing_running(tmp_path, sig, to_group):
    proc, args, results, _ = start_sweep(tmp_path)
    try:
        wait_until(lambda: logged_t_env(results / "sweeps" / "tiny" / "logs") >= 300, 120, "the run to train")
        (os.killpg if to_group else os.kill)(proc.pid, sig)
        output, _ = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run = interrupted_run_and_clean_exit(proc, results, 128 + sig, output)
    if sig == signal.SIGINT and to_group:
        # The same command resumes the interrupted run and runs the one that never started.
        again = asae("sweep", *args, cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "1 resume from a checkpoint" in again.stdout, again.stdout
        first, *others = runs_of(results)
        resumed = [r for r in others if r["run_key"] == run["run_key"]]
        assert [r["status"] for r in resumed] == ["COMPLETED"]
        assert resumed[0]["config"]["resume_from"] == str(first["dir"] / "checkpoint.pt")
        assert resumed[0]["info"]["resumed_at_t_env"] > 0
        assert sorted(r["status"] for r in others) == ["COMPLETED", "COMPLETED"]


def test_closing_the_terminal_of_a_local_sweep_checkpoints_its_run_and_leaves_nothing_running(tmp_path):
    """The sweep runs on a real pseudo-terminal as its controlling terminal; closing the terminal's side
    hangs it up, and the kernel sends SIGHUP."""
    proc, _, results, master = start_sweep(tmp_path, terminal=True)
    logs = results / "sweeps" / "tiny" / "logs"
    try:
        wait_until(lambda: drain(master) or logged_t_env(logs) >= 300, 120, "the run to train")
        os.close(master)
        proc.wait(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    interrupted_run_and_clean_exit(proc, results, 128 + signal.SIGHUP, None)


def test_a_stopped_debug_sweep_checkpoints_its_run_and_starts_no_other(tmp_path):
    """--executor debug runs in the sweep's own process: SIGTERM to it ends the run at hand INTERRUPTED."""
    preset = tiny_preset(tmp_path, t_max=T_MAX, agents="[2, 3]")
    results = tmp_path / "results"
    exe = str(Path(sys.executable).with_name("asae"))
    proc = subprocess.Popen([exe, "sweep", str(preset), "--executor", "debug", "--results", str(results)],
                            cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        wait_until(lambda: any((d / "checkpoint.pt").is_file() for d in (results / "runs").glob("[0-9]*")),
                   120, "the run to checkpoint")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, output
    [run] = runs_of(results)
    assert run["status"] == "INTERRUPTED"
    assert f"run {run['run_key']} interrupted at t_env=" in output, output
    assert "rerun the same command to resume" in output, output
