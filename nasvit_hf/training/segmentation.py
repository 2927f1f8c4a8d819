"""Library side of `recipes/train_segmentation.py`: config, data (Hub name, local image/mask folders or the built-in
digits scenes), joint image + mask augmentation, model building and mIoU evaluation. The script only wires these to
Accelerate, logging and checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..config_system import check_field_ranges, parse_overrides, recipe_defaults
from ..models import NASViTConfig, NASViTForSemanticSegmentation, NASViTSegmentationImageProcessor
from ..models.search_space_nasvit import BACKBONE_STAGE_NAMES
from .config import TrainingRunConfig

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

__all__ = [
    "IMAGE_EXTENSIONS",
    "SegmentationTrainingConfig",
    "SegmentationTransform",
    "build_image_processor",
    "build_segmentation_model",
    "build_segmentation_scheduler",
    "collate_segmentation_batch",
    "evaluate_segmentation",
    "load_segmentation_splits",
    "parse_overrides",
    "save_segmentation_model",
    "segmentation_model_from_folder",
    "segmentation_summary",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_LABEL_COLUMNS = ("annotation", "label", "mask", "semantic_segmentation", "segmentation", "gtFine")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
@recipe_defaults(
    dataset="digits_segmentation",
    per_device_train_batch_size=16,
    per_device_eval_batch_size=16,
    num_train_epochs=10,
    learning_rate=1.0e-3,
    weight_decay=0.01,
    lr_scheduler_type="poly",
    output_dir="outputs/segmentation_digits",
    logging_steps=10,
    checkpointing_steps=100,
    checkpoints_total_limit=2,
)
class SegmentationTrainingConfig(TrainingRunConfig):
    """Semantic segmentation fine-tuning (`recipes/train_segmentation.py`): `TrainingRunConfig`'s keys, with this
    recipe's defaults, and these."""

    # ---- model
    arch: Any = "largest"  # without model_name_or_path: "largest" | "smallest" | a preset name (nasvit_hf.presets) |
    # an arch dict
    num_windows: Any = "auto"  # k windows in total per stage (1, 4, 9, ...); "auto" = feature side // 7 per side
    decoder_hidden_size: int = 256
    out_features: list | None = None  # default: ["mb2", "mb3", "mb4", "mb6"] (strides 4-32)
    classifier_dropout: float = 0.1
    # ---- data
    label_column: str | None = None  # default: the first of annotation, label, mask, semantic_segmentation, ...
    id2label: dict | None = None  # class names; required unless the data says (digits) or num_labels is given
    num_labels: int | None = None
    reduce_labels: bool = False  # ADE20K: 0 ("other") -> ignore, classes shift down by one
    ignore_index: int = 255
    digits_num_train: int = 512  # the built-in data's size
    digits_num_validation: int = 128
    digits_size: int = 64
    digits_label_mode: str = "digits"
    # ---- augmentation (image and mask together)
    crop_size: list = field(default_factory=lambda: [64, 64])  # [height, width]
    scale_base: list = field(default_factory=lambda: [64, 64])  # resize to fit this (keeping aspect) x a ratio ...
    scale_range: list = field(default_factory=lambda: [0.75, 1.5])  # ... drawn in this range (mmseg-style)
    hflip: float = 0.5
    eval_short_side: int | None = None  # evaluation: resize the shorter side to this (None: keep); mIoU is always
    # computed at the original mask size
    # ---- optimisation
    head_learning_rate_multiplier: float = 10.0  # Segformer: the decode head learns 10x faster
    warmup_steps: int = 0
    # ---- evaluation, logging, checkpoints
    eval_every_steps: int | None = None  # default: once per epoch (and at the end)
    report_to: str | None = "tensorboard"

    # Keys a resumed run may change besides TrainingRunConfig's (see TrainingConfig).
    RESUME_SAFE_KEYS: ClassVar[frozenset[str]] = TrainingRunConfig.RESUME_SAFE_KEYS | {
        "eval_short_side",
        "eval_every_steps",
        "report_to",
    }
    # What NASVIT_STEP_SCALE scales (nasvit_hf.config_system): the run's length and its warm-up.
    STEP_KEYS: ClassVar[dict[str, float]] = {**TrainingRunConfig.STEP_KEYS, "warmup_steps": 0}
    # The range of every number key (`nasvit_hf.config_system.check_field_ranges`; floats must also be finite).
    FIELD_RANGES: ClassVar[dict[str, str]] = {
        **TrainingRunConfig.FIELD_RANGES,
        "decoder_hidden_size": "[1, 65536]",
        "classifier_dropout": "[0, 1)",
        "num_labels": "[1, 1000000]",
        "ignore_index": "[-2147483648, 2147483647]",
        "digits_num_train": "[1, 1000000]",
        "digits_num_validation": "[1, 1000000]",
        "digits_size": "[32, 427]",  # crops of scikit-learn's 427 x 640 sample photos
        "hflip": "[0, 1]",
        "eval_short_side": "[16, 8192]",
        "head_learning_rate_multiplier": "(0, inf)",
        "warmup_steps": "[0, inf)",
        "eval_every_steps": "[0, inf)",  # 0 or null: once per epoch
        "checkpointing_steps": "[0, inf)",  # 0 or null: no checkpoints
    }

    def __post_init__(self) -> None:
        check_field_ranges(self)
        if self.lr_scheduler_type not in ("poly", "cosine", "constant"):
            raise ValueError(
                f"lr_scheduler_type must be 'poly', 'cosine' or 'constant', got {self.lr_scheduler_type!r}."
            )
        for name in ("crop_size", "scale_base"):
            value = getattr(self, name)
            if isinstance(value, int):
                value = [value, value]
                setattr(self, name, value)
            if len(value) != 2 or any(not isinstance(v, int) or v <= 0 for v in value):
                raise ValueError(f"{name} must be [height, width] in pixels, got {value!r}.")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be [low, high] with 0 < low <= high, got {self.scale_range!r}.")
        if self.dataset == "folder" and not self.data_dir:
            raise ValueError("dataset: folder needs data_dir (with <split>/images and <split>/masks inside).")
        if self.out_features is not None and any(name not in BACKBONE_STAGE_NAMES for name in self.out_features):
            raise ValueError(f"out_features must be names out of {BACKBONE_STAGE_NAMES}, got {self.out_features}.")
        if self.id2label is not None:
            self.id2label = {int(key): str(value) for key, value in self.id2label.items()}


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------
def _folder_split(root: Path, split: str):
    from datasets import Dataset, Features, Image

    images_dir, masks_dir = root / split / "images", root / split / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise FileNotFoundError(f"split {split!r}: expected folders {images_dir} and {masks_dir}.")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise FileNotFoundError(
            f"split {split!r}: no mask in {masks_dir} for {missing[:5]} (masks match by file stem)."
        )
    if not images:
        raise FileNotFoundError(f"split {split!r}: no images in {images_dir}.")
    data = {"image": [str(p) for p in images], "annotation": [str(masks[p.stem]) for p in images]}
    return Dataset.from_dict(data, features=Features({"image": Image(), "annotation": Image()}))


def load_segmentation_splits(config: SegmentationTrainingConfig) -> tuple[Any, Any, dict[int, str], str]:
    """(train dataset, validation dataset or None, id2label, label column) as the config describes."""
    from datasets import load_dataset

    if config.dataset == "digits_segmentation":
        from ..data.digits_segmentation import digits_segmentation_labels, load_digits_segmentation_dataset

        splits = load_digits_segmentation_dataset(
            num_train=config.digits_num_train,
            num_validation=config.digits_num_validation,
            size=config.digits_size,
            label_mode=config.digits_label_mode,
            seed=config.seed,
        )
        id2label = digits_segmentation_labels(config.digits_label_mode)
    elif config.dataset == "folder":
        root = Path(config.data_dir)
        splits = {config.train_split: _folder_split(root, config.train_split)}
        if config.validation_split:
            splits[config.validation_split] = _folder_split(root, config.validation_split)
        id2label = None
    else:
        splits = load_dataset(config.dataset, config.dataset_config, data_dir=config.data_dir)
        id2label = None
    if config.id2label is not None:
        id2label = dict(config.id2label)
    elif config.num_labels is not None:
        id2label = {i: f"class_{i}" for i in range(config.num_labels)}
    if id2label is None:
        raise ValueError(
            f"dataset {config.dataset!r}: say how many classes there are with id2label (names) or num_labels."
        )
    if config.num_labels is not None and config.num_labels != len(id2label):
        raise ValueError(f"num_labels = {config.num_labels} but id2label names {len(id2label)} classes.")
    if config.train_split not in splits:
        raise ValueError(f"no split {config.train_split!r} in the dataset; it has {list(splits)}.")
    train = splits[config.train_split]
    validation = None
    if config.validation_split:
        if config.validation_split not in splits:
            raise ValueError(f"no split {config.validation_split!r} in the dataset; it has {list(splits)}.")
        validation = splits[config.validation_split]
    columns = train.column_names
    if config.image_column not in columns:
        raise ValueError(f"image_column {config.image_column!r} is not a column of the data ({columns}).")
    label_column = config.label_column or next((c for c in _LABEL_COLUMNS if c in columns), None)
    if label_column is None or label_column not in columns:
        raise ValueError(f"label_column {config.label_column!r}: set it to the mask column, one of {columns}.")
    if config.max_train_samples is not None:
        train = train.select(range(min(config.max_train_samples, len(train))))
    if validation is not None and config.max_eval_samples is not None:
        validation = validation.select(range(min(config.max_eval_samples, len(validation))))
    return train, validation, id2label, label_column


def _image_tensor(image: Any) -> torch.Tensor:
    if hasattr(image, "convert"):
        image = image.convert("RGB")
    array = np.array(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"an image must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}.")
    return torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1)


def _mask_tensor(mask: Any) -> torch.Tensor:
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(
            f"a mask must be a single-channel (H, W) map of class ids, got shape {array.shape}; convert colour-coded "
            "masks to class ids (mode 'L', 'P' or 'I' PNGs) first."
        )
    return torch.from_numpy(np.ascontiguousarray(array).astype(np.int64))


class SegmentationTransform:
    """Decode an (image, mask) pair and transform both together.

    train: random rescale (fit `scale_base` keeping aspect, x a ratio in `scale_range`), random crop `crop_size`
    (padding images with 0 and masks with the ignore index when smaller), random horizontal flip; eval: optional
    resize of the shorter side. Then ImageNet normalisation. Masks are resized with nearest neighbour. With
    `reduce_labels`, mask 0 becomes the ignore index and every other id moves down by one.
    """

    def __init__(self, config: SegmentationTrainingConfig, train: bool, image_column: str, label_column: str):
        self.image_column, self.label_column = image_column, label_column
        self.reduce_labels, self.ignore_index = config.reduce_labels, config.ignore_index
        self.train = train
        steps: list[Any] = []
        if train:
            steps += [
                v2.ScaleJitter(tuple(config.scale_base), scale_range=tuple(config.scale_range), antialias=True),
                v2.RandomCrop(
                    tuple(config.crop_size),
                    pad_if_needed=True,
                    fill={tv_tensors.Image: 0, tv_tensors.Mask: config.ignore_index},
                ),
            ]
            if config.hflip > 0:
                steps.append(v2.RandomHorizontalFlip(config.hflip))
        elif config.eval_short_side:
            steps.append(v2.Resize(config.eval_short_side, antialias=True))
        steps += [
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
        self.transform = v2.Compose(steps)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        pixel_values, labels, original_labels = [], [], []
        for index, (image, mask) in enumerate(zip(batch[self.image_column], batch[self.label_column])):
            image, mask = _image_tensor(image), _mask_tensor(mask)
            if tuple(image.shape[-2:]) != tuple(mask.shape):
                raise ValueError(
                    f"sample {index} of a batch: the mask is {tuple(mask.shape)} (height, width) but its image is "
                    f"{tuple(image.shape[-2:])}; every mask must have its image's size."
                )
            if self.reduce_labels:
                mask = torch.where(mask == 0, self.ignore_index, mask - 1)
                mask = torch.where(mask == self.ignore_index - 1, self.ignore_index, mask)
            if not self.train:
                original_labels.append(mask)
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
            pixel_values.append(image.as_subclass(torch.Tensor))
            labels.append(mask.as_subclass(torch.Tensor))
        result = {"pixel_values": pixel_values, "labels": labels}
        if not self.train:
            result["original_labels"] = original_labels
        return result


def collate_segmentation_batch(examples: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Stack pixel values and masks when all share a size (training crops always do); else keep lists."""
    batch: dict[str, Any] = {}
    for key in examples[0]:
        values = [example[key] for example in examples]
        same = len({tuple(v.shape) for v in values}) == 1
        batch[key] = torch.stack(values) if same and key != "original_labels" else values
    return batch


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------
def _resolve_arch(config: NASViTConfig, arch: Any) -> dict[str, Any]:
    if isinstance(arch, dict):
        return config.validate_arch(arch)
    if arch == "largest":
        return config.largest_arch()
    if arch == "smallest":
        return config.smallest_arch()
    from ..presets import get_named_arch

    named = get_named_arch(arch)
    if named.arch is None:
        raise ValueError(f"preset {arch!r} has no published architecture yet ({named.provenance}); pass an arch dict.")
    return config.validate_arch(named.arch)


def build_segmentation_model(
    config: SegmentationTrainingConfig, id2label: dict[int, str]
) -> NASViTForSemanticSegmentation:
    """From `model_name_or_path` (an extracted classification subnet keeps its backbone weights; the decode head is
    new) or, without one, a randomly initialised subnet `arch` of `search_space`."""
    label2id = {name: index for index, name in id2label.items()}
    settings = {
        "num_labels": len(id2label),
        "id2label": id2label,
        "label2id": label2id,
        "num_windows": config.num_windows,
        "decoder_hidden_size": config.decoder_hidden_size,
        "semantic_loss_ignore_index": config.ignore_index,
        "classifier_dropout": config.classifier_dropout,
        "drop_path_rate": config.drop_path_rate,
    }
    if config.out_features is not None:
        settings["out_features"] = list(config.out_features)
    if config.model_name_or_path:
        return segmentation_model_from_folder(config.model_name_or_path, settings)
    from ..presets import get_search_space

    space = get_search_space(config.search_space) if isinstance(config.search_space, str) else config.search_space
    supernet_config = NASViTConfig(search_space=space, **settings)
    arch = _resolve_arch(supernet_config, config.arch)
    return NASViTForSemanticSegmentation(supernet_config.subnet_config(arch))


def segmentation_model_from_folder(path: str, settings: dict[str, Any]) -> NASViTForSemanticSegmentation:
    """`NASViTForSemanticSegmentation` from a saved NASViT folder with `settings` (labels, windows, head) applied.

    From an extracted classification subnet the backbone keeps its weights, the classification head is dropped and the
    decode head starts from scratch; from a segmentation model with another number of labels the classifier does. Both
    are what fine-tuning expects, so they are said in one log line instead of transformers' label-count warning and
    its table of MISSING weights. Anything else missing or of another shape is a `CheckpointMismatchError`."""
    from transformers.utils import logging as transformers_logging

    from ..loading import CheckpointMismatchError, read_nasvit_config

    values = read_nasvit_config(path, "a NASViT model").to_dict()  # transformers would convert any config
    values.update({key: value for key, value in settings.items() if key != "num_labels"})  # id2label says it
    model_config = NASViTConfig.from_dict(values)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model, info = NASViTForSemanticSegmentation.from_pretrained(
            path, config=model_config, ignore_mismatched_sizes=True, output_loading_info=True
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(
        entry[0] if isinstance(entry, (list, tuple)) else entry for entry in info.get("mismatched_keys") or []
    )
    fresh_head = bool(missing) and all(key.startswith("decode_head.") for key in missing)
    unexpected = [key for key in missing if not key.startswith("decode_head.")]
    unexpected += [key for key in mismatched if not key.startswith("decode_head.classifier.")]
    unexpected += sorted(info.get("unexpected_keys") or [])
    if unexpected:
        raise CheckpointMismatchError(
            f"{path!r} does not hold the weights of the NASViT backbone its config.json describes ({len(unexpected)} "
            f"missing, unexpected or reshaped: {', '.join(unexpected[:5])}); use a folder written by recipes/extract.py "
            "or save_pretrained."
        )
    labels = len(model_config.id2label)
    if fresh_head:
        logger.info(
            "%s: backbone weights loaded; the decode head (%d tensors) starts from scratch for %d labels (expected: "
            "fine-tuning a classification subnet for segmentation)",
            path,
            len(missing),
            labels,
        )
    elif mismatched:
        logger.info("%s: segmentation model loaded; its classifier starts from scratch for %d labels", path, labels)
    return model


def build_image_processor(config: SegmentationTrainingConfig) -> NASViTSegmentationImageProcessor:
    """The processor saved with the trained model: the evaluation preprocessing (fixed size = crop size when the
    evaluation keeps image sizes would distort, so sizes are kept)."""
    if config.eval_short_side:
        return NASViTSegmentationImageProcessor(
            size={"shortest_edge": config.eval_short_side},
            default_to_square=False,
            do_reduce_labels=config.reduce_labels,
        )
    return NASViTSegmentationImageProcessor(do_resize=False, do_reduce_labels=config.reduce_labels)


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_segmentation(
    model: torch.nn.Module,
    dataloader: DataLoader,
    num_labels: int,
    ignore_index: int = 255,
    accelerator: Accelerator | None = None,
) -> dict[str, Any]:
    """mIoU (local `evaluate` module) of `model` on batches from a `SegmentationTransform(train=False)` loader. The
    logits are resized to each ORIGINAL mask's size before the argmax, so the score does not depend on
    `eval_short_side`. Restores the model's train/eval mode."""
    import evaluate

    from ..metrics import metric_path

    metric = evaluate.load(metric_path("mean_iou"))
    was_training = model.training
    model.eval()
    for batch in dataloader:
        pixel_values = batch["pixel_values"]
        groups = [pixel_values] if isinstance(pixel_values, torch.Tensor) else [p[None] for p in pixel_values]
        predictions: list[np.ndarray] = []
        index = 0
        for group in groups:
            if accelerator is not None:
                group = group.to(accelerator.device)
                with accelerator.autocast():
                    logits = model(pixel_values=group).logits.float()
            else:
                logits = model(pixel_values=group).logits.float()
            for item in logits:
                target = batch["original_labels"][index].shape
                resized = torch.nn.functional.interpolate(
                    item[None], size=target, mode="bilinear", align_corners=False
                )
                predictions.append(resized[0].argmax(dim=0).cpu().numpy().astype(np.uint16))
                index += 1
        references = [label.numpy().astype(np.uint16) for label in batch["original_labels"]]
        metric.add_batch(predictions=predictions, references=references)
    model.train(was_training)
    return metric.compute(num_labels=num_labels, ignore_index=ignore_index)


# ----------------------------------------------------------------------------------------------------------------------
# Schedule and saving
# ----------------------------------------------------------------------------------------------------------------------
def build_segmentation_scheduler(
    config: SegmentationTrainingConfig, optimizer: torch.optim.Optimizer, max_steps: int, num_processes: int = 1
) -> torch.optim.lr_scheduler.LRScheduler:
    """`poly` (power 1, to 0: Segformer), `cosine` or `constant` with `warmup_steps`, counted in the steps the
    prepared scheduler sees (Accelerate steps a prepared scheduler once per process). A run no longer than its
    warm-up works: it ends inside the warm-up, with a warning (`schedule_length`)."""
    from transformers import get_scheduler

    if config.lr_scheduler_type == "poly":
        name, extra = "polynomial", {"power": 1.0, "lr_end": 0.0}
    else:
        name, extra = config.lr_scheduler_type, {}
    from .schedule import schedule_length

    warmup = config.warmup_steps * num_processes
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=schedule_length(warmup, max_steps * num_processes),
        scheduler_specific_kwargs=extra,
    )


def segmentation_summary(
    steps: int, seconds: float, history: list[dict[str, Any]], scores: dict[str, Any] | None, id2label: dict
) -> dict[str, Any]:
    """The run's summary: steps, time, evaluation history and, after a final evaluation, its scores per class."""
    import math

    summary: dict[str, Any] = {"steps": steps, "train_seconds": seconds, "history": history}
    if scores is not None:
        summary.update({key: scores[key] for key in ("mean_iou", "mean_accuracy", "overall_accuracy")})
        summary["per_category_iou"] = {
            id2label[i]: (None if math.isnan(v) else float(v)) for i, v in enumerate(scores["per_category_iou"])
        }
    return summary


def save_segmentation_model(
    model: NASViTForSemanticSegmentation, config: SegmentationTrainingConfig, summary: dict[str, Any]
) -> Path:
    """`<output_dir>/model` (weights, config, image processor; replaced atomically) and `summary.json`."""
    from ..utils.io import atomic_write_json, staging_folder

    output_dir = Path(config.output_dir)
    with staging_folder(output_dir / "model") as temporary:
        build_image_processor(config).save_pretrained(temporary)
        model.save_pretrained(temporary)
    atomic_write_json(output_dir / "summary.json", summary)
    return output_dir / "model"
