"""The training configuration: one flat dataclass, loaded from YAML, overridable from the command line.

`TrainingConfig.from_yaml(path, overrides)` reads a YAML file of `key: value` pairs and applies `--key value`
overrides (values parsed as YAML, so `--max_steps 20`, `--ema_decay null`, `--crop_scale [0.5,1.0]` work). Unknown
keys fail with the closest valid key; values are type-checked.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["TrainingConfig", "parse_overrides"]

# Keys renamed after release 0.1.0 (as in NASViTConfig): still read, with a FutureWarning naming the new key.
RENAMED_KEYS = {"layer_scale": "switchable_scaling"}


@dataclass
class TrainingConfig:
    # ---- model
    search_space: Any = "tiny"  # a preset name ("tiny", "reference") or a search-space dict
    model_name_or_path: str | None = None  # start from a saved supernet instead of random weights
    switchable_scaling: str = "tokens"  # "tokens" (reference) | "width" (paper) | "shared" | "none"
    drop_path_rate: float = 0.0
    drop_connect_rate: float = 0.0
    dropout: float = 0.0
    # ---- data
    dataset: str = "digits"  # "digits" (bundled scikit-learn digits), a Hub name, or "imagefolder"
    dataset_config: str | None = None
    data_dir: str | None = None  # for "imagefolder"
    train_split: str = "train"
    validation_split: str | None = "validation"
    image_column: str = "image"
    label_column: str = "label"
    image_size: int | None = None  # the dataloader's size; default: the space's largest resolution
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    holdout_per_class: int | None = None  # images per class held out of training for search (holdout.json)
    holdout_seed: int | None = None  # default: seed
    num_workers: int = 0
    # ---- augmentation (Table 5; defaults = the paper's weak recipe)
    randaugment_num_ops: int = 1
    randaugment_magnitude: int = 1
    crop_scale: list = field(default_factory=lambda: [0.08, 1.0])
    hflip: float = 0.5
    random_erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # ---- sandwich step
    num_random_subnets: int = 2
    distill_loss: str = "alpha_divergence"  # or "kl"
    alpha_min: float = -1.0
    alpha_max: float = 1.0
    iw_clip: float = 5.0
    gradient_priority: str = "sub"  # "sub" (Eqn. 1) | "sup" | "none"
    gradient_granularity: str = "tensor"  # "tensor" (reference) | "global" (paper)
    max_projection_coefficient: float | None = 2.0
    projection_start_epoch: int = 0  # the reference: 100 (plain sum before)
    teacher: str | None = None  # an AutoModelForImageClassification name or path
    teacher_temperature: float = 1.0
    # ---- optimisation
    seed: int = 42
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    num_train_epochs: int = 3
    max_steps: int | None = None  # overrides num_train_epochs
    learning_rate: float = 3e-4
    scale_lr: bool = False  # learning_rate × total batch / 512 (the reference)
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler_type: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs
    max_grad_norm: float | None = 1.0
    ema_decay: float | None = None  # e.g. 0.99985 (the reference)
    mixed_precision: str | None = None  # "no" | "fp16" | "bf16"; None = as `accelerate launch` says
    max_consecutive_nonfinite: int = 5
    deterministic: bool = False
    num_threads: int | None = None  # torch intra-op threads; None = torch's default (1 is faster on a busy CPU)
    # ---- evaluation, logging, checkpoints
    output_dir: str = "outputs/digits_tiny"
    eval_every_epochs: int = 1
    calibration_batches: int = 64
    eval_archs: list = field(default_factory=list)  # extra archs to validate each epoch
    logging_steps: int = 1
    report_to: str = "tensorboard"  # "tensorboard", "none", or any accelerate tracker name
    checkpointing_steps: int | None = 500
    checkpoints_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None  # a checkpoint folder or "latest"
    save_final_model: bool = True
    progress_bar: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        choices = {
            "switchable_scaling": ["tokens", "width", "shared", "none"],
            "distill_loss": ["alpha_divergence", "kl"],
            "gradient_priority": ["sub", "sup", "none"],
            "gradient_granularity": ["tensor", "global"],
            "mixed_precision": [None, "no", "fp16", "bf16"],
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"config {name} must be one of {allowed}, got {getattr(self, name)!r}.")
        positive = [
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "num_train_epochs",
            "eval_every_epochs",
            "calibration_batches",
            "logging_steps",
            "max_consecutive_nonfinite",
        ]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"config {name} must be >= 1, got {getattr(self, name)}.")
        for name in [
            "max_steps",
            "checkpointing_steps",
            "max_train_samples",
            "max_eval_samples",
            "image_size",
            "holdout_per_class",
        ]:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"config {name} must be >= 1 or null, got {value}.")
        for name in ["drop_path_rate", "drop_connect_rate", "dropout", "hflip", "random_erasing"]:
            if not 0.0 <= getattr(self, name) < 1.0 + (name in ("hflip", "random_erasing")):
                raise ValueError(f"config {name} must be a probability, got {getattr(self, name)}.")
        if self.alpha_min > self.alpha_max:
            raise ValueError(f"config alpha_min ({self.alpha_min}) must not exceed alpha_max ({self.alpha_max}).")
        if self.dataset == "imagefolder" and not self.data_dir:
            raise ValueError("dataset 'imagefolder' needs data_dir (a folder with one sub-folder per class).")
        if not isinstance(self.crop_scale, (list, tuple)) or len(self.crop_scale) != 2:
            raise ValueError(f"config crop_scale must be [low, high], got {self.crop_scale!r}.")
        if not isinstance(self.eval_archs, list):
            raise ValueError(f"config eval_archs must be a list of arch dicts, got {self.eval_archs!r}.")

    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainingConfig:
        if not isinstance(values, dict):
            raise ValueError(f"{source} must be a mapping of key: value pairs, got {type(values).__name__}.")
        values = _rename_keys(values, source)
        names = cls.field_names()
        unknown = [key for key in values if key not in names]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, names, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(
                f"{source} has unknown keys: {', '.join(hints)}. Valid keys are the fields of TrainingConfig "
                "(see recipes/configs/digits_tiny.yaml)."
            )
        hints = typing.get_type_hints(cls)
        clean = {key: _coerce(key, value, hints[key], source) for key, value in values.items()}
        return cls(**clean)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainingConfig:
        values: dict[str, Any] = {}
        if path is not None:
            loaded = load_yaml_mapping(path)
            cls.from_dict(loaded, source=f"config file {str(path)!r}")  # report its own errors by name
            values.update(loaded)
        if overrides:
            cls.from_dict({**values, **overrides}, source="command-line overrides")
            values.update(overrides)
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _rename_keys(values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` with the old names of `RENAMED_KEYS` replaced by the new ones (a FutureWarning each)."""
    values = dict(values)
    for old, new in RENAMED_KEYS.items():
        if old not in values:
            continue
        if new in values and values[new] != values[old]:
            raise ValueError(f"{source} sets both {old!r} (the old name) and {new!r}; keep only {new!r}.")
        warnings.warn(f"{source}: key {old!r} is deprecated, it is now {new!r}.", FutureWarning, stacklevel=3)
        values[new] = values.pop(old)
    return values


def _coerce(key: str, value: Any, annotation: Any, source: str) -> Any:
    """Check a value against a field annotation (accepting ints for floats); raise a ValueError naming the key."""
    if value is None:
        allows_none = annotation is Any or type(None) in typing.get_args(annotation)
        if not allows_none:
            raise ValueError(f"{source}: {key} cannot be null.")
        return None
    if annotation is Any:
        return value
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    base = args[0]
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is float and isinstance(value, str):  # YAML reads "1e-5" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is bool and isinstance(value, bool):
        return value
    if base is str and isinstance(value, str):
        return value
    if base is list and isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"{source}: {key} must be of type {getattr(base, '__name__', base)}, got {value!r}.")


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The `key: value` mapping of a YAML config file, with clear errors for a missing file or another shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist (see recipes/configs/).")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of key: value pairs.")
    return loaded


def parse_overrides(arguments: list[str]) -> dict[str, Any]:
    """`["--max_steps", "20", "--ema_decay=null"]` → {"max_steps": 20, "ema_decay": None} (values parsed as YAML)."""
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(arguments):
        token = arguments[index]
        if not token.startswith("--"):
            raise ValueError(f"unexpected argument {token!r}: overrides are written --key value.")
        key = token[2:].replace("-", "_")
        if "=" in key:
            key, raw = key.split("=", 1)
        else:
            if index + 1 >= len(arguments) or arguments[index + 1].startswith("--"):
                raise ValueError(f"override --{key} needs a value (e.g. --{key} 10).")
            index += 1
            raw = arguments[index]
        overrides[key] = yaml.safe_load(raw) if raw != "" else None
        index += 1
    return overrides
