"""`asae sweep --commit`: completed runs go into git as they finish (config.json, run.json, metrics.json and
nothing else), and the same sweep command on a fresh clone skips them and runs only what is missing."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from experiments.cli import main
from tests.conftest import ROOT
from tests.conftest_slurm import runs_of, tiny_preset

RUN_FILES = ["config.json", "info.json", "metrics.json", "run.json"]  # info.json: the run's provenance


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def committed(repo: Path, rev: str) -> tuple[str, list[str]]:
    subject, *files = [line for line in git(repo, "show", "--name-only", "--format=%s", rev).splitlines() if line]
    return subject, files


def sweep(repo: Path, monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.chdir(repo)  # the preset's results root is relative, as in the repository
    code = main(["sweep", "presets/tiny.toml", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def repo(tmp_path):
    """A git repository with the project's .gitignore and a tiny preset whose runs go to results/reproduction."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    preset = tiny_preset(repo / "presets")
    preset.write_text(preset.read_text().replace("seeds = 1\n", 'seeds = 1\nresults = "results/reproduction"\n'))
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "a repository with a preset")
    return repo


@pytest.mark.slow
def test_completed_runs_are_committed_and_a_fresh_clone_runs_only_what_is_missing(repo, tmp_path, monkeypatch, capsys):
    code, out, err = sweep(repo, monkeypatch, capsys, "--executor", "debug", "--commit")
    assert code == 0, err
    runs = repo / "results" / "reproduction" / "runs"
    assert {p.name for p in (runs / "1").iterdir()} > set(RUN_FILES) | {"checkpoint.pt", "cout.txt"}
    # One commit per run, holding its four result files and nothing else (no checkpoint, log or sources).
    for rev, run_id, agents in (("HEAD", 2, 3), ("HEAD~1", 1, 2)):
        subject, files = committed(repo, rev)
        assert files == [f"results/reproduction/runs/{run_id}/{f}" for f in RUN_FILES]
        assert subject.startswith("results: tiny run ") and subject.endswith(f"completed (env.n_agents={agents} seed=0)")
        info = json.loads(git(repo, "show", f"{rev}:results/reproduction/runs/{run_id}/info.json"))
        assert len(info["provenance"]["commit"]) == 40  # which code made it travels with the run
    assert git(repo, "status", "--porcelain") == ""

    # Another machine: a fresh clone that lacks the last commit, as if the first machine died before it.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(repo), str(clone))
    git(clone, "reset", "--quiet", "--hard", "HEAD~1")
    code, out, err = sweep(clone, monkeypatch, capsys, "--executor", "debug", "--commit", "--dry-run")
    assert code == 0, err
    assert "2 runs: 1 to submit (0 resume from a checkpoint), 1 completed" in out
    table = out.split("\nrun_key ")[1].split("\n\n")[0].splitlines()[1:]
    assert [row.rsplit("  ", 1)[-1] for row in table] == ["skip (completed)", "submit"]

    code, out, err = sweep(clone, monkeypatch, capsys, "--executor", "debug", "--commit")
    assert code == 0, err
    assert [(r["dir"].name, r["status"]) for r in runs_of(clone / "results" / "reproduction")] == [
        ("1", "COMPLETED"), ("2", "COMPLETED")]
    assert "[asae] debug run 1/1" in out  # only the missing run ran
    assert git(clone, "status", "--porcelain") == ""
    code, out, err = sweep(clone, monkeypatch, capsys, "--executor", "debug", "--commit")
    assert code == 0 and "2 completed" in out and "nothing to submit" in out


def test_runs_already_done_are_committed_by_the_next_sweep(repo, monkeypatch, capsys):
    """A run that completed without --commit (or whose commit failed) goes in with the next --commit sweep."""
    code, _, err = sweep(repo, monkeypatch, capsys, "--executor", "debug")
    assert code == 0, err
    assert git(repo, "ls-files", "results") == ""
    code, out, err = sweep(repo, monkeypatch, capsys, "--executor", "debug", "--commit")
    assert code == 0, err
    assert "committed 8 file(s) of 2 run(s): results: completed runs of tiny not committed yet" in out
    assert sorted(git(repo, "ls-files", "results").split()) == [
        f"results/reproduction/runs/{i}/{f}" for i in (1, 2) for f in RUN_FILES]


@pytest.mark.parametrize("results, why", [
    ("outside", "is not inside a git work tree"),
    ("repo/results", "git ignores the runs in"),
])
def test_commit_where_git_cannot_take_the_runs_is_one_line_before_anything_runs(repo, tmp_path, monkeypatch,
                                                                                capsys, results, why):
    target = tmp_path / results
    code, out, err = sweep(repo, monkeypatch, capsys, "--executor", "debug", "--commit", "--results", str(target))
    assert code == 2 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("asae sweep: --commit: ") and why in line, line
    assert not target.exists()
