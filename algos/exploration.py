"""Exploration: epsilon-greedy for value-based learners (IQL, VDN, QMIX) and the epsilon floor of
PyMARL's policy-gradient controller (COMA, ASAE).

Epsilon-greedy: with probability epsilon an agent takes a uniformly random AVAILABLE action, otherwise
the greedy action among its available ones; test mode is always greedy. Epsilon follows a linear
schedule in env steps (PyMARL: 1.0 -> 0.05 over 50k steps, then constant). Random draws use torch's
global RNG, whose state the trainer checkpoints, so a resumed run explores exactly as the uninterrupted one.

Epsilon floor (PyMARL's BasicMAC for ``pi_logits`` agents; ``networks.epsilon_floor``): the policy is
(1 - eps) pi + eps uniform over the available actions, eps on the same kind of linear schedule (COMA:
0.5 -> 0.01 over 100k env steps). It is the policy the agents act with AND the one the learner
differentiates and builds its baselines from, so every action is taken with probability >= eps /
|available|. The actor's own softmax can still saturate under it (docs/fidelity.md, "SMAX 3m").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from algos.base import Controller, last_actions_onehot
from algos.networks import AgentNet, build_agent_inputs, greedy_available
from envs.base import TeamSpec


@dataclass(frozen=True)
class LinearSchedule:
    start: float
    finish: float
    anneal_steps: int

    def __call__(self, t_env: int) -> float:
        if self.anneal_steps <= 0:
            return self.finish
        frac = min(max(t_env, 0) / self.anneal_steps, 1.0)
        return self.start + frac * (self.finish - self.start)


def epsilon_greedy(q: torch.Tensor, avail: torch.Tensor, epsilon: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """q, avail [..., A] -> actions [...]: greedy among available actions, or with probability
    ``epsilon`` uniform over the available ones. Never returns an unavailable action."""
    greedy = greedy_available(q, avail)
    if epsilon <= 0.0:
        return greedy
    flat = avail.reshape(-1, avail.shape[-1]).float()
    random = torch.multinomial(flat, 1, generator=generator).reshape(greedy.shape)
    explore = torch.rand(greedy.shape, generator=generator, device=q.device) < epsilon
    return torch.where(explore, random.to(greedy.device), greedy)


class EpsilonGreedyController(Controller):
    """Acts with a shared GRU Q-network (agent id + optional last action in its input)."""

    def __init__(self, agent: AgentNet, spec: TeamSpec, device: torch.device, schedule: LinearSchedule,
                 last_action: bool = True):
        self.agent, self.spec, self.device, self.schedule, self.last_action = agent, spec, device, schedule, last_action

    def epsilon(self, t_env: int) -> float:
        return self.schedule(t_env)

    def init_hidden(self, n_envs: int):
        return self.agent.init_hidden(n_envs, self.spec.n_agents, self.device)

    @torch.no_grad()
    def act(self, obs, last_actions, hidden, t_env, test_mode):
        avail = obs.avail.to(self.device)
        last = last_actions_onehot(last_actions, self.spec.n_actions).to(self.device) if self.last_action else None
        q, hidden = self.agent.step(build_agent_inputs(obs.obs.to(self.device), last), hidden)
        epsilon = 0.0 if test_mode else self.epsilon(t_env)
        return epsilon_greedy(q, avail, epsilon).cpu(), hidden
