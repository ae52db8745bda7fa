"""``tunevl eval MODEL --data SPEC``: retrieval recall@k and zero-shot accuracy of a dual encoder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a bundle folder or Hub id; a base checkpoint folder (saved with save_pretrained); "
                                 "or a recipe, which evaluates the bundle in its train.output_dir")
    p.add_argument("--data", help="a data file or folder (the reader is picked from it), NAME:PATH with a reader name "
                                  "(karpathy:dataset_coco.json), or a YAML mapping "
                                  "'{_component_: karpathy, path: dataset_coco.json, split: test}'; "
                                  "default: the recipe's data.eval")
    p.add_argument("--data-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="an argument of the reader, e.g. --data-arg split=val --data-arg image_root=/data/coco")
    p.add_argument("--base", action="store_true", help="with a recipe: evaluate its untrained base model")
    p.add_argument("--template", action="append", dest="templates", metavar="TEMPLATE",
                   help="zero-shot prompt with {} for the class name; repeat to ensemble (default: the recipe's, "
                        "or 'a photo of a {}.')")
    p.add_argument("--no-retrieval", action="store_true", help="skip image-text retrieval")
    p.add_argument("--no-zeroshot", action="store_true", help="skip zero-shot classification")
    p.add_argument("--ks", type=int, nargs="+", help="k values of recall@k (default: 1 5 10)")
    p.add_argument("--max-samples", type=int, help="evaluate on the first N records only")
    p.add_argument("--batch-size", type=int, default=64, help="images or texts per forward pass (default: 64)")
    p.add_argument("--device", help="e.g. cuda or cpu (default: cpu)")
    p.add_argument("--revision", help="Hub revision of the bundle")
    p.add_argument("--out", help="also write the metrics as JSON to this file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.epilog = (
        "Examples:\n"
        "  tunevl eval runs/quickstart\n"
        "  tunevl eval runs/coco --data dataset_coco.json --data-arg split=test --data-arg image_root=/data/coco\n"
        "  tunevl eval runs/pets --data split_zhou_OxfordPets.json --data-arg image_root=/data/oxford_pets/images "
        "--template 'a photo of a {}, a type of pet.'"
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args) -> int:
    from tunevl.config.errors import RecipeError
    from tunevl.data.preflight import build_dataset, preflight
    from tunevl.eval import evaluate, format_table
    from tunevl.train.config import EvalConfig

    encoder, recipe = load_encoder(args.model, base=args.base, revision=args.revision, device=args.device)
    encoder.batch_size = args.batch_size
    if args.data is not None:
        dataset = preflight(open_data(args.data, args.data_arg), split="eval")
    elif recipe is not None and (recipe.tree.get("data") or {}).get("eval") is not None:
        dataset = build_dataset(recipe, "eval")
    else:
        raise FileNotFoundError("no evaluation data: pass --data (or a recipe with data.eval)")
    cfg = recipe.eval_config() if recipe is not None else EvalConfig()
    overrides = {
        "retrieval": False if args.no_retrieval else None, "zeroshot": False if args.no_zeroshot else None,
        "templates": args.templates, "ks": args.ks, "max_samples": args.max_samples,
    }
    try:
        cfg = EvalConfig(**{**vars(cfg), **{k: v for k, v in overrides.items() if v is not None}})
    except ValueError as err:
        raise RecipeError(str(err)) from None
    metrics = evaluate(encoder, dataset, cfg)
    result = {"model": args.model, "data": _describe(dataset), "metrics": metrics}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else format_table(metrics, f"{args.model} on {result['data']}"))
    return 0


def _describe(dataset) -> str:
    file = getattr(dataset, "file", None)
    return f"{file} ({len(dataset)} records)" if file else f"{type(dataset).__name__} ({len(dataset)} records)"


def load_encoder(model: str, *, base: bool = False, revision: str | None = None, device=None):
    """``(encoder, recipe or None)`` for a bundle, a base checkpoint folder or a recipe."""
    from tunevl.config import RECIPES_DIR, load_recipe
    from tunevl.errors import BundleError
    from tunevl.inference import load

    path = Path(model)
    recipe = None
    if path.suffix in (".yaml", ".yml") or (not path.exists() and (RECIPES_DIR / f"{model}.yaml").is_file()):
        recipe = load_recipe(model)
        recipe.validate()
        if base:
            encoder = _base_encoder(recipe.model_config(), recipe.embedding_prompts())
        else:
            out = Path(recipe.train_config().output_dir)
            if not (out / "tunevl.json").is_file():
                raise FileNotFoundError(f"no trained bundle in {out} (train.output_dir of {recipe.file}); "
                                        "train first, or pass --base to evaluate the untrained model")
            encoder = load(out)
    elif base:
        raise BundleError("--base needs a recipe (it evaluates the recipe's base model)")
    elif path.is_dir() and not (path / "tunevl.json").is_file() and (path / "config.json").is_file():
        from tunevl.models import ModelConfig

        encoder = _base_encoder(ModelConfig(name_or_path=model))
    else:
        encoder = load(model, revision=revision)
    if not hasattr(encoder, "embed_images") or not hasattr(encoder, "embed_texts"):
        raise BundleError(f"{model} is not a dual encoder; tunevl eval measures retrieval and zero-shot of CLIP/SigLIP models "
                          "and LVLM embedders (adapters.embedding_prompts)")
    return (encoder.to(device) if device else encoder), recipe


def _base_encoder(model_config, embedding_prompts: dict | None = None):
    from tunevl.inference import for_view
    from tunevl.models import load_view

    view = load_view(model_config)
    if embedding_prompts is not None:  # an LVLM embedder recipe: the base model with its handcrafted prompts
        from tunevl.adapters.embedding_prompts import apply_embedding_prompts

        apply_embedding_prompts(view, embedding_prompts)
    return for_view(view)


def open_data(spec: str, data_args: list[str] = ()):
    """Build a data source from ``--data`` and ``--data-arg`` values (errors name ``--data.<key>``)."""
    from tunevl.config.check import check_component
    from tunevl.config.errors import RecipeError
    from tunevl.config.yaml12 import loads_yaml, parse_scalar
    from tunevl.data import DATASETS
    from tunevl.data.sources import detect_source
    from tunevl.errors import DataError

    if spec.lstrip().startswith("{"):
        node, _ = loads_yaml(spec, file="--data")
        if not isinstance(node, dict):
            raise RecipeError("expected a mapping like '{_component_: jsonl, path: x.jsonl}'", file="--data")
    else:
        name, sep, rest = spec.partition(":")
        if sep and name in DATASETS:
            node = {"_component_": name, "path": rest}
        else:
            try:
                node = {"_component_": detect_source(spec), "path": spec}
            except DataError as err:
                raise DataError(f"--data: {err.detail}") from None
    for item in data_args:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"expected KEY=VALUE, got {item!r}", file="--data-arg")
        node[key] = parse_scalar(value)
    if node.get("_component_") in ("coco_captions", "karpathy"):
        node.setdefault("mode", "images")  # evaluation: one record per image with all its captions
    cls = check_component(node, DATASETS, key=("--data",))
    try:
        return cls(**{k: v for k, v in node.items() if k != "_component_"})
    except DataError as err:
        if err.arg:
            raise DataError(f"--data.{err.arg}: {err.detail}") from None
        raise
