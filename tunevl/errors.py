"""Errors that mean bad input from the user, and the one place that turns errors into one-line messages.

tunevl's own error types (:class:`RecipeError`, :class:`DataError`, :class:`BundleError`,
:class:`TrainingError`) say what is wrong and where. The dependencies raise their own types for
the same kind of problem (a model that is neither a local folder nor in the offline cache, a
truncated safetensors file, a package that is not installed, a bad peft value). :func:`user_message`
recognises those as well; the CLI prints what it returns as one line per problem and exits with
code 2. Anything else is a bug in tunevl: the CLI shows its traceback and says so.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util

from tunevl.config.errors import RecipeError


class BundleError(ValueError):
    """A bundle that cannot be loaded safely (wrong base model, unmatched adapter, newer format)."""


class UnsupportedModelError(ValueError):
    """A checkpoint no family serves: its ``config.json`` names an unsupported ``model_type`` (or one of another
    family than ``model.family``)."""


class TrainingError(RuntimeError):
    """Training stopped on a condition that needs the user's attention (for example a NaN loss)."""


class DataError(ValueError):
    """Bad training or evaluation data: a missing file or column, an unreadable image, an empty set.

    ``str()`` is one line that names where the problem is, e.g.
    ``data.jsonl:8: record 7: image: image not found: /data/images/7.png``.

    Args:
        message: What is wrong and where in the data.
        arg: The source argument at fault (``path``, ``columns.text``), when the problem is
            in the recipe node rather than in the data; ``str()`` starts with it, and
            :func:`tunevl.data.preflight.build_dataset` locates it in the recipe.
    """

    def __init__(self, message: str, *, arg: str | None = None):
        self.arg = arg
        self.detail = _one_line(str(message))
        super().__init__(f"{arg}: {self.detail}" if arg else self.detail)


def _one_line(message: str) -> str:
    # A DataLoader worker re-raises as DataError("Caught DataError in DataLoader worker ...
    # Original Traceback ..."); keep only the original message, so the CLI still prints one line.
    if message.startswith("Caught ") and "Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[-1] if ": " in last else last
    return " ".join(message.split())


USER_ERRORS = (RecipeError, BundleError, TrainingError, DataError, UnsupportedModelError)

#: Optional packages -> the pip extra that installs them.
OPTIONAL_PACKAGES = {
    "deepspeed": "deepspeed", "tensorboard": "tensorboard", "wandb": "wandb", "bitsandbytes": "qlora",
    "datasets": "data", "pyarrow": "data",
}


def install_hint(package: str) -> str:
    """``pip install 'tunevl[deepspeed]'`` for an optional package, ``pip install X`` otherwise."""
    extra = OPTIONAL_PACKAGES.get(package)
    return f"pip install 'tunevl[{extra}]'" if extra else f"pip install {package}"


def missing_package(package: str) -> bool:
    """True when ``package`` cannot be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(package) is None
    except (ImportError, ValueError):
        return True


@contextlib.contextmanager
def context(text: str):
    """Errors raised inside get ``text`` (e.g. ``"loading model.name_or_path 'x'"``) as a note, which
    :func:`user_message` puts in front of the one-line message (and a traceback shows as well)."""
    try:
        yield
    except Exception as err:
        if text not in getattr(err, "__notes__", ()):
            err.add_note(text)
        raise


def user_message(err: BaseException) -> str | None:
    """The one-line message (one line per problem) of an error caused by the user's input or machine.

    None means a bug in tunevl: the caller shows the traceback.
    """
    notes = [n for n in getattr(err, "__notes__", ()) if n]
    message = _message(err)
    if message is None:
        return None
    if notes and not isinstance(err, USER_ERRORS):
        message = f"{'; '.join(notes)}: {message}"
    return message


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:  # re-raised from a DataLoader worker
        text = [line for line in text.splitlines() if line.strip()][-1].split(": ", 1)[-1]
    line = next((part.strip() for part in text.splitlines() if part.strip()), "") or type(err).__name__
    return " ".join(line.split())


def _dependency(err: BaseException) -> str:
    """The top-level package whose code raised ``err`` (the innermost frame), or ''."""
    tb, module = err.__traceback__, ""
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "") or module
        tb = tb.tb_next
    return module.split(".")[0]


def _message(err: BaseException) -> str | None:
    if isinstance(err, RecipeError):
        return str(err)  # RecipeProblems: one line per problem
    if isinstance(err, USER_ERRORS):
        return _first_line(err) if "\n" in str(err) else str(err)
    kind = type(err)
    module = kind.__module__.split(".")[0]
    if isinstance(err, ImportError):
        package = (err.name or "").split(".")[0]
        if package in OPTIONAL_PACKAGES or package in ("torchvision", "num2words"):
            return f"the '{package}' package is needed here but is not installed: {install_hint(package)}"
        return None  # a broken installation of a required package, or a bug
    if module == "huggingface_hub":
        return f"Hugging Face Hub: {_first_line(err)}"
    if isinstance(err, MemoryError) or kind.__name__ == "OutOfMemoryError":
        return (f"out of memory ({_first_line(err)[:200]}); lower train.per_device_train_batch_size "
                "(and raise gradient_accumulation_steps), or set train.gradient_checkpointing: true")
    if isinstance(err, OSError):
        if err.filename is not None and err.strerror:
            where = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 else "")
            hint = {errno.ENOSPC: "; free some disk space", errno.EDQUOT: "; free some disk space",
                    errno.EACCES: "", errno.EROFS: ""}.get(err.errno, "")
            return f"{where}: {err.strerror.lower()}{hint}"
        return _first_line(err)
    if kind.__name__ == "SafetensorError":
        return f"a safetensors file is corrupt or truncated ({_first_line(err)})"
    if kind.__name__ == "UnpicklingError" or (isinstance(err, RuntimeError) and "PytorchStreamReader" in str(err)):
        return f"a torch file is corrupt or truncated ({_first_line(err)[:160]})"
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text ({err.reason} at byte {err.start})"
    if isinstance(err, ValueError) and _dependency(err) == "peft":
        return f"adapters: peft: {_first_line(err)}"
    if isinstance(err, ValueError) and "SchedulerType" in str(err):
        return f"train.lr_scheduler_type: {_first_line(err)}"
    return None


__all__ = [
    "BundleError", "DataError", "OPTIONAL_PACKAGES", "RecipeError", "TrainingError", "USER_ERRORS", "context",
    "UnsupportedModelError", "install_hint", "missing_package", "user_message",
]
