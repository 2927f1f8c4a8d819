#!/usr/bin/env python
"""Fine-tune NASViT + Segformer all-MLP head for semantic segmentation (NASViT, ICLR 2022, Section 4.2).

    accelerate launch recipes/train_segmentation.py                 # built-in digits scenes, CPU, a few minutes
    accelerate launch recipes/train_segmentation.py --config recipes/configs/segmentation_ade20k.yaml \\
        --model_name_or_path exported/nasvit-a1
    accelerate launch recipes/train_segmentation.py --max_steps 50 --resume_from_checkpoint latest

Every key of `nasvit_hf.training.segmentation.SegmentationTrainingConfig` can be overridden as `--key value`. The
script wires config -> data -> Accelerate -> the library: AdamW (decode head at `head_learning_rate_multiplier` x the
learning rate), poly or cosine schedule, mIoU from the package's local `evaluate` module, atomic checkpoints
(`save_state`) with resume, TensorBoard and a progress bar. The final model is saved to `<output_dir>/model`
(config, safetensors, image processor) and the scores to `<output_dir>/summary.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

import nasvit_hf  # noqa: F401  (registers the Auto classes)
from nasvit_hf.training.segmentation import (
    SegmentationTrainingConfig,
    SegmentationTransform,
    build_image_processor,
    build_segmentation_model,
    collate_segmentation_batch,
    evaluate_segmentation,
    load_segmentation_splits,
    parse_overrides,
)

logger = get_logger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "segmentation_digits.yaml"
CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")


def parse_args(argv: list[str] | None = None) -> SegmentationTrainingConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="YAML config (default: segmentation_digits.yaml)"
    )
    args, rest = parser.parse_known_args(argv)
    try:
        return SegmentationTrainingConfig.from_yaml(args.config, parse_overrides(rest))
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))


class TrainState:
    """Counters that must survive a resume (checkpointed with the rest of the state)."""

    def __init__(self):
        self.global_step = 0

    def state_dict(self) -> dict[str, int]:
        return {"global_step": self.global_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.global_step = int(state["global_step"])


def find_latest_checkpoint(output_dir: str) -> str:
    folder = Path(output_dir) / "checkpoints"
    steps = sorted(
        (int(m.group(1)), p) for p in folder.glob("step_*") if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()
    )
    if not steps:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint under {folder}.")
    return str(steps[-1][1])


def save_checkpoint(accelerator: Accelerator, config: SegmentationTrainingConfig, step: int) -> str:
    """`save_state` into a temporary folder, then an atomic rename; keeps the newest `checkpoints_total_limit`."""
    folder = Path(config.output_dir) / "checkpoints"
    final, temporary = folder / f"step_{step}", folder / f".tmp_step_{step}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        if config.checkpoints_total_limit:
            existing = sorted(
                (int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))
            )
            for _, old in existing[: -config.checkpoints_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return str(final)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, default=float))
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_args(argv)
    # The backbone stops at the last requested stage, so later stages hold parameters without gradients.
    ddp_kwargs = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(
        log_with=config.report_to if config.report_to not in (None, "none") else None,
        project_dir=config.output_dir,
        kwargs_handlers=[ddp_kwargs],
    )
    logging_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    import logging

    logging.basicConfig(format=logging_format, level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    train_data, validation_data, id2label, label_column = load_segmentation_splits(config)
    train_data = train_data.with_transform(SegmentationTransform(config, True, config.image_column, label_column))
    train_loader = DataLoader(
        train_data,
        batch_size=config.per_device_train_batch_size,
        shuffle=True,
        collate_fn=collate_segmentation_batch,
        num_workers=config.num_workers,
        drop_last=len(train_data) >= config.per_device_train_batch_size,
    )
    eval_loader = None
    if validation_data is not None:
        validation_data = validation_data.with_transform(
            SegmentationTransform(config, False, config.image_column, label_column)
        )
        eval_loader = DataLoader(
            validation_data,
            batch_size=config.per_device_eval_batch_size,
            collate_fn=collate_segmentation_batch,
            num_workers=config.num_workers,
        )

    model = build_segmentation_model(config, id2label)
    head = [p for n, p in model.named_parameters() if n.startswith("decode_head.")]
    backbone = [p for n, p in model.named_parameters() if not n.startswith("decode_head.")]
    optimizer = torch.optim.AdamW(
        [
            {"params": backbone, "lr": config.learning_rate},
            {"params": head, "lr": config.learning_rate * config.head_learning_rate_multiplier},
        ],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes)
    max_steps = config.max_steps or max(1, int(math.ceil(config.num_train_epochs * steps_per_epoch)))
    if config.lr_scheduler_type == "poly":
        scheduler_name, extra = "polynomial", {"power": 1.0, "lr_end": 0.0}
    else:
        scheduler_name, extra = config.lr_scheduler_type, {}
    lr_scheduler = get_scheduler(
        scheduler_name,
        optimizer,
        num_warmup_steps=config.warmup_steps * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes,
        scheduler_specific_kwargs=extra,
    )
    model, optimizer, train_loader, lr_scheduler = accelerator.prepare(model, optimizer, train_loader, lr_scheduler)
    state = TrainState()
    accelerator.register_for_checkpointing(state)

    if config.report_to not in (None, "none"):
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.to_dict().items()}
        accelerator.init_trackers("nasvit_segmentation", config=hparams)

    resume_batches = 0
    if config.resume_from_checkpoint:
        path = config.resume_from_checkpoint
        if path == "latest":
            path = find_latest_checkpoint(config.output_dir)
        if not Path(path).is_dir():
            raise SystemExit(f"--resume_from_checkpoint {path!r} is not a checkpoint folder.")
        accelerator.load_state(path)
        resume_batches = state.global_step % steps_per_epoch
        logger.info(f"resumed from {path} at step {state.global_step}")

    eval_every = config.eval_every_steps or steps_per_epoch
    history: list[dict[str, Any]] = []
    progress = tqdm(
        total=max_steps, initial=state.global_step, disable=not accelerator.is_local_main_process, desc="train"
    )
    num_labels = len(id2label)

    def run_eval() -> dict[str, Any] | None:
        if eval_loader is None:
            return None
        scores = None
        if accelerator.is_main_process:
            scores = evaluate_segmentation(
                accelerator.unwrap_model(model), eval_loader, num_labels, config.ignore_index, accelerator
            )
            record = {
                "step": state.global_step,
                "mean_iou": scores["mean_iou"],
                "mean_accuracy": scores["mean_accuracy"],
                "overall_accuracy": scores["overall_accuracy"],
            }
            history.append(record)
            logger.info(f"step {state.global_step}: mIoU {100 * scores['mean_iou']:.2f}")
            accelerator.log({f"eval/{k}": v for k, v in record.items() if k != "step"}, step=state.global_step)
        accelerator.wait_for_everyone()
        return scores

    model.train()
    start = time.time()
    epoch = state.global_step // steps_per_epoch
    running_loss = 0.0
    while state.global_step < max_steps:
        loader = accelerator.skip_first_batches(train_loader, resume_batches) if resume_batches else train_loader
        resume_batches = 0
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        for batch in loader:
            with accelerator.autocast():
                loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {state.global_step}.")
            accelerator.backward(loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            running_loss += loss.item()
            progress.update(1)
            if state.global_step % config.logging_steps == 0:
                record = {"train/loss": running_loss / config.logging_steps, "train/lr": lr_scheduler.get_last_lr()[0]}
                progress.set_postfix(loss=f"{record['train/loss']:.4f}")
                accelerator.log(record, step=state.global_step)
                running_loss = 0.0
            if state.global_step % eval_every == 0 and state.global_step < max_steps:
                run_eval()
            if config.checkpointing_steps and (
                state.global_step % config.checkpointing_steps == 0 or state.global_step == max_steps
            ):
                save_checkpoint(accelerator, config, state.global_step)
            if state.global_step >= max_steps:
                break
        epoch += 1
    progress.close()
    final_scores = run_eval()

    summary: dict[str, Any] = {"steps": state.global_step, "train_seconds": time.time() - start, "history": history}
    if final_scores is not None:
        summary.update(
            mean_iou=final_scores["mean_iou"],
            mean_accuracy=final_scores["mean_accuracy"],
            overall_accuracy=final_scores["overall_accuracy"],
            per_category_iou={
                id2label[i]: (None if math.isnan(v) else float(v))
                for i, v in enumerate(final_scores["per_category_iou"])
            },
        )
    if accelerator.is_main_process:
        model_dir = output_dir / "model"
        temporary = output_dir / ".model.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model)
        build_image_processor(config).save_pretrained(temporary)
        unwrapped.save_pretrained(temporary)
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(temporary, model_dir)
        write_json_atomic(output_dir / "summary.json", {"config": config.to_dict(), **summary})
        if final_scores is not None:
            logger.info(f"final mIoU {100 * summary['mean_iou']:.2f} after {state.global_step} steps")
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
