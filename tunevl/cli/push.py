"""``tunevl push BUNDLE --repo user/name``: upload a bundle and its model card to the Hub."""

from __future__ import annotations

import argparse


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="a bundle folder (a run's train.output_dir)")
    p.add_argument("--repo", required=True, help="the Hub model repo, user/name (a bare name goes to your namespace)")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    p.add_argument("--revision", help="branch to push to, created from main if missing (default: main)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--license", help="Hub license id for the model card (default: other, i.e. the base model's license)")
    p.epilog = (
        "The token comes from HF_TOKEN or 'hf auth login'; it is never written or logged.\n"
        "Only the bundle's top-level safetensors, JSON, YAML, markdown and loss curve are uploaded.\n\n"
        "Example:\n  tunevl push runs/quickstart --repo me/tiny-clip-shapes"
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args) -> int:
    from tunevl.hub import push

    url = push(
        args.bundle, args.repo, private=args.private, revision=args.revision, commit_message=args.message,
        license=args.license,
    )
    print(url)
    return 0
