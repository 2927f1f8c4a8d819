"""The training configurations: flat dataclasses, loaded from YAML, overridable from the command line.

`TrainingRunConfig` holds the keys every training recipe has (the model to start from, the data, the optimiser, the
run's output, logging and checkpoints), declared once; `TrainingConfig` (supernet training, `recipes/train.py`) and
`SegmentationTrainingConfig` (`nasvit_hf.training.segmentation`) add their own and set their own defaults
(`recipe_defaults`).

`TrainingConfig.from_yaml(path, overrides)` reads a YAML file of `key: value` pairs and applies `--key value`
overrides (values parsed as YAML, so `--max_steps 20`, `--ema_decay null`, `--crop_scale [0.5,1.0]` work). Unknown
keys fail with the closest valid key; values are type-checked. Loading, coercion, hints and `--help` come from the
package's one config system (`nasvit_hf.config_system`); the comment on a field's line is its `--help` text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config_system import ConfigMixin, check_field_ranges, load_yaml_mapping, parse_overrides
from .pipeline import CALIBRATION_TRANSFORMS
from .sandwich import SUBNET_SAMPLING

__all__ = ["TrainingConfig", "TrainingRunConfig", "load_yaml_mapping", "parse_overrides"]

# Keys renamed after release 0.1.0 (as in NASViTConfig): still read, with a FutureWarning naming the new key.
RENAMED_KEYS = {"layer_scale": "switchable_scaling", "teacher": "teachers"}


@dataclass
class TrainingRunConfig(ConfigMixin):
    """The keys of every training recipe: where the model starts, which data, the optimiser and the run's length, and
    where the run writes its logs and checkpoints. Defaults are supernet training's; a recipe's config inherits the
    keys and sets its own defaults with `recipe_defaults`."""

    # ---- model
    model_name_or_path: str | None = None  # start from a saved model instead of random weights (classification: a
    # supernet; segmentation: an extracted classification subnet, or a segmentation model)
    search_space: Any = "tiny"  # without model_name_or_path: a preset name ("tiny", "reference", "paper",
    # "tiny-paper") or a search-space dict
    drop_path_rate: float = 0.0
    # ---- data
    dataset: str = "digits"  # a Hub name, or classification: "digits" (bundled scikit-learn digits), "imagefolder";
    # segmentation: "digits_segmentation" (built in), "folder"
    dataset_config: str | None = None
    data_dir: str | None = None  # "imagefolder": one folder per class; "folder": <data_dir>/<split>/images/*.png|jpg
    # + <data_dir>/<split>/masks/*.png
    train_split: str = "train"
    validation_split: str | None = "validation"
    image_column: str = "image"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    num_workers: int = 0
    # ---- optimisation
    seed: int = 42
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 64
    num_train_epochs: float = 3  # a fraction of an epoch is rounded up to whole steps
    max_steps: int | None = None  # overrides num_train_epochs
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    lr_scheduler_type: str = "cosine"  # classification: any transformers scheduler ("cosine_warmup_with_min_lr" =
    # the reference); segmentation: "poly" (power 1, Segformer) | "cosine" | "constant"
    max_grad_norm: float | None = 1.0
    # ---- evaluation, logging, checkpoints
    output_dir: str = "outputs/digits_tiny"
    logging_steps: int = 1
    checkpointing_steps: int | None = 500
    checkpoints_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None  # a checkpoint folder or "latest": the run goes on with the config it
    # recorded; the keys given with it are changes (checked)
    overwrite_output_dir: bool = False  # delete an earlier run in output_dir and start over (else: refused)

    # Keys a resumed run may change (they do not change the model, data, optimisation or schedule); every other
    # change fails with the list of keys. The keys in RESUME_GROWABLE_KEYS may only grow.
    RESUME_SAFE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "num_workers",
            "per_device_eval_batch_size",
            "max_eval_samples",
            "logging_steps",
            "checkpointing_steps",
            "checkpoints_total_limit",
        }
    )
    RESUME_GROWABLE_KEYS: ClassVar[frozenset[str]] = frozenset({"max_steps", "num_train_epochs"})
    # What NASVIT_STEP_SCALE scales (nasvit_hf.config_system): the run's length.
    STEP_KEYS: ClassVar[dict[str, float]] = {"max_steps": 1, "num_train_epochs": 0}
    # The range of every number key (`nasvit_hf.config_system.check_field_ranges`; floats must also be finite).
    FIELD_RANGES: ClassVar[dict[str, str]] = {
        "drop_path_rate": "[0, 1)",
        "max_train_samples": "[1, inf)",
        "max_eval_samples": "[1, inf)",
        "num_workers": "[0, 1024]",
        "seed": "[0, 4294967295]",
        "per_device_train_batch_size": "[1, inf)",
        "per_device_eval_batch_size": "[1, inf)",
        "num_train_epochs": "(0, inf)",  # a fraction of an epoch is rounded up to whole steps
        "max_steps": "[1, inf)",
        "learning_rate": "(0, inf)",
        "weight_decay": "[0, inf)",
        "max_grad_norm": "(0, inf)",
        "logging_steps": "[1, inf)",
        "checkpointing_steps": "[1, inf)",
        "checkpoints_total_limit": "[0, inf)",
    }


@dataclass
class TrainingConfig(TrainingRunConfig):
    """Supernet training (`recipes/train.py`): `TrainingRunConfig`'s keys and these."""

    # ---- model
    switchable_scaling: str = "tokens"  # "tokens" (reference) | "width" (paper) | "shared" | "none"
    drop_connect_rate: float = 0.0
    dropout: float = 0.0
    # ---- data
    label_column: str = "label"
    image_size: int | None = None  # the dataloader's size; default: the space's largest resolution
    holdout_per_class: int | None = None  # images per class held out of training for search (holdout.json)
    holdout_seed: int | None = None  # default: seed
    pin_memory: bool | None = None  # page-locked batches for fast host-to-GPU copies; None = when CUDA is available
    persistent_workers: bool = False  # the training loader's workers stay up between epochs (with num_workers > 0)
    prefetch_factor: int | None = None  # batches each worker loads ahead (with num_workers > 0); None = torch's 2
    # ---- augmentation (Table 5; defaults = the paper's weak recipe through torchvision)
    data_pipeline: str = "torchvision"  # "torchvision" (the n/m knobs below) | "timm" (the reference's: auto_augment)
    auto_augment: str | None = None  # timm policy for data_pipeline timm, e.g. "rand-n1-m1-mstd0.5-inc1"
    randaugment_num_ops: int = 1
    randaugment_magnitude: int = 1
    crop_scale: list = field(default_factory=lambda: [0.08, 1.0])
    hflip: float = 0.5
    random_erasing: float = 0.0
    random_erasing_mode: str = "pixel"  # timm's RandomErasing mode (data_pipeline timm): const | rand | pixel
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_prob: float = 1.0  # timm Mixup: probability of mixing a batch at all
    mixup_switch_prob: float = 0.5  # timm Mixup: probability of cutmix instead of mixup when both are on
    label_smoothing: float = 0.0  # on label targets (AlphaNet's teacherless recipe: 0.1)
    eval_crop_mode: str = "resolution"  # evaluation protocol: "resolution" (r/0.875 -> r) | "reference" (256->224->r)
    # ---- sandwich step
    num_random_subnets: int = 2
    subnet_sampling: str = "synchronized"  # "synchronized" (all ranks, same random subnets) | "per_rank" (reference)
    distill_loss: str = "alpha_divergence"  # or "kl"
    alpha_min: float = -1.0
    alpha_max: float = 1.0
    iw_clip: float = 5.0
    gradient_priority: str = "sub"  # "sub" (Eqn. 1) | "sup" | "none"
    gradient_granularity: str = "tensor"  # "tensor" (reference) | "global" (paper)
    max_projection_coefficient: float | None = 2.0  # the reference's cap; null = no cap
    projection_eps: float = 1e-6  # added to ‖g‖² in the coefficient (the reference); 0 + no cap = exact projection
    projection_start_epoch: int = 0  # first (0-based) epoch that projects, plain sum before; the reference: 101
    teachers: Any = None  # AutoModelForImageClassification names/paths: a list, or one string ("a,b" = two)
    teacher_temperature: float = 1.0  # ensemble = mean of softmax(logits / T); the reference: 0.2
    # ---- optimisation
    gradient_accumulation_steps: int = 1
    scale_lr: bool = False  # learning_rate × total batch / 512 (the reference)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    min_lr_rate: float | None = None  # final lr / peak lr, for cosine_with_min_lr / cosine_warmup_with_min_lr
    warmup_lr_rate: float | None = None  # first warm-up lr / peak lr, for cosine_warmup_with_min_lr
    min_learning_rate: float | None = None  # final lr, scaled with learning_rate (scale_lr): instead of min_lr_rate
    warmup_learning_rate: float | None = None  # first warm-up lr, scaled with learning_rate: instead of warmup_lr_rate
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs
    ema_decay: float | None = None  # e.g. 0.99985 (the reference)
    mixed_precision: str | None = None  # "no" | "fp16" | "bf16"; None = as `accelerate launch` says
    max_consecutive_nonfinite: int = 5
    deterministic: bool = False
    num_threads: int | None = None  # torch intra-op threads; None = torch's default (1 is faster on a busy CPU)
    # ---- evaluation, logging, checkpoints
    eval_every_epochs: int = 1
    calibration_batches: int = 64
    calibration_transform: str = "evaluation"  # BN recalibration images: "evaluation" | "training" (the reference)
    eval_archs: list = field(default_factory=list)  # extra archs to validate each epoch
    report_to: str = "tensorboard"  # "tensorboard", "none", or any accelerate tracker name
    snapshot_epochs: Any = None  # epochs whose end saves snapshots/epoch_<E>/: a list, or "table4" (Table 4, scaled)
    save_final_model: bool = True
    progress_bar: bool = True

    # Keys a resumed run may change besides TrainingRunConfig's (they do not change the model, data, optimisation or
    # schedule).
    RESUME_SAFE_KEYS: ClassVar[frozenset[str]] = TrainingRunConfig.RESUME_SAFE_KEYS | {
        "pin_memory",
        "persistent_workers",
        "prefetch_factor",
        "num_threads",
        "eval_every_epochs",
        "calibration_batches",
        "eval_archs",
        "report_to",
        "snapshot_epochs",
        "save_final_model",
        "progress_bar",
    }
    RENAMED_KEYS: ClassVar[dict[str, str]] = RENAMED_KEYS
    # What NASVIT_STEP_SCALE scales (nasvit_hf.config_system): the run's length and its warm-up.
    STEP_KEYS: ClassVar[dict[str, float]] = {**TrainingRunConfig.STEP_KEYS, "warmup_steps": 0, "warmup_epochs": 0}
    # The range of every number key (`nasvit_hf.config_system.check_field_ranges`; floats must also be finite).
    FIELD_RANGES: ClassVar[dict[str, str]] = {
        **TrainingRunConfig.FIELD_RANGES,
        "drop_connect_rate": "[0, 1)",
        "dropout": "[0, 1)",
        "image_size": "[16, 4096]",
        "holdout_per_class": "[1, inf)",
        "holdout_seed": "[0, 4294967295]",
        "prefetch_factor": "[1, 1024]",
        "randaugment_num_ops": "[0, 64]",
        "randaugment_magnitude": "[0, 30]",
        "hflip": "[0, 1]",
        "random_erasing": "[0, 1]",
        "mixup_alpha": "[0, inf)",
        "cutmix_alpha": "[0, inf)",
        "mixup_prob": "[0, 1]",
        "mixup_switch_prob": "[0, 1]",
        "label_smoothing": "[0, 1)",
        "num_random_subnets": "[0, 1024]",
        "iw_clip": "(0, inf)",
        "max_projection_coefficient": "[0, inf)",
        "projection_eps": "[0, inf)",
        "projection_start_epoch": "[0, inf)",
        "teacher_temperature": "(0, inf)",
        "gradient_accumulation_steps": "[1, inf)",
        "adam_beta1": "[0, 1)",
        "adam_beta2": "[0, 1)",
        "adam_epsilon": "[0, inf)",
        "min_lr_rate": "[0, 1]",
        "warmup_lr_rate": "[0, 1]",
        "min_learning_rate": "[0, inf)",
        "warmup_learning_rate": "[0, inf)",
        "warmup_epochs": "[0, inf)",
        "warmup_steps": "[0, inf)",
        "ema_decay": "[0, 1]",
        "max_consecutive_nonfinite": "[1, inf)",
        "num_threads": "[1, 1024]",
        "eval_every_epochs": "[1, inf)",
        "calibration_batches": "[1, inf)",
    }

    def __post_init__(self):
        check_field_ranges(self)
        if isinstance(self.teachers, str):  # "a" or the command line's "a,b" -> a list
            from .teachers import parse_teacher_names

            self.teachers = parse_teacher_names(self.teachers)
        self.validate()

    def schedule_rates(self) -> tuple[float | None, float | None]:
        """`(min_lr_rate, warmup_lr_rate)`: the final and first warm-up lr as fractions of the peak lr. Given as
        `min_learning_rate` / `warmup_learning_rate`, they are scaled with `learning_rate` (`scale_lr`: × total batch
        / 512, as the reference's main.py scales its BASE_LR, WARMUP_LR and MIN_LR alike), so their fraction of the
        peak is the ratio of the configured values at any batch size."""
        min_rate, warmup_rate = self.min_lr_rate, self.warmup_lr_rate
        if self.min_learning_rate is not None:
            min_rate = self.min_learning_rate / self.learning_rate
        if self.warmup_learning_rate is not None:
            warmup_rate = self.warmup_learning_rate / self.learning_rate
        return min_rate, warmup_rate

    def validate(self) -> None:
        choices = {
            "switchable_scaling": ["tokens", "width", "shared", "none"],
            "distill_loss": ["alpha_divergence", "kl"],
            "gradient_priority": ["sub", "sup", "none"],
            "gradient_granularity": ["tensor", "global"],
            "mixed_precision": [None, "no", "fp16", "bf16"],
            "data_pipeline": ["torchvision", "timm"],
            "eval_crop_mode": ["resolution", "reference"],
            "subnet_sampling": list(SUBNET_SAMPLING),
            "calibration_transform": list(CALIBRATION_TRANSFORMS),
            "random_erasing_mode": ["const", "rand", "pixel"],
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"config {name} must be one of {allowed}, got {getattr(self, name)!r}.")
        for absolute, rate in (("min_learning_rate", "min_lr_rate"), ("warmup_learning_rate", "warmup_lr_rate")):
            value = getattr(self, absolute)
            if value is None:
                continue
            if getattr(self, rate) is not None:
                raise ValueError(
                    f"config sets both {absolute} and {rate}: they say the same thing (the lr, or its fraction of the "
                    "peak lr); keep one."
                )
            if not (self.learning_rate > 0 and 0.0 <= value <= self.learning_rate):
                raise ValueError(f"config {absolute} must be in [0, learning_rate={self.learning_rate}], got {value}.")
        if self.alpha_min > self.alpha_max:
            raise ValueError(f"config alpha_min ({self.alpha_min}) must not exceed alpha_max ({self.alpha_max}).")
        if self.dataset == "imagefolder" and not self.data_dir:
            raise ValueError("dataset 'imagefolder' needs data_dir (a folder with one sub-folder per class).")
        if not isinstance(self.crop_scale, (list, tuple)) or len(self.crop_scale) != 2:
            raise ValueError(f"config crop_scale must be [low, high], got {self.crop_scale!r}.")
        if self.teachers is not None and not (
            isinstance(self.teachers, list) and all(isinstance(name, str) for name in self.teachers)
        ):
            raise ValueError(f"config teachers must be a model name/path or a list of them, got {self.teachers!r}.")
        if self.auto_augment and self.data_pipeline != "timm":
            raise ValueError(
                f"config auto_augment {self.auto_augment!r} is a timm policy: set data_pipeline: timm (the torchvision "
                "pipeline uses randaugment_num_ops / randaugment_magnitude)."
            )
        snapshots = self.snapshot_epochs
        if not (
            snapshots is None
            or snapshots == "table4"
            or (isinstance(snapshots, list) and all(type(e) is int and e >= 1 for e in snapshots))
        ):
            raise ValueError(
                f"config snapshot_epochs must be a list of epochs >= 1, 'table4' or null, got {snapshots!r}."
            )
        if not isinstance(self.eval_archs, list):
            raise ValueError(f"config eval_archs must be a list of arch dicts, got {self.eval_archs!r}.")
