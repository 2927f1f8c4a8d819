"""Supernet training: losses, gradient combination, the sandwich step, EMA, augmentation, data and config; the loop's
mechanics in `loop`, the two recipes' task libraries in `classification` and `segmentation`.

`recipes/train.py` and `recipes/train_segmentation.py` wire these to Accelerate; everything here takes tensors,
modules and small dataclasses.
"""

from .augment import build_batch_mixing, build_eval_transform, build_train_transform
from .config import TrainingConfig, parse_overrides
from .data import (
    ImageClassificationDataset,
    ImageDataSource,
    TrainingSplits,
    collate_image_batch,
    load_image_classification_splits,
    load_training_splits,
)
from .ema import ModelEMA
from .gradients import all_reduce_gradients, combine_gradients, conflict_ratio, gradient_cosines
from .losses import (
    AdaptiveAlphaDivergence,
    adaptive_alpha_divergence,
    alpha_divergence,
    kl_distillation,
    soft_target_cross_entropy,
)
from .sandwich import (
    ArchSampler,
    SandwichConfig,
    SandwichStepOutput,
    SandwichTrainer,
    sample_arch,
    set_regularization,
    unwrap_model,
)
from .schedule import build_lr_scheduler, build_param_groups

__all__ = [
    "AdaptiveAlphaDivergence",
    "ArchSampler",
    "ImageClassificationDataset",
    "ImageDataSource",
    "ModelEMA",
    "SandwichConfig",
    "SandwichStepOutput",
    "SandwichTrainer",
    "TrainingConfig",
    "adaptive_alpha_divergence",
    "all_reduce_gradients",
    "alpha_divergence",
    "build_batch_mixing",
    "build_lr_scheduler",
    "build_param_groups",
    "build_eval_transform",
    "build_train_transform",
    "collate_image_batch",
    "combine_gradients",
    "conflict_ratio",
    "gradient_cosines",
    "kl_distillation",
    "load_image_classification_splits",
    "load_training_splits",
    "TrainingSplits",
    "parse_overrides",
    "sample_arch",
    "set_regularization",
    "soft_target_cross_entropy",
    "unwrap_model",
]
