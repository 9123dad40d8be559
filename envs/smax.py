"""SMAX (JaxMARL's JAX re-implementation of SMAC) as a batched ``VecEnv``: the embedded SMAC backend.

B copies of ``HeuristicEnemySMAX`` (allies learn, enemies follow JaxMARL's scripted heuristic) are reset
and stepped by ONE jit-compiled, vmapped call each; results reach torch zero-copy through DLPack.

Maps use SMAC's names. Every map jaxmarl ships runs, plus the SMAC maps whose units SMAX has
(2m_vs_1z, 3s_vs_3z, 3s_vs_4z, 8m_vs_9m are built here as jaxmarl ``Scenario``s). Maps with units SMAX
lacks (1c3s5z and 2c_vs_64zg: colossus; MMM and MMM2: medivac; banelings, spine crawler) and
``corridor`` (its terrain is the task) stop in ``Config.check()`` with a pointer to ``env=smac``.

Differences from SMAC that matter when comparing numbers (see docs/smac.md): no shields (a protoss
unit's health is SMAC's health + shield), no shield regeneration, no healing, no terrain (an open
32 x 32 field, units touching its edge die), different unit balance (a scripted "attack the first
enemy in range" policy wins SMAX's 2m_vs_1z every time), different observation/state features, and
actions 0-3 move (north, east, south, west), 4 stop (the only action of a dead agent), 5 + j attack
enemy j (SMAC: 0 no-op, 1 stop, 2-5 move, 6 + j attack).

Observations follow SMAC's content by default: an agent sees its enemies' health, position and type but
not their last actions (``see_enemy_actions``) or weapon cooldowns (``see_enemy_cooldowns``), which SMAX
shows and SMAC does not; both options restore SMAX's observation.

Step semantics:
- ``terminated``: the battle is over (all allies or all enemies dead); ``truncated``: the episode
  limit (``env.episode_limit``, default SMAC's limit for the map) was reached first. With
  ``timeout="terminal"`` (the default: SMAC's and PyMARL's ``continuing_episode=False``) reaching the
  limit is reported as ``terminated`` (no bootstrap from the last state), as on real SMAC;
  ``timeout="truncation"`` reports it as ``truncated`` (bootstrapped).
- info ``battle_won`` is 1.0 exactly on the step where the last enemy dies while an ally is alive
  (SMAX can end in a draw when both sides die in the same step: not a win, as in SMAC).
- ``reward_scale="smac"`` (default) gives SMAC's reward on SMAX's damage: (damage dealt + 10 per enemy
  killed + 200 on a win) scaled so the maximum episode return is 20. ``"smax"`` keeps SMAX's own
  reward (normalised damage + 1 on a win, maximum episode return 2).
- The global state is SMAX's ``world_state`` with unit positions scaled to [0, 1].
- After ``done`` the env is frozen: further steps return the final observation, zero reward and
  the same terminated/truncated flags (the runner ignores them).
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Literal, Mapping, Optional

import numpy as np
import torch

from envs import package_version
from envs.base import EnvInfo, StepResult, TeamObs, TeamSpec, Timeout, VecEnv, timeout_as_terminal
from validation import ConfigError, require
from envs.smac_maps import (
    SMAC_MAPS,
    SMAX_ONLY_MAPS,
    SMAX_SHIPPED_MAPS,
    smax_episode_limit,
    smax_map_names,
    smax_refusal,
    smax_unit_type_ids,
)

# SMAC's dense reward (StarCraft2Env defaults): damage + 10 per kill + 200 per win, scaled to max 20.
SMAC_DEATH_VALUE = 10.0
SMAC_WIN_VALUE = 200.0
SMAC_MAX_RETURN = 20.0


@dataclass(frozen=True)
class Config:
    map_name: str = "3m"
    episode_limit: Optional[int] = None  # None: SMAC's limit for the map (3m 60, 8m 120, 3s5z 150, ...)
    reward_scale: Literal["smac", "smax"] = "smac"
    enemy_shoots: bool = True  # False: the heuristic enemies only move
    enemy_attack_mode: Literal["closest", "random"] = "closest"  # how a heuristic enemy picks its target
    see_enemy_actions: bool = False  # SMAC shows no enemy actions (SMAX's default: True)
    see_enemy_cooldowns: bool = False  # SMAC shows no enemy weapon cooldowns (SMAX does)
    timeout: Timeout = "terminal"  # the episode limit ends like a battle (SMAC, PyMARL)

    def check(self) -> None:
        if self.map_name not in SMAC_MAPS and self.map_name not in SMAX_ONLY_MAPS:
            raise ConfigError(f"env.map_name={self.map_name!r} is not a SMAX map; valid maps are: "
                              f"{', '.join(smax_map_names())}")
        refusal = smax_refusal(self.map_name)
        require(refusal is None, refusal or "")
        require(self.episode_limit is None or self.episode_limit >= 1,
                f"env.episode_limit={self.episode_limit} must be at least 1 (or null for SMAC's limit)")

    @property
    def limit(self) -> int:
        return self.episode_limit if self.episode_limit is not None else smax_episode_limit(self.map_name)


@dataclass(frozen=True)
class _Kernels:
    """The compiled batched functions for one SMAX variant (shared by envs of any B and limit)."""

    reset: object  # (seed_lo[B], seed_hi[B]) -> keys, state, obs, world_state, avail
    step: object  # (keys, state, actions[B, n], limit) -> keys, state, obs, ws, avail, rew, term, trunc, won
    n_agents: int
    obs_dim: int
    state_dim: int
    n_actions: int
    device: object


@functools.lru_cache(maxsize=None)
def _kernels(map_name: str, enemy_shoots: bool, attack_mode: str, see_enemy_actions: bool,
             see_enemy_cooldowns: bool, reward_scale: str) -> _Kernels:
    import jax
    import jax.numpy as jnp
    from jaxmarl.environments.smax import HeuristicEnemySMAX, Scenario, map_name_to_scenario

    if map_name in SMAX_SHIPPED_MAPS:
        scenario = map_name_to_scenario(map_name)
    else:
        spec = SMAC_MAPS[map_name]
        scenario = Scenario(jnp.array(smax_unit_type_ids(map_name), dtype=jnp.uint8),
                            spec.n_allies, spec.n_enemies, False, False)
    # SMAX's own time limit only sets its `done` flag, which is not used here: truncation is computed
    # from the step counter against a traced limit, so envs with different limits share compilations.
    env = HeuristicEnemySMAX(scenario=scenario, enemy_shoots=enemy_shoots, attack_mode=attack_mode,
                             see_enemy_actions=see_enemy_actions, max_steps=2**30)
    n_allies, n_enemies = env.num_allies, env.num_enemies
    n_units = n_allies + n_enemies
    unit_feats = len(env.own_features)  # per-unit block of world_state: health, x, y, cooldown, type bits
    map_size = jnp.array([env.map_width, env.map_height], dtype=jnp.float32)
    agents = env.agents
    # 0 on each enemy block's weapon cooldown column when hidden (an agent's observation lists the other
    # allies' blocks, then the enemies', then its own features)
    obs_keep = np.ones(env.obs_size, dtype=np.float32)
    if not see_enemy_cooldowns:
        block = len(env.unit_features)
        first_enemy = (n_allies - 1) * block
        obs_keep[first_enemy + block * np.arange(n_enemies) + env.unit_features.index("weapon_cooldown")] = 0.0
    obs_keep = jnp.asarray(obs_keep)

    def strip_weak_types(tree):
        # reset returns weak-typed leaves; without this the step would compile a second time
        return jax.tree.map(lambda x: x.astype(x.dtype), tree)

    def observe(state):
        obs_dict = env.get_obs(state)
        obs = jnp.stack([obs_dict[a] for a in agents]).astype(jnp.float32) * obs_keep
        world = env.get_world_state(state).astype(jnp.float32)
        units = world[: n_units * unit_feats].reshape(n_units, unit_feats)
        units = units.at[:, 1:3].divide(map_size)
        world = jnp.concatenate([units.reshape(-1), world[n_units * unit_feats:]])
        avail_dict = env.get_avail_actions(state)
        avail = jnp.stack([avail_dict[a] for a in agents]).astype(jnp.bool_)
        return obs, world, avail

    def outcome(inner, limit):
        allies_dead = ~jnp.any(inner.unit_alive[:n_allies])
        enemies_dead = ~jnp.any(inner.unit_alive[n_allies:])
        over = allies_dead | enemies_dead
        return over, enemies_dead & ~allies_dead, (inner.step >= limit) & ~over

    def smac_reward(before, after, won):
        enemy = slice(n_allies, None)
        max_health = env.unit_type_health[after.unit_types[enemy]]
        damage = jnp.sum(jnp.maximum(before.unit_health[enemy] - after.unit_health[enemy], 0.0))
        kills = jnp.sum(before.unit_alive[enemy] & ~after.unit_alive[enemy])
        max_return = jnp.sum(max_health) + SMAC_DEATH_VALUE * n_enemies + SMAC_WIN_VALUE
        return SMAC_MAX_RETURN * (damage + SMAC_DEATH_VALUE * kills + SMAC_WIN_VALUE * won) / max_return

    def reset_one(seed_lo, seed_hi):
        key = jax.random.fold_in(jax.random.PRNGKey(seed_lo), seed_hi)
        key, reset_key = jax.random.split(key)
        _, state = env.reset(reset_key)
        state = strip_weak_types(state)
        return (key, state, *observe(state))

    def step_one(key, state, actions, limit):
        key, step_key = jax.random.split(key)
        over, _, truncated = outcome(state.state, limit)
        done_before = over | truncated
        _, new, smax_rewards, _, _ = env.step_env(step_key, state, {a: actions[i] for i, a in enumerate(agents)})
        new = jax.tree.map(lambda old, nxt: jnp.where(done_before, old, nxt), state, strip_weak_types(new))
        terminated, won, truncated = outcome(new.state, limit)
        if reward_scale == "smac":
            reward = smac_reward(state.state, new.state, won)
        else:
            reward = smax_rewards[agents[0]]  # shared team reward
        reward = jnp.where(done_before, 0.0, reward).astype(jnp.float32)
        won = (won & ~done_before).astype(jnp.float32)
        return (key, new, *observe(new), reward, terminated, truncated, won)

    return _Kernels(
        reset=jax.jit(jax.vmap(reset_one)),
        step=jax.jit(jax.vmap(step_one, in_axes=(0, 0, 0, None))),
        n_agents=n_allies, obs_dim=env.obs_size, state_dim=env.state_size,
        n_actions=env.num_ally_actions, device=jax.devices("cpu")[0],
    )


def _torch(x) -> torch.Tensor:
    # Zero-copy view of a jax output, ~1.5 us per array (DLPack: ~4 us; packing all outputs into one
    # buffer and splitting it in torch: slower still). numpy marks it read-only, yet it is a fresh step
    # output that no jax code reads again, so even in-place writes by the caller are harmless.
    return torch.from_numpy(np.asarray(x))


def _mute_readonly_warning() -> None:
    # torch warns once per process when a read-only numpy array becomes a tensor; let it fire here, muted.
    readonly = np.zeros(1)
    readonly.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.from_numpy(readonly)


class SMAXVecEnv(VecEnv):
    """B SMAX battles against JaxMARL's heuristic enemy, stepped by one jitted vmapped call."""

    def __init__(self, cfg: Config, n_envs: int):
        import jax

        require(n_envs >= 1, f"n_envs={n_envs} must be at least 1")
        self.cfg = cfg
        self._jax = jax
        self._k = _kernels(cfg.map_name, cfg.enemy_shoots, cfg.enemy_attack_mode, cfg.see_enemy_actions,
                           cfg.see_enemy_cooldowns, cfg.reward_scale)
        spec = TeamSpec("team", self._k.n_agents, self._k.obs_dim, self._k.state_dim, self._k.n_actions)
        self.info = EnvInfo(name="smax", n_envs=n_envs, episode_limit=cfg.limit, teams=(spec,),
                            backend=backend_name(cfg), episode_stats={"battle_won": "last"})
        self._limit = jax.device_put(np.int32(cfg.limit), self._k.device)
        self._keys = self._state = None
        _mute_readonly_warning()

    def reset(self, seeds: list[int]) -> dict[str, TeamObs]:
        require(len(seeds) == self.n_envs, f"reset needs {self.n_envs} seeds, got {len(seeds)}")
        wide = np.array([int(s) % 2**64 for s in seeds], dtype=np.uint64)
        lo = self._jax.device_put((wide & 0xFFFFFFFF).astype(np.uint32), self._k.device)
        hi = self._jax.device_put((wide >> 32).astype(np.uint32), self._k.device)
        self._keys, self._state, obs, world, avail = self._k.reset(lo, hi)
        return {"team": TeamObs(_torch(obs), _torch(world), _torch(avail))}

    def step(self, actions: Mapping[str, torch.Tensor]) -> StepResult:
        if self._state is None:
            raise RuntimeError("SMAXVecEnv.step called before reset")
        # a numpy argument is transferred by the jitted call itself (far cheaper than jax.device_put)
        acts = actions["team"].detach().to(device="cpu", dtype=torch.int32).numpy()
        (self._keys, self._state, obs, world, avail, reward, terminated, truncated,
         won) = self._k.step(self._keys, self._state, acts, self._limit)
        result = StepResult(
            obs={"team": TeamObs(_torch(obs), _torch(world), _torch(avail))},
            reward={"team": _torch(reward)},
            terminated=_torch(terminated),
            truncated=_torch(truncated),
            info={"battle_won": _torch(won)},
        )
        return timeout_as_terminal(result) if self.cfg.timeout == "terminal" else result

    def unit_alive(self) -> np.ndarray:
        """[B, n_allies + n_enemies] bool: which units are alive now (allies first); for tests and scripts."""
        return np.asarray(self._state.state.unit_alive)

    def enemy_health(self) -> torch.Tensor:
        """[B, n_enemies] float: each enemy's health now (0 when dead); for scripted policies."""
        return torch.from_numpy(np.array(self._state.state.unit_health[:, self._k.n_agents:], dtype=np.float32))


def backend_name(cfg: Config) -> str:
    return package_version("jaxmarl")


def make(cfg: Config, n_envs: int) -> VecEnv:
    return SMAXVecEnv(cfg, n_envs)
