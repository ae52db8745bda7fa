"""The end-of-run table: untrained next to trained, in the units each metric uses."""

from tunevl.train.report import format_summary


def test_retrieval_percentages_and_change():
    text = format_summary({"base": {"i2t_R@1": 37.1, "num_images": 256}, "trained": {"i2t_R@1": 84.8, "num_images": 256},
                           "train": {"steps": 300, "final_loss": 0.39671, "seconds_this_run": 58.6}})
    assert text.splitlines() == [
        "metric         untrained     trained    change",
        "i2t_R@1             37.1        84.8     +47.7",
        "steps: 300  final loss: 0.3967  time: 58.6 s",
    ]


def test_generative_accuracy_fractions_keep_three_digits():
    lines = format_summary({"base": {"accuracy/colour": 0.2}, "trained": {"accuracy/colour": 0.5}}).splitlines()
    assert lines[1] == "accuracy/colour         0.200       0.500    +0.300"
