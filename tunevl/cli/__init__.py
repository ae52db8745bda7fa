"""The ``tunevl`` command line. Each subcommand lives in its own module with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
import warnings

# subcommand -> (module, one-line help); the table a test keeps in sync with the modules.
COMMANDS = {
    "train": ("tunevl.cli.train", "train a recipe"),
    "validate": ("tunevl.cli.validate", "check a recipe without building or downloading anything"),
    "recipes": ("tunevl.cli.recipes", "list the shipped recipes"),
    "eval": ("tunevl.cli.eval", "retrieval, zero-shot, benchmarks; LVLM answer/preference accuracy, POPE"),
    "data": ("tunevl.cli.data", "synthetic sets, data checks, counterfactuals, reference log-probs"),
    "push": ("tunevl.cli.push", "upload a trained bundle and its model card to the Hugging Face Hub"),
    "merge": ("tunevl.cli.merge", "merge a bundle into its base model, loadable with plain transformers"),
    "generate": ("tunevl.cli.generate", "answer a prompt about images with a generative bundle"),
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
        command = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_parser(command)
        command.set_defaults(_command_help=command.format_help)
    return parser


def _setup_logging(command: str) -> None:
    main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if main else logging.WARNING, format="%(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for noisy in ("transformers", "DeepSpeed", "deepspeed", "torch.distributed", "bitsandbytes", "kernels"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # Deprecation notices from dependencies say nothing a tunevl user can act on.
    for module in ("transformers", "peft", "torch.distributed", "deepspeed"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    if command in LIGHT_COMMANDS:
        return  # they load no model: importing transformers would only slow them down
    import transformers

    transformers.utils.logging.disable_progress_bar()


#: Commands that never load a model (kept fast: they import no deep-learning stack of their own).
LIGHT_COMMANDS = ("validate", "recipes")


def main(argv: list[str] | None = None) -> int:
    """Run the ``tunevl`` command line; returns the exit code.

    Every error caused by the user's input or machine (tunevl's own error types, and the known
    error types of the dependencies: see :func:`tunevl.errors.user_message`) is printed as one
    line per problem, ``tunevl COMMAND: error: ...``, with exit code 2. Anything else is a bug:
    its traceback is shown, followed by a line saying so (exit code 1).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "recipe", "") is None:  # `tunevl train` alone: its usage, examples and options
        print(args._command_help(), file=sys.stderr)
        return 2
    _setup_logging(args.command)
    try:
        module = importlib.import_module(COMMANDS[args.command][0])
        return module.run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one place errors become messages
        from tunevl.errors import user_message

        message = user_message(err)
        if message is None:
            traceback.print_exc()
            print(f"tunevl {args.command}: internal error: {type(err).__name__} (a bug in tunevl, not in your input; "
                  "please report it with the traceback above)", file=sys.stderr)
            return 1
        for line in message.splitlines() or [type(err).__name__]:  # one line per problem
            print(f"tunevl {args.command}: error: {line}", file=sys.stderr)
        return 2
