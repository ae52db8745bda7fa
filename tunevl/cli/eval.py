"""``tunevl eval MODEL --data SPEC``: retrieval recall@k and zero-shot accuracy of a dual encoder; answer
accuracy, image-grounded preference accuracy or POPE of a generative LVLM (by what the records carry).
``tunevl eval MODEL --benchmark NAME --data PATH``: a compositional or counting benchmark."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a bundle folder or Hub id; a base model (a built-in such as tiny-clip, a Hub id or a "
                                 "folder saved with save_pretrained); or a recipe, which evaluates the bundle in its "
                                 "train.output_dir")
    p.add_argument("--data", help="a data file or folder (the reader is picked from it), NAME:PATH with a reader name "
                                  "(karpathy:dataset_coco.json), or a YAML mapping "
                                  "'{_component_: karpathy, path: dataset_coco.json, split: test}'; "
                                  "default: the data.eval of the recipe (or of the bundle's recipe.yaml)")
    p.add_argument("--data-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="an argument of the reader, e.g. --data-arg split=val --data-arg image_root=/data/coco")
    p.add_argument("--benchmark", metavar="NAME",
                   help="run a benchmark on its released files instead: sugarcrepe, aro_vg_relation, aro_vg_attribution, "
                        "aro_coco_order, aro_flickr_order, winoground, mmvp_vlm, countbench (--data is its file or "
                        "folder, --data-arg its other arguments such as image_root=...), or synthetic_counting, "
                        "synthetic_binding (no files)")
    p.add_argument("--base", action="store_true", help="with a recipe: evaluate its untrained base model")
    p.add_argument("--template", action="append", dest="templates", metavar="TEMPLATE",
                   help="zero-shot prompt with {} for the class name; repeat to ensemble (default: the recipe's, "
                        "or 'a photo of a {}.'); bundles with learned prompts (CoOp, CoCoOp) use those")
    p.add_argument("--no-retrieval", action="store_true", help="skip image-text retrieval")
    p.add_argument("--no-zeroshot", action="store_true", help="skip zero-shot classification")
    p.add_argument("--base-to-new", action="store_true",
                   help="also report CoCoOp's base-to-new accuracies (first half of the classes vs the rest) and their "
                        "harmonic mean")
    p.add_argument("--ks", type=int, nargs="+", help="k values of recall@k (default: 1 5 10)")
    p.add_argument("--max-samples", type=int, help="evaluate on the first N records only")
    p.add_argument("--batch-size", type=int, default=64, help="images or texts per forward pass (default: 64)")
    p.add_argument("--device", default="auto", help="e.g. cuda, cuda:1 or cpu (default: auto, a GPU when there is one)")
    p.add_argument("--revision", help="Hub revision of the bundle")
    p.add_argument("--out", help="also write the metrics as JSON to this file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.epilog = (
        "Examples:\n"
        "  tunevl eval runs/quickstart\n"
        "  tunevl eval runs/coco --data dataset_coco.json --data-arg split=test --data-arg image_root=/data/coco\n"
        "  tunevl eval runs/pets --data split_zhou_OxfordPets.json --data-arg image_root=/data/oxford_pets/images "
        "--template 'a photo of a {}, a type of pet.'\n"
        "  tunevl eval runs/svco_llava --data pope:coco_pope_random.json --data-arg image_root=/data/coco/val2014\n"
        "  tunevl eval runs/svco_llava --data preference:mvc_val.json\n"
        "  tunevl eval runs/negclip --benchmark sugarcrepe --data sugar-crepe/data --data-arg image_root=coco/val2017\n"
        "  tunevl eval openai-clip-folder/ --benchmark countbench --data CountBench.json "
        "--data-arg image_root=countbench_images --out results/countbench.json"
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args) -> int:
    from tunevl.config.errors import RecipeError
    from tunevl.data.preflight import build_dataset, preflight
    from tunevl.errors import DataError
    from tunevl.eval import evaluate, format_table
    from tunevl.train.config import EvalConfig

    encoder, recipe = load_encoder(args.model, base=args.base, revision=args.revision, device=args.device)
    encoder.batch_size = args.batch_size
    if args.benchmark is not None:
        return run_benchmark(args, encoder)
    data = (recipe.tree.get("data") or {}) if recipe is not None else {}
    if args.data is not None:
        dataset = preflight(open_data(args.data, args.data_arg), split="eval")
    elif data.get("eval") is not None or (data.get("train") or {}).get("eval_split") is not None:
        dataset = build_dataset(recipe, "eval")
    else:
        where = f" (its recipe {recipe.file} has no data.eval)" if recipe is not None else ""
        raise DataError(f"{args.model}: no evaluation data{where}; pass --data")
    cfg = recipe.eval_config() if recipe is not None else EvalConfig()
    overrides = {
        "retrieval": False if args.no_retrieval else None, "zeroshot": False if args.no_zeroshot else None,
        "templates": args.templates, "ks": args.ks, "max_samples": args.max_samples,
        "base_to_new": True if args.base_to_new else None,
    }
    try:
        cfg = EvalConfig(**{**vars(cfg), **{k: v for k, v in overrides.items() if v is not None}})
    except ValueError as err:
        raise RecipeError(str(err)) from None
    metrics = evaluate(getattr(encoder, "view", encoder) if not hasattr(encoder, "embed_images") else encoder,
                       dataset, cfg)
    result = {"model": args.model, "data": _describe(dataset), "metrics": metrics}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else format_table(metrics, f"{args.model} on {result['data']}"))
    return 0


def run_benchmark(args, encoder) -> int:
    """``--benchmark NAME``: read the benchmark (``--data`` is its ``path``), score, print; with ``--out`` the JSON
    and any confusion matrix PNG (``<out stem>_<name>_confusion.png``) are written."""
    from tunevl.config.yaml12 import parse_scalar
    from tunevl.errors import DataError
    from tunevl.eval import format_table
    from tunevl.eval.benchmarks import build_benchmark, run_benchmarks, save_plots

    node = {"_component_": args.benchmark}
    if args.data is not None:
        node["path"] = args.data
    for item in args.data_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            from tunevl.config.errors import RecipeError

            raise RecipeError(f"expected KEY=VALUE, got {item!r}", file="--data-arg")
        node[key] = parse_scalar(value)
    if args.max_samples is not None:
        node["max_samples"] = args.max_samples
    try:
        bench = build_benchmark(node, key=("--benchmark",))
    except DataError as err:
        field = (err.arg or "").partition(".")[2]
        if not field:
            raise
        raise DataError(err.detail, arg="--data" if field == "path" else f"--data-arg {field}") from None
    metrics = run_benchmarks(encoder, [bench])
    result = {"model": args.model, "benchmark": args.benchmark, "data": args.data, "metrics": metrics}
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        save_plots(metrics, out.parent, prefix=f"{out.stem}_")
    shown = {k: v for k, v in metrics.items() if not isinstance(v, list)}
    print(json.dumps(result, indent=2) if args.json else format_table(shown, f"{args.model} on {bench}"))
    return 0


def _describe(dataset) -> str:
    file = getattr(dataset, "file", None)
    return f"{file} ({len(dataset)} records)" if file else f"{type(dataset).__name__} ({len(dataset)} records)"


def load_encoder(model: str, *, base: bool = False, revision: str | None = None, device="auto"):
    """``(inference object, recipe or None)`` for a bundle, a base model or a recipe.

    A bundle's own ``recipe.yaml`` is returned with it (its ``data.eval`` is the default data). A
    built-in model name, a checkpoint folder without ``tunevl.json`` or a Hub repo that is not a
    bundle is evaluated as a base model.
    """
    from tunevl.adapters.card import _builtin
    from tunevl.config import RECIPES_DIR, load_recipe
    from tunevl.errors import BundleError
    from tunevl.inference import load, resolve_device

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
                raise BundleError(f"no trained bundle in {out} (train.output_dir of {recipe.file}); "
                                  "train first, or pass --base to evaluate the untrained model")
            encoder = load(out, device="cpu")
    elif base:
        raise BundleError("--base needs a recipe (it evaluates the recipe's base model)")
    elif _builtin(model) or (path.is_dir() and not (path / "tunevl.json").is_file() and (path / "config.json").is_file()):
        encoder = _base_encoder(_model_config(model))
    else:
        try:
            encoder = load(model, revision=revision, device="cpu")
        except BundleError as err:
            if "not a tunevl bundle" not in str(err) or path.exists():
                raise
            encoder = _base_encoder(_model_config(model, revision))  # a Hub model that is not a bundle
        if (path / "recipe.yaml").is_file():
            recipe = load_recipe(path / "recipe.yaml")
    if not hasattr(encoder, "embed_images") and not hasattr(getattr(encoder, "view", None), "sequence_logps"):
        raise BundleError(f"{model}: tunevl eval measures dual encoders (retrieval, zero-shot) and generative "
                          "models (answer accuracy); this is neither")
    return encoder.to(resolve_device(device)), recipe


def _model_config(name: str, revision: str | None = None):
    from tunevl.models import ModelConfig

    return ModelConfig(name_or_path=name, revision=revision)


def _base_encoder(model_config, embedding_prompts: dict | None = None):
    from tunevl.errors import context
    from tunevl.inference import for_view
    from tunevl.models import load_view

    with context(f"loading base model {model_config.name_or_path!r}"):
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
    from tunevl.config.schema import KINDS

    cls = check_component(node, DATASETS, key=("--data",), kind=KINDS["data"])
    try:
        return cls(**{k: v for k, v in node.items() if k != "_component_"})
    except DataError as err:
        if err.arg:
            raise DataError(f"--data.{err.arg}: {err.detail}") from None
        raise
