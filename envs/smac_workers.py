"""StarCraft II games in worker processes, one process per game, stepped concurrently.

Each env step of B games costs one round trip to each game's StarCraft II process, and the game does the
work; in one process the trainer would wait for the B round trips one after another. Here the trainer
sends every game its actions, then collects the B answers, so the games advance at the same time (as
PyMARL's parallel runner does). A worker answers each request with the game's outputs as numpy arrays.

Shutdown, so that no worker or StarCraft II process outlives the trainer:
- ``close`` (normal end, and the trainer's ``finally`` after Ctrl-C, SIGTERM, SLURM preemption or a
  crash) closes the connections; a worker that reads end-of-file closes its game (SMAC's ``close`` shuts
  StarCraft II down) and exits. Then each worker's process group gets SIGKILL: a worker still running
  after ``CLOSE_SECONDS``, the StarCraft II of a worker that was killed, a game SMAC lost track of.
- A trainer that dies without closing (SIGKILL) closes the connections all the same: the kernel does.
- Each worker leads its own session, so the process group that a terminal's Ctrl-C goes to holds only
  the trainer, and one ``killpg`` reaches a worker together with its StarCraft II. Workers ignore SIGINT
  and SIGUSR2, the trainer's "stop after this iteration" signals (SLURM sends USR2 to every process of a
  job before preemption or the time limit, ``scancel --signal`` too), and StarCraft II inherits that: the
  games keep running until the trainer has saved its checkpoint and closes them.

A worker runs this file by path (``runpy``), not as ``envs.smac_workers``: importing the ``envs`` package
would load torch into every game's process (2 s and 250 MB each). So this module imports only the
standard library and numpy.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any, Callable, Mapping, Optional

import numpy as np

CLOSE_SECONDS = 15.0  # SMAC's close asks StarCraft II to quit and waits up to 3 s before killing it
STOP_SIGNALS = {signal.SIGINT, signal.SIGUSR2}
_BOOT = "import runpy, sys; runpy.run_path(sys.argv[1])['serve'](int(sys.argv[2]))"


class WorkerError(Exception):
    """Game ``game`` failed or its worker died; ``what`` says how, in one line."""

    def __init__(self, game: int, what: str):
        super().__init__(f"game {game}: {what}")
        self.game, self.what = game, what


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class GameWorkers:
    """``len(game_kwargs)`` games, game b built in its own process as ``factory(**game_kwargs[b])``."""

    def __init__(self, factory: Callable[..., Any], game_kwargs: list[dict[str, Any]], episode_limit: Optional[int]):
        self._conns: list[Connection] = []
        self._procs: list[subprocess.Popen] = []
        try:
            for _ in game_kwargs:
                self._start()
            # sys.path first, on its own: unpickling the factory may need it (a class defined in a test)
            self._request("start", {b: (list(sys.path),) for b in range(len(game_kwargs))})
            self._request("build", {b: (factory, kwargs, episode_limit) for b, kwargs in enumerate(game_kwargs)})
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        # Blocked here, the stop signals stay blocked in the worker until it ignores them: a signal sent to
        # every process (SLURM) while it starts up cannot kill it.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            proc = subprocess.Popen([sys.executable, "-c", _BOOT, os.path.abspath(__file__), str(theirs.fileno())],
                                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            theirs.close()  # the worker holds its end; ours must see end-of-file when the worker dies
        self._procs.append(proc)
        self._conns.append(Connection(ours.detach()))

    def _request(self, command: str, args: Mapping[int, tuple]) -> dict[int, Any]:
        """Send ``command`` to the games in ``args`` (game -> arguments), then collect their answers."""
        for b, arg in args.items():
            try:
                self._conns[b].send((command, arg))
            except OSError:
                raise WorkerError(b, self._death(b, command)) from None
        return {b: self._answer(b, command) for b in args}

    def _answer(self, b: int, command: str) -> Any:
        try:
            status, payload = self._conns[b].recv()
        except (EOFError, OSError):
            raise WorkerError(b, self._death(b, command)) from None
        if status == "error":
            raise WorkerError(b, f"failed during {command}: {payload}")
        return payload

    def _death(self, b: int, command: str) -> str:
        proc = self._procs[b]
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return f"lost the connection to its worker process (pid {proc.pid}) during {command}"
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        return f"died during {command}: its worker process (pid {proc.pid}) {how}"

    def reset(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """game -> (obs, state, avail) after SMAC's reset of every game (the first one launches StarCraft II)."""
        return self._request("reset", {b: () for b in range(len(self._procs))})

    def step(self, actions: Mapping[int, list[int]]) -> dict[int, tuple]:
        """game -> (reward, terminated, info, obs, state, avail) for the games in ``actions``."""
        return self._request("step", {b: (acts,) for b, acts in actions.items()})

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        deadline = time.monotonic() + CLOSE_SECONDS
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Whatever is left in the worker's process group is a game nobody will close: the worker's, if the
            # worker hangs or was killed, or one SMAC lost track of (a reset before the first episode ended
            # launches a second StarCraft II).
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        self._conns, self._procs = [], []


# --- in the worker process ------------------------------------------------------------------------
def _observe(game: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(game.get_obs(), dtype=np.float32), np.asarray(game.get_state(), dtype=np.float32),
            np.asarray(game.get_avail_actions(), dtype=bool))


def serve(fd: int) -> None:
    """A worker's loop: build one game, answer reset and step requests until the trainer hangs up."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # ignored, not handled: StarCraft II inherits it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    conn = Connection(fd)
    game = None

    def start(path: list[str]) -> None:
        sys.path[:] = path

    def build(factory: Callable[..., Any], kwargs: dict[str, Any], episode_limit: Optional[int]) -> None:
        nonlocal game
        game = factory(**kwargs)
        if episode_limit is not None:
            game.episode_limit = episode_limit

    def reset() -> tuple:
        game.reset()
        return _observe(game)

    def step(actions: list[int]) -> tuple:
        reward, terminated, info = game.step(actions)
        return (float(reward), bool(terminated), dict(info), *_observe(game))

    handlers = {"start": start, "build": build, "reset": reset, "step": step}
    try:
        while True:
            try:
                command, args = conn.recv()
            except EOFError:
                return  # closed by the trainer, or the trainer died
            try:
                answer = ("ok", handlers[command](*args))
            except Exception as exc:  # noqa: BLE001 - reported to the trainer, which stops the run
                conn.send(("error", _one_line(exc)))
                return
            conn.send(answer)
    except OSError:
        return  # the trainer hung up while this worker answered
    finally:
        if game is not None:
            game.close()
