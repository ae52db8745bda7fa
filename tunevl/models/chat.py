"""Conversations to token ids without a family in sight: message normalisation, and the tokenisation of a
rendered conversation cut into prompt / response / soft-prompt pieces.

The rendered text is tokenised once, as the processor tokenises it, and cut at the pieces' character
boundaries through the tokenizer's offsets. So every piece tokenises exactly as it does in context, for
byte-level BPE and SentencePiece alike (Llama's tokenizer writes ``"▁three"`` after ``"ASSISTANT:"`` but
``"▁▁three"`` for ``" three"`` alone). Where a token spans a boundary, the text is tokenised in separate
segments on either side of that boundary instead.
"""

from __future__ import annotations

from tunevl.errors import DataError

#: Kinds of pieces: prompt text (unlabelled), response text (labelled) and soft-prompt slots (no text).
PROMPT, RESPONSE, SOFT = "prompt", "response", "soft"


def record_images(record: dict) -> list:
    """The images of a record: ``images`` (a list), else ``[image]``, else none."""
    images = record.get("images")
    if images is None:
        images = [record["image"]] if record.get("image") is not None else []
    elif not isinstance(images, (list, tuple)):
        images = [images]
    return list(images)


def normalise_messages(messages: list[dict], n_images: int) -> list[dict]:
    """Content as item lists; images the messages do not place go first in the first user turn."""
    out = []
    for m in messages:
        content = m["content"]
        items = [{"type": "text", "text": content}] if isinstance(content, str) else [dict(c) for c in content]
        out.append({**m, "content": items})
    placed = sum(c["type"] == "image" for m in out for c in m["content"])
    if placed == 0 and n_images:
        first_user = next((i for i, m in enumerate(out) if m["role"] == "user"), None)
        if first_user is None:
            raise DataError(f"the record has {n_images} images but no user turn to place them in")
        out[first_user]["content"] = [{"type": "image"}] * n_images + out[first_user]["content"]
    elif placed != n_images:
        raise DataError(f"the messages place {placed} images but the record has {n_images}")
    return out


def _encode(tokenizer, text: str, add_special_tokens: bool) -> list[tuple[int, int, int]]:
    """``(id, start, end)`` of each token of ``text``; special tokens the tokenizer adds have ``start == end``."""
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return [(i, s, e) for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"])]


def tokenize_pieces(tokenizer, pieces: list[tuple[str, str]], add_special_tokens: bool) -> list[list[int]]:
    """Token ids of each piece of ``pieces`` (``(text, kind)``), as the whole text tokenises in context.

    Soft-prompt pieces (no text) get no ids. Tokens the tokenizer adds before the text (bos) go to the
    first piece; tokens it adds elsewhere (zero-width), to the piece they follow.
    """
    starts, pos = [], 0
    for text, _ in pieces:
        starts.append(pos)
        pos += len(text)
    text = "".join(t for t, _ in pieces)
    tokens = _encode(tokenizer, text, add_special_tokens)
    cuts = sorted({s for s in starts[1:] if 0 < s < len(text)})
    straddled = [c for c in cuts if any(s < c < e for _, s, e in tokens)]
    if straddled:  # tokenise each side of a boundary no token respects on its own
        bounds, tokens = [0, *straddled, len(text)], []
        for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
            tokens += [(i, s + a, e + a) for i, s, e in _encode(tokenizer, text[a:b], add_special_tokens and k == 0)]
    out: list[list[int]] = [[] for _ in pieces]
    current, seen_text = 0, False
    for token_id, s, e in tokens:
        if e > s:
            seen_text = True
            current = max(i for i, (p, (t, kind)) in enumerate(zip(starts, pieces)) if kind != SOFT and t and p <= s)
        elif not seen_text:  # bos and such, before any text: the first piece, ahead of a soft prompt at the start
            current = 0
        out[current].append(token_id)
    return out


def replace_with_soft(pieces: list[tuple[str, str]], text: str) -> list[tuple[str, str]]:
    """``pieces`` with the last occurrence of ``text`` in a prompt piece replaced by a soft-prompt piece.

    A soft prompt that replaces a handcrafted prompt (VladVA's summary prompts) takes the prompt's place;
    the last occurrence is the prompt, not a caption before it that happens to contain the same words.
    """
    for k in range(len(pieces) - 1, -1, -1):
        piece, kind = pieces[k]
        cut = piece.rfind(text) if kind == PROMPT and text else -1
        if cut >= 0:
            return [*pieces[:k], (piece[:cut], kind), ("", SOFT), (piece[cut + len(text):], kind), *pieces[k + 1:]]
    raise DataError(f"the rendered prompt does not contain the text {text!r} that the soft prompt replaces")
