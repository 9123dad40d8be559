"""The Sacred experiment: default config, the paper's named configs, validation, and the main function.

Every run is tracked by Sacred (config, host, metrics, status). Defaults are validated in a config hook,
so `print_config` shows the full resolved config and a bad value stops before any observer starts.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from sacred import Experiment, SETTINGS
from sacred.observers import FileStorageObserver
from sacred.utils import SacredInterrupt

import algos
import envs
from validation import ConfigError
from experiments import config as run_config

SETTINGS.CAPTURE_MODE = "sys"  # fd capture hides the terminal from tqdm and breaks inside threads
SETTINGS.CONFIG.READ_ONLY_CONFIG = False

ex = Experiment("asae", save_git_info=False)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (Sacred's default handler keeps the stream it saw
    first, which under test runners or a redirected stderr may since have been closed)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _NoTypeChangeWarnings(logging.Filter):
    """Sacred warns when a value's type differs from the default's ("null" or None for an optional 0.1,
    say); every value is type-checked by the validation layer instead, which stops a wrong one with one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Changed type of config entry")


def _run_logger() -> logging.Logger:
    logger = logging.getLogger("asae")
    if not any(isinstance(f, _NoTypeChangeWarnings) for f in logger.filters):
        logger.addFilter(_NoTypeChangeWarnings())
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s - %(name)s - %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


ex.logger = _run_logger()

# Set by the caller of a run (CLI or API) and read by `main`; Sacred configs must stay JSON-able.
RUNTIME: dict[str, Any] = {"stop_event": None, "progress": "off", "pack": None}


@ex.config
def default_config():
    algo = "asae"  # asae | coma | ... (`asae list`)
    env = {"name": "mpe_spread"}  # name + that env's options (`asae list`); `env=NAME` on the CLI
    env = envs.env_defaults(env)
    learner = {}  # hyper-parameters of `algo`, defaults filled in (`asae train print_config`)
    learner = algos.learner_defaults(algo, learner)
    teams = {}  # multi-team envs: team -> algo or "random"; empty = first team learns with `algo`
    team_learners = {}  # team -> learner overrides for teams whose algo differs from `algo`
    seed = 0
    seeds = []  # several seeds: train them as one pack, each its own run (see README, "Packed seeds")
    t_max = 200_000  # env steps (one step of one environment, all agents acting)
    n_envs = 8  # envs stepped together
    batch_size = 8  # episodes per update (on-policy) or per replay sample (off-policy)
    gamma = 0.99
    lr = 5e-4  # actor / agent network
    critic_lr = 5e-4
    test_interval = 20_000  # env steps between greedy test evaluations (one also at t_env = 0)
    test_episodes = 32
    log_interval = 5_000
    checkpoint_interval = 50_000
    device = "auto"  # auto | cpu | cuda | cuda:N
    torch_threads = 1  # intra-op CPU threads; small MARL nets run fastest on one (more threads oversubscribe cores)
    resume_from = None  # checkpoint file or run directory of an earlier run of the same config
    progress = "auto"  # auto | bar | log | off
    tags = []


from experiments import named_configs  # noqa: E402,F401  (registers the paper's named configs on ex)


@ex.config_hook
def validate_and_derive(config, command_name, logger):
    extra = run_config.unknown_top_level(config)
    if extra:
        raise ConfigError(f"unknown config key {extra[0]!r}; valid keys are: "
                          f"{', '.join(sorted(k for k in run_config.RunConfig.__dataclass_fields__ if k not in ('run_key', 'env_info')))}")
    cfg = run_config.validate(config)
    derived = {k: v for k, v in config.items() if k not in ("run_key", "env_info")}
    return {
        "run_key": run_config.run_key(derived),
        "env_info": envs.describe(cfg.env, cfg.n_envs),
    }


def _file_storage_dir(run) -> Path | None:
    for obs in run.observers:
        if isinstance(obs, FileStorageObserver) and getattr(obs, "dir", None):
            return Path(obs.dir)
    return None


class NotStarted(ConfigError):
    """A config error found once the run's directory existed, before training began (the env's teams, the
    device, the memory the run needs, the checkpoint to resume from): nothing was trained."""


class Interrupted(SacredInterrupt):
    STATUS = "INTERRUPTED"

    def __init__(self, message: str, t_env: int | None = None):
        super().__init__(message)
        self.t_env = t_env


class _QuietAddedEntries(logging.Filter):
    """Team names are keys a user adds under `teams`/`team_learners`; Sacred warns about each one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("Added new config entry")


for _name in ("asae", None):  # Sacred logs it on the run's logger or the root logger
    logging.getLogger(_name).addFilter(_QuietAddedEntries())


def _keep_output(run) -> None:
    """Take what the run printed into its captured output while the capture is still open: Sacred reads it
    only on heartbeats and, for a completed run, at the end, so cout.txt of an interrupted or failed run
    would miss everything since the last heartbeat."""
    try:
        run._get_captured_output()
    except Exception:  # noqa: BLE001 - never hide the error that ends the run
        pass


@ex.main
def main(_run, _config, teams, team_learners):
    # `teams` and `team_learners` are captured so Sacred accepts team names added to these empty dicts.
    from experiments.baselines import print_final
    from experiments.observers import mongo_copy_of
    from experiments.provenance import collect as collect_provenance
    from experiments.trainer import MetricLogger, Stopped, Trainer

    cfg = run_config.validate(_config)
    run_dir = _file_storage_dir(_run)
    mongo = mongo_copy_of(_run)
    if mongo is not None:
        mongo.attach(_run.info, run_dir)
    checkpoint_dir = run_dir if run_dir is not None else Path("results") / "checkpoints" / cfg.run_key
    _run.info["run_key"] = cfg.run_key
    _run.info["provenance"] = collect_provenance()  # the code that made the run (not part of run_key)
    _run.info["checkpoint"] = str(checkpoint_dir / "checkpoint.pt")
    logger = MetricLogger(lambda name, value, step: _run.log_scalar(name, value, step))
    if RUNTIME["pack"] is not None:  # one seed of a pack: the pack trains it (experiments/packs.py)
        return RUNTIME["pack"].member_main(_run, cfg, checkpoint_dir, logger)
    try:
        trainer = Trainer(cfg, logger, checkpoint_dir, stop_event=RUNTIME["stop_event"], progress=RUNTIME["progress"])
        if cfg.resume_from:
            trainer.resume(cfg.resume_from)
    except ConfigError as exc:
        raise NotStarted(str(exc)) from None
    except BaseException:
        _keep_output(_run)
        raise
    if cfg.resume_from:
        _run.info["resumed_from"] = cfg.resume_from
        _run.info["resumed_at_t_env"] = trainer.t_env
    try:
        final = trainer.train()
    except Stopped as exc:
        _keep_output(_run)
        raise Interrupted(str(exc), exc.t_env) from None
    except BaseException:
        _keep_output(_run)
        raise
    print_final(cfg.env, final, trainer.logger.history)  # beside the scripted baselines of its env
    return {"t_env": trainer.t_env, "episodes": trainer.episodes, **final}
