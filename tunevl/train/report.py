"""The end-of-run summary (trained adapter next to the untrained model, evaluations during training) and
the loss-curve figure."""

from __future__ import annotations

from pathlib import Path


def is_percentage(key: str) -> bool:
    """Metrics reported as percentages (recall@k, zero-shot and base-to-new accuracy, ``<benchmark>/<metric>`` of
    :mod:`tunevl.eval.benchmarks`); others (answer, preference and POPE accuracies) are fractions."""
    benchmark = "/" in key and not key.startswith("accuracy")
    return "_R@" in key or key.startswith(("zeroshot_", "base_top", "new_top", "harmonic")) or benchmark


def _shown(key: str, value=0.0) -> bool:
    if not isinstance(value, (int, float)) or key.rsplit("/", 1)[-1].startswith("num_"):
        return False
    return is_percentage(key) or key.startswith("accuracy")


def _digits(keys) -> int:
    return 1 if any(is_percentage(k) for k in keys) else 3  # percentages vs fractions


def format_summary(metrics: dict) -> str:
    base, trained = metrics.get("base", {}), metrics.get("trained", {})
    keys = [k for k, v in trained.items() if _shown(k, v)] or [k for k, v in base.items() if _shown(k, v)]
    lines = []
    if keys:
        width = max(12, *(len(k) + 2 for k in keys))
        digits = _digits(keys)
        lines.append(f"{'metric':<{width}}{'untrained':>12}{'trained':>12}{'change':>10}")
        for k in keys:
            b, t = base.get(k), trained.get(k)
            fmt = lambda v: f"{v:12.{digits}f}" if v is not None else f"{'-':>12}"  # noqa: E731
            change = f"{t - b:+10.{digits}f}" if b is not None and t is not None else f"{'':>10}"
            lines.append(f"{k:<{width}}{fmt(b)}{fmt(t)}{change}")
    during = format_during(metrics)
    if during:
        lines += ["", during]
    info = metrics.get("train", {})
    if info:
        lines.append(f"steps: {info.get('steps')}  final loss: {info.get('final_loss'):.4f}  time: {info.get('seconds_this_run')} s"
                     if info.get("final_loss") is not None else f"steps: {info.get('steps')}")
    return "\n".join(lines)


def format_during(metrics: dict) -> str:
    """The evaluations of ``train.eval_steps`` as a table: one row per step, untrained (step 0) and final rows included."""
    during = metrics.get("during") or {}
    if not during:
        return ""
    rows = [(0, metrics["base"])] if metrics.get("base") else []
    rows += sorted(((int(step), values) for step, values in during.items()), key=lambda r: r[0])
    if metrics.get("trained") and metrics.get("train", {}).get("steps") is not None:
        rows.append((metrics["train"]["steps"], metrics["trained"]))
    keys = [k for k in dict.fromkeys(k for _, values in rows for k in values) if _shown(k)]
    if not keys:
        return ""
    digits = _digits(keys)
    widths = [max(len(k), 6 + digits) + 2 for k in keys]
    lines = ["evaluation during training", f"{'step':>6}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths))]
    for step, values in rows:
        cells = "".join(f"{values[k]:>{w}.{digits}f}" if isinstance(values.get(k), (int, float)) else f"{'-':>{w}}"
                        for k, w in zip(keys, widths))
        lines.append(f"{step:>6}{cells}")
    return "\n".join(lines)


def print_summary(metrics: dict, output_dir: str) -> None:
    text = format_summary(metrics)
    if text:
        print("\n" + text)
    print(f"bundle, metrics.json and loss_curve.png in {output_dir}")


def plot_run(history: list[dict], metrics: dict, path: Path) -> None:
    """The loss curve with the learning rate (right axis); below it, when ``train.eval_steps`` evaluated
    during training, the evaluation metrics over the steps. A run of one logged step is drawn as a point."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(0, metrics["base"])] if metrics.get("base") else []
    points += sorted(((int(s), v) for s, v in (metrics.get("during") or {}).items()), key=lambda p: p[0])
    if metrics.get("trained") and points:
        points.append((history[-1]["step"], metrics["trained"]))
    keys = [k for k in dict.fromkeys(k for _, v in points for k in v) if _shown(k)][:6]
    rows = 2 if keys and metrics.get("during") else 1
    fig, axes = plt.subplots(rows, 1, figsize=(6.5, 3.6 * rows), squeeze=False)
    ax = axes[0][0]
    marker = "o" if len(history) < 20 else None
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], marker=marker, color="tab:blue", label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss", color="tab:blue")
    ax.grid(alpha=0.3)
    if any("lr" in h for h in history):
        lr_ax = ax.twinx()
        lr_ax.plot(steps, [h.get("lr") for h in history], marker=marker, color="tab:orange", alpha=0.7, linewidth=1)
        lr_ax.set_ylabel("learning rate", color="tab:orange")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if rows == 2:
        ev = axes[1][0]
        for k in keys:
            xs = [s for s, v in points if isinstance(v.get(k), (int, float))]
            ev.plot(xs, [v[k] for s, v in points if isinstance(v.get(k), (int, float))], marker="o", label=k)
        ev.set_xlabel("step")
        ev.set_ylabel("evaluation")
        ev.grid(alpha=0.3)
        ev.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
