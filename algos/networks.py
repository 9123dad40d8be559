"""Networks shared by the learners: the GRU agent network (actor or per-agent Q) and input builders."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from algos.batch import EpisodeBatch
from algos.packing import GRU, Linear, gru_step

NEG_INF = -1e10  # logits of unavailable actions (finite: keeps softmax and its gradient NaN-free)


def agent_input_dim(obs_dim: int, n_actions: int, n_agents: int, last_action: bool = True) -> int:
    return obs_dim + (n_actions if last_action else 0) + n_agents


def build_agent_inputs(obs: torch.Tensor, last_actions_onehot: torch.Tensor | None) -> torch.Tensor:
    """[..., n, obs_dim] (+ [..., n, A]) -> [..., n, obs_dim (+A) + n] with a one-hot agent id appended."""
    n = obs.shape[-2]
    ids = torch.eye(n, device=obs.device, dtype=obs.dtype).expand(*obs.shape[:-1], n)
    parts = [obs] if last_actions_onehot is None else [obs, last_actions_onehot]
    return torch.cat(parts + [ids], dim=-1)


def batch_agent_inputs(batch: EpisodeBatch, last_action: bool = True) -> torch.Tensor:
    """[B, T+1, n, d] agent-network inputs for every slot of an episode batch."""
    return build_agent_inputs(batch.obs, batch.last_actions_onehot() if last_action else None)


class AgentNet(nn.Module):
    """What every agent network offers the controllers and learners: one set of weights shared by all
    agents, ``forward`` over whole sequences [B, T, n, d] -> [B, T, n, n_outputs], ``step`` over one time
    step with a hidden state, and ``init_hidden``. Layers fc1 -> rnn -> fc2 (PyMARL's names, so their
    checkpoints' keys are the same for either agent)."""

    def __init__(self, input_dim: int, hidden_dim: int, n_outputs: int, middle: nn.Module, seeds: int = 1):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.fc1 = Linear(seeds, input_dim, hidden_dim)
        self.rnn = middle
        self.fc2 = Linear(seeds, hidden_dim, n_outputs)

    def init_hidden(self, batch: int, n_agents: int, device=None) -> torch.Tensor:
        return torch.zeros(batch, n_agents, self.hidden_dim, device=device)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step(self, inputs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class RNNAgent(AgentNet):
    """Shared GRU agent network (PyMARL's RNNAgent): fc -> GRU -> fc, one set of weights for all agents.

    ``forward`` runs whole sequences in one nn.GRU call; ``step`` runs one time step for acting. Both
    start from a zero hidden state at t = 0, so acting and training see identical activations.
    """

    def __init__(self, input_dim: int, hidden_dim: int, n_outputs: int, seeds: int = 1):
        super().__init__(input_dim, hidden_dim, n_outputs, GRU(seeds, hidden_dim, hidden_dim), seeds)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs [B, T, n, d] -> outputs [B, T, n, n_outputs]."""
        b, t, n, d = inputs.shape
        x = F.relu(self.fc1(inputs)).permute(0, 2, 1, 3).reshape(b * n, t, self.hidden_dim)
        h, _ = self.rnn(x)
        return self.fc2(h.reshape(b, n, t, self.hidden_dim).permute(0, 2, 1, 3))

    def step(self, inputs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs [B, n, d], hidden [B, n, h] -> (outputs [B, n, n_outputs], new hidden).

        One GRU cell on the layer's own weights: the same kernels as a one-step ``self.rnn`` call (bit for
        bit), without nn.GRU's per-call Python work, which costs more than the cell itself when acting.
        """
        b, n, _ = inputs.shape
        x = F.relu(self.fc1(inputs)).reshape(b * n, self.hidden_dim)
        h = gru_step(self.rnn, x, hidden.reshape(b * n, self.hidden_dim)).reshape(b, n, self.hidden_dim)
        return self.fc2(h), h


class MLPAgent(AgentNet):
    """The feed-forward variant (EPyMARL's RNNAgent with ``use_rnn: False``, its QMIX default): fc -> relu
    -> fc -> relu -> fc, no memory; the hidden state passes through unused, so every controller and
    learner works with either agent."""

    def __init__(self, input_dim: int, hidden_dim: int, n_outputs: int, seeds: int = 1):
        super().__init__(input_dim, hidden_dim, n_outputs, Linear(seeds, hidden_dim, hidden_dim), seeds)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.rnn(F.relu(self.fc1(inputs)))))

    def step(self, inputs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(inputs.unsqueeze(1)).squeeze(1), hidden


def at_executed(values: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """values [B, T+1, n, |U|] (log-probabilities, Q values), actions [B, T+1, n] -> the values of the
    executed actions at the T real-step slots: [B, T, n] (slot T's action is never executed)."""
    return values[:, :-1].gather(-1, actions[:, :-1].unsqueeze(-1)).squeeze(-1)


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Entropy of the distributions whose log-probabilities are the last dim of ``logp``."""
    return -(logp.exp() * logp).sum(-1)


def masked_log_softmax(logits: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits.masked_fill(~avail, NEG_INF), dim=-1)


def epsilon_floor(logp: torch.Tensor, avail: torch.Tensor, epsilon: float) -> torch.Tensor:
    """log((1 - eps) pi + eps / |available|) on available actions, about NEG_INF elsewhere, from the
    masked log pi ``logp`` [..., A]: PyMARL's exploration floor. logaddexp keeps it stable for tiny pi
    and free of log(0) (and its NaN gradients) on unavailable actions."""
    if epsilon <= 0.0:
        return logp
    n_avail = avail.sum(-1, keepdim=True).clamp(min=1).to(logp.dtype)
    uniform = torch.where(avail, torch.log(epsilon / n_avail), NEG_INF)
    return torch.logaddexp(logp + (math.log1p(-epsilon) if epsilon < 1.0 else -math.inf), uniform)


def sample_available(probs: torch.Tensor, avail: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample one action per row of ``probs`` [..., A] restricted to ``avail`` (never an unavailable one)."""
    p = probs * avail
    p = torch.where(p.sum(-1, keepdim=True) > 0, p, avail.float())  # all-zero rows: uniform over available
    flat = p.reshape(-1, p.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(p.shape[:-1])


def gumbel_max_available(probs: torch.Tensor, avail: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One action per row of ``probs`` [..., A] (broadcast against ``noise``) restricted to ``avail``:
    argmax_u log p(u) + g_u with standard Gumbel noise g = ``noise``, a sample from p over the available
    actions (rows with no mass on any available action: uniform over them). Reusing the same noise with
    another p gives a coupled draw (common random numbers)."""
    p = probs * avail
    scores = torch.where(p.sum(-1, keepdim=True) > 0, p.log(), torch.where(avail, 0.0, float("-inf")))
    return (scores + noise).argmax(-1)


def greedy_available(scores: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~avail, float("-inf")).argmax(dim=-1)
