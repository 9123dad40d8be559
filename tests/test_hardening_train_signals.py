"""`asae train` stops cleanly on every signal a terminal or a cluster sends: INT (Ctrl-C), TERM (kill,
scancel), USR1/USR2 (SLURM's warning before a time limit, `#SBATCH --signal=B:USR2@90`) and HUP (a closed
terminal, a dropped ssh session): a checkpoint after the current iteration, the run INTERRUPTED with its
metrics, and the command that resumes it printed whole, which then does resume it. Real processes, real
signals, a real pseudo-terminal for the hang-up."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import shlex
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import asae_cli

TINY = ["algo=coma", "env.name=mpe_spread", "env.backend=batched", "env.n_agents=2", "n_envs=2", "batch_size=2",
        "test_episodes=2", "test_interval=500", "log_interval=50", "checkpoint_interval=100"]


def wait_for_checkpoint(run_dir_root: Path, proc: subprocess.Popen, timeout: float = 120,
                        poll=lambda: None) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        poll()
        found = list(run_dir_root.glob("*/checkpoint.pt"))
        if found:
            return found[0].parent
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.2)
    raise AssertionError("no checkpoint within the time limit")


def check_interrupted(run_dir: Path) -> dict:
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "INTERRUPTED", run["status"]
    assert (run_dir / "checkpoint.pt").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["return_mean"]["steps"], "the curve so far is kept"
    return run


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2],
                         ids=lambda s: signal.Signals(s).name)
def test_each_stop_signal_checkpoints_and_prints_the_resume_command(tmp_path, sig):
    runs = tmp_path / "runs"
    t_max = 3000 if sig == signal.SIGUSR2 else 10 ** 6
    argv = ["-F", str(runs), "with", *TINY, f"t_max={t_max}"]
    proc = subprocess.Popen([*asae_cli(), "train", *argv], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        run_dir = wait_for_checkpoint(runs, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    check_interrupted(run_dir)
    assert "[asae] t_env " in (run_dir / "cout.txt").read_text(), "cout.txt holds what the run printed"
    [line] = [ln for ln in err.splitlines() if ln.startswith("asae train:")]
    assert "<run directory>" not in line, line
    command = line.split("to continue it: ", 1)[1]
    assert command == "asae train " + shlex.join([*argv, f"resume_from={run_dir}"]), line
    if sig == signal.SIGUSR2:  # the printed command, run as printed, resumes and completes the run
        words = shlex.split(command)
        done = subprocess.run([*asae_cli(), *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        [resumed] = [d for d in runs.iterdir() if d.name.isdigit() and d != run_dir]
        assert json.loads((resumed / "run.json").read_text())["status"] == "COMPLETED"
        assert json.loads((resumed / "info.json").read_text())["resumed_at_t_env"] > 0


def test_a_closed_terminal_checkpoints_the_run(tmp_path):
    """`asae train` on a real pseudo-terminal (its controlling terminal, with a progress bar on it); the
    terminal's side closes, the kernel sends SIGHUP, and every write to the terminal fails from then on."""
    runs = tmp_path / "runs"
    master, slave = pty.openpty()

    def controlling_terminal():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([*asae_cli(), "train", "-F", str(runs), "with", *TINY, "t_max=1000000"], cwd=tmp_path,
                            stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_terminal)
    os.close(slave)
    os.set_blocking(master, False)

    def drain():
        with contextlib.suppress(BlockingIOError):
            while os.read(master, 65536):
                pass

    try:
        run_dir = wait_for_checkpoint(runs, proc, poll=drain)
        os.close(master)
        proc.wait(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 2
    check_interrupted(run_dir)
