import os
import sys
from pathlib import Path

import pytest

# submitit installs a logging handler bound to the sys.stderr it sees at import. Imported for the first
# time inside a test that uses capsys, that stream is closed at the test's end and the next log record
# (with jax loaded) kills the test process ("lost sys.stderr"). Importing it here binds the handler to
# the session's stream, which lives as long as pytest.
import submitit  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Two cores are shared by the test run: one intra-op thread keeps timings sane and results exact."""
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in an empty directory so results/ of a test never mixes with the repo's."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def asae_cli() -> list[str]:
    """The installed `asae` console script of the interpreter running the tests."""
    return [str(Path(sys.executable).with_name("asae"))]
