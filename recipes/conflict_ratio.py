#!/usr/bin/env python
"""Measure the gradient-conflict ratio of a saved NASViT supernet over a dataset, per layer (the paper's Table 4
protocol: "go through the entire ImageNet training set and calculate the percentage of negative cosine similarity
between the gradients of supernet and sub-networks ... at a per layer granularity ... under the same data
augmentation and regularization as the supernet training stage").

    python recipes/conflict_ratio.py --supernet runs/in1k/final --config runs/in1k/training_config.json \
        [--max_batches 500] [--no_projection] [--output conflicts.json] [--key value ...]
    python recipes/conflict_ratio.py --snapshots runs/in1k [--max_batches 500]     # Table 4 from one run

`--snapshots RUN` sweeps every `RUN/snapshots/epoch_<E>/` that training kept (`snapshot_epochs: table4`: epochs 1,
90, 180, 270, 360 of 360, scaled to the run's length) with the same data and archs, writes each snapshot's report
into its folder and the table (epoch -> ratio before / after combination) to `RUN/conflict_ratio_table.json`
(or `--output`); `--config` defaults to `RUN/training_config.json`.

`--config` is the run's training config (its saved training_config.json or the YAML it was trained with): data,
augmentation, teachers and sandwich settings come from it, and any `--key value` overrides it (e.g. `--data_dir`).
Each batch runs one sandwich step's forward and backward passes (largest subnet on labels or teachers, smallest and
random subnets distilled), the gradients are clipped and combined as in training, and the cosines are counted before
and after combination; no optimizer step is taken. The report (JSON) holds the overall ratio and one entry per
parameter tensor.
"""

# No `from __future__ import annotations`: the options dataclass must resolve its annotations even when the recipe
# is loaded as a file without a module in sys.modules (tests load it with importlib).
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, RandomSampler

from nasvit_hf.config_system import ConfigError, ConfigMixin, exit_on_user_error, parse_command_line, run_recipe
from nasvit_hf.loading import load_supernet
from nasvit_hf.search.config import resolve_device
from nasvit_hf.training import (
    ArchSampler,
    ImageClassificationDataset,
    ImageDataSource,
    SandwichConfig,
    SandwichTrainer,
    TrainingConfig,
    collate_image_batch,
    load_image_classification_splits,
)
from nasvit_hf.training.classification import SNAPSHOTS_FOLDER, load_teachers
from nasvit_hf.training.conflicts import sweep_gradient_conflicts
from nasvit_hf.training.pipeline import build_target_transform, training_transform_of
from nasvit_hf.utils.io import atomic_write_json

logger = logging.getLogger("nasvit_hf.conflict_ratio")


@dataclass
class ConflictOptions(ConfigMixin):
    supernet: str | None = None  # a saved supernet folder (e.g. <run>/final)
    snapshots: str | None = None  # instead: a training run's output_dir, to sweep each of its snapshots/epoch_<E>/
    split: str | None = None  # dataset split to sweep (default: the config's train_split)
    max_batches: int | None = None  # stop after this many batches (default: all)
    no_projection: bool = False  # measure the plain sum (before epoch 100)
    device: str = "auto"  # cpu, cuda, ... ("auto": cuda when available)
    output: str | None = None  # JSON report (default: <supernet>/conflict_ratio.json, <run>/conflict_ratio_table.json)

    FIELD_RANGES: ClassVar[dict[str, str]] = {"max_batches": "[1, inf)"}


def parse_args(argv=None) -> tuple[ConflictOptions, TrainingConfig]:
    """(options, the run's training config with the command line's `--key value` overrides)."""
    with exit_on_user_error():
        args, overrides, path = parse_command_line(argv, ConflictOptions, TrainingConfig, __doc__)
        if (args.supernet is None) == (args.snapshots is None):
            raise ConfigError("name one supernet (--supernet <folder>) or one run's snapshots (--snapshots <run>).")
        if path is None and args.snapshots is not None:
            path = str(Path(args.snapshots) / "training_config.json")
        if path is None:
            raise ConfigError("--config is required: the run's training config (training_config.json or YAML).")
        config = TrainingConfig.from_yaml(path, overrides)
        args.device = resolve_device(args.device, "device")
    return args, config


def snapshot_folders(run_dir: str | Path) -> list[tuple[int, Path]]:
    """`[(epoch, folder)]` of a run's `snapshots/epoch_<E>/` supernet folders, by epoch."""
    folder = Path(run_dir) / SNAPSHOTS_FOLDER
    found = []
    for path in folder.iterdir() if folder.is_dir() else []:
        match = re.fullmatch(r"epoch_(\d+)", path.name)
        if match and (path / "config.json").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def sweep_supernet(path: str | Path, config: TrainingConfig, args: ConflictOptions) -> dict:
    """The conflict sweep of the supernet at `path` (seeded: every supernet sees the same images and archs)."""
    set_seed(config.seed)
    device = torch.device(args.device)
    model = load_supernet(path, device=str(device))
    split = args.split or config.train_split
    source = ImageDataSource.from_config(config, train_split=split, validation_split=None)
    data, _, label_names = load_image_classification_splits(source)
    if len(label_names) != model.config.num_labels:
        raise ValueError(
            f"the data has {len(label_names)} classes, the supernet {model.config.num_labels}: name the data the "
            "supernet was trained on (--dataset, --data_dir)."
        )
    image_size = config.image_size or max(model.config.search_space["resolutions"])
    transform = training_transform_of(config, image_size)
    dataset = ImageClassificationDataset(data, transform, config.image_column, config.label_column, seed=config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.per_device_train_batch_size,
        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed)),
        collate_fn=collate_image_batch,
        num_workers=config.num_workers,
        drop_last=True,
    )
    targets = build_target_transform(
        config.data_pipeline, len(label_names), mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha,
        mixup_prob=config.mixup_prob, mixup_switch_prob=config.mixup_switch_prob,
        label_smoothing=config.label_smoothing,
    )  # fmt: skip
    teacher = load_teachers(config, label_names, image_size, device)
    trainer = SandwichTrainer(model, SandwichConfig.from_training_config(config))
    sampler = ArchSampler(model.config, config.num_random_subnets, seed=config.seed)
    batches = ((batch["pixel_values"], batch["labels"]) for batch in loader)
    sweep = sweep_gradient_conflicts(
        trainer, batches, sampler, project=not args.no_projection, teacher=teacher,
        max_batches=args.max_batches, batch_transform=targets,
    )  # fmt: skip
    report = {
        "supernet": str(path),
        "split": split,
        "priority": "none" if args.no_projection else config.gradient_priority,
        "granularity": config.gradient_granularity,
        **sweep.to_dict(),
    }
    print(
        f"conflict ratio of {path} over {sweep.num_batches} batches ({sweep.num_images} images of split {split!r}): "
        f"{100 * sweep.ratio_before:.1f} % before combination, {100 * sweep.ratio_after:.1f} % after "
        f"(priority {report['priority']}, {config.gradient_granularity})"
    )
    return report


def _percent(value: float | None, width: int = 5) -> str:
    return f"{100 * value:{width}.1f} %" if value is not None else "-".rjust(width + 2)


def main(argv=None) -> dict:
    args, config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if args.snapshots is not None:
        folders = snapshot_folders(args.snapshots)
        if not folders:
            raise ConfigError(
                f"{args.snapshots} holds no snapshots/epoch_<E>/ supernets: train with snapshot_epochs: table4 (or a "
                "list of epochs), or sweep one supernet with --supernet."
            )
        rows = []
        for epoch, folder in folders:
            report = sweep_supernet(folder, config, args)
            atomic_write_json(folder / "conflict_ratio.json", report)
            rows.append(
                {"epoch": epoch, "before": report["conflict_ratio_before"], "after": report["conflict_ratio_after"]}
            )
        table = {"run": str(args.snapshots), "priority": report["priority"], "epochs": rows}
        output = Path(args.output) if args.output else Path(args.snapshots) / "conflict_ratio_table.json"
        atomic_write_json(output, table)
        print("epoch | conflict ratio before | after combination")
        for row in rows:
            print(f"{row['epoch']:>5} | {_percent(row['before'], 19)} | {_percent(row['after'])}")
        print(f"table: {output}")
        return table
    report = sweep_supernet(args.supernet, config, args)
    output = Path(args.output) if args.output else Path(args.supernet) / "conflict_ratio.json"
    atomic_write_json(output, report)
    layers = sorted(report["per_layer"].items(), key=lambda item: -(item[1]["before"] or 0.0))
    print(f"report: {output}")
    for name, entry in layers[:10]:
        print(f"  {name:<70} {_percent(entry['before'])} -> {_percent(entry['after'])}")
    return report


if __name__ == "__main__":
    sys.exit(run_recipe(main))
