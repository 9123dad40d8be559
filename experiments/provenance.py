"""Which code made a run: the suite's git commit, whether its tracked files differed from it, and the
versions of the packages that change results. Every run records it in its Sacred info (info.json, and
the MongoDB copy, which carries the run's info), key ``provenance``.

The suite's code is found where Python imports it from: an editable install (``make setup``) imports
from the git checkout; a wheel install has no checkout, and the record says so (``"source": "no git
checkout"``). ``dirty`` compares tracked files with HEAD (untracked files are ignored: a new file the
suite does not import changes nothing); ``diff_sha1`` is the SHA-1 of ``git diff HEAD``, so two dirty
runs with the same hash ran the same code. git is asked with a short timeout; if it is missing, slow
or fails, the run goes on and the record's ``note`` says why the commit is missing.

Runs made before runs recorded this, or committed without their info.json, are recovered from git
history (``asae provenance recover RUNS_DIR``; runs that recorded their own are left out): the commit that
was HEAD when a run started is the latest commit of the branch before the run's start time, and Sacred's
per-run MD5s of the experiment's source files are checked against that commit's files. The result is a
``provenance.json`` beside the runs, which :func:`run_provenance` reads when a run has no record of its own.
"""
from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping

from validation import ConfigError

# Distributions whose versions change what a run computes (or whether it can run at all).
PACKAGES = ("asae-suite", "torch", "jax", "jaxmarl", "mpe2", "pettingzoo", "sacred", "smac", "numpy")
GIT_TIMEOUT_S = 5.0
FILE_NAME = "provenance.json"  # recovered records, beside the runs they describe
EXPERIMENT_NAME = "asae"  # Sacred's experiment name of this suite's runs (run.json experiment.name)
RECOVERY_METHOD = "start time vs git log"
RECOVERY_CONFIDENCE = "HEAD at start time; dirty state unknown"


def package_versions() -> dict[str, str | None]:
    """Installed versions (None: not installed) and the Python version; imports none of the packages."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def source_dir() -> Path:
    """The directory the suite's packages are imported from (the repository root in an editable install)."""
    import experiments

    return Path(experiments.__file__).resolve().parent.parent


class _GitError(Exception):
    pass


def _git(cwd: Path, *args: str, timeout_s: float = GIT_TIMEOUT_S) -> bytes:
    try:
        proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, timeout=timeout_s)
    except FileNotFoundError:
        raise _GitError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise _GitError(f"git {args[0]} took longer than {timeout_s:g} s") from None
    except OSError as exc:
        raise _GitError(f"git could not run ({exc.strerror or exc})") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise _GitError(f"git {args[0]}: {lines[0] if lines else f'exit status {proc.returncode}'}")
    return proc.stdout


def collect(where: Path | None = None, timeout_s: float = GIT_TIMEOUT_S) -> dict[str, Any]:
    """The provenance record of code imported from ``where`` (default: :func:`source_dir`). Never raises."""
    where = Path(where) if where is not None else source_dir()
    record: dict[str, Any] = {"source": "no git checkout", "commit": None, "branch": None, "dirty": None,
                              "diff_sha1": None, "packages": package_versions()}
    try:
        top = _git(where, "rev-parse", "--show-toplevel", timeout_s=timeout_s).decode().strip()
    except _GitError as exc:
        if "not a git repository" not in str(exc):
            record["note"] = f"{where} may be a git checkout, but {exc}"
        return record
    if Path(top).resolve() != where.resolve():
        # e.g. a wheel installed into a virtual environment that lies inside some other work tree
        return record
    record["source"] = "git"
    try:
        record["commit"] = _git(where, "rev-parse", "HEAD", timeout_s=timeout_s).decode().strip()
        branch = _git(where, "rev-parse", "--abbrev-ref", "HEAD", timeout_s=timeout_s).decode().strip()
        record["branch"] = None if branch == "HEAD" else branch  # "HEAD": detached
        status = _git(where, "status", "--porcelain", "--untracked-files=no", timeout_s=timeout_s)
        record["dirty"] = bool(status.strip())
        if record["dirty"]:
            diff = _git(where, "diff", "HEAD", "--no-color", "--no-ext-diff", timeout_s=timeout_s)
            record["diff_sha1"] = hashlib.sha1(diff).hexdigest()
    except _GitError as exc:
        record["note"] = str(exc)
    return record


# ----------------------------------------------------------------------------- reading a run's record

def run_provenance(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's provenance: its own (info.json), else its entry in the nearest provenance.json above it
    (recovered from git history), else None."""
    run_dir = Path(run_dir).resolve()
    own = own_provenance(run_dir)
    if own is not None:
        return own
    for parent in run_dir.parents:
        path = parent / FILE_NAME
        if path.is_file():
            try:
                runs = json.loads(path.read_text()).get("runs", {})
            except (OSError, ValueError, AttributeError):
                continue
            entry = runs.get(run_dir.relative_to(parent).as_posix())
            if entry is not None:
                return entry
    return None


# ----------------------------------------------------------------------------- recovering old runs

def _parse_time(text: str) -> float:
    """Sacred's start_time (ISO, UTC without an offset) -> epoch seconds."""
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def _source_md5s(run: Mapping[str, Any]) -> dict[str, str]:
    """Sacred's source files of a run (path relative to the repository -> MD5 Sacred recorded)."""
    exp = run.get("experiment", {})
    base = Path(exp.get("base_dir", ""))
    out = {}
    for name, stored in exp.get("sources", []):
        stem = Path(stored).stem  # "_sources/config_<md5>.py" -> "config_<md5>"
        digest = stem.rsplit("_", 1)[-1]
        if len(digest) == 32:
            out[(Path(base.name) / name).as_posix()] = digest
    return out


class _History:
    """The branch's commits (first parent, oldest first) with their committer times, and the MD5 of any
    file at any of them (cached per blob)."""

    def __init__(self, repo: Path, ref: str):
        self.repo = repo
        lines = _git(repo, "log", "--first-parent", "--format=%H %ct", ref, timeout_s=60).decode().split()
        pairs = list(zip(lines[0::2], lines[1::2]))[::-1]
        self.commits = [c for c, _ in pairs]
        self.times = [int(t) for _, t in pairs]
        self._blobs: dict[tuple[str, str], str | None] = {}
        self._md5: dict[str, str] = {}

    def head_at(self, when: float) -> str | None:
        i = bisect.bisect_right(self.times, when)
        return self.commits[i - 1] if i else None

    def md5(self, commit: str, path: str) -> str | None:
        key = (commit, path)
        if key not in self._blobs:
            try:
                self._blobs[key] = _git(self.repo, "rev-parse", f"{commit}:{path}").decode().strip()
            except _GitError:
                self._blobs[key] = None
        blob = self._blobs[key]
        if blob is None:
            return None
        if blob not in self._md5:
            self._md5[blob] = hashlib.md5(_git(self.repo, "cat-file", "blob", blob, timeout_s=30)).hexdigest()
        return self._md5[blob]

    def matches(self, commit: str, md5s: Mapping[str, str]) -> bool:
        return bool(md5s) and all(self.md5(commit, path) == digest for path, digest in md5s.items())

    def nearest_match(self, commit: str, md5s: Mapping[str, str]) -> str | None:
        """The commit closest to ``commit`` (in branch order, earlier first on a tie) whose files match."""
        i = self.commits.index(commit)
        for d in range(len(self.commits)):
            for j in (i - d, i + d):
                if 0 <= j < len(self.commits) and self.matches(self.commits[j], md5s):
                    return self.commits[j]
        return None


def recover_one(run: Mapping[str, Any], history: _History, ref: str) -> dict[str, Any]:
    """The recovered provenance of one run from its run.json (see the module docstring)."""
    deps = {}
    for dep in run.get("experiment", {}).get("dependencies", []):
        name, _, ver = dep.partition("==")
        deps[name] = ver or None
    packages: dict[str, str | None] = {name: deps.get(name) for name in PACKAGES}
    packages["python"] = run.get("host", {}).get("python_version")
    start = run.get("start_time")
    head = history.head_at(_parse_time(start)) if start else None
    md5s = _source_md5s(run)
    recovered: dict[str, Any] = {"method": RECOVERY_METHOD, "commit": head, "confidence": RECOVERY_CONFIDENCE,
                                 "start_time": start, "sources_checked": sorted(md5s)}
    if head is None:
        recovered["sources"], recovered["sources_commit"] = "no commit of the branch before the start time", None
    elif not md5s:
        recovered["sources"], recovered["sources_commit"] = "no source MD5s recorded", None
    else:
        match = head if history.matches(head, md5s) else history.nearest_match(head, md5s)
        recovered["sources_commit"] = match
        recovered["sources"] = f"match commit {match}" if match else "match no commit (dirty tree)"
    return {"source": "recovered", "commit": head, "branch": ref if head else None, "dirty": None,
            "diff_sha1": None, "packages": packages, "recovered": recovered}


def find_runs(runs_dir: Path) -> tuple[list[Path], list[Path]]:
    """(this suite's run directories below ``runs_dir``, other Sacred runs found there, e.g. another
    codebase's, which are left out)."""
    ours, others = [], []
    for path in sorted(runs_dir.rglob("run.json")):
        if "_sources" in path.parts:
            continue
        try:
            name = json.loads(path.read_text()).get("experiment", {}).get("name")
        except (OSError, ValueError, AttributeError):
            name = None
        (ours if name == EXPERIMENT_NAME else others).append(path.parent)
    return ours, others


def own_provenance(run_dir: Path) -> dict[str, Any] | None:
    """The record a run wrote itself (info.json's ``provenance``), or None."""
    try:
        own = json.loads((Path(run_dir) / "info.json").read_text()).get("provenance")
    except (OSError, ValueError, AttributeError):
        return None
    return own if isinstance(own, dict) else None


def recover(runs_dir: Path, repo: Path, ref: str, relative_to: Path) -> tuple[dict[str, Any], list[Path], list[Path]]:
    """({run dir relative to ``relative_to`` -> recovered provenance} for every run below ``runs_dir``
    that has no record of its own, the Sacred runs left out (not this suite's), the runs left out because
    they recorded their own)."""
    history = _History(repo, ref)
    ours, others = find_runs(runs_dir)
    recorded = [d for d in ours if own_provenance(d) is not None]
    out = {}
    for run_dir in sorted(set(ours) - set(recorded), key=lambda p: _natural(p.relative_to(relative_to).as_posix())):
        run = json.loads((run_dir / "run.json").read_text())
        out[run_dir.relative_to(relative_to).as_posix()] = recover_one(run, history, ref)
    return out, others, recorded


def _natural(text: str) -> list:
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _recover_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="asae provenance recover",
        description="Recover which commit made each run below RUNS_DIR from git history (the branch's latest "
                    "commit before the run's start time; Sacred's source MD5s checked against it) and write "
                    "provenance.json beside the runs. The run files are not changed.")
    parser.add_argument("runs_dir", metavar="RUNS_DIR")
    parser.add_argument("--ref", default="main", help="the branch the runs were made from (default: main)")
    parser.add_argument("--repo", default=None, help="the git checkout holding the history (default: the suite's)")
    parser.add_argument("--out", default=None,
                        help="file to write (default: RUNS_DIR/../provenance.json when RUNS_DIR is named runs, "
                             "else RUNS_DIR/provenance.json)")
    args = parser.parse_args(argv)
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise ConfigError(f"{runs_dir} is not a directory; give the directory holding the run directories")
    out = Path(args.out) if args.out else (runs_dir.parent if runs_dir.name == "runs" else runs_dir) / FILE_NAME
    repo = Path(args.repo) if args.repo else source_dir()
    try:
        _git(repo, "rev-parse", "--verify", "--quiet", f"{args.ref}^{{commit}}")
    except _GitError:
        raise ConfigError(f"--ref {args.ref!r} is not a commit of the git checkout at {repo}") from None
    try:
        runs, others, recorded = recover(runs_dir.resolve(), repo, args.ref, out.parent.resolve())
    except ValueError:
        raise ConfigError(f"--out {out} must lie in RUNS_DIR or above it") from None
    except _GitError as exc:
        raise ConfigError(f"cannot read the history of {repo}: {exc}") from None
    if not runs:
        if recorded:
            raise ConfigError(f"nothing to recover below {runs_dir}: its {len(recorded)} runs each recorded their "
                              "own provenance (info.json)")
        raise ConfigError(f"no runs of this suite below {runs_dir} (directories with a run.json of experiment "
                          f"{EXPERIMENT_NAME!r})")
    command = " ".join(["asae provenance recover", *argv])
    text = json.dumps({"command": command, "runs": runs}, indent=1, sort_keys=False) + "\n"
    from experiments.files import atomic_write

    atomic_write(out, lambda f: f.write(text.encode()))
    matched = sum(1 for r in runs.values() if r["recovered"]["sources_commit"] == r["commit"])
    elsewhere = sum(1 for r in runs.values() if r["recovered"]["sources_commit"] not in (None, r["commit"]))
    print(f"{out}: {len(runs)} runs; sources match HEAD at start in {matched}, another commit in {elsewhere}, "
          f"no commit in {len(runs) - matched - elsewhere}"
          + (f"; {len(recorded)} runs that recorded their own left out" if recorded else "")
          + (f"; {len(others)} Sacred runs of other code left out" if others else ""))
    return 0


def main(argv: list[str]) -> int:
    """`asae provenance recover RUNS_DIR` (the one action), `asae provenance show` prints this checkout's record."""
    if argv and argv[0] == "recover":
        return _recover_main(argv[1:])
    if argv and argv[0] == "show":
        print(json.dumps(collect(), indent=1))
        return 0
    if argv and argv[0] in ("-h", "--help"):
        print("usage: asae provenance recover RUNS_DIR [--ref main] [--out FILE] | asae provenance show")
        return 0
    raise ConfigError(f"provenance needs an action: recover RUNS_DIR or show (got {' '.join(argv) or 'nothing'!r})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
