"""`asae compare-epymarl`: this suite's COMA and QMIX beside EPyMARL's own code, on the same task and budget.

Tasks (`--task`):
- `spread` (default): MPE simple spread, N = 3, 25-step episodes (EPyMARL: `--env-config=gymma` with
  `env_args.key=pz-mpe-simple-spread-v3 env_args.time_limit=25`, which needs the two local changes and the
  venv described in results/fidelity/epymarl_spread/README.md; ours: `env=mpe_spread`).
- `smax_MAP` (e.g. `smax_3m`, `smax_3s_vs_3z`): this suite's SMAX env on both sides. The command installs
  a small EPyMARL env class (experiments/epymarl_env/asae_smax.py) into the checkout as
  `--env-config=asae_smax`, so EPyMARL's runners step this suite's SMAX battles; before any run it checks
  that both systems see identical observations, states, rewards, available actions and win flags
  (OUT/env_check.json). EPyMARL's python must then import jax and jaxmarl: the default is this suite's
  own python.

For every algo and seed:

1. EPyMARL: a finished run is taken from OUT/epymarl/<algo>/seed<seed>/ (its Sacred JSON files, copied
   there the first time), else from the checkout's results/sacred/, else it is run (one at a time, with
   --epymarl-python and OMP_NUM_THREADS=1) and then copied. A run counts when its config.json has this
   seed, task, t_max, test interval and test episodes and its test curve reaches t_max.
2. Ours: `experiments.api.train` with the settings in OURS below (the closest our config keys come to
   EPyMARL's defaults for that algorithm), into OUT/ours/; a completed run of the same run_key is reused.
3. Both on one scale. Spread: EPyMARL's return is the sum over the 3 agents of 24 rewarded steps (at step
   25 PettingZoo removes the agents, so the wrapper reports reward 0); ours is the mean over agents of 25
   steps. A uniform-random policy scores -76.1 there and -26.6 here, -1.06 per agent per rewarded step in
   both. Each return is reported per agent per rewarded step, and as the gain over the system's own
   random return, (return - random) / |random| (0 = random, 1 = no cost at all). SMAX: the same env on
   both sides, so values (test win rate by default) are compared as they are.
4. OUT/curves.csv (system, algo, seed, t_env, raw and, for spread, per_agent_step, gain_vs_random),
   OUT/table.md (mean and min-max over seeds at t_max/4, /2, 3/4 and t_max, the difference, and each
   system's wall time and env-steps/s) and OUT/curves.png (mean and min-max band over seeds), written
   atomically; the table is printed.

EPyMARL tests only after a runner round that crosses `test_interval` past its previous test, so its runs get
more than t_max to have their last test at the budget (`epymarl_t_max`): one round more on spread (fixed
25-step rounds: COMA 10 x 25, QMIX 1 x 25), one round more per test on SMAX, whose battles end anywhere
(a round: batch_size_run envs x the episode limit). A milestone reads the test point nearest to it, within
half a test interval.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from validation import ConfigError
from experiments.files import read_json, replace_whole

SYSTEMS = ("epymarl", "ours")
EPYMARL_KEY = "pz-mpe-simple-spread-v3"
TIME_LIMIT = 25
OUR_ENV = {"name": "mpe_spread", "n_agents": 3, "episode_limit": TIME_LIMIT, "local_ratio": 0.5, "sight_range": None}
RUN_JSONS = ("config.json", "info.json", "metrics.json")  # what is kept of an EPyMARL run
DEFAULT_OUT = Path("results") / "fidelity" / "epymarl_spread"
SUITE_ROOT = Path(__file__).resolve().parent.parent
SMAX_ENV_CLASS = Path(__file__).resolve().parent / "epymarl_env" / "asae_smax.py"
SMAX_ENV_CONFIG = "asae_smax"  # EPyMARL's --env-config (and env registry key) for this suite's SMAX


class RunFailed(Exception):
    """A training run of either system did not complete (one line: which, and where its log is)."""


@dataclass(frozen=True)
class Scale:
    """How a system's test return is summed, and what a uniform-random policy scores on it (measured over
    1000 uniform-random episodes on this machine)."""

    agent_steps: int  # agents x rewarded steps the return adds up (1 agent for a mean over agents)
    random_return: float


METRICS = {"test_return_mean": "Test return (greedy for ours, sampled for EPyMARL's COMA)",
           "return_mean": "Training return (both sample from the policy they learn)",
           "test_battle_won_mean": "Test win rate (greedy for ours, sampled for EPyMARL's COMA)",
           "battle_won_mean": "Training win rate (both sample from the policy they learn)"}
SCALES = {"epymarl": Scale(agent_steps=3 * 24, random_return=-76.1), "ours": Scale(agent_steps=25, random_return=-26.6)}


@dataclass(frozen=True)
class Task:
    """What both systems run on: EPyMARL's env config and env_args, ours, and how values compare."""

    name: str  # "spread" or "smax_MAP"
    title: str
    env_config: str  # EPyMARL's --env-config
    env_args: dict[str, Any]  # EPyMARL's env_args that identify the task (checked in a run's config.json)
    our_env: dict[str, Any]
    episode_limit: int
    default_metric: str
    scales: dict[str, Scale] | None = None  # None: the same env on both sides, values compare as they are
    fixed_length: bool = False  # every episode lasts the episode limit
    run_args: dict[str, Any] = field(default_factory=dict)  # env_args passed on the command line, not checked

    @property
    def smax(self) -> bool:
        return self.env_config == SMAX_ENV_CONFIG


SPREAD = Task("spread", "MPE simple spread (N=3, 25-step episodes)", "gymma",
              {"key": EPYMARL_KEY, "time_limit": TIME_LIMIT}, OUR_ENV, TIME_LIMIT, "test_return_mean", SCALES,
              fixed_length=True)


def task_of(name: str) -> Task:
    """`spread` or `smax_MAP`, validated (one line naming the valid ones)."""
    if name == "spread":
        return SPREAD
    if name.startswith("smax_"):
        from envs import env_config

        map_name = name[len("smax_"):]
        cfg = env_config({"name": "smax", "map_name": map_name})  # ConfigError: the valid maps
        cfg.check()
        return Task(name, f"SMAX {map_name} (this suite's env on both sides)", SMAX_ENV_CONFIG,
                    {"map_name": map_name}, {"name": "smax", "map_name": map_name}, cfg.limit,
                    "test_battle_won_mean", scales=None, run_args={"asae_root": str(SUITE_ROOT)})
    raise ConfigError(f"--task {name!r} is not valid; valid tasks are spread and smax_MAP (e.g. smax_3m)")


# --- our settings per algorithm, read from EPyMARL (cbc38c0): src/config/default.yaml, envs/gymma.yaml,
# algs/<algo>.yaml, learners/coma_learner.py and q_learner.py. The comment names the EPyMARL setting. --------
OURS: dict[str, dict[str, Any]] = {
    "coma": {
        "n_envs": 10,  # runner: parallel, batch_size_run: 10
        "batch_size": 10,  # batch_size: 10 episodes per update (buffer_size: 10, on-policy)
        "lr": 3e-4,  # lr: 0.0003
        "critic_lr": 3e-4,  # the critic's Adam uses the same lr
        "learner.optimizer": "adam",  # coma_learner: Adam for actor and critic
        "gamma": 0.99,  # gamma: 0.99
        "learner.rnn_hidden_dim": 64,  # hidden_dim: 64, use_rnn: True (GRU agent)
        "learner.critic_hidden_dim": 64,  # hidden_dim: 64 (COMACritic: two hidden layers of hidden_dim)
        "learner.critic_train_mode": "batch",  # coma_learner takes one full-batch critic step per update
        "learner.critic_epochs": 1,  # (critic_train_mode "seq" in coma.yaml is not read by its learner)
        "learner.target_update_interval": 200,  # target_update_interval_or_tau: 200 critic steps
        "learner.epsilon_start": 0.0,  # soft_policies selector: no epsilon floor
        "learner.epsilon_finish": 0.0,
        "learner.entropy_coef": 0.001,  # entropy_coef: 0.001
        "learner.grad_norm_clip": 10.0,  # grad_norm_clip: 10
        "learner.obs_last_action": False,  # obs_last_action: False (obs_agent_id: True; ours always)
        "learner.standardise_rewards": True,  # standardise_rewards: True (running mean and std of rewards)
        "env": {**OUR_ENV, "timeout": "terminal"},  # the time limit ends the episode as terminal (no bootstrap)
        # Not expressible in ours (EPyMARL's value):
        # - q_nstep: 10 with add_value_last_step: True (10-step critic targets); ours: TD(lambda), td_lambda
        # - critic inputs: state, others' actions, agent id (obs_individual_obs and obs_last_action False);
        #   ours also gives the critic the agent's own observation and the last joint action
        # - test policy: SoftPoliciesSelector samples in test mode too (test_greedy does not apply);
        #   ours tests greedily
    },
    "qmix": {
        "n_envs": 1,  # runner: episode (batch_size_run: 1)
        "batch_size": 32,  # batch_size: 32 episodes per replay sample
        "lr": 5e-4,  # lr: 0.0005
        "gamma": 0.99,  # gamma: 0.99
        "learner.optimizer": "adam",  # q_learner: Adam (optim_alpha / optim_eps unused)
        "learner.updates_per_episode": 1.0,  # episode runner: one gradient step per episode collected
        "learner.buffer_size": 5000,  # buffer_size: 5000
        "learner.target_update_interval": 200,  # target_update_interval_or_tau: 200 gradient steps, i.e. 200
        #   episodes once the replay holds 32 (ours counts episodes from the start)
        "learner.epsilon_start": 1.0,  # epsilon_start: 1.0
        "learner.epsilon_finish": 0.05,  # epsilon_finish: 0.05
        "learner.epsilon_anneal_time": 50_000,  # epsilon_anneal_time: 50000 (env steps; greedy tests both)
        "learner.double_q": True,  # double_q: True
        "learner.n_step": 1,  # 1-step targets
        "learner.mixing_embed_dim": 32,  # mixing_embed_dim: 32
        "learner.hypernet_layers": 2,  # hypernet_layers: 2
        "learner.hypernet_embed": 64,  # hypernet_embed: 64
        "learner.rnn_hidden_dim": 64,  # hidden_dim: 64
        "learner.grad_norm_clip": 10.0,  # grad_norm_clip: 10
        "learner.obs_last_action": False,  # obs_last_action: False
        "learner.standardise_rewards": True,  # standardise_rewards: True (running mean and std of rewards)
        "env": {**OUR_ENV, "timeout": "terminal"},  # the time limit ends the episode as terminal (no bootstrap)
        "learner.use_rnn": False,  # use_rnn: False (a feed-forward agent: fc-relu-fc-relu-fc)
        # Not expressible in ours (EPyMARL's value):
        # - its standardisation's moments include the padding after an episode's end (none here: every
        #   episode lasts 25 steps)
    },
}
# `--ours-settings reference`: our own defaults, i.e. PyMARL's settings (docs/fidelity.md), with the
# episodes per update of PyMARL's runners (COMA: 8 parallel envs; QMIX: one step per episode, batch 32).
OURS_REFERENCE: dict[str, dict[str, Any]] = {
    "coma": {"n_envs": 8, "batch_size": 8},
    "qmix": {"n_envs": 8, "batch_size": 32},
}
COMMON = {"env": OUR_ENV, "torch_threads": 1}

# The EPyMARL settings the mappings above were read from. A run whose config.json differs is still used,
# with a warning: the mapping may then be out of date.
REFERENCE: dict[str, dict[str, Any]] = {
    "coma": {"runner": "parallel", "batch_size_run": 10, "batch_size": 10, "lr": 0.0003, "gamma": 0.99,
             "hidden_dim": 64, "use_rnn": True, "obs_last_action": False, "target_update_interval_or_tau": 200,
             "critic_train_reps": 1, "q_nstep": 10, "entropy_coef": 0.001, "grad_norm_clip": 10,
             "standardise_rewards": True, "action_selector": "soft_policies"},
    "qmix": {"runner": "episode", "batch_size_run": 1, "batch_size": 32, "buffer_size": 5000, "lr": 0.0005,
             "gamma": 0.99, "hidden_dim": 64, "use_rnn": False, "obs_last_action": False,
             "target_update_interval_or_tau": 200, "epsilon_start": 1.0, "epsilon_finish": 0.05,
             "epsilon_anneal_time": 50000, "double_q": True, "mixing_embed_dim": 32, "hypernet_layers": 2,
             "hypernet_embed": 64, "grad_norm_clip": 10, "standardise_rewards": True},
}


# --- command line ---------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, through the CLI's ConfigError handling (exit 2)
        raise ConfigError(message)


def _csv(kind):
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None
        if not values:
            raise argparse.ArgumentTypeError("an empty list")
        return values
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(prog="asae compare-epymarl", description=__doc__.split("\n\n")[0],
                epilog="example: asae compare-epymarl --epymarl ../epymarl --algos coma,qmix --seeds 0,1,2 "
                       "--t-max 200000 --out results/fidelity/epymarl_spread")
    p.add_argument("--epymarl", type=Path, help="an EPyMARL checkout (with the mpe2 patch); needed only to find "
                                                "or run EPyMARL runs that OUT does not hold yet")
    p.add_argument("--task", default="spread", help="spread (default) or smax_MAP, e.g. smax_3m, smax_3s_vs_3z")
    p.add_argument("--epymarl-python", type=Path, help="the python of EPyMARL's own venv (default EPYMARL/.venv/bin/python; "
                                                       "for smax_MAP this suite's python, which has jax and jaxmarl)")
    p.add_argument("--algos", type=_csv(str), default=["coma", "qmix"], help="comma-separated: coma,qmix")
    p.add_argument("--seeds", type=_csv(int), default=[0, 1, 2])
    p.add_argument("--t-max", type=int, default=200_000, help="env steps per run (default 200000)")
    p.add_argument("--test-interval", type=int, help="env steps between test evaluations (default t_max/20)")
    p.add_argument("--test-episodes", type=int, default=100, help="episodes per test (default 100, EPyMARL's gymma default)")
    p.add_argument("--systems", type=_csv(str), default=list(SYSTEMS), help="which sides to run: epymarl,ours (default both)")
    p.add_argument("--out", type=Path, help=f"output directory (default {DEFAULT_OUT}, results/fidelity/epymarl_smax_MAP)")
    p.add_argument("--check-episodes", type=int, default=20,
                   help="smax_MAP: battles stepped through both systems' env to check they see the same (default 20)")
    p.add_argument("--ours-settings", choices=("epymarl", "reference"), default="epymarl",
                   help="our side with EPyMARL's settings mapped onto our keys (default) or with our reference "
                        "defaults (PyMARL's settings)")
    p.add_argument("--metric", choices=sorted(METRICS),
                   help="test_return_mean (spread's default; EPyMARL's COMA samples its test actions, ours are greedy), "
                        "return_mean (training episodes: both systems sample from the policy they learn), and on "
                        "SMAX test_battle_won_mean (its default) or battle_won_mean")
    args = p.parse_args(argv)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    args.task = task_of(args.task)
    if args.metric is None:
        args.metric = args.task.default_metric
    if "battle_won" in args.metric and not args.task.smax:
        raise ConfigError(f"--metric {args.metric}: {args.task.name} has no battles; use test_return_mean or return_mean")
    if args.out is None:
        args.out = DEFAULT_OUT if args.task == SPREAD else Path("results") / "fidelity" / f"epymarl_{args.task.name}"
    if args.check_episodes < 1:
        raise ConfigError(f"--check-episodes {args.check_episodes}: must be at least 1")
    bad = [a for a in args.algos if a not in OURS]
    if bad:
        raise ConfigError(f"--algos: unknown algo {bad[0]!r}; valid algos are: {', '.join(OURS)}")
    bad = [s for s in args.systems if s not in SYSTEMS]
    if bad:
        raise ConfigError(f"--systems: unknown system {bad[0]!r}; valid systems are: {', '.join(SYSTEMS)}")
    if args.t_max <= 0:
        raise ConfigError(f"--t-max {args.t_max}: must be a positive number of env steps")
    if args.test_interval is None:
        args.test_interval = max(1, args.t_max // 20)
    if args.test_interval <= 0 or args.test_episodes <= 0:
        raise ConfigError("--test-interval and --test-episodes must be positive")
    if args.epymarl is not None:
        args.epymarl = args.epymarl.resolve()  # EPyMARL runs from inside it
        if not (args.epymarl / "src" / "main.py").is_file():
            raise ConfigError(f"--epymarl {args.epymarl}: not an EPyMARL checkout (no src/main.py)")
        for algo in args.algos:
            if not (args.epymarl / "src" / "config" / "algs" / f"{algo}.yaml").is_file():
                raise ConfigError(f"--epymarl {args.epymarl}: no src/config/algs/{algo}.yaml")
        if args.epymarl_python is None:
            args.epymarl_python = Path(sys.executable) if args.task.smax else args.epymarl / ".venv" / "bin" / "python"
    if args.epymarl_python is not None:
        # absolute but not resolved: a venv's python is a symlink, and only its own path makes it the venv's
        py = args.epymarl_python = Path(os.path.abspath(args.epymarl_python))
        if not (py.is_file() and os.access(py, os.X_OK)):
            raise ConfigError(f"--epymarl-python {py}: no executable there")
        if not (py.parent.parent / "pyvenv.cfg").is_file():
            raise ConfigError(f"--epymarl-python {py}: not a venv's python (no pyvenv.cfg above its bin/)")


# --- EPyMARL runs ---------------------------------------------------------------------------------
def round_steps(algo: str, task: Task = SPREAD) -> int:
    """Env steps of one EPyMARL runner round at most (batch_size_run envs x the episode limit)."""
    return REFERENCE[algo]["batch_size_run"] * task.episode_limit


def epymarl_t_max(t_max: int, test_interval: int, round_steps: int, task: Task = SPREAD) -> int:
    """The t_max EPyMARL is given so that its last test falls at or after ``t_max``. It tests after the
    first round that ends ``test_interval`` steps past its previous test, so every test lands up to a
    round late and the delays add up: spread's fixed-length rounds end exactly on the interval (one
    round more suffices); SMAX's battles end anywhere, so one round per test is added."""
    if task.fixed_length:
        return t_max + round_steps
    return t_max + (t_max // test_interval + 1) * round_steps


def epymarl_command(python: Path, algo: str, seed: int, t_max: int, test_interval: int, test_episodes: int,
                    task: Task = SPREAD) -> list[str]:
    log_every = max(1, test_interval // 2)
    env_args = [f"env_args.{k}={v}" for k, v in {**task.env_args, **task.run_args}.items()]
    return [str(python), "src/main.py", f"--config={algo}", f"--env-config={task.env_config}", "with",
            *env_args, f"t_max={epymarl_t_max(t_max, test_interval, round_steps(algo, task), task)}",
            f"test_interval={test_interval}", f"test_nepisode={test_episodes}", f"log_interval={log_every}",
            f"runner_log_interval={log_every}", f"learner_log_interval={log_every}", f"seed={seed}"]


def is_wanted_run(run_dir: Path, algo: str, seed: int, t_max: int, test_interval: int, test_episodes: int,
                  task: Task = SPREAD, metric: str | None = None) -> bool:
    """Its config is this run's, and it got to its last test (run.json is not kept in copies: the curve
    tells a finished run from an interrupted one)."""
    config = read_json(run_dir / "config.json")
    if not isinstance(config, dict):
        return False
    env_args = config.get("env_args") or {}
    if not (config.get("name") == algo and config.get("seed") == seed
            and config.get("env", "gymma") == task.env_config
            and all(env_args.get(k) == v for k, v in task.env_args.items())
            and config.get("t_max") == epymarl_t_max(t_max, test_interval, config.get("batch_size_run", 1)
                                                     * task.episode_limit, task)
            and config.get("test_interval") == test_interval and config.get("test_nepisode") == test_episodes):
        return False
    try:
        return test_curve(run_dir, metric or task.default_metric)[0][-1] >= t_max
    except (ConfigError, IndexError, KeyError, TypeError, ValueError):
        return False


def _run_dirs(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from sorted((p.parent for p in root.rglob("config.json")), key=lambda p: (len(p.parts), str(p)))


def find_epymarl_run(roots: list[Path], algo: str, seed: int, args: argparse.Namespace) -> Path | None:
    """The newest matching finished run under the first root that has one."""
    for root in roots:
        found = [d for d in _run_dirs(root)
                 if is_wanted_run(d, algo, seed, args.t_max, args.test_interval, args.test_episodes, args.task)]
        if found:
            return max(found, key=lambda d: (d / "metrics.json").stat().st_mtime)
    return None


def keep_epymarl_run(src: Path, dest: Path) -> None:
    """Copy the run's small JSON files to ``dest`` (each file atomically)."""
    if src.resolve() == dest.resolve():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for name in RUN_JSONS:
        if (src / name).is_file():
            tmp = dest / f".{name}.tmp{os.getpid()}"
            shutil.copyfile(src / name, tmp)
            os.replace(tmp, dest / name)


def warn_if_not_reference(run_dir: Path, algo: str) -> None:
    config = read_json(run_dir / "config.json") or {}
    diff = {k: config.get(k) for k, v in REFERENCE[algo].items() if config.get(k) != v}
    if diff:
        print(f"asae compare-epymarl: warning: EPyMARL run {run_dir} differs from the settings OURS[{algo!r}] was "
              f"read from: {diff}", file=sys.stderr)


# --- this suite's SMAX inside EPyMARL ---------------------------------------------------------------
REGISTRATION_MARK = "# asae compare-epymarl: this suite's SMAX env"
REGISTRATION = f"""

{REGISTRATION_MARK} (src/envs/{SMAX_ENV_CONFIG}.py; written by `asae compare-epymarl`)
def asae_smax_fn(**kwargs) -> MultiAgentEnv:
    from .{SMAX_ENV_CONFIG} import AsaeSMAXWrapper

    return AsaeSMAXWrapper(**kwargs)


REGISTRY["{SMAX_ENV_CONFIG}"] = asae_smax_fn
"""
SMACLITE_IMPORT = "from .smaclite_wrapper import SMACliteWrapper\n"
SMACLITE_OPTIONAL = ("try:  # smaclite is GitHub-only (made optional by `asae compare-epymarl`)\n"
                     "    from .smaclite_wrapper import SMACliteWrapper\nexcept ImportError:\n    SMACliteWrapper = None\n")
# the run settings of EPyMARL's own sc2.yaml (the command line sets t_max, tests and log intervals per run)
ENV_YAML = f"""# this suite's SMAX env (src/envs/{SMAX_ENV_CONFIG}.py), written by `asae compare-epymarl`
env: {SMAX_ENV_CONFIG}

env_args:
  map_name: "3m"
  asae_root: null  # this suite's checkout: given on the command line

test_greedy: True
test_nepisode: 100
test_interval: 50000
log_interval: 50000
runner_log_interval: 10000
learner_log_interval: 10000
t_max: 2050000
"""


def _write(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        replace_whole(path, lambda p: p.write_text(text))


def install_smax_env(checkout: Path) -> None:
    """Put this suite's SMAX env into an EPyMARL checkout as `--env-config=asae_smax` (idempotent): the
    env class, its env config, its registration, and smaclite's import made optional."""
    envs = checkout / "src" / "envs"
    registry = envs / "__init__.py"
    if not registry.is_file():
        raise ConfigError(f"--epymarl {checkout}: no src/envs/__init__.py (not an EPyMARL checkout)")
    _write(envs / f"{SMAX_ENV_CONFIG}.py", SMAX_ENV_CLASS.read_text())
    _write(checkout / "src" / "config" / "envs" / f"{SMAX_ENV_CONFIG}.yaml", ENV_YAML)
    text = registry.read_text()
    if text.startswith(SMACLITE_IMPORT) or f"\n{SMACLITE_IMPORT}" in text:  # unindented: not made optional yet
        text = text.replace(f"\n{SMACLITE_IMPORT}", f"\n{SMACLITE_OPTIONAL}", 1) if not text.startswith(SMACLITE_IMPORT) \
            else SMACLITE_OPTIONAL + text[len(SMACLITE_IMPORT):]
    if REGISTRATION_MARK not in text:
        text = text.rstrip("\n") + "\n" + REGISTRATION
    _write(registry, text)


# Run by EPyMARL's python in CHECKOUT/src: the env as EPyMARL's runners build it (its registry, env_args,
# seed, common reward), actions of a noisy focus fire; everything it sees goes to an .npz.
CHECK_SCRIPT = r"""
import json, sys
import numpy as np
from envs import REGISTRY
a = json.loads(sys.argv[1])
env = REGISTRY[a["env"]](**a["env_args"], seed=a["seed"], common_reward=True, reward_scalarisation="sum")
rng = np.random.default_rng(a["seed"])
seen = {k: [] for k in ("obs", "state", "avail")}
moves = {k: [] for k in ("actions", "reward", "terminated", "truncated", "won")}
lengths = []
for _ in range(a["episodes"]):
    env.reset()
    t, done = 0, False
    while True:
        avail = np.array(env.get_avail_actions(), dtype=np.int64)
        seen["obs"].append(np.stack(env.get_obs())); seen["state"].append(env.get_state()); seen["avail"].append(avail)
        if done:
            break
        # a noisy focus fire, so that some battles are won too (SMAX: 5 + j attacks enemy j, 1 moves east):
        # the first enemy in range, else east with probability 0.8, else uniform random
        acts = np.array([5 + np.flatnonzero(row[5:])[0] if row[5:].any() else
                         1 if row[1] and rng.random() < 0.8 else rng.choice(np.flatnonzero(row)) for row in avail])
        _, reward, terminated, truncated, info = env.step(acts)
        for k, v in zip(moves, (acts, reward, terminated, truncated, info["battle_won"])):
            moves[k].append(v)
        done, t = terminated or truncated, t + 1
    lengths.append(t)
np.savez_compressed(a["out"], reset_seeds=np.array(env.reset_seeds, dtype=np.uint64), lengths=np.array(lengths),
                    **{k: np.array(v) for k, v in {**seen, **moves}.items()})
"""


def replay_in_ours(record: dict, our_env: dict[str, Any]) -> dict[str, Any]:
    """Step this suite's own env (envs.make_env, as a run makes it) through the battles EPyMARL's side
    recorded: the same reset seeds and actions. Per quantity: identical or not, and the largest difference."""
    import numpy as np
    import torch

    from envs import make_env

    env = make_env(our_env, 1)
    ours = {k: [] for k in ("obs", "state", "avail", "reward", "terminated", "truncated", "won")}
    step = 0
    try:
        for seed, length in zip(record["reset_seeds"], record["lengths"]):
            now = env.reset([int(seed)])["team"]
            for t in range(int(length) + 1):
                ours["obs"].append(now.obs[0].numpy())
                ours["state"].append(now.state[0].numpy())
                ours["avail"].append(now.avail[0].numpy().astype(np.int64))
                if t == length:
                    break
                result = env.step({"team": torch.as_tensor(record["actions"][step]).view(1, -1)})
                step += 1
                now = result.obs["team"]
                for k, v in (("reward", result.reward["team"]), ("terminated", result.terminated),
                             ("truncated", result.truncated), ("won", result.info["battle_won"])):
                    ours[k].append(v[0].item())
    finally:
        env.close()
    report = {}
    for k, values in ours.items():
        mine, theirs = np.array(values, dtype=np.float64), np.asarray(record[k], dtype=np.float64)
        same_shape = mine.shape == theirs.shape
        report[k] = {"identical": bool(same_shape and np.array_equal(mine, theirs)),
                     "max_abs_diff": float(np.max(np.abs(mine - theirs))) if same_shape and mine.size else None,
                     "shape": list(theirs.shape)}
    return report


def check_smax_env(args: argparse.Namespace) -> dict[str, Any]:
    """EPyMARL's view of the env (through its registry, in its python) against this suite's own env on the
    same battles. Writes OUT/env_check.json; raises RunFailed when they differ."""
    import numpy as np

    args.out.mkdir(parents=True, exist_ok=True)
    npz = args.out / ".env_check.npz"
    spec = {"env": SMAX_ENV_CONFIG, "env_args": {**args.task.env_args, **args.task.run_args}, "seed": 0,
            "episodes": args.check_episodes, "out": str(npz.resolve())}
    print(f"[compare-epymarl] checking that EPyMARL and ours see the same {args.task.name} "
          f"({args.check_episodes} battles)", file=sys.stderr, flush=True)
    proc = subprocess.run([str(args.epymarl_python), "-c", CHECK_SCRIPT, json.dumps(spec)], cwd=args.epymarl / "src",
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0 or not npz.is_file():
        last = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-1:] or ["no output"]
        raise RunFailed(f"the env check in EPyMARL's python failed (exit {proc.returncode}): {last[0].strip()}")
    with np.load(npz) as data:
        record = {k: data[k] for k in data.files}
    npz.unlink()
    result = {"task": args.task.name, "epymarl": str(args.epymarl), "epymarl_python": str(args.epymarl_python),
              "battles": int(len(record["lengths"])), "steps": int(record["lengths"].sum()),
              "wins": int(record["won"].sum()), "compared": replay_in_ours(record, args.task.our_env)}
    result["identical"] = all(v["identical"] for v in result["compared"].values())
    replace_whole(args.out / "env_check.json", lambda p: p.write_text(json.dumps(result, indent=2) + "\n"))
    if not result["identical"]:
        bad = [k for k, v in result["compared"].items() if not v["identical"]]
        raise RunFailed(f"EPyMARL and ours see different {', '.join(bad)} on {args.task.name}; "
                        f"see {args.out / 'env_check.json'}")
    print(f"[compare-epymarl] identical observations, states, available actions, rewards, terminations and wins "
          f"over {result['battles']} battles ({result['steps']} steps, {result['wins']} won)", file=sys.stderr, flush=True)
    return result


def epymarl_runs(args: argparse.Namespace) -> dict[tuple[str, int], Path]:
    """(algo, seed) -> the run's directory under OUT/epymarl, running the missing ones first."""
    kept = args.out / "epymarl"
    roots = [kept] + ([args.epymarl / "results" / "sacred"] if args.epymarl else [])
    runs, missing = {}, []
    for algo in args.algos:
        for seed in args.seeds:
            found = find_epymarl_run(roots, algo, seed, args)
            if found is None:
                missing.append((algo, seed))
            else:
                runs[algo, seed] = found
    if missing and "epymarl" not in args.systems:
        print(f"asae compare-epymarl: warning: {len(missing)} EPyMARL run(s) missing (--systems leaves them out), "
              f"first {missing[0][0]} seed {missing[0][1]}", file=sys.stderr)
        missing = []
    if missing and args.epymarl is None:
        algo, seed = missing[0]
        raise ConfigError(f"EPyMARL's {algo} seed {seed} (t_max {args.t_max}) is not in {kept}; "
                          "give --epymarl CHECKOUT to find or run it")
    if missing and args.task.smax:
        install_smax_env(args.epymarl)
        check_smax_env(args)
    logs = args.out / "logs"
    for algo, seed in missing:
        logs.mkdir(parents=True, exist_ok=True)
        cmd = epymarl_command(args.epymarl_python, algo, seed, args.t_max, args.test_interval, args.test_episodes,
                              args.task)
        log = logs / f"epymarl-{algo}-seed{seed}.log"
        print(f"[compare-epymarl] running EPyMARL {algo} seed {seed} (log: {log})", file=sys.stderr, flush=True)
        start = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.run(cmd, cwd=args.epymarl, stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        found = find_epymarl_run(roots[1:], algo, seed, args)
        if proc.returncode != 0 or found is None:
            raise RunFailed(f"EPyMARL {algo} seed {seed} failed (exit {proc.returncode}); see {log}")
        print(f"[compare-epymarl] EPyMARL {algo} seed {seed} done in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
        keep_epymarl_run(found, kept / algo / f"seed{seed}")  # kept at once: a stopped comparison keeps it
        runs[algo, seed] = found
    out = {}
    for (algo, seed), run_dir in runs.items():
        dest = kept / algo / f"seed{seed}"
        keep_epymarl_run(run_dir, dest)
        warn_if_not_reference(dest, algo)
        out[algo, seed] = dest
    return out


# --- our runs -------------------------------------------------------------------------------------
def our_updates(algo: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    settings = OURS[algo] if args.ours_settings == "epymarl" else OURS_REFERENCE[algo]
    updates = {**COMMON, **settings, "algo": algo, "seed": seed, "t_max": args.t_max,
               "test_interval": args.test_interval, "test_episodes": args.test_episodes}
    if args.task != SPREAD:  # the task's env, with the settings' time-limit semantics
        updates["env"] = {**args.task.our_env, **{k: v for k, v in settings.get("env", {}).items() if k == "timeout"}}
    return updates


def our_runs(args: argparse.Namespace) -> dict[tuple[str, int], Path]:
    """(algo, seed) -> our completed run's directory under OUT/ours, training the missing ones."""
    from experiments import api

    results = args.out / "ours"
    if "ours" not in args.systems and not results.is_dir():
        return {}
    plans = {}
    for algo in args.algos:  # resolve every config first: a bad key stops before any training
        for seed in args.seeds:
            updates = our_updates(algo, seed, args)
            plans[algo, seed] = (updates, api.resolve_config(updates)["run_key"])
    runs = {}
    for (algo, seed), (updates, key) in plans.items():
        done = [r for r in api.find_runs(results, key) if r.status == "COMPLETED"]
        if not done and "ours" in args.systems:
            print(f"[compare-epymarl] training ours: {algo} seed {seed}", file=sys.stderr, flush=True)
            result = api.train(updates, results_dir=results, progress="log")
            if result.status != "COMPLETED":
                raise RunFailed(f"our {algo} seed {seed} ended {result.status} ({result.run_dir})")
            done = [r for r in api.find_runs(results, key) if r.status == "COMPLETED"]
        if done:
            runs[algo, seed] = done[-1].run_dir
    return runs


# --- curves, scales, table, figure ----------------------------------------------------------------
def _number(value: Any) -> float:
    """A metric value as Sacred stores it: a number, or a jsonpickled numpy scalar {"py/object": ..., "value": x}."""
    if isinstance(value, dict):
        value = value.get("value")
    return float(value)


def test_curve(run_dir: Path, metric: str = "test_return_mean") -> tuple[list[int], list[float]]:
    """(t_env, value) of a Sacred run's test returns: metrics.json, else info.json (EPyMARL's
    logger also keeps `<metric>` and `<metric>_T` there)."""
    metrics = read_json(run_dir / "metrics.json") or {}
    if metric in metrics:
        entry = metrics[metric]
        return [int(s) for s in entry["steps"]], [_number(v) for v in entry["values"]]
    info = read_json(run_dir / "info.json") or {}
    if metric in info and f"{metric}_T" in info:
        return [int(s) for s in info[f"{metric}_T"]], [_number(v) for v in info[metric]]
    raise ConfigError(f"{run_dir}: no {metric} in metrics.json or info.json")


def throughput(run_dir: Path) -> dict[str, float]:
    """From the Sacred metrics' timestamps, the same for both systems: the time from the first to the last
    logged metric and the env steps per second over it (test episodes' time included, their steps not)."""
    points = [(datetime.fromisoformat(ts), step) for m in (read_json(run_dir / "metrics.json") or {}).values()
              for ts, step in zip(m.get("timestamps", []), m.get("steps", []))]
    if len(points) < 2:
        return {"wall_s": float("nan"), "steps_per_s": float("nan")}
    (t0, s0), (t1, s1) = min(points), max(points)
    wall = (t1 - t0).total_seconds()
    return {"wall_s": wall, "steps_per_s": (s1 - s0) / wall if wall > 0 else float("nan")}


def curves_frame(runs: dict[str, dict[tuple[str, int], Path]], metric: str = "test_return_mean", task: Task = SPREAD):
    """One row per test point. With the task's scales (spread): also per agent-step and the gain over random."""
    import pandas as pd

    rows = []
    for system, by_key in runs.items():
        for (algo, seed), run_dir in sorted(by_key.items()):
            for t, raw in zip(*test_curve(run_dir, metric)):
                row = {"system": system, "algo": algo, "seed": seed, "t_env": t, "raw": raw}
                if task.scales:
                    scale = task.scales[system]
                    row.update(per_agent_step=raw / scale.agent_steps,
                               gain_vs_random=(raw - scale.random_return) / abs(scale.random_return))
                rows.append(row)
    columns = ["system", "algo", "seed", "t_env", "raw"] + (["per_agent_step", "gain_vs_random"] if task.scales else [])
    return pd.DataFrame(rows, columns=columns)


def compared_value(task: Task) -> str:
    """The frame's column the table's difference and the figure use."""
    return "gain_vs_random" if task.scales else "raw"


def milestones(t_max: int) -> list[int]:
    return [t_max * k // 4 for k in (1, 2, 3, 4)]


def at_milestone(frame, t: int, tolerance: float):
    """Per (system, algo, seed): the row of the test point nearest to ``t`` (none if farther than ``tolerance``)."""
    dist = (frame["t_env"] - t).abs()
    near = frame[dist <= tolerance].assign(_d=dist)
    return near.sort_values("_d").groupby(["system", "algo", "seed"], as_index=False).first().drop(columns="_d")


def _spread(values, fmt: str) -> str:
    if len(values) == 0:
        return "—"
    return f"{fmt.format(values.mean())} [{fmt.format(values.min())}, {fmt.format(values.max())}]"


def markdown_table(frame, speed: dict, args: argparse.Namespace) -> str:
    import pandas as pd

    label = {"epymarl": "EPyMARL", "ours": "ours"}
    if not args.task.scales:
        return markdown_table_same_env(frame, speed, args) + cost_lines(speed, label)
    lines = [f"# MPE simple spread (N=3, 25-step episodes): EPyMARL vs ours, {args.t_max} env steps",
             "",
             f"{METRICS[args.metric]} per agent per rewarded step (EPyMARL: return / 72, 3 agents x 24 rewarded steps; ours: "
             "return / 25, mean over agents of 25 steps) and gain over each system's own uniform-random return "
             f"(EPyMARL {SCALES['epymarl'].random_return}, ours {SCALES['ours'].random_return}; both -1.06 per agent-step): "
             "(return - random) / |random|. Mean [min, max] over seeds; each cell reads the test point nearest to "
             "the step count (within half a test interval). Difference and ratio: ours' mean gain minus and over "
             "EPyMARL's (the ratio only where EPyMARL's gain is positive).",
             "",
             "| algo | env steps | seeds (EPyMARL, ours) | EPyMARL return/agent-step | ours return/agent-step "
             "| EPyMARL gain vs random | ours gain vs random | difference | ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for algo in args.algos:
        for t in milestones(args.t_max):
            cells = at_milestone(frame[frame["algo"] == algo], t, args.test_interval / 2)
            by = {s: cells[cells["system"] == s] for s in SYSTEMS}
            gains = {s: by[s]["gain_vs_random"] for s in SYSTEMS}
            both = len(gains["ours"]) and len(gains["epymarl"])
            diff = f"{gains['ours'].mean() - gains['epymarl'].mean():+.2f}" if both else "—"
            ratio = f"{gains['ours'].mean() / gains['epymarl'].mean():.2f}" if both and gains["epymarl"].mean() > 0 else "—"
            lines.append(f"| {algo} | {t:,} | {len(by['epymarl'])}, {len(by['ours'])} "
                         f"| {_spread(by['epymarl']['per_agent_step'], '{:.3f}')} | {_spread(by['ours']['per_agent_step'], '{:.3f}')} "
                         f"| {_spread(gains['epymarl'], '{:.2f}')} | {_spread(gains['ours'], '{:.2f}')} | {diff} | {ratio} |")
    return "\n".join(lines) + "\n" + cost_lines(speed, label)


def markdown_table_same_env(frame, speed: dict, args: argparse.Namespace) -> str:
    """SMAX: both systems step the same env, so values compare as they are."""
    lines = [f"# {args.task.title}: EPyMARL vs ours, {args.t_max} env steps", "",
             f"{METRICS[args.metric]}. Both systems step this suite's SMAX env (EPyMARL through "
             f"src/envs/{SMAX_ENV_CONFIG}.py; env_check.json: identical observations, states, available actions, "
             "rewards and wins). Mean [min, max] over seeds; each cell reads the test point nearest to the step "
             "count (within half a test interval). Difference: ours' mean minus EPyMARL's.", "",
             "| algo | env steps | seeds (EPyMARL, ours) | EPyMARL | ours | difference |", "|---|---|---|---|---|---|"]
    for algo in args.algos:
        for t in milestones(args.t_max):
            cells = at_milestone(frame[frame["algo"] == algo], t, args.test_interval / 2)
            by = {s: cells[cells["system"] == s]["raw"] for s in SYSTEMS}
            diff = f"{by['ours'].mean() - by['epymarl'].mean():+.2f}" if len(by["ours"]) and len(by["epymarl"]) else "—"
            lines.append(f"| {algo} | {t:,} | {len(by['epymarl'])}, {len(by['ours'])} | {_spread(by['epymarl'], '{:.2f}')} "
                         f"| {_spread(by['ours'], '{:.2f}')} | {diff} |")
    return "\n".join(lines) + "\n"


def cost_lines(speed: dict, label: dict[str, str]) -> str:
    import pandas as pd

    lines = []
    lines += ["", "Cost on this machine (from the runs' metric timestamps: time from the first to the last logged "
                  "metric, and env steps per second over it, test episodes' time included, their steps not):", "",
              "| system | algo | seeds | time (s) | env-steps/s |", "|---|---|---|---|---|"]
    for (system, algo), values in sorted(speed.items()):
        df = pd.DataFrame(values)
        lines.append(f"| {label[system]} | {algo} | {len(df)} | {_spread(df['wall_s'], '{:.0f}')} "
                     f"| {_spread(df['steps_per_s'], '{:.0f}')} |")
    return "\n".join(lines) + "\n"


def figure(frame, args: argparse.Namespace):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(args.algos), figsize=(5 * len(args.algos), 3.6), squeeze=False)
    colors = {"epymarl": "tab:orange", "ours": "tab:blue"}
    value = compared_value(args.task)
    for ax, algo in zip(axes.flat, args.algos):
        for system in SYSTEMS:
            part = frame[(frame["algo"] == algo) & (frame["system"] == system)]
            if part.empty:
                continue
            grid = np.sort(part["t_env"].unique())
            per_seed = np.stack([np.interp(grid, g["t_env"], g[value])
                                 for _, g in part.sort_values("t_env").groupby("seed")])
            n = len(per_seed)
            ax.plot(grid, per_seed.mean(0), color=colors[system], label=f"{'EPyMARL' if system == 'epymarl' else 'ours'} ({n} seed{'s' * (n != 1)})")
            ax.fill_between(grid, per_seed.min(0), per_seed.max(0), color=colors[system], alpha=0.2, linewidth=0)
        ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{algo.upper()}, {'simple spread N=3' if args.task.scales else args.task.title.split(' (')[0]}")
        ax.set_xlabel("env steps")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
        ax.set_ylabel(f"{args.metric} gain over random" if args.task.scales else args.metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def write_outputs(frame, speed: dict, args: argparse.Namespace) -> str:
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(frame, speed, args)
    for path in output_paths(args):
        if path.suffix == ".csv":
            replace_whole(path, lambda p: frame.to_csv(p, index=False, float_format="%.6g"))
        elif path.suffix == ".md":
            replace_whole(path, lambda p: p.write_text(table))
        else:
            fig = figure(frame, args)
            replace_whole(path, lambda p: fig.savefig(p, format="png", dpi=120))
            plt.close(fig)
    return table


def output_paths(args: argparse.Namespace) -> list[Path]:
    """curves.csv, table.md, curves.png for test returns; the same names suffixed with the metric otherwise."""
    suffix = ("" if args.metric == args.task.default_metric else f"_{args.metric}") + \
        ("" if args.ours_settings == "epymarl" else f"_ours_{args.ours_settings}")
    return [args.out / f"curves{suffix}.csv", args.out / f"table{suffix}.md", args.out / f"curves{suffix}.png"]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        runs = {"epymarl": epymarl_runs(args), "ours": our_runs(args)}
    except RunFailed as exc:
        print(f"asae compare-epymarl: {exc}", file=sys.stderr)
        return 1
    speed: dict[tuple[str, str], list[dict]] = {}
    for system, by_key in runs.items():
        for (algo, _), run_dir in by_key.items():
            speed.setdefault((system, algo), []).append(throughput(run_dir))
    table = write_outputs(curves_frame(runs, args.metric, args.task), speed, args)
    print(table, end="")
    print(f"[compare-epymarl] wrote {', '.join(str(p) for p in output_paths(args))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from experiments.cli import main as asae

    sys.exit(asae(["compare-epymarl", *sys.argv[1:]]))
