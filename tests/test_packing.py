"""Packed seeds (algos/packing.py, experiments/trainer.py): an unpacked run computes exactly what it did
before packing existed, and a pack of S seeds trains each seed as that seed alone would."""
import json
import sys
from pathlib import Path

import pytest
import torch

GOLDEN_DIR = Path(__file__).parent / "data" / "unpacked_golden"
sys.path.insert(0, str(GOLDEN_DIR))

from make import RUNS, golden  # noqa: E402  (the script that made the golden file, run on today's code)

GOLDEN = json.loads((GOLDEN_DIR / "golden.json").read_text())


@pytest.mark.parametrize("name", sorted(RUNS))
def test_unpacked_runs_compute_exactly_what_they_did_before_packing(workdir, name):
    """Metrics (every value logged) and every checkpoint tensor, bit for bit, against runs made with the
    suite before seeds could be packed (tests/data/unpacked_golden/make.py at commit 9acf405)."""
    torch.set_num_threads(1)
    now = golden(name, RUNS[name], "runs")
    then = GOLDEN[name]
    assert now["run_key"] == then["run_key"]
    assert now["counters"] == then["counters"]
    assert now["metrics"] == then["metrics"]
    assert now["learners"] == then["learners"]
