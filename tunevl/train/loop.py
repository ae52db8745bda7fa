"""tunevl's training loop: one readable function, on plain PyTorch/DDP or DeepSpeed.

Why not the transformers Trainer: see DESIGN.md ("Decided: the training loop is tunevl's own").
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from tunevl.adapters.bundle import git_sha, save_bundle, versions
from tunevl.adapters.embedding_prompts import apply_embedding_prompts
from tunevl.adapters.lora import apply_lora, is_adapter_key
from tunevl.adapters.prompts import apply_prompt_adapters
from tunevl.adapters.soft_prompt import apply_soft_prompt
from tunevl.data.fewshot import describe_training_data
from tunevl.data.preflight import build_dataset, check_lengths
from tunevl.config.errors import RecipeError
from tunevl.data.sampler import MicroBatchStream
from tunevl.errors import TrainingError, context
from tunevl.eval import evaluate
from tunevl.eval.benchmarks import load_benchmarks, save_plots
from tunevl.inference import evaluation_target
from tunevl.models import load_view, resolve_dtype
from tunevl.objectives.reference import prepare_reference_logps
from tunevl.train import checkpoint as ckpt
from tunevl.train import distributed, grad_cache, rundir
from tunevl.train.deepspeed_config import resolve_deepspeed_config
from tunevl.train.engine import DeepSpeedEngine, TorchEngine, TrainModule, partitioned_loading
from tunevl.train.report import plot_run

log = logging.getLogger("tunevl")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_view(recipe, torch_dtype=None, seed: int | None = None):
    """Load the model named by the recipe and inject its adapters (bad values: one-line recipe errors), initialised
    from ``seed`` when given, whatever the loading drew from the RNG (ZeRO-3's partitioned loading draws differently)."""
    config = recipe.model_config()
    with recipe.building(("model",)), context(f"model.name_or_path {config.name_or_path!r}"):
        view = load_view(config, torch_dtype=torch_dtype)
    if seed is not None:
        set_seed(seed)
    lora = recipe.lora()
    if lora is not None:
        with recipe.building(("adapters", "lora")):
            apply_lora(view, lora)
    soft_prompt = recipe.soft_prompt()
    if soft_prompt is not None:
        with recipe.building(("adapters", "soft_prompt")):
            apply_soft_prompt(view, soft_prompt)
    if recipe.embedding_prompts() is not None:  # the LVLM becomes an image-text embedder (VladVA)
        with recipe.building(("adapters", "embedding_prompts")):
            apply_embedding_prompts(view, recipe.embedding_prompts())
    with recipe.building(("adapters",)):
        apply_prompt_adapters(view, recipe.tree.get("adapters"))
    trainable = [p for p in view.model.parameters() if p.requires_grad]
    if not trainable:
        raise recipe.error(("adapters",), "nothing to train: the recipe has no adapters and no extra trainables")
    for p in trainable:  # trainables stay fp32 (optimizer master copy) over a bf16 frozen base
        p.data = p.data.float()
    return view


def _enable_checkpointing(model) -> None:
    kwargs = {"use_reentrant": False}  # reentrant checkpointing drops gradients of inputs that need none (frozen bases)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _collate(module, fields, chunk_size, records):
    if chunk_size:  # GradCache: the micro-batch collated chunk by chunk
        return grad_cache.collate(module, records, fields, chunk_size)
    return module.collate(records, fields)


def _batches(dataset, stream, start, stop, module, fields, workers, chunk_size=None):
    sampler = [idx for _, idx in stream.iterate(start, stop)]
    return iter(torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=partial(_collate, module, fields, chunk_size), num_workers=workers
    ))


def _to_device(value, device: torch.device):
    """Tensors of a (nested) batch moved to ``device``."""
    if torch.is_tensor(value):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def step_scales(module: TrainModule, micro_batches: list[dict], dist, accum: int) -> list[dict]:
    """Each micro-batch's term factors ``local count * world size / global count`` (DESIGN.md: losses are
    normalised over the optimizer step), and ``1 / accum`` for terms without counts.

    The counts are read from the collated batches before any forward; the step's global counts
    need one all-reduce, only when some objective counts its items.
    """
    per_micro = [module.counts(b) for b in micro_batches]
    keys = sorted(per_micro[0])
    if any(sorted(c) != keys for c in per_micro):
        raise RuntimeError(f"Objective.counts must return the same terms for every batch, got {[sorted(c) for c in per_micro]}")
    if not keys:
        return [{None: 1.0 / accum} for _ in micro_batches]
    local = torch.stack([torch.stack([c[k] for k in keys]) for c in per_micro]).to(dist.device)  # [accum, terms]
    total = local.sum(0)
    if dist.world_size > 1:
        torch.distributed.all_reduce(total)
    factors = (local * dist.world_size / total.clamp(min=1)).float()
    return [{None: 1.0 / accum, **{k: factors[m, j] for j, k in enumerate(keys)}} for m in range(len(micro_batches))]


def _split_state(module: TrainModule, state: dict[str, torch.Tensor]):
    """Trainable tensors (TrainModule names) -> (peft state dict or None, extras)."""
    extras = {module.extra_names[n]: v for n, v in state.items() if n in module.extra_names}
    lora = {n[len("model."):]: v for n, v in state.items() if n.startswith("model.") and is_adapter_key(n)}
    return (lora or None), extras


class _Loggers:
    def __init__(self, cfg, out: Path, recipe_tree: dict, main: bool):
        self.tb = self.wandb = None
        if not main:
            return
        if "tensorboard" in cfg.loggers:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "logs"))
        if "wandb" in cfg.loggers:
            import wandb

            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "tunevl"), name=cfg.run_name or out.name, config=recipe_tree)

    def log(self, step: int, values: dict) -> None:
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()


def train(recipe) -> dict:
    """Train a validated :class:`tunevl.config.Recipe`; returns the metrics written to ``metrics.json``."""
    return run(recipe)[0]


def run(recipe) -> tuple[dict, TrainModule]:
    """Like :func:`train`, also returning the trained module (for tests and notebooks)."""
    cfg = recipe.train_config()
    out = rundir.prepare_output_dir(cfg)  # before any rank can write: another run's files are never mixed in
    dist = distributed.setup(use_deepspeed=cfg.deepspeed is not None)
    bf16 = cfg.bf16 if cfg.bf16 is not None else (dist.device.type == "cuda" and torch.cuda.is_bf16_supported())
    # Read and checked against the recipe before anything is loaded: a conflict is a one-line error.
    try:
        ds_config = resolve_deepspeed_config(cfg.deepspeed, cfg, dist, bf16) if cfg.deepspeed else None
    except (RecipeError, FileNotFoundError) as err:
        raise recipe.error(("train", "deepspeed"), getattr(err, "message", str(err))) from None
    with partitioned_loading(ds_config):  # ZeRO-3: from_pretrained builds the base partitioned (zero.Init)
        return _run(recipe, cfg, dist, bf16, ds_config, out)


def _run(recipe, cfg, dist, bf16: bool, ds_config: dict | None, out: Path) -> tuple[dict, TrainModule]:
    eval_cfg = recipe.eval_config()
    set_seed(cfg.seed)

    view = build_view(recipe, torch_dtype=resolve_dtype(recipe.model_config().dtype, bf16), seed=cfg.seed)
    loaded_partitioned = sum(hasattr(p, "ds_id") for p in view.model.parameters())  # zero.Init at load time
    if ds_config is not None and dist.is_main and loaded_partitioned:
        log.info("ZeRO-3: the base model was loaded partitioned (%d parameters never whole on one rank)", loaded_partitioned)
    if cfg.gradient_checkpointing:
        _enable_checkpointing(view.base_model)
    objectives = recipe.build_objectives()
    train_ds = build_dataset(recipe, "train", objectives, view=view)
    eval_ds = build_dataset(recipe, "eval", view=view)
    for objective in objectives:  # before the trainables are collected: it may add some (class-specific prompts)
        objective.setup(view, train_ds)
    view.train_data_info = describe_training_data(train_ds)  # recorded in the bundle (few-shot selection)
    module = TrainModule(view, objectives)
    if getattr(view, "max_length", None):  # generative views: truncation must not cut into image tokens
        check_lengths(view, train_ds, objectives)
    do_eval = eval_ds is not None or bool(load_benchmarks(eval_cfg.benchmarks))  # benchmark files read now

    def _evaluate() -> dict:  # every rank runs it: ZeRO-3 needs all ranks in each forward
        return evaluate(evaluation_target(view, cfg.per_device_eval_batch_size), eval_ds, eval_cfg,
                        batch_size=cfg.per_device_eval_batch_size)

    stream = MicroBatchStream(
        len(train_ds), cfg.per_device_train_batch_size, dist.world_size, dist.rank, cfg.seed, cfg.gradient_accumulation_steps
    )
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * stream.steps_per_epoch)
    module.run_signature = rundir.run_signature(module, total_steps, len(train_ds))  # recorded in checkpoints
    rundir.check_resume(cfg, recipe, module.run_signature, dist.world_size)  # before a checkpoint is loaded
    if ds_config is not None:
        engine = DeepSpeedEngine(module, cfg, dist, total_steps, bf16, ds_config)
    else:
        engine = TorchEngine(module, cfg, dist, total_steps, bf16)
    module.train()
    prepare_reference_logps(objectives, view, train_ds, recipe.model_config(), dist, autocast=bf16 and not cfg.deepspeed,
                            batch_size=cfg.per_device_eval_batch_size, workers=cfg.dataloader_num_workers)
    for objective in objectives:  # on the device, every rank: e.g. a frozen tower's feature cache
        objective.prepare(view, train_ds, dist=dist, cfg=cfg, bf16=bf16)
    fields = set().union(*(o.batch_fields() for o in objectives))
    if getattr(engine, "partitioned", None) and dist.is_main:
        n = engine.partitioned
        log.info("ZeRO-3 partitioned %d of %d parameters", n["partitioned"], n["total"])
        if n["partitioned"] == 0:
            log.warning("ZeRO-3 partitioned no parameter: they are all below stage3_param_persistence_threshold")

    step, history, metrics, rng, window = 0, [], {}, None, []
    if cfg.resume_from_checkpoint:
        resume_dir = ckpt.resolve_resume(cfg.resume_from_checkpoint, out)
        state = _load_checkpoint(resume_dir, engine, dist)
        step, history, metrics, rng = state["step"], state["history"], state.get("metrics", {}), state["rng"]
        window = state.get("window", [])  # losses since the last logged step: the history continues as if uninterrupted
        if dist.is_main:
            log.info("resumed from %s at step %d", resume_dir, step)
    if do_eval and cfg.eval_at_start and "base" not in metrics:
        metrics["base"] = _evaluate()

    loggers = _Loggers(cfg, out, recipe.tree, dist.is_main)
    accum = cfg.gradient_accumulation_steps
    batches = _batches(train_ds, stream, step * accum, total_steps * accum, module, fields, cfg.dataloader_num_workers,
                       cfg.grad_cache_chunk_size)
    if rng is not None:  # after the data iterator exists: its creation draws from the RNG in both runs
        ckpt.restore_rng(rng)
    bar = _progress(total_steps, step, enabled=dist.is_main and cfg.progress_bar)
    started = time.time()
    while step < total_steps:
        micro_batches = [next(batches) for _ in range(accum)]  # the whole step: its global counts come first
        scales = step_scales(module, micro_batches, dist, accum)
        step_loss = torch.zeros((), device=dist.device)
        for micro, (batch, scale) in enumerate(zip(micro_batches, scales)):
            last = micro == accum - 1
            if cfg.grad_cache_chunk_size:  # train/grad_cache.py (moves its chunks to the device one at a time)
                step_loss += grad_cache.micro_step(engine, batch, scale, last)
                continue
            with engine.accumulate(sync=last):
                terms = engine.forward(_to_device(batch, dist.device), scale)
                loss = sum(terms.values())
                engine.backward(loss, last=last)
            step_loss += loss.detach()
        mean_loss, broken = engine.step(step_loss)
        if broken:
            _stop_non_finite(broken, step, micro_batches, recipe, module, engine, dist, history, metrics, window, cfg, out)
        step += 1
        window.append(mean_loss)
        if step % cfg.logging_steps == 0 or step == total_steps:
            history.append({"step": step, "loss": sum(window) / len(window), "lr": engine.lr()})
            loggers.log(step, {"train/loss": history[-1]["loss"], "train/lr": engine.lr()})
            window = []
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{engine.lr():.2e}")
        if do_eval and cfg.eval_steps and step % cfg.eval_steps == 0 and step < total_steps:
            metrics.setdefault("during", {})[str(step)] = during = _evaluate()
            loggers.log(step, {f"eval/{k}": v for k, v in during.items() if not k.startswith("num_") and isinstance(v, (int, float))})
        if cfg.save_steps and step % cfg.save_steps == 0 and step < total_steps:
            _save_checkpoint(out / f"checkpoint-{step}", recipe, module, engine, dist, step, history, metrics, cfg, window)
    bar.close()
    elapsed = time.time() - started

    trainable = engine.trainable_state()
    if dist.is_main:  # the bundle first (whole, or the previous one stays): an evaluation error loses nothing
        lora, extras = _split_state(module, trainable)
        rundir.publish(out, partial(save_bundle, view=view, lora_state=lora, extras=extras, recipe_yaml=recipe.to_yaml(),
                                    model_config=recipe.model_config(), location=out), replace_bundle=True)
    if do_eval:
        metrics["trained"] = _evaluate()
    metrics["train"] = {"steps": step, "seconds_this_run": round(elapsed, 2), "final_loss": history[-1]["loss"] if history else None}
    metrics["run"] = {
        "versions": versions(), "git_sha": git_sha(), "world_size": dist.world_size, "deepspeed": cfg.deepspeed,
        "bf16": bf16, "zero3_partitioned": getattr(engine, "partitioned", None), "zero3_loaded_partitioned": loaded_partitioned,
    }
    if dist.is_main:
        rundir.publish(out, partial(_write_results, out=out, recipe=recipe, metrics=metrics, history=history))
        if cfg.save_steps:
            ckpt.prune(out, cfg.save_total_limit)
    loggers.close()
    distributed.barrier()
    return metrics, module


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    interval = 0.5 if sys.stderr.isatty() else 30.0  # logs and CI: a line every 30 s, not every step
    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True,
                mininterval=interval)


def _stop_non_finite(what, step, micro_batches, recipe, module, engine, dist, history, metrics, window, cfg, out):
    """Save the last good state, then raise: the weights whose forward was last finite.

    Non-finite gradients were never applied, so the current weights are good. A non-finite loss
    means the current weights came out of a broken update: that update is undone first.
    """
    good = step - 1 if what == "loss" and engine.snapshot.restore() else step
    path = out / f"checkpoint-{good}"
    kept = [h for h in history if h["step"] <= good]
    _save_checkpoint(path, recipe, module, engine, dist, good, kept, metrics, cfg, window if good == step else [])
    indices = sorted(i for b in micro_batches for i in b["index"].tolist())
    raise TrainingError(
        f"non-finite {what} at step {step + 1}: the update was not applied; record indices on rank {dist.rank}: "
        f"{indices}; the last good state (after step {good}) is saved in {path}"
    )


def _save_checkpoint(path: Path, recipe, module, engine, dist, step, history, metrics, cfg, window=()) -> None:
    """Write ``path`` atomically: into ``path.tmp`` on every rank, renamed by rank 0 when all are done."""
    tmp = path.with_name(path.name + ".tmp")
    state_dir = tmp / ckpt.STATE_DIR
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        state_dir.mkdir(parents=True)
    distributed.barrier()
    trainable = engine.trainable_state()
    if isinstance(engine, DeepSpeedEngine):
        # Only what trains: the frozen base is the checkpoint named in the recipe, not 14 GB per save.
        engine.engine.save_checkpoint(str(state_dir / "deepspeed"), tag="state", exclude_frozen_parameters=True)
    elif dist.is_main:
        ckpt.save_torch_state(state_dir, engine, trainable)
    torch.save(ckpt.capture_rng(), state_dir / f"rng_rank{dist.rank}.pt")
    if dist.is_main:
        lora, extras = _split_state(module, trainable)
        save_bundle(tmp, module.view, lora_state=lora, extras=extras, recipe_yaml=recipe.to_yaml(), model_config=recipe.model_config())
        ckpt.write_trainer_state(state_dir, {"step": step, "history": history, "window": list(window), "metrics": metrics,
                                             "world_size": dist.world_size, "run": getattr(module, "run_signature", None)})
    distributed.barrier()
    if dist.is_main:
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        ckpt.prune(cfg.output_dir, cfg.save_total_limit)
    distributed.barrier()


def _load_checkpoint(path: Path, engine, dist) -> dict:
    state_dir = path / ckpt.STATE_DIR
    state = ckpt.read_trainer_state(path)
    if state.get("world_size", 1) != dist.world_size:
        raise TrainingError(f"{path} was written by {state['world_size']} processes; resume with the same number (now {dist.world_size})")
    if isinstance(engine, DeepSpeedEngine):
        # The checkpoint holds trainables only (the frozen base comes from the recipe's model).
        engine.engine.load_checkpoint(str(state_dir / "deepspeed"), tag="state", load_module_strict=False)
    else:
        ckpt.load_torch_state(state_dir, engine)
    state["rng"] = ckpt.load_torch_file(state_dir / f"rng_rank{dist.rank}.pt")
    return state


def _write_results(folder: Path, out: Path, recipe, metrics: dict, history: list[dict]) -> None:
    """metrics.json, the model card with the results, and the loss curve, written into ``folder``."""
    from tunevl.adapters.card import make_card

    (folder / "metrics.json").write_text(json.dumps({**metrics, "history": history}, indent=2) + "\n")
    (folder / "README.md").write_text(make_card(out, recipe.to_yaml(), metrics))
    plot_run(history, metrics, folder / "loss_curve.png")
    save_plots(metrics.get("trained") or {}, folder)  # e.g. countbench_confusion.png
