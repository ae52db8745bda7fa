"""The optimiser a recipe names (``train.optim``), for the plain PyTorch engine and for DeepSpeed's JSON config.

``adamw_torch`` is ``torch.optim.AdamW`` (the default); ``sgd`` is ``torch.optim.SGD`` with
``train.sgd_momentum``, the optimiser of CoOp and CoCoOp (lr 0.002, momentum 0.9, weight decay 5e-4).
The names are those of ``transformers.TrainingArguments.optim``.
"""

from __future__ import annotations

OPTIMIZERS = ("adamw_torch", "sgd")


def make_optimizer(cfg, param_groups: list[dict]):
    """``cfg.optim`` over ``param_groups`` (which carry their own weight decay): a ``torch.optim.Optimizer``."""
    import torch  # this module is also read by `tunevl validate`, which imports no torch

    if cfg.optim == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.learning_rate, momentum=cfg.sgd_momentum)
    if cfg.optim == "adamw_torch":
        return torch.optim.AdamW(param_groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
    raise ValueError(f"train.optim must be one of {', '.join(OPTIMIZERS)}, got {cfg.optim!r}")


def deepspeed_optimizer_type(cfg) -> str:
    """DeepSpeed's ``optimizer.type`` for ``cfg.optim`` (DeepSpeed builds other names from ``torch.optim``)."""
    return "SGD" if cfg.optim == "sgd" else "AdamW"


def deepspeed_optimizer_params(cfg, optimizer_type: str) -> dict:
    """Values for the ``auto`` parameters of a DeepSpeed optimizer of ``optimizer_type``."""
    if optimizer_type.lower() == "sgd":
        return {"lr": cfg.learning_rate, "momentum": cfg.sgd_momentum, "weight_decay": cfg.weight_decay}
    return {"lr": cfg.learning_rate, "betas": [cfg.adam_beta1, cfg.adam_beta2], "eps": cfg.adam_epsilon,
            "weight_decay": cfg.weight_decay}
