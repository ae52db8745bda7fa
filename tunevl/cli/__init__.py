"""The ``tunevl`` command line. Each subcommand lives in its own module with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

# subcommand -> (module, one-line help); the table a test keeps in sync with the modules.
COMMANDS = {
    "train": ("tunevl.cli.train", "train a recipe"),
    "validate": ("tunevl.cli.validate", "check a recipe without building or downloading anything"),
    "recipes": ("tunevl.cli.recipes", "list the shipped recipes"),
    "eval": ("tunevl.cli.eval", "measure retrieval recall@k and zero-shot accuracy of a bundle or model"),
    "data": ("tunevl.cli.data", "write synthetic data sets; check a recipe's data before training"),
    "push": ("tunevl.cli.push", "upload a trained bundle and its model card to the Hugging Face Hub"),
    "merge": ("tunevl.cli.merge", "merge a bundle into its base model, loadable with plain transformers"),
}


def build_parser() -> argparse.ArgumentParser:
    from tunevl import __version__

    parser = argparse.ArgumentParser(
        prog="tunevl",
        description="Parameter-efficient fine-tuning of vision-language models from one YAML recipe.",
        epilog="Run 'tunevl COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"tunevl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        importlib.import_module(module).add_parser(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _setup_logging() -> None:
    main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if main else logging.WARNING, format="%(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for noisy in ("transformers", "DeepSpeed", "deepspeed", "torch.distributed", "bitsandbytes", "kernels"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # Deprecation notices from dependencies say nothing a tunevl user can act on.
    for module in ("transformers", "peft", "torch.distributed", "deepspeed"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    import transformers

    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    from tunevl.errors import USER_ERRORS

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _setup_logging()
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return module.run(args) or 0
    except USER_ERRORS as err:
        for line in str(err).splitlines() or [type(err).__name__]:  # one line per problem
            print(f"tunevl {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
