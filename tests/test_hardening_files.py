"""File-system and URL errors give one line and a non-zero exit, never a traceback, and say what is kept:
-F naming a file, a directory without write permission (checked as an unprivileged user: root ignores
file modes), a read-only mount or /proc; ASAE_RESULTS_DIR naming a file; a disk that fills up while
training writes its checkpoint (a real 2 MiB tmpfs); a checkpoint the user may not read; malformed MongoDB
URLs in `train -m`, `sync-mongo --url` and `report --runs`; binary preset files; `sweep --results` naming
a file; `report --out` under /proc, on a read-only mount or on a full disk."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from experiments.cli import main
from tests.conftest import asae_cli
from tests.conftest_slurm import tiny_preset

TINY = ["algo=qmix", "env.backend=batched", "env.n_agents=2", "n_envs=2", "batch_size=8", "test_episodes=2",
        "log_interval=50"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs and switching to an unprivileged "
                                                           "user need root (CI runs as root)")


def asae(*args: str, cwd: Path, prefix: list[str] = (), env: dict | None = None, timeout: float = 300):
    return subprocess.run([*prefix, *asae_cli(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


def one_line(stderr: str, prefix: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, stderr
    return lines[0]


@contextlib.contextmanager
def tmpfs(where: Path, options: str):
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def shared_dir():
    """A directory an unprivileged user can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="asae-hardening-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_results_directories_that_cannot_hold_runs_are_refused_before_a_run(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    cases = [(["-F", "a_file"], {}, "-F 'a_file': it is a file, not a directory"),
             (["-F", "a_file/runs"], {}, "-F 'a_file/runs': a_file is not a directory"),
             (["-F", "/proc/asae-runs"], {}, "-F '/proc/asae-runs': cannot create files in /proc"),
             ([], {"ASAE_RESULTS_DIR": "a_file"}, "ASAE_RESULTS_DIR 'a_file': it is a file, not a directory")]
    for argv, env, says in cases:
        proc = asae("train", *argv, "with", "t_max=10", cwd=tmp_path, env=env)
        assert proc.returncode == 2, proc.stderr
        assert says in one_line(proc.stderr, "asae train:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@needs_root
def test_a_read_only_results_directory_is_refused(tmp_path, shared_dir):
    locked = shared_dir / "locked"
    locked.mkdir(mode=0o555)
    proc = asae("train", "-F", str(locked / "runs"), "with", "t_max=10", cwd=shared_dir, prefix=NOBODY,
                env={"HOME": str(shared_dir)})
    assert proc.returncode == 2, proc.stderr
    assert f"cannot create files in {locked} (Permission denied)" in one_line(proc.stderr, "asae train:")
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        proc = asae("train", "-F", str(ro / "runs"), "with", "t_max=10", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"cannot create files in {ro} (Read-only file system)" in one_line(proc.stderr, "asae train:")


@needs_root
def test_a_disk_that_fills_up_during_training_fails_the_run_and_keeps_the_last_checkpoint(tmp_path):
    from experiments.trainer import read_checkpoint

    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        proc = asae("train", "-F", str(disk / "runs"), "with", *TINY, "t_max=100000", "checkpoint_interval=200",
                    cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        line = one_line(proc.stderr, "asae train:")
        checkpoint = disk / "runs" / "1" / "checkpoint.pt"
        assert f"to {checkpoint} failed (" in line and "the disk is full" in line, line
        assert line.endswith(f"({checkpoint}) is intact; the run FAILED"), line
        kept_at = int(line.split("; the checkpoint at t_env=")[1].split()[0])
        assert read_checkpoint(checkpoint)["counters"]["t_env"] == kept_at
        assert not [p for p in checkpoint.parent.iterdir() if ".tmp" in p.name]


@needs_root
def test_a_checkpoint_the_user_may_not_read_is_refused_before_a_run(shared_dir):
    first = asae("train", "-F", str(shared_dir / "runs"), "with", *TINY, "t_max=100", "checkpoint_interval=50",
                 cwd=shared_dir)
    assert first.returncode == 0, first.stderr
    checkpoint = shared_dir / "runs" / "1" / "checkpoint.pt"
    checkpoint.chmod(0o600)
    (shared_dir / "mine").mkdir()
    (shared_dir / "mine").chmod(0o777)
    proc = asae("train", "-F", str(shared_dir / "mine"), "with", *TINY, "t_max=200", f"resume_from={checkpoint}",
                cwd=shared_dir, prefix=NOBODY, env={"HOME": str(shared_dir)})
    assert proc.returncode == 2, proc.stderr
    assert f"checkpoint {checkpoint} cannot be read (Permission denied)" in one_line(proc.stderr, "asae train:")
    assert list((shared_dir / "mine").iterdir()) == []


BAD_URLS = [
    ("mongodb://localhost:27017/asae?authSource=", "the authSource database cannot be an empty string"),
    ("mongodb://localhost:99999/asae", "Port must be an integer between 0 and 65535"),
    ("mongodb://:@/", "is not valid"),
    ("mongodb://localhost/a/b", "is not valid"),
    ("http://localhost:27017/asae", "not a mongodb:// URL"),
]


@pytest.mark.parametrize("url, says", BAD_URLS, ids=["empty-authsource", "port", "empty-user", "db-slash", "http"])
def test_a_malformed_mongodb_url_is_one_line_everywhere(tmp_path, capsys, url, says):
    for argv, prefix in ((["train", "-F", str(tmp_path / "runs"), "-m", url, "with", "t_max=10"], "asae train:"),
                         (["sync-mongo", "--url", url, str(tmp_path)], "asae sync-mongo:"),
                         (["report", "table1", "--runs", url, "--out", str(tmp_path / "out")], "asae report:")):
        if argv[0] == "report" and "://" in url and not url.startswith("mongodb"):
            continue  # not a MongoDB URL: report reads it as a directory name
        assert main(argv) == 2
        line = one_line(capsys.readouterr().err, prefix)
        assert "MongoDB URL" in line and says in line, line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_binary_presets_and_a_results_file_give_one_line(tmp_path, capsys):
    binary = tmp_path / "presets" / "blob.toml"
    binary.parent.mkdir()
    binary.write_bytes(bytes(range(256)) * 4)
    assert main(["sweep", str(binary), "--dry-run"]) == 2
    assert "blob.toml: not a TOML preset (not UTF-8 text: byte 0x80 at offset 128)" in one_line(
        capsys.readouterr().err, "asae sweep:")
    assert main(["sweep", "list", "--preset-dir", str(binary.parent)]) == 2
    assert "not a TOML preset" in one_line(capsys.readouterr().err, "asae sweep:")
    preset = tiny_preset(tmp_path)
    (tmp_path / "a_file").write_text("x")
    for results in ("a_file", "a_file/deeper"):
        assert main(["sweep", str(preset), "--results", str(tmp_path / results), "--executor", "local"]) == 2
        assert "is not a directory; name the directory the runs and sweep logs go to" in one_line(
            capsys.readouterr().err, "asae sweep:")
    assert (tmp_path / "a_file").read_text() == "x"


@pytest.fixture(scope="module")
def some_runs(tmp_path_factory):
    from sacred.observers import FileStorageObserver
    from test_analysis_support import curve, make_experiment, run

    root = tmp_path_factory.mktemp("results")
    ex = make_experiment()
    for seed in range(2):
        run(ex, [FileStorageObserver(str(root / "runs"))], seed=seed, run_key=f"k{seed}",
            metrics={"test_battle_won_mean": curve(0.5 + seed / 4)})
    return root


def test_report_out_under_proc_is_refused_before_reading_runs(some_runs, capsys):
    assert main(["report", "table1", "--runs", str(some_runs), "--any-settings", "--out", "/proc/asae-report"]) == 2
    assert "the directory '/proc' is not writable" in one_line(capsys.readouterr().err, "asae report:")


@needs_root
def test_report_out_on_a_read_only_or_full_disk_is_one_line(tmp_path, some_runs):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        proc = asae("report", "table1", "--runs", str(some_runs), "--any-settings", "--out", str(ro / "r"), cwd=tmp_path)
        assert proc.returncode == 2
        assert "is not writable (Read-only file system)" in one_line(proc.stderr, "asae report:")
    with tmpfs(tmp_path / "full", "size=1m") as full:
        with contextlib.suppress(OSError), open(full / "filler", "wb") as f:
            f.write(b"\0" * 2**20)
        proc = asae("report", "all", "--runs", str(some_runs), "--any-settings", "--out", str(full / "r"), cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        line = one_line(proc.stderr, "asae report:")
        assert f"{full / 'r'}/" in line and "No space left on device; files written before it are whole" in line, line
        assert not [p for p in (full / "r").rglob("*.tmp")]
