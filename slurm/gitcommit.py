"""Commit completed runs to git as they finish (`asae sweep ... --commit`), so that the same sweep command
on a fresh clone, or on another machine, finds them completed and runs only what is missing.

Only a run's result files are committed: config.json (with its run_key), run.json (status, times, host),
metrics.json (the curves) and info.json (its provenance: commit, dirty flag, package versions; without it
a committed run would not say which code made it). Checkpoints, cout.txt and Sacred's _sources stay local
(see .gitignore: results/reproduction/ lets exactly these four files in). A commit names only these paths, so whatever
else the user has staged stays staged and out of it. A failed commit never fails the run: it is one
line in the log, and the next `asae sweep ... --commit` commits what is still uncommitted.
"""
from __future__ import annotations

import contextlib
import fcntl
import subprocess
from pathlib import Path
from typing import Iterator, Sequence

from validation import ConfigError

RESULT_FILES = ("config.json", "run.json", "metrics.json", "info.json")


def check_committable(runs_dir: Path) -> None:
    """Before any run starts: its results must land in a git work tree that does not ignore them."""
    existing = next(p for p in (runs_dir, *runs_dir.parents) if p.is_dir())
    probe = runs_dir / "1" / RESULT_FILES[0]  # where a run's result would be (it need not exist)
    try:
        proc = _git(existing, "check-ignore", "--quiet", "--", str(probe))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"--commit: cannot run git ({getattr(exc, 'strerror', None) or exc})") from None
    if proc.returncode == 128:
        raise ConfigError(f"--commit: {runs_dir} is not inside a git work tree")
    if proc.returncode == 0:
        raise ConfigError(f"--commit: git ignores the runs in {runs_dir}; .gitignore lets in only "
                          "results/reproduction/runs/*/{config,run,metrics,info}.json (use --results results/reproduction)")


class _GitFailed(Exception):
    """A git command failed; the message is the first line git printed."""


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=120)


def _checked(cwd: Path, *args: str) -> str:
    proc = _git(cwd, *args)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise _GitFailed(lines[0] if lines else f"git {args[0]} exited with status {proc.returncode}")
    return proc.stdout.strip()


@contextlib.contextmanager
def _one_at_a_time(git_dir: Path) -> Iterator[None]:
    """Runs finishing together (a local sweep runs two at once) would collide on git's index lock."""
    with open(git_dir / "asae-commit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def commit_runs(run_dirs: Sequence[Path], message: str) -> str | None:
    """Commit the result files of ``run_dirs`` in the git work tree holding them. Returns one line saying
    what was committed or why not, or None when they were all committed already."""
    files = [Path(d) / name for d in run_dirs for name in RESULT_FILES if (Path(d) / name).is_file()]
    if not files:
        return None
    where = files[0].parent
    paths = [str(f) for f in files]
    try:
        git_dir = Path(_checked(where, "rev-parse", "--absolute-git-dir"))
        with _one_at_a_time(git_dir):
            _checked(where, "add", "--", *paths)
            if _git(where, "diff", "--cached", "--quiet", "--", *paths).returncode == 0:
                return None
            _checked(where, "commit", "--quiet", "-m", message, "--", *paths)
    except (_GitFailed, OSError, subprocess.TimeoutExpired) as exc:
        return f"not committed ({len(run_dirs)} run(s) in {where.parent}): {exc}"
    return f"committed {len(files)} file(s) of {len(run_dirs)} run(s): {message}"
