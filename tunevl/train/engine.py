"""What the loop drives: the trainable module, and two engines (plain PyTorch/DDP, DeepSpeed) with one API."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import nn

from tunevl.train.config import TrainConfig
from tunevl.train.deepspeed_config import is_zero3, resolve_deepspeed_config
from tunevl.train.distributed import DistInfo
from tunevl.train.optim import make_optimizer


class TrainModule(nn.Module):
    """The model (with adapters injected) plus the objectives; ``forward`` returns named loss terms.

    Every objective runs every step, so every rank builds the same graph (ZeRO-3 needs this).
    A collated batch holds the shared fields plus ``"own"``: one dict per objective (its
    :meth:`~tunevl.objectives.Objective.collate`), merged over the shared fields for that
    objective only.
    """

    def __init__(self, view, objectives: list[nn.Module]):
        super().__init__()
        self.view = view
        self.model = view.model
        self.objectives = nn.ModuleList(objectives)
        ids = {id(p): n for n, p in self.named_parameters()}
        self.extra_names = {ids[id(p)]: name for name, p in view.extra_trainables().items()}

    def collate(self, records: list[dict], fields: set[str]) -> dict[str, Any]:
        """Shared fields through the view, then each objective's own part (runs in data-loader workers)."""
        batch = self.view.collate(records, fields)
        batch["own"] = [objective.collate(self.view, records) for objective in self.objectives]
        return batch

    def parts(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """What each objective sees: the shared fields with its own part merged over them."""
        own = batch.get("own") or [{}] * len(self.objectives)
        shared = {k: v for k, v in batch.items() if k != "own"}
        return [{**shared, **part} for part in own]

    def counts(self, batch: dict[str, Any]) -> dict[tuple[int, str], torch.Tensor]:
        """Per-term item counts of a micro-batch (``Objective.counts``), keyed ``(objective index, term)``."""
        out = {}
        for chunk in batch.get("chunks") or [batch]:  # GradCache collates a micro-batch in chunks (grad_cache.py)
            for i, (objective, part) in enumerate(zip(self.objectives, self.parts(chunk))):
                for name, value in objective.counts(part).items():
                    out[(i, name)] = out.get((i, name), 0) + torch.as_tensor(value, dtype=torch.float64).reshape(())
        return out

    def forward(self, batch: dict[str, Any], scales: dict | None = None, call=None) -> dict[str, torch.Tensor]:
        """Weighted loss terms of one micro-batch.

        ``scales`` maps ``(objective index, term)`` to the term's normalisation factor and ``None``
        to the factor of terms without counts (see :class:`~tunevl.objectives.Objective`); without
        it the terms are the objectives' own micro-batch means. ``call(batch)``, when given, runs
        instead (GradCache's passes over chunks, inside the engine's forward).
        """
        if call is not None:
            return call(batch)
        terms: dict[str, torch.Tensor] = {}
        for i, (objective, part) in enumerate(zip(self.objectives, self.parts(batch))):
            for name, value in objective(self.view, part).items():
                key = name if name not in terms else f"{name}.{i}"
                if scales is not None:
                    value = value * scales.get((i, name), scales[None])
                terms[key] = value * objective.weight
        return terms


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer groups: no decay on biases, norms (1-d) and scalars such as the logit scale."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total_steps)  # as transformers computes it
    return get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


@contextlib.contextmanager
def partitioned_loading(ds_config: dict | None):
    """Within the context, under ZeRO-3, ``from_pretrained`` builds models partitioned across ranks
    (``deepspeed.zero.Init`` through transformers' DeepSpeed integration), so a 7B base is never whole on
    every rank. Outside ZeRO-3 it does nothing. The integration is switched off on exit, so a later
    ``from_pretrained`` in the same process loads normally."""
    if not is_zero3(ds_config):
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    keep = HfDeepSpeedConfig(ds_config)  # transformers holds a weak reference: keep it alive
    try:
        yield keep
    finally:
        unset_hf_deepspeed_config()


def total_grad_norm(params) -> torch.Tensor:
    """L2 norm of all gradients as one device tensor (no host sync); 0 when there are none."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


class StepSnapshot:
    """The trainable state before an optimizer update: the tensors the optimizer updates (the parameters, or
    DeepSpeed's fp32 master partitions), their optimizer state and the scheduler's state.

    Copied into buffers kept between steps (for adapters a few times their size, no communication), so
    that an update that broke the model can be undone and the last good state saved.

    Args:
        optimizer: The torch optimizer whose ``state`` is keyed by ``masters``.
        scheduler: The learning-rate scheduler.
        masters: Callable returning the tensors the optimizer updates (read at each step: DeepSpeed's ZeRO-3
            swaps them in and out of the inner optimizer's param groups around its step).
    """

    def __init__(self, optimizer, scheduler, masters):
        self.optimizer, self.scheduler, self.masters = optimizer, scheduler, masters
        self.params: list[torch.Tensor] = []
        self.buffers: list[torch.Tensor] | None = None
        self.state: list[dict | None] = []
        self.scheduler_state: dict | None = None

    def take(self) -> None:
        params = list(self.masters())
        if len(params) != len(self.params) or any(a is not b for a, b in zip(params, self.params)):
            self.params, self.buffers = params, None
        with torch.no_grad():
            if self.buffers is None:
                self.buffers = [p.detach().clone() for p in params]
            elif params:
                torch._foreach_copy_(self.buffers, [p.detach() for p in params])
            self.state = [{k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in self.optimizer.state[p].items()}
                          if p in self.optimizer.state else None for p in params]
        self.scheduler_state = self.scheduler.state_dict()

    def restore(self) -> bool:
        """Put the snapshot back; False when none was taken (nothing was updated yet)."""
        if self.buffers is None:
            return False
        with torch.no_grad():
            for p, buf, state in zip(self.params, self.buffers, self.state):
                p.copy_(buf)
                if state is None:
                    self.optimizer.state.pop(p, None)
                else:
                    self.optimizer.state[p] = state
        self.scheduler.load_state_dict(self.scheduler_state)
        return True


def _deepspeed_masters(optimizer) -> tuple:
    """(torch optimizer, callable -> fp32 master tensors) of a DeepSpeed optimizer wrapper."""
    inner = getattr(optimizer, "optimizer", optimizer)
    for name in ("fp32_partitioned_groups_flat",  # ZeRO-3
                 "single_partition_of_fp32_groups",  # ZeRO-1/2
                 "fp32_groups_flat_partition"):  # bf16 optimizer without ZeRO
        if hasattr(optimizer, name):
            return inner, lambda: getattr(optimizer, name)
    return inner, lambda: [p for group in inner.param_groups for p in group["params"]]


class TorchEngine:
    """Plain PyTorch, wrapped in DDP when several processes run."""

    def __init__(self, module: TrainModule, cfg: TrainConfig, dist_info: DistInfo, total_steps: int, bf16: bool):
        self.module = module.to(dist_info.device)
        self.cfg, self.dist, self.bf16 = cfg, dist_info, bf16
        self.wrapped = module
        if dist_info.world_size > 1:
            ids = [dist_info.device] if dist_info.device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        self.optimizer = make_optimizer(cfg, param_groups(module, cfg.weight_decay))
        self.scheduler = make_scheduler(cfg, self.optimizer, total_steps)
        self.trainable = [p for p in module.parameters() if p.requires_grad]
        self.snapshot = StepSnapshot(self.optimizer, self.scheduler, lambda: self.trainable)
        self.bounds = module.view.parameter_bounds() if hasattr(module.view, "parameter_bounds") else {}

    def accumulate(self, sync: bool):
        """Context of one micro-batch's forward and backward; DDP all-reduces gradients only when ``sync``."""
        if sync or self.wrapped is self.module:
            return contextlib.nullcontext()
        return self.wrapped.no_sync()

    def forward(self, batch, scales=None) -> dict[str, torch.Tensor]:
        with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.wrapped(batch, scales)

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        loss.backward()  # terms are already normalised over the step (TrainModule.forward)

    def step(self, loss_sum: torch.Tensor) -> tuple[float, str | None]:
        """Check, then apply the step's update: returns (global loss, None) or (loss, what was not finite).

        One host synchronisation: the loss and finiteness flags travel in one all-reduce. Nothing is
        written into the weights when the loss or any gradient is not finite.
        """
        norm = total_grad_norm(self.trainable).to(loss_sum.device)
        status = torch.stack([loss_sum.float().reshape(()), (~torch.isfinite(loss_sum)).float().reshape(()),
                              (~torch.isfinite(norm)).float()])
        loss, bad_loss, bad_grads = _reduce_status(status, self.dist.world_size)
        if bad_loss or bad_grads:
            self.optimizer.zero_grad(set_to_none=True)
            return loss, "loss" if bad_loss else "gradients"
        self.snapshot.take()
        if self.cfg.max_grad_norm > 0:
            coef = (self.cfg.max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_([p.grad for p in self.trainable if p.grad is not None], coef)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for param, low, high in self.bounds.values():
                param.clamp_(low, high)
        return loss, None

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Full (unsharded) tensors of every trainable parameter, on every rank."""
        return {n: p.detach().cpu().clone() for n, p in self.module.named_parameters() if p.requires_grad}


def _reduce_status(status: torch.Tensor, world: int) -> tuple[float, bool, bool]:
    """All-reduce ``[loss sum, flags...]`` and read it once: (mean loss over ranks, any flag set per flag...)."""
    if world > 1:
        torch.distributed.all_reduce(status)
    values = status.tolist()
    return values[0] / world, *(v > 0 for v in values[1:])


def _clamp_master(param: nn.Parameter, low: float | None, high: float | None) -> None:
    """Clamp DeepSpeed's fp32 master copy of ``param`` (the module copy is overwritten from it every step).

    Each rank clamps its own partition in place: no communication, and no full-parameter write (which
    fails for a ZeRO-3 parameter smaller than the world size, whose partitions are padding).
    """
    from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

    with torch.no_grad():
        if hasattr(param, "ds_id"):  # ZeRO-3
            local = safe_get_local_fp32_param(param)
            if local is not None and local.numel():
                safe_set_local_fp32_param(param, local.clamp(low, high))
        elif getattr(param, "_hp_mapping", None) is not None:  # ZeRO-1/2, bf16 optimizer: a view of this rank's fragment
            param._hp_mapping.get_hp_fragment().clamp_(low, high)
        else:  # no master copy (fp32 without ZeRO), or no fragment on this rank
            param.clamp_(low, high)


class DeepSpeedEngine:
    """``deepspeed.initialize`` over the same module; ZeRO stage and offload come from the JSON config."""

    def __init__(self, module: TrainModule, cfg: TrainConfig, dist_info: DistInfo, total_steps: int, bf16: bool,
                 ds_config: dict | None = None):
        import deepspeed

        self.cfg, self.dist, self.module = cfg, dist_info, module
        self.ds_config = ds_config if ds_config is not None else resolve_deepspeed_config(cfg.deepspeed, cfg, dist_info, bf16)
        self.trainable_names = [n for n, p in module.named_parameters() if p.requires_grad]
        self.zero3 = is_zero3(self.ds_config)
        if self.zero3:
            for p in module.view.external_parameters():
                deepspeed.zero.register_external_parameter(module, p)
            for owner, p in getattr(module.view, "zero3_external_parameters", list)():
                deepspeed.zero.register_external_parameter(owner, p)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module,
            model_parameters=param_groups(module, cfg.weight_decay),
            lr_scheduler=lambda opt: make_scheduler(cfg, opt, total_steps),
            config=self.ds_config,
        )
        self.partitioned = self._count_partitioned() if self.zero3 else None
        inner, masters = _deepspeed_masters(self.optimizer)
        self.snapshot = StepSnapshot(inner, self.scheduler, masters)
        self.bounds = module.view.parameter_bounds() if hasattr(module.view, "parameter_bounds") else {}

    def _count_partitioned(self) -> dict[str, int]:
        """How many parameters ZeRO-3 really partitioned (tiny models stay whole below the persistence threshold)."""
        params = list(self.engine.module.parameters())
        empty = sum(1 for p in params if p.numel() == 0)  # a partitioned parameter is (0,) outside its forward
        return {"partitioned": empty, "total": len(params)}

    def accumulate(self, sync: bool):
        return contextlib.nullcontext()  # DeepSpeed tracks accumulation boundaries itself

    def forward(self, batch, scales=None) -> dict[str, torch.Tensor]:
        return self.engine(batch, scales)

    def backward(self, loss: torch.Tensor, last: bool = True) -> None:
        # Terms are normalised over the step already: no 1/GAS scaling on top.
        self.engine.backward(loss, scale_wrt_gas=False)
        if not last:
            self.engine.step()  # a micro-step: DeepSpeed counts it and updates nothing

    def step(self, loss_sum: torch.Tensor) -> tuple[float, str | None]:
        """As :meth:`TorchEngine.step`. DeepSpeed checks the gradients itself (its overflow check, on with
        gradient clipping or bf16) and skips an update with non-finite gradients."""
        status = torch.stack([loss_sum.float().reshape(()), (~torch.isfinite(loss_sum)).float().reshape(())])
        loss, bad_loss = _reduce_status(status, self.dist.world_size)
        if bad_loss:
            return loss, "loss"
        self.snapshot.take()
        self.engine.step()
        if not self.engine.was_step_applied():
            return loss, "gradients"
        for param, low, high in self.bounds.values():
            _clamp_master(param, low, high)
        return loss, None

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Full fp32 trainable tensors from DeepSpeed's master copy (not the bf16 module copy).

        A collective under ZeRO: every rank must call it; every rank receives the tensors.
        """
        from deepspeed.utils import safe_get_full_fp32_param

        params = dict(self.engine.module.named_parameters())
        out = {}
        for name in self.trainable_names:
            master = safe_get_full_fp32_param(params[name])
            value = master if master is not None else params[name]
            out[name] = value.detach().float().cpu().clone()
        return out
