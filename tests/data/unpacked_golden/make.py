"""Writes golden.json: metrics and a hash of every checkpoint tensor of short single-seed runs, one per
algorithm (MPE spread) plus ASAE/COMA/QMIX on SMAX 3m. Made with the suite as it was before seeds could
be packed (commit 9acf405); tests/test_packing.py checks that an unpacked run still computes exactly this.

    cd <checkout at that commit> && python <this file> <out.json>
"""
import hashlib
import json
import os
import sys
import tempfile

import torch

from experiments.api import train

RUNS = {f"spread_{a}": {"algo": a} for a in ("asae", "coma", "iql", "vdn", "qmix", "mappo", "ippo", "dop")}
RUNS.update({f"smax3m_{a}": {"algo": a, "env": {"name": "smax", "map_name": "3m"}} for a in ("asae", "coma", "qmix")})
COMMON = {"t_max": 600, "n_envs": 4, "batch_size": 4, "test_interval": 300, "test_episodes": 4, "log_interval": 1,
          "checkpoint_interval": 100_000, "device": "cpu"}


def tensor_hashes(tree, prefix=""):
    out = {}
    if isinstance(tree, torch.Tensor):
        out[prefix] = hashlib.sha1(tree.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    elif isinstance(tree, dict):
        for k, v in tree.items():
            out.update(tensor_hashes(v, f"{prefix}/{k}"))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(tensor_hashes(v, f"{prefix}/{i}"))
    return out


def golden(name, updates, results_dir):
    cfg = {**COMMON, **updates}
    if updates.get("env", {}).get("name") != "smax":
        cfg["env"] = {"name": "mpe_spread", "episode_limit": 25}
    res = train(cfg, results_dir=results_dir)
    metrics = json.loads((res.run_dir / "metrics.json").read_text())
    metrics = {k: m["values"] for k, m in metrics.items() if k != "env_steps_per_sec"}
    state = torch.load(res.run_dir / "checkpoint.pt", weights_only=False)
    return {"config": cfg, "run_key": res.run_key, "metrics": metrics, "learners": tensor_hashes(state["learners"]),
            "counters": state["counters"]}


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        for name, updates in RUNS.items():
            out[name] = golden(name, updates, "runs")
            print(name, "done", file=sys.stderr)
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
