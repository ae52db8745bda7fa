"""What the loop drives: the trainable module, and two engines (plain PyTorch/DDP, DeepSpeed) with one API."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunevl.train.config import TrainConfig
from tunevl.train.distributed import DistInfo

_PRESETS = Path(__file__).resolve().parent.parent / "recipes" / "deepspeed"


class TrainModule(nn.Module):
    """The model (with adapters injected) plus the objectives; ``forward`` returns named loss terms.

    Every objective runs every step, so every rank builds the same graph (ZeRO-3 needs this).
    """

    def __init__(self, view, objectives: list[nn.Module]):
        super().__init__()
        self.view = view
        self.model = view.model
        self.objectives = nn.ModuleList(objectives)
        ids = {id(p): n for n, p in self.named_parameters()}
        self.extra_names = {ids[id(p)]: name for name, p in view.extra_trainables().items()}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for i, objective in enumerate(self.objectives):
            for name, value in objective(self.view, batch).items():
                key = name if name not in terms else f"{name}.{i}"
                terms[key] = value * objective.weight
        return terms


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on biases, norms (1-d) and scalars such as the logit scale."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    warmup = cfg.warmup_steps or int(round(cfg.warmup_ratio * total_steps))
    return get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def resolve_deepspeed_config(value: str, cfg: TrainConfig, dist_info: DistInfo, bf16: bool) -> dict:
    """Read a DeepSpeed JSON (path or preset name) and fill its ``auto`` values from the recipe."""
    path = Path(value)
    if not path.is_file():
        preset = _PRESETS / f"{value}.json"
        if not preset.is_file():
            names = sorted(p.stem for p in _PRESETS.glob("*.json"))
            raise FileNotFoundError(f"train.deepspeed: {value!r} is neither a file nor a preset ({', '.join(names)})")
        path = preset
    ds = json.loads(path.read_text())
    fill = {
        "train_micro_batch_size_per_gpu": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * dist_info.world_size,
        "gradient_clipping": cfg.max_grad_norm,
    }
    for key, val in fill.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = val
    ds.setdefault("bf16", {})
    if ds["bf16"].get("enabled", "auto") == "auto":
        ds["bf16"]["enabled"] = bf16
    opt = ds.setdefault("optimizer", {"type": "AdamW", "params": {}})
    params = opt.setdefault("params", {})
    for key, val in {
        "lr": cfg.learning_rate,
        "betas": [cfg.adam_beta1, cfg.adam_beta2],
        "eps": cfg.adam_epsilon,
        "weight_decay": cfg.weight_decay,
    }.items():
        if params.get(key, "auto") == "auto":
            params[key] = val
    if dist_info.device.type == "cpu":
        params.setdefault("torch_adam", True)  # DeepSpeed's fused Adam needs a long JIT build on CPU
    ds.setdefault("steps_per_print", 10**9)
    return ds


class TorchEngine:
    """Plain PyTorch, wrapped in DDP when several processes run."""

    def __init__(self, module: TrainModule, cfg: TrainConfig, dist_info: DistInfo, total_steps: int, bf16: bool):
        self.module = module.to(dist_info.device)
        self.cfg, self.dist, self.bf16 = cfg, dist_info, bf16
        self.wrapped = module
        if dist_info.world_size > 1:
            ids = [dist_info.device] if dist_info.device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        self.optimizer = torch.optim.AdamW(
            param_groups(module, cfg.weight_decay),
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon,
        )
        self.scheduler = make_scheduler(cfg, self.optimizer, total_steps)

    def accumulate(self, sync: bool):
        """Context of one micro-batch's forward and backward; DDP all-reduces gradients only when ``sync``."""
        if sync or self.wrapped is self.module:
            return contextlib.nullcontext()
        return self.wrapped.no_sync()

    def forward(self, batch) -> dict[str, torch.Tensor]:
        with torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.wrapped(batch)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.cfg.gradient_accumulation_steps).backward()

    def step(self) -> None:
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.module.parameters() if p.requires_grad], self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Full (unsharded) tensors of every trainable parameter, on every rank."""
        return {n: p.detach().cpu().clone() for n, p in self.module.named_parameters() if p.requires_grad}


class DeepSpeedEngine:
    """``deepspeed.initialize`` over the same module; ZeRO stage and offload come from the JSON config."""

    def __init__(self, module: TrainModule, cfg: TrainConfig, dist_info: DistInfo, total_steps: int, bf16: bool):
        import deepspeed

        self.cfg, self.dist, self.module = cfg, dist_info, module
        self.ds_config = resolve_deepspeed_config(cfg.deepspeed, cfg, dist_info, bf16)
        self.trainable_names = [n for n, p in module.named_parameters() if p.requires_grad]
        self.zero3 = self.ds_config.get("zero_optimization", {}).get("stage", 0) == 3
        if self.zero3:
            for p in module.view.external_parameters():
                deepspeed.zero.register_external_parameter(module, p)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module,
            model_parameters=param_groups(module, cfg.weight_decay),
            lr_scheduler=lambda opt: make_scheduler(cfg, opt, total_steps),
            config=self.ds_config,
        )
        self.partitioned = self._count_partitioned() if self.zero3 else None

    def _count_partitioned(self) -> dict[str, int]:
        """How many parameters ZeRO-3 really partitioned (tiny models stay whole below the persistence threshold)."""
        params = list(self.engine.module.parameters())
        empty = sum(1 for p in params if p.numel() == 0)  # a partitioned parameter is (0,) outside its forward
        return {"partitioned": empty, "total": len(params)}

    def accumulate(self, sync: bool):
        return contextlib.nullcontext()  # DeepSpeed tracks accumulation boundaries itself

    def forward(self, batch) -> dict[str, torch.Tensor]:
        return self.engine(batch)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()  # DeepSpeed steps the optimizer only at accumulation boundaries

    def step(self) -> None:
        pass

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Consolidated trainable tensors; every rank must call this (ZeRO-3 gathers to rank 0 only)."""
        if self.zero3:
            full = self.engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=True)
            if full is None:  # only rank 0 receives the gathered tensors
                return {}
            return {n: full[n].detach().float().cpu().clone() for n in self.trainable_names}
        params = dict(self.engine.module.named_parameters())
        return {n: params[n].detach().float().cpu().clone() for n in self.trainable_names}
