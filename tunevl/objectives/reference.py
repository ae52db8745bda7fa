"""The frozen reference of preference objectives: the trained model itself with its adapters switched off.

No second copy of the model is loaded. :func:`reference_model` disables LoRA (and whole-module
``modules_to_save`` copies) through peft's ``disable_adapter()`` and detaches the soft prompt, under
``no_grad``; everything is switched back on when the block ends, also when it raises. Soft-prompt
slots are real sequence positions, so :func:`drop_soft_prompt` removes them from a batch: the
reference scores the plain conversation, as the base model would. Every rank runs the same
reference forwards, so ZeRO-3 gathers stay collective.

Reference log-probs can also be computed once and cached next to the data
(``precompute_ref_log_probs: true`` on the objective, or ``tunevl data reference-logps RECIPE``
ahead of time). The cache file is named by a key (:func:`reference_cache_key`) over everything
the numbers depend on: the data content (text and image bytes), the base model (id, revision,
config and weight files), the tokenizer and chat template, the processor settings, truncation,
precision and what the reference is. A file whose key differs is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("tunevl")

#: Bumped when the cached numbers change meaning.
CACHE_FORMAT = 1
CACHE_FOLDER = Path(".tunevl_cache") / "reference_logps"


@contextlib.contextmanager
def reference_model(view):
    """Within the block ``view`` computes the reference: adapters and soft prompt off, no autograd.

    Both come back on when the block ends, whether it returns or raises.
    """
    model = view.model
    adapters = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    soft_prompt = view.soft_prompt
    with torch.no_grad(), adapters:
        view.soft_prompt = None
        try:
            yield view
        finally:
            view.soft_prompt = soft_prompt


#: Per-token keys of a collated LVLM batch (plus the view's ``extra_text_inputs``, recomputed).
_TOKEN_KEYS = ("input_ids", "attention_mask", "labels")


def drop_soft_prompt(view, batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` without its soft-prompt slots: the same conversations as the model sees them without a soft prompt."""
    mask = batch.get("soft_prompt_mask")
    out = {k: v for k, v in batch.items() if k != "soft_prompt_mask"}
    if mask is None or not bool(mask.any()):
        return out
    per_row = mask.sum(1)
    if bool((per_row != per_row[0]).any()):
        raise ValueError(f"every sequence must hold the same number of soft-prompt slots, got {per_row.tolist()}")
    keep = ~mask
    for key in _TOKEN_KEYS:
        out[key] = batch[key][keep].view(mask.shape[0], -1)
    out.update(view.extra_text_inputs(out["input_ids"], out.get("labels")))
    return out


# ---- the cache key ------------------------------------------------------------------------------
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Hasher:
    """Content digests of record values; image files are read once each."""

    def __init__(self):
        self.files: dict[str, str] = {}

    def image(self, value) -> str:
        from PIL import Image

        from tunevl.data.images import ImageRef

        if isinstance(value, Image.Image):
            return _sha(f"{value.mode}{value.size}".encode() + value.tobytes())
        if isinstance(value, ImageRef) and value.data is not None:
            return _sha(value.data)
        path = os.fspath(value)
        if path not in self.files:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            self.files[path] = digest.hexdigest()
        return self.files[path]

    def canonical(self, value):
        from PIL import Image

        from tunevl.data.images import ImageRef

        if isinstance(value, (Image.Image, ImageRef)):
            return {"image_sha256": self.image(value)}
        if isinstance(value, dict):
            return {str(k): self.canonical(v) for k, v in sorted(value.items()) if k != "index"}
        if isinstance(value, (list, tuple)):
            return [self.canonical(v) for v in value]
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        return repr(value)


def data_fingerprint(dataset) -> dict[str, Any]:
    """``{"records", "sha256"}`` over every record's fields in order, images by the bytes of their files."""
    hasher, digest = _Hasher(), hashlib.sha256()
    for i in range(len(dataset)):
        digest.update(json.dumps(hasher.canonical(dataset[i]), sort_keys=True).encode())
        digest.update(b"\n")
    return {"records": len(dataset), "sha256": digest.hexdigest()}


def model_fingerprint(model_config) -> dict[str, Any]:
    """Base model identity: id, revision, config hash and its weight files (name, size, mtime) or Hub commit."""
    from tunevl.adapters.bundle import config_sha256
    from tunevl.models.tiny_lvlm import resolve

    name, revision = model_config.name_or_path, model_config.revision
    path = Path(resolve(name))
    out: dict[str, Any] = {"name_or_path": name, "revision": revision, "config_sha256": config_sha256(name, revision)}
    if path.is_dir():
        out["weights"] = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()
                                if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json"))
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=revision)
        out["commit"] = Path(cached).parent.name if isinstance(cached, str) else None
    return out


def tokenizer_fingerprint(view) -> str:
    """The tokenizer (vocabulary, merges, normaliser, special tokens) and the chat template."""
    tok = view.tokenizer
    parts = [tok.backend_tokenizer.to_str() if hasattr(tok, "backend_tokenizer") else repr(sorted(tok.get_vocab().items())),
             repr(tok.all_special_tokens), repr(getattr(tok, "bos_token", None)), repr(getattr(tok, "eos_token", None)),
             repr(getattr(view.processor, "chat_template", None)), repr(getattr(tok, "chat_template", None))]
    return _sha("\n".join(parts).encode())


def processor_fingerprint(view) -> dict[str, Any]:
    """The image processor's settings (sizes, pixel budget, normalisation) and the processor's own."""
    ip = getattr(view.processor, "image_processor", None)
    settings = json.loads(json.dumps(ip.to_dict() if ip is not None else {}, sort_keys=True, default=repr))
    extra = {k: getattr(view.processor, k) for k in ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens")
             if isinstance(getattr(view.processor, k, None), (int, str))}
    return {"image_processor": settings, "processor": extra}


def reference_key_inputs(objective, view, dataset, model_config, *, autocast: bool, data: dict | None = None) -> dict[str, Any]:
    """Everything the reference log-probs of ``objective`` on ``dataset`` depend on (hashed by :func:`reference_cache_key`).

    Args:
        objective: A preference objective (its class and log-prob columns).
        view: The family view the numbers come from.
        dataset: The training records (their content is hashed unless ``data`` is given).
        model_config: The recipe's ``model:`` node.
        autocast: Whether the forwards run under bf16 autocast.
        data: A precomputed :func:`data_fingerprint`.
    """
    sp = view.soft_prompt
    return {
        "format": CACHE_FORMAT,
        "objective": {"class": type(objective).__name__, "columns": list(objective.reference_columns)},
        "data": data if data is not None else data_fingerprint(dataset),
        "model": model_fingerprint(model_config),
        "tokenizer": tokenizer_fingerprint(view),
        "processor": processor_fingerprint(view),
        "max_length": view.max_length,
        "precision": {"dtype": str(view.dtype), "autocast_bf16": bool(autocast)},
        # The reference is the base model: no adapter, and the soft prompt's slots removed (where
        # its slots split the prompt's text, tokenisation may differ at the split, hence its place).
        "reference": {"adapters": [], "soft_prompt_position": sp.position if sp is not None else None},
    }


def reference_cache_key(inputs: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of :func:`reference_key_inputs`."""
    return _sha(json.dumps(inputs, sort_keys=True, default=repr).encode())


def cache_paths(dataset, objective, key: str) -> list[Path]:
    """Where the cache file of ``key`` goes: next to the data file, else under ``$TUNEVL_CACHE``."""
    from tunevl.models.tiny_lvlm import cache_dir

    name = f"{type(objective).__name__.lower()}-{key[:24]}.safetensors"
    places = []
    file = getattr(dataset, "file", None)
    if file:
        folder = Path(file) if Path(file).is_dir() else Path(file).parent
        places.append(folder / CACHE_FOLDER / name)
    places.append(cache_dir() / "reference_logps" / name)
    return places


def read_cache(paths: list[Path], key: str, shape: tuple[int, int]) -> tuple[torch.Tensor, Path] | None:
    """The cached table under ``key``, or None; a file with another key or shape is never used."""
    from safetensors import safe_open

    for path in paths:
        if not path.is_file():
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                meta, table = f.metadata() or {}, f.get_tensor("logps")
        except Exception as err:  # noqa: BLE001 - a damaged file is a miss
            log.warning("reference log-probs: ignoring unreadable cache %s (%s)", path, err)
            continue
        if meta.get("key") != key or tuple(table.shape) != shape:
            log.warning("reference log-probs: ignoring %s: it was computed for other inputs", path)
            continue
        return table, path
    return None


def write_cache(paths: list[Path], key: str, inputs: dict, table: torch.Tensor) -> Path:
    """Write the table to the first writable place (atomically); returns the path."""
    from safetensors.torch import save_file

    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            save_file({"logps": table.float().cpu().contiguous()}, str(tmp),
                      metadata={"key": key, "inputs": json.dumps(inputs, sort_keys=True, default=repr)})
            tmp.replace(path)
            return path
        except OSError as err:
            log.warning("reference log-probs: cannot write %s (%s)", path, err)
    raise OSError(f"cannot write the reference log-probs cache to any of {[str(p) for p in paths]}")


# ---- computing them ----------------------------------------------------------------------------
@torch.no_grad()
def compute_reference_logps(objective, view, dataset, *, batch_size: int = 8, rank: int = 0, world_size: int = 1,
                            device=None, autocast: bool = False, workers: int = 0, progress: bool = False) -> torch.Tensor:
    """``[len(dataset), len(objective.reference_columns)]`` reference log-probs, rows in dataset order.

    Under several processes each rank scores every ``world_size``-th record, all ranks run the same
    number of batches (ZeRO-3 gathers weights collectively), and one all-reduce assembles the table.
    """
    from functools import partial

    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else view.device
    n, k = len(dataset), len(objective.reference_columns)
    table = torch.zeros(n, k, dtype=torch.float32, device=device)
    mine = list(range(rank, n, world_size))
    steps = math.ceil(math.ceil(n / world_size) / batch_size)
    batches = [mine[s * batch_size:(s + 1) * batch_size] for s in range(steps)]
    sampler = [b or [0] for b in batches]  # a rank out of records scores record 0 and drops it: same forwards everywhere
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         collate_fn=partial(objective.collate, view))
    was_training = view.model.training
    view.model.eval()
    try:
        for rows, part in tqdm(zip(batches, loader), total=steps, desc="reference log-probs", disable=not progress, mininterval=10):
            part = {key: (v.to(device) if torch.is_tensor(v) else _to(v, device)) for key, v in part.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                values = objective.reference_logps(view, part)
            if rows:
                table[rows] = values.float()
    finally:
        view.model.train(was_training)
    if world_size > 1:
        torch.distributed.all_reduce(table)
    return table.cpu()


def _to(value, device):
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value.to(device) if torch.is_tensor(value) else value


def prepare_reference_logps(objectives, view, dataset, model_config, dist, *, autocast: bool, batch_size: int = 8,
                            workers: int = 0, force: bool = False, only_flagged: bool = True) -> list[Path]:
    """Give every objective with ``precompute_ref_log_probs`` its reference table: from the cache, or computed and cached.

    Called by the training loop before the first step (every rank; the main rank decides hit or
    miss and its result is broadcast) and by ``tunevl data reference-logps``.

    Args:
        objectives: The recipe's objectives; those without ``reference_columns`` are skipped.
        view, dataset, model_config: What the numbers come from.
        dist: A :class:`tunevl.train.distributed.DistInfo`.
        autocast: Whether training forwards run under bf16 autocast.
        batch_size: Records per forward when computing.
        workers: Data-loader workers when computing.
        force: Recompute even on a hit.
        only_flagged: Skip objectives whose ``precompute_ref_log_probs`` is off.

    Returns:
        The cache files used or written.
    """
    from tunevl.train.distributed import broadcast_object

    todo = [o for o in objectives if hasattr(o, "reference_columns") and (o.precompute_ref_log_probs or not only_flagged)]
    if not todo:
        return []
    data = broadcast_object(data_fingerprint(dataset) if dist.is_main else None)
    used = []
    for objective in todo:
        inputs = reference_key_inputs(objective, view, dataset, model_config, autocast=autocast, data=data)
        key = reference_cache_key(inputs)
        paths = cache_paths(dataset, objective, key)
        shape = (len(dataset), len(objective.reference_columns))
        hit = read_cache(paths, key, shape) if dist.is_main and not force else None
        hit = broadcast_object(hit)
        if hit is not None:
            table, path = hit
            if dist.is_main:
                log.info("reference log-probs of %s: cache hit %s (%d records)", type(objective).__name__, path, shape[0])
        else:
            if dist.is_main:
                log.info("reference log-probs of %s: computing %d records (key %s)", type(objective).__name__, shape[0], key[:12])
            table = compute_reference_logps(objective, view, dataset, batch_size=batch_size, rank=dist.rank,
                                            world_size=dist.world_size, device=dist.device, autocast=autocast,
                                            workers=workers, progress=dist.is_main)
            path = write_cache(paths, key, inputs, table) if dist.is_main else None
            path = broadcast_object(path)
            if dist.is_main:
                log.info("reference log-probs of %s: written to %s", type(objective).__name__, path)
        objective.reference_table = table
        used.append(path)
    return used
