"""Library side of `recipes/train.py` (supernet training for image classification): the model, the data loaders,
the teacher, the optimiser with timm-style parameter groups, subnet validation and the training log. The recipe
only wires these to Accelerate.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from ..calibration import calibrate_batchnorm, preserved_batchnorm_statistics
from ..loading import read_nasvit_config
from ..models import NASViTConfig, NASViTForImageClassification
from ..models.image_processing_nasvit import NASViTImageProcessor
from ..utils.io import atomic_write_json, staging_folder
from .augment import IMAGENET_MEAN, IMAGENET_STD
from .config import TrainingConfig
from .data import ImageClassificationDataset, TrainingSplits, collate_image_batch, load_training_splits
from .pipeline import build_eval_processor, build_target_transform, training_transform_of
from .schedule import build_lr_scheduler
from .teachers import TeacherEnsemble, load_teacher_ensemble

__all__ = [
    "ClassificationData",
    "build_classification_data",
    "build_param_groups",
    "build_supernet",
    "check_eval_archs",
    "check_nonfinite_limit",
    "load_teachers",
    "loader_settings",
    "logged_archs",
    "count_skipped_step",
    "load_classification_splits",
    "multi_cpu_launch",
    "resolve_snapshot_epochs",
    "sandwich_update",
    "save_final_supernets",
    "save_snapshot",
    "search_space_of",
    "setup_logging",
    "step_record",
    "validate_subnets",
    "write_summary",
]


def search_space_of(config: TrainingConfig) -> dict[str, Any]:
    from ..presets import get_search_space

    return get_search_space(config.search_space) if isinstance(config.search_space, str) else config.search_space


def check_eval_archs(archs: list, search_space: dict) -> dict[str, dict]:
    """eval_archs validated against the search space, named arch0, arch1, ...; a ValueError says which is wrong."""
    from ..models.configuration_nasvit import validate_arch

    checked = {}
    for index, arch in enumerate(archs):
        try:
            checked[f"arch{index}"] = validate_arch(search_space, arch)
        except ValueError as error:
            raise ValueError(f"eval_archs[{index}] is not in the search space: {error}") from None
    return checked


def build_supernet(config: TrainingConfig, label_names: list[str]) -> NASViTForImageClassification:
    """A fresh supernet of the config's search space, or `model_name_or_path` (whose labels must match the data)."""
    if config.model_name_or_path:
        read_nasvit_config(config.model_name_or_path, "a NASViT supernet")  # transformers would convert any config
        model = NASViTForImageClassification.from_pretrained(config.model_name_or_path)
        if model.config.num_labels != len(label_names):
            raise ValueError(
                f"{config.model_name_or_path} has {model.config.num_labels} labels, the data has {len(label_names)}."
            )
        return model
    id2label = dict(enumerate(label_names))
    model_config = NASViTConfig(
        search_space=search_space_of(config),
        num_labels=len(label_names),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        switchable_scaling=config.switchable_scaling,
        drop_path_rate=config.drop_path_rate,
        drop_connect_rate=config.drop_connect_rate,
        classifier_dropout=config.dropout,
    )
    return NASViTForImageClassification(model_config)


@dataclass
class ClassificationData:
    """The loaders of a run. `train_dataset.set_epoch` and `sampler_generator.manual_seed(seed + epoch)` make each
    epoch's order and augmentation depend only on (seed, epoch), so a resumed run sees the same images.
    `eval_processor` is the run's evaluation protocol; `eval_loaders(resolution)` gives the (calibration,
    validation) loaders preprocessed by it at an arch's resolution: the tensors the exported subnet's processor gives.
    `mixing` maps (pixel values, labels) to the largest subnet's targets (mixup/cutmix, label smoothing) or is None."""

    label_names: list[str]
    train_dataset: ImageClassificationDataset
    sampler_generator: torch.Generator
    train_loader: DataLoader
    eval_processor: NASViTImageProcessor
    eval_loaders: Any
    has_validation: bool
    mixing: Any


def loader_settings(config: TrainingConfig) -> dict[str, Any]:
    """The DataLoader keyword arguments every loader of a run shares: collate, workers, pinning, prefetching (the
    worker-only ones only with workers, as torch requires). `persistent_workers` is the training loader's alone: the
    calibration and validation loaders (one pair per resolution) would otherwise keep their workers idle all run."""
    settings: dict[str, Any] = {
        "collate_fn": collate_image_batch,
        "num_workers": config.num_workers,
        "pin_memory": torch.cuda.is_available() if config.pin_memory is None else config.pin_memory,
    }
    if config.num_workers > 0 and config.prefetch_factor is not None:
        settings["prefetch_factor"] = config.prefetch_factor
    return settings


def build_classification_data(
    config: TrainingConfig, splits: tuple, image_size: int, max_resolution: int, prepare: Any = None
) -> ClassificationData:
    """Training loader (augmented with the config's `data_pipeline`, seeded), the evaluation processor
    (`eval_crop_mode` at `max_resolution`) and a cached factory of per-resolution calibration / validation loaders
    (`prepare`, e.g. `accelerator.prepare`, is applied to each validation loader)."""
    train_split, validation_split, label_names = splits[:3]
    train_transform = training_transform_of(config, image_size)
    columns = (config.image_column, config.label_column)
    train_dataset = ImageClassificationDataset(train_split, train_transform, *columns, seed=config.seed)
    sampler_generator = torch.Generator()
    common = loader_settings(config)
    train_loader = DataLoader(
        train_dataset,
        batch_size=config.per_device_train_batch_size,
        sampler=RandomSampler(train_dataset, generator=sampler_generator),
        drop_last=True,
        persistent_workers=config.persistent_workers and config.num_workers > 0,
        **common,
    )
    eval_processor = build_eval_processor(config.eval_crop_mode, max_resolution)
    cache: dict[int, tuple] = {}

    def eval_loaders(resolution: int) -> tuple:
        if resolution not in cache:
            processor = eval_processor.at_resolution(resolution)

            def transform(image):
                return processor(image, return_tensors="pt")["pixel_values"][0]

            if config.calibration_transform == "training":  # augmented image_size crops, seeded per image
                calibration_dataset = ImageClassificationDataset(
                    train_split, train_transform, *columns, seed=config.seed
                )
            else:
                calibration_dataset = ImageClassificationDataset(train_split, transform, *columns)
            calibration_loader = DataLoader(
                calibration_dataset,
                batch_size=config.per_device_train_batch_size,
                sampler=RandomSampler(calibration_dataset, generator=torch.Generator().manual_seed(config.seed)),
                **common,
            )
            validation_loader = None
            if validation_split is not None:
                validation_loader = DataLoader(
                    ImageClassificationDataset(validation_split, transform, *columns),
                    batch_size=config.per_device_eval_batch_size,
                    **common,
                )
                if prepare is not None:
                    validation_loader = prepare(validation_loader)
            cache[resolution] = (calibration_loader, validation_loader)
        return cache[resolution]

    mixing = build_target_transform(
        config.data_pipeline,
        len(label_names),
        mixup_alpha=config.mixup_alpha,
        cutmix_alpha=config.cutmix_alpha,
        mixup_prob=config.mixup_prob,
        mixup_switch_prob=config.mixup_switch_prob,
        label_smoothing=config.label_smoothing,
    )
    return ClassificationData(
        label_names,
        train_dataset,
        sampler_generator,
        train_loader,
        eval_processor,
        eval_loaders,
        validation_split is not None,
        mixing,
    )


def load_classification_splits(config: TrainingConfig) -> TrainingSplits:
    """(train split, validation split or None, label names, held-out split or None, its rows) of the config's
    dataset: with `holdout_per_class`, a class-balanced, seeded split is carved out of the training images and
    excluded from training (`nasvit_hf.data.carve_holdout`; save it beside the supernet for search and export)."""
    return load_training_splits(
        config.dataset,
        config.train_split,
        config.validation_split,
        config.image_column,
        config.label_column,
        config.dataset_config,
        config.data_dir,
        config.max_train_samples,
        config.max_eval_samples,
        holdout_per_class=config.holdout_per_class,
        holdout_seed=config.seed if config.holdout_seed is None else config.holdout_seed,
    )


def load_teachers(
    config: TrainingConfig, label_names: list[str], image_size: int, device: torch.device
) -> TeacherEnsemble | None:
    """The frozen teacher ensemble of `config.teachers` (`load_teacher_ensemble`: labels checked by name, each
    teacher fed in its own input form, mean of softmax(logits / teacher_temperature)), or None."""
    if not config.teachers:
        return None
    return load_teacher_ensemble(
        config.teachers,
        label_names,
        IMAGENET_MEAN,
        IMAGENET_STD,
        config.teacher_temperature,
        default_size=(image_size, image_size),
        device=device,
    )


def build_param_groups(
    model: nn.Module,
    weight_decay: float,
    lr_multipliers: dict[str, float] | None = None,
    learning_rate: float | None = None,
    no_decay_for_norms_and_tables: bool = True,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups, timm's way: parameters with one dimension (norms, biases) and those the model
    names in `no_weight_decay()` get no weight decay. `lr_multipliers` ({name prefix: factor}, with `learning_rate`)
    puts the parameters under a prefix in their own groups at `factor * learning_rate` (e.g. a decode head at 10x).
    Groups come in a fixed order (the rest first, then each prefix; decay before no decay); empty ones are dropped.
    With `no_decay_for_norms_and_tables=False` every parameter is decayed."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    multipliers = dict(lr_multipliers or {})
    if multipliers and learning_rate is None:
        raise ValueError("lr_multipliers need learning_rate (the base rate they multiply).")
    buckets: dict[tuple[str | None, bool], list[nn.Parameter]] = {}
    order = [None, *multipliers]
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        prefix = next((p for p in multipliers if name.startswith(p)), None)
        decayed = not no_decay_for_norms_and_tables or not (parameter.ndim <= 1 or name in skip)
        buckets.setdefault((prefix, decayed), []).append(parameter)
    groups = []
    for prefix in order:
        for decayed in (True, False):
            params = buckets.get((prefix, decayed))
            if not params:
                continue
            group: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decayed else 0.0}
            if learning_rate is not None:
                group["lr"] = learning_rate * (multipliers[prefix] if prefix is not None else 1.0)
            groups.append(group)
    return groups


@torch.no_grad()
def validate_subnets(
    model: nn.Module,
    archs: dict[str, dict],
    eval_loaders: Any,
    calibration_batches: int,
    top_k: list[int],
    accelerator: Any,
) -> dict[str, dict[str, float]]:
    """`{name: {"top1": %, "top5": %}}` of each arch after BN recalibration on training batches, both through
    `eval_loaders(arch resolution)` → (calibration, validation) loaders. The model's BN statistics, active arch,
    train/eval mode and the global RNG are as before afterwards."""
    from ..metrics import load_accuracy_metric

    module = accelerator.unwrap_model(model)
    active, was_training = module.active_arch, module.training
    results: dict[str, dict[str, float]] = {}
    metric = load_accuracy_metric()  # compute() empties it for the next arch
    with torch.random.fork_rng(devices=[]), preserved_batchnorm_statistics(module):
        for name, arch in archs.items():
            module.set_active_subnet(arch)
            calibration_loader, validation_loader = eval_loaders(arch["resolution"])
            calibrate_batchnorm(module, calibration_loader, calibration_batches)
            module.eval()
            for batch in validation_loader:
                with accelerator.autocast():
                    logits = module(pixel_values=batch["pixel_values"]).logits.float()
                logits, labels = accelerator.gather_for_metrics((logits, batch["labels"]))
                metric.add_batch(predictions=logits.cpu().numpy(), references=labels.cpu().numpy())
            scores = metric.compute(top_k=top_k)
            results[name] = {"top1": 100.0 * scores["accuracy"]}
            for k in top_k[1:]:
                results[name][f"top{k}"] = 100.0 * scores[f"top{k}_accuracy"]
    module.set_active_subnet(active)
    module.train(was_training)
    return results


def multi_cpu_launch() -> bool:
    """True for a multi-process launch on a machine without GPUs. Accelerate then needs `cpu=True` to run MULTI_CPU
    (gloo): without it, `accelerate launch --multi_gpu` / torchrun on CPU gives every process a one-process state."""
    has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    return not has_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1


def step_record(step: int, epoch: int, lr: float, output: Any) -> dict[str, Any]:
    """One line of `train_log.jsonl` for a sandwich step's output."""
    return {
        "step": step,
        "epoch": epoch,
        "lr": lr,
        **{f"loss/{name}": value for name, value in output.losses.items()},
        "conflict_ratio": output.conflict_ratio,
        "conflict_ratio_after": output.conflict_ratio_after,
        "grad_norm/sup": output.sup_grad_norm,
        "grad_norm/sub": output.sub_grad_norm,
        "projected": int(output.projected),
        "skipped": int(output.skipped),
    }


def logged_archs(output: Any, accelerator: Any, per_rank: bool) -> dict[str, Any]:
    """The archs a step trained, for its log line: `{"archs": {name: arch}}` (this rank's), and with per-rank subnet
    sampling on several processes `"archs_per_rank"`: every rank's (a collective: call it on every rank)."""
    logged: dict[str, Any] = {"archs": dict(output.archs)}
    if per_rank and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        logged["archs_per_rank"] = gather_object([dict(output.archs)])
    return logged


def append_log_line(path: str | Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def write_summary(output_dir: str | Path, summary: dict[str, Any], validation: dict[str, Any]) -> str:
    """Write `summary.json` atomically; return the human summary printed at the end of a run."""
    atomic_write_json(Path(output_dir) / "summary.json", summary)
    steps, session = summary["steps"], summary.get("session_steps", summary["steps"])
    line = f"Trained {session} sandwich steps in {summary['seconds']:.0f} s"
    if summary.get("resumed_from_step") is None:
        line += f" ({summary['skipped_steps']} skipped)."
    else:
        line += (
            f", resumed at step {summary['resumed_from_step']}: the run is at step {steps} "
            f"({summary['skipped_steps']} of its steps skipped)."
        )
    lines = [line]
    if "mean_conflict_ratio" in summary:
        after = summary.get("mean_conflict_ratio_after")
        lines.append(
            f"Mean gradient-conflict ratio: {summary['mean_conflict_ratio']:.3f} before combination"
            + (f", {after:.3f} after" if after is not None else "")
        )
    for name, scores in validation.items():
        lines.append(f"  {name:>9}: " + ", ".join(f"{k} {v:.2f}%" for k, v in scores.items()))
    if "final_model" in summary:
        weights = "EMA weights; raw weights in final/raw" if "raw_model" in summary else "weights"
        lines.append(f"Supernet saved to {summary['final_model']} ({weights}; AutoModelForImageClassification).")
    return "\n".join(lines)


def nanmean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def setup_logging(is_main_process: bool = True) -> None:
    """The recipes' log format; the libraries that chatter at INFO are kept at WARNING."""
    import logging

    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if is_main_process else logging.WARNING,
    )
    for noisy in ("datasets", "evaluate", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def sandwich_update(
    trainer: Any,
    optimizer: torch.optim.Optimizer,
    batches: Any,
    archs: list,
    accelerator: Any,
    *,
    accumulation: int = 1,
    mixing: Any = None,
    teacher: nn.Module | None = None,
    project: bool = True,
) -> Any:
    """One optimiser step of sandwich training: `accumulation` micro-batches from `batches` (mixed, with the
    teachers' soft targets when given: `teacher(pixel_values)` → probabilities, e.g. a `TeacherEnsemble`) through
    `trainer.accumulate`, then `trainer.step`."""
    for _ in range(accumulation):
        batch = next(batches)
        pixel_values, targets = batch["pixel_values"], batch["labels"]
        if mixing is not None:
            pixel_values, targets = mixing(pixel_values, targets)
        teacher_probs = None
        if teacher is not None:
            with torch.no_grad(), accelerator.autocast():
                teacher_probs = teacher(pixel_values)
        trainer.accumulate(pixel_values, targets, archs, teacher_probs)
    scale = accelerator.scaler.get_scale() if accelerator.scaler is not None else 1.0
    return trainer.step(optimizer, project=project, grad_scale=scale)


def count_skipped_step(state: Any, output: Any, logger: Any) -> None:
    """Update the skipped-step counters of `state` for `output` (before the step is counted); warn for a skipped
    step."""
    state.skipped_steps += int(output.skipped)
    state.consecutive_nonfinite = state.consecutive_nonfinite + 1 if output.skipped else 0
    if output.skipped:
        logger.warning(
            f"step {state.global_step + 1}: {output.skip_reason} (losses {output.losses}); step skipped, weights and "
            "optimizer state untouched"
        )


def check_nonfinite_limit(state: Any, output: Any, max_consecutive: int) -> None:
    """Stop the run (RecipeError, saying what to change) after `max_consecutive` skipped steps in a row."""
    from ..config_system import RecipeError

    if state.consecutive_nonfinite >= max_consecutive:
        raise RecipeError(
            f"{state.consecutive_nonfinite} consecutive steps had non-finite losses or gradients (last: "
            f"{output.skip_reason}). Lower learning_rate, enable max_grad_norm, or use bf16/fp32 instead of fp16."
        )


def save_final_supernets(
    output_dir: str | Path,
    model: nn.Module,
    ema: Any = None,
    processor: NASViTImageProcessor | None = None,
    holdout: Any = None,
) -> dict[str, str]:
    """Save the trained supernet with the largest subnet active: `final/` holds what validation evaluated — the EMA
    weights when an EMA is kept — with `processor` (the evaluation protocol, at the largest resolution), and
    `final/raw/` the raw weights beside it (only with an EMA). Written into a staging folder: complete or absent.
    `holdout` (a `nasvit_hf.data.HoldoutSplit`, when training carved one out) is saved as `final/holdout.json`: search
    and export find it beside the supernet (or the folder above, for `final/raw/`)."""
    evaluated = ema.module if ema is not None else model
    final = Path(output_dir) / "final"
    with staging_folder(final) as temporary:
        for supernet, folder in (
            (evaluated, Path(temporary)),
            (model if ema is not None else None, Path(temporary) / "raw"),
        ):
            if supernet is None:
                continue
            supernet.sample_max_subnet()
            folder.mkdir(parents=True, exist_ok=True)
            if processor is not None:
                processor.at_resolution(supernet.config.arch["resolution"]).save_pretrained(folder)
            supernet.save_pretrained(folder)
        if holdout is not None:
            holdout.save(temporary)
    saved = {"final_model": str(final)}
    if ema is not None:
        saved["raw_model"] = str(final / "raw")
    return saved


# The epochs at which the paper's Table 4 measures the gradient-conflict ratio, of a 360-epoch run.
TABLE4_EPOCHS = (1, 90, 180, 270, 360)
SNAPSHOTS_FOLDER = "snapshots"


def resolve_snapshot_epochs(snapshot_epochs: Any, num_epochs: int) -> list[int]:
    """The (1-based) epochs whose end saves a snapshot: `snapshot_epochs` as a list of epochs, or `"table4"` for
    Table 4's epochs 1, 90, 180, 270 and 360 of 360 scaled to `num_epochs` (round(e · num_epochs / 360), at least 1):
    epochs 1, 100, 200, 300, 400 of a 400-epoch run. None or [] = no snapshots. Epochs past the run are dropped."""
    if snapshot_epochs in (None, []):
        return []
    if snapshot_epochs == "table4":
        epochs = {max(1, round(epoch * num_epochs / TABLE4_EPOCHS[-1])) for epoch in TABLE4_EPOCHS}
    else:
        epochs = set(snapshot_epochs)
    return sorted(epoch for epoch in epochs if epoch <= num_epochs)


def save_snapshot(
    output_dir: str | Path, model: nn.Module, epoch: int, processor: NASViTImageProcessor | None = None
) -> Path:
    """Save the training (raw) weights at the end of `epoch` to `<output_dir>/snapshots/epoch_<epoch>/` (a supernet
    folder, largest subnet active, with the evaluation `processor`; atomic): what `recipes/conflict_ratio.py
    --snapshots <output_dir>` sweeps for Table 4. The model's active arch is left as it was."""
    active = model.active_arch
    target = Path(output_dir) / SNAPSHOTS_FOLDER / f"epoch_{epoch}"
    with staging_folder(target) as temporary:
        model.sample_max_subnet()
        if processor is not None:
            processor.at_resolution(model.config.arch["resolution"]).save_pretrained(temporary)
        model.save_pretrained(temporary)
    model.set_active_subnet(active)
    return target


def check_distributed_type(accelerator: Any) -> None:
    """Sandwich training needs each rank's full gradients (DDP or one process), never sharded ones."""
    from ..config_system import RecipeError

    if accelerator.distributed_type.value in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise RecipeError(
            f"{accelerator.distributed_type.value} shards gradients, but the gradient combination needs every "
            "parameter's full supernet and subnet gradients on each rank: launch with DDP (--multi_gpu) instead."
        )


def build_optimizer(model: nn.Module, config: TrainingConfig, num_processes: int) -> torch.optim.AdamW:
    """AdamW over `build_param_groups` (no decay on norms, biases and `model.no_weight_decay()`); with `scale_lr`
    the learning rate is scaled by the total batch / 512 (the reference)."""
    total_batch = config.per_device_train_batch_size * num_processes * config.gradient_accumulation_steps
    learning_rate = config.learning_rate * (total_batch / 512.0 if config.scale_lr else 1.0)
    return torch.optim.AdamW(
        build_param_groups(model, config.weight_decay),
        lr=learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
    )


def build_schedule(config: TrainingConfig, optimizer: torch.optim.Optimizer, batches_per_epoch: int) -> tuple:
    """`(lr_scheduler, steps_per_epoch, max_steps)`: optimiser steps per epoch of `batches_per_epoch` batches (per
    process), the run's length (`max_steps` or whole epochs) and the warmup + decay schedule over it."""
    from ..config_system import RecipeError

    steps_per_epoch = batches_per_epoch // config.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise RecipeError(
            f"one epoch has {batches_per_epoch} batches per process, fewer than gradient_accumulation_steps="
            f"{config.gradient_accumulation_steps}: lower the batch size or the accumulation."
        )
    max_steps = config.max_steps or max(1, math.ceil(config.num_train_epochs * steps_per_epoch))
    warmup = config.warmup_steps if config.warmup_steps is not None else int(config.warmup_epochs * steps_per_epoch)
    try:
        scheduler = build_lr_scheduler(
            optimizer, config.lr_scheduler_type, warmup, max_steps, *config.schedule_rates()
        )
    except ValueError as error:
        raise RecipeError(str(error)) from None
    return scheduler, steps_per_epoch, max_steps
