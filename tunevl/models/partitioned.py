"""Reading parameters that DeepSpeed ZeRO-3 has partitioned (an empty ``(0,)`` tensor outside their module's forward)."""

from __future__ import annotations

import contextlib

import torch


def is_partitioned(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_id")


@contextlib.contextmanager
def gathered(*params: torch.Tensor):
    """Within the context, ZeRO-3-partitioned ``params`` hold their full values (read-only; a collective: every
    rank must enter it). Does nothing for ordinary parameters, so code can use it unconditionally."""
    parts = [p for p in params if is_partitioned(p)]
    if not parts:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(parts, modifier_rank=None):
        yield
