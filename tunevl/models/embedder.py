"""A generative LVLM as an image-text embedder: two towers over one language model (VladVA, Ouali et al.
CVPR 2025, https://arxiv.org/abs/2412.04378; prompts after E5-V, https://arxiv.org/abs/2407.12580).

- **Image tower**: the image(s) and the image prompt ("Summary above image in one word:") as one user
  turn of the family's chat template, with the generation prompt, through the full LVLM (vision tower,
  projector, language model).
- **Text tower**: the caption, a newline and the text prompt ("Summary above sentence in one word:"),
  rendered the same way, through the language model alone: it never sees an image token.

The embedding is the last layer's hidden state (after the final norm, as ``hidden_states[-1]``) at the
last attended position of each sequence, found from the attention mask, so left and right padding give
the same vectors. Soft prompts named ``image`` and ``text`` (``LvlmView.soft_prompts``), when present,
take the places of the prompts' tokens (:func:`tunevl.models.chat.replace_with_soft`).

Everything here goes through the view's hooks (``render``, ``encode``, ``batch_images``, ``pad``,
``model_inputs``), so it is family-agnostic. The prompts are ``view.embedding_prompts`` (the
``adapters.embedding_prompts`` recipe node, :mod:`tunevl.adapters.embedding_prompts`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from tunevl.data.images import load_image
from tunevl.models.chat import PROMPT, tokenize_pieces

__all__ = [
    "IMAGE", "TEXT", "caption_messages", "embed_image_batch", "embed_text_batch", "hidden_states", "image_batch",
    "image_messages", "language_model", "last_token", "prompt_token_ids", "text_batch", "text_messages",
]

#: Names of the two soft prompts, as :meth:`LvlmView.soft_prompt_mask` selects them and bundles key them.
IMAGE, TEXT = "image", "text"


def image_messages(prompts, n_images: int, answer: str | None = None) -> list[dict]:
    """One user turn: ``n_images`` images then the image prompt; then ``answer`` as the assistant's turn."""
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": prompts.image_prompt}]
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


caption_messages = image_messages  # the long-caption sequences: image prompt, then the caption as the answer


def text_messages(prompts, text: str) -> list[dict]:
    """One user turn: the caption, a newline and the text prompt (E5-V's ``<sent>\\nSummary above ...``)."""
    return [{"role": "user", "content": [{"type": "text", "text": f"{text}\n{prompts.text_prompt}"}]}]


def _slots(view, name: str, text: str) -> tuple[str, int] | None:
    prompt = view.soft_prompts.get(name)
    return (text, prompt.num_tokens) if prompt is not None else None


def _prompt_name(view, name: str) -> str | None:
    return name if name in view.soft_prompts else None


def prompt_token_ids(view, name: str) -> list[int]:
    """The ids the image (``name="image"``) or text prompt takes in its sequence, tokenised in context.

    A soft prompt initialised from them makes the embedding sequence identical to the handcrafted one.
    """
    prompts = view.embedding_prompts
    if name == IMAGE:
        messages, text = image_messages(prompts, 1), prompts.image_prompt
    else:
        messages, text = text_messages(prompts, "a"), prompts.text_prompt
    rendered = view.render(_normalised(messages), add_generation_prompt=True)
    cut = rendered.rfind(text)
    if cut < 0:
        raise ValueError(f"the {view.family} chat template does not write the {name} prompt {text!r} verbatim")
    pieces = [(rendered[:cut], PROMPT), (text, PROMPT), (rendered[cut + len(text):], PROMPT)]
    return tokenize_pieces(view.tokenizer, pieces, add_special_tokens=True)[1]


def _normalised(messages: list[dict]) -> list[dict]:
    from tunevl.models.chat import normalise_messages

    return normalise_messages(messages, sum(c["type"] == "image" for m in messages for c in m["content"]))


def image_batch(view, images_per_record: Sequence[Sequence], *, answers: Sequence[str] | None = None,
                padding_side: str = "left") -> dict[str, Any]:
    """Padded [image(s) + image prompt] sequences with their pixel inputs; ``labels`` cover ``answers``
    (the long captions) when given, and are all ignored otherwise.

    With ``answers``, sequences are cut to ``model.max_length`` at the end (only caption tokens are cut;
    the image and the prompt never are).
    """
    prompts = view.embedding_prompts
    per_record = [[load_image(im) for im in images] for images in images_per_record]
    image_inputs, layouts = view.batch_images(per_record)
    slots = _slots(view, IMAGE, prompts.image_prompt)
    encoded = []
    for k, (images, layout) in enumerate(zip(per_record, layouts)):
        answer = answers[k] if answers is not None else None
        enc = view.encode(image_messages(prompts, len(images), answer), images, add_generation_prompt=answer is None,
                          image_token_counts=layout, soft_slots=slots)
        if answer is not None and view.max_length is not None and len(enc["input_ids"]) > view.max_length:
            first = next((i for i, lab in enumerate(enc["labels"]) if lab != -100), len(enc["labels"]))
            enc = {key: v[: max(view.max_length, first + 1)] for key, v in enc.items()}
        encoded.append(enc)
    batch = view.pad(encoded, padding_side)
    batch.update(image_inputs)
    return batch


def text_batch(view, texts: Sequence[str], *, padding_side: str = "left") -> dict[str, torch.Tensor]:
    """Padded [caption + text prompt] sequences: ``input_ids``, ``attention_mask``, ``soft_prompt_mask``."""
    prompts = view.embedding_prompts
    slots = _slots(view, TEXT, prompts.text_prompt)
    encoded = [view.encode(text_messages(prompts, t), [], add_generation_prompt=True, soft_slots=slots) for t in texts]
    batch = view.pad(encoded, padding_side)
    return {k: batch[k] for k in ("input_ids", "attention_mask", "soft_prompt_mask")}


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``hidden[b, t_b]`` at each row's last attended position ``t_b`` (left or right padding): ``[B, H]``."""
    width = attention_mask.shape[1]
    last = width - 1 - attention_mask.flip(1).long().argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


def language_model(view):
    """The decoder without the vision side (``language_model`` / ``text_model``: transformers' ``get_decoder``)."""
    return view.inner_model.get_decoder()


def hidden_states(view, batch: dict, name: str = IMAGE) -> torch.Tensor:
    """``[B, T, H]`` last hidden states of image sequences through the full LVLM, the ``name`` soft prompt in place."""
    with view.soft_prompt_mask(batch["soft_prompt_mask"], _prompt_name(view, name)):
        return view.inner_model(**view.model_inputs(batch), use_cache=False).last_hidden_state


def embed_image_batch(view, batch: dict) -> torch.Tensor:
    """``[B, H]`` image-tower embeddings (not normalised) of an :func:`image_batch`."""
    return last_token(hidden_states(view, batch, IMAGE), batch["attention_mask"])


def embed_text_batch(view, batch: dict) -> torch.Tensor:
    """``[B, H]`` text-tower embeddings (not normalised) of a :func:`text_batch`, through the language model
    alone. Positions count attended tokens only, so a left-padded row gets the positions of an unpadded one."""
    mask = batch["attention_mask"]
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    with view.soft_prompt_mask(batch["soft_prompt_mask"], _prompt_name(view, TEXT)):
        out = language_model(view)(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, use_cache=False)
    return last_token(out.last_hidden_state, mask)
