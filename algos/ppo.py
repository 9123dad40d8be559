"""PPO pieces shared by every clipped-surrogate learner (ASAE, MAPPO, IPPO)."""
from __future__ import annotations

import torch


def clipped_surrogate_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                           mask: torch.Tensor, clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """-E[min(r A, clip(r, 1-eps, 1+eps) A)] over masked entries, and the fraction of clipped ratios.

    ``clip=None`` disables clipping (the loss is then -E[r A], whose gradient at r = 1 is the plain
    policy gradient -E[A grad log pi]).
    """
    mask = mask.expand_as(advantages)
    denom = mask.sum().clamp(min=1.0)
    ratio = torch.exp(logp - logp_old)
    surrogate = ratio * advantages
    if clip is None:
        clipped_frac = torch.zeros((), device=logp.device)
    else:
        surrogate = torch.min(surrogate, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages)
        clipped_frac = (((ratio - 1.0).abs() > clip).float() * mask).sum() / denom
    return -(surrogate * mask).sum() / denom, clipped_frac


def episode_minibatches(n_episodes: int, n_minibatches: int, generator: torch.Generator | None = None):
    """Random disjoint episode index sets (recurrent policies need whole episodes)."""
    perm = torch.randperm(n_episodes, generator=generator)
    return [chunk for chunk in perm.chunk(max(1, min(n_minibatches, n_episodes)))]
