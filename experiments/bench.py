"""`asae bench`: what a user pays per experiment on this machine.

For every task (an env config) and number of parallel envs B it measures:

- env only: random valid actions (the project's ``RandomController``) through the cycle the runner uses
  (all B envs reset together, stepped until every one is done), env steps counted as ``t_env`` counts
  them (steps of envs still playing). This is the ceiling a trainer could reach.
- per algorithm: the real ``experiments.trainer.Trainer`` (config resolved exactly as ``asae train``
  would, ``Trainer.train()`` running its own loop), with timers wrapped around ``Trainer._collect``
  and each learner's ``train``: training env-steps/s (collection + updates, what the trainer's own
  ``env_steps_per_sec`` measures), learner update time per batch and collection time per iteration.
  No test episodes, no checkpoints, no logging beyond the first iteration.

Every figure is the median over ``--repeats`` repeats, shown with its min-max. A repeat is
``--iters`` iterations (env only: the same number of collection rounds), after ``--warmup`` iterations
that are not timed (JIT compilation, allocator warm-up, replay filling for off-policy learners).

Memory: each measurement runs in its own child process (``python -m experiments.bench --worker``), so
its peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) is its own: ``peak_rss_mb`` is the
child's lifetime peak (imports included: what a job's memory request must cover), ``work_rss_mb``
the part above the peak reached right after the imports. ``--in-process`` runs everything in this
process instead (faster to start; peaks then mix and only grow).

``--update-only`` times the learners' ``train`` alone, on one fixed batch: the trainer collects one
iteration's episodes with the initial policy (seeded), then each learner trains on that same batch,
``--warmup`` untimed calls (off-policy learners: until their replay can sample) and ``--repeats`` x
``--iters`` timed ones. Without the iteration-to-iteration change of episode lengths that moves the
full measurement's update times, it compares learner changes or algorithms closely.

``--profile`` adds one cProfile'd iteration after the timed ones: Python-level calls (as cProfile
counts them: Python functions and builtins such as torch ops) per vectorized env step during collection
and per learner update, with the top entries by own time.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import pstats
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from datetime import datetime, timezone
from typing import Any

from validation import ConfigError

FIXED_TASKS = {
    "predator_prey": {"name": "predator_prey"},
}
TASK_PATTERNS = [
    (re.compile(r"^spread(\d+)$"), lambda m: {"name": "mpe_spread", "n_agents": int(m[1])}),
    (re.compile(r"^smax_(\w+)$"), lambda m: {"name": "smax", "map_name": m[1]}),
]
TASK_HELP = "spreadN (mpe_spread with N agents, e.g. spread3, spread5), smax_MAP (e.g. smax_3m, smax_3s5z), predator_prey"
# Settings that make the trainer only collect and update: no tests, no checkpoints, one log line.
NEVER = 10**15
TOP_ENTRIES = 15
RESULT_TAG = "ASAE_BENCH_RESULT "


# --- command line ---------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, through the CLI's ConfigError handling (exit 2)
        raise ConfigError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="asae bench", description=__doc__.split("\n\n")[0],
                epilog="example: asae bench --task smax_3m,spread5 --algos asae,coma --n-envs 1,8,32 --out bench.json")
    p.add_argument("--task", help=f"comma-separated presets: {TASK_HELP} (default spread3)")
    p.add_argument("--env", help="an env name (see `asae list`), with options from --env-arg")
    p.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="env option, repeatable (with --env, or over every --task)")
    p.add_argument("--algos", default="asae,coma", help="comma-separated algorithms (default asae,coma)")
    p.add_argument("--learner-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="learner hyper-parameter for every algo, repeatable (e.g. m=10)")
    p.add_argument("--n-envs", default="1,8,32", help="comma-separated numbers of parallel envs (default 1,8,32)")
    p.add_argument("--batch-size", default=None,
                   help="episodes per update (default: the number of envs, one collection round per update)")
    p.add_argument("--repeats", default="5", help="timed repeats per figure (default 5)")
    p.add_argument("--iters", default="2", help="iterations (env only: collection rounds) per repeat (default 2)")
    p.add_argument("--warmup", default="1", help="untimed iterations before the repeats (default 1)")
    p.add_argument("--min-time", default="0", help="a repeat also lasts at least this many seconds (default 0)")
    p.add_argument("--no-env-only", action="store_true", help="skip the env-only ceiling")
    p.add_argument("--update-only", action="store_true",
                   help="time each learner's update alone on one fixed batch (no env-only, no collection timing)")
    p.add_argument("--profile", action="store_true", help="add a cProfile'd iteration: calls per step, top entries")
    p.add_argument("--device", default="cpu", help="device of the learners: cpu (default), cuda, cuda:N or auto")
    p.add_argument("--threads", default="1", help="torch intra-op threads (the trainer's torch_threads; default 1)")
    p.add_argument("--seed", default="0")
    p.add_argument("--pack", default="1", help="comma-separated numbers of seeds trained as one pack per process "
                   "(default 1: unpacked); rates are summed over the pack's seeds")
    p.add_argument("--in-process", action="store_true", help="no child process per measurement (memory peaks mix)")
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _int_list(text: str, flag: str, minimum: int = 1) -> list[int]:
    values = [_number(part, flag, int, minimum) for part in text.split(",") if part.strip()]
    if not values:
        raise ConfigError(f"{flag}={text!r} is empty; give comma-separated whole numbers, e.g. 1,8,32")
    return values


def _number(text: str, flag: str, kind=int, minimum: float = 1):
    try:
        value = kind(text.strip())
    except ValueError:
        raise ConfigError(f"{flag}={text!r} is not a {'whole number' if kind is int else 'number'}") from None
    if value < minimum or (kind is float and not math.isfinite(value)):
        raise ConfigError(f"{flag}={text!r} must be at least {minimum}")
    return value


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word is a string: map_name=3m


def _key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r} is not KEY=VALUE")
        out[key.strip()] = _parse_value(value.strip())
    return out


def check_out(path: str | None) -> Path | None:
    """The --out file, checked before any measurement: its directory must exist and be writable."""
    if not path:
        return None
    out = Path(path)
    where = out.parent
    if out.is_dir():
        raise ConfigError(f"--out {path!r} is a directory; give a file path, e.g. bench.json")
    if not where.is_dir():
        raise ConfigError(f"--out {path!r}: the directory {str(where)!r} does not exist")
    if not os.access(where, os.W_OK):
        raise ConfigError(f"--out {path!r}: the directory {str(where)!r} is not writable")
    return out


def resolve_tasks(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Task label -> env config dict ({"name": ..., options})."""
    import envs

    env_args = _key_values(args.env_arg, "--env-arg")
    if args.env and args.task:
        raise ConfigError("give either --task or --env, not both")
    if args.env:
        if args.env not in envs.ENVS:
            raise ConfigError(f"unknown env {args.env!r}; valid envs are: {', '.join(sorted(envs.ENVS))}")
        label = args.env + "".join(f",{k}={v}" for k, v in env_args.items())
        tasks = {label: {"name": args.env, **env_args}}
    else:
        tasks = {}
        for name in (args.task or "spread3").split(","):
            name = name.strip()
            if not name:
                continue
            cfg = FIXED_TASKS.get(name)
            for pattern, build in TASK_PATTERNS:
                if cfg is None and (m := pattern.match(name)):
                    cfg = build(m)
            if cfg is None:
                raise ConfigError(f"unknown task {name!r}; valid tasks are: {TASK_HELP}")
            tasks[name] = {**cfg, **env_args}
        if not tasks:
            raise ConfigError(f"--task is empty; valid tasks are: {TASK_HELP}")
    for cfg in tasks.values():
        envs.env_config(cfg)  # validates (one line naming the bad key or value)
    return tasks


def run_config(env: dict[str, Any], algo: str, learner: dict[str, Any], n_envs: int, batch_size: int,
               settings: dict[str, Any]) -> dict[str, Any]:
    """The full config `asae train` would run, with tests, checkpoints and logging pushed out of the way."""
    from experiments.api import resolve_config

    return resolve_config({
        "algo": algo, "env": env, "learner": learner, "n_envs": n_envs, "batch_size": batch_size,
        "seed": settings["seed"], "device": settings["device"], "torch_threads": settings["threads"],
        "t_max": NEVER, "test_interval": NEVER, "test_episodes": 0, "log_interval": NEVER,
        "checkpoint_interval": NEVER, "progress": "off",
    })


# --- measurements (run in a child process unless --in-process) ---------------------------------------
def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    scale = 1 / 1024 ** 2 if sys.platform == "darwin" else 1 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": [round(v, 6) for v in values]}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _profile_summary(prof: cProfile.Profile, per: float) -> dict[str, Any]:
    stats = pstats.Stats(prof)
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():
        label = f"{func}" if filename == "~" else f"{os.path.relpath(filename) if not filename.startswith('<') else filename}:{line}({func})"
        rows.append({"function": label, "ncalls": ncalls, "calls_per_unit": ncalls / per,
                     "tottime_ms": 1000 * tottime, "cumtime_ms": 1000 * cumtime})
    rows.sort(key=lambda r: -r["tottime_ms"])
    return {"calls": stats.total_calls, "calls_per_unit": stats.total_calls / per,
            "seconds": stats.total_tt, "top": rows[:TOP_ENTRIES]}


def _env_step_calls(prof: cProfile.Profile, env) -> int:
    """How many times the env's vectorized ``step`` ran under ``prof``."""
    import inspect

    code = type(env).step.__code__
    for (filename, line, func), (_cc, ncalls, *_rest) in pstats.Stats(prof).stats.items():
        if func == "step" and filename == code.co_filename and line == code.co_firstlineno:
            return ncalls
    raise RuntimeError(f"no calls of {inspect.getsourcefile(type(env))}:{type(env).__name__}.step in the profile")


def measure_env(spec: dict[str, Any]) -> dict[str, Any]:
    """Random valid actions, the runner's reset/step cycle, no learner: env steps per second."""
    import numpy as np
    import torch

    from algos.base import RandomController
    from envs import make_env

    base_rss = _peak_rss_mb()
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    env = make_env(spec["env"], spec["n_envs"])
    b = env.n_envs
    controller = RandomController()
    rng = np.random.default_rng([spec["seed"], 0])

    def play_round() -> int:
        obs = env.reset([int(s) for s in rng.integers(0, 2**31 - 1, size=b)])
        done = torch.zeros(b, dtype=torch.bool)
        steps = 0
        for _ in range(env.info.episode_limit):
            actions = {name: controller.act(team_obs, None, None, 0, False)[0] for name, team_obs in obs.items()}
            result = env.step(actions)
            steps += int((~done).sum())
            done |= result.terminated | result.truncated
            obs = result.obs
            if bool(done.all()):
                break
        return steps

    rounds = spec["iters"] * spec["rounds"]
    for _ in range(spec["warmup"] * spec["rounds"]):
        play_round()
    rates, cpu_rates, total_steps = [], [], 0
    for _ in range(spec["repeats"]):
        steps, done_rounds, start, cpu_start = 0, 0, time.perf_counter(), time.process_time()
        while done_rounds < rounds or time.perf_counter() - start < spec["min_time"]:
            steps += play_round()
            done_rounds += 1
        rates.append(steps / (time.perf_counter() - start))
        cpu_rates.append(steps / max(time.process_time() - cpu_start, 1e-9))
        total_steps += steps
    out = {"env_steps_per_sec": _summary(rates), "env_steps_per_cpu_sec": _summary(cpu_rates), "env_steps": total_steps}
    if spec["profile"]:
        prof = cProfile.Profile()
        prof.enable()
        play_round()
        prof.disable()
        out["profile"] = {"per_env_step_call": _profile_summary(prof, _env_step_calls(prof, env))}
    env.close()
    peak = _peak_rss_mb()
    return {**out, "peak_rss_mb": peak, "work_rss_mb": peak - base_rss}


class _TrainingProbe:
    """Timers around ``Trainer._collect`` and every learner's ``train``; ends the run through the trainer's
    own graceful stop (its stop event, checked after each iteration) once the warm-up, the repeats and
    the profiled iteration are done."""

    def __init__(self, trainer, spec: dict[str, Any]):
        self.trainer, self.spec = trainer, spec
        self.iterations: list[dict[str, float]] = []  # per iteration: collect_s, update_s, steps
        self.repeat_bounds: list[tuple[int, int]] = []  # [start, end) iteration indices of each repeat
        self.repeat_start: int | None = None
        self.profiled: dict[str, Any] = {}
        self.profiling = False  # the current iteration runs under cProfile (after the repeats)
        collect = trainer._collect
        learners = list(trainer.learners.items())

        def timed_collect(test_mode, n_episodes, rng):
            if test_mode:  # not a training iteration (the config runs no tests; kept apart all the same)
                return collect(test_mode, n_episodes, rng)
            self.iterations.append({"collect_s": 0.0, "update_s": 0.0, "cpu_s": 0.0, "steps": 0})
            prof = self._profiler()
            _sync(trainer.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            out = collect(test_mode, n_episodes, rng)
            _sync(trainer.device)
            self.iterations[-1].update(collect_s=time.perf_counter() - start, steps=sum(out[2]))
            self.iterations[-1]["cpu_s"] += time.process_time() - cpu_start
            if prof is not None:
                prof.disable()
                self.profiled["collect"] = _profile_summary(prof, _env_step_calls(prof, trainer.env))
            return out

        trainer._collect = timed_collect
        for i, (team, learner) in enumerate(learners):
            learner.train = self._timed_train(learner.train, team, last=i == len(learners) - 1)

    def _profiler(self) -> cProfile.Profile | None:
        if not self.profiling:
            return None
        prof = cProfile.Profile()
        prof.enable()
        return prof

    def _timed_train(self, train, team: str, last: bool):
        def timed(batch, t_env, episodes):
            prof = self._profiler()
            _sync(self.trainer.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            metrics = train(batch, t_env, episodes)
            _sync(self.trainer.device)
            self.iterations[-1]["update_s"] += time.perf_counter() - start
            self.iterations[-1]["cpu_s"] += time.process_time() - cpu_start
            if prof is not None:
                prof.disable()
                self.profiled[f"update/{team}"] = _profile_summary(prof, 1)
            if last:
                self._end_iteration()
            return metrics
        return timed

    def _end_iteration(self) -> None:
        spec, n = self.spec, len(self.iterations) - 1
        if self.profiling:
            self.trainer.stop_event.set()
            return
        if n < spec["warmup"]:
            return
        if self.repeat_start is None:
            self.repeat_start = n
        its = self.iterations[self.repeat_start:n + 1]
        if len(its) >= spec["iters"] and sum(it["collect_s"] + it["update_s"] for it in its) >= spec["min_time"]:
            self.repeat_bounds.append((self.repeat_start, n + 1))
            self.repeat_start = None
        if len(self.repeat_bounds) == spec["repeats"]:
            if spec["profile"]:
                self.profiling = True  # one more iteration, under cProfile
            else:
                self.trainer.stop_event.set()  # the trainer stops after this iteration

    def results(self) -> dict[str, Any]:
        rates, cpu_rates, update_ms, collect_ms, steps = [], [], [], [], 0
        for lo, hi in self.repeat_bounds:
            its = self.iterations[lo:hi]
            seconds = sum(it["collect_s"] + it["update_s"] for it in its)
            rates.append(sum(it["steps"] for it in its) / seconds)
            cpu_rates.append(sum(it["steps"] for it in its) / max(sum(it["cpu_s"] for it in its), 1e-9))
            update_ms.append(1000 * statistics.mean(it["update_s"] for it in its))
            collect_ms.append(1000 * statistics.mean(it["collect_s"] for it in its))
            steps += sum(it["steps"] for it in its)
        out = {"env_steps_per_sec": _summary(rates), "env_steps_per_cpu_sec": _summary(cpu_rates),
               "update_ms": _summary(update_ms),
               "collect_ms": _summary(collect_ms), "env_steps": steps,
               "iterations": sum(hi - lo for lo, hi in self.repeat_bounds)}
        if self.profiled:
            out["profile"] = self.profiled
        return out


def _trainer(spec: dict[str, Any]):
    """The Trainer of a measurement's config: no checkpoints, no progress output; with ``pack`` S > 1, a
    pack of the seeds seed .. seed + S - 1."""
    from experiments.config import validate
    from experiments.trainer import MetricLogger, Trainer

    cfg = validate(spec["config"])
    n = spec.get("pack", 1)
    if n == 1:
        return Trainer(cfg, MetricLogger(), checkpoint_dir=None, progress="off")
    cfgs = [validate({**spec["config"], "seed": cfg.seed + i}) for i in range(n)]
    return Trainer.pack(cfgs, [MetricLogger() for _ in cfgs], [None] * n, progress="off")


def _replay_fill_iterations(trainer) -> int:
    """Off-policy learners start updating once their replay holds a batch: the iterations that fill it
    (0 when a team learns on-policy: an iteration then collects a whole batch)."""
    if any(type(learner).on_policy for learner in trainer.learners.values()):
        return 0
    return math.ceil(trainer.cfg.batch_size / trainer.cfg.n_envs)


def measure_training(spec: dict[str, Any]) -> dict[str, Any]:
    """The real Trainer collecting and updating; see ``_TrainingProbe`` for what is timed."""
    from experiments.trainer import Stopped

    base_rss = _peak_rss_mb()
    trainer = _trainer(spec)
    spec = {**spec, "warmup": spec["warmup"] + _replay_fill_iterations(trainer)}
    probe = _TrainingProbe(trainer, spec)
    try:
        trainer.train()
    except Stopped:
        pass
    out = probe.results()
    out["rounds_per_iteration"] = trainer.rounds
    peak = _peak_rss_mb()
    return {**out, "peak_rss_mb": peak, "work_rss_mb": peak - base_rss}


def measure_update(spec: dict[str, Any]) -> dict[str, Any]:
    """Each learner's ``train`` on one fixed batch (collected once, initial policy, seeded)."""
    base_rss = _peak_rss_mb()
    trainer = _trainer(spec)
    batches, _, steps = trainer._collect(False, trainer.rounds * trainer.cfg.n_envs, [m.train_rng for m in trainer.members])
    out: dict[str, Any] = {"env_steps": sum(steps), "update_ms": {}, "batch": {}}
    profiles = {}
    warmup = spec["warmup"] + _replay_fill_iterations(trainer)
    for team, learner in trainer.learners.items():
        batch = batches[team]
        for _ in range(warmup):
            learner.train(batch, 0, 0)
        per_repeat = []
        for _ in range(spec["repeats"]):
            times = []
            for _ in range(spec["iters"]):
                _sync(trainer.device)
                start = time.perf_counter()
                learner.train(batch, 0, 0)
                _sync(trainer.device)
                times.append(time.perf_counter() - start)
            per_repeat.append(1000 * statistics.mean(times))
        out["update_ms"][team] = _summary(per_repeat)
        out["batch"][team] = {"episodes": batch.batch_size, "max_t": batch.max_t, "real_steps": int(batch.filled.sum())}
        if spec["profile"]:
            prof = cProfile.Profile()
            prof.enable()
            learner.train(batch, 0, 0)
            prof.disable()
            profiles[f"update/{team}"] = _profile_summary(prof, 1)
    if len(out["update_ms"]) == 1:  # one learning team (the usual case): a plain summary, like the other kinds
        out["update_ms"] = next(iter(out["update_ms"].values()))
    if profiles:
        out["profile"] = profiles
    peak = _peak_rss_mb()
    return {**out, "peak_rss_mb": peak, "work_rss_mb": peak - base_rss}


def run_measurement(spec: dict[str, Any]) -> dict[str, Any]:
    kinds = {"env_only": measure_env, "train": measure_training, "update": measure_update}
    return kinds[spec["kind"]](spec)


def _worker() -> int:
    spec = json.loads(sys.stdin.read())
    print(RESULT_TAG + json.dumps(run_measurement(spec)), flush=True)
    return 0


def _in_child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "experiments.bench", "--worker"], input=json.dumps(spec),
                          capture_output=True, text=True, cwd=os.getcwd())
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    raise _MeasurementFailed(lines[-1] if lines else f"exit status {proc.returncode}")


class _MeasurementFailed(Exception):
    pass


# --- report -----------------------------------------------------------------------------------------
def _fmt_rate(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    k = lambda v: f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"  # noqa: E731
    return f"{k(s['median'])} [{k(s['min'])}-{k(s['max'])}]"


def _fmt_ms(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    return f"{s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}]"


def _ratio(num: dict[str, Any], den: dict[str, Any]) -> dict[str, float]:
    """num/den of medians, with the widest range the repeats allow."""
    return {"median": num["median"] / den["median"], "min": num["min"] / den["max"], "max": num["max"] / den["min"]}


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    groups: dict[tuple, dict[str, dict]] = {}
    for r in results:
        groups.setdefault((r["task"], r["n_envs"], r["batch_size"], r.get("pack", 1)), {})[r["algo"] or "env_only"] = r
    for (task, n_envs, batch_size, pack), by in groups.items():
        entry: dict[str, Any] = {"task": task, "n_envs": n_envs, "batch_size": batch_size, "pack": pack}
        env_only = by.get("env_only")
        if pack > 1:  # per-core throughput of the pack over the same algorithm unpacked
            singles = {r["algo"]: r for r in results if (r["task"], r["n_envs"], r["batch_size"], r.get("pack", 1))
                       == (task, n_envs, batch_size, 1) and r["algo"]}
            entry["pack_over_single_per_cpu_s"] = {
                algo: _ratio(r["env_steps_per_cpu_sec"], singles[algo]["env_steps_per_cpu_sec"])
                for algo, r in by.items() if algo in singles and "env_steps_per_cpu_sec" in r}
            entry["pack_over_single_rss"] = {algo: r["peak_rss_mb"] / singles[algo]["peak_rss_mb"]
                                             for algo, r in by.items() if algo in singles}
        if env_only:
            entry["train_over_env_only"] = {
                algo: _ratio(r["env_steps_per_sec"], env_only["env_steps_per_sec"])
                for algo, r in by.items() if algo != "env_only"}
        if "asae" in by and "coma" in by:
            asae, coma = by["asae"], by["coma"]
            if "env_steps_per_sec" in asae and "env_steps_per_sec" in coma:
                # time per env step = 1 / rate, so ASAE's time over COMA's is COMA's rate over ASAE's
                entry["asae_over_coma_time_per_step"] = _ratio(coma["env_steps_per_sec"], asae["env_steps_per_sec"])
            elif "median" in asae.get("update_ms", {}) and "median" in coma.get("update_ms", {}):
                entry["asae_over_coma_update"] = _ratio(asae["update_ms"], coma["update_ms"])
        if len(entry) > 4:
            out.append(entry)
    return out


def table(results: list[dict[str, Any]]) -> str:
    header = ["task", "B", "batch", "seeds", "what", "env-steps/s", "% env-only", "per CPU-s", "update ms/batch",
              "collect ms/iter", "peak RSS MB (work)"]
    rows = []
    env_only = {(r["task"], r["n_envs"]): r for r in results if r["algo"] is None}
    for r in results:
        base = env_only.get((r["task"], r["n_envs"]))
        pct = "-" if r["algo"] is None or base is None or "env_steps_per_sec" not in r else \
            f"{100 * r['env_steps_per_sec']['median'] / base['env_steps_per_sec']['median']:.0f}%"
        update = r.get("update_ms")
        if update and "median" not in update:  # several learning teams (update-only): the first one's
            update = next(iter(update.values()))
        rows.append([r["task"], str(r["n_envs"]), str(r["batch_size"]) if r["algo"] else "-",
                     str(r.get("pack", 1)) if r["algo"] else "-", r["algo"] or "env only", _fmt_rate(r.get("env_steps_per_sec")), pct,
                     _fmt_rate(r.get("env_steps_per_cpu_sec")).split(" ")[0], _fmt_ms(update),
                     _fmt_ms(r.get("collect_ms")), f"{r['peak_rss_mb']:.0f} ({r['work_rss_mb']:.0f})"])
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def ratio_lines(entries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for e in entries:
        where = f"{e['task']} B={e['n_envs']} batch={e['batch_size']}" + (f" S={e['pack']}" if e.get("pack", 1) > 1 else "")
        for algo, r in e.get("pack_over_single_per_cpu_s", {}).items():
            lines.append(f"{where}: {algo} packed / unpacked env-steps per CPU-second {r['median']:.2f} "
                         f"[{r['min']:.2f}-{r['max']:.2f}], peak RSS {e['pack_over_single_rss'][algo]:.2f}x")
        if "asae_over_coma_time_per_step" in e:
            r = e["asae_over_coma_time_per_step"]
            lines.append(f"{where}: ASAE/COMA wall time per env step {r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]")
        if "asae_over_coma_update" in e:
            r = e["asae_over_coma_update"]
            lines.append(f"{where}: ASAE/COMA update time on one fixed batch {r['median']:.2f} "
                         f"[{r['min']:.2f}-{r['max']:.2f}]")
        for algo, r in e.get("train_over_env_only", {}).items():
            lines.append(f"{where}: {algo} training / env-only rate {100 * r['median']:.0f}% "
                         f"[{100 * r['min']:.0f}-{100 * r['max']:.0f}%]")
    return lines


def _machine() -> dict[str, Any]:
    import torch

    from envs import package_version

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "jax": package_version("jax"),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# --- main -------------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.worker:
        return _worker()
    import algos

    algo_names = [a.strip() for a in args.algos.split(",") if a.strip()]
    if not algo_names and (args.no_env_only or args.update_only):
        raise ConfigError("nothing to measure: --algos is empty and " +
                          ("--update-only" if args.update_only else "--no-env-only") + " is set")
    for name in algo_names:
        algos.learner_class(name)  # unknown -> one line listing the valid algos
    learner_args = _key_values(args.learner_arg, "--learner-arg")
    known_learner_keys = {k for name in algo_names for k in algos.learner_class(name).Config.__dataclass_fields__}
    n_envs_list = _int_list(args.n_envs, "--n-envs")
    packs = _int_list(args.pack, "--pack")
    if any(p > 1 for p in packs):
        for name in algo_names:
            if not algos.learner_class(name).packable:
                raise ConfigError(f"--pack {args.pack}: {name} trains one seed per process; packable algorithms: "
                                  + ", ".join(sorted(n for n in algos.REGISTRY if algos.learner_class(n).packable)))
    batch_size = None if args.batch_size is None else _number(args.batch_size, "--batch-size")
    settings = {
        "repeats": _number(args.repeats, "--repeats"), "iters": _number(args.iters, "--iters"),
        "warmup": _number(args.warmup, "--warmup", minimum=0), "min_time": _number(args.min_time, "--min-time", float, 0),
        "threads": _number(args.threads, "--threads"), "seed": _number(args.seed, "--seed", minimum=0),
        "device": args.device, "profile": args.profile, "update_only": args.update_only,
    }
    tasks = resolve_tasks(args)
    out_path = check_out(args.out)

    # Resolve every config first: a bad learner argument or device stops before any measurement.
    plan = []
    for task, env in tasks.items():
        for n_envs in n_envs_list:
            bs = batch_size or n_envs
            rounds = math.ceil(bs / n_envs)
            common = {"task": task, "env": env, "n_envs": n_envs, "batch_size": bs, **settings}
            if not (args.no_env_only or args.update_only):
                plan.append({**common, "kind": "env_only", "algo": None, "rounds": rounds})
            for algo, pack in ((a, p) for a in algo_names for p in packs):
                # a key goes to the algos that have it (m=5 reaches ASAE, not COMA); one that none of them
                # has goes to all, so that validation names it
                fields = algos.learner_class(algo).Config.__dataclass_fields__
                learner = {k: v for k, v in learner_args.items() if k in fields or k not in known_learner_keys}
                config = run_config(env, algo, learner, n_envs, bs, settings)
                plan.append({**common, "kind": "update" if args.update_only else "train", "algo": algo,
                             "rounds": rounds, "config": config, "pack": pack})
    from experiments.trainer import resolve_device

    resolve_device(args.device)

    load_start = os.getloadavg()
    results = []
    for i, spec in enumerate(plan, 1):
        what = (spec["algo"] or "env only") + (f" S={spec['pack']}" if spec.get("pack", 1) > 1 else "")
        print(f"[bench {i}/{len(plan)}] {spec['task']} B={spec['n_envs']} {what} ...", file=sys.stderr, flush=True)
        try:
            measured = run_measurement(spec) if args.in_process else _in_child(spec)
        except _MeasurementFailed as exc:
            print(f"asae bench: {spec['task']} B={spec['n_envs']} {what} failed: {exc}", file=sys.stderr)
            return 1
        results.append({"task": spec["task"], "env": spec["env"], "kind": spec["kind"], "algo": spec["algo"],
                        "n_envs": spec["n_envs"], "batch_size": spec["batch_size"], "pack": spec.get("pack", 1),
                        "learner": spec.get("config", {}).get("learner"), **measured})
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "asae bench " + " ".join(argv),
        "machine": _machine(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "settings": {**settings, "isolation": "none" if args.in_process else "process",
                     "memory": "getrusage ru_maxrss of the " + ("bench process (peaks mix)" if args.in_process
                                                               else "child process of each measurement")},
        "results": results,
        "ratios": ratios(results),
    }
    print(table(results))
    for line in ratio_lines(report["ratios"]):
        print(line)
    if args.profile:
        for r in results:
            for part, prof in (r.get("profile") or {}).items():
                print(f"{r['task']} B={r['n_envs']} {r['algo'] or 'env only'} {part}: "
                      f"{prof['calls_per_unit']:.0f} calls per {'env step' if 'update' not in part else 'update'}")
    if out_path is not None:  # written whole or not at all (a temporary file, then renamed)
        tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ConfigError as exc:  # in a worker: the parent shows this line
        print(f"asae bench: {exc}", file=sys.stderr)
        sys.exit(2)
