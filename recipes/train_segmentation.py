#!/usr/bin/env python
"""Fine-tune NASViT + Segformer all-MLP head for semantic segmentation (NASViT, ICLR 2022, Section 4.2).

    accelerate launch recipes/train_segmentation.py                 # built-in digits scenes, under a CPU minute
    accelerate launch recipes/train_segmentation.py --config recipes/configs/segmentation_ade20k.yaml \\
        --model_name_or_path subnets/nasvit-a1
    accelerate launch recipes/train_segmentation.py --max_steps 200 --resume_from_checkpoint latest  # train on

Every key of `nasvit_hf.training.segmentation.SegmentationTrainingConfig` can be overridden as `--key value`. The
script wires config -> data -> Accelerate -> the library: AdamW (decode head at `head_learning_rate_multiplier` x the
learning rate), poly or cosine schedule, mIoU from the package's local `evaluate` module, atomic checkpoints
(`save_state`) with resume, TensorBoard and a progress bar. The final model is saved to `<output_dir>/model`
(config, safetensors, image processor) and the scores to `<output_dir>/summary.json`.
"""

from __future__ import annotations

import math
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

import nasvit_hf  # noqa: F401  (registers the Auto classes)
from nasvit_hf.config_system import RecipeError, exit_on_user_error, parse_command_line, run_recipe
from nasvit_hf.training.checkpointing import TrainState, load_run_config, start_run_from_config
from nasvit_hf.training.loop import multi_cpu_launch, save_checkpoint_if_due, session_counts, setup_logging
from nasvit_hf.training.schedule import build_param_groups
from nasvit_hf.training.segmentation import (
    SegmentationTrainingConfig,
    SegmentationTransform,
    build_segmentation_model,
    build_segmentation_scheduler,
    collate_segmentation_batch,
    evaluate_segmentation,
    load_segmentation_splits,
    save_segmentation_model,
    segmentation_summary,
)

logger = get_logger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "segmentation_digits.yaml"


def parse_args(argv: list[str] | None = None) -> SegmentationTrainingConfig:
    with exit_on_user_error():
        _, overrides, path = parse_command_line(argv, None, SegmentationTrainingConfig, __doc__)
        return load_run_config(SegmentationTrainingConfig, overrides, path, DEFAULT_CONFIG)  # a resume: the run's own


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_args(argv)
    # The backbone stops at the last requested stage, so later stages hold parameters without gradients.
    accelerator = Accelerator(
        cpu=multi_cpu_launch(),
        log_with=config.report_to if config.report_to not in (None, "none") else None,
        project_dir=config.output_dir,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    setup_logging(accelerator.is_main_process)
    run = start_run_from_config(config, "segmentation", accelerator.is_main_process, accelerator.wait_for_everyone)
    set_seed(config.seed)

    # ---- build: data, model, optimiser (decode head at head_learning_rate_multiplier x), schedule
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
        transform = SegmentationTransform(config, False, config.image_column, label_column)
        eval_loader = DataLoader(
            validation_data.with_transform(transform),
            batch_size=config.per_device_eval_batch_size,
            collate_fn=collate_segmentation_batch,
            num_workers=config.num_workers,
        )
    model = build_segmentation_model(config, id2label)
    groups = build_param_groups(
        model,
        config.weight_decay,
        lr_multipliers={"decode_head.": config.head_learning_rate_multiplier},
        learning_rate=config.learning_rate,
        no_decay_for_norms_and_tables=False,  # Segformer's recipe: one weight decay for every parameter
    )
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes)
    max_steps = config.max_steps or max(1, int(math.ceil(config.num_train_epochs * steps_per_epoch)))
    lr_scheduler = build_segmentation_scheduler(config, optimizer, max_steps, accelerator.num_processes)

    # ---- prepare, resume
    model, optimizer, train_loader, lr_scheduler = accelerator.prepare(model, optimizer, train_loader, lr_scheduler)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if config.report_to not in (None, "none"):
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.to_dict().items()}
        accelerator.init_trackers("nasvit_segmentation", config=hparams)
    resume_batches = 0
    if run.resume_path is not None:
        accelerator.load_state(str(run.resume_path))
        resume_batches = state.global_step % steps_per_epoch
        logger.info(f"resumed from {run.resume_path} at step {state.global_step}")
    eval_every = config.eval_every_steps or steps_per_epoch
    history: list[dict[str, Any]] = []

    def run_eval() -> dict[str, Any] | None:
        if eval_loader is None:
            return None
        scores = None
        if accelerator.is_main_process:
            module = accelerator.unwrap_model(model)
            scores = evaluate_segmentation(module, eval_loader, len(id2label), config.ignore_index, accelerator)
            record = {"step": state.global_step, **{k: scores[k] for k in SCORE_KEYS}}
            history.append(record)
            logger.info(f"step {state.global_step}: mIoU {100 * scores['mean_iou']:.2f}")
            accelerator.log({f"eval/{k}": v for k, v in record.items() if k != "step"}, step=state.global_step)
        accelerator.wait_for_everyone()
        return scores

    run.started()  # from here on a failure leaves a run to resume; before, its start-up writes are undone

    # ---- loop
    progress = tqdm(
        total=max_steps, initial=state.global_step, disable=not accelerator.is_local_main_process, desc="train"
    )
    model.train()
    start, epoch, running_loss = time.time(), state.global_step // steps_per_epoch, 0.0
    start_step = state.global_step
    while state.global_step < max_steps:
        loader = accelerator.skip_first_batches(train_loader, resume_batches) if resume_batches else train_loader
        resume_batches = 0
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        for batch in loader:
            with accelerator.autocast():
                loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
            if not torch.isfinite(loss):
                raise RecipeError(
                    f"non-finite loss {loss.item()} at step {state.global_step}: lower learning_rate or keep "
                    "max_grad_norm set."
                )
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
            save_checkpoint_if_due(accelerator, run, config, state.global_step, max_steps)
            if state.global_step >= max_steps:
                break
        epoch += 1
    progress.close()

    # ---- save
    summary = segmentation_summary(state.global_step, time.time() - start, history, run_eval(), id2label)
    summary.update(session_counts(state.global_step, start_step, resumed=run.resume_path is not None))
    if accelerator.is_main_process:
        save_segmentation_model(accelerator.unwrap_model(model), config, {"config": config.to_dict(), **summary})
        if "mean_iou" in summary:
            resumed = "" if run.resume_path is None else f" (this session: {summary['session_steps']})"
            logger.info(f"final mIoU {100 * summary['mean_iou']:.2f} after {state.global_step} steps{resumed}")
    accelerator.end_training()
    return summary


SCORE_KEYS = ("mean_iou", "mean_accuracy", "overall_accuracy")

if __name__ == "__main__":
    sys.exit(run_recipe(main))
