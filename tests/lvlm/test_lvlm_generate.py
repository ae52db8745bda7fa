"""Generation as users expect it, for every family: batches equal one by one, beams and several returned sequences
keep the soft prompt, several images per prompt, a single image or path, sampling arguments, the checkpoint's
generation config, prompts never cut; and answer-accuracy evaluation on the records users have."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GenerationConfig

from tunevl.adapters.soft_prompt import apply_soft_prompt
from tunevl.data.synthetic import render_shapes
from tunevl.errors import DataError
from tunevl.inference import Generator
from tunevl.models import GENERATIVE, ModelConfig, load_view

TWINS = {"llava": "tiny-llava", "qwen2_vl": "tiny-qwen2-vl", "qwen2_5_vl": "tiny-qwen2.5-vl", "idefics3": "tiny-idefics3",
         "paligemma": "tiny-paligemma"}
TEXT = "Answer with one word."
FORCED = dict(max_new_tokens=4, min_new_tokens=4)  # a tiny random model may stop at once


def _image(seed=1, colour="red"):
    return render_shapes(3, colour, "circle", image_size=32, seed=seed)


@pytest.fixture(params=list(TWINS))
def family(request):
    return request.param


def _generator(family, soft_prompt: bool = True, **model_kwargs) -> Generator:
    view = load_view(ModelConfig(name_or_path=TWINS[family], **model_kwargs))
    if soft_prompt:
        apply_soft_prompt(view, {"init_text": TEXT, "position": "before_response"})
    view.model.eval()
    return Generator(view)


def test_every_family_generates():
    assert set(TWINS) == set(GENERATIVE)


def test_batches_of_prompts_and_beams_with_a_soft_prompt_equal_one_by_one(family):
    gen = _generator(family)
    images = [_image(), [_image(2, "blue"), _image(3, "green")], None]  # one image, two images, none
    prompts = ["How many circles?", "What colour is the shape?", "Say two."]
    one_by_one = [gen.generate(im, p, **FORCED) for im, p in zip(images, prompts)]
    assert gen.generate(images, prompts, **FORCED) == one_by_one
    beams = dict(num_beams=3, num_return_sequences=2, **FORCED)
    together = gen.generate(images, prompts, **beams)
    assert all(isinstance(a, list) and len(a) == 2 for a in together)  # every returned sequence
    assert together == [gen.generate(im, p, **beams) for im, p in zip(images, prompts)]


def test_beam_search_keeps_the_soft_prompt(family):
    """Beams expand the batch inside generate: the soft prompt still replaces its slots in every row, so it
    generates exactly what the handcrafted prompt it was initialised from generates, and not what the bare
    slots would."""
    gen = _generator(family)
    view = gen.view
    batch = gen.prompt_batch(_image(), "How many circles?")
    mask = batch["soft_prompt_mask"]
    handcrafted = {k: v for k, v in batch.items() if k != "soft_prompt_mask"}
    handcrafted["input_ids"] = batch["input_ids"].clone()
    handcrafted["input_ids"][mask] = torch.tensor(view.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    handcrafted.update(view.extra_text_inputs(handcrafted["input_ids"]))
    bare = {k: v for k, v in batch.items() if k != "soft_prompt_mask"}
    kwargs = dict(num_beams=3, num_return_sequences=3, output_scores=True, return_dict_in_generate=True, **FORCED)
    soft, want, without = (gen.generate_ids(b, **kwargs) for b in (batch, handcrafted, bare))
    n = batch["input_ids"].shape[1]
    assert torch.equal(soft.sequences[:, n:], want.sequences[:, n:])
    torch.testing.assert_close(soft.sequences_scores, want.sequences_scores)
    assert not torch.allclose(soft.sequences_scores, without.sequences_scores, atol=1e-4)


def test_a_single_image_or_path_is_accepted_where_a_list_is(tmp_path):
    gen = _generator("qwen2_vl", soft_prompt=False)
    image = _image()
    image.save(tmp_path / "cat.png")
    want = gen.generate([image], "How many circles?", **FORCED)
    assert gen.generate(image, "How many circles?", **FORCED) == want
    assert gen.generate(str(tmp_path / "cat.png"), "How many circles?", **FORCED) == want
    assert gen.generate(tmp_path / "cat.png", "How many circles?", **FORCED) == want


def test_sampling_arguments_imply_sampling_and_every_sequence_comes_back():
    gen = _generator("llava", soft_prompt=False)
    config, _ = gen.generation_config(temperature=0.7)
    assert config.do_sample and config.temperature == 0.7
    assert not gen.generation_config()[0].do_sample  # the checkpoint's config: greedy
    with pytest.raises(ValueError, match="temperature only apply when sampling, but do_sample=False"):
        gen.generation_config(temperature=0.7, do_sample=False)
    image = _image()
    greedy = gen.generate(image, "How many circles?", max_new_tokens=8, min_new_tokens=8)
    samples = []
    for seed in range(3):
        torch.manual_seed(seed)
        samples.append(gen.generate(image, "How many circles?", temperature=5.0, max_new_tokens=8, min_new_tokens=8))
    torch.manual_seed(0)
    assert gen.generate(image, "How many circles?", temperature=5.0, max_new_tokens=8, min_new_tokens=8) == samples[0]
    assert any(s != greedy for s in samples)  # temperature was not silently ignored
    torch.manual_seed(0)
    several = gen.generate(image, "How many circles?", do_sample=True, num_return_sequences=3, max_new_tokens=3)
    assert isinstance(several, list) and len(several) == 3 and all(isinstance(s, str) for s in several)


def test_the_generation_config_is_respected():
    gen = _generator("qwen2_5_vl", soft_prompt=False)
    batch = gen.prompt_batch(_image(), "How many circles?")
    n = batch["input_ids"].shape[1]
    gen.view.base_model.generation_config.max_new_tokens = 2  # the checkpoint's config
    gen.view.base_model.generation_config.min_new_tokens = 2
    assert gen.generate_ids(batch).shape[1] == n + 2
    assert gen.generate_ids(batch, generation_config=GenerationConfig(max_new_tokens=3, min_new_tokens=3)).shape[1] == n + 3
    assert gen.generate_ids(batch, max_new_tokens=1).shape[1] == n + 1  # keyword arguments on top
    assert gen.view.end_of_turn_id in gen.generation_config()[0].eos_token_id  # stops at the end of its turn


def test_prompts_are_never_cut_and_too_long_is_a_clear_error():
    short = _generator("llava", soft_prompt=False, max_length=8)  # the training truncation length
    full = _generator("llava", soft_prompt=False)
    batch = short.prompt_batch(_image(), "How many circles are there in this picture?")
    assert batch["input_ids"].shape[1] > 8 and torch.equal(batch["input_ids"], full.prompt_batch(_image(), "How many circles are there in this picture?")["input_ids"])
    assert short.generate(_image(), "How many circles?", **FORCED) == full.generate(_image(), "How many circles?", **FORCED)
    with pytest.raises(DataError, match=r"the prompt has \d+ tokens; with max_new_tokens=64 that is \d+ tokens, beyond the model's 512 positions"):
        full.generate(_image(), "circle " * 600)


def test_answer_accuracy_and_generation_accuracy_take_the_records_users_have():
    """String contents, a leading system message and text-only records, next to the item-list form."""
    from tunevl.eval.generative import answer_accuracy, generation_accuracy

    gen = _generator("qwen2_vl", soft_prompt=False)
    image = _image()
    records = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How many circles?"},
                      {"role": "assistant", "content": "three"}], "images": [image], "answer": "three",
         "candidates": ["one", "two", "three"]},
        {"messages": [{"role": "user", "content": "Say two."}, {"role": "assistant", "content": "two"}], "images": [],
         "answer": "two", "candidates": ["one", "two", "three"]},
        {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many circles?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "three"}]}], "image": image, "answer": "three",
         "candidates": ["one", "two", "three"]},
    ]
    from tunevl.eval.generative import with_answer

    want = 0
    for r in records:  # the ranking by hand: the candidate with the highest summed log-prob
        with torch.no_grad():
            scores = gen.view.sequence_logps(gen.view.collate([with_answer(r, c) for c in r["candidates"]], {"messages"}))
        want += r["candidates"][int(scores.argmax())] == r["answer"]
    got = answer_accuracy(gen.view, records)
    assert got["n"] == 3 and got["accuracy"] == want / 3
    assert 0.0 <= generation_accuracy(gen, records) <= 1.0


def test_cli_generate_answers_as_tunevl_load_does(tmp_path, capsys, tiny_clip_path, quick):
    import tunevl
    from tunevl.cli import main
    from tunevl.train.loop import run

    out = tmp_path / "run"
    overrides = {"model.name_or_path": "tiny-qwen2-vl", "train.output_dir": str(out), "train.max_steps": 2,
                 "train.progress_bar": "false", "train.per_device_train_batch_size": 2, "train.save_steps": 0,
                 "data.train.num_samples": 8, "data.train.image_size": 32}
    recipe = tunevl.load_recipe("lvlm/qwen2_vl_soft_prompt_lora", ["data.train={_component_: synthetic_vqa, split: train}", "~data.eval",
                                                                   *[f"{k}={v}" for k, v in overrides.items()]])
    run(recipe)
    _image().save(tmp_path / "cat.png")
    cat = str(tmp_path / "cat.png")
    want = tunevl.load(out).generate([cat, cat], "How many circles?", num_beams=2, max_new_tokens=4)
    capsys.readouterr()
    assert main(["generate", str(out), "--image", cat, "--image", cat, "--prompt", "How many circles?", "--num-beams", "2",
                 "--max-new-tokens", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [want]

    clip = tmp_path / "clip"
    run(tunevl.load_recipe("quickstart", quick(tiny_clip_path, clip, steps=1, **{"train.eval_at_start": "false"}) + ["~data.eval"]))
    assert main(["generate", str(clip), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a clip bundle does not generate text" in err
