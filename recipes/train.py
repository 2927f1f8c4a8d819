#!/usr/bin/env python
"""Train a NASViT supernet with gradient-conflict-aware sandwich training (NASViT, ICLR 2022, Section 3).

    accelerate launch recipes/train.py                                   # tiny supernet on the bundled digits
    accelerate launch recipes/train.py --config recipes/configs/imagenet_reference.yaml --output_dir runs/in1k
    accelerate launch recipes/train.py --max_steps 20 --resume_from_checkpoint latest

Every key of the config (`nasvit_hf.training.TrainingConfig`) can be overridden as `--key value`. The script only
wires config → data → Accelerate → the library (`nasvit_hf.training`): the sandwich step, gradient combination,
losses and EMA live there.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm
from transformers import get_scheduler

import nasvit_hf
from nasvit_hf.calibration import calibrate_batchnorm
from nasvit_hf.metrics import load_accuracy_metric
from nasvit_hf.presets import get_search_space
from nasvit_hf.training import (
    ArchSampler,
    ImageClassificationDataset,
    ModelEMA,
    SandwichConfig,
    SandwichTrainer,
    TrainingConfig,
    build_batch_mixing,
    build_eval_transform,
    build_train_transform,
    collate_image_batch,
    load_training_splits,
    parse_overrides,
)

logger = get_logger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "digits_tiny.yaml"
CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")


def parse_args(argv: list[str] | None = None) -> TrainingConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: digits_tiny.yaml)")
    args, rest = parser.parse_known_args(argv)
    try:
        config = TrainingConfig.from_yaml(args.config, parse_overrides(rest))
        if not config.model_name_or_path:  # otherwise the space comes with the model: checked once it is loaded
            space = nasvit_hf.NASViTConfig(search_space=_search_space(config), num_labels=1).search_space
            _check_eval_archs(config.eval_archs, space)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    return config


def _search_space(config: TrainingConfig) -> dict:
    return get_search_space(config.search_space) if isinstance(config.search_space, str) else config.search_space


def _check_eval_archs(archs: list, search_space: dict) -> dict[str, dict]:
    """eval_archs validated against the search space, named arch0, arch1, ...; a ValueError says which is wrong."""
    from nasvit_hf.models.configuration_nasvit import validate_arch

    checked = {}
    for index, arch in enumerate(archs):
        try:
            checked[f"arch{index}"] = validate_arch(search_space, arch)
        except ValueError as error:
            raise ValueError(f"eval_archs[{index}] is not in the search space: {error}") from None
    return checked


class TrainState:
    """Counters that must survive a resume (checkpointed with the rest of the state)."""

    def __init__(self):
        self.global_step = 0
        self.consecutive_nonfinite = 0
        self.skipped_steps = 0

    def state_dict(self) -> dict[str, int]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def build_model(config: TrainingConfig, label_names: list[str]):
    space = _search_space(config)
    id2label = {i: name for i, name in enumerate(label_names)}
    label2id = {name: i for i, name in id2label.items()}
    if config.model_name_or_path:
        model = nasvit_hf.NASViTForImageClassification.from_pretrained(config.model_name_or_path)
        if model.config.num_labels != len(label_names):
            raise ValueError(
                f"{config.model_name_or_path} has {model.config.num_labels} labels, the data has {len(label_names)}."
            )
        return model
    model_config = nasvit_hf.NASViTConfig(
        search_space=space,
        num_labels=len(label_names),
        id2label=id2label,
        label2id=label2id,
        switchable_scaling=config.switchable_scaling,
        drop_path_rate=config.drop_path_rate,
        drop_connect_rate=config.drop_connect_rate,
        classifier_dropout=config.dropout,
    )
    return nasvit_hf.NASViTForImageClassification(model_config)


def find_latest_checkpoint(output_dir: str) -> str:
    folder = Path(output_dir) / "checkpoints"
    steps = sorted(
        (int(m.group(1)), p) for p in folder.glob("step_*") if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()
    )
    if not steps:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint under {folder}.")
    return str(steps[-1][1])


def save_checkpoint(accelerator: Accelerator, config: TrainingConfig, step: int) -> str:
    """`save_state` into a temporary folder, then an atomic rename; keeps the newest `checkpoints_total_limit`."""
    folder = Path(config.output_dir) / "checkpoints"
    final = folder / f"step_{step}"
    temporary = folder / f".tmp_step_{step}"
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


@torch.no_grad()
def validate(model, archs: dict[str, dict], calibration_loader, validation_loader, accelerator, config, metric_top_k):
    """BN-recalibrate each arch on training batches, then top-1/top-k on the validation split. The training
    model's BN statistics and the global RNG are restored afterwards."""
    module = accelerator.unwrap_model(model)
    active = module.active_arch
    was_training = module.training
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    results: dict[str, dict[str, float]] = {}
    metric = load_accuracy_metric()  # compute() empties it for the next arch
    with torch.random.fork_rng(devices=[]):
        for name, arch in archs.items():
            module.set_active_subnet(arch)
            calibrate_batchnorm(module, calibration_loader, config.calibration_batches)
            module.eval()
            for batch in validation_loader:
                with accelerator.autocast():
                    logits = module(pixel_values=batch["pixel_values"]).logits.float()
                logits, labels = accelerator.gather_for_metrics((logits, batch["labels"]))
                metric.add_batch(predictions=logits.cpu().numpy(), references=labels.cpu().numpy())
            scores = metric.compute(top_k=metric_top_k)
            results[name] = {"top1": 100.0 * scores["accuracy"]}
            for k in metric_top_k[1:]:
                results[name][f"top{k}"] = 100.0 * scores[f"top{k}_accuracy"]
    for m, (mean, var, count) in zip(norms, saved):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.num_batches_tracked.copy_(count)
    module.set_active_subnet(active)
    module.train(was_training)
    return results


def _multi_cpu_launch() -> bool:
    """True for a multi-process launch on a machine without GPUs. Accelerate then needs `cpu=True` to run MULTI_CPU
    (gloo): without it, `accelerate launch --multi_gpu` / torchrun on CPU gives every process a one-process state."""
    has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    return not has_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1


def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = parse_args(argv)
    accelerator = Accelerator(
        cpu=_multi_cpu_launch(),
        mixed_precision=config.mixed_precision,
        log_with=None if config.report_to == "none" else config.report_to,
        project_dir=config.output_dir,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if accelerator.distributed_type.value in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise SystemExit(
            f"{accelerator.distributed_type.value} shards gradients, but the gradient combination needs every "
            "parameter's full supernet and subnet gradients on each rank: launch with DDP (--multi_gpu) instead."
        )
    for noisy in ("datasets", "evaluate", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    set_seed(config.seed, deterministic=config.deterministic)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    accelerator.wait_for_everyone()

    # ---- data
    splits = load_training_splits(
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
    train_split, validation_split, label_names, holdout = (
        splits.train,
        splits.validation,
        splits.label_names,
        splits.holdout,
    )
    if holdout is not None and accelerator.is_main_process:
        holdout.save(config.output_dir)  # search and export find it beside the supernet (<output_dir>/final)
        logger.info(f"held out {len(holdout)} training images for search: {config.output_dir}/holdout.json")
    model = build_model(config, label_names)
    model_config = model.config
    try:
        extra_archs = _check_eval_archs(config.eval_archs, model_config.search_space)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    image_size = config.image_size or max(model_config.search_space["resolutions"])
    train_transform = build_train_transform(
        image_size,
        config.randaugment_num_ops,
        config.randaugment_magnitude,
        config.crop_scale,
        config.hflip,
        config.random_erasing,
    )
    eval_transform = build_eval_transform(image_size)
    columns = (config.image_column, config.label_column)
    train_dataset = ImageClassificationDataset(train_split, train_transform, *columns, seed=config.seed)
    sampler_generator = torch.Generator()
    train_loader = DataLoader(
        train_dataset,
        batch_size=config.per_device_train_batch_size,
        sampler=RandomSampler(train_dataset, generator=sampler_generator),
        collate_fn=collate_image_batch,
        num_workers=config.num_workers,
        drop_last=True,
    )
    calibration_generator = torch.Generator().manual_seed(config.seed)
    calibration_dataset = ImageClassificationDataset(train_split, eval_transform, *columns)
    calibration_loader = DataLoader(
        calibration_dataset,
        batch_size=config.per_device_train_batch_size,
        sampler=RandomSampler(calibration_dataset, generator=calibration_generator),
        collate_fn=collate_image_batch,
        num_workers=config.num_workers,
    )
    validation_loader = None
    if validation_split is not None:
        validation_loader = DataLoader(
            ImageClassificationDataset(validation_split, eval_transform, *columns),
            batch_size=config.per_device_eval_batch_size,
            collate_fn=collate_image_batch,
            num_workers=config.num_workers,
        )
    mixing = build_batch_mixing(config.mixup_alpha, config.cutmix_alpha, len(label_names))

    # ---- teacher
    teacher = None
    if config.teacher:
        from transformers import AutoModelForImageClassification

        teacher = AutoModelForImageClassification.from_pretrained(config.teacher).eval().requires_grad_(False)
        if teacher.config.num_labels != len(label_names):
            raise SystemExit(
                f"teacher {config.teacher!r} predicts {teacher.config.num_labels} classes, the data has "
                f"{len(label_names)}: use a teacher fine-tuned on the same label set."
            )
        teacher.to(accelerator.device)

    # ---- optimisation
    # No weight decay on norms, biases, scaling tables and position-bias tables (as the reference).
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        skip = param.ndim <= 1 or "layer_scale" in name or "bias_table" in name
        (no_decay if skip else decay).append(param)
    learning_rate = config.learning_rate
    total_batch = config.per_device_train_batch_size * accelerator.num_processes * config.gradient_accumulation_steps
    if config.scale_lr:
        learning_rate = learning_rate * total_batch / 512.0
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
    )
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if validation_loader is not None:
        validation_loader = accelerator.prepare(validation_loader)
    steps_per_epoch = len(train_loader) // config.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise SystemExit(
            f"one epoch has {len(train_loader)} batches per process, fewer than gradient_accumulation_steps="
            f"{config.gradient_accumulation_steps}: lower the batch size or the accumulation."
        )
    max_steps = config.max_steps or config.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    warmup_steps = (
        config.warmup_steps if config.warmup_steps is not None else int(config.warmup_epochs * steps_per_epoch)
    )
    lr_scheduler = get_scheduler(config.lr_scheduler_type, optimizer, warmup_steps, max_steps)
    module = accelerator.unwrap_model(model)
    sampler = ArchSampler(module.config, config.num_random_subnets, seed=config.seed)
    ema = ModelEMA(module, config.ema_decay) if config.ema_decay else None
    state = TrainState()
    accelerator.register_for_checkpointing(lr_scheduler, sampler, state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    trainer = SandwichTrainer(
        model,
        SandwichConfig(
            num_random_subnets=config.num_random_subnets,
            distill_loss=config.distill_loss,
            alpha_min=config.alpha_min,
            alpha_max=config.alpha_max,
            iw_clip=config.iw_clip,
            priority=config.gradient_priority,
            granularity=config.gradient_granularity,
            max_projection_coefficient=config.max_projection_coefficient,
            max_grad_norm=config.max_grad_norm,
            drop_path_rate=config.drop_path_rate,
            drop_connect_rate=config.drop_connect_rate,
            dropout=config.dropout,
        ),
        backward=accelerator.backward,
    )

    # ---- resume
    if config.resume_from_checkpoint:
        path = config.resume_from_checkpoint
        if path == "latest":
            path = find_latest_checkpoint(config.output_dir)
        if not Path(path).is_dir():
            raise SystemExit(f"--resume_from_checkpoint {path!r} is not a checkpoint folder.")
        accelerator.load_state(path)
        logger.info(f"resumed from {path} at step {state.global_step}", main_process_only=True)
    if accelerator.is_main_process:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(config.output_dir) / "training_config.json", "w") as handle:
            json.dump(config.to_dict(), handle, indent=2)
    if accelerator.log_with:
        hparams = {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("nasvit_train", config=hparams)
    log_path = Path(config.output_dir) / "train_log.jsonl"
    if accelerator.is_main_process and state.global_step == 0 and log_path.exists():
        log_path.unlink()

    eval_archs = {"smallest": module.config.smallest_arch(), "largest": module.config.largest_arch(), **extra_archs}
    top_k = [1, min(5, len(label_names))] if len(label_names) > 1 else [1]
    logger.info(
        f"training {max_steps} steps ({num_epochs} epochs of {steps_per_epoch}) on {accelerator.num_processes} "
        f"process(es), total batch {total_batch}, lr {learning_rate:.3g}, priority {config.gradient_priority} "
        f"({config.gradient_granularity}) from epoch {config.projection_start_epoch}",
        main_process_only=True,
    )
    progress = tqdm(
        total=max_steps,
        initial=state.global_step,
        disable=not (accelerator.is_local_main_process and config.progress_bar),
        desc="sandwich steps",
    )
    history: list[dict[str, Any]] = []
    validation_results: dict[str, Any] = {}
    start_time = time.time()
    model.train()
    while state.global_step < max_steps:
        epoch = state.global_step // steps_per_epoch
        resume_batches = (state.global_step % steps_per_epoch) * config.gradient_accumulation_steps
        sampler_generator.manual_seed(config.seed + epoch)
        train_dataset.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, resume_batches) if resume_batches else train_loader
        iterator = iter(loader)
        for _ in range(steps_per_epoch - resume_batches // config.gradient_accumulation_steps):
            archs = sampler.sample()
            for _micro in range(config.gradient_accumulation_steps):
                batch = next(iterator)
                pixel_values, labels = batch["pixel_values"], batch["labels"]
                targets = labels
                if mixing is not None:
                    pixel_values, targets = mixing(pixel_values, labels)
                teacher_probs = None
                if teacher is not None:
                    with torch.no_grad(), accelerator.autocast():
                        teacher_logits = teacher(pixel_values=pixel_values).logits.float()
                    teacher_probs = (teacher_logits / config.teacher_temperature).softmax(dim=-1)
                trainer.accumulate(pixel_values, targets, archs, teacher_probs)
            project = epoch >= config.projection_start_epoch
            scale = accelerator.scaler.get_scale() if accelerator.scaler is not None else 1.0
            output = trainer.step(optimizer, project=project, grad_scale=scale)
            if output.skipped:
                state.skipped_steps += 1
                state.consecutive_nonfinite += 1
                logger.warning(
                    f"step {state.global_step + 1}: {output.skip_reason} (losses {output.losses}); step skipped, "
                    "weights and optimizer state untouched",
                    main_process_only=True,
                )
            else:
                state.consecutive_nonfinite = 0
                lr_scheduler.step()
                if ema is not None:
                    ema.update(model)
            state.global_step += 1
            progress.update(1)
            record = {
                "step": state.global_step,
                "epoch": epoch,
                "lr": lr_scheduler.get_last_lr()[0],
                **{f"loss/{name}": value for name, value in output.losses.items()},
                "conflict_ratio": output.conflict_ratio,
                "grad_norm/sup": output.sup_grad_norm,
                "grad_norm/sub": output.sub_grad_norm,
                "projected": int(output.projected),
                "skipped": int(output.skipped),
            }
            history.append(record)
            if state.global_step % config.logging_steps == 0 or output.skipped:
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.global_step)
                if accelerator.is_main_process:
                    line = dict(record, archs={name: arch for name, arch in output.archs})
                    with open(log_path, "a") as handle:
                        handle.write(json.dumps(line) + "\n")
                progress.set_postfix(loss=f"{output.losses['total']:.3f}", conflict=f"{output.conflict_ratio:.2f}")
            if state.consecutive_nonfinite >= config.max_consecutive_nonfinite:
                raise RuntimeError(
                    f"{state.consecutive_nonfinite} consecutive steps had non-finite losses or gradients (last: "
                    f"{output.skip_reason}). Lower learning_rate, enable max_grad_norm, or use bf16/fp32 instead "
                    "of fp16."
                )
            epoch_done = state.global_step % steps_per_epoch == 0 or state.global_step == max_steps
            if epoch_done and validation_loader is not None:
                finished_epoch = (state.global_step - 1) // steps_per_epoch + 1
                if finished_epoch % config.eval_every_epochs == 0 or state.global_step == max_steps:
                    validation_results = validate(
                        model, eval_archs, calibration_loader, validation_loader, accelerator, config, top_k
                    )
                    flat = {
                        f"val/{name}/{k}": v for name, scores in validation_results.items() for k, v in scores.items()
                    }
                    accelerator.log(flat, step=state.global_step)
                    logger.info(f"epoch {finished_epoch}: {json.dumps(validation_results)}", main_process_only=True)
            if config.checkpointing_steps and (
                state.global_step % config.checkpointing_steps == 0 or state.global_step == max_steps
            ):
                save_checkpoint(accelerator, config, state.global_step)
            if state.global_step >= max_steps:
                break
    progress.close()
    elapsed = time.time() - start_time

    # ---- final model and summary
    accelerator.wait_for_everyone()
    module = accelerator.unwrap_model(model)
    module.sample_max_subnet()
    summary: dict[str, Any] = {
        "steps": state.global_step,
        "skipped_steps": state.skipped_steps,
        "seconds": round(elapsed, 1),
        "processes": accelerator.num_processes,
        "validation": validation_results,
    }
    ratios = [r["conflict_ratio"] for r in history if not math.isnan(r["conflict_ratio"])]
    if ratios:
        summary["mean_conflict_ratio"] = sum(ratios) / len(ratios)
    if accelerator.is_main_process:
        if config.save_final_model:
            final_dir = Path(config.output_dir) / "final"
            module.save_pretrained(final_dir)
            if holdout is not None:
                holdout.save(final_dir)
            summary["final_model"] = str(final_dir)
            if ema is not None:
                ema.module.sample_max_subnet()
                ema.module.save_pretrained(Path(config.output_dir) / "final_ema")
                if holdout is not None:
                    holdout.save(Path(config.output_dir) / "final_ema")
                summary["final_ema_model"] = str(Path(config.output_dir) / "final_ema")
        temporary = Path(config.output_dir) / ".summary.json.tmp"
        temporary.write_text(json.dumps(summary, indent=2))
        os.replace(temporary, Path(config.output_dir) / "summary.json")
        lines = [f"Trained {state.global_step} sandwich steps in {elapsed:.0f} s ({state.skipped_steps} skipped)."]
        if ratios:
            lines.append(f"Mean gradient-conflict ratio (before combination): {summary['mean_conflict_ratio']:.3f}")
        for name, scores in validation_results.items():
            lines.append(f"  {name:>9}: " + ", ".join(f"{k} {v:.2f}%" for k, v in scores.items()))
        if config.save_final_model:
            lines.append(f"Supernet saved to {summary['final_model']} (AutoModelForImageClassification).")
        print("\n".join(lines), flush=True)
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
