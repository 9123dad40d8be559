"""How well does a trained COMA/ASAE critic rank one agent's actions? Its Q(s, (u^{-a}, x)) against
Monte-Carlo returns from the same state, on SMAX (whose state can be copied).

    python -m experiments.critic_check RUN_DIR [--step 8] [--envs 64] [--rollouts 16] [--agent 0] [--seed 0]

From the run's last checkpoint: play ``--envs`` battles with the behaviour policy (the floored policy
at the checkpoint's t_env) up to time step ``--step``; in every battle still going on where the agent has
two or more actions, take the joint action the policy drew there, put each available action x in the
agent's place (the others keep theirs: the counterfactual the critic's advantage reads), copy the battle
``--rollouts`` times per x with fresh env randomness, play on with the same policy to the end and take
the discounted return from that step. That Monte-Carlo Q_MC(x) is set beside the critic's Q(x).

Printed (centred per state: only differences between actions enter an advantage): the correlation of
critic and MC action values, how often their best actions agree, how often the sign of the advantage
against the policy's own baseline (sum_x pi(x) Q(x)) agrees, the mean action gap |Q(x) - Q(y)| of each,
and the MC estimate's own standard error (its noise, to read the rest against). A diagnostic for
docs/fidelity.md, not part of training.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from algos.batch import EpisodeBatch
from envs import make_env
from experiments.config import validate
from experiments.trainer import build_learner, read_checkpoint
from validation import ConfigError, require


def load(run_dir: Path, n_envs: int):
    cfg = validate({k: v for k, v in json.loads((run_dir / "config.json").read_text()).items()
                    if k not in ("run_key", "env_info")})
    require(cfg.env["name"] == "smax", f"{run_dir}: env {cfg.env['name']!r}; the check copies SMAX battles only")
    require(cfg.algo in ("coma", "asae"), f"{run_dir}: algo {cfg.algo!r}; the check reads a COMA-style critic")
    env = make_env(cfg.env, n_envs)
    spec = env.info.teams[0]
    learner = build_learner(cfg, spec, cfg.algo, env.info.episode_limit, torch.device("cpu"))
    state = read_checkpoint(run_dir / "checkpoint.pt")
    learner.load_state_dict(state["learners"]["team"])
    return cfg, env, learner, state["counters"]["t_env"]


def play_to(env, ctrl, t_env: int, step: int, seeds: list[int]):
    """Play until ``step``; returns the prefix record and the snapshot taken before stepping ``step``."""
    obs = env.reset(seeds)["team"]
    b, n = obs.avail.shape[:2]
    hidden, last = ctrl.init_hidden(b), torch.full((b, n), -1, dtype=torch.int64)
    done = torch.zeros(b, dtype=torch.bool)
    rec = {"obs": [], "state": [], "avail": [], "actions": [], "reward": []}
    for t in range(step + 1):
        if t == step:
            snap = (env._state, env._keys)
        acts, hidden = ctrl.act(obs, last, hidden, t_env, test_mode=False)
        for key, value in (("obs", obs.obs), ("state", obs.state), ("avail", obs.avail), ("actions", acts)):
            rec[key].append(value.clone())
        if t == step:
            break
        res = env.step({"team": acts})
        rec["reward"].append(res.reward["team"].clone())
        done |= res.terminated | res.truncated
        last, obs = acts, res.obs["team"]
    return rec, snap, hidden, done


def prefix_batch(rec) -> EpisodeBatch:
    """The recorded prefix as an EpisodeBatch whose last real slot is the checked step (an empty slot after
    it, as the critic's inputs expect)."""
    pad = lambda xs: torch.stack(xs + [torch.zeros_like(xs[-1])], dim=1)  # noqa: E731 (slot step+1)
    b, steps = rec["obs"][0].shape[0], len(rec["obs"])
    return EpisodeBatch(obs=pad(rec["obs"]), state=pad(rec["state"]), avail=pad(rec["avail"]),
                        actions=pad(rec["actions"]), reward=torch.stack(rec["reward"] + [torch.zeros(b)], dim=1),
                        terminated=torch.zeros(b, steps), filled=torch.ones(b, steps))


@torch.no_grad()
def critic_values(learner, batch: EpisodeBatch, agent: int) -> torch.Tensor:
    """The critic's Q(s_step, (u^{-a}, .)) for ``agent``: [B, |U|]."""
    step = batch.max_t - 1
    base = learner.critic.base_features(batch)[:, step]  # [B, n, H]
    return learner.critic(base, batch.actions[:, step].unsqueeze(1))[:, 0, agent]  # [B, |U|]


@torch.no_grad()
def policy_at(learner, batch: EpisodeBatch, t_env: int, agent: int) -> torch.Tensor:
    """The behaviour policy's probabilities for ``agent`` at the checked step: [B, |U|]."""
    logp = learner.policy_log_probs(batch, t_env)  # floored, as the agents acted
    return logp[:, batch.max_t - 1, agent].exp()


def monte_carlo(cfg, learner, t_env, rec, snap, hidden, rows, agent: int, rollouts: int, seed: int):
    """Q_MC(x) per (row, available action x): mean and standard error of the discounted return."""
    import jax

    avail = rec["avail"][-1][:, agent]
    pairs = [(b, x) for b in rows for x in torch.nonzero(avail[b]).flatten().tolist()]
    index = torch.tensor([b for b, _ in pairs for _ in range(rollouts)])
    actions = rec["actions"][-1][index].clone()
    actions[:, agent] = torch.tensor([x for _, x in pairs for _ in range(rollouts)])
    env = make_env(cfg.env, len(index))
    env.reset(list(range(len(index))))  # compiles and allocates; the state is replaced next
    take = jax.numpy.asarray(index.numpy())
    env._state = jax.tree.map(lambda a: a[take], snap[0])
    env._keys = jax.random.split(jax.random.PRNGKey(seed), len(index))
    ctrl, gamma = learner.controller, cfg.gamma
    ret, discount = torch.zeros(len(index)), 1.0
    done = torch.zeros(len(index), dtype=torch.bool)
    h = hidden[index]
    res = env.step({"team": actions})
    for _ in range(env.info.episode_limit + 1):
        ret += torch.where(done, 0.0, res.reward["team"] * discount)
        done |= res.terminated | res.truncated
        if bool(done.all()):
            break
        discount *= gamma
        last, obs = actions, res.obs["team"]
        actions, h = ctrl.act(obs, last, h, t_env, test_mode=False)
        res = env.step({"team": actions})
    ret = ret.reshape(len(pairs), rollouts)
    mean, se = ret.mean(1), ret.std(1) / rollouts ** 0.5
    out: dict[int, dict[int, tuple[float, float]]] = {}
    for (b, x), m, s in zip(pairs, mean.tolist(), se.tolist()):
        out.setdefault(b, {})[x] = (m, s)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.critic_check", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--step", type=int, default=8)
    p.add_argument("--envs", type=int, default=64)
    p.add_argument("--rollouts", type=int, default=16)
    p.add_argument("--agent", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        require((args.run_dir / "checkpoint.pt").is_file(), f"{args.run_dir}: no checkpoint.pt")
        cfg, env, learner, t_env = load(args.run_dir, args.envs)
        torch.manual_seed(args.seed)
        rec, snap, hidden, done = play_to(env, learner.controller, t_env, args.step,
                                          [10_000 + args.seed * args.envs + i for i in range(args.envs)])
        avail = rec["avail"][-1][:, args.agent]
        rows = [b for b in range(args.envs) if not done[b] and int(avail[b].sum()) >= 2]
        require(len(rows) >= 4, f"only {len(rows)} battles still on with a choice at step {args.step}; try a smaller --step")
        batch = prefix_batch(rec)
        q_critic = critic_values(learner, batch, args.agent)
        mc = monte_carlo(cfg, learner, t_env, rec, snap, hidden, rows, args.agent, args.rollouts, args.seed)
    except ConfigError as exc:
        print(f"critic_check: {exc}", file=sys.stderr)
        return 2
    pi = policy_at(learner, batch, t_env, args.agent)
    c_all, m_all, best, signs, gaps_c, gaps_m, ses = [], [], [], [], [], [], []
    for b in rows:
        xs = sorted(mc[b])
        qc = np.array([float(q_critic[b, x]) for x in xs])
        qm = np.array([mc[b][x][0] for x in xs])
        ses.extend(mc[b][x][1] for x in xs)
        c_all.extend(qc - qc.mean())
        m_all.extend(qm - qm.mean())
        best.append(int(np.argmax(qc) == np.argmax(qm)))
        w = np.array([float(pi[b, x]) for x in xs])
        w = w / w.sum()
        signs.extend(np.sign(qc - w @ qc) == np.sign(qm - w @ qm))
        gaps_c.append(np.abs(qc[:, None] - qc[None, :]).mean())
        gaps_m.append(np.abs(qm[:, None] - qm[None, :]).mean())
    print(f"{args.run_dir} (t_env {t_env}): {len(rows)} states at step {args.step}, agent {args.agent}, "
          f"{args.rollouts} rollouts per action")
    print(f"  correlation of centred action values, critic vs MC: {np.corrcoef(c_all, m_all)[0, 1]:.2f}")
    print(f"  best action agrees: {np.mean(best):.2f} (chance: {np.mean([1 / len(mc[b]) for b in rows]):.2f})")
    print(f"  advantage sign agrees (baseline: the policy's own): {np.mean(signs):.2f}")
    print(f"  mean action gap |Q(x) - Q(y)|: critic {np.mean(gaps_c):.3f}, MC {np.mean(gaps_m):.3f}; "
          f"MC standard error per action {np.mean(ses):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
