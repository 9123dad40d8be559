"""A stand-in for oxwhirl's ``smac.env.StarCraft2Env`` that holds the adapter to SMAC's real behaviour.

StarCraft II cannot run on the machines this suite is developed on, so this double is what the adapter
(envs/smac.py) and its game workers (envs/smac_workers.py) are tested against. It has:

- StarCraft2Env's constructor signature with its real defaults (oxwhirl/smac, smac/env/starcraft2/
  starcraft2.py; `test_the_double_has_starcraft2envs_signature` compares them when smac is installed);
- SMAC's protocol: building a game does not launch StarCraft II, the first ``reset`` does (later ones
  restart the battle in the same game); ``step(actions)`` returns (reward, terminated, info) with
  info["battle_won"], info["dead_allies"], info["dead_enemies"] and, only with ``continuing_episode``,
  info["episode_limit"] when the time limit ends the episode; SMAC's action layout (0 no-op for dead
  agents only, 1 stop, 2-5 move, 6 + j attack j) and its assertion on unavailable actions; SMAC's reward
  (damage + 10 per kill + 200 for a win, only positive, scaled to a maximum episode return of 20);
- what pysc2 does with the arguments: an unknown map is a KeyError when the game is built (SMAC's map
  registry), an unknown difficulty a KeyError at launch, a seed must fit RequestCreateGame's uint32, and
  ``step_mul`` goes into RequestStep(count=step_mul) on every step, so a step_mul that is not an int >= 1
  is refused there (pysc2 would send None as "no count": the game would not advance 8 game loops);
- a real process per launched game (``sleep``), standing in for the StarCraft II process that SMAC's
  ``close`` shuts down, so tests can see that no game outlives the adapter.

The battle is tiny and marines only: units have 3 hit points, an attack removes 1 from its target, and
the enemy hits the first living ally once every 16 game loops (every 2 env steps at step_mul 8).

Environment variables (read when a game is built, so they reach games in worker processes):
``SC2_DOUBLE_JOURNAL`` a file that gets one JSON line per build (with every argument), launch and close,
each with the pid of the process it happened in (a launch also with the game process's pid);
``SC2_DOUBLE_STEP_MS`` milliseconds each step sleeps, standing in for the game's own time;
``SC2_DOUBLE_CRASH`` "SEED:STEP:HOW": the game built with seed SEED (every game: "*") crashes on its
STEP-th step of an episode, HOW = "exit" (its process is killed by SIGKILL, as the OOM killer does) or "raise" (an error
escapes StarCraft2Env.step, as when SMAC cannot relaunch a crashed StarCraft II).

``python tests/smac_double.py DIR`` writes a fake smac package and StarCraft II directory under DIR
and prints the environment that makes ``asae`` use this double (docs/smac.md, measuring speed).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# map -> (allies, enemies, episode limit), as in SMAC's map registry
MAPS = {"3m": (3, 3, 60), "8m": (8, 8, 120), "2m_vs_1z": (2, 1, 150), "25m": (25, 25, 150)}
DIFFICULTIES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "A")  # keys of SMAC's `difficulties`
NO_OP, STOP, FIRST_ATTACK = 0, 1, 6
HIT_POINTS = 3.0
ENEMY_ATTACK_LOOPS = 16


class StarCraft2Env:
    def __init__(
        self,
        map_name="8m",
        step_mul=8,
        move_amount=2,
        difficulty="7",
        game_version=None,
        seed=None,
        continuing_episode=False,
        obs_all_health=True,
        obs_own_health=True,
        obs_last_action=False,
        obs_pathing_grid=False,
        obs_terrain_height=False,
        obs_instead_of_state=False,
        obs_timestep_number=False,
        state_last_action=True,
        state_timestep_number=False,
        reward_sparse=False,
        reward_only_positive=True,
        reward_death_value=10,
        reward_win=200,
        reward_defeat=0,
        reward_negative_scale=0.5,
        reward_scale=True,
        reward_scale_rate=20,
        replay_dir="",
        replay_prefix="",
        window_size_x=1920,
        window_size_y=1200,
        heuristic_ai=False,
        heuristic_rest=False,
        debug=False,
    ):
        arguments = {k: v for k, v in locals().items() if k != "self"}  # only the parameters exist yet
        self.map_name = map_name
        self.n_agents, self.n_enemies, self.episode_limit = MAPS[map_name]  # KeyError, as SMAC's registry
        self._step_mul = step_mul
        self.difficulty = difficulty
        self._seed = seed
        self.continuing_episode = continuing_episode
        self.reward_death_value, self.reward_win = reward_death_value, reward_win
        self.reward_scale, self.reward_scale_rate = reward_scale, reward_scale_rate
        self.n_actions = FIRST_ATTACK + self.n_enemies
        self.max_reward = self.n_enemies * (reward_death_value + HIT_POINTS) + reward_win
        self._episode_count = 0
        self._sc2_proc = None
        self._finished = True
        self._journal = os.environ.get("SC2_DOUBLE_JOURNAL")
        self._step_seconds = float(os.environ.get("SC2_DOUBLE_STEP_MS", "0")) / 1000
        crash = os.environ.get("SC2_DOUBLE_CRASH")
        crash_seed, crash_step, self._crash_how = crash.split(":") if crash else (None, "0", None)
        crashes = crash_seed == "*" or (crash_seed is not None and int(crash_seed) == seed)
        self._crash_step = int(crash_step) if crashes else None
        self._record("init", args=arguments)

    def _record(self, event, **fields):
        if self._journal:
            with open(self._journal, "a") as f:
                f.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")

    # --- SMAC's protocol ------------------------------------------------------------------------------
    def _launch(self):
        if self.difficulty not in DIFFICULTIES:  # SMAC looks it up in its `difficulties` dict at launch
            raise KeyError(self.difficulty)
        if self._seed is not None:  # RequestCreateGame.random_seed is a protobuf uint32
            if not isinstance(self._seed, int) or isinstance(self._seed, bool):
                raise TypeError(f"{self._seed!r} has type {type(self._seed).__name__}, but expected one of: int")
            if not 0 <= self._seed < 2**32:
                raise ValueError(f"Value out of range: {self._seed}")
        self._sc2_proc = subprocess.Popen(["sleep", "86400"])
        self._record("launch", game_pid=self._sc2_proc.pid, seed=self._seed)

    def reset(self):
        if self._episode_count == 0:
            self._launch()  # as SMAC: the first reset launches the game, later ones restart the battle
        self.ally_hp = np.full(self.n_agents, HIT_POINTS)
        self.enemy_hp = np.full(self.n_enemies, HIT_POINTS)
        self._episode_steps = 0
        self._game_loop = 0
        self._finished = False
        return self.get_obs(), self.get_state()

    def _request_step(self):
        """pysc2's controller.step(self._step_mul): RequestStep(count=step_mul), a uint32 count of game loops."""
        count = self._step_mul
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"step_mul={count!r}: pysc2 sends it as RequestStep(count=...), which advances the "
                             f"game by that many game loops; it must be an int >= 1 (SMAC's default is 8)")
        before = self._game_loop
        self._game_loop += count
        return self._game_loop // ENEMY_ATTACK_LOOPS - before // ENEMY_ATTACK_LOOPS

    def step(self, actions):
        if self._finished:
            raise RuntimeError("step after the episode ended: SMAC games must be reset first")
        actions = [int(a) for a in actions]
        assert len(actions) == self.n_agents
        for a, act in enumerate(actions):
            assert self.get_avail_agent_actions(a)[act] == 1, f"Agent {a} cannot perform action {act}"
        if self._step_seconds:
            time.sleep(self._step_seconds)
        if self._episode_steps + 1 == self._crash_step:
            self._crash()
        before = self.enemy_hp.copy()
        for act in actions:
            if act >= FIRST_ATTACK:
                target = act - FIRST_ATTACK
                self.enemy_hp[target] = max(0.0, self.enemy_hp[target] - 1)
        for _ in range(self._request_step()):
            alive = np.flatnonzero(self.ally_hp > 0)
            if len(alive) and (self.enemy_hp > 0).any():
                self.ally_hp[alive[0]] -= 1
        self._episode_steps += 1
        kills = int(((before > 0) & (self.enemy_hp <= 0)).sum())
        reward = float((before - self.enemy_hp).sum()) + self.reward_death_value * kills
        info = {"battle_won": False, "dead_allies": int((self.ally_hp <= 0).sum()),
                "dead_enemies": int((self.enemy_hp <= 0).sum())}
        terminated = False
        if not (self.enemy_hp > 0).any() or not (self.ally_hp > 0).any():
            terminated = True
            if (self.ally_hp > 0).any():
                info["battle_won"] = True
                reward += self.reward_win
        elif self._episode_steps >= self.episode_limit:
            terminated = True
            if self.continuing_episode:
                info["episode_limit"] = True
        if terminated:
            self._episode_count += 1
            self._finished = True
        if self.reward_scale:
            reward /= self.max_reward / self.reward_scale_rate
        return reward, terminated, info

    def _crash(self):
        if self._crash_how == "exit":
            os.kill(os.getpid(), signal.SIGKILL)
        raise ConnectionError("Connection already closed. SC2 probably crashed. Check the error log.")

    def get_obs_agent(self, a):
        return np.concatenate([[self.ally_hp[a] / HIT_POINTS, self._episode_steps / self.episode_limit, 0.5, 0.25],
                               self.enemy_hp / HIT_POINTS, self.ally_hp / HIT_POINTS]).astype(np.float32)

    def get_obs(self):
        return [self.get_obs_agent(a) for a in range(self.n_agents)]

    def get_state(self):
        return np.concatenate([self.ally_hp / HIT_POINTS, self.enemy_hp / HIT_POINTS,
                               [self._episode_steps / self.episode_limit]]).astype(np.float32)

    def get_obs_size(self):
        return 4 + self.n_enemies + self.n_agents

    def get_state_size(self):
        return self.n_agents + self.n_enemies + 1

    def get_total_actions(self):
        return self.n_actions

    def get_avail_agent_actions(self, a):
        if self.ally_hp[a] <= 0:
            return [1] + [0] * (self.n_actions - 1)
        return [0, 1, 1, 1, 1, 1] + [int(hp > 0) for hp in self.enemy_hp]

    def get_avail_actions(self):
        return [self.get_avail_agent_actions(a) for a in range(self.n_agents)]

    def get_env_info(self):
        return {"state_shape": self.get_state_size(), "obs_shape": self.get_obs_size(),
                "n_actions": self.get_total_actions(), "n_agents": self.n_agents, "episode_limit": self.episode_limit}

    def close(self):
        if self._sc2_proc is not None:  # as pysc2: terminate the game's process and wait for it
            self._sc2_proc.terminate()
            self._sc2_proc.wait()
            self._sc2_proc = None
        self._record("close")


def fake_install(root: Path) -> dict[str, str]:
    """A `smac` package whose StarCraft2Env is this double and a StarCraft II directory with SMAC maps, under
    root; returns the environment variables that make `asae` use them (PYTHONPATH before the suite's)."""
    site = root / "site"
    (site / "smac" / "env").mkdir(parents=True, exist_ok=True)
    (site / "smac" / "__init__.py").write_text("")
    (site / "smac" / "env" / "__init__.py").write_text("from smac_double import StarCraft2Env\n")
    sc2 = root / "StarCraftII"
    (sc2 / "Versions" / "Base00000").mkdir(parents=True, exist_ok=True)
    (sc2 / "Maps" / "SMAC_Maps").mkdir(parents=True, exist_ok=True)
    for name in MAPS:
        (sc2 / "Maps" / "SMAC_Maps" / f"{name}.SC2Map").write_bytes(b"")
    path = [str(site), str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in path if p), "SC2PATH": str(sc2)}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/smac_double.py DIR  (writes a fake smac install under DIR)")
    for key, value in fake_install(Path(sys.argv[1]).resolve()).items():
        print(f"export {key}={value}")
