"""Tiny CLIP built offline, plus the shipped pretrained copy (``"tiny-clip"``).

:func:`build_tiny_clip` makes a randomly initialised ``transformers.CLIPModel``
(about 0.4 M parameters) with a byte-level BPE tokenizer trained in-process and a
PIL image processor, all deterministic. ``scripts/make_tiny_models.py`` pretrains
that model on generic synthetic shape captions and writes it to
``tunevl/assets/tiny-clip/``; :func:`resolve_builtin` maps the alias
``"tiny-clip"`` to that folder after checking its SHA-256 manifest, so the shipped
model loads through the ordinary ``from_pretrained`` calls like any checkpoint.

Token ids: ``<|startoftext|>`` = 0, ``<|endoftext|>`` = 1, ``<|pad|>`` = 2. The
tokenizer appends eos and pads on the right. Because ``eos_token_id != 2``,
transformers' CLIP text model pools at the *first* eos (with ``eos_token_id == 2``
it would pool at ``input_ids.argmax()``; see PITFALLS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: resolve_builtin (tunevl validate) must stay light
    from transformers import CLIPModel, CLIPProcessor, PreTrainedTokenizerFast

__all__ = ["TINY_CLIP_SPEC", "build_tiny_clip", "build_tiny_tokenizer", "save_tiny_clip"]

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"

#: Architecture of the tiny CLIP (both towers share width and depth).
TINY_CLIP_SPEC: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "projection_dim": 64,
    "image_size": 64,
    "patch_size": 8,
    "max_position_embeddings": 77,
    "bpe_vocab_size": 1024,  # BPE target; the fixed corpus yields fewer tokens (851)
}

# The tokenizer corpus: the synthetic-shapes vocabulary, repeated so each word becomes
# one token, plus generic English so arbitrary text splits into sensible pieces (byte
# level BPE has no out-of-vocabulary failure in any case).
_SHAPE_WORDS = (
    "one two three four five six seven eight nine ten zero a an the single pair few several some many "
    "lots of red green blue yellow purple white orange cyan black grey gray brown pink "
    "circle circles square squares triangle triangles diamond diamonds star stars shape shapes "
    "dot dots object objects thing things picture photo image of with and in on"
)
_GENERIC_TEXT = """
a photo of a cat sitting on a chair next to the window. a dog runs across the grass in the park.
two people are walking down the street while it rains. a man is riding a bicycle on the road.
a woman holds an umbrella near a large building. children play with a ball on the beach at sunset.
there is a plate of food with rice, vegetables and meat on the table. a red car is parked by the house.
an airplane flies over the mountains under a clear blue sky. the train arrives at the station in the morning.
a bowl of fruit: apples, bananas and oranges. a small boat floats on the calm water of the lake.
the kitchen has a white sink, a stove and wooden cabinets. a group of friends eat pizza at a restaurant.
this is a close up view of a flower with green leaves. a bird is standing on a branch of the tree.
someone is typing on a laptop computer at a desk. a horse and a cow stand in the field near the fence.
the bus is driving through the city at night with bright lights. a baby sleeps in a bed with a soft blanket.
an old clock tower shows the time. a person skiing down a snowy hill. a giraffe eats leaves from a tall tree.
what is shown in this image? describe the scene in detail. how many objects are there? count them.
left right top bottom middle center above below behind front small large big tiny round bright dark
is are was were be has have had do does not no yes this that these those it its they their there here
to from for by at as or but if then than so very more most less each every all both other another same
new first last long short high low good best great little old young new different important"""


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE tokenizer trained in-process on a fixed corpus (deterministic).

    It lowercases, prepends ``<|startoftext|>``, appends ``<|endoftext|>``, pads on
    the right with ``<|pad|>`` and truncates to 77 tokens keeping the eos.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_CLIP_SPEC["bpe_vocab_size"],
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [_SHAPE_WORDS] * 50 + [line for line in _GENERIC_TEXT.splitlines() if line.strip()]
    tok.train_from_iterator(corpus, trainer)
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, bos_id), (EOS, eos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="right",
        truncation_side="right",
        model_max_length=TINY_CLIP_SPEC["max_position_embeddings"],
    )


def build_tiny_clip(seed: int = 0) -> tuple[CLIPModel, CLIPProcessor]:
    """Build a randomly initialised tiny CLIP and its processor, deterministically.

    The global torch RNG state is left untouched.

    Args:
        seed: seed of the weight initialisation.

    Returns:
        ``(model, processor)``: a float32 ``CLIPModel`` in eval mode and a
        ``CLIPProcessor`` (``CLIPImageProcessorPil`` + fast BPE tokenizer).
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    s = TINY_CLIP_SPEC
    tokenizer = build_tiny_tokenizer()
    tower = {k: s[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")}
    config = CLIPConfig(
        text_config=dict(
            tower,
            vocab_size=len(tokenizer),
            max_position_embeddings=s["max_position_embeddings"],
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(tower, image_size=s["image_size"], patch_size=s["patch_size"]),
        projection_dim=s["projection_dim"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).float().eval()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": s["image_size"]},
        crop_size={"height": s["image_size"], "width": s["image_size"]},
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny_clip(path: str | Path, model: CLIPModel, processor: CLIPProcessor) -> Path:
    """Save model (safetensors) and processor to ``path``; returns the folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return path
