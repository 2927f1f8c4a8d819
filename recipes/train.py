#!/usr/bin/env python
"""Train a NASViT supernet with gradient-conflict-aware sandwich training (NASViT, ICLR 2022, Section 3).

    accelerate launch recipes/train.py                                   # tiny supernet on the bundled digits
    accelerate launch recipes/train.py --config recipes/configs/imagenet_reference.yaml --output_dir runs/in1k
    accelerate launch recipes/train.py --resume_from_checkpoint latest   # the run in outputs/digits_tiny, as started
    accelerate launch recipes/train.py --resume_from_checkpoint latest --max_steps 300   # ... trained on to step 300

Every key of the config (`nasvit_hf.training.TrainingConfig`, listed by --help) can be overridden as `--key value`.
The script only wires config -> data -> Accelerate -> the library (`nasvit_hf.training`): the sandwich step,
gradient combination, losses, EMA, checkpoints and validation live there. See docs/training.md.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from nasvit_hf.config_system import exit_on_user_error, parse_command_line, run_recipe
from nasvit_hf.models import NASViTConfig
from nasvit_hf.training import ArchSampler, ModelEMA, SandwichConfig, SandwichTrainer, TrainingConfig
from nasvit_hf.training.checkpointing import TrainState, load_run_config, start_run_from_config
from nasvit_hf.training.classification import (
    build_classification_data,
    build_optimizer,
    build_schedule,
    build_supernet,
    check_eval_archs,
    load_classification_splits,
    load_teachers,
    resolve_snapshot_epochs,
    save_final_supernets,
    save_snapshot,
    search_space_of,
    validate_subnets,
)
from nasvit_hf.training.loop import (
    append_log_line,
    check_distributed_type,
    check_nonfinite_limit,
    count_skipped_step,
    logged_archs,
    multi_cpu_launch,
    nanmean,
    sandwich_update,
    save_checkpoint_if_due,
    session_counts,
    setup_logging,
    step_record,
    write_summary,
)

logger = get_logger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "digits_tiny.yaml"


def parse_args(argv: list[str] | None = None) -> TrainingConfig:
    with exit_on_user_error():
        _, overrides, path = parse_command_line(argv, None, TrainingConfig, __doc__)
        config = load_run_config(TrainingConfig, overrides, path, DEFAULT_CONFIG)  # a resume: the run's own config
        if not config.model_name_or_path:  # otherwise the space comes with the model: checked once it is loaded
            check_eval_archs(config.eval_archs, NASViTConfig(search_space=search_space_of(config)).search_space)
    return config


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_args(argv)
    accelerator = Accelerator(
        cpu=multi_cpu_launch(),
        mixed_precision=config.mixed_precision,
        log_with=None if config.report_to == "none" else config.report_to,
        project_dir=config.output_dir,
    )
    setup_logging()
    check_distributed_type(accelerator)
    run = start_run_from_config(config, "classification", accelerator.is_main_process, accelerator.wait_for_everyone)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    set_seed(config.seed, deterministic=config.deterministic)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    accelerator.wait_for_everyone()

    # ---- build: data, model, teacher, optimiser, schedule, sandwich trainer
    splits = load_classification_splits(config)
    if splits.holdout is not None and accelerator.is_main_process:
        splits.holdout.save(config.output_dir)  # search and extraction find it beside the supernet (final/ too)
        logger.info(f"held out {len(splits.holdout)} training images for search: {config.output_dir}/holdout.json")
    model = build_supernet(config, splits[2])
    space = model.config.search_space
    eval_archs = {"smallest": model.config.smallest_arch(), "largest": model.config.largest_arch()}
    eval_archs.update(check_eval_archs(config.eval_archs, space))
    image_size = config.image_size or max(space["resolutions"])
    data = build_classification_data(config, splits, image_size, max(space["resolutions"]), accelerator.prepare)
    teacher = load_teachers(config, data.label_names, image_size, accelerator.device)
    optimizer = build_optimizer(model, config, accelerator.num_processes)

    # ---- prepare
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, data.train_loader)
    lr_scheduler, steps_per_epoch, max_steps = build_schedule(config, optimizer, len(train_loader))
    snapshot_epochs = resolve_snapshot_epochs(config.snapshot_epochs, math.ceil(max_steps / steps_per_epoch))
    accumulation = config.gradient_accumulation_steps
    module = accelerator.unwrap_model(model)
    sampler = ArchSampler(
        module.config, config.num_random_subnets, config.seed, config.subnet_sampling, accelerator.process_index
    )
    ema = ModelEMA(module, config.ema_decay) if config.ema_decay else None
    state = TrainState()
    accelerator.register_for_checkpointing(lr_scheduler, sampler, state, *([ema] if ema is not None else []))
    trainer = SandwichTrainer(model, SandwichConfig.from_training_config(config), backward=accelerator.backward)
    if run.resume_path is not None:
        accelerator.load_state(str(run.resume_path))
        logger.info(f"resumed from {run.resume_path} at step {state.global_step}", main_process_only=True)
    if accelerator.log_with:
        hparams = {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("nasvit_train", config=hparams)
    log_path = Path(config.output_dir) / "train_log.jsonl"
    top_k = [1, min(5, len(data.label_names))] if len(data.label_names) > 1 else [1]
    logger.info(
        f"training {max_steps} steps ({math.ceil(max_steps / steps_per_epoch)} epochs of {steps_per_epoch}) on "
        f"{accelerator.num_processes} process(es), lr {optimizer.defaults['lr']:.3g}, priority "
        f"{config.gradient_priority} ({config.gradient_granularity}) from epoch {config.projection_start_epoch}"
    )

    run.started()  # from here on a failure leaves a run to resume; before, its start-up writes are undone

    # ---- loop
    show = accelerator.is_local_main_process and config.progress_bar
    progress = tqdm(total=max_steps, initial=state.global_step, disable=not show, desc="sandwich steps")
    ratios: list[float] = []
    ratios_after: list[float] = []
    validation: dict[str, Any] = {}
    start_time, start_step = time.time(), state.global_step
    model.train()
    while state.global_step < max_steps:
        epoch = state.global_step // steps_per_epoch
        skip = (state.global_step % steps_per_epoch) * accumulation
        data.sampler_generator.manual_seed(config.seed + epoch)
        data.train_dataset.set_epoch(epoch)
        batches = iter(accelerator.skip_first_batches(train_loader, skip) if skip else train_loader)
        for _ in range(steps_per_epoch - skip // accumulation):
            output = sandwich_update(
                trainer, optimizer, batches, sampler.sample(), accelerator,
                accumulation=accumulation, mixing=data.mixing, teacher=teacher,
                project=epoch >= config.projection_start_epoch,
            )  # fmt: skip
            count_skipped_step(state, output)
            if not output.skipped:
                lr_scheduler.step()
                if ema is not None:
                    ema.update(model)
            state.global_step += 1
            progress.update(1)
            record = step_record(state.global_step, epoch, lr_scheduler.get_last_lr()[0], output)
            ratios.append(output.conflict_ratio)
            ratios_after.append(output.conflict_ratio_after)
            if state.global_step % config.logging_steps == 0 or output.skipped:
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.global_step)
                archs = logged_archs(output, accelerator, config.subnet_sampling == "per_rank")
                if accelerator.is_main_process:
                    append_log_line(log_path, dict(record, **archs))
                progress.set_postfix(loss=f"{output.losses['total']:.3f}", conflict=f"{output.conflict_ratio:.2f}")
            check_nonfinite_limit(state, output, config.max_consecutive_nonfinite)
            finished_epoch = (state.global_step - 1) // steps_per_epoch + 1
            last = state.global_step == max_steps
            epoch_done = state.global_step % steps_per_epoch == 0 or last
            if data.has_validation and epoch_done and (finished_epoch % config.eval_every_epochs == 0 or last):
                # With an EMA, validation reports the EMA weights: what final/ holds and search/export use.
                validation = validate_subnets(
                    ema.module if ema is not None else model, eval_archs, data.eval_loaders,
                    config.calibration_batches, top_k, accelerator,
                )  # fmt: skip
                flat = {f"val/{name}/{k}": v for name, scores in validation.items() for k, v in scores.items()}
                accelerator.log(flat, step=state.global_step)
                logger.info(f"epoch {finished_epoch}: {json.dumps(validation)}", main_process_only=True)
            if state.global_step % steps_per_epoch == 0 and finished_epoch in snapshot_epochs:
                if accelerator.is_main_process:  # Table 4's epochs: the weights recipes/conflict_ratio.py sweeps
                    save_snapshot(
                        config.output_dir, accelerator.unwrap_model(model), finished_epoch, data.eval_processor
                    )
                accelerator.wait_for_everyone()
            save_checkpoint_if_due(accelerator, run, config, state.global_step, max_steps)
            if state.global_step >= max_steps:
                break
    progress.close()

    # ---- save
    accelerator.wait_for_everyone()
    summary: dict[str, Any] = {
        "steps": state.global_step,
        **session_counts(state.global_step, start_step, resumed=run.resume_path is not None),
        "skipped_steps": state.skipped_steps,
        "seconds": round(time.time() - start_time, 1),
        "processes": accelerator.num_processes,
        "validation": validation,
    }
    if nanmean(ratios) is not None:
        summary["mean_conflict_ratio"] = nanmean(ratios)
        summary["mean_conflict_ratio_after"] = nanmean(ratios_after)
    summary["validated_weights"] = "ema" if ema is not None else "raw"
    if accelerator.is_main_process:
        if config.save_final_model:
            module = accelerator.unwrap_model(model)  # final/ = EMA (when kept) + processor, final/raw/ = raw weights
            summary.update(save_final_supernets(config.output_dir, module, ema, data.eval_processor, splits.holdout))
        print(write_summary(config.output_dir, summary, validation), flush=True)
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    sys.exit(run_recipe(main))
