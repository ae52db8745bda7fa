"""A gauntlet of bad inputs: each ends in exit code 2 and one error line naming the culprit, never a traceback,
and the data-loss cases leave every earlier file byte-identical.

Most cases run in-process through ``tunevl.cli.main``; a few run ``python -m tunevl`` in a subprocess to show
the same end to end. A genuine bug, on the other hand, keeps its traceback and says it is one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from tunevl.cli import main

# ---------------------------------------------------------------------------------------------- the world


@dataclass
class World:
    """Shared, read-only inputs (built once) plus a fresh folder per case."""

    root: Path
    shapes: Path = None  # data.jsonl + images/ of 16 synthetic shapes
    vqa: Path = None  # data.jsonl + images/ of 4 synthetic questions
    run: Path = None  # a finished tiny-clip run: bundle + checkpoint-1
    tmp: Path = None

    def copy_run(self, name: str = "run") -> Path:
        target = self.tmp / name
        shutil.copytree(self.run, target)
        return target

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return path

    def jsonl(self, name: str, rows: list) -> Path:
        return self.write(name, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))

    def image(self, name: str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (200, 30, 30)).save(path)
        return str(path)


def _run_overrides(out) -> list[str]:
    return ["model.name_or_path=tiny-clip", f"train.output_dir={out}", "train.max_steps=2", "train.save_steps=1",
            "train.per_device_train_batch_size=8", "train.progress_bar=false", "train.eval_at_start=false",
            "data.train.num_samples=64", "data.eval.num_samples=16"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from tunevl.data.synthetic import SyntheticShapes, write_synthetic
    from tunevl.data.synthetic_vqa import SyntheticVQA, write_vqa

    root = tmp_path_factory.mktemp("gauntlet")
    os.environ.setdefault("TUNEVL_CACHE", str(root / "cache"))
    w = World(root)
    write_synthetic(root / "shapes", SyntheticShapes(num_samples=16, seed=1))
    w.shapes = root / "shapes" / "data.jsonl"
    w.vqa = write_vqa(root / "vqa", SyntheticVQA(num_samples=4, split="eval", image_size=32))
    assert main(["train", "quickstart", *_run_overrides(root / "run")]) == 0
    w.run = root / "run"
    assert (w.run / "checkpoint-1").is_dir() and (w.run / "tunevl.json").is_file()
    return w


def _clip(w: World, *extra: str) -> list[str]:
    """The quickstart on the tiny CLIP, its data replaced by a JSONL file (for ``data check``)."""
    return ["quickstart", "model.name_or_path=tiny-clip", f"train.output_dir={w.tmp / 'out'}", "~data.eval",
            "train.per_device_train_batch_size=2", *extra]


def _jsonl(path, **args) -> str:
    items = ", ".join(f"{k}: {v}" for k, v in {"path": path, **args}.items())
    return f"data.train={{_component_: jsonl, {items}}}"


def _llava(w: World, data: Path, *extra: str) -> list[str]:
    """The LLaVA recipe on its tiny twin (family given: no model is built for ``data check``)."""
    return ["lvlm/llava_sft_lora", "model.name_or_path=tiny-llava", "model.family=llava", _jsonl(data), "~data.eval",
            "train.per_device_train_batch_size=1", "train.gradient_accumulation_steps=1",
            f"train.output_dir={w.tmp / 'out'}", *extra]


def _conversation(w: World, messages, images=1, **fields) -> Path:
    paths = [w.image(f"img{k}.png") for k in range(images)]
    return w.jsonl("conv.jsonl", [{"messages": messages, "images": paths, **fields}])


USER = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many circles?"}]}
ANSWER = {"role": "assistant", "content": "two"}


def _resume(w: World, run: Path, *extra: str) -> list[str]:
    return ["train", "quickstart", *_run_overrides(run), "train.resume_from_checkpoint=latest", *extra]


# ------------------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One bad input.

    Args:
        id: The test id.
        argv: The command line, built from the world.
        expect: Substrings the one error line must hold (the culprit: file, line, key, record...).
        keep: Paths (files or folders) that must be byte-identical afterwards: the data-loss cases.
        absent: Paths that must not exist afterwards (nothing of a refused component ran).
    """

    id: str
    argv: Callable[[World], list[str]]
    expect: Callable[[World], list[str]]
    keep: Callable[[World], list[Path]] = lambda w: []
    absent: Callable[[World], list[Path]] = lambda w: []
    patch: Callable | None = field(default=None)


def _bad_recipe(w: World, old: str, new: str) -> str:
    from tunevl.config import RECIPES_DIR

    text = (RECIPES_DIR / "quickstart.yaml").read_text()
    assert old in text
    return str(w.write("bad.yaml", text.replace(old, new)))


def _corrupt(path: Path, data: bytes | None = None) -> Path:
    """Truncate a file to half its size (or write ``data``)."""
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if data is None else data)
    return path


def _bundle(w: World, damage: Callable[[Path], object]) -> str:
    bundle = w.copy_run("bundle")
    shutil.rmtree(bundle / "checkpoint-1")
    damage(bundle)
    return str(bundle)


def _checkpoint(w: World, damage: Callable[[Path], object]) -> Path:
    run = w.copy_run()
    damage(run / "checkpoint-1")
    return run


CASES: list[Case] = [
    # ---- recipes (tunevl validate) --------------------------------------------------------------------
    Case("recipe-unknown-key", lambda w: ["validate", _bad_recipe(w, "learning_rate:", "learning_rat:")],
         lambda w: ["bad.yaml:", "train.learning_rat", "did you mean 'learning_rate'"]),
    Case("recipe-yaml-syntax", lambda w: ["validate", str(w.write("bad.yaml", "model:\n  name_or_path: [tiny-clip\n"))],
         lambda w: ["bad.yaml:"]),
    Case("recipe-missing-file", lambda w: ["validate", str(w.tmp / "nope.yaml")], lambda w: ["nope.yaml", "no such recipe"]),
    Case("recipe-not-a-mapping", lambda w: ["validate", str(w.write("bad.yaml", "- a\n- b\n"))],
         lambda w: ["bad.yaml:1", "must be a mapping"]),
    Case("recipe-duplicate-key", lambda w: ["validate", _bad_recipe(w, "  weight_decay: 0.0\n", "  weight_decay: 0.0\n  weight_decay: 0.1\n")],
         lambda w: ["bad.yaml:", "train.weight_decay", "duplicate key"]),
    Case("recipe-unknown-section", lambda w: ["validate", _bad_recipe(w, "\ntrain:\n", "\ntrian:\n")],
         lambda w: ["bad.yaml:", "trian", "did you mean 'train'"]),
    Case("recipe-negative-weight", lambda w: ["validate", "quickstart", "objectives.0.weight=-1"],
         lambda w: ["objectives.0.weight", "must be >= 0", "negated loss"]),
    Case("recipe-lora-rank-0", lambda w: ["validate", "quickstart", "adapters.lora.r=0"], lambda w: ["adapters.lora.r", ">= 1"]),
    Case("recipe-lora-dropout", lambda w: ["validate", "quickstart", "adapters.lora.lora_dropout=1.5"],
         lambda w: ["adapters.lora.lora_dropout", "[0, 1)"]),
    Case("recipe-max-grad-norm", lambda w: ["validate", "quickstart", "train.max_grad_norm=-1"],
         lambda w: ["train.max_grad_norm", "must be >= 0"]),
    Case("recipe-batch-size-0", lambda w: ["validate", "quickstart", "train.per_device_train_batch_size=0"],
         lambda w: ["train.per_device_train_batch_size", "must be >= 1"]),
    Case("recipe-accumulation", lambda w: ["validate", "quickstart", "train.gradient_accumulation_steps=-2"],
         lambda w: ["train.gradient_accumulation_steps", "must be >= 1"]),
    Case("recipe-max-steps-0", lambda w: ["validate", "quickstart", "train.max_steps=0"],
         lambda w: ["train.max_steps", "must be > 0"]),
    Case("recipe-logging-steps", lambda w: ["validate", "quickstart", "train.logging_steps=0"],
         lambda w: ["train.logging_steps", "must be >= 1"]),
    Case("recipe-report-to", lambda w: ["validate", "quickstart", "train.report_to=tensorbord"],
         lambda w: ["train.report_to", "did you mean 'tensorboard'"]),
    Case("recipe-missing-package", lambda w: ["validate", "quickstart", "train.report_to=wandb"],
         lambda w: ["train.report_to", "wandb", "pip install 'tunevl[wandb]'"]),
    Case("recipe-scheduler", lambda w: ["validate", "quickstart", "train.lr_scheduler_type=cosin"],
         lambda w: ["train.lr_scheduler_type", "did you mean 'cosine'"]),
    Case("recipe-deepspeed-preset", lambda w: ["validate", "quickstart", "train.deepspeed=zero4"],
         lambda w: ["train.deepspeed", "'zero4'", "presets: zero2, zero3, zero3_offload"]),
    Case("recipe-deepspeed-file", lambda w: ["validate", "quickstart", f"train.deepspeed={w.tmp / 'ds.json'}"],
         lambda w: ["train.deepspeed", "no such file", "ds.json"]),
    Case("recipe-deepspeed-json", lambda w: ["validate", "quickstart", "train.deepspeed=" + str(w.write("ds.json", '{"zero": ,}'))],
         lambda w: ["train.deepspeed", "ds.json:1", "not valid JSON"]),
    Case("recipe-processor-kwargs", lambda w: ["validate", "lvlm/qwen2_vl_sft_lora", "model.processor_kwargs={max_pixel: 1000}"],
         lambda w: ["model.processor_kwargs.max_pixel", "did you mean 'max_pixels'"]),
    Case("recipe-dtype", lambda w: ["validate", "quickstart", "model.dtype=bf16"], lambda w: ["model.dtype", "expected one of"]),
    Case("recipe-wrong-family", lambda w: ["validate", "quickstart", "objectives.0._component_=next_token"],
         lambda w: ["objectives.0._component_", "cannot train a clip model"]),
    Case("recipe-eval-ks", lambda w: ["validate", "quickstart", "eval.ks=[0, 5]"], lambda w: ["eval.ks.0", "must be >= 1"]),
    Case("recipe-eval-split-and-eval", lambda w: ["validate", "quickstart", _jsonl(w.shapes, eval_split=0.25)],
         lambda w: ["data.train.eval_split", "data.eval is set as well"]),
    # ---- _component_ never runs arbitrary code -----------------------------------------------------
    Case("component-os-system", lambda w: ["data", "check", *_clip(w, f"data.train={{_component_: os.system, command: 'touch {w.tmp / 'pwned'}'}}")],
         lambda w: ["data.train._component_", "'os.system'", "standard library"], absent=lambda w: [w.tmp / "pwned"]),
    Case("component-builtin-eval", lambda w: ["validate", "quickstart", "objectives.0={_component_: builtins.eval, weight: 1}"],
         lambda w: ["objectives.0._component_", "builtins.eval"]),
    Case("component-subprocess", lambda w: ["validate", "quickstart", "data.train={_component_: subprocess.Popen, args: [ls]}"],
         lambda w: ["data.train._component_", "subprocess.Popen", "standard library"]),
    Case("component-library-function", lambda w: ["data", "check", *_clip(w, "data.train={_component_: tunevl.data.synthetic.render_shapes, count: 1, colour: red, shape: circle}")],
         lambda w: ["data.train._component_", "is a function that is not a map-style dataset class"]),
    Case("component-wrong-kind", lambda w: ["validate", "quickstart", "data.train={_component_: tunevl.objectives.contrastive.Contrastive}"],
         lambda w: ["data.train._component_", "not a map-style dataset class"]),
    Case("component-objective-kind", lambda w: ["validate", "quickstart", "objectives.0={_component_: tunevl.data.synthetic.SyntheticShapes}"],
         lambda w: ["objectives.0._component_", "not an Objective subclass"]),
    # ---- overrides ----------------------------------------------------------------------------------
    Case("override-index", lambda w: ["validate", "quickstart", "objectives.3.weight=2"], lambda w: ["objectives.3"]),
    Case("override-bad-yaml", lambda w: ["validate", "quickstart", "train.learning_rate=[1,"], lambda w: ["train.learning_rate"]),
    Case("override-type", lambda w: ["validate", "quickstart", "train.max_steps=ten"],
         lambda w: ["override 'train.max_steps=ten'", "expected int"]),
    Case("override-delete-required", lambda w: ["validate", "quickstart", "~data.train"], lambda w: ["data.train"]),
    # ---- data files (tunevl data check) ----------------------------------------------------------------
    Case("data-missing-file", lambda w: ["data", "check", *_clip(w, _jsonl(w.tmp / "nope.jsonl"))],
         lambda w: ["data.train.path", "no such file", "nope.jsonl"]),
    Case("data-invalid-json", lambda w: ["data", "check", *_clip(w, _jsonl(w.jsonl("d.jsonl", [{"text": "a"}, "{oops"])))],
         lambda w: ["d.jsonl:2", "invalid JSON"]),
    Case("data-empty", lambda w: ["data", "check", *_clip(w, _jsonl(w.write("d.jsonl", "")))],
         lambda w: ["d.jsonl", "empty"]),
    Case("data-not-utf8", lambda w: ["data", "check", *_clip(w, _jsonl(w.write("d.jsonl", b'{"text": "a"}\n{"text": "caf\xe9"}\n')))],
         lambda w: ["d.jsonl:2", "not UTF-8"]),
    Case("data-csv-not-utf8", lambda w: ["data", "check", *_clip(w, "data.train={_component_: csv, path: " + str(w.write("d.csv", b"text,image\ncaf\xe9,x.png\n")) + "}")],
         lambda w: ["d.csv:2", "not UTF-8"]),
    Case("data-missing-column", lambda w: ["data", "check", *_clip(w, _jsonl(w.shapes, columns="{text: caption}"))],
         lambda w: ["data.train.columns.text", "no column 'caption'"]),
    Case("data-text-not-string", lambda w: ["data", "check", *_clip(w, _jsonl(w.jsonl("d.jsonl", [{"text": "a", "image": w.image("a.png")}, {"text": 3, "image": w.image("a.png")}])))],
         lambda w: ["d.jsonl:2", "record 1", "text", "expected text (a string), got int 3"]),
    Case("data-captions-not-texts", lambda w: ["data", "check", *_clip(w, _jsonl(w.jsonl("d.jsonl", [{"text": "a", "captions": ["a", 2], "image": w.image("a.png")}])))],
         lambda w: ["d.jsonl:1", "record 0", "captions", "expected a list of texts"]),
    Case("data-field-missing", lambda w: ["data", "check", *_clip(w, _jsonl(w.shapes, columns="{text: null}"))],
         lambda w: ["data.train", "needs the record field 'text'"]),
    Case("data-global-batch", lambda w: ["data", "check", *_clip(w, _jsonl(w.shapes), "train.per_device_train_batch_size=32")],
         lambda w: ["data.train", "16 records cannot fill one optimizer step of 32"]),
    Case("data-label-unknown", lambda w: ["data", "check", *_clip(w, _jsonl(w.jsonl("d.jsonl", [{"text": "a", "image": w.image("a.png"), "label": "dog"}]), classnames="[cat]"))],
         lambda w: ["d.jsonl:1", "record 0", "'dog' is not in classnames"]),
    Case("data-eval-split-value", lambda w: ["data", "check", *_clip(w, _jsonl(w.shapes, eval_split=1.5))],
         lambda w: ["data.train.eval_split", "a share in (0, 1)"]),
    Case("data-image-root", lambda w: ["data", "check", *_clip(w, _jsonl(w.shapes, image_root=w.tmp / "nowhere"))],
         lambda w: ["data.train.image_root", "no such folder"]),
    Case("data-max-bad-images", lambda w: ["data", "check", *_clip(w, _jsonl(w.shapes, max_bad_images=-1))],
         lambda w: ["data.train.max_bad_images", "must be >= 0"]),
    # ---- images ---------------------------------------------------------------------------------------
    Case("image-missing", lambda w: ["data", "check", *_clip(w, _jsonl(w.jsonl("d.jsonl", [{"text": "a", "image": str(w.tmp / "gone.png")}])))],
         lambda w: ["d.jsonl:1", "record 0", "image", "image not found", "gone.png"]),
    Case("image-corrupt", lambda w: ["data", "check", *_clip(w, _jsonl(w.jsonl("d.jsonl", [{"text": "a", "image": str(w.write("bad.png", b"\x89PNG\r\n\x1a\nnope"))}])))],
         lambda w: ["d.jsonl:1", "record 0", "cannot read image", "bad.png"]),
    Case("image-truncated", lambda w: ["data", "check", *_clip(w, _jsonl(w.jsonl("d.jsonl", [{"text": "a", "image": str(_corrupt(Path(w.image("t.png"))))}])))],
         lambda w: ["d.jsonl:1", "record 0", "t.png"]),
    Case("image-not-a-path", lambda w: ["data", "check", *_clip(w, _jsonl(w.jsonl("d.jsonl", [{"text": "a", "image": 5}])))],
         lambda w: ["d.jsonl:1", "record 0", "expected an image path"]),
    Case("image-full-decode", lambda w: ["data", "check", "--full", *_clip(w, _jsonl(w.jsonl("d.jsonl", [{"text": "a", "image": w.image(f"{i}.png")} for i in range(70)] + [{"text": "b", "image": str(w.write("late.png", b"\x89PNG junk"))}] + [{"text": "a", "image": w.image(f"z{i}.png")} for i in range(70)])))],
         lambda w: ["d.jsonl:71", "record 70", "late.png"]),
    Case("image-lvlm-missing", lambda w: ["data", "check", *_llava(w, w.jsonl("c.jsonl", [{"messages": [USER, ANSWER], "images": [str(w.tmp / "gone.png")]}]))],
         lambda w: ["c.jsonl:1", "record 0", "images[0]", "image not found"]),
    # ---- conversations ----------------------------------------------------------------------------------
    Case("conversation-no-answer", lambda w: ["data", "check", *_llava(w, _conversation(w, [USER]))],
         lambda w: ["conv.jsonl:1", "record 0", "messages", "no assistant turn"]),
    Case("conversation-sharegpt-roles", lambda w: ["data", "check", *_llava(w, _conversation(w, [{**USER, "role": "human"}, {**ANSWER, "role": "gpt"}]))],
         lambda w: ["conv.jsonl:1", "record 0", "messages[0].role", "'human'", "did you mean 'user'"]),
    Case("conversation-not-a-list", lambda w: ["data", "check", *_llava(w, _conversation(w, "How many circles? two"))],
         lambda w: ["conv.jsonl:1", "record 0", "messages[0]", "expected a turn {role, content}, got str"]),
    Case("conversation-placeholders", lambda w: ["data", "check", *_llava(w, _conversation(w, [{**USER, "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "?"}]}, ANSWER]))],
         lambda w: ["conv.jsonl:1", "record 0", "2 image placeholder", "1 image"]),
    Case("conversation-text-not-string", lambda w: ["data", "check", *_llava(w, _conversation(w, [USER, {"role": "assistant", "content": 2}]))],
         lambda w: ["conv.jsonl:1", "record 0", "messages[1].content", "got int 2"]),
    Case("conversation-item-text", lambda w: ["data", "check", *_llava(w, _conversation(w, [{**USER, "content": [{"type": "image"}, {"type": "text", "text": ["a"]}]}, ANSWER]))],
         lambda w: ["conv.jsonl:1", "messages[0].content[1]", "expected text (a string)"]),
    Case("conversation-turn-shape", lambda w: ["data", "check", *_llava(w, _conversation(w, [USER, {"role": "assistant"}]))],
         lambda w: ["conv.jsonl:1", "messages[1]", "expected a turn {role, content}"]),
    Case("conversation-item-type", lambda w: ["data", "check", *_llava(w, _conversation(w, [{**USER, "content": [{"type": "video"}]}, ANSWER]))],
         lambda w: ["conv.jsonl:1", "messages[0].content[0]", "'video'"]),
    Case("conversation-no-user-turn", lambda w: ["data", "check", *_llava(w, _conversation(w, [ANSWER]))],
         lambda w: ["conv.jsonl:1", "record 0", "1 image(s) but no user turn"]),
    Case("conversation-sharegpt-speaker", lambda w: ["data", "check", *_llava(w, w.jsonl("c.jsonl", [{"conversations": [{"from": "human", "value": "<image>\nHi"}, {"from": "bot", "value": "two"}], "image": w.image("a.png")}]))],
         lambda w: ["c.jsonl:1", "record 0", "conversations[1].from", "'bot'"]),
    Case("conversation-image-token-text", lambda w: ["train", *_llava(w, _conversation(w, [{"role": "user", "content": "<image>\nHow many?"}, ANSWER]), "model.family=null", "train.max_steps=1")],
         lambda w: ["conv.jsonl:1", "record 0", "messages[0].content", "image token '<image>'"]),
    # ---- bundles (eval, merge) ----------------------------------------------------------------------------
    Case("bundle-missing", lambda w: ["eval", str(w.tmp / "nothing"), "--data", str(w.shapes)], lambda w: ["nothing", "no such bundle"]),
    Case("bundle-empty-folder", lambda w: ["eval", _bundle(w, lambda b: [p.unlink() for p in b.iterdir() if p.is_file()]), "--data", str(w.shapes)],
         lambda w: ["bundle", "not a tunevl bundle"]),
    Case("bundle-truncated-adapter", lambda w: ["eval", _bundle(w, lambda b: _corrupt(b / "adapter_model.safetensors")), "--data", str(w.shapes)],
         lambda w: ["adapter_model.safetensors", "corrupt or truncated safetensors"]),
    Case("bundle-truncated-extras", lambda w: ["eval", _bundle(w, lambda b: _corrupt(b / "tunevl_extras.safetensors")), "--data", str(w.shapes)],
         lambda w: ["tunevl_extras.safetensors", "corrupt or truncated safetensors"]),
    Case("bundle-corrupt-meta", lambda w: ["eval", _bundle(w, lambda b: _corrupt(b / "tunevl.json")), "--data", str(w.shapes)],
         lambda w: ["tunevl.json:", "corrupt or truncated JSON"]),
    Case("bundle-corrupt-adapter-config", lambda w: ["eval", _bundle(w, lambda b: _corrupt(b / "adapter_config.json")), "--data", str(w.shapes)],
         lambda w: ["adapter_config.json:", "corrupt or truncated JSON"]),
    Case("bundle-newer-format", lambda w: ["eval", _bundle(w, lambda b: (b / "tunevl.json").write_text(json.dumps({**json.loads((w.run / "tunevl.json").read_text()), "format_version": 99}))), "--data", str(w.shapes)],
         lambda w: ["tunevl.json", "format_version 99", "upgrade tunevl"]),
    Case("bundle-missing-extras", lambda w: ["eval", _bundle(w, lambda b: (b / "tunevl_extras.safetensors").unlink()), "--data", str(w.shapes)],
         lambda w: ["missing tunevl_extras.safetensors"]),
    Case("eval-no-data", lambda w: ["eval", "tiny-clip"], lambda w: ["tiny-clip", "no evaluation data", "--data"]),
    Case("eval-bad-device", lambda w: ["eval", "tiny-clip", "--data", str(w.shapes), "--device", "gpu7"], lambda w: ["device", "'gpu7'"]),
    Case("eval-data-arg", lambda w: ["eval", "tiny-clip", "--data", str(w.shapes), "--data-arg", "split"], lambda w: ["--data-arg", "KEY=VALUE"]),
    Case("eval-offline-hub-miss", lambda w: ["eval", "nobody/not-a-cached-model", "--data", str(w.shapes)],
         lambda w: ["nobody/not-a-cached-model"]),
    Case("merge-into-bundle", lambda w: ["merge", str(w.run), str(w.run)], lambda w: ["the bundle itself"], keep=lambda w: [w.run]),
    Case("merge-into-parent", lambda w: ["merge", str(w.run), str(w.run.parent)], lambda w: ["the bundle folder"], keep=lambda w: [w.run]),
    Case("merge-non-empty", lambda w: ["merge", str(w.run), str(w.copy_run("full"))], lambda w: ["full", "not empty", "--overwrite"],
         keep=lambda w: [w.tmp / "full"]),
    Case("merge-into-file", lambda w: ["merge", str(w.run), str(w.write("merged", "x"))], lambda w: ["merged", "a file"],
         keep=lambda w: [w.tmp / "merged"]),
    # ---- checkpoints (resume) -----------------------------------------------------------------------------
    Case("resume-no-checkpoint", lambda w: ["train", "quickstart", *_run_overrides(w.tmp / "fresh"), "train.resume_from_checkpoint=latest"],
         lambda w: ["train.resume_from_checkpoint=latest", "no checkpoint-*"]),
    Case("resume-not-a-checkpoint", lambda w: ["train", "quickstart", *_run_overrides(w.tmp / "fresh"), f"train.resume_from_checkpoint={w.tmp}"],
         lambda w: ["train.resume_from_checkpoint", "not a tunevl checkpoint"]),
    Case("resume-lora-rank", lambda w: _resume(w, w.copy_run(), "adapters.lora.r=4"),
         lambda w: ["checkpoint-1", "adapters.lora.r: 8 -> 4", "trainable"], keep=lambda w: [w.tmp / "run"]),
    Case("resume-objective-weight", lambda w: _resume(w, w.copy_run(), "objectives.0.weight=2"),
         lambda w: ["checkpoint-1", "objectives.0.weight: 1.0 -> 2"], keep=lambda w: [w.tmp / "run"]),
    Case("resume-max-steps", lambda w: _resume(w, w.copy_run(), "train.max_steps=3"),
         lambda w: ["train.max_steps: 2 -> 3", "total steps: 2 -> 3"], keep=lambda w: [w.tmp / "run"]),
    Case("resume-data", lambda w: _resume(w, w.copy_run(), "data.train.num_samples=48"),
         lambda w: ["data.train.num_samples: 64 -> 48", "training records: 64 -> 48"], keep=lambda w: [w.tmp / "run"]),
    Case("resume-corrupt-optimizer", lambda w: _resume(w, _checkpoint(w, lambda c: _corrupt(c / "training_state" / "optimizer.pt"))),
         lambda w: ["optimizer.pt", "corrupt or truncated", "earlier checkpoint"], keep=lambda w: [w.tmp / "run"]),
    Case("resume-corrupt-trainables", lambda w: _resume(w, _checkpoint(w, lambda c: _corrupt(c / "training_state" / "trainable.safetensors"))),
         lambda w: ["trainable.safetensors", "corrupt or truncated"], keep=lambda w: [w.tmp / "run"]),
    Case("resume-corrupt-state", lambda w: _resume(w, _checkpoint(w, lambda c: _corrupt(c / "training_state" / "trainer_state.json"))),
         lambda w: ["trainer_state.json:", "corrupt or truncated JSON"], keep=lambda w: [w.tmp / "run"]),
    Case("resume-empty-rng", lambda w: _resume(w, _checkpoint(w, lambda c: _corrupt(c / "training_state" / "rng_rank0.pt", b""))),
         lambda w: ["rng_rank0.pt", "corrupt or truncated"]),
    # ---- output folders (nothing lost) --------------------------------------------------------------------
    Case("output-another-run", lambda w: ["train", "quickstart", *_run_overrides(w.copy_run())],
         lambda w: ["train.output_dir", "holds another run", "resume_from_checkpoint=latest", "overwrite_output_dir=true"],
         keep=lambda w: [w.tmp / "run"]),
    Case("output-foreign-checkpoint", lambda w: ["train", "quickstart", *_run_overrides(_foreign_checkpoint(w))],
         lambda w: ["train.output_dir", "checkpoint-99"], keep=lambda w: [w.tmp / "other"]),
    Case("output-is-a-file", lambda w: ["train", "quickstart", *_run_overrides(w.write("out.txt", "notes"))],
         lambda w: ["train.output_dir", "out.txt", "is a file"], keep=lambda w: [w.tmp / "out.txt"]),
    Case("output-under-a-file", lambda w: ["train", "quickstart", *_run_overrides(w.write("notes.txt", "x").joinpath("run"))],
         lambda w: ["train.output_dir", "cannot write", "notes.txt"], keep=lambda w: [w.tmp / "notes.txt"]),
    Case("output-disk-full", lambda w: ["train", "quickstart", *_run_overrides(w.copy_run()), "train.overwrite_output_dir=true",
                                        "train.save_steps=0"],
         lambda w: ["no space left on device"], keep=lambda w: [w.tmp / "run" / n for n in _BUNDLE]),
    # ---- the command line -----------------------------------------------------------------------------
    Case("cli-missing-model", lambda w: ["train", "quickstart", *_run_overrides(w.tmp / "o"), "model.name_or_path=openai/clip-vit-nonexistent"],
         lambda w: ["model.name_or_path", "'openai/clip-vit-nonexistent'", "config.json"]),
    Case("cli-unknown-family", lambda w: ["train", "quickstart", *_run_overrides(w.tmp / "o"), f"model.name_or_path={w.tmp}"],
         lambda w: ["model.name_or_path", "no config.json"]),
    Case("cli-synth-count", lambda w: ["data", "synth", "--out", str(w.tmp / "d"), "--num-samples", "0"], lambda w: ["--num-samples", ">= 1"]),
    Case("cli-lvlm-eval-no-candidates", lambda w: ["eval", str(_lvlm_bundle(w)), "--data", str(w.jsonl("q.jsonl", [{"messages": [USER], "images": [w.image("q.png")]}]))],
         lambda w: ["q.jsonl:1", "record 0", "'candidates'"]),
]

_BUNDLE = ("adapter_model.safetensors", "adapter_config.json", "tunevl_extras.safetensors", "tunevl.json", "README.md",
           "recipe.yaml", "metrics.json", "loss_curve.png")


def _foreign_checkpoint(w: World) -> Path:
    other = w.tmp / "other"
    shutil.copytree(w.run / "checkpoint-1", other / "checkpoint-99")
    return other


_LVLM_BUNDLE: dict = {}


def _lvlm_bundle(w: World) -> Path:
    """A tiny LLaVA bundle (trained once, one step)."""
    if "path" not in _LVLM_BUNDLE:
        out = w.root / "llava"
        assert main(["train", "lvlm/llava_sft_lora", "model.name_or_path=tiny-llava", _jsonl(w.vqa), "~data.eval",
                     "train.max_steps=1", "train.per_device_train_batch_size=4", "train.gradient_accumulation_steps=1",
                     "train.progress_bar=false", f"train.output_dir={out}"]) == 0
        _LVLM_BUNDLE["path"] = out
    return _LVLM_BUNDLE["path"]


def _digest(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _disk_full(monkeypatch):
    """Every write into the bundle's temporary folder fails as on a full disk."""
    import errno

    import safetensors.torch

    real = safetensors.torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        if ".bundle.tmp" in str(filename):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


_PATCHES = {"output-disk-full": _disk_full}


def test_the_gauntlet_has_at_least_60_cases():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2(case, world, tmp_path, capsys, monkeypatch):
    world.tmp = tmp_path
    monkeypatch.chdir(tmp_path)
    if case.id in _PATCHES:
        _PATCHES[case.id](monkeypatch)
    argv = case.argv(world)
    kept = case.keep(world)
    before = _digest(kept)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("tunevl ") and ": error: " in line]
    assert len(lines) == 1, err[-3000:]
    for part in case.expect(world):
        assert part.lower() in lines[0].lower(), f"{part!r} not in {lines[0]!r}"
    assert _digest(kept) == before, "files of an earlier run changed"
    for path in case.absent(world):
        assert not path.exists(), f"{path} was created: a refused component ran"


# ------------------------------------------------------------------------------------- end to end, and bugs

SUBPROCESS_CASES = ["recipe-negative-weight", "data-missing-file", "output-another-run", "bundle-truncated-adapter",
                    "component-os-system"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_end_to_end_in_a_process(case_id, world, tmp_path):
    case = next(c for c in CASES if c.id == case_id)
    world.tmp = tmp_path
    argv = case.argv(world)
    before = _digest(case.keep(world))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tunevl", *argv], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tunevl ")]
    assert len(lines) == 1 and ": error: " in lines[0], proc.stderr[-3000:]
    assert all(part.lower() in lines[0].lower() for part in case.expect(world)), lines[0]
    assert _digest(case.keep(world)) == before
    assert not any(p.exists() for p in case.absent(world))


def test_a_bug_keeps_its_traceback_and_says_so(monkeypatch, capsys):
    import tunevl.cli.recipes

    def broken(args):
        return {}["missing"]

    monkeypatch.setattr(tunevl.cli.recipes, "run", broken)
    assert main(["recipes"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err
    assert err.strip().splitlines()[-1] == ("tunevl recipes: internal error: KeyError (a bug in tunevl, not in your input; "
                                            "please report it with the traceback above)")
