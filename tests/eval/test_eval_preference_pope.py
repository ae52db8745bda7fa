"""POPE with the official answer parsing and metrics, its files read natively; image-grounded preference accuracy
against the view's own log-probs; both through ``evaluate`` (as training calls it) and ``tunevl eval``."""

from __future__ import annotations

import json

import pytest

from tunevl.data.preference import svco_conversations
from tunevl.data.sources.pope import PopeSource
from tunevl.data.synthetic import render_shapes
from tunevl.data.synthetic_contrast import SyntheticContrast
from tunevl.errors import DataError
from tunevl.eval import evaluate
from tunevl.eval.pope import parse_pope_answer, pope_metrics
from tunevl.inference import for_view
from tunevl.eval.preference import preference_accuracy
from tunevl.models import ModelConfig, load_view


@pytest.mark.parametrize("text,want", [
    ("Yes, there is a dog in the image.", "yes"), ("No, there is no dog.", "no"), ("no", "no"),
    ("There is not a dog.", "no"), ("NO", "yes"), ("None", "yes"), ("Nope.", "yes"),
    ("Yes. But no cat.", "yes"),                 # only the first sentence counts
    ("I see no,", "no"), ("no, not really", "no"), ("Not sure", "yes"), ("", "yes"),
])
def test_answers_are_parsed_as_the_official_script_does(text, want):
    assert parse_pope_answer(text) == want


def test_metrics_on_a_hand_counted_confusion():
    labels = ["yes", "yes", "yes", "no", "no", "no", "no", "yes"]
    answers = ["Yes.", "No.", "yes", "Yes", "no", "There is no", "NO", "yes it is"]
    # predictions: yes no yes yes no no yes(NO) yes -> TP 3, FN 1, FP 2, TN 2
    m = pope_metrics(labels, answers)
    assert (m["TP"], m["FN"], m["FP"], m["TN"]) == (3, 1, 2, 2)
    assert m["accuracy"] == 5 / 8 and m["precision"] == 3 / 5 and m["recall"] == 3 / 4
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35) and m["yes_ratio"] == 5 / 8
    assert pope_metrics(["yes"], ["no"])["precision"] == 0.0  # the official script would divide by zero


def _pope_files(tmp_path, n=8):
    """A POPE-shaped question set over rendered shapes: "Is there a circle/square in the image?"."""
    rows = []
    for i in range(n):
        shape = ("circle", "square")[i % 2]
        render_shapes(2, "red", shape, image_size=32, seed=i).save(tmp_path / f"COCO_val2014_{i:012d}.jpg")
        asked = ("circle", "square")[(i // 2) % 2]
        rows.append({"question_id": i + 1, "image": f"COCO_val2014_{i:012d}.jpg",
                     "text": f"Is there a {asked} in the image?", "label": "yes" if asked == shape else "no"})
    jsonl = tmp_path / "coco_pope_random.json"  # JSONL despite the name, as released
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    array = tmp_path / "gqa_pope_seem_random.json"  # the SEEM sets are pretty-printed arrays
    array.write_text(json.dumps(rows, indent=2))
    return jsonl, array, rows


def test_pope_files_are_read_natively(tmp_path):
    jsonl, array, rows = _pope_files(tmp_path)
    for path in (jsonl, array):
        src = PopeSource(str(path), prompt_suffix="\nAnswer with one word.")
        assert len(src) == len(rows)
        rec = src[3]
        assert rec["answer"] == rows[3]["label"] and rec["question_id"] == 4
        assert rec["text"] == rows[3]["text"] + "\nAnswer with one word." and str(rec["image"]).startswith(str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"question_id": 1, "image": "a.jpg", "text": "q", "label": "maybe"}) + "\n")
    with pytest.raises(DataError, match=r"bad.json:1: record 0: label: expected 'yes' or 'no'"):
        PopeSource(str(bad))


def test_pope_during_training_scores_generated_answers(tmp_path):
    jsonl, _, rows = _pope_files(tmp_path)
    view = load_view(ModelConfig("tiny-llava"))
    m = evaluate(view, PopeSource(str(jsonl)))  # what the loop calls on data.eval
    generator = for_view(view)
    answers = [generator.generate([tmp_path / r["image"]], r["text"], max_new_tokens=16) for r in rows]
    assert m == pope_metrics([r["label"] for r in rows], answers) and m["n"] == len(rows)


def test_preference_accuracy_is_the_views_log_prob_comparison():
    view = load_view(ModelConfig("tiny-qwen2-vl"))
    ds = SyntheticContrast(6, image_size=32, split="eval")
    m = preference_accuracy(view, ds, batch_size=4)
    hits, both = [], []
    for i in range(6):
        convs = svco_conversations(ds[i])[0]
        s = {k: view.sequence_logps(view.collate([c], {"messages"})).item() for k, c in convs.items()}
        a = s["chosen_with_chosen_image"] > s["rejected_with_chosen_image"]
        b = s["rejected_with_rejected_image"] > s["chosen_with_rejected_image"]
        hits += [a, b]
        both.append(a and b)
    assert m["accuracy"] == sum(hits) / 12 and m["accuracy/pairs"] == sum(both) / 6 and m["n"] == 6
    kinds = {ds[i]["contrast_kind"] for i in range(6)}
    assert {k.split("/")[1] for k in m if k.startswith("accuracy/")} == kinds | {"pairs"}
    plain = [{k: v for k, v in ds[i].items() if k != "contrast_images"} for i in range(6)]  # TRL-style pairs
    m2 = evaluate(view, plain)
    want = [view.sequence_logps(view.collate([c], {"messages"})).item()
            for r in plain for c in (svco_conversations(ds[r["index"]])[0]["chosen_with_chosen_image"],
                                     svco_conversations(ds[r["index"]])[0]["rejected_with_chosen_image"])]
    assert m2 == {"accuracy": sum(want[2 * i] > want[2 * i + 1] for i in range(6)) / 6, "n": 6}


def test_tunevl_eval_on_a_generative_model(tmp_path, capsys):
    from tunevl.cli import main
    from tunevl.models.tiny_lvlm import ensure_tiny

    jsonl, _, _ = _pope_files(tmp_path)
    folder = ensure_tiny("tiny-llava")
    assert main(["eval", folder, "--data", f"pope:{jsonl}", "--json", "--max-samples", "4"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{"):])["metrics"]  # (a first in-process DeepSpeed import prints a line)
    assert set(metrics) >= {"accuracy", "precision", "recall", "f1", "yes_ratio"} and metrics["n"] == 4
    from tunevl.data.synthetic_contrast import write_mvc

    mvc = write_mvc(tmp_path / "mvc", SyntheticContrast(4, split="eval"))
    assert main(["eval", folder, "--data", f"preference:{mvc}"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("accuracy "))
    assert "accuracy/pairs" in out and len(row.split()[-1].split(".")[1]) == 3  # fractions keep three digits
