"""PPO pieces shared by every clipped-surrogate learner (ASAE, MAPPO, IPPO): the clipped surrogate,
episode minibatches, advantage normalisation, GAE, the (optionally clipped) value loss, the policy KL."""
from __future__ import annotations

import torch

from algos.base import masked_mean
from algos.batch import EpisodeBatch
from algos.packing import SeedAxis


def clipped_surrogate_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                           mask: torch.Tensor, clip: float | None, mean=masked_mean) -> tuple[torch.Tensor, torch.Tensor]:
    """-E[min(r A, clip(r, 1-eps, 1+eps) A)] over masked entries, and the fraction of clipped ratios.

    ``clip=None`` disables clipping (the loss is then -E[r A], whose gradient at r = 1 is the plain
    policy gradient -E[A grad log pi]). ``mean``: the masked mean (a packed learner's is per seed).
    """
    mask = mask.expand_as(advantages)
    ratio = torch.exp(logp - logp_old)
    surrogate = ratio * advantages
    if clip is None:
        clipped_frac = torch.zeros((), device=logp.device)
    else:
        surrogate = torch.min(surrogate, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages)
        clipped_frac = mean(((ratio - 1.0).abs() > clip).float(), mask)
    return -mean(surrogate, mask), clipped_frac


def episode_minibatches(n_episodes: int, n_minibatches: int, generator: torch.Generator | None = None):
    """Random disjoint episode index sets (recurrent policies need whole episodes)."""
    perm = torch.randperm(n_episodes, generator=generator)
    return [chunk for chunk in perm.chunk(max(1, min(n_minibatches, n_episodes)))]


def normalize_advantages(advantages: torch.Tensor, mask: torch.Tensor, axis: SeedAxis | None = None) -> torch.Tensor:
    """(A - mean) / std over the masked entries (padding stays at its shifted value; it is masked later);
    per seed in a pack (``axis``)."""
    axis = axis or SeedAxis()
    mean = axis.per_seed(axis.masked_mean(advantages, mask), advantages)
    std = axis.per_seed(axis.masked_mean((advantages - mean) ** 2, mask).sqrt(), advantages)
    return (advantages - mean) / (std + 1e-8)


def gae(batch: EpisodeBatch, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation from values of every slot V_t ([B, T+1, n]) -> (A [B, T, n], returns).

    delta_t = r_t + gamma (1 - term_t) V_{t+1} - V_t and A_t = delta_t + gamma lambda A_{t+1}, with
    A = 0 on padding. At the last real step of an episode V_{t+1} is the value of the final observation
    (slot t+1; slot T for a full-length episode): a time-limit truncation bootstraps from it, a terminal
    state does not. The recursion needs no explicit episode-end cut: the step after an end is padding.
    Returns (the value targets) are A + V on real steps, zero on padding.
    """
    reward = batch.reward.unsqueeze(-1)
    not_term = (1.0 - batch.terminated).unsqueeze(-1)
    filled = batch.filled.unsqueeze(-1)
    advantages = torch.zeros_like(values[:, :-1])
    nxt = torch.zeros_like(values[:, 0])
    for t in reversed(range(batch.max_t)):
        delta = reward[:, t] + gamma * not_term[:, t] * values[:, t + 1] - values[:, t]
        nxt = filled[:, t] * (delta + gamma * lam * nxt)
        advantages[:, t] = nxt
    return advantages, (advantages + values[:, :-1]) * filled


def value_loss(values: torch.Tensor, values_old: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None, mean=masked_mean) -> torch.Tensor:
    """Squared error to the returns; with ``clip`` PPO2's pessimistic clipped form
    max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2), so one update cannot move V far from V_old."""
    loss = (values - returns) ** 2
    if clip is not None:
        clipped = values_old + (values - values_old).clamp(-clip, clip)
        loss = torch.max(loss, (clipped - returns) ** 2)
    return mean(loss, mask)


def per_agent_kl(logp_old: torch.Tensor, logp_new: torch.Tensor, mask: torch.Tensor,
                 axis: SeedAxis | None = None) -> torch.Tensor:
    """Exact KL(pi_old || pi_new) over actions, averaged over real steps per agent: logp [B, T+1, n, |U|]
    -> [n] ([S, n] for a pack's ``axis``)."""
    kl = (logp_old.exp() * (logp_old - logp_new)).sum(-1)[:, :-1]
    return (axis or SeedAxis()).agent_means(kl, mask)
