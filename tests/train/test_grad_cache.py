"""GradCache (train.grad_cache_chunk_size): the gradients of one big batch, chunk by chunk.

Single process here; 2 processes under DDP, ZeRO-2 and ZeRO-3 in ``test_grad_cache_distributed.py``.
With dropout off, GradCache is compared with the ordinary forward/backward of the whole micro-batch.
With LoRA dropout on, no two ways of drawing the masks agree, so the reference is the whole
micro-batch's loss back-propagated once through every chunk's encode kept with its graph, from the same
RNG state: what GradCache computes when its re-encode replays each chunk's masks (it fails otherwise).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tunevl
from tunevl.data.preflight import build_dataset
from tunevl.errors import TrainingError
from tunevl.losses import info_nce
from tunevl.objectives import Objective
from tunevl.train import grad_cache
from tunevl.train.distributed import DistInfo
from tunevl.train.engine import TorchEngine, TrainModule
from tunevl.train.loop import build_view, run, step_scales


def build(recipe_name, overrides, objectives=None, dist_info=None, engine_cls=TorchEngine, seed=0):
    """(module, engine, dataset, fields) for a recipe: the loop's own pieces, without the loop (no engine
    when ``engine_cls`` is None)."""
    recipe = tunevl.load_recipe(recipe_name, overrides)
    recipe.validate()
    torch.manual_seed(seed)
    view = build_view(recipe)
    objectives = objectives if objectives is not None else recipe.build_objectives()
    module = TrainModule(view, objectives)
    dataset = build_dataset(recipe, "train", objectives)
    dist_info = dist_info or DistInfo()
    engine = engine_cls(module, recipe.train_config(), dist_info, 10, False) if engine_cls else None
    module.train()
    fields = set().union(*(o.requires for o in objectives))
    return module, engine, dataset, fields


def clip_overrides(model_path, tmp_path, **extra):
    items = {"model.name_or_path": model_path, "train.output_dir": str(tmp_path / "run"), "train.progress_bar": "false",
             "data.train.num_samples": 64, "adapters.lora.init_lora_weights": "false"}  # random lora_B: every grad nonzero
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()] + ["~data.eval"]


def grads(module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.requires_grad and p.grad is not None}
    module.zero_grad(set_to_none=True)
    return out


def assert_same_grads(got, want, rtol=1e-5):
    """Equal within ``rtol`` of each tensor's largest entry (fp32 sums in another order)."""
    assert got.keys() == want.keys() and len(want) > 0
    for name in want:
        scale = want[name].abs().max().item()
        assert scale > 0, name  # nothing vacuous
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=rtol * scale, msg=lambda m: f"{name}: {m}")


def plain_step(module, engine, micro_records, fields):
    """The loop's ordinary step (forward and backward per micro-batch) without the update."""
    batches = [module.collate(r, fields) for r in micro_records]
    scales = step_scales(module, batches, engine.dist, len(batches))
    total = 0.0
    for batch, scale in zip(batches, scales):
        loss = sum(engine.forward(batch, scale).values())
        engine.backward(loss)
        total += loss.item()
    return total


def grad_cache_step(module, engine, micro_records, fields, chunk):
    batches = [grad_cache.collate(module, r, fields, chunk) for r in micro_records]
    scales = step_scales(module, batches, engine.dist, len(batches))
    total = 0.0
    for m, (batch, scale) in enumerate(zip(batches, scales)):
        total += grad_cache.micro_step(engine, batch, scale, last=m == len(batches) - 1).item()
    return total


def test_chunk_sizes():
    assert grad_cache.chunk_sizes(8, 3) == [2, 3, 3]
    assert grad_cache.chunk_sizes(9, 3) == [1, 2, 3, 3]  # dividing: one chunk split so that two sizes differ
    assert grad_cache.chunk_sizes(4, 2) == [1, 1, 2]
    assert grad_cache.chunk_sizes(3, 3) == [3] and grad_cache.chunk_sizes(2, 5) == [2]
    for n in range(1, 40):
        for c in range(2, 12):
            sizes = grad_cache.chunk_sizes(n, c)
            assert sum(sizes) == n and max(sizes) <= c and min(sizes) >= 1
            assert len(sizes) == 1 or (len(set(sizes)) > 1 and sizes[-1] == c)  # the kept last chunk is a full one
    with pytest.raises(ValueError, match=">= 2"):
        grad_cache.chunk_sizes(8, 1)


def test_layout_merges_blocks_shared_and_ragged_values():
    sizes = [3, 2]
    d = 4
    per_record = [torch.randn(n, d) for n in sizes]
    images = [torch.randn(n, d) for n in sizes]
    hard = [torch.randn(n, d) for n in sizes]
    blocks = [torch.cat([a, b]) for a, b in zip(images, hard)]  # NegCLIP-style [2n, d]: images, then hard images
    classes = [torch.randn(3, d), torch.randn(3, d)]  # [C, d] with C equal to the first chunk's size: still shared
    scale = [torch.tensor(5.0), torch.tensor(5.0)]
    ragged = [torch.randn(1, d), torch.randn(4, d)]  # rows of some records only: 1 and 4 for 3 and 2 records
    per_chunk = [[per_record[j], blocks[j], classes[j], scale[j], "text", ragged[j]] for j in range(2)]
    layout = grad_cache._Layout("Test", per_chunk, sizes, [False] * 5 + [True])
    assert layout.blocks == [1, 2, 0, 0, 0, -1]
    merged = layout.merge(per_chunk, sizes)
    torch.testing.assert_close(merged[0], torch.cat(per_record))
    torch.testing.assert_close(merged[1], torch.cat([torch.cat(images), torch.cat(hard)]))
    assert merged[2] is classes[0] and merged[3] is scale[0] and merged[4] == "text"
    torch.testing.assert_close(merged[5], torch.cat(ragged))
    # Gradients slice back to each chunk's rows; shared ones go to chunk 0 only.
    g = [torch.arange(t.numel(), dtype=torch.float32).view_as(t) if torch.is_tensor(t) else None for t in merged]
    for j in range(2):
        back = layout.chunk_grads(g, sizes, j)
        torch.testing.assert_close(back[0], g[0][sum(sizes[:j]) : sum(sizes[: j + 1])])
        torch.testing.assert_close(back[1], torch.cat([g[1][:5][sum(sizes[:j]) : sum(sizes[: j + 1])],
                                                       g[1][5:][sum(sizes[:j]) : sum(sizes[: j + 1])]]))
        assert (back[2] is g[2]) == (j == 0) and (back[3] is g[3]) == (j == 0)
        torch.testing.assert_close(back[5], g[5][:1] if j == 0 else g[5][1:])


def test_layout_rejects_subsets_and_modules():
    with pytest.raises(TrainingError, match="m rows per record"):  # rows for a subset of the records
        grad_cache._Layout("Counting", [[torch.randn(2, 4)], [torch.randn(2, 4)], [torch.randn(0, 4)]], [3, 2, 1],
                           [False])
    with pytest.raises(TrainingError, match="returns a module"):
        grad_cache._Layout("Bad", [[torch.nn.Linear(2, 2)], [torch.nn.Linear(2, 2)]], [3, 2], [False])
    with pytest.raises(TrainingError, match="same trailing shape"):  # a ragged output's rows must line up
        grad_cache._Layout("Ragged", [[torch.randn(2, 4)], [torch.randn(1, 5)]], [3, 2], [True])


@pytest.mark.parametrize("objective,chunk", [("contrastive", 3), ("contrastive", 7), ("sigmoid", 4)])
def test_equals_one_big_batch(objective, chunk, tiny_clip_path, tmp_path):
    """Two micro-batches of 7 records (accumulation 2); chunks of 3 ([1, 3, 3]), 7 (one chunk: the
    ordinary path) and 4 ([3, 4]). Contrastive terms weigh 1/accumulation in both paths."""
    module, engine, data, fields = build("quickstart", clip_overrides(
        tiny_clip_path, tmp_path, **{"objectives.0._component_": objective, "train.gradient_accumulation_steps": 2}))
    micro = [[data[i] for i in range(7)], [data[i] for i in range(7, 14)]]
    want_loss = plain_step(module, engine, micro, fields)
    want = grads(module)
    got_loss = grad_cache_step(module, engine, micro, fields, chunk)
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    assert_same_grads(grads(module), want)
    assert any("logit_scale" in n for n in want)  # a shared output's gradient (first chunk only) is covered


def same_mask_reference(module, batch, scale):
    """The whole micro-batch's contrastive loss through every chunk's encode kept with its graph (one backward)."""
    objective = module.objectives[0]
    outs = [objective.encode(module.view, module.parts(chunk)[0]) for chunk in batch["chunks"]]
    merged = {"image_embeds": torch.cat([o["image_embeds"] for o in outs]),
              "text_embeds": torch.cat([o["text_embeds"] for o in outs]),
              "logit_scale": outs[0]["logit_scale"], "logit_bias": outs[0]["logit_bias"]}
    loss = sum(objective.loss(**merged).values()) * scale[None] * objective.weight
    loss.backward()
    return loss.item()


def test_lora_dropout_replays_the_same_masks(tiny_clip_path, tmp_path):
    module, engine, data, fields = build("quickstart", clip_overrides(tiny_clip_path, tmp_path, **{"adapters.lora.lora_dropout": 0.5}))
    batch = grad_cache.collate(module, [data[i] for i in range(9)], fields, 4)  # [1, 4, 4]
    scale = step_scales(module, [batch], engine.dist, 1)[0]

    torch.manual_seed(123)
    want_loss = same_mask_reference(module, batch, scale)
    want, stream_after = grads(module), torch.get_rng_state()
    torch.manual_seed(123)
    got_loss = grad_cache.micro_step(engine, batch, scale, last=True).item()
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    assert_same_grads(grads(module), want)
    # The random stream continues where one pass over the chunks leaves it (the replays restore it).
    assert torch.equal(torch.get_rng_state(), stream_after)
    # The masks matter: other masks give other gradients, so the comparison above can fail.
    torch.manual_seed(124)
    same_mask_reference(module, batch, scale)
    other = grads(module)
    assert max((other[n] - want[n]).abs().max() for n in want if "lora_A" in n) > 1e-3


class PooledPairs(Objective):
    """A test embedding objective on an LVLM: InfoNCE between two poolings of each conversation's last hidden states."""

    requires = frozenset({"messages"})
    families = ("llava", "qwen2_vl")
    embedding_loss = True

    def encode(self, view, batch):
        hidden = view.last_hidden_state(batch)
        mask = batch["attention_mask"].to(hidden.dtype).unsqueeze(-1)
        last = batch["attention_mask"].sum(1) - 1
        return {"a": F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1),
                "b": F.normalize(hidden[torch.arange(hidden.shape[0]), last], dim=-1), "scale": 10.0}

    def loss(self, a, b, scale):
        return {"pooled": info_nce(a, b, scale)}


def test_mixed_recipe_next_token_runs_chunk_by_chunk(tmp_path):
    """An embedding objective with next-token on tiny LLaVA: the embedding term is GradCache'd, the next-token
    term (a mean over the step's labelled tokens) runs per chunk weighted by its share of the tokens."""
    from tunevl.objectives import NextToken

    overrides = [f"{k}={v}" for k, v in {
        "model.name_or_path": "tiny-llava", "train.output_dir": str(tmp_path / "run"), "adapters.lora.lora_dropout": 0.0,
        "adapters.lora.init_lora_weights": "false", "data.train.num_samples": 32, "data.train.image_size": 32,
        "train.gradient_accumulation_steps": 2}.items()]
    overrides = ["data.train={_component_: synthetic_vqa, split: train}", "~data.eval"] + overrides
    objectives = [PooledPairs(weight=0.5), NextToken(chunk_size=8)]
    module, engine, data, fields = build("lvlm/llava_sft_lora", overrides, objectives)
    micro = [[data[i] for i in range(5)], [data[i] for i in range(5, 10)]]
    want_loss = plain_step(module, engine, micro, fields)
    want = grads(module)
    got_loss = grad_cache_step(module, engine, micro, fields, 2)  # [1, 2, 2]
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    assert_same_grads(grads(module), want)


class MicroMean(Objective):
    """Not an embedding objective, and a term without counts: a micro-batch mean GradCache cannot split."""

    requires = frozenset({"image"})
    families = ("clip",)

    def encode(self, view, batch):
        return {"z": view.encode_images(batch["pixel_values"])}

    def loss(self, z):
        return {"spread": z.mean(0).square().sum()}


def test_uncounted_term_of_a_non_embedding_objective_is_an_error(tiny_clip_path, tmp_path):
    module, engine, data, fields = build("quickstart", clip_overrides(tiny_clip_path, tmp_path), objectives=[MicroMean()])
    batch = grad_cache.collate(module, [data[i] for i in range(5)], fields, 2)
    with pytest.raises(TrainingError, match="MicroMean.*no counts"):
        grad_cache.micro_step(engine, batch, step_scales(module, [batch], engine.dist, 1)[0], last=True)


def test_chunk_size_below_two_is_a_recipe_error():
    with pytest.raises(Exception, match="grad_cache_chunk_size"):
        tunevl.load_recipe("quickstart", ["train.grad_cache_chunk_size=1"]).train_config()


def test_training_run_with_grad_cache_ends_like_without(tiny_clip_path, tmp_path, quick):
    """The quickstart as users run it (evaluation included), 4 steps of 8 records in chunks of 3: the same adapter."""
    from safetensors.torch import load_file

    runs = {}
    for name, extra in {"plain": {}, "grad_cache": {"train.grad_cache_chunk_size": 3}}.items():
        out = tmp_path / name
        recipe = tunevl.load_recipe("quickstart", quick(tiny_clip_path, out, steps=4, **extra))
        recipe.validate()
        metrics, _ = run(recipe)
        runs[name] = (metrics, load_file(out / "adapter_model.safetensors"))
    (m_plain, plain), (m_gc, cached) = runs["plain"], runs["grad_cache"]
    assert plain.keys() == cached.keys()
    for key in plain:
        torch.testing.assert_close(cached[key], plain[key], rtol=0, atol=2e-6, msg=key)
    assert m_gc["train"]["final_loss"] == pytest.approx(m_plain["train"]["final_loss"], rel=1e-6)
    assert m_gc["trained"] == pytest.approx(m_plain["trained"], abs=1e-6)


# Every later embedding objective under GradCache, as its shipped recipe sets it up (dropout off, so that the two
# paths draw no masks; the synthetic data that carries what each objective reads; evaluation off: one step's
# gradients are compared).
SHAPES = "data.train={_component_: synthetic_shapes, num_samples: 32, vary: count}"
SEED_METHODS = {
    # Ragged rows: hard-negative images on some records only, word-swap hard captions where a swap exists.
    "negclip": ("clip/negclip", "tiny-clip", [
        "data.train={_component_: synthetic_binding, num_samples: 32, negatives: false}",
        "adapters.lora.lora_dropout=0.0"]),
    # A counted term (counting records) next to the GradCache'd contrastive term.
    "counting": ("clip/count", "tiny-clip", [SHAPES, "adapters.lora.lora_dropout=0.0"]),
    # Prompt learning: classification is counted (labelled records), so it runs chunk by chunk; CoCoOp's
    # class embeddings are per image.
    "coop": ("clip/coop", "tiny-clip", [SHAPES, "objectives.0.augment=none"]),
    "cocoop": ("clip/cocoop", "tiny-clip", [SHAPES, "objectives.0.augment=none"]),
    # VladVA: contrastive rows are the records with a short caption (ragged), next-token on the long ones.
    "vladva": ("lvlm/vladva_qwen2_vl", "tiny-qwen2-vl", [
        "data.train={_component_: synthetic_captions, num_samples: 32, layout: either, image_size: 32}",
        "adapters.lora.lora_dropout=0.0", "train.gradient_checkpointing=false"]),
}


def negative_images_on_some(records: list[dict], every: int) -> list[dict]:
    """NegCLIP's ragged rows: a hard-negative image kept on records whose index is a multiple of ``every`` only."""
    return [r if r["index"] % every == 0 else {k: v for k, v in r.items() if not k.startswith("negative_image")}
            for r in records]


@pytest.mark.parametrize("method", sorted(SEED_METHODS))
def test_seed_methods_equal_one_big_batch(method, tmp_path, monkeypatch):
    """Two micro-batches of 7 records in chunks of 3 ([1, 3, 3]): the gradients of the ordinary step."""
    monkeypatch.setenv("TUNEVL_CACHE", str(tmp_path / "cache"))
    name, twin, extra = SEED_METHODS[method]
    overrides = [f"model.name_or_path={twin}", f"train.output_dir={tmp_path / 'run'}", "train.progress_bar=false",
                 "train.gradient_accumulation_steps=2", "train.per_device_train_batch_size=7",
                 "train.dataloader_num_workers=0", "~data.eval", "~eval", *extra]
    recipe = tunevl.load_recipe(name, overrides)
    if "lora" in recipe.tree.get("adapters", {}):
        overrides.append("adapters.lora.init_lora_weights=false")  # random lora_B: every gradient nonzero
    module, _, data, _ = build(name, overrides, engine_cls=None)
    cfg = recipe.train_config()  # the LoRA init override does not touch train settings
    for objective in module.objectives:  # as the loop does: class names, then the feature cache
        objective.setup(module.view, data)
    engine = TorchEngine(module, cfg, DistInfo(), 10, False)
    for objective in module.objectives:
        objective.prepare(module.view, data, dist=engine.dist, cfg=cfg, bf16=False)
    fields = set().union(*(o.batch_fields() for o in module.objectives))
    micro = [[data[i] for i in range(7)], [data[i] for i in range(7, 14)]]
    if method == "negclip":  # a hard-negative image on every third record only (NegCLIP's TSV has them on some)
        micro = [negative_images_on_some(records, 3) for records in micro]
        batches = [grad_cache.collate(module, r, fields, 3) for r in micro]
        rows = [len(c["own"][0]["negclip_input_ids"]) / len(c["index"]) for b in batches for c in b["chunks"]]
        assert len(set(rows)) > 1  # the rows really are ragged
    want_loss = plain_step(module, engine, micro, fields)
    want = grads(module)
    got_loss = grad_cache_step(module, engine, micro, fields, 3)
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    assert_same_grads(grads(module), want)
