"""Scripted baselines (results/baselines/*.json, written by `asae baselines`) as a frame the tables,
figures and claims can draw: per env config and policy, its win rate and return with 95% intervals."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

BASELINES_DIR = Path(__file__).resolve().parents[1] / "results" / "baselines"
# Env options that change neither what a fixed policy does nor what it scores.
IGNORED_ENV_KEYS = frozenset({"backend", "timeout"})
COLUMNS = ["file", "env", "map", "N", "policy", "label", "win_rate", "win_lo", "win_hi", "return_mean",
           "return_lo", "return_hi", "n_episodes", "metric", "env_cfg"]


def _pair(value: Any) -> tuple[float, float]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        try:
            return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            pass
    return math.nan, math.nan


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def load_baselines(directory: str | Path | None = None) -> pd.DataFrame:
    """Every policy of every baseline file in ``directory`` (default results/baselines), one row each.
    A file that is missing, unreadable or not a baseline record is left out (the report then shows none)."""
    directory = Path(directory) if directory else BASELINES_DIR
    rows = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        env = data.get("env") if isinstance(data, Mapping) else None
        policies = data.get("policies") if isinstance(data, Mapping) else None
        if not isinstance(env, Mapping) or not isinstance(policies, Mapping):
            continue
        n = next((env[k] for k in ("n_agents", "N", "n_predators") if k in env), None)
        for key, p in policies.items():
            if not isinstance(p, Mapping):
                continue
            win_lo, win_hi = _pair(p.get("win_ci"))
            ret_lo, ret_hi = _pair(p.get("return_ci"))
            rows.append({"file": path.name, "env": env.get("name"), "map": env.get("map_name"), "N": n,
                         "policy": key, "label": str(p.get("label") or key), "win_rate": _float(p.get("win_rate")),
                         "win_lo": win_lo, "win_hi": win_hi, "return_mean": _float(p.get("return_mean")),
                         "return_lo": ret_lo, "return_hi": ret_hi, "n_episodes": data.get("n_episodes"),
                         "metric": data.get("metric"), "env_cfg": json.dumps(dict(env), sort_keys=True, default=str)})
    return pd.DataFrame(rows, columns=COLUMNS)


def env_matches(run_env: Mapping, baseline_env: Mapping) -> bool:
    """A baseline measured on ``baseline_env`` applies to a run of ``run_env``: same env name and every
    option both record equal (backend and timeout aside)."""
    if run_env.get("name") != baseline_env.get("name"):
        return False
    for key in set(run_env) & set(baseline_env) - IGNORED_ENV_KEYS:
        a, b = run_env[key], baseline_env[key]
        if a != b and not (_float(a) == _float(b)):
            return False
    return True


def for_runs(baselines: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """The baselines that apply to some run of ``frame`` (by its env config, the `env.*` columns)."""
    if baselines.empty or frame.empty:
        return baselines.iloc[0:0]
    env_cols = [c for c in frame.columns if str(c).startswith("env.")]
    runs = frame.drop_duplicates("run_id")[env_cols]
    envs = []
    for _, r in runs.iterrows():
        cfg = {c[4:]: r[c] for c in env_cols if "." not in c[4:] and not _missing(r[c])}
        if cfg not in envs:
            envs.append(cfg)
    keep = [any(env_matches(e, json.loads(cfg)) for e in envs) for cfg in baselines["env_cfg"]]
    return baselines[keep].reset_index(drop=True)


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
