"""`asae baselines`: what fixed, scripted policies score on an env, measured with the suite's own env and
episode runner on many episodes, and cached as JSON (results/baselines/<slug>.json) so reports and
`asae train` can show a learned policy beside them.

Policies (envs/scripted.py):
- SMAX: ``random`` (uniform over available actions), ``focus_fire`` (everyone shoots the
  lowest-numbered enemy in range, else walks east), ``focus_weakest`` (everyone shoots the enemy in
  range with the least health left, else walks east).
- MPE spread: ``random``, ``untrained_asae`` (the greedy policy of freshly initialised ASAE actors, the
  learner defaults for this env, 10 networks), ``nearest_landmark`` (each agent heads for its nearest
  landmark) and ``assigned_landmark`` (agents head for distinct landmarks, least total distance).

Each policy plays ``n_episodes`` episodes on the env seeds 0 .. n_episodes - 1 (the same battles for
every policy), greedy where a policy has a choice. Intervals are 95%: Wilson for win rates, Student t
for mean returns (for ``untrained_asae``, t over the 10 networks' means: the spread between networks is
what a new run meets).

A cached file is found for a run's env config by :func:`find_baseline`: every env option must be equal,
except ``backend`` (mpe_spread's two backends are identical) and ``timeout`` (it changes how a learner
bootstraps, not what a fixed policy does or scores).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from validation import ConfigError

BASELINES_DIR = Path("results") / "baselines"
IGNORED_KEYS = frozenset({"backend", "timeout"})
DEFAULT_EPISODES = 1000
UNTRAINED_NETWORKS = 10
MAX_ENVS = 1000
BUFFER_BUDGET_BYTES = 1 << 30  # the runner's episode buffers per round
Z95 = 1.959963984540054
ENVS = ("smax", "mpe_spread")
SPREAD_N = (3, 4, 5)


# ----------------------------------------------------------------------------- statistics

def wilson(wins: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the mean, Student t, 95%."""
    import numpy as np
    from scipy import stats

    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


# ----------------------------------------------------------------------------- policies

@dataclass(frozen=True)
class Policy:
    key: str
    label: str
    description: str
    # (env, team spec, env config) -> list of controllers, each playing an equal share of the episodes
    make: Callable[[Any, Any, Mapping[str, Any]], list]


def _fn_controller(fn):
    from algos.base import Controller

    class Scripted(Controller):
        def act(self, obs, last_actions, hidden, t_env, test_mode):
            return fn(obs), hidden

    return Scripted()


def _random(env, spec, env_cfg):
    from algos.base import RandomController

    return [RandomController()]


def _smax_focus_fire(env, spec, env_cfg):
    from envs.scripted import focus_fire

    return [_fn_controller(lambda obs: focus_fire(obs.avail))]


def _smax_focus_weakest(env, spec, env_cfg):
    from envs.scripted import focus_weakest

    return [_fn_controller(lambda obs: focus_weakest(obs.avail, env.enemy_health()))]


def _spread(name):
    def make(env, spec, env_cfg):
        import envs.scripted

        fn = getattr(envs.scripted, name)
        return [_fn_controller(lambda obs: fn(obs.state, spec.n_agents))]
    return make


def _untrained(algo):
    def make(env, spec, env_cfg):
        import torch

        from experiments import config as run_config
        from experiments.api import resolve_config
        from experiments.trainer import build_learner

        cfg = run_config.validate(resolve_config({"algo": algo, "env": dict(env_cfg)}))
        controllers = []
        for seed in range(UNTRAINED_NETWORKS):
            torch.manual_seed(seed)
            controllers.append(build_learner(cfg, spec, algo, env.info.episode_limit, torch.device("cpu")).controller)
        return controllers
    return make


RANDOM = Policy("random", "uniform random", "uniform over each agent's available actions", _random)
POLICIES: dict[str, tuple[Policy, ...]] = {
    "smax": (
        RANDOM,
        Policy("focus_fire", "focus fire", "every agent attacks the lowest-numbered enemy in range, else moves east",
               _smax_focus_fire),
        Policy("focus_weakest", "focus fire (weakest)",
               "every agent attacks the enemy in range with the least health, else moves east", _smax_focus_weakest),
    ),
    "mpe_spread": (
        RANDOM,
        Policy("untrained_asae", "untrained ASAE",
               f"greedy policy of freshly initialised ASAE actors (learner defaults; {UNTRAINED_NETWORKS} networks, "
               "interval over the networks' means)", _untrained("asae")),
        Policy("nearest_landmark", "nearest landmark", "each agent heads for the landmark nearest to it",
               _spread("nearest_landmark")),
        Policy("assigned_landmark", "assigned landmarks",
               "agents head for distinct landmarks, the assignment of least total distance (recomputed each step)",
               _spread("assigned_landmark")),
    ),
}


# ----------------------------------------------------------------------------- measuring

def _n_envs(env_cfg: Mapping[str, Any], n_episodes: int) -> int:
    """Envs per round: all episodes at once where the runner's buffers fit the budget."""
    from envs import make_env

    probe = make_env(env_cfg, 1)
    (spec,) = probe.info.teams
    limit = probe.info.episode_limit
    probe.close()
    per_env = (limit + 1) * (4 * spec.n_agents * spec.obs_dim + 4 * spec.state_dim
                             + spec.n_agents * spec.n_actions + 8 * spec.n_agents) + 12 * limit
    cap = max(1, min(MAX_ENVS, BUFFER_BUDGET_BYTES // per_env))
    rounds = math.ceil(n_episodes / cap)
    return math.ceil(n_episodes / rounds)


def _play(env, controller, seeds: list[int]) -> tuple[list[float], list[int], list[float] | None]:
    """Returns, lengths and wins (None where the env reports no battle_won) of one episode per seed."""
    import torch

    from experiments.runner import EpisodeRunner

    runner = EpisodeRunner(env, {"team": controller})
    returns, lengths, won = [], [], []
    b = env.n_envs
    for start in range(0, len(seeds), b):
        chunk = seeds[start:start + b]
        padded = chunk + [seeds[-1] + 1 + i for i in range(b - len(chunk))]  # a short last round: extra battles dropped
        with torch.no_grad():
            _, stats, _ = runner.run(padded, 0, True)
        s = stats["team"].first(len(chunk))
        returns += s.returns
        lengths += s.lengths
        won += s.stats.get("battle_won", [])
    return returns, lengths, (won if won else None)


def measure(env_cfg: Mapping[str, Any], n_episodes: int = DEFAULT_EPISODES, first_seed: int = 0,
            say: Callable[[str], None] = lambda text: None, only: Sequence[str] | None = None) -> dict[str, Any]:
    """Every policy of ``env_cfg``'s env (or those named in ``only``) on the same ``n_episodes``
    episodes; the cached file's content without ``command`` and ``provenance``."""
    import numpy as np
    import torch

    from envs import make_env

    env_cfg = dict(env_cfg)
    name = env_cfg["name"]
    env = make_env(env_cfg, _n_envs(env_cfg, n_episodes))
    (spec,) = env.info.teams
    seeds = list(range(first_seed, first_seed + n_episodes))
    out: dict[str, Any] = {"env": env_cfg, "backend": env.info.backend, "n_episodes": n_episodes,
                           "episode_seeds": [seeds[0], seeds[-1]],
                           "metric": "win_rate" if name == "smax" else "return",
                           "interval": "95%: Wilson for win rates, Student t for mean returns", "policies": {}}
    try:
        for policy in POLICIES[name]:
            if only is not None and policy.key not in only:
                continue
            torch.manual_seed(0)  # the random policy's draws
            controllers = policy.make(env, spec, env_cfg)
            shares = np.array_split(np.array(seeds), len(controllers))
            returns, lengths, won, per_controller = [], [], [], []
            for controller, share in zip(controllers, shares):
                r, n, w = _play(env, controller, [int(s) for s in share])
                returns += r
                lengths += n
                won += w or []
                per_controller.append(float(np.mean(r)))
            mean, low, high = t_interval(per_controller if len(controllers) > 1 else returns)
            entry: dict[str, Any] = {"label": policy.label, "description": policy.description,
                                     "win_rate": None, "win_ci": None,
                                     "return_mean": float(np.mean(returns)), "return_ci": [low, high],
                                     "return_std": float(np.std(returns, ddof=1)),
                                     "ep_length_mean": float(np.mean(lengths))}
            if won:
                wins = int(round(sum(won)))
                entry["win_rate"] = wins / len(won)
                entry["win_ci"] = list(wilson(wins, len(won)))
            out["policies"][policy.key] = entry
            say(f"  {policy.label}: " + _fmt(entry, out["metric"]))
    finally:
        env.close()
    return out


# ----------------------------------------------------------------------------- files

def _short(value: Any) -> str:
    return str(value).replace("/", "-").replace(" ", "")


def slug(env_cfg: Mapping[str, Any]) -> str:
    """The file name (without .json) of an env config's baselines: the env, its main option, then every
    option that differs from the env's default (except the ignored ones)."""
    from envs import env_defaults

    name = env_cfg["name"]
    defaults = env_defaults({"name": name})
    parts = [name]
    if name == "smax":
        parts.append(_short(env_cfg["map_name"]))
        shown = {"map_name"}
    elif name == "mpe_spread":
        parts += [f"n{env_cfg['n_agents']}", f"limit{env_cfg['episode_limit']}"]
        shown = {"n_agents", "episode_limit"}
        if env_cfg.get("sight_range") is not None:
            parts.append(f"sight{env_cfg['sight_range']}")
        shown.add("sight_range")
    else:
        shown = set()
    for key in sorted(env_cfg):
        if key in shown or key == "name" or key in IGNORED_KEYS or env_cfg[key] == defaults.get(key):
            continue
        parts.append(f"{key}{_short(env_cfg[key])}")
    return "_".join(parts)


def _comparable(env_cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in env_cfg.items() if k not in IGNORED_KEYS}


def default_roots() -> list[Path]:
    """Where cached baselines are looked for: results/baselines here, then in the suite's checkout."""
    from experiments.provenance import source_dir

    roots = [BASELINES_DIR, source_dir() / BASELINES_DIR]
    return list(dict.fromkeys(p.resolve() for p in roots))


def find_baseline(env_cfg: Mapping[str, Any], root: Path | Sequence[Path] | None = None) -> dict[str, Any] | None:
    """The cached baselines measured on ``env_cfg`` (a run's config["env"]), or None."""
    roots = default_roots() if root is None else ([Path(root)] if isinstance(root, (str, Path)) else list(root))
    want = _comparable(env_cfg)
    for directory in roots:
        if not directory.is_dir():
            continue
        guess = directory / f"{slug(env_cfg)}.json" if env_cfg.get("name") in ENVS else None
        candidates = ([guess] if guess is not None and guess.is_file() else []) + sorted(directory.glob("*.json"))
        for path in candidates:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and _comparable(data.get("env", {})) == want:
                return data
    return None


def _fmt(entry: Mapping[str, Any], metric: str) -> str:
    if metric == "win_rate" and entry.get("win_rate") is not None:
        lo, hi = entry["win_ci"]
        return f"{entry['win_rate']:.2f} [{lo:.2f}, {hi:.2f}]"
    lo, hi = entry["return_ci"]
    return f"{entry['return_mean']:.1f} [{lo:.1f}, {hi:.1f}]"


def command_for(env_cfg: Mapping[str, Any], n_episodes: int, named: str | None = None) -> str:
    """The `asae baselines` command that measures exactly this env config."""
    from envs import env_defaults

    base = env_defaults({"name": env_cfg["name"]})
    if named:
        from experiments.api import resolve_config

        base = resolve_config({"env": {"name": env_cfg["name"]}}, [named])["env"]
    words = ["asae baselines", "--env", env_cfg["name"]]
    if env_cfg["name"] == "smax":
        words += ["--map", str(env_cfg["map_name"])]
    elif env_cfg["name"] == "mpe_spread":
        words += ["--n-agents", str(env_cfg["n_agents"])]
    if named:
        words += ["--with", named]
    for key in sorted(env_cfg):
        if key in ("name", "map_name", "n_agents") or env_cfg[key] == base.get(key):
            continue
        words += ["--set", f"{key}={json.dumps(env_cfg[key])}"]
    return " ".join(words + ["--episodes", str(n_episodes)])


# ----------------------------------------------------------------------------- what `asae train` prints

def summary_line(env_cfg: Mapping[str, Any], final: Mapping[str, float], untrained: float | None = None,
                 root: Path | Sequence[Path] | None = None) -> str:
    """One line: a run's final test result beside the scripted baselines of its env."""
    smax = env_cfg.get("name") == "smax"
    key = "test_battle_won_mean" if smax else "test_return_mean"
    if key not in final:
        tests = {k: v for k, v in final.items() if "test_" in k and k.endswith("_mean")}
        if not tests:
            return "no final test result (test_episodes=0)"
        shown = ", ".join(f"{k} {v:.3g}" for k, v in sorted(tests.items()))
        return f"final test {shown}; no cached baseline for env {env_cfg.get('name')!r} (asae baselines measures " \
               f"{' and '.join(ENVS)})"
    value = final[key]
    head = f"final test win rate {value:.2f}" if smax else f"final test return {value:.1f}"
    own = [] if untrained is None else [f"this run at t_env 0 {untrained:.2f}" if smax
                                        else f"this run at t_env 0 {untrained:.1f}"]
    data = find_baseline(env_cfg, root)
    if data is None:
        hint = ("; `" + command_for(env_cfg, DEFAULT_EPISODES) + "` makes one") if env_cfg.get("name") in ENVS else ""
        return f"{head}{' (' + own[0] + ')' if own else ''}; no cached baseline for this env{hint}"
    parts = [f"{p['label']} {_fmt(p, data['metric'])}" for p in data["policies"].values()]
    return f"{head} ({'; '.join(own + parts)}; {data['n_episodes']} episodes each)"


def final_line(env_cfg: Mapping[str, Any], final: Mapping[str, float], history: Sequence[tuple[str, int, float]]) -> str:
    """A run's final test result beside its env's baselines. ``history``: the run's logged (name, step,
    value), for its untrained test."""
    key = "test_battle_won_mean" if env_cfg.get("name") == "smax" else "test_return_mean"
    untrained = next((v for name, step, v in history if name == key and step == 0), None)
    return summary_line(env_cfg, final, untrained)


def print_final(env_cfg: Mapping[str, Any], final: Mapping[str, float], history: Sequence[tuple[str, int, float]],
                prefix: str = "") -> None:
    """`asae train`'s last line (a seed of a pack: ``prefix`` "seed N: ")."""
    try:
        print(f"[asae] {prefix}{final_line(env_cfg, final, history)}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # a terminal that is gone
        pass


# ----------------------------------------------------------------------------- the command

def _standard_set() -> list[tuple[dict[str, Any], str | None]]:
    """Every SMAX map (default options), MPE spread N = 3, 4, 5 as the paper runs it, and N = 3 as
    `asae train` runs it by default."""
    from envs import env_defaults
    from envs.smac_maps import smax_map_names

    out = [(env_defaults({"name": "smax", "map_name": m}), None) for m in smax_map_names()]
    out += [(_spread_paper(n), "spread_paper") for n in SPREAD_N]
    out.append((env_defaults({"name": "mpe_spread"}), None))
    return out


def _spread_paper(n: int) -> dict[str, Any]:
    from experiments.api import resolve_config

    return resolve_config({"env": {"name": "mpe_spread", "n_agents": n}}, ["spread_paper"])["env"]


def _parse_set(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {text!r} is not KEY=VALUE (an env option, e.g. --set episode_limit=150)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _configs(args) -> list[tuple[dict[str, Any], str | None]]:
    from experiments.api import resolve_config

    if args.env is None:
        if args.map or args.n_agents or args.named or args.set:
            raise ConfigError("--map, --n-agents, --with and --set need --env (smax or mpe_spread)")
        return _standard_set()
    if args.env not in ENVS:
        raise ConfigError(f"--env {args.env!r}: asae baselines measures {' and '.join(ENVS)}")
    if args.map and args.env != "smax":
        raise ConfigError(f"--map is for --env smax, not {args.env}")
    if args.n_agents and args.env != "mpe_spread":
        raise ConfigError(f"--n-agents is for --env mpe_spread, not {args.env}")
    sets = dict(_parse_set(s) for s in args.set)
    for key in ("name", "map_name", "n_agents"):
        if key in sets:
            raise ConfigError(f"--set {key}=... : use --env, --map or --n-agents")
    if args.env == "smax":
        from envs.smac_maps import smax_map_names

        variants = [{"map_name": m} for m in (args.map or smax_map_names())]
    else:
        variants = [{"n_agents": n} for n in (args.n_agents or SPREAD_N)]
    named = [args.named] if args.named else []
    return [(resolve_config({"env": {"name": args.env, **v, **sets}}, named)["env"], args.named) for v in variants]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="asae baselines",
        description="Measure scripted policies (SMAX: random, focus fire, focus fire on the weakest; MPE spread: "
                    "random, untrained ASAE, nearest landmark, assigned landmarks) on many episodes and cache them "
                    "as results/baselines/<env>_<map-or-task>.json. Without --env: every SMAX map and MPE spread "
                    "N = 3, 4, 5 (spread_paper) and N = 3 (the default env).")
    parser.add_argument("--env", default=None, help="smax or mpe_spread")
    parser.add_argument("--map", nargs="+", default=[], help="SMAX maps (default: every map SMAX runs)")
    parser.add_argument("--n-agents", nargs="+", type=int, default=[], help="MPE spread N (default: 3 4 5)")
    parser.add_argument("--with", dest="named", default=None,
                        help="take the env options of a named config (e.g. spread_paper)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an env option (repeatable)")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES, help=f"per policy (default {DEFAULT_EPISODES})")
    parser.add_argument("--out", default=str(BASELINES_DIR), help=f"directory (default {BASELINES_DIR})")
    args = parser.parse_args(argv)
    if args.episodes < 2:
        raise ConfigError(f"--episodes {args.episodes}: need at least 2 episodes for an interval")
    configs = _configs(args)  # every config validated before anything is measured
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    from experiments.files import atomic_write
    from experiments.provenance import collect

    for env_cfg, named in configs:
        path = out_dir / f"{slug(env_cfg)}.json"
        print(f"{path}: {env_cfg}", flush=True)
        data = measure(env_cfg, args.episodes, say=lambda text: print(text, flush=True))
        data["command"] = command_for(env_cfg, args.episodes, named)
        data["provenance"] = collect()
        text = json.dumps(data, indent=1) + "\n"
        atomic_write(path, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
