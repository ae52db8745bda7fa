"""Learned text prompts for dual encoders: CoOp (Zhou et al. 2022, https://arxiv.org/abs/2109.01134) and
CoCoOp (Zhou et al. 2022, https://arxiv.org/abs/2203.05557).

A class prompt is ``[specials] ctx_1 .. ctx_M classname . [specials]`` at the token-embedding level
(OBJECTIVES.md section 4). The prompt is tokenised by the family's own tokenizer with placeholder
words where the context goes, so special tokens, padding (SigLIP: ``max_length``) and truncation are
the family's; a forward hook on the text tower's token-embedding module then puts the context vectors
at the placeholder positions (HF CLIP's text model takes no ``inputs_embeds``). The placeholders are
an ordinary word of the vocabulary, never a new token: CLIP configs with ``eos_token_id == 2`` (the
OpenAI checkpoints) pool at ``input_ids.argmax()``, and a new token with a larger id than eos would
become the pooled position (PITFALLS.md).

* **CoOp**: M context vectors, one set for all classes (unified) or one per class (class-specific,
  ``class_specific: true``), with the class name at the end, in the middle (``ctx[:M//2] name
  ctx[M//2:]``) or at the front; initialised ``N(0, 0.02)`` or from the embeddings of ``init_text``.
* **CoCoOp**: unified context plus a meta-net ``Linear(D, D//16) -> ReLU -> Linear(D//16, d)`` of the
  normalised image feature, whose output shifts every context vector of that image's prompts. All
  ``B x C`` prompts of a micro-batch go through the text tower in one forward, padded to the longest
  class prompt (not to 77 positions as the reference does), instead of one forward per image.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

CLASS_POSITIONS = ("end", "middle", "front")
#: Words tried as placeholders, in order; the first that is one token on its own and in a row is used.
PLACEHOLDER_WORDS = ("X", "x", "a", "the", "*")


@dataclass
class CoOpConfig:
    """The ``adapters.coop`` recipe node: CoOp's learnable context.

    Args:
        num_tokens: Context length M. None: 16, or the token count of ``init_text``. With
            ``init_text``, a different number truncates it or repeats it cyclically.
        init_text: Initialise the context from the token embeddings of this text (e.g.
            ``"a photo of a"``); random ``N(0, init_std)`` when omitted.
        class_specific: One context per class (CSC) instead of one for all classes; such a
            bundle classifies the training classes only.
        class_position: Where the class name goes: ``end``, ``middle`` or ``front``.
        init_std: Standard deviation of the random initialisation.
    """

    num_tokens: int | None = None
    init_text: str | None = None
    class_specific: bool = False
    class_position: Literal["end", "middle", "front"] = "end"
    init_std: float = 0.02

    def __post_init__(self):
        _check_common(self.num_tokens, self.class_position, self.init_std)


@dataclass
class CoCoOpConfig:
    """The ``adapters.cocoop`` recipe node: CoCoOp's context conditioned on the image.

    Args:
        num_tokens: Context length M. None: the token count of ``init_text`` (4 for the default).
        init_text: Initialise the context from these words' embeddings; None: random ``N(0, init_std)``
            (then ``num_tokens`` is required).
        class_position: Where the class name goes: ``end``, ``middle`` or ``front``.
        init_std: Standard deviation of the random initialisation.
        bottleneck: The meta-net's hidden width is the image-feature width divided by this.
    """

    num_tokens: int | None = None
    init_text: str | None = "a photo of a"
    class_position: Literal["end", "middle", "front"] = "end"
    init_std: float = 0.02
    bottleneck: int = 16

    def __post_init__(self):
        _check_common(self.num_tokens, self.class_position, self.init_std)
        if self.num_tokens is None and self.init_text is None:
            raise ValueError("give num_tokens, init_text or both")
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {self.bottleneck}")


def _check_common(num_tokens, position, std) -> None:
    if num_tokens is not None and num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    if position not in CLASS_POSITIONS:
        raise ValueError(f"class_position must be one of {', '.join(CLASS_POSITIONS)}, got {position!r}")
    if not std > 0:
        raise ValueError(f"init_std must be > 0, got {std}")


@dataclass
class ClassPrompts:
    """Tokenised class prompts: ``input_ids`` (and ``attention_mask``) ``[C, T]``, ``slots [C, T]`` (the
    context index at placeholder positions, -1 elsewhere) and ``rows [C]`` (the context set of each
    class: 0 for a unified context, the trained class index for class-specific contexts)."""

    classnames: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    slots: torch.Tensor
    rows: torch.Tensor

    def subset(self, start: int, stop: int) -> "ClassPrompts":
        """Classes ``start:stop``."""
        mask = self.attention_mask[start:stop] if self.attention_mask is not None else None
        return ClassPrompts(self.classnames[start:stop], self.input_ids[start:stop], mask, self.slots[start:stop],
                            self.rows[start:stop])

    def to(self, device) -> "ClassPrompts":
        if self.input_ids.device == torch.device(device):
            return self
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ClassPrompts(self.classnames, move(self.input_ids), move(self.attention_mask), move(self.slots), move(self.rows))


class TextPrompts(nn.Module):
    """The learned context: ``ctx`` ``[M, d]`` (``[C, M, d]`` class-specific) and CoCoOp's ``meta_net``.

    Calling the module returns the context sets ``[R, M, d]``: R = 1 (unified), C (class-specific) or B
    (CoCoOp, one per image of ``image_embeds``). It owns the hook that swaps them into the text tower.
    """

    def __init__(self, num_tokens: int, dim: int, *, position: str = "end", class_specific: bool = False,
                 image_dim: int | None = None, bottleneck: int = 16):
        super().__init__()
        self.num_tokens, self.dim, self.position, self.class_specific = num_tokens, dim, position, class_specific
        self.kind = "coop" if image_dim is None else "cocoop"
        # Class-specific contexts get their rows once the classes are known (bind_classnames).
        self.ctx = nn.Parameter(torch.zeros((0, num_tokens, dim) if class_specific else (num_tokens, dim)))
        self.meta_net = None
        if image_dim is not None:
            hidden = max(image_dim // bottleneck, 1)
            self.meta_net = nn.Sequential(OrderedDict(
                linear1=nn.Linear(image_dim, hidden), relu=nn.ReLU(inplace=True), linear2=nn.Linear(hidden, dim)))
        self.classnames: list[str] | None = None
        self.init_std = 0.02
        self.init_vectors: torch.Tensor | None = None  # words init, for class-specific rows
        self.enabled = True
        self._swap: tuple | None = None
        self._prompt_cache: dict[tuple, ClassPrompts] = {}
        # set by attach: the family's tokenize function, tokenizer and text pooling rule
        self._tokenize = self._tokenizer = self._pool_positions = None
        self._device = torch.device("cpu")

    # ---- parameters ----------------------------------------------------------------------------
    def bind_classnames(self, classnames: list[str]) -> None:
        """Record the training classes; class-specific contexts get one row per class here."""
        classnames = list(classnames)
        if self.class_specific:
            if self.ctx.shape[0] and self.classnames != classnames:
                raise ValueError("class-specific contexts are already bound to other class names")
            if not self.ctx.shape[0]:
                shape = (len(classnames), self.num_tokens, self.dim)
                if self.init_vectors is not None:
                    init = self.init_vectors.float().expand(shape).clone()
                else:
                    init = torch.randn(shape) * self.init_std
                self.ctx = nn.Parameter(init.to(self._device), requires_grad=self.ctx.requires_grad)
        self.classnames = classnames

    def forward(self, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if not self.ctx.shape[0]:
            raise RuntimeError("class-specific contexts have no classes yet (bind_classnames)")
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0)
        if self.meta_net is None:
            return ctx.clone()  # a copy: it outlives ZeRO-3 releasing the gathered parameter
        if image_embeds is None:
            raise ValueError("CoCoOp prompts need the image features")
        shift = self.meta_net(image_embeds.to(ctx.dtype))  # [B, d]
        return ctx + shift.unsqueeze(1)

    # ---- prompts -------------------------------------------------------------------------------
    def class_prompts(self, classnames: list[str]) -> ClassPrompts:
        """The tokenised prompts of ``classnames`` (cached per list of names)."""
        key = tuple(classnames)
        if key not in self._prompt_cache:
            rows = torch.zeros(len(classnames), dtype=torch.long)
            if self.class_specific:
                known = {name: i for i, name in enumerate(self.classnames or [])}
                unknown = [c for c in classnames if c not in known]
                if unknown:
                    raise ValueError(f"class-specific contexts exist only for the {len(known)} training classes; "
                                     f"no context for {unknown[0]!r}" + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""))
                rows = torch.tensor([known[c] for c in classnames], dtype=torch.long)
            ids, mask, slots = tokenize_class_prompts(self._tokenize, self._tokenizer, classnames, self.num_tokens,
                                                      self.position)
            pooled = self._pool_positions(ids)
            if (slots.gather(1, pooled.unsqueeze(1)) >= 0).any():  # a context vector would become the text feature
                raise ValueError("the text tower would pool a prompt position; this tokenizer's placeholder word does not fit")
            self._prompt_cache[key] = ClassPrompts(list(classnames), ids, mask, slots, rows)
        return self._prompt_cache[key]

    def encode(self, view, prompts: ClassPrompts, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Unit text embeddings of the class prompts: ``[C, D]``, or ``[B, C, D]`` for CoCoOp."""
        device = image_embeds.device if image_embeds is not None else view_device(view)
        prompts = prompts.to(device)
        vectors = self(image_embeds)
        ids, mask, slots, rows = prompts.input_ids, prompts.attention_mask, prompts.slots, prompts.rows
        per_image = self.meta_net is not None
        if per_image:  # every image's context with every class: one forward of B x C prompts
            b, c = vectors.shape[0], ids.shape[0]
            ids, slots = ids.repeat(b, 1), slots.repeat(b, 1)
            mask = mask.repeat(b, 1) if mask is not None else None
            rows = torch.arange(b, device=device).repeat_interleave(c)
        with self.swapping(vectors, rows, slots):
            feats = view.encode_texts(ids, mask)
        return feats.reshape(b, c, -1) if per_image else feats

    @contextlib.contextmanager
    def swapping(self, vectors: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor):
        """Within the context, token embeddings at ``slots >= 0`` become ``vectors[rows, slots]``."""
        previous, self._swap = self._swap, (vectors, rows, slots)
        try:
            yield
        finally:
            self._swap = previous

    def _after_token_embedding(self, module, args, output):
        if self._swap is None or not self.enabled:
            return output
        vectors, rows, slots = self._swap
        if output.shape[:2] != slots.shape:
            raise RuntimeError(f"prompt slots {tuple(slots.shape)} do not match the token embeddings {tuple(output.shape[:2])}")
        picked = vectors[rows.unsqueeze(1), slots.clamp(min=0)]  # [N, T, d]
        return torch.where((slots >= 0).unsqueeze(-1), picked.to(output.dtype), output)


def view_device(view) -> torch.device:
    return next(view.base_model.text_model.parameters()).device


def placeholder_word(tokenizer) -> str:
    """A word that is one token on its own and when repeated (so each placeholder is one position)."""
    for word in PLACEHOLDER_WORDS:
        one = tokenizer(word, add_special_tokens=False)["input_ids"]
        three = tokenizer(" ".join([word] * 3), add_special_tokens=False)["input_ids"]
        if len(one) == 1 and three == one * 3:
            return word
    raise ValueError(f"none of {PLACEHOLDER_WORDS} is a single token of this tokenizer; cannot place prompt tokens")


def tokenize_class_prompts(tokenize, tokenizer, classnames: list[str], num_tokens: int, position: str):
    """``(input_ids, attention_mask or None, slots)`` of the prompts ``X .. X name.`` (per ``position``).

    The text is tokenised by the family's ``tokenize`` (its special tokens, padding and truncation);
    the placeholder positions are found by matching the expected token sequence of the prompt's
    content, built piece by piece, inside each row.

    Raises:
        ValueError: a prompt does not fit the text length, or the tokenizer merges across pieces.
    """
    word = placeholder_word(tokenizer)
    ph = tokenizer(word, add_special_tokens=False)["input_ids"][0]
    half = num_tokens // 2
    texts, contents = [], []
    for name in classnames:
        name_ids = tokenizer(name, add_special_tokens=False)["input_ids"]
        with_dot = tokenizer(name + ".", add_special_tokens=False)["input_ids"]
        if with_dot[: len(name_ids)] == name_ids:
            dot = with_dot[len(name_ids):]
        else:  # the tokenizer merges the period into the name: keep them together
            name_ids, dot = with_dot, []
        name_text = name if dot else name + "."
        ctx = lambda n: " ".join([word] * n)  # noqa: E731
        if position == "end":
            parts = [(ctx(num_tokens), [ph] * num_tokens, 0), (name_text, name_ids, None)]
        elif position == "middle":
            parts = [(ctx(half), [ph] * half, 0), (name_text, name_ids, None),
                     (ctx(num_tokens - half), [ph] * (num_tokens - half), half)]
        else:
            parts = [(name_text, name_ids, None), (ctx(num_tokens), [ph] * num_tokens, 0)]
        text = " ".join(t for t, _, _ in parts if t) + ("." if dot else "")
        content, slot = [], []
        for _, ids, first in parts:
            content += ids
            slot += [first + k for k in range(len(ids))] if first is not None else [-1] * len(ids)
        content += dot
        slot += [-1] * len(dot)
        texts.append(text)
        contents.append((content, slot))
    batch = tokenize(texts)
    ids = batch["input_ids"]
    slots = torch.full_like(ids, -1)
    for i, (content, slot) in enumerate(contents):
        row, n = ids[i].tolist(), len(content)
        start = next((s for s in range(len(row) - n + 1) if row[s : s + n] == content), None)
        if start is None:
            raise ValueError(f"the prompt of class {classnames[i]!r} ({len(content)} tokens with {num_tokens} context "
                             f"tokens) does not fit the text tower's {len(row)} positions, or its tokens merge")
        slots[i, start : start + n] = torch.tensor(slot)
    return ids, batch.get("attention_mask"), slots


def word_vectors(view, text: str, num_tokens: int | None) -> torch.Tensor:
    """Token embeddings of ``text`` (``[M, d]``, fp32), repeated cyclically or cut to ``num_tokens``."""
    tokenizer = view.processor.tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("init_text has no tokens")
    n = num_tokens or len(ids)
    ids = [ids[i % len(ids)] for i in range(n)]
    embed = token_embedding(view)
    with torch.no_grad():
        return embed(torch.tensor(ids, device=embed.weight.device)).float()


def token_embedding(view) -> nn.Module:
    return view.base_model.text_model.embeddings.token_embedding


def attach_text_prompts(view, prompts: TextPrompts) -> TextPrompts:
    """Own ``prompts`` inside the text tower (so optimisers, DDP and ZeRO-3 see it) and hook its token embeddings."""
    if getattr(view, "text_prompts", None) is not None:
        raise ValueError("the model already has text prompts (adapters.coop and adapters.cocoop exclude each other)")
    text_model = view.base_model.text_model
    prompts.to(device=view_device(view))
    text_model.tunevl_text_prompts = prompts  # merge removes tunevl_* modules: they are not base weights
    prompts._tokenize, prompts._device = view.tokenize, view_device(view)
    prompts._pool_positions = view.text_pool_positions
    prompts._tokenizer = view.processor.tokenizer
    prompts._hook = token_embedding(view).register_forward_hook(prompts._after_token_embedding)
    view.text_prompts = prompts
    return prompts


def apply_text_prompts(view, config: CoOpConfig | CoCoOpConfig) -> TextPrompts:
    """Create trainable CoOp/CoCoOp prompts on ``view`` (after LoRA, if any)."""
    dim = token_embedding(view).embedding_dim
    init = word_vectors(view, config.init_text, config.num_tokens) if config.init_text is not None else None
    num_tokens = init.shape[0] if init is not None else (config.num_tokens or 16)
    cocoop = isinstance(config, CoCoOpConfig)
    prompts = TextPrompts(num_tokens, dim, position=config.class_position,
                          class_specific=getattr(config, "class_specific", False),
                          image_dim=view.image_embed_dim if cocoop else None,
                          bottleneck=getattr(config, "bottleneck", 16))
    prompts.init_std, prompts.init_vectors = config.init_std, init
    if not prompts.class_specific:
        with torch.no_grad():
            prompts.ctx.copy_(init if init is not None else torch.randn(num_tokens, dim) * config.init_std)
    attach_text_prompts(view, prompts)
    prompts.requires_grad_(True)
    return prompts


def text_prompt_metadata(prompts: TextPrompts) -> dict:
    """What a bundle records to rebuild the prompts (the tensors are in the extras file)."""
    meta = {"kind": prompts.kind, "num_tokens": prompts.num_tokens, "dim": prompts.dim, "position": prompts.position,
            "class_specific": prompts.class_specific, "classnames": prompts.classnames}
    if prompts.meta_net is not None:
        meta["image_dim"] = prompts.meta_net.linear1.in_features
        meta["hidden"] = prompts.meta_net.linear1.out_features
    return meta


def restore_text_prompts(view, meta: dict) -> TextPrompts:
    """Rebuild (frozen) prompts of the recorded shape; the bundle's tensors are loaded into them next."""
    image_dim = meta.get("image_dim")
    bottleneck = image_dim // meta["hidden"] if image_dim else 16
    prompts = TextPrompts(meta["num_tokens"], meta["dim"], position=meta["position"],
                          class_specific=meta["class_specific"], image_dim=image_dim, bottleneck=bottleneck)
    if prompts.meta_net is not None and prompts.meta_net.linear1.out_features != meta["hidden"]:
        raise ValueError(f"cannot rebuild a meta-net of width {meta['hidden']} from image width {image_dim}")
    if meta["class_specific"]:
        prompts.ctx = nn.Parameter(torch.zeros(len(meta["classnames"]), meta["num_tokens"], meta["dim"]))
    prompts.classnames = meta.get("classnames")
    attach_text_prompts(view, prompts)
    prompts.requires_grad_(False)
    return prompts
