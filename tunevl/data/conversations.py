"""Conversation records: LLaVA's ShareGPT layout read natively, and the checks every conversation passes.

Records hold conversations in the HF/TRL chat format::

    {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
                  {"role": "assistant", "content": "A cat."}],
     "images": ["cat.jpg"]}

LLaVA's own instruction data (``llava_v1_5_mix665k.json``, ShareGPT style) reads as is: a
``conversations`` column of ``{"from": "human"|"gpt"|"system", "value": text}`` turns, with
``<image>`` marking where the record's ``image`` goes (:func:`from_sharegpt`).

:func:`check_record` finds, before training and naming the record, what would otherwise stop a
run mid-epoch or train on nothing: messages that are not a list of turns, roles chat templates do
not know, text that is not a string, a conversation without an assistant turn (training), image
placeholders that do not match the record's images, and text fields that are not strings.
"""

from __future__ import annotations

from typing import Any

from tunevl.errors import DataError

#: Roles every chat template of the supported families renders.
ROLES = ("system", "user", "assistant")
#: ShareGPT speakers -> roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
#: LLaVA's image placeholder in ShareGPT text.
SHAREGPT_IMAGE = "<image>"
#: Fields that hold one text, and fields that hold a list of texts.
TEXT_FIELDS = ("text", "long_text", "system_prompt", "contrast_text")
#: Preference fields: plain text, or conversation turns (TRL's conversational preference format).
TEXT_OR_TURNS_FIELDS = ("prompt", "chosen", "rejected")
TEXT_LIST_FIELDS = ("captions", "negatives")


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:37] + '...' if len(text) > 40 else text}"


def is_sharegpt(turns: Any) -> bool:
    """True for a list of ``{"from", "value"}`` turns."""
    return isinstance(turns, list) and bool(turns) and all(isinstance(t, dict) and "from" in t for t in turns)


def from_sharegpt(turns: list[dict], where: str) -> list[dict]:
    """ShareGPT turns -> chat messages; ``<image>`` in a turn's text becomes an image item there."""
    messages = []
    for k, turn in enumerate(turns):
        speaker, value = turn.get("from"), turn.get("value")
        if speaker not in SHAREGPT_ROLES:
            raise DataError(f"{where}[{k}].from: unknown speaker {speaker!r} (ShareGPT speakers: human, gpt, system)")
        if not isinstance(value, str):
            raise DataError(f"{where}[{k}].value: expected text (a string), got {_describe(value)}")
        items: list[dict] = []
        for j, part in enumerate(value.split(SHAREGPT_IMAGE)):
            if j:
                items.append({"type": "image"})
            if part.strip():
                items.append({"type": "text", "text": part.strip()})
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": items})
    return messages


def _content_problem(content: Any, image_token: str | None) -> tuple[str, int] | None:
    """(problem, 0) or (None, image items) for one turn's content."""
    if isinstance(content, str):
        items = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        items = content
    else:
        return f"content: expected text (a string) or a list of {{type: text|image}} items, got {_describe(content)}", 0
    images = 0
    for j, item in enumerate(items):
        key = "content" if isinstance(content, str) else f"content[{j}]"
        if not isinstance(item, dict) or item.get("type") not in ("text", "image"):
            return f"{key}: expected {{type: text, text: ...}} or {{type: image}}, got {_describe(item)}", 0
        if item["type"] == "image":
            images += 1
            continue
        text = item.get("text")
        if not isinstance(text, str):
            return f"{key}: expected text (a string), got {_describe(text)}", 0
        if image_token and image_token in text:
            return (f"{key}: the text holds the image token {image_token!r}; place images with {{type: image}} items "
                    "(or use LLaVA's 'conversations' layout, where <image> marks the image)"), 0
    return None, images  # type: ignore[return-value]


def check_messages(messages: Any, num_images: int, where: str, *, need_answer: bool, image_token: str | None = None,
                   column: str = "messages") -> None:
    """Raise a :class:`DataError` naming the record and the turn when ``messages`` cannot be trained or evaluated on.

    Args:
        messages: The record's ``messages``.
        num_images: How many images the record carries (``image`` / ``images``).
        where: The record's location (``file:line: record i``).
        need_answer: Training: at least one assistant turn (something to learn from).
        image_token: The model's image placeholder text (LLaVA ``<image>``), when a model is known:
            text holding it would add image tokens no image fills.
        column: The data's name of the field, for messages.
    """
    head = f"{where}: {column}"
    if is_sharegpt(messages):
        raise DataError(f"{head}: ShareGPT turns ({{from, value}}); name the column 'conversations', which is read "
                        "as ShareGPT, or map it with columns: {conversations: <column>}")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{head}: expected a non-empty list of turns {{role, content}}, got {_describe(messages)}")
    placed = 0
    for k, turn in enumerate(messages):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise DataError(f"{head}[{k}]: expected a turn {{role, content}}, got {_describe(turn)}")
        role = turn["role"]
        if role not in ROLES:
            hint = f"; did you mean {SHAREGPT_ROLES[role]!r}?" if role in SHAREGPT_ROLES else ""
            raise DataError(f"{head}[{k}].role: {role!r} is not a role chat templates know ({', '.join(ROLES)}){hint}")
        problem, images = _content_problem(turn["content"], image_token)
        if problem:
            raise DataError(f"{head}[{k}].{problem}")
        placed += images
    if need_answer and not any(t["role"] == "assistant" for t in messages):
        raise DataError(f"{head}: no assistant turn, so nothing to learn from this record")
    if placed and placed != num_images:
        raise DataError(f"{head}: {placed} image placeholder(s) ({{type: image}} items) but the record has "
                        f"{num_images} image(s)")
    if num_images and not placed and not any(t["role"] == "user" for t in messages):
        raise DataError(f"{head}: {num_images} image(s) but no user turn to show them in")


def check_record(record: dict, where: str, columns=None, *, need_answer: bool, image_token: str | None = None) -> None:
    """The conversation and text checks of one record (fields it does not carry are not checked).

    Args:
        record: The record; image fields may hold anything (their files are checked elsewhere).
        where: Its location, for messages.
        columns: ``column(field)`` -> the data's name of a field (a source's :meth:`column`).
        need_answer: Conversations need an assistant turn (training).
        image_token: See :func:`check_messages`.
    """
    column = columns or (lambda field: field)
    for field in TEXT_FIELDS:
        value = record.get(field)
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: {column(field)}: expected text (a string), got {_describe(value)}")
    for field in TEXT_OR_TURNS_FIELDS:
        value = record.get(field)
        if value is None or isinstance(value, str):
            continue
        if not isinstance(value, list) or not all(isinstance(t, dict) and "role" in t and "content" in t for t in value):
            raise DataError(f"{where}: {column(field)}: expected text or a list of turns {{role, content}}, got "
                            f"{_describe(value)}")
    for field in TEXT_LIST_FIELDS:
        value = record.get(field)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DataError(f"{where}: {column(field)}: expected a list of texts, got {_describe(value)}")
    if record.get("messages") is not None:
        images = record.get("images")
        count = len(images) if isinstance(images, (list, tuple)) else int(images is not None)
        count = count or int(record.get("image") is not None)
        check_messages(record["messages"], count, where, need_answer=need_answer, image_token=image_token,
                       column=column("messages"))
