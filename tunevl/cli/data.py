"""``tunevl data synth|check|counterfactuals|reference-logps``: write synthetic data sets, check a recipe's data
before training, add counting counterfactuals to a data file, precompute the reference log-probs of a recipe's
preference objectives."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KINDS = ("shapes", "classification", "contrast", "vqa")


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    synth = sub.add_parser(
        "synth", help="write a deterministic synthetic set in the JSONL + images layout",
        description="Write a deterministic synthetic set (rendered shapes) to disk, in the layout the 'jsonl' source reads.",
    )
    synth.add_argument("--kind", choices=KINDS, default="shapes",
                       help="shapes: captions like 'three red circles'; classification: the same images, "
                            "labelled by shape, filed under images/<class>/; contrast: minimal-visual-contrast "
                            "pairs (two images differing in one count, colour or position) in S-VCO's MVC layout; "
                            "vqa: questions about the shapes as conversations, for LVLM recipes (default: shapes)")
    synth.add_argument("--out", required=True, help="output folder (created)")
    synth.add_argument("--num-samples", type=_positive, default=256, help="number of records (default: 256)")
    synth.add_argument("--seed", type=int, default=0, help="seed; the same seed writes the same files (default: 0)")
    synth.add_argument("--split", default="train", help="name of the random stream, e.g. train or eval (default: train)")
    synth.add_argument("--image-size", type=_positive, default=64, help="image side in pixels (default: 64)")
    synth.epilog = "Example:\n  tunevl data synth --kind classification --out data/shapes --num-samples 512 --seed 0"
    synth.formatter_class = argparse.RawDescriptionHelpFormatter

    cf = sub.add_parser(
        "counterfactuals", help="add counting counterfactuals ('three dogs' -> 'seven dogs') to a JSONL/CSV/TSV file",
        description="Copy a data file, adding 'counterfactual' (the caption with its number swapped) and 'count' "
                    "to every row whose caption states a clear count; the 'counting' objective uses them.",
    )
    cf.add_argument("input", metavar="IN", help="a .jsonl, .json (list), .csv or .tsv file")
    cf.add_argument("output", metavar="OUT", help="where to write the copy (same format)")
    cf.add_argument("--text-column", default="text", help="the caption column (default: text)")
    cf.add_argument("--count-column", default="count", help="the count column, read when present (default: count)")
    cf.add_argument("--only-with-count", action="store_true",
                    help="leave rows without a count alone (default: take the count the caption states)")
    cf.add_argument("--numbers", type=int, nargs="+", default=list(range(2, 11)), metavar="N",
                    help="numbers a counterfactual may take (default: 2 .. 10)")
    cf.add_argument("--seed", type=int, default=0, help="seed of the swapped numbers (default: 0)")
    cf.epilog = "Example:\n  tunevl data counterfactuals data/train.jsonl data/train_count.jsonl --text-column caption"
    cf.formatter_class = argparse.RawDescriptionHelpFormatter

    check = sub.add_parser(
        "check", help="build a recipe's data sets and run the pre-flight checks, without training",
        description="Build data.train and data.eval of a recipe and run the pre-flight checks "
                    "(files, columns, the fields the objectives need, images).",
    )
    check.add_argument("recipe", help="a recipe file, or the name of a shipped recipe")
    check.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides, as for 'tunevl train'")
    check.add_argument("--full", action="store_true", help="decode every image (default: check every file exists, "
                                                            "decode a sample)")

    ref = sub.add_parser(
        "reference-logps", help="precompute the reference log-probs of a recipe's preference objectives",
        description="Compute the reference log-probs (base model, adapters off) of every preference objective "
                    "(dpo, svco) of a recipe on its data.train, and cache them next to the data under a key of "
                    "the data content, base model, tokenizer and chat template, processor settings and reference. "
                    "Training with precompute_ref_log_probs: true then reads them instead of running the reference.",
    )
    ref.add_argument("recipe", help="a recipe file, or the name of a shipped recipe")
    ref.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, as for 'tunevl train'")
    ref.add_argument("--batch-size", type=_positive, default=8, help="pairs per forward pass (default: 8)")
    ref.add_argument("--device", help="e.g. cuda or cpu (default: cuda when available)")
    ref.add_argument("--force", action="store_true", help="recompute even when a valid cache exists")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def run(args) -> int:
    if args.data_command == "synth":
        return _synth(args)
    if args.data_command == "reference-logps":
        return _reference_logps(args)
    if args.data_command == "counterfactuals":
        return _counterfactuals(args)
    return _check(args)


def _counterfactuals(args) -> int:
    from tunevl.data.counterfactuals import write_counterfactuals

    stats = write_counterfactuals(args.input, args.output, text_column=args.text_column, count_column=args.count_column,
                                  seed=args.seed, numbers=args.numbers, infer_count=not args.only_with_count)
    print(f"wrote {stats['rows']} rows to {args.output}: {stats['counterfactuals']} with a counterfactual, "
          f"{stats['unclear']} with a number but no clear count (they stay out of the counting loss)")
    return 0


def _synth(args) -> int:
    from tunevl.data.synthetic import SyntheticShapes, write_synthetic

    if args.kind == "contrast":
        from tunevl.data.synthetic_contrast import SyntheticContrast, write_mvc

        path = write_mvc(args.out, SyntheticContrast(args.num_samples, args.split, args.seed, args.image_size))
        print(f"wrote {args.num_samples} minimal-contrast pairs to {path}")
        print(f"read it in a recipe with:  data.train: {{_component_: preference, path: {path}}}")
        return 0
    if args.kind == "vqa":
        from tunevl.data.synthetic_vqa import SyntheticVQA, write_vqa

        jsonl = write_vqa(args.out, SyntheticVQA(num_samples=args.num_samples, split=args.split, seed=args.seed,
                                                 image_size=args.image_size))
        print(f"wrote {args.num_samples} conversations to {jsonl}")
        print(f"read it in an LVLM recipe with:  data.train: {{_component_: jsonl, path: {jsonl}}}")
        print(f"and as held-out questions:      data.eval: {{_component_: jsonl, path: {jsonl}, "
              "columns: {answer: answer, candidates: candidates}}")
        return 0
    dataset = SyntheticShapes(num_samples=args.num_samples, split=args.split, seed=args.seed, image_size=args.image_size)
    if args.kind == "shapes":
        jsonl = write_synthetic(args.out, dataset)
    else:
        jsonl = write_classification(args.out, dataset)
    print(f"wrote {args.num_samples} records to {jsonl}")
    print(f"read it in a recipe with:  data.train: {{_component_: jsonl, path: {jsonl}}}")
    if args.kind == "classification":
        print(f"or as an image folder:     {{_component_: imagefolder, path: {Path(args.out) / 'images'}}}")
    return 0


def write_classification(out_dir: str | Path, dataset) -> Path:
    """Write ``dataset`` (a :class:`~tunevl.data.synthetic.SyntheticShapes`) as a classification set.

    The class is the shape. Layout::

        out_dir/data.jsonl                 {"image": "images/<shape>/000000.png", "label": "<shape>", "text": caption}
        out_dir/images/<shape>/*.png       so out_dir/images is also an image folder (class = sub-folder)
        out_dir/meta.json                  {"generator", "kind": "classification", "config", "classnames"}

    ``label`` holds the class name; the ``jsonl`` source turns names into class indices in
    sorted order, which is the order of ``classnames`` in meta.json.
    """
    out = Path(out_dir)
    classnames = sorted(dataset.shapes)
    for name in classnames:
        (out / "images" / name).mkdir(parents=True, exist_ok=True)
    jsonl = out / "data.jsonl"
    with jsonl.open("w", encoding="utf-8") as f:
        for i in range(len(dataset)):
            _, _, shape, _ = dataset.attributes(i)
            rec = dataset[i]
            rel = f"images/{shape}/{i:06d}.png"
            rec["image"].save(out / rel, format="PNG")
            f.write(json.dumps({"image": rel, "label": shape, "text": rec["text"]}) + "\n")
    meta = {"generator": "tunevl.data.synthetic", "kind": "classification", "config": dataset.config(),
            "classnames": classnames}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return jsonl


def _check(args) -> int:
    from tunevl.config import load_recipe
    from tunevl.data.preflight import build_dataset

    recipe = load_recipe(args.recipe, args.overrides)
    recipe.validate(all_problems=True)
    objectives = recipe.build_objectives()
    for split in ("train", "eval"):
        dataset = build_dataset(recipe, split, objectives if split == "train" else (), full=args.full)
        if dataset is not None:
            classes = getattr(dataset, "classnames", None)
            print(f"data.{split}: {len(dataset)} records ok" + (f", {len(classes)} classes" if classes else ""))
    return 0


def _reference_logps(args) -> int:
    """Load the recipe's model with its adapters (the reference switches them off), score data.train, cache."""
    import torch

    from tunevl.config import load_recipe
    from tunevl.data.preflight import build_dataset
    from tunevl.models import resolve_dtype
    from tunevl.objectives.reference import prepare_reference_logps
    from tunevl.train.distributed import DistInfo
    from tunevl.train.loop import build_view

    recipe = load_recipe(args.recipe, args.overrides)
    recipe.validate()
    objectives = [o for o in recipe.build_objectives() if hasattr(o, "reference_columns")]
    if not objectives:
        raise recipe.error(("objectives",), "no preference objective (dpo, svco) to compute reference log-probs for")
    cfg = recipe.train_config()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = cfg.bf16 if cfg.bf16 is not None else (device.type == "cuda" and torch.cuda.is_bf16_supported())
    view = build_view(recipe, torch_dtype=resolve_dtype(recipe.model_config().dtype, bf16))
    view.model.to(device)
    dataset = build_dataset(recipe, "train", objectives)
    paths = prepare_reference_logps(objectives, view, dataset, recipe.model_config(), DistInfo(device=device),
                                    autocast=bf16 and not cfg.deepspeed, batch_size=args.batch_size, force=args.force,
                                    only_flagged=False)
    for objective, path in zip(objectives, paths):
        flag = "" if objective.precompute_ref_log_probs else "  (set precompute_ref_log_probs: true on it to train from them)"
        print(f"{type(objective).__name__}: {len(dataset)} records -> {path}{flag}")
    return 0
