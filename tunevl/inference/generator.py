"""Generation with a generative-LVLM bundle: ``tunevl.load(bundle).generate(images, prompt)``.

Prompts are rendered with the family's chat template (PaliGemma: its prefix), left-padded into one batch and
never truncated; the bundle's LoRA and soft prompt apply, also when ``generate`` expands the batch (beam
search, ``num_return_sequences``). Decoding follows the checkpoint's ``generation_config`` (or one you pass),
with keyword arguments on top.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch

from tunevl.errors import DataError

#: Arguments that only mean something when sampling: given without ``do_sample``, they turn sampling on.
SAMPLING_ARGS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")
DEFAULT_MAX_NEW_TOKENS = 64


def _image_list(images) -> list:
    """One image (PIL, path, ``ImageRef``), a list of them, or None -> a list."""
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


class Generator:
    """Text generation from images and prompts, with the bundle's LoRA and soft prompt applied.

    Args:
        view: The LVLM family view with adapters loaded.
    """

    def __init__(self, view):
        self.view = view

    @property
    def model(self):
        """The underlying (peft-wrapped) transformers model."""
        return self.view.model

    def to(self, device) -> "Generator":
        self.view.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.view.device

    # ---- prompts ------------------------------------------------------------------------------
    @staticmethod
    def conversation(images, prompt: str, system_prompt: str | None = None) -> dict:
        """The record of one prompt: an optional system turn, then one user turn with ``images`` then ``prompt``."""
        images = _image_list(images)
        messages = [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}] if system_prompt else []
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        return {"messages": [*messages, {"role": "user", "content": content}], "images": images}

    def batch(self, records: list[dict]) -> dict[str, Any]:
        """Conversation records (ending with a user turn) to a left-padded generation batch on the model's device."""
        batch = self.view.collate(records, add_generation_prompt=True, padding_side="left")
        batch.pop("labels"), batch.pop("index")
        return {k: v.to(self.device) for k, v in batch.items()}

    def prompt_batch(self, images, prompt: str, system_prompt: str | None = None) -> dict:
        """The tokenised generation prompt of one user turn with ``images`` then ``prompt``."""
        return self.batch([self.conversation(images, prompt, system_prompt)])

    # ---- decoding settings ----------------------------------------------------------------------
    def generation_config(self, generation_config=None, **kwargs) -> tuple[Any, dict]:
        """The decoding settings: ``generation_config`` (default: the checkpoint's) updated with ``kwargs``;
        returns it and the keyword arguments that are not decoding settings (model inputs)."""
        sampling = [k for k in SAMPLING_ARGS if kwargs.get(k) is not None]
        if sampling and kwargs.get("do_sample") is False:
            raise ValueError(f"{', '.join(sampling)} only apply when sampling, but do_sample=False")
        if sampling and "do_sample" not in kwargs:
            kwargs["do_sample"] = True  # transformers would ignore them with a warning
        config = copy.deepcopy(generation_config if generation_config is not None else self.view.base_model.generation_config)
        rest = config.update(**kwargs)
        if config.max_new_tokens is None and "max_length" not in kwargs:
            config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS  # the default max_length (20) counts the prompt
        tok = self.view.tokenizer
        eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [e for e in [config.eos_token_id] if e is not None]
        end = self.view.end_of_turn_id
        config.eos_token_id = eos + [end] if end is not None and end not in eos else (eos or None)
        if config.pad_token_id is None:
            config.pad_token_id = tok.pad_token_id
        return config, rest

    def _check_length(self, prompt_length: int, config) -> None:
        limit = getattr(self.view.base_model.config.get_text_config(), "max_position_embeddings", None)
        total = prompt_length + config.max_new_tokens if config.max_new_tokens is not None else config.max_length
        if limit is not None and total > limit:
            raise DataError(f"the prompt has {prompt_length} tokens; with max_new_tokens={config.max_new_tokens} that is "
                            f"{total} tokens, beyond the model's {limit} positions (prompts are never truncated: "
                            "shorten the prompt, lower the image-token budget or max_new_tokens)")

    # ---- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(self, batch: dict, generation_config=None, **kwargs):
        """``generate``'s output for a :meth:`batch` (token ids, or a ``GenerateOutput`` with
        ``return_dict_in_generate=True``), soft prompt applied to every row it expands to."""
        config, rest = self.generation_config(generation_config, **kwargs)
        batch = dict(batch)
        soft_mask = batch.pop("soft_prompt_mask", None)
        self._check_length(batch["input_ids"].shape[1], config)
        inputs = self.view.model_inputs(batch)
        was_training = self.view.model.training
        self.view.model.eval()
        try:
            with self.view.soft_prompt_mask(soft_mask):
                return self.view.base_model.generate(**inputs, generation_config=config, **rest)
        finally:
            self.view.model.train(was_training)

    def chat(self, records: dict | Sequence[dict], generation_config=None, **kwargs):
        """Answer conversations (``{"messages", "images"}`` records ending with a user turn) in one batch.

        Returns one answer per record (a string, or a list of ``num_return_sequences`` strings); a single
        record gives a single answer.
        """
        single = isinstance(records, dict)
        records = [records] if single else list(records)
        batch = self.batch(records)
        out = self.generate_ids(batch, generation_config, **kwargs)
        sequences = out.sequences if hasattr(out, "sequences") else out
        texts = self.view.tokenizer.batch_decode(sequences[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        texts = [t.strip() for t in texts]
        n = len(texts) // len(records)
        answers = [texts[i * n : (i + 1) * n] if n > 1 else texts[i] for i in range(len(records))]
        return answers[0] if single else answers

    def generate(self, images, prompt: str | Sequence[str], *, system_prompt: str | None = None,
                 generation_config=None, **generation_kwargs):
        """Answer ``prompt`` about ``images``; ``generation_kwargs`` go to transformers' ``generate``.

        Args:
            images: For one prompt: an image (PIL or path), a list of them, or None. For a list of prompts:
                one such entry per prompt (or None).
            prompt: A string, or a list of strings generated as one left-padded batch (the same answers as
                one by one).
            system_prompt: A system turn before each prompt (families whose template has one).
            generation_config: A ``transformers.GenerationConfig`` (default: the checkpoint's; its
                ``max_new_tokens`` defaults to 64). Sampling arguments (``temperature``, ``top_p``, ...)
                without ``do_sample`` turn sampling on; with ``do_sample=False`` they are an error.

        Returns:
            The answer (a list of ``num_return_sequences`` answers when that is above 1); for a list of
            prompts, a list of those.

        Raises:
            DataError: a prompt (plus ``max_new_tokens``) longer than the model's positions: prompts are never cut.
        """
        if isinstance(prompt, str):
            return self.chat(self.conversation(images, prompt, system_prompt), generation_config, **generation_kwargs)
        prompts = list(prompt)
        per_prompt = [None] * len(prompts) if images is None else list(images)
        if len(per_prompt) != len(prompts):
            raise ValueError(f"give one images entry per prompt: {len(per_prompt)} for {len(prompts)} prompts")
        records = [self.conversation(im, p, system_prompt) for im, p in zip(per_prompt, prompts)]
        return self.chat(records, generation_config, **generation_kwargs)

