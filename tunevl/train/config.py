"""The ``train:`` recipe node. Names follow ``transformers.TrainingArguments`` where the meaning is the same."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from tunevl.config.check import Range

#: ``train.report_to`` values: where the loss and metrics go besides metrics.json.
ReportTo = Literal["none", "tensorboard", "wandb"]
Positive = Annotated[int, Range(ge=1)]
NonNegative = Annotated[int, Range(ge=0)]


@dataclass
class TrainConfig:
    """Training settings.

    Args:
        output_dir: Where the bundle, checkpoints, logs, metrics and the loss curve go. A folder that
            holds another run's bundle or checkpoints is refused unless ``overwrite_output_dir``
            is set or the run resumes from a checkpoint.
        overwrite_output_dir: Train into an ``output_dir`` that holds another run (its checkpoints
            are removed at the start; its bundle is replaced when the new one is complete).
        learning_rate: Peak learning rate.
        optim: ``adamw_torch`` (AdamW) or ``sgd`` (SGD with ``sgd_momentum``, as CoOp trains).
        weight_decay: Weight decay (decoupled for AdamW, L2 for SGD; not applied to biases, norms or
            the logit scale).
        adam_beta1: AdamW beta1.
        adam_beta2: AdamW beta2.
        adam_epsilon: AdamW epsilon.
        sgd_momentum: SGD momentum.
        max_grad_norm: Gradient clipping norm; 0 turns clipping off.
        per_device_train_batch_size: Records per process per micro-batch. For contrastive
            objectives the in-batch negatives are the whole micro-batch across processes.
        per_device_eval_batch_size: Records per process per evaluation batch.
        gradient_accumulation_steps: Micro-batches per optimizer step.
        num_train_epochs: Passes over the training data (ignored when ``max_steps > 0``).
        max_steps: Optimizer steps to run; -1 derives them from ``num_train_epochs``.
        lr_scheduler_type: A ``transformers.get_scheduler`` name (``cosine``, ``linear``, ``constant_with_warmup``...);
            ``tunevl validate`` checks it against transformers' ``SchedulerType``.
        warmup_ratio: Fraction of steps spent warming up (used when ``warmup_steps`` is 0).
        warmup_steps: Warm-up steps.
        bf16: Train in bfloat16 autocast. None picks bf16 on GPUs that support it, fp32 on CPU.
        deepspeed: DeepSpeed config: a JSON path or a preset name (``zero2``, ``zero3``, ``zero3_offload``).
        gradient_checkpointing: Recompute activations in the backward to save memory.
        grad_cache_chunk_size: GradCache (Gao et al. 2021): encode each micro-batch in chunks of
            this many records (>= 2) and hold activations for one chunk only, so the contrastive
            batch (``per_device_train_batch_size`` x processes) can exceed memory. Gradients are
            unchanged; each chunk is encoded twice. None: off. See ``tunevl/train/grad_cache.py``.
        logging_steps: Log the loss every this many optimizer steps.
        save_steps: Save a resumable checkpoint every this many steps; 0 saves only at the end.
        save_total_limit: Keep at most this many checkpoints (oldest deleted); None keeps all.
        eval_at_start: Evaluate the untrained model before training, for the comparison table.
        eval_steps: Also evaluate on ``data.eval`` every this many optimizer steps; 0 evaluates
            only at the start (``eval_at_start``) and at the end.
        seed: Seed for initialisation, data order and dropout.
        report_to: ``none``, ``tensorboard``, ``wandb`` or a list of them.
        run_name: Name shown by the loggers; defaults to the output folder's name.
        resume_from_checkpoint: A checkpoint folder, or ``latest`` for the newest one in ``output_dir``.
        dataloader_num_workers: Worker processes that load and preprocess records.
        progress_bar: Show a progress bar on the main process.
    """

    output_dir: str = "runs/tunevl"
    overwrite_output_dir: bool = False
    learning_rate: Annotated[float, Range(gt=0)] = 1e-4
    optim: Literal["adamw_torch", "sgd"] = "adamw_torch"
    weight_decay: Annotated[float, Range(ge=0)] = 0.0
    adam_beta1: Annotated[float, Range(ge=0, lt=1)] = 0.9
    adam_beta2: Annotated[float, Range(ge=0, lt=1)] = 0.999
    adam_epsilon: Annotated[float, Range(gt=0)] = 1e-8
    sgd_momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9
    max_grad_norm: Annotated[float, Range(ge=0)] = 1.0
    per_device_train_batch_size: Positive = 32
    per_device_eval_batch_size: Positive = 64
    gradient_accumulation_steps: Positive = 1
    num_train_epochs: Annotated[float, Range(ge=0)] = 1.0
    max_steps: Annotated[int, Range(ge=-1)] = -1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: Annotated[float, Range(ge=0, le=1)] = 0.0
    warmup_steps: NonNegative = 0
    bf16: bool | None = None
    deepspeed: str | None = None
    gradient_checkpointing: bool = False
    grad_cache_chunk_size: Annotated[int, Range(ge=2)] | None = None
    logging_steps: Positive = 10
    save_steps: NonNegative = 0
    save_total_limit: NonNegative | None = 2
    eval_at_start: bool = True
    eval_steps: NonNegative = 0
    seed: int = 42
    report_to: ReportTo | list[ReportTo] = "none"
    run_name: str | None = None
    resume_from_checkpoint: str | None = None
    dataloader_num_workers: NonNegative = 0
    progress_bar: bool = True

    def __post_init__(self):
        # tunevl validate reports these with file:line (the annotations' Range); this guards direct use.
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("per_device_train_batch_size and gradient_accumulation_steps must be >= 1")
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_train_epochs <= 0):
            raise ValueError("set max_steps > 0 or num_train_epochs > 0")
        if self.grad_cache_chunk_size is not None and self.grad_cache_chunk_size < 2:
            raise ValueError("grad_cache_chunk_size must be >= 2 (records per chunk), or null for no GradCache")
        if self.eval_steps < 0:
            raise ValueError("eval_steps must be >= 0 (0: evaluate only at the start and the end)")
        if self.max_grad_norm < 0:
            raise ValueError("max_grad_norm must be >= 0 (0 turns clipping off)")

    @property
    def loggers(self) -> list[str]:
        items = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        return [x for x in items if x not in ("none", "")]


@dataclass
class EvalConfig:
    """The ``eval:`` recipe node: what to measure on ``data.eval`` (see :func:`tunevl.eval.evaluate`).

    Each evaluation runs when the data supports it and is turned on here.

    Args:
        retrieval: Image→text and text→image recall@k, on records with ``text`` or ``captions``.
        ks: The k values of recall@k.
        dedupe_captions: Pool identical caption strings into one text query relevant to every
            image that carries it. None (default): pool for records with one ``text`` each
            (synthetic sets repeat captions across images); keep every caption its own query
            for records with ``captions``, the standard COCO/Flickr30k protocol.
        zeroshot: Zero-shot classification accuracy, on records with ``label`` when the
            dataset has ``classnames``.
        templates: Prompt templates for zero-shot, ``{}`` standing for the class name;
            several are ensembled (mean of normalised embeddings, renormalised). A model with
            learned text prompts (CoOp, CoCoOp) uses those instead.
        zeroshot_ks: The k values of top-k zero-shot accuracy.
        base_to_new: Also report CoCoOp's base-to-new accuracies: the first half of the classes
            (base) and the second half (new), each among its own classes, and their harmonic mean.
        max_samples: Evaluate on the first N records only (quicker evaluations during
            training); None uses them all.
        benchmarks: Benchmarks to run with every evaluation, each a ``{_component_: <name>, ...}``
            node of :data:`tunevl.eval.benchmarks.BENCHMARKS` (``sugarcrepe``, ``aro_vg_relation``,
            ``winoground``, ``mmvp_vlm``, ``countbench``...); they run even without ``data.eval``.
    """

    retrieval: bool = True
    ks: list[Positive] = field(default_factory=lambda: [1, 5, 10])
    dedupe_captions: bool | None = None
    zeroshot: bool = True
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    zeroshot_ks: list[Positive] = field(default_factory=lambda: [1, 5])
    base_to_new: bool = False
    max_samples: Positive | None = None
    benchmarks: list[dict] = field(default_factory=list)

    def __post_init__(self):
        from tunevl.eval.zeroshot import check_templates

        if not self.ks or not self.zeroshot_ks or min(self.ks + self.zeroshot_ks) < 1:
            raise ValueError("ks and zeroshot_ks must be non-empty lists of k >= 1")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError("max_samples must be >= 1, or null for all records")
        self.templates = check_templates(self.templates)
