"""Shared base of generative LVLM views: conversations to tensors, hidden states to log-probs.

A conversation record is ``{"messages": [{"role", "content"}...], "images": [PIL or path, ...]}``
(or ``"image"``); ``content`` is a string or a list of ``{"type": "image"}`` /
``{"type": "text", "text": ...}`` items, one image item per image, in order.

The loss mask is built by rendering the chat template up to each assistant turn (with and without
the generation prompt); the rendered text is tokenised once and cut at those boundaries
(:mod:`tunevl.models.chat`), and only response tokens plus each turn's end token are labelled. This
needs no ``{% generation %}`` markers, which LLaVA-1.5's template lacks.

A family file is declarative: the model class, LoRA presets, where a soft prompt goes, and the four
hooks where families differ:

- :meth:`LvlmView.image_tokens`: the token ids one image placeholder expands into (a run of image
  tokens; Idefics3's tile tags around them);
- :meth:`LvlmView.batch_images`: pixel inputs batched per record (Idefics3's 5-D ``pixel_values``);
- :attr:`LvlmView.end_of_turn`: the token that ends an answer, supervised, appended when the template
  does not write it and never doubled;
- :meth:`LvlmView.extra_text_inputs`: per-token inputs built with the labels (Qwen2-VL's
  ``mm_token_type_ids``, PaliGemma's ``token_type_ids``).
"""

from __future__ import annotations

import contextlib
import os
from types import SimpleNamespace
from typing import Any, ClassVar

import torch
from torch import nn

from tunevl.data.images import image_size, load_image
from tunevl.errors import DataError
from tunevl.losses.sequence import IGNORE_INDEX
from tunevl.models.chat import PROMPT, RESPONSE, SOFT, normalise_messages, record_images, replace_with_soft, tokenize_pieces

__all__ = ["SOFT_PROMPT_POSITIONS", "LvlmView", "SoftCappedHead", "SoftPrompt", "normalise_messages", "record_images"]

SOFT_PROMPT_POSITIONS = ("after_image", "before_response", "start")


class SoftPrompt(nn.Module):
    """``[num_tokens, hidden]`` learned embeddings; calling the module returns them."""

    def __init__(self, num_tokens: int, hidden_size: int, position: str = "after_image"):
        super().__init__()
        self.position = position
        self.num_tokens = num_tokens  # a plain int: reading the weight's shape under ZeRO-3 would gather it
        self.weight = nn.Parameter(torch.zeros(num_tokens, hidden_size))

    def forward(self) -> torch.Tensor:
        # A copy, so the result outlives ZeRO-3 releasing the gathered parameter after this call.
        return self.weight.clone()


class SoftCappedHead(nn.Module):
    """``cap * tanh(head(x) / cap)``: an output head with Gemma 2's final logit soft-capping."""

    def __init__(self, head: nn.Module, cap: float):
        super().__init__()
        self.head, self.cap = head, float(cap)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(hidden) / self.cap) * self.cap


class LvlmView:
    """A generative vision-language model as a family view (see ``tunevl.models.clip.ClipView`` for the contract).

    Subclasses name the model class, LoRA presets, the image token and how many tokens an image takes.
    ``model`` is the plain HF model or a peft model around it (LoRA injected in place).
    """

    family: ClassVar[str] = ""
    model_class: ClassVar[str] = ""
    lora_presets: ClassVar[dict[str, str]] = {}
    #: Presets that train whole modules (peft ``modules_to_save``) instead of injecting LoRA.
    lora_modules_to_save_presets: ClassVar[dict[str, list[str]]] = {}
    #: Where ``position: after_image`` soft prompts go: right after this string of the rendered prompt.
    image_anchor: ClassVar[str] = ""
    #: Keys of a collated batch that the inner model takes.
    model_input_names: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask", "pixel_values")
    #: The token that ends an assistant turn (None: the tokenizer's eos).
    end_of_turn: ClassVar[str | None] = None
    #: Module-name prefixes that QLoRA leaves unquantised by default: the vision tower, projector and output head
    #: (bitsandbytes' ``llm_int8_skip_modules`` match from the start of the name).
    unquantized_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module, processor: Any, config=None):
        self.model = model
        self.processor = processor
        self.config = config
        self.max_length = getattr(config, "max_length", None)
        self.soft_prompt = None
        #: Named soft prompts (VladVA's image and text prompts, :mod:`tunevl.adapters.embedding_prompts`): each
        #: replaces a handcrafted prompt's tokens, and a forward picks one through :meth:`soft_prompt_mask`.
        self.soft_prompts: dict[str, SoftPrompt] = {}
        self._soft_mask: torch.Tensor | None = None
        self._soft_name: str | None = None
        self._install_hooks()

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, config, torch_dtype=None) -> "LvlmView":
        import transformers

        from tunevl.models.registry import resolve_dtype
        from tunevl.models.tiny import resolve_builtin

        path = resolve_builtin(config.name_or_path)
        kwargs = dict(revision=config.revision, trust_remote_code=config.trust_remote_code)
        dtype = torch_dtype or resolve_dtype(config.dtype)  # no training context: bf16 on a bf16 GPU
        quantization = getattr(config, "quantization", None)
        extra = {"quantization_config": cls.quantization_config(quantization)} if quantization else {}
        model = getattr(transformers, cls.model_class).from_pretrained(path, dtype=dtype, **kwargs, **extra)
        for module in model.modules():
            # bitsandbytes repacks 4-bit weights for CPU inference at the first eval-mode forward, for good:
            # a training step after an evaluation then fails (layers with a bias), and the state dict changes.
            if getattr(module, "support_avx512bf16_for_cpu", False):
                module.support_avx512bf16_for_cpu = False
        processor = cls.load_processor(path, **kwargs)
        cls.apply_processor_kwargs(processor, getattr(config, "processor_kwargs", None) or {})
        model.requires_grad_(False)
        return cls(model, processor, config)

    @classmethod
    def quantization_config(cls, settings: dict):
        """``transformers.BitsAndBytesConfig`` of ``model.quantization`` (QLoRA, Dettmers et al. 2023,
        https://arxiv.org/abs/2305.14314); the vision tower, projector and head are skipped by default.

        What peft's ``prepare_model_for_kbit_training`` does for a text model is done here in other ways: the
        base stays frozen, trained tensors are fp32 (the loop), and checkpointing is non-reentrant, so no
        input-embedding hook is needed and a frozen vision tower still runs without autograd.
        """
        from transformers import BitsAndBytesConfig

        settings = dict(settings)
        settings.setdefault("llm_int8_skip_modules", list(cls.unquantized_modules))
        return BitsAndBytesConfig(**settings)

    @property
    def quantized(self) -> bool:
        """True when the base model's linear layers are bitsandbytes-quantised (QLoRA)."""
        base = self.base_model
        return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))

    @classmethod
    def load_processor(cls, path: str, **kwargs):
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, **kwargs)

    @classmethod
    def apply_processor_kwargs(cls, processor, kwargs: dict) -> None:
        """Set ``model.processor_kwargs`` on the image processor (or the processor)."""
        for key, value in kwargs.items():
            for target in (processor.image_processor, processor):
                if hasattr(target, key):
                    setattr(target, key, value)
                    break
            else:
                raise ValueError(f"model.processor_kwargs.{key}: the {cls.family} processor has no such setting")

    @property
    def base_model(self) -> nn.Module:
        """The ``*ForConditionalGeneration`` model (inside peft wrappers, if any)."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    @property
    def inner_model(self) -> nn.Module:
        """The model without its lm head: returns last hidden states."""
        return self.base_model.model

    @property
    def lm_head_module(self) -> nn.Module:
        """The output head as the model applies it: Gemma 2's final logit soft-capping included (PaliGemma 2)."""
        head = self.base_model.lm_head
        cap = getattr(self.base_model.config.get_text_config(), "final_logit_softcapping", None)
        if cap is None:
            return head
        capped = self.__dict__.get("_capped_head")
        if capped is None or capped.head is not head:
            capped = self.__dict__["_capped_head"] = SoftCappedHead(head, cap)
        return capped

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def dtype(self) -> torch.dtype:
        # Through parameters(): reading ``.weight`` under ZeRO-3 outside a forward would all-gather it.
        return next(self.inner_model.get_input_embeddings().parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.lm_head_module.parameters()).device

    def vision_trunk(self) -> list[nn.Module]:
        """Vision modules before the projector; they run under ``no_grad`` while none of their parameters trains."""
        raise NotImplementedError

    def projector(self) -> nn.Module:
        raise NotImplementedError

    # ---- adapters --------------------------------------------------------------------------
    def extra_trainables(self) -> dict[str, nn.Parameter]:
        """Non-LoRA trainables saved in the bundle side file: the soft prompt, keyed with its position
        (``soft_prompt.after_image``), and named soft prompts, keyed with their name (``soft_prompt.image``)."""
        sp = self.soft_prompt
        out = {f"soft_prompt.{sp.position}": sp.weight} if sp is not None and sp.weight.requires_grad else {}
        out.update({f"soft_prompt.{name}": p.weight for name, p in self.soft_prompts.items() if p.weight.requires_grad})
        return out

    def load_extras(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, value in tensors.items():
            kind, _, position = name.partition(".")
            if kind != "soft_prompt":
                raise ValueError(f"unknown extra tensor {name!r} for the {self.family} family")
            if position not in SOFT_PROMPT_POSITIONS:  # a named soft prompt
                if position not in self.soft_prompts:
                    self.attach_soft_prompt(SoftPrompt(value.shape[0], value.shape[1], "named"), name=position)
                target = self.soft_prompts[position]
            else:
                if self.soft_prompt is None:
                    self.attach_soft_prompt(SoftPrompt(value.shape[0], value.shape[1], position))
                target = self.soft_prompt
            with torch.no_grad():
                target.weight.copy_(value)

    def attach_soft_prompt(self, soft_prompt, name: str | None = None) -> None:
        """Own the soft prompt inside the model (so optimisers, DDP and ZeRO-3 see it); ``name`` makes it
        a named one (:attr:`soft_prompts`), which a forward selects through :meth:`soft_prompt_mask`."""
        soft_prompt.to(device=self.device, dtype=self.dtype)
        if name is None:
            self.inner_model.tunevl_soft_prompt = soft_prompt
            self.soft_prompt = soft_prompt
            return
        if name in SOFT_PROMPT_POSITIONS or not name.isidentifier():
            raise ValueError(f"a named soft prompt needs an identifier other than {SOFT_PROMPT_POSITIONS}, got {name!r}")
        if not hasattr(self.inner_model, "tunevl_soft_prompts"):
            self.inner_model.tunevl_soft_prompts = nn.ModuleDict()
        self.inner_model.tunevl_soft_prompts[name] = soft_prompt
        self.soft_prompts[name] = soft_prompt

    def external_parameters(self) -> list[nn.Parameter]:
        prompts = ([self.soft_prompt] if self.soft_prompt is not None else []) + list(self.soft_prompts.values())
        return [p.weight for p in prompts]

    # ---- module hooks ----------------------------------------------------------------------
    def _install_hooks(self) -> None:
        for module in self.vision_trunk():
            module.register_forward_pre_hook(self._enter_frozen)
            module.register_forward_hook(self._leave_frozen, always_call=True)
        self.inner_model.get_input_embeddings().register_forward_hook(self._after_embedding)

    @staticmethod
    def _enter_frozen(module, args):
        # A frozen tower needs no graph: HF's checkpointing would otherwise recompute and back-propagate it.
        frozen = not any(p.requires_grad for p in module.parameters())
        module._tunevl_grad_state = torch.is_grad_enabled() if frozen else None
        if frozen:
            torch.set_grad_enabled(False)

    @staticmethod
    def _leave_frozen(module, args, output):
        state = getattr(module, "_tunevl_grad_state", None)
        if state is not None:
            torch.set_grad_enabled(state)
            module._tunevl_grad_state = None

    def _after_embedding(self, module, args, output):
        mask = self._soft_mask
        prompt = self.soft_prompt if self._soft_name is None else self.soft_prompts[self._soft_name]
        if mask is None or prompt is None or output.shape[1] != mask.shape[1] or output.shape[0] % mask.shape[0]:
            return output
        if output.shape[0] != mask.shape[0]:  # generate expanded the batch (beams, num_return_sequences)
            mask = mask.repeat_interleave(output.shape[0] // mask.shape[0], dim=0)
        vectors = prompt().to(output.dtype)  # called as a module: ZeRO-3 gathers it
        slot = (mask.long().cumsum(1) - 1).clamp(min=0)
        return torch.where(mask.unsqueeze(-1), vectors[slot], output)

    @contextlib.contextmanager
    def soft_prompt_mask(self, mask: torch.Tensor | None, name: str | None = None):
        """Within the context, embeddings at ``mask`` positions are replaced by the soft prompt (the named
        soft prompt ``name`` when given).

        A batch that ``generate`` expands (``num_beams``, ``num_return_sequences``: each row repeated
        in place) gets the mask expanded the same way.
        """
        if name is not None and name not in self.soft_prompts:
            raise KeyError(f"no soft prompt named {name!r} (named soft prompts: {sorted(self.soft_prompts)})")
        previous, self._soft_mask, self._soft_name = (self._soft_mask, self._soft_name), mask, name
        try:
            yield
        finally:
            self._soft_mask, self._soft_name = previous

    # ---- family hooks --------------------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The conversation as text, image placeholders included (the family's chat template)."""
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def num_image_tokens(self, image) -> int:
        """Image tokens one image expands to (anything with a ``size``, as pre-flight reads headers only)."""
        raise NotImplementedError

    def image_layout(self, image) -> Any:
        """What :meth:`image_tokens` needs to expand an image, from its size: a token count by default."""
        return self.num_image_tokens(image)

    def image_tokens(self, layout) -> list[int]:
        """Hook: the token ids one image placeholder expands into (``layout`` from :meth:`process_images`)."""
        return [self.image_token_id] * int(layout)

    @property
    def image_token_id(self) -> int:
        return self.base_model.config.image_token_id

    @property
    def end_of_turn_id(self) -> int | None:
        """Hook: id of the token that ends an answer (:attr:`end_of_turn`, else the tokenizer's eos)."""
        tok = self.tokenizer
        return tok.convert_tokens_to_ids(self.end_of_turn) if self.end_of_turn else tok.eos_token_id

    def process_images(self, images: list) -> tuple[dict[str, torch.Tensor], list]:
        """Image-processor outputs for a flat list of images, and each image's layout (its token count for
        most families). Record-aligned batches go through :meth:`batch_images`."""
        raise NotImplementedError

    def batch_images(self, images_per_record: list[list]) -> tuple[dict[str, torch.Tensor], list[list]]:
        """Hook: pixel inputs for a batch, given each record's images, and the layouts per record.

        Families whose pixel batch is one flat stack of images (LLaVA, Qwen2-VL, PaliGemma) concatenate;
        Idefics3 stacks per record (5-D ``pixel_values`` with ``pixel_attention_mask``).
        """
        flat = [im for images in images_per_record for im in images]
        inputs, layouts = self.process_images(flat) if flat else ({}, [])
        out, k = [], 0
        for images in images_per_record:
            out.append(list(layouts[k : k + len(images)]))
            k += len(images)
        return inputs, out

    def extra_text_inputs(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Hook: per-token inputs the model takes besides the ids, built from a padded batch's ids and
        labels (None for generation prompts): Qwen2-VL's ``mm_token_type_ids``, PaliGemma's ``token_type_ids``."""
        return {}

    # ---- conversations to tokens ------------------------------------------------------------
    def _pieces(self, messages: list[dict], add_generation_prompt: bool) -> list[tuple[str, str]]:
        """``(text, kind)`` pieces, prompt or response, whose concatenation is the rendered conversation."""
        pieces, done = [], ""
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt, full = self.render(messages[:k], True), self.render(messages[: k + 1])
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise DataError(f"the {self.family} chat template does not render turn {k} as a continuation of the previous turns")
            response = full[len(prompt):].rstrip()  # trailing template whitespace is not the answer
            pieces += [(prompt[len(done):], PROMPT), (response, RESPONSE)]
            done = prompt + response
        ends_with_answer = bool(messages) and messages[-1]["role"] == "assistant"
        if not ends_with_answer or add_generation_prompt:
            rest = self.render(messages, add_generation_prompt)
            if not rest.startswith(done):
                raise DataError(f"the {self.family} chat template does not render the last turn as a continuation")
            pieces.append((rest[len(done):], PROMPT))
        return pieces

    def _add_special_tokens(self, text: str) -> bool:
        # As the processor's apply_chat_template: no bos added to a template that writes its own.
        bos = self.tokenizer.bos_token
        return not (bos and text.startswith(bos))

    def encode(
        self, messages: list[dict], images: list, *, add_generation_prompt: bool = False, image_token_counts=None,
        soft_slots: tuple[str, int] | None = None,
    ) -> dict[str, list]:
        """Token ids, labels (answers and their end tokens) and soft-prompt slots of one conversation, images expanded.

        Args:
            messages: The conversation (see the module doc).
            images: Its images (PIL, paths, or anything with a ``size`` when only lengths matter).
            add_generation_prompt: End with the template's prompt for the next answer.
            image_token_counts: Each image's layout as :meth:`process_images` / :meth:`batch_images` returned
                it (a token count for most families); computed from the image sizes when None.
            soft_slots: ``(text, n)``: the last occurrence of ``text`` in the prompt becomes ``n`` soft-prompt
                slots (named soft prompts, which replace a handcrafted prompt) instead of :attr:`soft_prompt`'s.
        """
        messages = normalise_messages(messages, len(images))
        pieces = self._pieces(messages, add_generation_prompt)
        n_soft = self.soft_prompt.num_tokens if self.soft_prompt is not None else 0
        if soft_slots is not None:
            pieces, n_soft = replace_with_soft(pieces, soft_slots[0]), soft_slots[1]
        elif n_soft:
            pieces = self._split_for_soft_prompt(pieces)
        text = "".join(t for t, _ in pieces)
        eot, pad = self.end_of_turn_id, self.tokenizer.pad_token_id
        ids: list[int] = []
        labels: list[int] = []
        soft: list[bool] = []
        for (_, kind), piece in zip(pieces, tokenize_pieces(self.tokenizer, pieces, self._add_special_tokens(text))):
            if kind == SOFT:
                piece = [pad] * n_soft
            elif kind == RESPONSE and eot is not None and piece[-1:] != [eot]:
                piece = piece + [eot]  # LLaVA-1.5's template ends turns without eos: learn to stop, once
            ids += piece
            labels += piece if kind == RESPONSE else [IGNORE_INDEX] * len(piece)
            soft += [kind == SOFT] * len(piece)
        return self._expand_images(ids, labels, soft, images, image_token_counts)

    def _split_for_soft_prompt(self, pieces):
        position = self.soft_prompt.position
        text, kind = pieces[0]
        if position == "start":
            cut = 0
        elif position == "after_image" and self.image_anchor in text:
            cut = text.index(self.image_anchor) + len(self.image_anchor)
        elif position in ("after_image", "before_response"):
            cut = len(text)  # no image: just before the first response
        else:
            raise ValueError(f"soft prompt position must be one of {SOFT_PROMPT_POSITIONS}, got {position!r}")
        return [(text[:cut], kind), ("", SOFT), (text[cut:], kind), *pieces[1:]]

    def _expand_images(self, ids, labels, soft, images, layouts) -> dict[str, list]:
        image_id = self.image_token_id
        found = sum(1 for t in ids if t == image_id)
        if found != len(images):
            raise DataError(f"the rendered conversation has {found} image tokens but the record has {len(images)} images")
        layouts = list(layouts) if layouts is not None else [self.image_layout(im) for im in images]
        out_ids, out_labels, out_soft, k = [], [], [], 0
        for t, lab, s in zip(ids, labels, soft):
            expanded = [t]
            if t == image_id:
                expanded, k, lab = self.image_tokens(layouts[k]), k + 1, IGNORE_INDEX
            out_ids += expanded
            out_labels += [lab] * len(expanded)
            out_soft += [s] * len(expanded)
        return {"input_ids": out_ids, "labels": out_labels, "soft_prompt_mask": out_soft}

    # ---- batches -------------------------------------------------------------------------------
    def collate(self, records: list[dict], fields: set[str] | None = None, *, add_generation_prompt: bool = False,
                padding_side: str = "right", hidden_image: bool = True) -> dict[str, Any]:
        """Conversation records to a padded batch (``labels`` cover the answers and their end tokens).

        Training batches are cut to ``model.max_length`` (pre-flight checks that no cut reaches into image
        tokens); generation prompts never are. A training batch without images gets one masked-out blank
        image (``hidden_image``; see :meth:`_hide_image`).
        """
        if fields is not None and "messages" not in fields:  # every objective collates its own sequences
            return {"index": torch.tensor([r.get("index", -1) for r in records])}
        per_record = [[load_image(im) for im in record_images(r)] for r in records]
        image_inputs, layouts = self.batch_images(per_record) if any(per_record) else ({}, [[] for _ in records])
        encoded = []
        for r, images, layout in zip(records, per_record, layouts):
            enc = self.encode(r["messages"], images, add_generation_prompt=add_generation_prompt, image_token_counts=layout)
            if self.max_length is not None and not add_generation_prompt:
                enc = {key: v[: self.max_length] for key, v in enc.items()}
            encoded.append(enc)
        if hidden_image and not add_generation_prompt and not any(per_record):
            image_inputs = self._hide_image(encoded)
        batch = self.pad(encoded, padding_side)
        batch.update(image_inputs)
        batch["index"] = torch.tensor([r.get("index", -1) for r in records])
        return batch

    def _hide_image(self, encoded: list[dict]) -> dict[str, torch.Tensor]:
        """One blank image for a batch without images, which the model sees but no token attends to.

        Its tokens are appended to the first record, masked out and unlabelled. Every rank then runs the
        vision tower and projector through the model's own path, in the same order, forward and backward
        (ZeRO-3 gathers parameters collectively in call order; DDP expects every trainable weight in the
        graph), and no loss or gradient changes. Returns the pixel inputs.
        """
        from PIL import Image

        image_inputs, layouts = self.batch_images([[Image.new("RGB", (32, 32))]] + [[] for _ in encoded[1:]])
        tokens = self.image_tokens(layouts[0][0])
        first = encoded[0]
        encoded[0] = {
            "input_ids": first["input_ids"] + tokens,
            "labels": first["labels"] + [IGNORE_INDEX] * len(tokens),
            "soft_prompt_mask": first["soft_prompt_mask"] + [False] * len(tokens),
            "attention_mask": first.get("attention_mask", [1] * len(first["input_ids"])) + [0] * len(tokens),
        }
        return image_inputs

    def pad(self, encoded: list[dict], side: str = "right") -> dict[str, torch.Tensor]:
        """:meth:`encode` outputs to a ``side``-padded batch, with the family's per-token inputs."""
        width = max(len(e["input_ids"]) for e in encoded)
        pad_values = {"input_ids": self.tokenizer.pad_token_id, "labels": IGNORE_INDEX, "soft_prompt_mask": False, "attention_mask": 0}
        out: dict[str, list] = {k: [] for k in pad_values}
        for e in encoded:
            e = {**e, "attention_mask": e.get("attention_mask", [1] * len(e["input_ids"]))}
            gap = width - len(e["input_ids"])
            for key, fill in pad_values.items():
                row = e[key]
                out[key].append(row + [fill] * gap if side == "right" else [fill] * gap + row)
        batch = {k: torch.tensor(v) for k, v in out.items()}
        batch.update(self.extra_text_inputs(batch["input_ids"], batch["labels"]))
        return batch

    _pad = pad  # the name objectives written before the hooks use

    def check_lengths(self, records, max_length: int | None = None) -> dict[str, int]:
        """Pre-flight: error if truncation to ``max_length`` would cut into image tokens or leave no answer.

        Raises:
            DataError: naming the first offending record and what to change.
        """
        max_length = max_length if max_length is not None else self.max_length
        from tqdm.auto import tqdm

        longest = 0
        quiet = len(records) < 5000 or os.environ.get("RANK", "0") != "0"
        for i in tqdm(range(len(records)), desc="pre-flight: sequence lengths", unit="record", disable=quiet, mininterval=5):
            r = records[i]
            if "messages" not in r:  # records of objectives that build their own sequences (VladVA)
                continue
            # Token counts depend on image sizes only: read headers, never decode pixels here.
            images = [SimpleNamespace(size=image_size(im)) for im in record_images(r)]
            enc = self.encode(r["messages"], images)
            ids, n = enc["input_ids"], len(enc["input_ids"])
            longest = max(longest, n)
            if max_length is None or n <= max_length:
                continue
            where = r.get("index", i)
            image_positions = [p for p, t in enumerate(ids) if t == self.image_token_id]
            if image_positions and image_positions[-1] >= max_length:
                raise DataError(
                    f"record {where}: {n} tokens, of which {len(image_positions)} image tokens end at position "
                    f"{image_positions[-1] + 1}, beyond model.max_length={max_length}; truncation would cut into the image. "
                    "Lower the image-token budget (model.processor_kwargs, e.g. max_pixels) or raise model.max_length"
                )
            if all(lab == IGNORE_INDEX for lab in enc["labels"][:max_length]):
                raise DataError(f"record {where}: {n} tokens; truncation to model.max_length={max_length} leaves no answer token")
        return {"records": len(records), "longest": longest}

    preflight = check_lengths

    # ---- forward -------------------------------------------------------------------------------
    def model_inputs(self, batch: dict) -> dict[str, Any]:
        inputs = {k: batch[k] for k in self.model_input_names if k in batch}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def last_hidden_state(self, batch: dict) -> torch.Tensor:
        """``[B, T, H]`` final hidden states (after the last norm), without computing logits."""
        with self.soft_prompt_mask(batch.get("soft_prompt_mask")):
            return self.inner_model(**self.model_inputs(batch), use_cache=False).last_hidden_state

    def image_features(self, image_inputs: dict) -> Any:
        raise NotImplementedError

    def logits(self, batch: dict) -> torch.Tensor:
        """Full ``[B, T, V]`` logits (the naive path; for tests and small evaluations)."""
        return self.lm_head_module(self.last_hidden_state(batch))

    def sequence_logps(self, batch: dict, chunk_size: int = 1024) -> torch.Tensor:
        """Summed log-probs of each record's labelled (assistant) tokens: ``[B]``."""
        from tunevl.losses import sequence_logps

        return sequence_logps(self.last_hidden_state(batch), self.lm_head_module, batch["labels"], chunk_size=chunk_size)
