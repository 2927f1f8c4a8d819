"""External teachers for the largest subnet: an ensemble of `AutoModelForImageClassification` checkpoints.

The paper distils the supernet from an EfficientNet-B5; the reference code averages two timm SWSL ResNeXt-101
teachers' softmax(5 · logits). `TeacherEnsemble` generalises both: the soft labels are

    p = mean over teachers of softmax(logits_t / temperature)        (the reference: temperature 0.2)

Each teacher sees the student's batch in its own expected form, derived on the batch's device (no second data
pipeline): the student's normalisation is undone, the images are resized to the teacher's input size (its image
processor's crop size, or a timm checkpoint's `input_size`) with its interpolation, and normalised with its mean and
std. Label sets are compared by name (`id2label`); ImageNet-1k's synset ids (n01440764, timm's label names) and its
class descriptions ("tench, Tinca tinca", the Hub dataset's names) count as the same labels.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TeacherEnsemble",
    "TeacherInput",
    "align_teacher_labels",
    "load_teacher_ensemble",
    "parse_teacher_names",
    "teacher_input_from_processor",
]

logger = logging.getLogger(__name__)
_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")


def parse_teacher_names(teachers: str | Sequence[str] | None) -> list[str]:
    """`None` → [], `"a"` → ["a"], `"a,b"` (the command line's form) → ["a", "b"], a list → the list (stripped)."""
    if teachers is None:
        return []
    items = teachers.split(",") if isinstance(teachers, str) else list(teachers)
    names = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"teachers must be model names or paths (strings), got {item!r}.")
        if item.strip():
            names.append(item.strip())
    return names


@dataclass
class TeacherInput:
    """How a teacher wants its pixels: (height, width), interpolation mode for `F.interpolate`, mean and std."""

    size: tuple[int, int]
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _size_pair(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)):
        return (int(value[-2]), int(value[-1]))
    getter = value.get if hasattr(value, "get") else lambda key: getattr(value, key, None)
    height, width = getter("height"), getter("width")
    if height and width:
        return (int(height), int(width))
    edge = getter("shortest_edge")
    return (int(edge), int(edge)) if edge else None


def _interpolation(resample) -> str:
    name = str(getattr(resample, "name", resample)).lower()
    for mode in ("bicubic", "bilinear", "nearest"):
        if mode in name:
            return mode
    return {"3": "bicubic", "2": "bilinear", "0": "nearest"}.get(name, "bicubic")


def teacher_input_from_processor(processor, default_size: tuple[int, int]) -> TeacherInput:
    """A teacher's expected input from its image processor: a timm checkpoint's `data_config` (input_size,
    interpolation, mean, std), or a transformers processor's crop size (or size) / resample / image_mean / image_std.
    `default_size` is used when the processor names no size."""
    data_config = getattr(processor, "data_config", None)
    if isinstance(data_config, dict) and data_config.get("input_size"):
        return TeacherInput(
            size=_size_pair(data_config["input_size"]),
            interpolation=_interpolation(data_config.get("interpolation", "bicubic")),
            mean=tuple(float(v) for v in data_config.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(float(v) for v in data_config.get("std", (0.229, 0.224, 0.225))),
        )
    size = None
    if getattr(processor, "do_center_crop", False):
        size = _size_pair(getattr(processor, "crop_size", None))
    size = size or _size_pair(getattr(processor, "size", None)) or default_size
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if getattr(processor, "do_normalize", True) and getattr(processor, "image_mean", None) is not None:
        mean = tuple(float(v) for v in processor.image_mean)
        std = tuple(float(v) for v in processor.image_std)
    return TeacherInput(
        size=size, interpolation=_interpolation(getattr(processor, "resample", "bicubic")), mean=mean, std=std
    )


def _imagenet_synsets() -> tuple[list[str], list[str]] | None:
    """ImageNet-1k's (synset ids, descriptions) in class-index order, from timm (None if timm is unavailable)."""
    try:
        from timm.data import ImageNetInfo
    except ImportError:  # pragma: no cover - timm is a dependency of the ImageNet recipe
        return None
    info = ImageNetInfo()
    synsets = [info.index_to_label_name(i) for i in range(1000)]
    return synsets, [info.index_to_description(i) for i in range(1000)]


def _canonical(labels: list[str]) -> list[str]:
    """ImageNet-1k label lists spelled as descriptions become synset ids (position by position: descriptions repeat,
    e.g. two "crane"s); every other list is returned stripped and lower-cased."""
    cleaned = [str(label).strip() for label in labels]
    if len(cleaned) == 1000:
        imagenet = _imagenet_synsets()
        if imagenet is not None:
            synsets, descriptions = imagenet
            if [d.lower() for d in cleaned] == [d.lower() for d in descriptions]:
                return list(synsets)
    return [label.lower() for label in cleaned]


def align_teacher_labels(
    teacher_labels: Sequence[str], student_labels: Sequence[str], teacher_name: str = "teacher"
) -> torch.Tensor | None:
    """Index tensor `idx` with teacher_logits[:, idx] in the student's class order, or None when the orders agree.

    Raises a ValueError naming the differing labels when the two label sets differ. When either side has only
    transformers' default names (LABEL_0, ...), only the counts can be compared (a warning says so)."""
    teacher_labels, student_labels = list(teacher_labels), list(student_labels)
    if len(teacher_labels) != len(student_labels):
        raise ValueError(
            f"{teacher_name} predicts {len(teacher_labels)} classes, the data has {len(student_labels)}: use a "
            "teacher trained on the same label set."
        )
    if all(_DEFAULT_LABEL.match(str(name)) for name in teacher_labels) or all(
        _DEFAULT_LABEL.match(str(name)) for name in student_labels
    ):
        logger.warning(
            "%s or the data has no label names (LABEL_0, ...): only the class count (%d) could be compared; make sure "
            "the class orders agree.",
            teacher_name,
            len(student_labels),
        )
        return None
    teacher_keys, student_keys = _canonical(teacher_labels), _canonical(student_labels)
    if teacher_keys == student_keys:
        return None
    if len(set(teacher_keys)) == len(teacher_keys) and set(teacher_keys) == set(student_keys):
        position = {key: index for index, key in enumerate(teacher_keys)}
        logger.info("%s orders its classes differently from the data: its outputs are reordered by name", teacher_name)
        return torch.tensor([position[key] for key in student_keys], dtype=torch.long)
    only_teacher = [name for name, key in zip(teacher_labels, teacher_keys) if key not in set(student_keys)]
    only_data = [name for name, key in zip(student_labels, student_keys) if key not in set(teacher_keys)]
    raise ValueError(
        f"{teacher_name}'s labels (id2label) differ from the data's: {len(only_teacher)} teacher labels are not in "
        f"the data (e.g. {only_teacher[:3]}), {len(only_data)} data labels are not in the teacher (e.g. "
        f"{only_data[:3]}). Use a teacher trained on the same classes."
    )


class TeacherEnsemble(nn.Module):
    """Frozen teachers whose averaged, tempered softmax supervises the largest subnet.

    Args:
        teachers: classification models (`model(pixel_values=...).logits`).
        inputs: one `TeacherInput` per teacher.
        student_mean, student_std: the normalisation of the batches the student gets.
        temperature: the softmax temperature (the reference: 0.2, i.e. softmax(5 · logits)).
        label_indices: per teacher, None or an index tensor reordering its logits to the student's classes.
    """

    def __init__(
        self,
        teachers: Sequence[nn.Module],
        inputs: Sequence[TeacherInput],
        student_mean: Sequence[float],
        student_std: Sequence[float],
        temperature: float = 1.0,
        label_indices: Sequence[torch.Tensor | None] | None = None,
        names: Sequence[str] | None = None,
    ):
        super().__init__()
        if not teachers:
            raise ValueError("a TeacherEnsemble needs at least one teacher.")
        if len(inputs) != len(teachers):
            raise ValueError(f"got {len(teachers)} teachers but {len(inputs)} input specs.")
        if not temperature > 0:
            raise ValueError(f"teacher_temperature must be > 0, got {temperature}.")
        self.teachers = nn.ModuleList(teachers).eval().requires_grad_(False)
        self.inputs = list(inputs)
        self.temperature = float(temperature)
        self.names = list(names) if names is not None else [f"teacher{i}" for i in range(len(teachers))]
        self.register_buffer("student_mean", torch.tensor(student_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("student_std", torch.tensor(student_std, dtype=torch.float32).view(1, -1, 1, 1), False)
        for index, spec in enumerate(self.inputs):
            self.register_buffer(f"mean{index}", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1), False)
            self.register_buffer(f"std{index}", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1), False)
        indices = list(label_indices) if label_indices is not None else [None] * len(teachers)
        for index, value in enumerate(indices):
            self.register_buffer(f"label_index{index}", value, False)

    def train(self, mode: bool = True) -> TeacherEnsemble:  # teachers always run in eval mode
        return super().train(False)

    def teacher_pixel_values(self, pixel_values: torch.Tensor, index: int) -> torch.Tensor:
        """The student's batch in teacher `index`'s form (its size, interpolation and normalisation)."""
        spec = self.inputs[index]
        images = pixel_values.float() * self.student_std + self.student_mean
        if tuple(images.shape[-2:]) != spec.size:
            antialias = spec.interpolation in ("bilinear", "bicubic") and images.shape[-1] > spec.size[1]
            images = F.interpolate(
                images,
                size=spec.size,
                mode=spec.interpolation,
                **({"align_corners": False, "antialias": antialias} if spec.interpolation != "nearest" else {}),
            )
        return (images - getattr(self, f"mean{index}")) / getattr(self, f"std{index}")

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) student-normalised pixels → (B, num_classes) float32 ensemble probabilities."""
        probabilities = None
        for index, teacher in enumerate(self.teachers):
            inputs = self.teacher_pixel_values(pixel_values, index)
            dtype = next(teacher.parameters()).dtype
            logits = teacher(pixel_values=inputs.to(dtype)).logits.float()
            label_index = getattr(self, f"label_index{index}")
            if label_index is not None:
                logits = logits.index_select(1, label_index)
            probs = (logits / self.temperature).softmax(dim=-1)
            probabilities = probs if probabilities is None else probabilities + probs
        return probabilities / len(self.teachers)


def load_teacher_ensemble(
    teachers: str | Sequence[str],
    label_names: Sequence[str],
    student_mean: Sequence[float],
    student_std: Sequence[float],
    temperature: float = 1.0,
    default_size: tuple[int, int] = (224, 224),
    device: torch.device | str | None = None,
    **from_pretrained_kwargs,
) -> TeacherEnsemble:
    """Load each name or path with `AutoModelForImageClassification` (timm checkpoints through transformers' timm
    wrapper) and its `AutoImageProcessor` (for its input form), check its labels against `label_names`, and build
    the ensemble. A teacher without an image processor gets the student's batch as is (a warning says so)."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    names = parse_teacher_names(teachers)
    if not names:
        raise ValueError("no teacher given: pass one or more model names or paths.")
    models, inputs, indices = [], [], []
    for name in names:
        try:
            model = AutoModelForImageClassification.from_pretrained(name, **from_pretrained_kwargs)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"cannot load teacher {name!r} with AutoModelForImageClassification: {error}. Pass a Hub model id or "
                "a local folder of an image classifier (a timm checkpoint folder works too)."
            ) from error
        id2label = model.config.id2label or {}
        labels = [id2label[i] for i in sorted(id2label)] if len(id2label) == model.config.num_labels else []
        if not labels:
            labels = [f"LABEL_{i}" for i in range(model.config.num_labels)]
        indices.append(align_teacher_labels(labels, label_names, teacher_name=f"teacher {name!r}"))
        try:
            processor = AutoImageProcessor.from_pretrained(name)
        except (OSError, ValueError) as error:
            logger.warning("teacher %r has no image processor (%s): it gets the student's batch as is", name, error)
            spec = TeacherInput(size=default_size, mean=tuple(student_mean), std=tuple(student_std))
        else:
            spec = teacher_input_from_processor(processor, default_size)
        logger.info(
            "teacher %r: input %s, %s, mean %s, std %s", name, spec.size, spec.interpolation, spec.mean, spec.std
        )
        models.append(model)
        inputs.append(spec)
    ensemble = TeacherEnsemble(models, inputs, student_mean, student_std, temperature, indices, names)
    return ensemble.to(device) if device is not None else ensemble
