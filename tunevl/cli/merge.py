"""``tunevl merge BUNDLE OUT``: write the bundle merged into its base model, for plain transformers."""

from __future__ import annotations

import argparse


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle folder or Hub repo id")
    p.add_argument("out", help="the folder to write the merged checkpoint to")
    p.add_argument("--revision", help="Hub revision of the bundle")
    p.add_argument("--base-model", help="a copy of the base model to merge into (its config must match the recorded one)")
    p.add_argument("--base-revision", help="revision of --base-model")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="dtype of the written weights (default: the base checkpoint's)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow code shipped with the base checkpoint to run")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it is not empty (never the bundle itself)")
    p.epilog = (
        "LoRA is merged into the weights; trained tensors that cannot merge (soft prompts) are kept in a\n"
        "side file, and the written model card says so.\n\n"
        "Example:\n  tunevl merge runs/quickstart merged/\n"
        "  python -c \"from transformers import CLIPModel; CLIPModel.from_pretrained('merged')\""
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args) -> int:
    from tunevl.adapters.merge import merge

    out = merge(
        args.bundle, args.out, revision=args.revision, base_model=args.base_model, base_revision=args.base_revision,
        trust_remote_code=args.trust_remote_code, dtype=args.dtype, overwrite=args.overwrite,
    )
    print(out)
    return 0
