"""Shared helpers of the analysis tests: a tiny real Sacred experiment that logs given metric values.

Runs are written by Sacred's own observers (FileStorageObserver; MongoObserver against mongomock:
no MongoDB server runs on these machines), so the loaders are tested on the exact files and documents
Sacred produces, not on hand-made imitations. The one test here checks the helper itself.
"""
from __future__ import annotations

import warnings
from typing import Callable

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from sacred import Experiment  # noqa: E402

# Called inside a run's main function (after its metrics are flushed), e.g. to look at a RUNNING run.
DURING_RUN: list[Callable] = []
# What the next run logs and whether it fails: test data, kept out of the run's config so that it does not
# read as a setting that differs between runs (analysis.loaders.run_settings).
PLAN: dict = {"metrics": {}, "fail": False}


def make_experiment() -> Experiment:
    ex = Experiment("analysis-test", save_git_info=False)

    @ex.config
    def config():
        algo = "asae"  # noqa: F841
        env = {}  # run() fills in SMAX 3m unless given  # noqa: F841
        learner = {}  # noqa: F841
        teams = {}  # noqa: F841
        seed = 0  # noqa: F841
        run_key = ""  # noqa: F841
        n_envs = 4  # noqa: F841
        torch_threads = 1  # noqa: F841
        tags = []  # noqa: F841
        t_max = None  # noqa: F841
        lr = 0.001  # noqa: F841

    @ex.main
    def main(_run, env, learner, teams):  # taking env/learner/teams lets a run add any key to them
        metrics, fail = PLAN["metrics"], PLAN["fail"]
        for name, points in metrics.items():
            for step, value in points:
                _run.log_scalar(name, value, step)
        if DURING_RUN:
            _run._emit_heartbeat()  # flush metrics and info to the observers, as Sacred does every 10 s
            for hook in DURING_RUN:
                hook(_run)
        if fail:
            raise RuntimeError("this run fails on purpose")
        return {"t_env": max((p[0] for pts in metrics.values() for p in pts), default=0)}

    return ex


def curve(final: float, steps: int = 5, every: int = 1000) -> list[list[float]]:
    """A rising curve from 0 to ``final`` at steps 0, every, 2 * every, ..."""
    return [[k * every, final * k / (steps - 1)] for k in range(steps)]


def run(ex: Experiment, observers: list, during: Callable | None = None, metrics: dict | None = None,
        fail: bool = False, **config):
    """One run of ``ex`` logging ``metrics`` (name -> [[step, value], ...]); ``fail`` makes it raise."""
    config.setdefault("env", {"name": "smax", "map_name": "3m"})
    ex.observers[:] = observers
    DURING_RUN[:] = [during] if during else []
    PLAN.update(metrics=metrics or {}, fail=fail)
    try:
        return ex.run(config_updates=config, options={"--capture": "no", "--loglevel": "ERROR"})
    finally:
        DURING_RUN.clear()
        PLAN.update(metrics={}, fail=False)


def test_helper_logs_the_given_values(tmp_path):
    from sacred.observers import FileStorageObserver

    r = run(make_experiment(), [FileStorageObserver(str(tmp_path))],
            metrics={"test_battle_won_mean": curve(1.0)}, run_key="k")
    assert r.status == "COMPLETED"
    logged = r.observers[0].dir
    import json
    from pathlib import Path

    values = json.loads((Path(logged) / "metrics.json").read_text())["test_battle_won_mean"]["values"]
    assert values == [0.0, 0.25, 0.5, 0.75, 1.0]


def plateau(final: float, steps: int = 6, every: int = 1000, flat: int = 3) -> list[list[float]]:
    """A curve that rises from 0 and then stays at ``final`` for its last ``flat`` evaluations (a run that
    has settled, so the mean of its last few evaluations is ``final``)."""
    rise = steps - flat
    return [[k * every, final * min(k, rise) / rise] for k in range(steps)]
