"""The training loop's mechanics, beside the task libraries (`classification.py`, `segmentation.py`): what a recipe's
`main` does around the model. Both training recipes launch, log, checkpoint and count their session here; the sandwich
recipe (`recipes/train.py`) also takes its optimiser steps, accounts for non-finite steps, writes `train_log.jsonl`
and its summary here.

- launch: `multi_cpu_launch` (the Accelerator's `cpu=`), `setup_logging`, `check_distributed_type`;
- one step: `sandwich_update` (micro-batches → `SandwichTrainer.accumulate` → `SandwichTrainer.step`);
- non-finite steps: `count_skipped_step` (counters in `TrainState`, a warning), `check_nonfinite_limit` (stop);
- the run log: `step_record` + `logged_archs` → `append_log_line` (`train_log.jsonl`);
- checkpoints and the session: `save_checkpoint_if_due`, `session_counts`;
- the end: `nanmean`, `write_summary` (`summary.json` + the printed summary).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger

from ..config_system import RecipeError
from ..utils.io import atomic_write_json
from .checkpointing import TrainingRun, TrainState, save_checkpoint
from .config import TrainingRunConfig
from .sandwich import SandwichStepOutput, SandwichTrainer

__all__ = [
    "append_log_line",
    "check_distributed_type",
    "check_nonfinite_limit",
    "count_skipped_step",
    "logged_archs",
    "multi_cpu_launch",
    "nanmean",
    "sandwich_update",
    "save_checkpoint_if_due",
    "session_counts",
    "setup_logging",
    "step_record",
    "write_summary",
]

logger = get_logger(__name__)

Arch = dict[str, Any]
BatchMixing = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------------------------------------------------
# Launch
# ----------------------------------------------------------------------------------------------------------------------
def multi_cpu_launch() -> bool:
    """True for a multi-process launch on a machine without GPUs. Accelerate then needs `cpu=True` to run MULTI_CPU
    (gloo): without it, `accelerate launch --multi_gpu` / torchrun on CPU gives every process a one-process state."""
    has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    return not has_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup_logging(is_main_process: bool = True) -> None:
    """The recipes' log format; the libraries that chatter at INFO are kept at WARNING."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if is_main_process else logging.WARNING,
    )
    for noisy in ("datasets", "evaluate", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def check_distributed_type(accelerator: Accelerator) -> None:
    """Sandwich training needs each rank's full gradients (DDP or one process), never sharded ones."""
    if accelerator.distributed_type.value in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise RecipeError(
            f"{accelerator.distributed_type.value} shards gradients, but the gradient combination needs every "
            "parameter's full supernet and subnet gradients on each rank: launch with DDP (--multi_gpu) instead."
        )


# ----------------------------------------------------------------------------------------------------------------------
# One sandwich step and its accounting
# ----------------------------------------------------------------------------------------------------------------------
def sandwich_update(
    trainer: SandwichTrainer,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[dict[str, torch.Tensor]],
    archs: list[tuple[str, Arch]],
    accelerator: Accelerator,
    *,
    accumulation: int = 1,
    mixing: BatchMixing | None = None,
    teacher: Callable[[torch.Tensor], torch.Tensor] | None = None,
    project: bool = True,
) -> SandwichStepOutput:
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


def count_skipped_step(state: TrainState, output: SandwichStepOutput) -> None:
    """Update the skipped-step counters of `state` for `output` (before the step is counted); warn for a skipped
    step."""
    state.skipped_steps += int(output.skipped)
    state.consecutive_nonfinite = state.consecutive_nonfinite + 1 if output.skipped else 0
    if output.skipped:
        logger.warning(
            f"step {state.global_step + 1}: {output.skip_reason} (losses {output.losses}); step skipped, weights and "
            "optimizer state untouched"
        )


def check_nonfinite_limit(state: TrainState, output: SandwichStepOutput, max_consecutive: int) -> None:
    """Stop the run (RecipeError, saying what to change) after `max_consecutive` skipped steps in a row."""
    if state.consecutive_nonfinite >= max_consecutive:
        raise RecipeError(
            f"{state.consecutive_nonfinite} consecutive steps had non-finite losses or gradients (last: "
            f"{output.skip_reason}). Lower learning_rate, enable max_grad_norm, or use bf16/fp32 instead of fp16."
        )


# ----------------------------------------------------------------------------------------------------------------------
# The run log (train_log.jsonl)
# ----------------------------------------------------------------------------------------------------------------------
def step_record(step: int, epoch: int, lr: float, output: SandwichStepOutput) -> dict[str, float | int]:
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


def logged_archs(output: SandwichStepOutput, accelerator: Accelerator, per_rank: bool) -> dict[str, Any]:
    """The archs a step trained, for its log line: `{"archs": {name: arch}}` (this rank's), and with per-rank subnet
    sampling on several processes `"archs_per_rank"`: every rank's (a collective: call it on every rank)."""
    logged: dict[str, Any] = {"archs": dict(output.archs)}
    if per_rank and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        logged["archs_per_rank"] = gather_object([dict(output.archs)])
    return logged


def append_log_line(path: str | Path, record: dict[str, Any]) -> None:
    """Append `record` as one JSON line to `path` (`train_log.jsonl`: one line per logged step)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints and the session
# ----------------------------------------------------------------------------------------------------------------------
def save_checkpoint_if_due(
    accelerator: Accelerator, run: TrainingRun, config: TrainingRunConfig, step: int, max_steps: int
) -> Path | None:
    """Every `config.checkpointing_steps` steps and at the run's last step (`max_steps`), `save_checkpoint` with the
    run's config and `checkpoints_total_limit`; never with `checkpointing_steps` 0 or None. The checkpoint, or None."""
    if not config.checkpointing_steps or (step % config.checkpointing_steps != 0 and step != max_steps):
        return None
    return save_checkpoint(accelerator, run, step, config.to_dict(), config.checkpoints_total_limit, max_steps)


def session_counts(step: int, start_step: int, resumed: bool) -> dict[str, int | None]:
    """The summary's account of this session: `session_steps` (the steps it ran) and `resumed_from_step` (where a
    resumed session started; None for a fresh run)."""
    return {"session_steps": step - start_step, "resumed_from_step": start_step if resumed else None}


# ----------------------------------------------------------------------------------------------------------------------
# The end of a run
# ----------------------------------------------------------------------------------------------------------------------
def nanmean(values: list[float]) -> float | None:
    """The mean of the values that are not NaN (a skipped step's conflict ratio is NaN); None when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def write_summary(output_dir: str | Path, summary: dict[str, Any], validation: dict[str, dict[str, float]]) -> str:
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
