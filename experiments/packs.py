"""Packs: S runs that differ only by seed, trained by one process (``Trainer.pack``), each still a run.

Every seed of a pack is a Sacred run of its own, with its own observers (a run directory, a MongoDB
copy), config (its seed; the same run_key as that seed alone), status, metrics, checkpoints and result.
Each of those runs is started in a thread of its own; its main function (experiments/experiment.py)
hands its run to the pack and waits. Once every run has joined, the calling thread trains them all at
once, and each run gets its outcome as soon as its seed is done: COMPLETED at t_max, FAILED when its
training diverged (the others go on), INTERRUPTED when the pack is stopped (every unfinished seed's
checkpoint saved first). Signals reach the calling (main) thread, as for a single run.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from validation import ConfigError


@dataclass
class _Slot:
    run: Any = None  # the Sacred run
    cfg: Any = None
    logger: Any = None
    checkpoint_dir: Path | None = None
    joined: threading.Event = field(default_factory=threading.Event)
    decided: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: BaseException | None = None  # raised in the run's thread: its status
    thread_error: BaseException | None = None  # what the run's thread ended with (None: completed)


class Pack:
    """The meeting point of a pack's Sacred runs and the one trainer that trains them."""

    def __init__(self, n: int, stop_event: threading.Event | None, progress: str):
        self.slots = [_Slot() for _ in range(n)]
        self.stop_event, self.progress = stop_event, progress
        self._joining = 0
        self.trainer = None

    # --- called in each run's thread (its Sacred main function) ---------------------------------------
    def member_main(self, _run, cfg, checkpoint_dir: Path | None, logger) -> dict:
        slot = self.slots[self._joining]
        slot.run, slot.cfg, slot.logger, slot.checkpoint_dir = _run, cfg, logger, checkpoint_dir
        slot.joined.set()
        slot.decided.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result

    # --- called in the calling thread ---------------------------------------------------------------
    def start(self, create_runs: list[Callable[[], Any]]) -> list[threading.Thread]:
        """Start each run in its own thread, one after the other (each joins before the next starts)."""
        threads = []
        for i, create in enumerate(create_runs):
            self._joining = i
            slot = self.slots[i]
            run = create()
            # Sacred's "sys" capture swaps sys.stdout/stderr for each run; the runs of a pack overlap in
            # time, so one run's capture would close the streams the others still write to
            run.capture_mode = "no"

            def target(run=run, slot=slot):
                try:
                    run()
                except BaseException as exc:  # noqa: BLE001 - the run's status is in its observers; reported below
                    slot.thread_error = exc
                finally:
                    slot.joined.set()

            thread = threading.Thread(target=target, name=f"asae-pack-run-{i}", daemon=True)
            thread.start()
            threads.append(thread)
            slot.joined.wait()
            if slot.run is None:  # the run ended before its main function (a config error, an observer)
                raise slot.thread_error or ConfigError("a run of the pack did not start")
        return threads

    def train(self) -> None:
        from experiments.experiment import Interrupted
        from experiments.trainer import Diverged, Stopped, Trainer

        seeds = [s.cfg.seed for s in self.slots]
        for slot in self.slots:
            slot.run.info["pack"] = {"seeds": seeds, "position": seeds.index(slot.cfg.seed)}

        def finished(member) -> None:
            slot = self.slots[trainer.members.index(member)]
            if member.failure is not None:
                slot.error = Diverged(member.failure)
            else:
                slot.result = {"t_env": member.t_env, "episodes": member.episodes, **member.last_test}
                from experiments.baselines import print_final

                print_final(member.cfg.env, member.last_test, member.logger.history, prefix=f"seed {member.seed}: ")
            slot.decided.set()

        try:
            trainer = Trainer.pack([s.cfg for s in self.slots], [s.logger for s in self.slots],
                                   [s.checkpoint_dir for s in self.slots], stop_event=self.stop_event,
                                   progress=self.progress, on_finished=finished)
            self.trainer = trainer
            resume = [s.cfg.resume_from for s in self.slots]
            if any(resume):
                trainer.resume_members(resume)
                for slot, member in zip(self.slots, trainer.members):
                    if slot.cfg.resume_from:
                        slot.run.info["resumed_from"] = slot.cfg.resume_from
                        slot.run.info["resumed_at_t_env"] = member.t_env
            trainer.train()
        except Stopped as exc:
            self._decide_rest(lambda: Interrupted(str(exc), exc.t_env))
        except ConfigError as exc:  # found once the runs existed (memory, teams, device): nothing trained
            from experiments.experiment import NotStarted

            self._decide_rest(lambda: NotStarted(str(exc)))
            raise
        except BaseException as exc:  # noqa: BLE001 - every unfinished run ends with it (FAILED), then re-raised
            self._decide_rest(lambda: exc)
            raise
        finally:
            self._decide_rest(lambda: RuntimeError("the pack ended before this run did"))

    def _decide_rest(self, error: Callable[[], BaseException]) -> None:
        for slot in self.slots:
            if not slot.decided.is_set():
                slot.error = error()
                slot.decided.set()


def check_packable(config: dict) -> None:
    """ConfigError (one line) unless every learning team's algorithm can be packed."""
    import algos
    from experiments.trainer import PACK_REFUSAL

    team_algos = [config["algo"]] + [a for a in (config.get("teams") or {}).values() if a != algos.RANDOM]
    for algo in team_algos:
        if not algos.learner_class(algo).packable:
            packable = ", ".join(sorted(n for n in algos.REGISTRY if algos.learner_class(n).packable))
            raise ConfigError(PACK_REFUSAL.format(seeds=list(config.get("seeds") or []), packable=packable, algo=algo))


def run_pack(create_runs: list[Callable[[], Any]], stop_event: threading.Event | None = None,
             progress: str = "off") -> list[tuple[Any, BaseException | None]]:
    """Train the runs ``create_runs`` make (Sacred runs of one config but the seed) as one pack. Returns
    each run with the exception its thread ended with (None: COMPLETED). An error that stops the whole
    pack (an env that crashed) is raised after every run has ended with it."""
    from experiments import experiment

    pack = Pack(len(create_runs), stop_event, progress)
    experiment.RUNTIME["pack"] = pack
    threads: list[threading.Thread] = []
    try:
        threads = pack.start(create_runs)
        pack.train()
    except BaseException as exc:
        exc.pack_runs = [slot.run for slot in pack.slots if slot.run is not None]  # for the caller to clean up
        raise
    finally:
        pack._decide_rest(lambda: RuntimeError("the pack did not start"))
        for thread in threads:
            thread.join()
        experiment.RUNTIME["pack"] = None
    return [(slot.run, slot.thread_error) for slot in pack.slots]
