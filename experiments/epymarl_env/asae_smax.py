"""This suite's SMAX env as an EPyMARL env: `--env-config=asae_smax` in an EPyMARL checkout.

`asae compare-epymarl --task smax_MAP --epymarl CHECKOUT` copies this file to CHECKOUT/src/envs/asae_smax.py,
registers it in CHECKOUT/src/envs/__init__.py and writes CHECKOUT/src/config/envs/asae_smax.yaml (whose
`env_args.asae_root` names this suite's checkout). EPyMARL's runners then step exactly the env this suite's
runs step (envs/smax.py: the same jitted SMAX battles, observations, states, rewards, available actions and
win flag), one battle per EPyMARL env, so the two systems differ only in their learners and runners.

What EPyMARL sees, as its SMAC wrapper gives it: `step(actions)` returns (obs, reward, terminated,
truncated, info) with the team's scalar reward, `terminated` at the battle's end and at the episode
limit (SMAC's continuing_episode=False; the suite's `timeout="terminal"`), and `info["battle_won"]`
(EPyMARL sums it into `battle_won_mean` and `test_battle_won_mean`). Each reset starts the battle of the
seed `episode_seed(seed, k)` for the env's k-th episode (EPyMARL gives env i of a parallel runner the
seed `seed + i`); `reset_seeds` lists them, so a battle can be replayed in the suite's own env.

Both trees have a top-level package named `envs` (EPyMARL's src/envs, this suite's envs/) and this
suite has `validation`: the suite's modules are imported from `asae_root` with EPyMARL's set aside, and
EPyMARL's are put back afterwards; the suite's modules keep working through their own references.
"""
from __future__ import annotations

import importlib
import sys

import numpy as np

try:  # inside EPyMARL's src/envs
    from .multiagentenv import MultiAgentEnv
except ImportError:  # imported from this suite (its tests)
    MultiAgentEnv = object

SHARED_NAMES = ("envs", "validation")  # top-level packages of this suite that EPyMARL's tree may also have


def _ours(name: str) -> bool:
    return name.split(".")[0] in SHARED_NAMES


def load_suite_smax(asae_root: str | None):
    """The suite's envs.smax module. With ``asae_root``: imported from there, whatever `envs` means in
    the importing process; without: the `envs.smax` already importable (the suite itself)."""
    if not asae_root:
        return importlib.import_module("envs.smax")
    theirs = {name: sys.modules.pop(name) for name in list(sys.modules) if _ours(name)}
    sys.path.insert(0, str(asae_root))
    try:
        return importlib.import_module("envs.smax")
    finally:
        sys.path.remove(str(asae_root))
        for name in [n for n in sys.modules if _ours(n)]:
            del sys.modules[name]
        sys.modules.update(theirs)


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of an env's ``episode``-th battle (64 bits from numpy's SeedSequence)."""
    lo, hi = np.random.SeedSequence([int(seed) % 2**32, int(episode)]).generate_state(2, np.uint32)
    return int(lo) | (int(hi) << 32)


class AsaeSMAXWrapper(MultiAgentEnv):
    def __init__(self, map_name: str = "3m", seed: int = 0, asae_root: str | None = None,
                 episode_limit: int | None = None, common_reward: bool = True, reward_scalarisation: str = "sum",
                 **options):
        if not common_reward:
            raise ValueError("SMAX gives one team reward: set common_reward=True")
        import torch

        self._torch = torch
        smax = load_suite_smax(asae_root)
        self.config = smax.Config(map_name=map_name, episode_limit=episode_limit, **options)
        self.config.check()
        self.env = smax.SMAXVecEnv(self.config, 1)
        team = self.env.info.teams[0]
        self.n_agents, self.n_actions = team.n_agents, team.n_actions
        self.obs_size, self.state_size = team.obs_dim, team.state_dim
        self.episode_limit = self.env.info.episode_limit
        self.seed(seed)
        self._now = None

    # --- EPyMARL's MultiAgentEnv ------------------------------------------------------------------
    def seed(self, seed=None):
        self._seed = 0 if seed is None else int(seed)
        self._episodes = 0
        self.reset_seeds: list[int] = []

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.seed(seed)
        battle = episode_seed(self._seed, self._episodes)
        self._episodes += 1
        self.reset_seeds.append(battle)
        self._now = self.env.reset([battle])["team"]
        return self.get_obs(), {}

    def step(self, actions):
        acts = self._torch.as_tensor(np.asarray(actions, dtype=np.int64).reshape(1, self.n_agents))
        result = self.env.step({"team": acts})
        self._now = result.obs["team"]
        info = {"battle_won": bool(result.info["battle_won"][0])}
        return (self.get_obs(), float(result.reward["team"][0]), bool(result.terminated[0]),
                bool(result.truncated[0]), info)

    def get_obs(self):
        return [self._now.obs[0, i].numpy() for i in range(self.n_agents)]

    def get_obs_agent(self, agent_id):
        return self._now.obs[0, agent_id].numpy()

    def get_obs_size(self):
        return self.obs_size

    def get_state(self):
        return self._now.state[0].numpy()

    def get_state_size(self):
        return self.state_size

    def get_avail_actions(self):
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_avail_agent_actions(self, agent_id):
        return self._now.avail[0, agent_id].to(self._torch.int64).tolist()

    def get_total_actions(self):
        return self.n_actions

    def get_env_info(self):
        return {"state_shape": self.state_size, "obs_shape": self.obs_size, "n_actions": self.n_actions,
                "n_agents": self.n_agents, "episode_limit": self.episode_limit}

    def get_stats(self):
        return {}

    def render(self):
        pass

    def close(self):
        self.env.close()

    def save_replay(self):
        pass
