"""`asae train [Sacred arguments]`: one run, tracked by Sacred.

Arguments go to Sacred's command line (`with KEY=VALUE ...`, named configs, `print_config`, `-F DIR`,
`--help`), with these conveniences: `env=NAME` means `env.name=NAME`; `-m URL` (or $ASAE_MONGO_URL)
copies the run to MongoDB without ever making training wait for it (experiments/observers.py), and
`--mongo-required` (or ASAE_MONGO_REQUIRED=1) refuses to train when the database does not answer;
without `-F`, runs go to results/runs (or $ASAE_RESULTS_DIR).
Ctrl-C, SIGTERM, SIGUSR1, SIGUSR2 (what SLURM sends before a time limit when a job script asks for it with
`#SBATCH --signal=B:USR2@90`) and SIGHUP (a closed terminal or a dropped ssh session) stop after the current
iteration with a checkpoint saved, the run INTERRUPTED and the command that resumes it printed; a second
Ctrl-C aborts.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import threading
from pathlib import Path

from envs import EnvCrashed
from validation import ConfigError

ENV_SHORTHAND = re.compile(r"^env=(?P<name>[A-Za-z_][\w\-]*)$")


def rewrite_argv(argv: list[str]) -> tuple[list[str], str | None, bool, bool]:
    """-> (argv for Sacred, MongoDB URL or None, whether MongoDB is required, whether the user chose a
    file-storage dir)."""
    from experiments.observers import mongo_from_environment

    out, has_file = [], False
    mongo, required = mongo_from_environment()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--mongo-required":
            required = True
            i += 1
            continue
        if arg in ("-m", "--mongo_db"):
            if i + 1 >= len(argv):
                raise ConfigError(f"{arg} needs a MongoDB URL (mongodb://host:port/db or host:port:db)")
            mongo = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--mongo_db="):
            mongo = arg.split("=", 1)[1]
        else:
            if arg in ("-F", "--file_storage") or arg.startswith("--file_storage="):
                has_file = True
                folder = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
                if not folder.strip() or folder == "with":
                    got = "'with'" if folder == "with" else "an empty string" if folder or "=" in arg or \
                        i + 1 < len(argv) else "nothing"
                    raise ConfigError(f"{arg.split('=')[0]} needs a directory for the run's files; it got {got} "
                                      "(an unset variable?)")
            match = ENV_SHORTHAND.match(arg)
            out.append(f"env.name={match['name']}" if match else arg)
        i += 1
    if required and not mongo:
        raise ConfigError("--mongo-required (or ASAE_MONGO_REQUIRED) needs a MongoDB URL: -m mongodb://host:port/db "
                          "or ASAE_MONGO_URL")
    return out, mongo, required, has_file


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


def _install_signal_handlers(stop_event: threading.Event):
    def graceful(signum, frame):
        if stop_event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        first = not stop_event.is_set()
        stop_event.set()
        if first:
            try:  # after a hang-up the terminal is gone: the write fails, the stop must not
                print(f"\n[asae] {signal.Signals(signum).name}: stopping after this iteration and saving a checkpoint "
                      "(Ctrl-C again to abort)", file=sys.stderr, flush=True)
            except (OSError, ValueError):
                pass

    previous = {sig: signal.signal(sig, graceful) for sig in STOP_SIGNALS}
    return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]


def resume_command(argv: list[str], run_dir: Path | str) -> str:
    """The `asae train` command that continues the run in ``run_dir``: the same arguments with
    resume_from=RUN_DIR (replacing one given before)."""
    args = [a for a in argv if not a.startswith("resume_from=")]
    if "with" not in args:
        args.append("with")
    args.append(f"resume_from={run_dir}")
    return "asae train " + shlex.join(args)


def _check_results_dirs(sacred_run, chosen: bool) -> None:
    """Before the run's directory exists: the file-storage directory must be one where files can be made."""
    from sacred.observers import FileStorageObserver

    from experiments.files import unwritable_dir

    for obs in sacred_run.observers:
        if isinstance(obs, FileStorageObserver):
            why = unwritable_dir(obs.basedir)
            if why is not None:
                what = "-F" if chosen else ("ASAE_RESULTS_DIR" if os.environ.get("ASAE_RESULTS_DIR") else "results dir")
                raise ConfigError(f"{what} {obs.basedir!r}: {why}; name a directory where the run's files can be written")


SACRED_FILES = {"config.json", "run.json", "cout.txt", "info.json", "metrics.json"}


def _remove_unstarted(sacred_run) -> None:
    """The directory of a run that never trained (a config error found after Sacred made it), if it holds
    only Sacred's own files: a run that cannot start leaves nothing behind."""
    import shutil

    from experiments.experiment import _file_storage_dir

    run_dir = _file_storage_dir(sacred_run)
    if run_dir is not None and run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= SACRED_FILES:
        shutil.rmtree(run_dir, ignore_errors=True)


def _run_dir(sacred_run) -> Path | None:
    from experiments.experiment import _file_storage_dir

    run_dir = _file_storage_dir(sacred_run)
    if run_dir is None and sacred_run.info.get("checkpoint"):
        run_dir = Path(sacred_run.info["checkpoint"]).parent
    return run_dir


def main(argv: list[str]) -> int:
    from sacred.observers import FileStorageObserver
    from sacred.utils import ConfigAddedError, SacredError

    from experiments import experiment
    from experiments.api import added_key_message
    from experiments.observers import MongoUnreachable, mongo_copy
    from experiments.trainer import CheckpointWriteError, Diverged, check_resume_from

    sacred_argv, mongo_url, mongo_required, has_file = rewrite_argv(argv)
    ex = experiment.ex
    if not has_file:
        ex.observers.append(FileStorageObserver(os.environ.get("ASAE_RESULTS_DIR", os.path.join("results", "runs"))))
    stop_event = threading.Event()
    experiment.RUNTIME.update(stop_event=stop_event, progress="bar" if sys.stderr.isatty() else "log")

    failure: list[tuple[str, int]] = []  # (the one line to print, exit status)

    def run(command_name=None, *args, **kwargs):
        sacred_run = None

        def to_resume() -> str:
            run_dir = _run_dir(sacred_run) if sacred_run is not None else None
            return resume_command(argv, run_dir) if run_dir is not None else \
                "rerun the same command with resume_from=<run directory>"

        try:
            # Sacred's Experiment.run in two steps, so that between the validated config and the run's
            # directory the checkpoint to resume from and the database are checked: a run that cannot
            # start leaves nothing behind.
            sacred_run = ex._create_run(command_name, *args, **kwargs)
            if (command_name or ex.default_command) == ex.default_command and len(sacred_run.config.get("seeds") or []) > 1:
                _check_results_dirs(sacred_run, has_file)
                return _train_pack(ex, sacred_run, command_name, args, kwargs, mongo_url, mongo_required, failure, argv)
            if (command_name or ex.default_command) == ex.default_command:
                _check_results_dirs(sacred_run, has_file)
                if sacred_run.config.get("resume_from"):
                    check_resume_from(sacred_run.config["resume_from"], dict(sacred_run.config))
                if mongo_url and not sacred_run.unobserved:
                    sacred_run.observers.append(mongo_copy(mongo_url, required=mongo_required))
            sacred_run()
            return sacred_run
        except experiment.NotStarted as exc:  # nothing trained: its run directory goes again
            _remove_unstarted(sacred_run)
            failure.append((str(exc), 2))
        except ConfigError as exc:
            failure.append((str(exc), 2))
        except ConfigAddedError as exc:
            failure.append((added_key_message(exc), 2))
        except MongoUnreachable as exc:
            failure.append((str(exc), 1))
        except experiment.Interrupted as exc:
            failure.append((f"{exc}; the run is INTERRUPTED; to continue it: {to_resume()}", 2))
        except EnvCrashed as exc:  # no user mistake: Sacred has marked the run FAILED
            failure.append((f"{exc}; the run FAILED (to continue from its last checkpoint, if it wrote one: "
                            f"{to_resume()})", 1))
        except (Diverged, CheckpointWriteError) as exc:  # Sacred has marked the run FAILED
            failure.append((f"{exc}; the run FAILED", 1))
        except OSError as exc:  # a file the run writes or reads (its directory, a full disk)
            name = f"{exc.filename}: " if exc.filename else ""
            ran = sacred_run is not None and sacred_run.status not in (None, "QUEUED")
            failure.append((f"{name}{exc.strerror or exc}" + ("; the run FAILED" if ran else ""), 1))
        except SacredError as exc:
            failure.append((str(exc).strip().splitlines()[-1], 2))
        raise _Abort()

    ex.run = run
    restore = _install_signal_handlers(stop_event)
    try:
        ex.run_commandline(["asae train"] + sacred_argv)
    except _Abort:
        message, status = failure[-1]
        _say(f"asae train: {message}")
        return status
    finally:
        restore()
        del ex.run
    return 0


def pack_resume_list(value, n: int) -> list:
    """A pack's resume_from: a list of one path (or null) per seed, also as the one string a shell hands
    over unquoted (``resume_from=[results/runs/3,null]``)."""
    if value is None:
        return [None] * n
    if isinstance(value, str):
        if not (value.startswith("[") and value.endswith("]")):
            raise ConfigError(f"resume_from={value!r}: a pack of {n} seeds resumes from a list of {n} run directories "
                              "(or null), e.g. resume_from=[results/runs/3,results/runs/4]")
        value = [v.strip().strip("'\"") for v in value[1:-1].split(",")]
    out = [None if v in (None, "", "null", "None") else str(v) for v in value]
    if len(out) != n:
        raise ConfigError(f"resume_from lists {len(out)} checkpoints for the pack's {n} seeds; give one (or null) per seed")
    return out


def pack_runs(ex, first, command_name, args, kwargs, mongo_url: str | None, mongo_required: bool):
    """One Sacred run per seed of the pack ``first`` (a created, never started run) describes: the same
    command line with ``seed`` set and ``seeds`` cleared, each with observers of its own."""
    from sacred.observers import FileStorageObserver

    from experiments.observers import mongo_copy
    from experiments.trainer import check_resume_from

    from experiments.packs import check_packable

    config = first.config
    check_packable(config)
    seeds, resume = list(config["seeds"]), pack_resume_list(config.get("resume_from"), len(config["seeds"]))
    for path in resume:
        if path:
            check_resume_from(path)
    updates, rest = (args[0] if args else kwargs.get("config_updates")) or {}, list(args[1:])
    mongo = [mongo_copy(mongo_url, required=mongo_required) for _ in seeds] if mongo_url and not first.unobserved else None

    def create(i: int):
        run = ex._create_run(command_name, {**updates, "seed": seeds[i], "seeds": [], "resume_from": resume[i]},
                             *rest, **{k: v for k, v in kwargs.items() if k != "config_updates"})
        # observers of its own: a shared one would write every seed into one directory
        run.observers = [FileStorageObserver(obs.basedir) if isinstance(obs, FileStorageObserver) else obs
                         for obs in run.observers]
        if mongo is not None:
            run.observers.append(mongo[i])
        return run

    return seeds, [lambda i=i: create(i) for i in range(len(seeds))]


def _train_pack(ex, first, command_name, args, kwargs, mongo_url, mongo_required, failure, argv):
    """`asae train with seeds=[...]`: the seeds as one pack, each its own run; one line per seed."""
    from experiments import experiment
    from experiments.packs import run_pack
    from experiments.trainer import Diverged

    seeds, creators = pack_runs(ex, first, command_name, args, kwargs, mongo_url, mongo_required)
    try:
        outcomes = run_pack(creators, experiment.RUNTIME["stop_event"], experiment.RUNTIME["progress"])
    except ConfigError as exc:  # nothing trained: the runs' directories go again
        for run in getattr(exc, "pack_runs", []):
            _remove_unstarted(run)
        raise
    dirs, worst = [], 0
    for seed, (run, error) in zip(seeds, outcomes):
        run_dir = next((getattr(o, "dir", None) for o in run.observers if getattr(o, "dir", None)), None)
        dirs.append(run_dir)
        if error is None:
            _say(f"[asae] seed {seed}: COMPLETED in {run_dir}")
        elif isinstance(error, experiment.Interrupted):
            _say(f"[asae] seed {seed}: INTERRUPTED in {run_dir} (checkpoint saved)")
            worst = max(worst, 2)
        elif isinstance(error, Diverged):
            _say(f"[asae] seed {seed}: FAILED in {run_dir}: {error}")
            worst = max(worst, 1)
        else:
            _say(f"[asae] seed {seed}: FAILED in {run_dir}: {type(error).__name__}: {error}")
            worst = max(worst, 1)
    if worst == 2:
        resume = "[" + ",".join(d if d and isinstance(o[1], experiment.Interrupted) else "null"
                                for d, o in zip(dirs, outcomes)) + "]"
        failure.append((f"the pack stopped (every seed's checkpoint saved); to continue it: {resume_command(argv, resume)}", 2))
        raise _Abort()
    if worst:
        failure.append(("a seed of the pack FAILED (see its line above); the other seeds' runs are complete", 1))
        raise _Abort()
    return None


def _say(line: str) -> None:
    """The last line, to a terminal that may be gone (after a hang-up every write fails): then nothing
    more is written, so that the exit status stays the run's."""
    try:
        print(line, file=sys.stderr, flush=True)
        sys.stdout.flush()
    except (OSError, ValueError):
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - also for Python's flush at exit


class _Abort(BaseException):
    """Escapes Sacred's catch-all handler, which would print a traceback for a user mistake."""
