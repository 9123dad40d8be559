"""A run's identity (run_key) survives new options, and the reproduction's committed runs stay found.

The sweep finds a completed run again by its run_key, a hash of its resolved config. An option added to
the code appears in every resolved config, so without care it would change every key and orphan every
committed run (results/reproduction/runs), which the next sweep would then run again.
"""
import json
from pathlib import Path

import pytest

from experiments import config as run_config
from experiments.api import resolve_config
from experiments.sweeps import expand, load_preset, locate, resolve

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "reproduction" / "runs"


def test_an_option_added_later_at_its_old_behaviour_leaves_the_key_unchanged():
    before = resolve_config({"algo": "qmix", "env": {"name": "mpe_spread"}, "t_max": 1000})
    key = before["run_key"]
    old = json.loads(json.dumps(before))  # what a run completed before both options existed recorded
    del old["env"]["timeout"], old["learner"]["standardise_rewards"]
    assert run_config.run_key(old) == key
    # another value computes something else: a new key
    for section, name, value in (("env", "timeout", "terminal"), ("learner", "standardise_rewards", True)):
        changed = json.loads(json.dumps(before))
        changed[section][name] = value
        assert run_config.run_key(changed) != key, (section, name)
    # only the recorded value in its own type counts (0 is not False)
    zero = json.loads(json.dumps(before))
    zero["learner"]["standardise_rewards"] = 0
    assert run_config.run_key(zero) != key


def test_options_added_later_name_real_options_with_their_defaults():
    resolved = {"mpe_spread": resolve_config({"algo": "qmix", "env": {"name": "mpe_spread"}}),
                "predator_prey": resolve_config({"algo": "vdn", "env": {"name": "predator_prey"}})}
    for path, value in run_config.ADDED_LATER.items():
        for name, cfg in resolved.items():
            node = cfg
            for part in path:
                node = node[part]
            assert node == value, (name, path)


def _committed_runs():
    runs = {}
    for cfg_file in sorted(COMMITTED.glob("*/config.json")):
        status = cfg_file.with_name("run.json")
        if not status.is_file() or json.loads(status.read_text()).get("status") != "COMPLETED":
            continue  # only completed runs are committed; a sweep may be running beside the tests
        cfg = json.loads(cfg_file.read_text())
        presets = [t.split(":", 1)[1] for t in cfg.get("tags", []) if t.startswith("preset:")]
        runs.setdefault(presets[0] if presets else None, []).append((cfg_file.parent.name, cfg))
    return runs


@pytest.mark.skipif(not COMMITTED.is_dir(), reason="no committed reproduction runs in this checkout")
def test_every_committed_reproduction_run_is_found_by_its_sweep():
    """Each committed run's key is one its preset's sweep expands to today, and its recorded config still
    hashes to that key. A change that alters what these runs compute (a new default) fails here on
    purpose: the orphaned runs must then be deleted and rerun, not left to mislead the report."""
    runs = _committed_runs()
    assert None not in runs, f"committed runs without a preset tag: {[d for d, _ in runs.get(None, [])]}"
    for name, committed in runs.items():
        preset = load_preset(locate(name))
        keys = {cfg["run_key"] for cfg in resolve(preset, expand(preset))}
        for run_dir, cfg in committed:
            assert run_config.run_key(cfg) == cfg["run_key"], f"{name} run {run_dir}: its config no longer hashes to its key"
            assert cfg["run_key"] in keys, (f"{name} run {run_dir} ({cfg['algo']}, seed {cfg['seed']}): the sweep no "
                                           "longer expands to its key; a default changed what it computes")
