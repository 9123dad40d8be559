"""COMA (Foerster et al., 2018): counterfactual multi-agent policy gradients.

Advantage (eq. 1 of the ASAE paper): A^a = Q(s, u) - sum_u' pi^a(u'|tau^a) Q(s, (u^{-a}, u')), with the
other agents' actions fixed at the executed ones. One vanilla policy-gradient step per batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from algos.actor_critic import ActorCriticConfig, CounterfactualActorCritic
from algos.batch import EpisodeBatch
from algos.networks import at_executed, entropy


@dataclass(frozen=True)
class COMAConfig(ActorCriticConfig):
    pass


class COMA(CounterfactualActorCritic):
    name = "coma"
    description = "COMA: centralised Q critic, counterfactual baseline, one policy-gradient step per batch"
    Config = COMAConfig

    def actor_loss(self, logp: torch.Tensor, logp_soft: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor,
                   mask: torch.Tensor):
        """-E[A log pi(u)] on the acting (floored) policy, minus the entropy bonus on the actor's softmax."""
        mean = self.axis.masked_mean
        ent = mean(entropy(logp_soft[:, :-1]), mask)
        return -mean(advantages * at_executed(logp, actions), mask) - self.cfg.entropy_coef * ent, ent

    def train(self, batch: EpisodeBatch, t_env: int, episodes: int) -> dict[str, float]:
        batch = self.prepare(batch)
        metrics = self.train_critic(batch)
        logp_soft = self.actor_log_softmax(batch)
        logp = self.floored(logp_soft, batch.avail, t_env)
        advantages = self.marginal_advantage(batch, logp.detach().exp(), m=1, kind="coma")
        mask = batch.filled.unsqueeze(-1)
        loss, softmax_entropy = self.actor_loss(logp, logp_soft, batch.actions, advantages, mask)
        grad_norm = self.step_actor(loss)
        metric, mean = self.axis.metric, self.axis.masked_mean
        return {**metrics, "actor_loss": metric(loss), "entropy": metric(mean(entropy(logp.detach()[:, :-1]), mask)),
                "entropy_softmax": metric(softmax_entropy), "actor_grad_norm": metric(grad_norm),
                "advantage_mean": metric(mean(advantages, mask))}
