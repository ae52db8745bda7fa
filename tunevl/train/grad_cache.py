"""GradCache: contrastive batches far beyond activation memory (``train.grad_cache_chunk_size``).

Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"
(https://arxiv.org/abs/2101.06983; reference code ``luyug/GradCache``). A contrastive loss needs every
embedding of the batch at once, but not every activation: so

1. each chunk of records is encoded without a graph (the RNG state saved first);
2. the loss runs once on the whole micro-batch (gathered across ranks as usual), and its gradient
   with respect to the embeddings is kept;
3. each chunk is encoded again with a graph under the same RNG state (the same dropout masks, LoRA
   dropout included) and back-propagates its slice of the kept gradient.

Activation memory is that of one chunk; the gradients equal those of the whole micro-batch in one
piece. The price is one extra forward per chunk, except the last: it is encoded with its graph in
step 1 and back-propagated first in step 3, without a second encode (its activations are the one
chunk's worth the other chunks then take in turn).

Which objectives: those that declare ``Objective.embedding_loss`` (their loss reads the records only
through what encode returns; see the base-class docstring for how outputs are laid out: per-record
blocks, shared values, and ``ragged_outputs`` whose rows vary with the records, as NegCLIP's hard
negatives and VladVA's captioned records). The others (next-token, counting, classification, DPO)
run encode and loss per chunk as ordinary forward/backward passes: their terms are means over
counted items (``Objective.counts``), so per-chunk terms weighted by their share of the counts add
up to exactly the micro-batch's gradient.

How a micro-batch is split. The data-loader workers collate each chunk of records on its own
(:func:`collate`), so every family's and every objective's batch layout splits correctly (padding,
several images per record, image patches of varying count). When a micro-batch needs several
chunks, their sizes differ (:func:`chunk_sizes`): an output whose rows follow the chunk's record
count is per-record, one of the same shape in every chunk is shared, and nothing is ambiguous.

Engines. Plain PyTorch and DDP: every pass runs on the module itself and the gradients are averaged
over ranks once, after the step's last backward (DDP's reducer expects one backward per forward and
every parameter in it, which several passes per micro-batch and objectives that skip some chunks
break). DeepSpeed: every pass goes through the engine's forward (ZeRO-3 gathers parameters and
counts micro-steps there) and ``engine.backward``, with the accumulation boundary set explicitly so
that only the step's last backward is a boundary. Every rank runs the same number of chunk passes
(the plan depends on the micro-batch size only, which the sampler keeps equal across ranks), so
ZeRO-3's collectives stay aligned.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils._pytree import tree_flatten, tree_flatten_with_path, tree_map, tree_unflatten

from tunevl.errors import TrainingError

__all__ = ["chunk_sizes", "collate", "micro_step"]


def chunk_sizes(n: int, chunk_size: int) -> list[int]:
    """Record counts of the chunks of an ``n``-record micro-batch, each at most ``chunk_size``.

    One chunk when ``n <= chunk_size``. Otherwise the remainder, then full chunks; when the chunk size
    divides ``n``, one chunk is split into 1 and ``chunk_size - 1`` records, so that at least two sizes
    differ (how per-record outputs are told from shared ones). The last chunk is a full one: it is the
    one whose graph is kept from the first pass (:func:`micro_step`).
    """
    if chunk_size < 2:
        raise ValueError(f"grad_cache_chunk_size must be >= 2, got {chunk_size}")
    if n <= chunk_size:
        return [n]
    full, rest = divmod(n, chunk_size)
    return [rest] + [chunk_size] * full if rest else [1, chunk_size - 1] + [chunk_size] * (full - 1)


def collate(module, records: list[dict], fields: set[str], chunk_size: int) -> dict[str, Any]:
    """A micro-batch collated chunk by chunk (runs in the data-loader workers).

    Returns ``{"index": [n], "chunks": [batch, ...]}``, each chunk an ordinary collated batch of
    ``TrainModule.collate`` (shared fields plus every objective's own part).
    """
    chunks, start = [], 0
    for size in chunk_sizes(len(records), chunk_size):
        chunks.append(module.collate(records[start : start + size], fields))
        start += size
    return {"index": torch.cat([c["index"] for c in chunks]), "chunks": chunks}


class _RngState:
    """The CPU and accelerator generators' states, to replay a chunk's dropout masks."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.accel = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.accel is not None:
            torch.cuda.set_rng_state(self.accel, self.device)


class _Runner:
    """One engine's way to run a pass over a chunk and back-propagate it."""

    def __init__(self, engine):
        from tunevl.train.engine import DeepSpeedEngine

        self.engine, self.module, self.device = engine, engine.module, engine.dist.device
        self.ds = engine.engine if isinstance(engine, DeepSpeedEngine) else None
        self.world = engine.dist.world_size

    def forward(self, chunk: dict, fn=None, scales: dict | None = None, boundary: bool = False):
        """``fn(chunk)`` (or the loss terms, without ``fn``) inside the module's forward: the DeepSpeed
        engine's when there is one, never DDP's (see the module doc)."""
        chunk = tree_map(lambda v: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v, chunk)
        if self.ds is not None:
            self.ds.set_gradient_accumulation_boundary(boundary)
            return self.ds(chunk, scales, call=fn)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.engine.bf16):
            return self.module(chunk, scales, call=fn)

    def backward(self, loss: torch.Tensor) -> None:
        if self.ds is not None:
            self.ds.backward(loss, scale_wrt_gas=False)  # terms are normalised over the step already
        else:
            loss.backward()

    def end_micro_batch(self, last: bool) -> None:
        if self.ds is not None:
            if not last:
                self.ds.step()  # a micro-step: DeepSpeed counts it and updates nothing
        elif last and self.world > 1:
            _average_gradients(self.engine.trainable, self.world)


def _average_gradients(params: list[nn.Parameter], world: int, bucket: int = 1 << 25) -> None:
    """What DDP does after a synchronised backward: each gradient averaged over ranks (in flat buckets)."""
    for p in params:
        if p.grad is None:  # every rank runs the same graphs, so this holds on every rank alike
            p.grad = torch.zeros_like(p)
    buckets: list[list[nn.Parameter]] = []
    size = 0
    for p in params:
        if buckets and buckets[-1][0].grad.dtype == p.grad.dtype and size + p.numel() <= bucket:
            buckets[-1].append(p)
            size += p.numel()
        else:
            buckets.append([p])
            size = p.numel()
    for group in buckets:
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat)
        flat.div_(world)
        for p, g in zip(group, flat.split([p.numel() for p in group])):
            p.grad.copy_(g.view_as(p.grad))


def _weighted(objective, index: int, terms: dict[str, torch.Tensor], scales: dict, factors: dict | None = None):
    """Sum of ``weight * scale * term`` (as ``TrainModule.forward``), a term's scale times ``factors[name]``."""
    total = None
    for name, value in terms.items():
        value = value * scales.get((index, name), scales[None]) * objective.weight
        if factors is not None:
            value = value * factors[name]
        total = value if total is None else total + value
    return total


class _Layout:
    """How each leaf of an objective's encode outputs follows the records, read across chunks of distinct sizes.

    ``blocks[i]`` is ``m >= 1`` for a per-record leaf (``m`` blocks of per-record rows), 0 for a shared one
    and -1 for a ragged one (an output named in ``Objective.ragged_outputs``: each chunk's own rows, as many
    as its records produce, concatenated chunk after chunk; ``offsets[i][j]`` is chunk ``j``'s first row).
    """

    def __init__(self, name: str, per_chunk: list[list], sizes: list[int], ragged: list[bool]):
        self.blocks, self.offsets = [], []
        for position, (values, is_ragged) in enumerate(zip(zip(*per_chunk), ragged)):
            first = values[0]
            self.offsets.append(None)
            if isinstance(first, nn.Module):
                raise TrainingError(
                    f"objective {name}: encode returns a module ({type(first).__name__}); an embedding_loss "
                    "objective's loss may read trainable weights only through encode's tensors"
                )
            if is_ragged:
                if not all(torch.is_tensor(v) and v.ndim >= 1 and v.shape[1:] == first.shape[1:] for v in values):
                    raise TrainingError(
                        f"objective {name}: a ragged output (leaf {position} of encode's result) must be a tensor of rows "
                        f"with the same trailing shape in every chunk, got {[getattr(v, 'shape', v) for v in values]}"
                    )
                self.blocks.append(-1)
                self.offsets[-1] = [0, *itertools.accumulate(v.shape[0] for v in values)]
                continue
            if not torch.is_tensor(first) or first.ndim == 0:
                self.blocks.append(0)
                continue
            rows = [v.shape[0] for v in values]
            same_rest = all(v.shape[1:] == first.shape[1:] for v in values)
            m, rem = divmod(rows[0], sizes[0])
            if same_rest and m >= 1 and rem == 0 and all(r == m * n for r, n in zip(rows, sizes)):
                self.blocks.append(m)
            elif all(v.shape == first.shape for v in values):
                self.blocks.append(0)
            else:
                raise TrainingError(
                    f"objective {name}: an output (leaf {position} of encode's result) has shapes "
                    f"{[tuple(v.shape) for v in values]} for chunks of {sizes} records. An embedding_loss objective's "
                    "tensors hold m rows per record in m blocks with the same trailing shape (pad to a fixed length), "
                    "or are shared by the whole micro-batch (the same shape in every chunk); rows over a subset of "
                    "the records are declared in the objective's ragged_outputs"
                )

    def merge(self, per_chunk: list[list], sizes: list[int]) -> list:
        merged = []
        for m, values in zip(self.blocks, zip(*per_chunk)):
            if m == 0:
                merged.append(values[0])
            elif m in (1, -1):
                merged.append(torch.cat(values))
            else:  # m blocks of n rows: block b of the micro-batch is block b of every chunk, in order
                rest = values[0].shape[1:]
                parts = [v.reshape(m, n, *rest) for v, n in zip(values, sizes)]
                merged.append(torch.cat(parts, dim=1).reshape(m * sum(sizes), *rest))
        return merged

    def chunk_grads(self, grads: list, sizes: list[int], j: int) -> list:
        """The slice of the micro-batch gradients that belongs to chunk ``j`` (shared leaves: chunk 0 only)."""
        start, n, total = sum(sizes[:j]), sizes[j], sum(sizes)
        out = []
        for m, offsets, g in zip(self.blocks, self.offsets, grads):
            if g is None or (m == 0 and j > 0):
                out.append(None)
            elif m == 0:
                out.append(g)
            elif m == -1:
                out.append(g[offsets[j] : offsets[j + 1]])
            else:
                rest = g.shape[1:]
                out.append(g.reshape(m, total, *rest)[:, start : start + n].reshape(m * n, *rest))
        return out


def _ragged(objective, spec) -> list[bool]:
    """Which leaves of an encode result (its tree ``spec``) belong to the objective's ``ragged_outputs``."""
    names = objective.ragged_outputs
    if not names:
        return [False] * spec.num_leaves
    paths, _ = tree_flatten_with_path(tree_unflatten(list(range(spec.num_leaves)), spec))
    return [bool(path) and getattr(path[0], "key", None) in names for path, _ in paths]


def _keep(value):
    """An encode output kept between passes: no parameter or view of a larger tensor stays referenced."""
    if torch.is_tensor(value) and (isinstance(value, nn.Parameter) or value._is_view()):
        return value.detach().clone()
    return value


def micro_step(engine, batch: dict[str, Any], scales: dict, last: bool) -> torch.Tensor:
    """Forward and backward of one micro-batch collated by :func:`collate`; returns its loss (detached).

    Args:
        engine: The loop's ``TorchEngine`` or ``DeepSpeedEngine``.
        batch: ``{"index", "chunks"}`` on the host; chunks move to the device one at a time.
        scales: The micro-batch's term factors (``loop.step_scales``).
        last: Whether this is the step's last micro-batch (gradients are synchronised after it).
    """
    run = _Runner(engine)
    module, chunks = engine.module, batch["chunks"]
    if len(chunks) == 1:  # the micro-batch fits in one chunk: the ordinary forward and backward
        loss = sum(run.forward(chunks[0], scales=scales, boundary=last).values())
        run.backward(loss)
        run.end_micro_batch(last)
        return loss.detach()
    sizes = [int(c["index"].shape[0]) for c in chunks]
    emb = [i for i, o in enumerate(module.objectives) if o.embedding_loss]
    other = [i for i in range(len(module.objectives)) if i not in emb]
    counts = [module.counts(chunk) for chunk in chunks]
    sums = {key: sum(c[key] for c in counts).clamp(min=1) for key in counts[0]}
    states, specs = [], {}

    def encode(parts, j):
        """Every embedding objective's encode outputs on chunk ``j``, as lists of leaves."""
        out = []
        for i in emb:
            leaves, spec = tree_flatten(module.objectives[i].encode(module.view, parts[i]))
            if specs.setdefault(i, spec) != spec:
                raise TrainingError(f"objective {type(module.objectives[i]).__name__}: encode returned a different "
                                    f"structure for chunk {j} than for chunk 0")
            out.append(leaves)
        return out

    def others(parts, j):
        """The other objectives' weighted terms on chunk ``j``, each scaled by the chunk's share of its counts."""
        value = reported = torch.zeros((), device=run.device)
        for i in other:
            objective = module.objectives[i]
            terms = objective(module.view, parts[i])
            missing = [name for name in terms if (i, name) not in counts[j]]
            if missing:
                raise TrainingError(
                    f"objective {type(objective).__name__}: term(s) {missing} have no counts (micro-batch means) and the "
                    "objective is not an embedding_loss: under train.grad_cache_chunk_size it runs chunk by chunk, which "
                    "would change that mean. Give those terms counts(), or unset grad_cache_chunk_size"
                )
            factors = {name: (counts[j][(i, name)] / sums[(i, name)]).float().to(run.device) for name in terms}
            term = _weighted(objective, i, terms, scales, factors)
            value, reported = value + term, reported + term.detach()
        return value, reported

    # 1. Every chunk encoded from a remembered RNG state: without a graph, except the last chunk, whose graph
    # is kept until step 3 (it is back-propagated first, without a second encode; its activations are the
    # one chunk's worth of memory the other chunks need in turn).
    def first_pass(chunk, j):
        states.append(_RngState(run.device))
        parts = module.parts(chunk)
        if j < len(chunks) - 1:
            return [[_keep(v) for v in leaves] for leaves in encode(parts, j)], None
        graph = encode(parts, j)
        detached = [[_keep(v).detach() if torch.is_tensor(v) else v for v in leaves] for leaves in graph]
        return detached, (graph, *others(parts, j))

    outputs = []
    for j, chunk in enumerate(chunks):
        with torch.set_grad_enabled(j == len(chunks) - 1):
            detached, kept = run.forward(chunk, lambda c, j=j: first_pass(c, j))
        outputs.append(detached)

    # 2. The loss on the whole micro-batch and its gradient with respect to the encode outputs.
    layouts, grads, total = [], [], torch.zeros((), device=run.device)
    if emb:
        leaves, emb_loss = [], None
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.ds is None and engine.bf16):
            for k, i in enumerate(emb):
                objective, per_chunk = module.objectives[i], [out[k] for out in outputs]
                layouts.append(_Layout(type(objective).__name__, per_chunk, sizes, _ragged(objective, specs[i])))
                merged = [v.requires_grad_() if torch.is_tensor(v) and v.is_floating_point() else v
                          for v in layouts[-1].merge(per_chunk, sizes)]
                leaves.append(merged)
                value = _weighted(objective, i, objective.loss(**tree_unflatten(merged, specs[i])), scales)
                emb_loss = value if emb_loss is None else emb_loss + value
        wanted = [v for group in leaves for v in group if torch.is_tensor(v) and v.requires_grad]
        found = iter(torch.autograd.grad(emb_loss, wanted, allow_unused=True) if wanted and emb_loss.requires_grad
                     else [None] * len(wanted))
        grads = [[next(found) if torch.is_tensor(v) and v.requires_grad else None for v in group] for group in leaves]
        total = total + emb_loss.detach()
        del leaves, emb_loss
    del outputs

    def surrogate(graph, j):
        """A scalar whose gradient with respect to chunk ``j``'s encode outputs is their cached gradient."""
        value = torch.zeros((), device=run.device)
        for k, leaves in enumerate(graph):
            for leaf, g in zip(leaves, layouts[k].chunk_grads(grads[k], sizes, j)):
                if g is not None and leaf.requires_grad:
                    value = value + (leaf * g).sum()
        return value

    # 3. The kept last chunk back-propagates, then every other chunk is encoded again with a graph under its
    # replayed RNG state (the same dropout masks); the other objectives draw from the ongoing stream.
    graph, value, reported = kept
    loss = surrogate(graph, len(chunks) - 1) + value
    if loss.requires_grad:
        run.backward(loss)
    total = total + reported
    del graph, value, loss, kept

    def second_pass(chunk, j):
        parts, graph = module.parts(chunk), []
        if emb:
            main = _RngState(run.device)
            states[j].restore()
            graph = encode(parts, j)
            main.restore()
        value, reported = others(parts, j)
        return surrogate(graph, j) + value, reported

    for j, chunk in enumerate(chunks[:-1]):
        loss, reported = run.forward(chunk, lambda c, j=j: second_pass(c, j), boundary=last and j == len(chunks) - 2)
        if loss.requires_grad:
            run.backward(loss)
        total = total + reported
    run.end_micro_batch(last)
    return total
