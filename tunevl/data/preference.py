"""Preference pairs for LVLMs, read natively: TRL's preference format and S-VCO's MVC (FORMATS.md §7, §8).

Every pair becomes one canonical record::

    {"images":          [image, ...],   # the prompt's images (MVC: chosen_images); [] for text-only pairs
     "contrast_images": [image, ...],   # MVC only: rejected_images, the minimally different images
     "prompt":   [system?, user...],    # messages; content as item lists with {"type": "image"} placeholders
     "chosen":   [assistant],           # the preferred response (MVC: the one matching "images")
     "rejected": [assistant],           # the other response (MVC: the one matching "contrast_images")
     "messages": prompt + chosen,       # the chosen conversation: next-token training and length checks
     "index": i}

The objectives turn a canonical record into conversations (:func:`dpo_conversations`,
:func:`svco_conversations`) and tokenise them through the view, the same path as next-token
training. TRL records are conversational or plain strings, with an explicit or an implicit
prompt (the longest common prefix of turns, as ``trl.extract_prompt``); plain prompts get their
images before the text, as ``trl.prepare_multimodal_messages`` places them. MVC puts the
instruction text before its images, as the official collator does.
"""

from __future__ import annotations

from typing import Any

from tunevl.errors import DataError

#: MVC column -> canonical field (s-vco/s-vco ``data_collator.py``).
MVC_COLUMNS = {
    "images": "chosen_images", "contrast_images": "rejected_images", "prompt": "instruction_prompt",
    "chosen": "chosen_response", "rejected": "rejected_response",
}
#: Fields of a canonical preference record (besides ``index``).
PREFERENCE_FIELDS = ("images", "contrast_images", "prompt", "chosen", "rejected", "messages")


def _items(content, where: str, key: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, (list, tuple)) and all(isinstance(c, dict) and c.get("type") in ("text", "image") for c in content):
        # Readers of arrow data fill absent struct keys with None; keep only what each item means.
        return [{"type": "image"} if c["type"] == "image" else {"type": "text", "text": c.get("text") or ""} for c in content]
    raise DataError(f"{where}: {key}: a message content must be a string or a list of "
                    f"{{'type': 'text'|'image'}} items, got {str(content)[:60]!r}")


def _messages(value, where: str, key: str) -> list[dict]:
    """Conversational ``value`` as messages with item-list contents."""
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(f"{where}: {key}: expected a non-empty list of messages, got {str(value)[:60]!r}")
    out = []
    for m in value:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise DataError(f"{where}: {key}: each message needs a role (system, user or assistant), got {str(m)[:60]!r}")
        out.append({"role": m["role"], "content": _items(m.get("content"), where, key)})
    return out


def _conversational(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def _common_prefix(chosen: list[dict], rejected: list[dict]) -> int:
    """Turns shared by both conversations (the implicit prompt, as ``trl.extract_prompt`` finds it)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    return n


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def normalise_preference(record: dict, where: str = "record", *, text_first: bool = False) -> dict[str, Any]:
    """A canonical preference record (module docstring) from a TRL or MVC-mapped record.

    Args:
        record: Fields ``chosen``, ``rejected``; optional ``prompt``, ``images`` (or ``image``),
            ``contrast_images``, ``system_prompt``; other fields are kept.
        where: Location for errors.
        text_first: Place the images after a plain prompt's text (MVC) instead of before it (TRL).

    Raises:
        DataError: naming ``where`` and the field.
    """
    for key in ("chosen", "rejected"):
        if record.get(key) is None:
            raise DataError(f"{where}: a preference pair needs '{key}'")
    images = _as_list(record.get("images") if record.get("images") is not None else record.get("image"))
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if _conversational(chosen) != _conversational(rejected):
        raise DataError(f"{where}: chosen and rejected must both be messages or both be strings")
    if _conversational(chosen):
        chosen, rejected = _messages(chosen, where, "chosen"), _messages(rejected, where, "rejected")
        if prompt is None or (isinstance(prompt, str) and not prompt):  # implicit prompt: the shared turns
            n = _common_prefix(chosen, rejected)
            prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
        elif isinstance(prompt, str):
            prompt = [{"role": "user", "content": _items(prompt, where, "prompt")}]
        else:
            prompt = _messages(prompt, where, "prompt")
    else:
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise DataError(f"{where}: chosen and rejected must be strings or lists of messages")
        if prompt is None:
            raise DataError(f"{where}: plain-text preference pairs need a 'prompt'")
        prompt = [{"role": "user", "content": _items(prompt, where, "prompt")}] if isinstance(prompt, str) else _messages(prompt, where, "prompt")
        chosen = [{"role": "assistant", "content": _items(chosen, where, "chosen")}]
        rejected = [{"role": "assistant", "content": _items(rejected, where, "rejected")}]
    if not prompt or prompt[-1]["role"] != "user":
        raise DataError(f"{where}: prompt: expected messages ending with a user turn")
    for key, turns in (("chosen", chosen), ("rejected", rejected)):
        if not turns or any(m["role"] != "assistant" for m in turns):
            raise DataError(f"{where}: {key}: after the prompt, expected assistant turns only, got "
                            f"{[m['role'] for m in turns] or 'nothing'}")
    system = record.get("system_prompt")
    if system and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": [{"type": "text", "text": system}]}, *prompt]
    placed = sum(c["type"] == "image" for m in prompt for c in m["content"])
    if placed == 0 and images:
        first_user = next(i for i, m in enumerate(prompt) if m["role"] == "user")
        marks = [{"type": "image"}] * len(images)
        content = prompt[first_user]["content"]
        prompt[first_user] = {**prompt[first_user], "content": content + marks if text_first else marks + content}
    elif placed != len(images):
        raise DataError(f"{where}: the prompt places {placed} images but the pair has {len(images)}")
    out = {k: v for k, v in record.items() if k not in ("image", "system_prompt")}
    out.update(images=images, prompt=prompt, chosen=chosen, rejected=rejected, messages=prompt + chosen)
    if record.get("contrast_images") is not None:
        contrast = _as_list(record["contrast_images"])
        if len(contrast) != len(images) or not images:
            raise DataError(f"{where}: contrast_images: expected as many images as images ({len(images)}), got {len(contrast)}")
        out["contrast_images"] = contrast
    return out


# ---- conversations the objectives score ------------------------------------------------------
def _without_images(messages: list[dict]) -> list[dict]:
    return [{**m, "content": [c for c in m["content"] if c["type"] != "image"]} for m in messages]


def dpo_conversations(record: dict) -> list[dict]:
    """``[chosen, rejected]`` conversation records (same prompt and images)."""
    images = list(record.get("images") or [])
    return [{"messages": record["prompt"] + record[k], "images": images, "index": record.get("index", -1)}
            for k in ("chosen", "rejected")]


#: Conversations of :func:`svco_conversations` with images, and which image set each shows.
SVCO_WITH_IMAGE = (
    ("chosen_with_chosen_image", "chosen", "images"), ("chosen_with_rejected_image", "chosen", "contrast_images"),
    ("rejected_with_rejected_image", "rejected", "contrast_images"), ("rejected_with_chosen_image", "rejected", "images"),
)
SVCO_WITHOUT_IMAGE = (("chosen_without_image", "chosen"), ("rejected_without_image", "rejected"))


def svco_conversations(record: dict) -> tuple[dict[str, dict], dict[str, dict]]:
    """The six S-VCO conversations of a pair: four with an image set, two with none (no image tokens at all).

    Keys are :data:`tunevl.losses.preference.SVCO_KEYS`; the no-image ones keep the system and
    instruction text and drop only the image placeholders (as the official collator does).
    """
    where = f"record {record.get('index', '?')}"
    if not record.get("contrast_images"):
        raise DataError(f"{where}: S-VCO needs contrast_images (MVC's rejected_images): the image matching 'rejected'")
    index = record.get("index", -1)
    with_image = {name: {"messages": record["prompt"] + record[response], "images": list(record[images]), "index": index}
                  for name, response, images in SVCO_WITH_IMAGE}
    prompt = _without_images(record["prompt"])
    without = {name: {"messages": prompt + record[response], "images": [], "index": index}
               for name, response in SVCO_WITHOUT_IMAGE}
    return with_image, without


# ---- the reader -------------------------------------------------------------------------------
class PreferenceSource:
    """Preference pairs from a file or folder, in TRL's preference format or S-VCO's MVC.

    Reads whatever :func:`tunevl.data.sources.detect_source` reads (JSONL, a JSON list such as
    ``mvc_train.json``, parquet, a ``save_to_disk`` folder, CSV). The format is told from the
    columns: ``chosen``/``rejected`` (TRL: ``images`` or ``image``, ``prompt`` conversational or a
    string, or an implicit prompt shared by both conversations) or ``chosen_response``/
    ``rejected_response`` (MVC: ``chosen_images``, ``rejected_images``, ``system_prompt``,
    ``instruction_prompt``). Every pair is checked when the file is read; a malformed one is a
    one-line error naming its file, line and field. Records are canonical (module docstring).

    Args:
        path: The data file or folder.
        columns: Extra field -> column mapping on top of the format's own (e.g. ``{prompt: question}``
            for RLAIF-V's raw parquet).
        image_root: Folder for relative image paths (default: the data file's folder).
        split: The split of a ``save_to_disk`` DatasetDict.
        max_bad_images: Pairs with missing or unreadable images that pre-flight may drop.
    """

    def __init__(self, path: str, columns: dict[str, str | None] | None = None, image_root: str | None = None,
                 split: str | None = None, max_bad_images: int = 0):
        self.kind = "trl"
        inner = self._open(path, columns, image_root, split, max_bad_images)
        have = inner.columns
        if "chosen" not in have and "rejected" not in have:
            self.kind = "mvc"
            mapping = dict(MVC_COLUMNS, system_prompt="system_prompt" if "system_prompt" in have else None)
            inner = self._open(path, {**mapping, **(columns or {})}, image_root, split, max_bad_images)
        elif "images" not in have and "image" in have:  # TRL's single-image column
            inner = self._open(path, {"images": have["image"], "image": None, **(columns or {})}, image_root, split, max_bad_images)
        self.inner = inner
        self.file, self.columns, self.max_bad_images = inner.file, inner.columns, inner.max_bad_images
        self.classnames = None
        for i in range(len(inner)):  # check every pair now, not mid-run
            record = self[i]
        self.has_contrast = len(inner) > 0 and "contrast_images" in record

    @staticmethod
    def _open(path, columns, image_root, split, max_bad_images):
        from tunevl.data.sources import SOURCES, detect_source

        name = detect_source(path)
        kwargs = dict(columns=columns, image_root=image_root, max_bad_images=max_bad_images)
        if name == "load_from_disk":
            kwargs["split"] = split
        elif name not in ("jsonl", "parquet", "csv"):
            raise DataError(f"preference pairs are read from JSONL, JSON, parquet, CSV or save_to_disk data; "
                            f"{path} reads as {name}", arg="path")
        return SOURCES[name](path, **kwargs)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.inner[i]
        return normalise_preference(record, self.inner.location(record["index"]), text_first=self.kind == "mvc")

    def location(self, i: int) -> str:
        return self.inner.location(i)

    def column(self, field: str) -> str:
        return self.inner.column(field)

    def first_missing(self, field: str) -> int | None:
        if field in ("images", "prompt", "chosen", "rejected", "messages"):
            return None  # every checked pair has them (images may be empty)
        if field == "contrast_images":
            return None if self.has_contrast else 0
        return self.inner.first_missing(field)

    def image_files(self):
        return self.inner.image_files()

    def __repr__(self) -> str:
        return f"PreferenceSource({self.file!r}, {self.kind}, {len(self)} pairs)"
