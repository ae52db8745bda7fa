"""Compositional and counting benchmarks, each read from its own released files.

A recipe lists them under ``eval.benchmarks`` (each node one reader and its arguments); they run
with the other evaluations (at the start, every ``train.eval_steps``, at the end) and their metrics
join ``metrics.json`` and the model card as ``<name>/<metric>``::

    eval:
      benchmarks:
        - {_component_: sugarcrepe, path: sugar-crepe/data, image_root: coco/val2017}
        - {_component_: countbench, path: CountBench.json, image_root: countbench_images}

``tunevl eval MODEL --benchmark NAME --data PATH`` runs one from the command line. Every benchmark
scores any object with ``embed_images`` / ``embed_texts`` (a bundle, a base checkpoint, an LVLM
embedder).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tunevl.eval.benchmarks.aro import AroAttribution, AroCocoOrder, AroFlickrOrder, AroRelation
from tunevl.eval.benchmarks.base import Benchmark
from tunevl.eval.benchmarks.countbench import CountBench
from tunevl.eval.benchmarks.mmvp import MmvpVlm
from tunevl.eval.benchmarks.sugarcrepe import SugarCrepe
from tunevl.eval.benchmarks.synthetic import SyntheticBindingBenchmark, SyntheticCounting
from tunevl.eval.benchmarks.winoground import Winoground

log = logging.getLogger("tunevl")

#: Names of the benchmark readers (``_component_`` of an ``eval.benchmarks`` node, ``tunevl eval --benchmark``).
BENCHMARKS: dict[str, type[Benchmark]] = {cls.key: cls for cls in (
    SugarCrepe, AroRelation, AroAttribution, AroCocoOrder, AroFlickrOrder, Winoground, MmvpVlm, CountBench,
    SyntheticCounting, SyntheticBindingBenchmark,
)}

_LOADED: dict[str, Benchmark] = {}


def build_benchmark(node: dict, key: tuple = ("eval", "benchmarks")) -> Benchmark:
    """Check a ``{_component_: name, **arguments}`` node and read the benchmark's files.

    Errors name the node (``eval.benchmarks.0.path: no such file: ...``).
    """
    from tunevl.config.check import check_component
    from tunevl.config.schema import KINDS
    from tunevl.errors import DataError

    cls = check_component(node, BENCHMARKS, key=key, kind=KINDS["eval"])  # a dotted path: a Benchmark class only
    try:
        return cls(**{k: v for k, v in node.items() if k != "_component_"})
    except DataError as err:
        if err.arg:
            raise DataError(err.detail, arg=f"{'.'.join(map(str, key))}.{err.arg}") from None
        raise


def load_benchmarks(nodes: list[dict] | None) -> list[Benchmark]:
    """The benchmarks of ``eval.benchmarks``, read once per process (later calls reuse them)."""
    out = []
    for k, node in enumerate(nodes or []):
        cache_key = json.dumps(node, sort_keys=True, default=str)
        if cache_key not in _LOADED:
            _LOADED[cache_key] = build_benchmark(node, ("eval", "benchmarks", k))
            log.info("eval.benchmarks.%d: %s", k, _LOADED[cache_key])
        out.append(_LOADED[cache_key])
    return out


def run_benchmarks(encoder, benchmarks: list[Benchmark | dict], batch_size: int | None = None) -> dict[str, Any]:
    """Metrics of ``encoder`` on each benchmark, as ``<name>/<metric>``; the model runs in eval mode."""
    items = [b if isinstance(b, Benchmark) else load_benchmarks([b])[0] for b in benchmarks]
    model = getattr(encoder, "model", None)
    was_training = getattr(model, "training", False)
    if model is not None:
        model.eval()
    try:
        out: dict[str, Any] = {}
        for bench in items:
            out.update({f"{bench.name}/{k}": v for k, v in bench.evaluate(encoder, batch_size).items()})
        return out
    finally:
        if model is not None:
            model.train(was_training)


def save_plots(metrics: dict[str, Any], out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Draw every ``<name>/confusion`` matrix of ``metrics`` as ``<out_dir>/<prefix><name>_confusion.png``."""
    from tunevl.eval.counting import COUNT_NUMBERS, plot_confusion

    paths = []
    for key, value in metrics.items():
        if key.endswith("/confusion") and isinstance(value, list) and value:
            name = key[: -len("/confusion")]
            numbers = COUNT_NUMBERS if len(value) == len(COUNT_NUMBERS) else list(range(2, 2 + len(value)))
            path = Path(out_dir) / f"{prefix}{name.replace('/', '_')}_confusion.png"
            paths.append(plot_confusion(value, path, numbers, title=name))
    return paths


__all__ = ["BENCHMARKS", "Benchmark", "build_benchmark", "load_benchmarks", "run_benchmarks", "save_plots"]
