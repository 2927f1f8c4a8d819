"""Library side of `recipes/train.py` (supernet training for image classification): the supernet, the data loaders,
the teachers, the optimiser and its schedule, subnet validation and the supernet folders a run saves (`final/`,
`snapshots/`). The loop's mechanics (launch, the sandwich step and its accounting, the run log, checkpoints, the
summary) are `nasvit_hf.training.loop`, shared with the segmentation recipe. The recipe only wires these to Accelerate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from ..calibration import calibrate_batchnorm, preserved_batchnorm_statistics
from ..loading import read_nasvit_config
from ..models import NASViTConfig, NASViTForImageClassification
from ..models.image_processing_nasvit import NASViTImageProcessor
from ..utils.io import staging_folder
from . import loop
from .augment import IMAGENET_MEAN, IMAGENET_STD
from .config import TrainingConfig
from .data import (
    ImageClassificationDataset,
    ImageDataSource,
    TrainingSplits,
    collate_image_batch,
    load_training_splits,
)
from .pipeline import build_eval_processor, build_target_transform, training_transform_of
from .schedule import build_lr_scheduler, build_param_groups
from .teachers import TeacherEnsemble, load_teacher_ensemble

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ..data.holdout import HoldoutSplit
    from .ema import ModelEMA

__all__ = [
    "SNAPSHOTS_FOLDER",
    "TABLE4_EPOCHS",
    "ClassificationData",
    "EvalLoaders",
    "build_classification_data",
    "build_optimizer",
    "build_schedule",
    "build_supernet",
    "check_eval_archs",
    "load_classification_splits",
    "load_teachers",
    "loader_settings",
    "resolve_snapshot_epochs",
    "save_final_supernets",
    "save_snapshot",
    "search_space_of",
    "validate_subnets",
]

# (calibration loader, validation loader or None) of a resolution: `ClassificationData.eval_loaders`.
EvalLoaders = Callable[[int], tuple[DataLoader, DataLoader | None]]

# Names that lived here before the loop's mechanics moved to `nasvit_hf.training.loop`: importing them from here still
# works, with a FutureWarning. (`build_param_groups` moved to `nasvit_hf.training.schedule`; build_optimizer uses it,
# so it is still a name here.)
_MOVED = {name: loop for name in loop.__all__ if name not in ("save_checkpoint_if_due", "session_counts")}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"nasvit_hf.training.classification.{name} moved to {module.__name__}.{name}; import it from there.",
        FutureWarning,
        stacklevel=2,
    )
    return getattr(module, name)


def search_space_of(config: TrainingConfig) -> dict[str, Any]:
    from ..presets import get_search_space

    return get_search_space(config.search_space) if isinstance(config.search_space, str) else config.search_space


def check_eval_archs(archs: list[dict[str, Any]], search_space: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """eval_archs validated against the search space, named arch0, arch1, ...; a ValueError says which is wrong."""
    from ..models.search_space_nasvit import validate_arch

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
    validation) loaders preprocessed by it at an arch's resolution: the tensors the extracted subnet's processor gives.
    `mixing` maps (pixel values, labels) to the largest subnet's targets (mixup/cutmix, label smoothing) or is None."""

    label_names: list[str]
    train_dataset: ImageClassificationDataset
    sampler_generator: torch.Generator
    train_loader: DataLoader
    eval_processor: NASViTImageProcessor
    eval_loaders: EvalLoaders
    has_validation: bool
    mixing: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None


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
    config: TrainingConfig,
    splits: TrainingSplits,
    image_size: int,
    max_resolution: int,
    prepare: Callable[[DataLoader], DataLoader] | None = None,
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
    excluded from training (`nasvit_hf.data.carve_holdout`; save it beside the supernet for search and extraction)."""
    return load_training_splits(
        ImageDataSource.from_config(config),
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


@torch.no_grad()
def validate_subnets(
    model: nn.Module,
    archs: dict[str, dict],
    eval_loaders: EvalLoaders,
    calibration_batches: int,
    top_k: list[int],
    accelerator: Accelerator,
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


def _save_with_largest_subnet(supernet: nn.Module, folder: Path, processor: NASViTImageProcessor | None) -> None:
    """`supernet` saved to `folder` with its largest subnet active, beside `processor` at that subnet's resolution:
    the supernet folder every trained weight is written as (final/, final/raw/, snapshots)."""
    supernet.sample_max_subnet()
    folder.mkdir(parents=True, exist_ok=True)
    if processor is not None:
        processor.at_resolution(supernet.config.arch["resolution"]).save_pretrained(folder)
    supernet.save_pretrained(folder)


def save_final_supernets(
    output_dir: str | Path,
    model: nn.Module,
    ema: ModelEMA | None = None,
    processor: NASViTImageProcessor | None = None,
    holdout: HoldoutSplit | None = None,
) -> dict[str, str]:
    """Save the trained supernet with the largest subnet active: `final/` holds what validation evaluated — the EMA
    weights when an EMA is kept — with `processor` (the evaluation protocol, at the largest resolution), and
    `final/raw/` the raw weights beside it (only with an EMA). Written into a staging folder: complete or absent.
    `holdout` (a `nasvit_hf.data.HoldoutSplit`, when training carved one out) is saved as `final/holdout.json`: search
    and extraction find it beside the supernet (or the folder above, for `final/raw/`)."""
    evaluated = ema.module if ema is not None else model
    final = Path(output_dir) / "final"
    with staging_folder(final) as temporary:
        for supernet, folder in (
            (evaluated, Path(temporary)),
            (model if ema is not None else None, Path(temporary) / "raw"),
        ):
            if supernet is not None:
                _save_with_largest_subnet(supernet, folder, processor)
        if holdout is not None:
            holdout.save(temporary)
    saved = {"final_model": str(final)}
    if ema is not None:
        saved["raw_model"] = str(final / "raw")
    return saved


# The epochs at which the paper's Table 4 measures the gradient-conflict ratio, of a 360-epoch run.
TABLE4_EPOCHS = (1, 90, 180, 270, 360)
SNAPSHOTS_FOLDER = "snapshots"


def resolve_snapshot_epochs(snapshot_epochs: str | list[int] | None, num_epochs: int) -> list[int]:
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
        _save_with_largest_subnet(model, Path(temporary), processor)
    model.set_active_subnet(active)
    return target


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


def build_schedule(
    config: TrainingConfig, optimizer: torch.optim.Optimizer, batches_per_epoch: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler, int, int]:
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
