"""The end-of-run summary: trained adapter next to the untrained model."""

from __future__ import annotations


def format_summary(metrics: dict) -> str:
    base, trained = metrics.get("base", {}), metrics.get("trained", {})
    def benchmark(k: str, v) -> bool:  # "<benchmark>/<metric>", a percentage (tunevl.eval.benchmarks)
        return "/" in k and isinstance(v, (int, float)) and not k.rsplit("/", 1)[-1].startswith("num_")

    shown = lambda k, v: "_R@" in k or k.startswith(("zeroshot_", "accuracy")) or benchmark(k, v)  # noqa: E731
    keys = [k for k, v in trained.items() if shown(k, v)] or [k for k, v in base.items() if shown(k, v)]
    lines = []
    if keys:
        width = max(12, *(len(k) + 2 for k in keys))
        percent = any("_R@" in k or k.startswith("zeroshot_") or ("/" in k and not k.startswith("accuracy")) for k in keys)
        digits = 1 if percent else 3  # percentages vs fractions
        lines.append(f"{'metric':<{width}}{'untrained':>12}{'trained':>12}{'change':>10}")
        for k in keys:
            b, t = base.get(k), trained.get(k)
            fmt = lambda v: f"{v:12.{digits}f}" if v is not None else f"{'-':>12}"  # noqa: E731
            change = f"{t - b:+10.{digits}f}" if b is not None and t is not None else f"{'':>10}"
            lines.append(f"{k:<{width}}{fmt(b)}{fmt(t)}{change}")
    info = metrics.get("train", {})
    if info:
        lines.append(f"steps: {info.get('steps')}  final loss: {info.get('final_loss'):.4f}  time: {info.get('seconds_this_run')} s"
                     if info.get("final_loss") is not None else f"steps: {info.get('steps')}")
    return "\n".join(lines)


def print_summary(metrics: dict, output_dir: str) -> None:
    text = format_summary(metrics)
    if text:
        print("\n" + text)
    print(f"bundle, metrics.json and loss_curve.png in {output_dir}")
