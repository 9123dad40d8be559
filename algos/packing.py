"""The seed axis: S independent seeds of one configuration trained by one learner, in one process.

A packed learner is the same learner class built with ``Common.seeds = S``. Everything that differs
between one seed and S seeds lives in this module, so the learners read the same for both:

- **Data** is folded seed-major into the leading (episode) dimension: a batch of S x B episodes holds
  seed 0's B episodes first, then seed 1's, ... Elementwise work, indexing and masks need no change.
- **Networks** hold stacked parameters: ``Linear`` is ``nn.Linear`` for S = 1 and ``StackedLinear``
  (weights [S, out, in], one batched matmul over the seeds) otherwise; ``GRUCore`` runs nn.GRU's fused
  kernel once per seed (its recurrence is compute-bound already; one batched matmul per step for
  acting). Parameter names are the unpacked ones, so seed s's slice of a packed state dict is exactly
  the state dict of a learner of that seed alone (``unstack_tree``), and S single-seed states stack
  into a pack (``stack_tree``).
- **Reductions** that make a loss or a metric are per seed (``SeedAxis.masked_mean`` -> [S]); the
  packed loss is the sum over seeds, whose gradient for seed s's parameters is seed s's own gradient.
- **Rows**: ``SeedAxis.slot_index`` packs the slots a learner needs with the same number of rows per
  seed (each seed's real slots, then some of its padding slots, marked invalid), so stacked layers see
  [S, rows, ...] without copies; row reductions take the validity mask.
- **Optimizers and gradient clipping** are per seed: ``SeedAxis.optimizer`` steps only the seeds in a
  step mask (a seed with no data at a time step takes no step, as it would alone), and
  ``SeedAxis.clip_grad_norm`` clips each seed's gradient by its own norm.

With S = 1 every function here is the unpacked code path itself (nn.Linear, torch's optimizers,
``masked_mean``, ``nonzero``), so an unpacked run computes exactly what it computed before packing
existed: same numbers, same checkpoints.
"""
from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F



# ``SeedAxis.in_chunks``: activations per chunk, in elements (4 MiB of float32: about a core's L2 cache
# on this project's CPUs; measured on ASAE's critic forward, 0.5M-1M elements were fastest).
CHUNK_ELEMENTS = 1 << 20


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over entries where mask is 1 (mask broadcast to x)."""
    mask = mask.expand_as(x)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


class PerSeed(list):
    """A non-tensor value of a packed state (a counter, a running moment), one entry per seed."""


def stack_tree(trees: Sequence[Any]) -> Any:
    """S state trees of one seed each (nested dicts / lists / tuples of tensors and plain values) -> one
    packed tree: tensors stacked along a new leading seed dim, plain values kept when all seeds agree
    and gathered into a ``PerSeed`` list otherwise."""
    first = trees[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(list(trees))
    if isinstance(first, dict):
        return {k: stack_tree([t[k] for t in trees]) for k in first}
    if isinstance(first, (list, tuple)) and not isinstance(first, PerSeed) and all(len(t) == len(first) for t in trees) \
            and any(isinstance(x, (torch.Tensor, dict, list, tuple)) for x in first):
        return type(first)(stack_tree([t[i] for t in trees]) for i in range(len(first)))
    if all(_same(t, first) for t in trees[1:]):
        return first
    return PerSeed(trees)


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - values that do not compare (arrays): not the same
        return False


def unstack_tree(tree: Any, s: int) -> Any:
    """Seed s's state from a packed tree (every tensor's leading dim is the seed)."""
    if isinstance(tree, torch.Tensor):
        return tree[s].clone()
    if isinstance(tree, PerSeed):
        return tree[s]
    if isinstance(tree, np.ndarray):
        return tree[s].item()
    if isinstance(tree, dict):
        return {k: unstack_tree(v, s) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(unstack_tree(v, s) for v in tree)
    return tree


class Slots(NamedTuple):
    """Packed slots: the (episode, time) index of each row and, in a pack, which rows are real
    (``valid`` [R] float; None with one seed, where every row is real). Rows are seed-major with the
    same count per seed."""
    index: tuple[torch.Tensor, torch.Tensor]
    valid: torch.Tensor | None


class TimeStep(NamedTuple):
    """One critic step: rows (an index into packed rows), which rows are real (None: all) and which
    seeds step (None: all)."""
    rows: torch.Tensor
    valid: torch.Tensor | None
    seed_mask: torch.Tensor | None


class SeedAxis:
    """The seed axis of a learner: ``n`` seeds folded seed-major into the episode dimension."""

    def __init__(self, n: int = 1):
        if n < 1:
            raise ValueError(f"a pack holds at least one seed, not {n}")
        self.n = n

    @property
    def packed(self) -> bool:
        return self.n > 1

    # --- reductions -------------------------------------------------------------------------------
    def masked_mean(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean of x over mask per seed: [S] (a scalar with one seed). x and mask are folded [S*B, ...]."""
        if not self.packed:
            return masked_mean(x, mask)
        mask = mask.expand_as(x)
        per = (x * mask).reshape(self.n, -1).sum(1)
        return per / mask.reshape(self.n, -1).sum(1).clamp(min=1.0)

    def row_mean(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Mean over packed rows (``valid`` [R]: which are real; None: all), per seed: [S] (x.mean()
        with one seed)."""
        if valid is None:
            return x.mean()
        return self.masked_mean(x, valid.reshape(valid.shape + (1,) * (x.dim() - 1)))

    def values(self, x: torch.Tensor | float) -> list[float]:
        """A per-seed metric ([S] tensor, or a scalar with one seed) -> one float per seed (one host sync)."""
        if isinstance(x, torch.Tensor):
            out = x.detach().reshape(-1).tolist()
            return out * self.n if len(out) == 1 and self.n > 1 else out
        return [float(x)] * self.n

    def metric(self, x: torch.Tensor | float) -> float | list[float]:
        """A logged value: a float with one seed, one float per seed in a pack."""
        if not self.packed:
            return x.item() if isinstance(x, torch.Tensor) else float(x)
        return self.values(x)

    def metrics(self, values: dict[str, torch.Tensor]) -> dict[str, float | list[float]]:
        """Logged values, converted in one host sync: floats with one seed, a list per seed in a pack."""
        converted = torch.stack([v.detach().float().reshape(-1).expand(1 if not self.packed else self.n)
                                 for v in values.values()]).tolist()
        return {k: (v[0] if not self.packed else v) for k, v in zip(values, converted)}

    def agent_means(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked mean over episodes and time per agent: x [S*B, T, n] -> [n] ([S, n] in a pack)."""
        if not self.packed:
            return (x * mask).sum((0, 1)) / mask.sum((0, 1)).clamp(min=1.0)
        n = x.shape[-1]
        xm = (x * mask).reshape(self.n, -1, n).sum(1)
        return xm / mask.expand_as(x).reshape(self.n, -1, n).sum(1).clamp(min=1.0)

    def per_seed(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Per-seed values [S] (a scalar with one seed) spread over a folded tensor's rows, to broadcast
        against ``like`` [S*B, ...]."""
        if values.dim() == 0:
            return values
        return values.repeat_interleave(like.shape[0] // self.n).reshape((like.shape[0],) + (1,) * (like.dim() - 1))

    def only_valid(self, x: torch.Tensor, slots: Slots) -> torch.Tensor:
        """Rows of packed slots with the filler rows zeroed (they are padding slots: nothing reads them,
        this keeps them 0 as with one seed)."""
        if slots.valid is None:
            return x
        return x * slots.valid.reshape(slots.valid.shape + (1,) * (x.dim() - 1))

    def time_steps(self, real: Slots, max_t: int) -> list["TimeStep"]:
        """PyMARL's critic schedule, one step per time step of the batch, latest first, each on the rows of
        that step: index into the packed rows of ``real``. In a pack each step has the same number of rows
        per seed (fillers marked invalid), and ``seed_mask`` says which seeds have rows at that step (the
        others take no optimizer step, as alone they would not)."""
        if real.valid is None:
            counts = torch.bincount(real.index[1], minlength=max_t).tolist()  # one host sync
            by_time = torch.argsort(real.index[1], stable=True).split(counts)
            return [TimeStep(rows_t, None, None) for rows_t in reversed(by_time) if rows_t.numel()]
        n, per = self.n, real.valid.numel() // self.n
        times = real.index[1].reshape(n, per)
        valid = real.valid.reshape(n, per).bool()
        key = torch.where(valid, times, torch.full_like(times, max_t))  # fillers sort last
        order = torch.argsort(key, dim=1, stable=True)
        counts = torch.zeros(n, max_t + 1, dtype=torch.long, device=times.device)
        counts.scatter_add_(1, key, torch.ones_like(key))
        counts = counts[:, :max_t]
        offsets = counts.cumsum(1) - counts
        base = (torch.arange(n, device=times.device) * per).unsqueeze(1)
        host = counts.cpu()
        steps = []
        for t in reversed(range(max_t)):
            c = host[:, t]
            width = int(c.max())
            if width == 0:
                continue
            j = torch.arange(width, device=times.device).unsqueeze(0)
            ok = j < c.to(times.device).unsqueeze(1)
            pos = torch.where(ok, offsets[:, t:t + 1] + j, torch.zeros_like(j))  # fillers: any row of the seed
            steps.append(TimeStep((order.gather(1, pos) + base).reshape(-1), ok.reshape(-1).float(), c > 0))
        return steps

    def steps_taken(self, steps: Sequence["TimeStep"]):
        """Optimizer steps each seed took over ``steps``: an int (an int64 array in a pack)."""
        if not self.packed or not steps:
            return len(steps) if not self.packed else np.zeros(self.n, dtype=np.int64)
        return torch.stack([s.seed_mask if s.seed_mask is not None else torch.ones(self.n, dtype=torch.bool)
                            for s in steps]).sum(0).numpy().astype(np.int64)

    def step_mean(self, values: Sequence[torch.Tensor], steps: Sequence["TimeStep"]) -> torch.Tensor:
        """Mean of per-step values over the steps each seed took: a scalar ([S] in a pack)."""
        stacked = torch.stack(list(values))
        if not self.packed:
            return stacked.mean()
        taken = torch.stack([s.seed_mask if s.seed_mask is not None else torch.ones(self.n, dtype=torch.bool)
                             for s in steps]).to(stacked.device).float()
        return (stacked * taken).sum(0) / taken.sum(0).clamp(min=1.0)

    @staticmethod
    def total(loss: torch.Tensor) -> torch.Tensor:
        """The loss to differentiate: the sum of the seeds' losses (each seed's parameters get exactly
        their own seed's gradient). With one seed: the loss itself."""
        return loss if loss.dim() == 0 else loss.sum()

    # --- rows -------------------------------------------------------------------------------------
    def in_chunks(self, fn, *folded: torch.Tensor, row_elements: int) -> torch.Tensor:
        """``fn(*folded)`` for a function whose rows are independent (row i of the output depends on
        row i of the inputs only), evaluated on chunks of rows so that a chunk's activations stay
        near ``CHUNK_ELEMENTS`` (``row_elements``: the elements of fn's largest activation per input
        row). Each chunk holds every seed's equal share of rows, seed-major, as a stacked layer needs.
        The result is the whole call's, bit for bit (tests/test_packing.py); one call when it fits.

        Why: ASAE's critic on m joint samples makes [rows, m, n, H] activations that outgrow the CPU's
        caches (and, in a pack, the allocator's reuse of large blocks): on an 8-agent map one seed's
        whole forward took 2.3x the time of the same rows in chunks; a pack of 5 seeds on spread 1.9x."""
        k = folded[0].shape[0] // self.n
        per = max(1, CHUNK_ELEMENTS // (self.n * max(1, row_elements)))
        if per >= k:
            return fn(*folded)
        if not self.packed:
            return torch.cat([fn(*(x[i:i + per] for x in folded)) for i in range(0, k, per)])
        views = [x.reshape(self.n, k, *x.shape[1:]) for x in folded]
        outs = []
        for i in range(0, k, per):
            out = fn(*(v[:, i:i + per].reshape(-1, *v.shape[2:]) for v in views))
            outs.append(out.reshape(self.n, -1, *out.shape[1:]))
        out = torch.cat(outs, dim=1)
        return out.reshape(-1, *out.shape[2:])

    def slot_index(self, mask: torch.Tensor) -> Slots:
        """Slots of the true entries of a [S*B, T] mask, seed-major, the same number per seed (seeds
        with fewer true entries are topped up with their own false slots, marked invalid)."""
        if not self.packed:
            return Slots(mask.nonzero(as_tuple=True), None)
        b, t = mask.shape
        flat = mask.reshape(self.n, -1)
        counts = flat.sum(1)
        need = int(counts.max())
        # true slots first (stable: in (episode, time) order), then false ones: the first ``need`` of each seed
        order = torch.argsort((~flat.bool()).to(torch.int8), dim=1, stable=True)[:, :need]
        valid = (torch.arange(need, device=mask.device).unsqueeze(0) < counts.unsqueeze(1)).reshape(-1).float()
        flat_index = (order + torch.arange(self.n, device=mask.device).unsqueeze(1) * (b // self.n) * t).reshape(-1)
        return Slots((flat_index // t, flat_index % t), valid)

    def episode_minibatches(self, n_episodes: int, n_minibatches: int) -> list[torch.Tensor]:
        """Random disjoint episode index sets, each holding the same episodes' share of every seed."""
        per_seed = n_episodes // self.n
        if not self.packed:
            perm = torch.randperm(n_episodes)
            return list(perm.chunk(max(1, min(n_minibatches, n_episodes))))
        k = max(1, min(n_minibatches, per_seed))
        perms = torch.stack([torch.randperm(per_seed) + s * per_seed for s in range(self.n)])  # [S, per_seed]
        return [chunk.reshape(-1) for chunk in perms.chunk(k, dim=1)]

    # --- optimisation -----------------------------------------------------------------------------
    def clip_grad_norm(self, params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """torch's clip_grad_norm_, per seed: each seed's gradients scaled by its own norm. -> norms [S]."""
        params = [p for p in params if p.grad is not None]
        if not self.packed:
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        grads = [p.grad for p in params]
        norms = torch.cat([g.reshape(self.n, -1) for g in grads], dim=1).norm(dim=1)  # [S]
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, [coef.reshape((self.n,) + (1,) * (g.dim() - 1)) for g in grads])
        return norms

    def optimizer(self, params, lr: float, kind: str, alpha: float = 0.99, eps: float = 1e-5) -> torch.optim.Optimizer:
        """PyMARL's RMSprop or Adam (torch's defaults); in a pack, one that steps only masked seeds."""
        params = list(params)
        if not self.packed:
            if kind == "rmsprop":
                return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps)
            return torch.optim.Adam(params, lr=lr)
        return SeedOptimizer(params, self.n, lr=lr, kind=kind, alpha=alpha, eps=eps)

    @staticmethod
    def step(optimizer: torch.optim.Optimizer, seed_mask: torch.Tensor | None = None) -> None:
        """One optimizer step; in a pack only the seeds in ``seed_mask`` ([S] bool) move."""
        if isinstance(optimizer, SeedOptimizer):
            optimizer.step(seed_mask)
        else:
            optimizer.step()

    # --- per-seed control flow ----------------------------------------------------------------------
    def counter(self, value: int = 0):
        """A per-seed counter: an int with one seed, an int64 array in a pack."""
        return value if not self.packed else np.full(self.n, value, dtype=np.int64)

    def select(self, due, a, b):
        """Per seed: ``a`` where ``due`` else ``b`` (plain if/else with one seed)."""
        if not self.packed:
            return a if due else b
        return np.where(due, a, b)

    def copy_where(self, target: nn.Module, source: nn.Module, due) -> None:
        """Hard target update of the seeds that are due (all parameters and buffers)."""
        if not self.packed:
            if due:
                target.load_state_dict(source.state_dict())
            return
        due = np.asarray(due, dtype=bool)
        if not due.any():
            return
        mask = torch.as_tensor(due)
        with torch.no_grad():
            for (name, t), (_, s) in zip(target.state_dict().items(), source.state_dict().items()):
                m = mask.to(t.device).reshape((self.n,) + (1,) * (t.dim() - 1))
                t.copy_(torch.where(m, s, t))

class SeedOptimizer(torch.optim.Optimizer):
    """RMSprop (PyMARL's: no momentum, not centred) or Adam over stacked parameters [S, ...], stepping
    only the seeds in a mask. Its state per parameter is torch's (``square_avg``; ``exp_avg``,
    ``exp_avg_sq``) with a leading seed dim, and ``step`` per seed ([S] float), so seed s's slice of its
    state dict is the state dict of torch's optimizer for that seed alone (``unstack_tree``)."""

    def __init__(self, params, n_seeds: int, lr: float, kind: str, alpha: float, eps: float):
        # torch's own settings (every key of its param groups), so that the state dicts load both ways
        probe = [torch.zeros(1, requires_grad=True)]
        reference = torch.optim.RMSprop(probe, lr=lr, alpha=alpha, eps=eps) if kind == "rmsprop" else \
            torch.optim.Adam(probe, lr=lr)
        super().__init__(params, dict(reference.defaults))
        self.n_seeds, self.kind = n_seeds, kind

    @torch.no_grad()
    def step(self, seed_mask: torch.Tensor | None = None, closure=None):  # noqa: D401 - torch's signature
        """One step of every seed in ``seed_mask`` (None: all). Seeds outside it keep their parameters and
        optimizer state exactly (saved before the step, put back after it)."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(self.n_seeds)
                    if self.kind == "rmsprop":
                        state["square_avg"] = torch.zeros_like(p)
                    else:
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
            held = None
            if seed_mask is not None and not bool(seed_mask.all()):
                keep = (~seed_mask).nonzero(as_tuple=True)[0].to(params[0].device)
                held = [(t, t.index_select(0, keep).clone()) for p in params
                        for t in (p, *[v for k, v in self.state[p].items() if k != "step"])]
            for p in params:
                self.state[p]["step"] += 1 if seed_mask is None else seed_mask.float().cpu()
            grads = [p.grad for p in params]
            if self.kind == "rmsprop":  # torch's RMSprop (no momentum, not centred), all parameters at once
                squares = [self.state[p]["square_avg"] for p in params]
                torch._foreach_mul_(squares, group["alpha"])
                torch._foreach_addcmul_(squares, grads, grads, value=1 - group["alpha"])
                avg = torch._foreach_sqrt(squares)
                torch._foreach_add_(avg, group["eps"])
                torch._foreach_addcdiv_(params, grads, avg, value=-group["lr"])
            else:  # torch's Adam (no weight decay, no amsgrad), with each seed's own step count
                beta1, beta2 = group["betas"]
                for p, g in zip(params, grads):
                    st = self.state[p]
                    shape = (self.n_seeds,) + (1,) * (p.dim() - 1)
                    step = st["step"].clamp(min=1).to(p.device).reshape(shape)
                    st["exp_avg"].lerp_(g, 1 - beta1)
                    st["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    bias1 = 1 - beta1 ** step
                    bias2_sqrt = (1 - beta2 ** step).sqrt()
                    denom = (st["exp_avg_sq"].sqrt() / bias2_sqrt).add_(group["eps"])
                    p.addcdiv_(st["exp_avg"], denom * bias1, value=-group["lr"])
            if held is not None:
                for tensor, saved in held:
                    tensor.index_copy_(0, keep, saved)
        return None


# --- stacked layers ----------------------------------------------------------------------------------
class StackedLinear(nn.Module):
    """S independent nn.Linear layers: weight [S, out, in], bias [S, out]. Input folded seed-major
    [S*K, ..., in] (or [S, K, in]) -> [S*K, ..., out]: one batched matmul for all seeds."""

    def __init__(self, n_seeds: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.n_seeds, self.in_features, self.out_features = n_seeds, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n_seeds, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(n_seeds, out_features)) if bias else None
        for s in range(n_seeds):  # nn.Linear's initialisation, seed by seed (a pack loads real seeds' weights anyway)
            layer = nn.Linear(in_features, out_features, bias=bias)
            with torch.no_grad():
                self.weight[s].copy_(layer.weight)
                if bias:
                    self.bias[s].copy_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return seed_linear(x, self.weight, self.bias)


def seed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for plain weights [out, in]; for stacked weights [S, out, in] the folded input's seed
    s rows use seed s's weights (one bmm)."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    n = weight.shape[0]
    lead = x.shape[:-1]
    flat = x.reshape(n, -1, x.shape[-1])
    out = torch.bmm(flat, weight.transpose(1, 2)) if bias is None else \
        torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.reshape(*lead, weight.shape[1])


def Linear(n_seeds: int, in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    """nn.Linear with one seed, StackedLinear with several."""
    if n_seeds == 1:
        return nn.Linear(in_features, out_features, bias=bias)
    return StackedLinear(n_seeds, in_features, out_features, bias)


class StackedGRU(nn.Module):
    """S independent single-layer nn.GRU (batch_first) with nn.GRU's parameter names, each [S, ...].
    Sequences run nn.GRU's fused kernel once per seed; ``cell`` is one step for all seeds at once."""

    def __init__(self, n_seeds: int, input_size: int, hidden_size: int):
        super().__init__()
        self.n_seeds, self.input_size, self.hidden_size = n_seeds, input_size, hidden_size
        ref = [nn.GRU(input_size, hidden_size, batch_first=True) for _ in range(n_seeds)]
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            self.register_parameter(name, nn.Parameter(torch.stack([getattr(g, name).detach() for g in ref])))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """x [S*K, T, in] -> (outputs [S*K, T, H], None)."""
        n = self.n_seeds
        parts = x.reshape(n, -1, *x.shape[1:])
        outs = []
        for s in range(n):
            h0 = torch.zeros(1, parts.shape[1], self.hidden_size, device=x.device, dtype=x.dtype)
            weights = [self.weight_ih_l0[s], self.weight_hh_l0[s], self.bias_ih_l0[s], self.bias_hh_l0[s]]
            out, _ = torch._VF.gru(parts[s], h0, weights, True, 1, 0.0, self.training, False, True)
            outs.append(out)
        return torch.cat(outs, dim=0), None

    def cell(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One GRU step for all seeds: x [S*K, in], h [S*K, H] -> [S*K, H] (torch's gate order r, z, n)."""
        gi = seed_linear(x, self.weight_ih_l0, self.bias_ih_l0)
        gh = seed_linear(h, self.weight_hh_l0, self.bias_hh_l0)
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        new = torch.tanh(i_n + r * h_n)
        return new + z * (h - new)


def GRU(n_seeds: int, input_size: int, hidden_size: int) -> nn.Module:
    """nn.GRU (batch_first) with one seed, StackedGRU with several."""
    if n_seeds == 1:
        return nn.GRU(input_size, hidden_size, batch_first=True)
    return StackedGRU(n_seeds, input_size, hidden_size)


def gru_step(rnn: nn.Module, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One step of either GRU: torch.gru_cell on nn.GRU's own weights (bit for bit a one-step nn.GRU
    call), or the stacked cell."""
    if isinstance(rnn, StackedGRU):
        return rnn.cell(x, h)
    return torch.gru_cell(x, h, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)


def stacked_param(n_seeds: int, *shape: int, init=None) -> nn.Parameter:
    """A parameter of ``shape`` for one seed, [S, *shape] in a pack (``init`` applied per seed)."""
    if n_seeds == 1:
        p = torch.empty(*shape)
        if init is not None:
            init(p)
        return nn.Parameter(p)
    slices = []
    for _ in range(n_seeds):
        p = torch.empty(*shape)
        if init is not None:
            init(p)
        slices.append(p)
    return nn.Parameter(torch.stack(slices))


__all__ = ["SeedAxis", "Slots", "PerSeed", "stack_tree", "unstack_tree", "Linear", "GRU", "gru_step",
           "seed_linear", "StackedLinear", "StackedGRU", "SeedOptimizer", "stacked_param", "masked_mean"]
