"""GradCache on 2 gloo ranks under DDP, ZeRO-2 and ZeRO-3 (every parameter partitioned), LoRA dropout on:
each engine's averaged gradients equal those of the whole global batch back-propagated once through every
chunk's encode from the same RNG state (see ``test_grad_cache.py`` for why that is the reference), on a
separate plain replica of the model whose gradients are averaged by hand. One spawn runs every case."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
WORLD = 2
PER_RANK, CHUNK = 7, 3  # chunks of [1, 3, 3] records on each rank


def _overrides(model_path, out, objective, deepspeed=None):
    items = {"model.name_or_path": model_path, "train.output_dir": str(out), "train.progress_bar": "false",
             "data.train.num_samples": 64, "adapters.lora.init_lora_weights": "false", "adapters.lora.lora_dropout": 0.5,
             "objectives.0._component_": objective}
    if objective == "negclip":  # hard-negative scenes and word swaps; dropout off (the reference is the plain step)
        items.update({"data.train": "{_component_: synthetic_binding, num_samples: 64, negatives: false}",
                      "adapters.lora.lora_dropout": 0.0})
    if deepspeed:
        items["train.deepspeed"] = deepspeed
    return [f"{k}={v}" for k, v in items.items()] + ["~data.eval"]


def _case(rank, dist_info, model_path, tmp, name, objective, deepspeed):
    from test_grad_cache import build, negative_images_on_some, same_mask_reference

    from tunevl.train import grad_cache
    from tunevl.train.engine import DeepSpeedEngine, TorchEngine
    from tunevl.train.loop import step_scales

    engine_cls = DeepSpeedEngine if deepspeed else TorchEngine
    module, engine, data, fields = build("quickstart", _overrides(model_path, tmp, objective, deepspeed),
                                         dist_info=dist_info, engine_cls=engine_cls)
    records = [data[i] for i in range(rank * PER_RANK, (rank + 1) * PER_RANK)]
    if objective == "negclip":  # a different number of hard-negative images on each rank
        records = negative_images_on_some(records, 2 + rank)
    batch = grad_cache.collate(module, records, fields, CHUNK)
    scale = step_scales(module, [batch], dist_info, 1)[0]
    torch.manual_seed(1000 + rank)
    loss = grad_cache.micro_step(engine, batch, scale, last=True).item()
    if deepspeed:
        from deepspeed.utils import safe_get_full_grad

        got = {n: safe_get_full_grad(p).detach().clone() for n, p in engine.engine.module.named_parameters() if p.requires_grad}
        parts = engine.partitioned
        assert name != "zero3" or parts["partitioned"] == parts["total"] > 0, parts
    else:
        got = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    # The reference: a plain replica (same seed, so the same weights), the same records and RNG state.
    ref_module, _, _, _ = build("quickstart", _overrides(model_path, tmp, objective), dist_info=dist_info, engine_cls=None)
    torch.manual_seed(1000 + rank)
    if objective == "negclip":  # no dropout: the ordinary forward and backward of the whole micro-batch
        ref = sum(ref_module(ref_module.collate(records, fields), scale).values())
        ref.backward()
        ref_loss = ref.item()
    else:
        ref_loss = same_mask_reference(ref_module, batch, scale)
    want = {}
    for n, p in ref_module.named_parameters():
        if p.requires_grad:
            g = p.grad.detach().clone()
            dist.all_reduce(g)
            want[n] = g / WORLD
    assert got.keys() == want.keys() and len(want) > 0, (name, sorted(set(got) ^ set(want))[:5])
    assert abs(loss - ref_loss) <= 1e-6 * abs(ref_loss), (name, loss, ref_loss)
    worst = 0.0
    for n in want:
        scale_n = want[n].abs().max().item()
        assert scale_n > 0, (name, n)
        err = (got[n].float() - want[n]).abs().max().item() / scale_n
        worst = max(worst, err)
        assert err < 2e-5, (name, n, err)
    return {"case": name, "worst_rel": worst, "params": len(want)}


def _worker(rank, port, model_path, tmp, cases):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "WORLD_SIZE": str(WORLD), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    torch.set_num_threads(1)
    from tunevl.train import distributed

    dist_info = distributed.setup(use_deepspeed=True)  # gloo through deepspeed.init_distributed: one group for all cases
    assert dist_info.world_size == WORLD
    results = []
    try:
        for name, objective, deepspeed in cases:
            results.append(_case(rank, dist_info, model_path, f"{tmp}/{name}", name, objective, deepspeed))
        if rank == 0:
            with open(f"{tmp}/results.json", "w") as f:
                json.dump(results, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_grad_cache_two_ranks_ddp_zero2_zero3(tiny_clip_path, tmp_path):
    import tunevl

    presets = os.path.join(os.path.dirname(tunevl.__file__), "recipes", "deepspeed")
    zero3 = json.load(open(os.path.join(presets, "zero3.json")))
    zero3["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition every tiny weight
    (tmp_path / "zero3_test.json").write_text(json.dumps(zero3))
    cases = [("ddp", "contrastive", None), ("zero2", "sigmoid", os.path.join(presets, "zero2.json")),
             ("zero3", "contrastive", str(tmp_path / "zero3_test.json")),
             ("zero3_negclip", "negclip", str(tmp_path / "zero3_test.json"))]  # ragged rows, unequal across ranks
    mp.spawn(_worker, args=(_free_port(), tiny_clip_path, str(tmp_path), cases), nprocs=WORLD, join=True)
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["case"] for r in results] == ["ddp", "zero2", "zero3", "zero3_negclip"], results
