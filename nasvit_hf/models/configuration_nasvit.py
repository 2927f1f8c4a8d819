"""NASViT model configuration.

NASViT: Neural Architecture Search for Efficient Vision Transformers with Gradient Conflict-Aware Supernet
Training (Gong et al., ICLR 2022). Reference code: https://github.com/facebookresearch/NASViT.

The configuration carries the *search space* (per stage: width, depth, kernel size and expand-ratio choices; MLP
ratio and window choices per transformer stage where searched) and the *active architecture* chosen inside it. The
arch fields are declared once, in `ARCH_FIELDS` (the arch schema); validation, sampling, collapsing and, outside this
file, the search encoder and the MACs counters read that table. A supernet config has several choices somewhere; an extracted subnet's config
has exactly one choice per dimension. This file is Hub-portable: it imports only the standard library and
transformers (`sample_arch` imports torch only when given a `torch.Generator` or none).
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig

try:  # transformers >= 5.x moved the backbone helpers out of `utils`
    from transformers.backbone_utils import BackboneConfigMixin
except ImportError:  # pragma: no cover - older releases
    from transformers.utils.backbone_utils import BackboneConfigMixin

__all__ = [
    "ARCH_FIELDS",
    "ARCH_KEYS",
    "ArchField",
    "BACKBONE_STAGE_NAMES",
    "SEGMENTATION_OUT_FEATURES",
    "MBCONV_STAGES",
    "REFERENCE_SEARCH_SPACE",
    "STAGE_NAMES",
    "TRANSFORMER_STAGES",
    "NASViTConfig",
    "arch_fields",
    "arch_per_stage",
    "collapse_search_space",
    "field_choices",
    "get_arch_field",
    "largest_arch",
    "make_divisible",
    "normalize_search_space",
    "sample_arch",
    "search_space_is_supernet",
    "segmentation_out_features",
    "smallest_arch",
    "resolve_num_windows",
    "stage_choices",
    "validate_arch",
    "window_grid",
]

# Stage order of the reference implementation: a stem conv, seven body stages, the MBPool head.
STAGE_NAMES = ["first_conv", "mb1", "mb2", "mb3", "mb4", "mb5", "mb6", "mb7", "last_conv"]
BODY_STAGES = STAGE_NAMES[1:-1]
MBCONV_STAGES = ["mb1", "mb2", "mb3"]
TRANSFORMER_STAGES = ["mb4", "mb5", "mb6", "mb7"]
# Feature maps a backbone can return (transformers' `stage_names`): the stem and each body stage. In the reference
# space their strides are 2, 2, 4, 8, 16, 32, 32, 64. A backbone returns `out_features` (default, as in transformers:
# the last stage); the segmentation model asks for the four maps of strides 4, 8, 16, 32 (paper, Sec. 4.2).
BACKBONE_STAGE_NAMES = ["stem", *BODY_STAGES]
SEGMENTATION_OUT_FEATURES = ["mb2", "mb3", "mb4", "mb6"]
SWITCHABLE_SCALING_MODES = ["tokens", "width", "shared", "none"]
# Config keys renamed after release 0.1.0: transformers' helpers treat any `*layer_scale*` key as a numeric init scale,
# and these held a mode string and an int. Old saved configs still load: `NASViTConfig.__init__` maps the old names
# to the new ones with a FutureWarning.
RENAMED_CONFIG_KEYS = {
    "layer_scale": "switchable_scaling",
    "layer_scale_init": "switchable_scaling_init",
    "layer_scale_depth_slots": "switchable_scaling_depth_slots",
}

# The search space of the released reference supernet (facebookresearch/NASViT, `configs/cfg.yaml`; identical to
# shared/fixtures/official_search_space.json). Its smallest subnet has 189.8 M MACs, its largest 1881.7 M.
REFERENCE_SEARCH_SPACE: dict[str, Any] = {
    "resolutions": [192, 224, 256, 288],
    "first_conv": {"c": [16, 24], "s": 2},
    "mb1": {"c": [16, 24], "d": [1, 2], "k": [3, 5], "t": [1], "s": 1, "se": False},
    "mb2": {"c": [24, 32], "d": [3, 4, 5], "k": [3, 5], "t": [4, 5, 6], "s": 2, "se": False},
    "mb3": {"c": [32, 40], "d": [3, 4, 5, 6], "k": [3], "t": [4, 5, 6], "s": 2, "se": True},
    "mb4": {"c": [64, 72], "d": [3, 4, 5, 6], "k": [3], "t": [4, 5, 6], "s": 2, "se": False},
    "mb5": {"c": [112, 120, 128], "d": [3, 4, 5, 6, 7, 8, 9], "k": [3], "t": [4, 5, 6], "s": 2, "se": True},
    "mb6": {"c": [160, 168, 176, 184], "d": [3, 4, 5, 6, 7, 8], "k": [3], "t": [6], "s": 1, "se": True},
    "mb7": {"c": [208, 216, 224], "d": [3, 4, 5, 6], "k": [3], "t": [6], "s": 2, "se": True},
    "last_conv": {"c": [1792, 1984]},
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to a multiple of `divisor` the way the reference (and MobileNet) does."""
    new_value = max(1, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


# Bounds of the search-space values (sane limits: beyond them a config is a typo or a tampered file, and would
# allocate absurd amounts of memory, e.g. resolution 100000 or depth 10^6).
SEARCH_SPACE_BOUNDS: dict[str, tuple[int, int]] = {
    "resolutions": (16, 4096),
    "c": (1, 16384),
    "d": (1, 64),
    "k": (1, 31),
    "t": (1, 32),
    "mlp_ratio": (1, 32),
    "num_windows": (1, 64 * 64),
}


def _is_int(value: Any) -> bool:
    """An integer, Python or numpy (`numbers.Integral`), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_bool(value: Any) -> bool:
    """A Python or numpy bool (never a string such as "no", nor an int)."""
    if isinstance(value, bool):
        return True
    kind = type(value)  # numpy.bool (numpy >= 2) / numpy.bool_, without importing numpy here
    return kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")


def _int_list(value: Any, where: str, bounds: tuple[int, int] | None = None) -> list[int]:
    if _is_int(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) for v in value):
        raise ValueError(f"search_space[{where}] must be a non-empty list of integers, got {value!r}.")
    if any(v <= 0 for v in value):
        raise ValueError(f"search_space[{where}] must hold positive integers, got {[int(v) for v in value]}.")
    if bounds is not None and any(not bounds[0] <= v <= bounds[1] for v in value):
        raise ValueError(
            f"search_space[{where}] must hold integers in [{bounds[0]}, {bounds[1]}], got {[int(v) for v in value]}."
        )
    return sorted(set(int(v) for v in value))


def _stride(value: Any, where: str) -> int:
    if not _is_int(value) or value not in (1, 2):
        raise ValueError(f"search_space[{where}]['s'] (stride) must be the integer 1 or 2, got {value!r}.")
    return int(value)


def _flag(value: Any, where: str) -> bool:
    if not _is_bool(value):
        raise ValueError(f"search_space[{where}]['se'] must be true or false (a JSON boolean), got {value!r}.")
    return bool(value)


def check_int_field(name: str, value: Any, low: int, high: int | None = None) -> int:
    """`value` as a plain int, or a `ValueError` naming the field, the value and the allowed range.

    Python and numpy integers are accepted; bools, floats and strings (even "3") are not."""
    allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
    if not _is_int(value):
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r} ({type(value).__name__}).")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}.")
    return int(value)


def check_float_field(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    """`value` as a plain finite float in the given interval, or a `ValueError` naming the field and the interval.

    Python/numpy ints and floats are accepted; bools and strings (even "1e-5") are not."""
    allowed = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number in {allowed}, got {value!r} ({type(value).__name__}).")
    value = float(value)
    inside = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not math.isfinite(value) or not inside:
        raise ValueError(f"{name} must be a finite number in {allowed}, got {value!r}.")
    return value


def check_label_maps(kwargs: dict[str, Any]) -> None:
    """Refuse an `id2label` / `label2id` that transformers would fail on deep inside or misread: `id2label` must map
    class indices (ints, or their decimal strings as JSON stores them) in [0, MAX_NUM_LABELS) to names, `label2id` the
    reverse."""
    id2label, label2id = kwargs.get("id2label"), kwargs.get("label2id")
    if id2label is not None:
        if not isinstance(id2label, dict):
            raise ValueError(
                f"id2label must be a mapping of class index to name ({{0: 'cat', 1: 'dog'}}), got "
                f"{type(id2label).__name__} {str(id2label)[:80]}."
            )
        for key in id2label:
            index = key if _is_int(key) else (int(key) if isinstance(key, str) and key.strip().isdigit() else None)
            if index is None or not 0 <= index < MAX_NUM_LABELS:
                raise ValueError(f"id2label keys must be class indices in [0, {MAX_NUM_LABELS}), got {key!r}.")
        if len({int(key) for key in id2label}) != len(id2label):
            raise ValueError("id2label names some class index twice (e.g. 1 and '1').")
    if label2id is not None and not isinstance(label2id, dict):
        raise ValueError(
            f"label2id must be a mapping of class name to index ({{'cat': 0}}), got {type(label2id).__name__}."
        )


FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


def check_dtype(kwargs: dict[str, Any]) -> None:
    """Refuse a `dtype` / `torch_dtype` that is not a floating torch dtype (by name as config.json stores it, or a
    `torch.dtype`) or "auto": transformers would fail with `module 'torch' has no attribute ...` when loading."""
    for key in ("dtype", "torch_dtype"):
        value = kwargs.get(key)
        if value is None or type(value).__module__ == "torch":
            continue
        name = value.removeprefix("torch.") if isinstance(value, str) else None
        if name not in (*FLOAT_DTYPES, "auto"):
            raise ValueError(f"{key} must be one of {list(FLOAT_DTYPES)} or 'auto', got {value!r}.")


MAX_NUM_LABELS = 1_000_000
MAX_NUM_WINDOWS = 64
# The scalar fields of `NASViTConfig.__init__`: name -> (low, high) for ints, (low, high, low_open, high_open) for
# floats. The eps values must be > 0 (BatchNorm/LayerNorm divide by sqrt(var + eps)); dropout rates < 1.
SCALAR_INT_FIELDS: dict[str, tuple[int, int]] = {
    "num_channels": (1, 256),
    "head_dim": (1, 1024),
    "value_expansion": (1, 64),
    "max_relative_position": (1, 512),
    "switchable_scaling_depth_slots": (1, 1024),
    "decoder_hidden_size": (1, 65536),
    "semantic_loss_ignore_index": (-(2**31), 2**31 - 1),
}
SCALAR_FLOAT_FIELDS: dict[str, tuple[float, float, bool, bool]] = {
    "switchable_scaling_init": (0.0, 100.0, False, False),
    "drop_path_rate": (0.0, 1.0, False, True),
    "drop_connect_rate": (0.0, 1.0, False, True),
    "classifier_dropout": (0.0, 1.0, False, True),
    "batch_norm_eps": (0.0, 1.0, True, False),
    "batch_norm_momentum": (0.0, 1.0, False, False),
    "layer_norm_eps": (0.0, 1.0, True, False),
    "initializer_range": (0.0, 100.0, False, False),
}


def check_scalar_fields(**fields: Any) -> dict[str, Any]:
    """Check the scalar config fields against `SCALAR_INT_FIELDS` / `SCALAR_FLOAT_FIELDS`; plain ints and floats."""
    clean: dict[str, Any] = {}
    for name, value in fields.items():
        if name in SCALAR_INT_FIELDS:
            clean[name] = check_int_field(name, value, *SCALAR_INT_FIELDS[name])
        else:
            low, high, low_open, high_open = SCALAR_FLOAT_FIELDS[name]
            clean[name] = check_float_field(name, value, low, high, low_open=low_open, high_open=high_open)
    return clean


# ------------------------------------------------------------------------------------------------------------------
# The arch schema: every searchable dimension, declared once
# ------------------------------------------------------------------------------------------------------------------
def _check_odd_kernels(stage: str, key: str, choices: list[int]) -> None:
    if any(k % 2 == 0 for k in choices):
        raise ValueError(f"search_space[{stage!r}][{key!r}] must hold odd kernel sizes, got {choices}.")


def _check_expand_ratios(stage: str, key: str, choices: list[int]) -> None:
    if 1 in choices and len(choices) > 1:
        raise ValueError(
            f"search_space[{stage!r}][{key!r}] mixes expand ratio 1 with others ({choices}): a stage whose "
            "only expand ratio is 1 has no expansion layer, so 1 cannot be one choice among several."
        )


def _check_perfect_squares(stage: str, key: str, choices: list[int]) -> None:
    bad = [k for k in choices if math.isqrt(k) ** 2 != k]
    if bad:
        raise ValueError(
            f"search_space[{stage!r}][{key!r}] has {bad}, which are not perfect squares: the number of windows k is "
            "the total count of a square partition of the token grid (1 = global attention, 4 = 2x2, 9 = 3x3)."
        )


@dataclass(frozen=True)
class ArchField:
    """One searchable dimension of a NASViT arch, as every consumer reads it.

    Args:
        name: the arch dict's key (`arch[name]`).
        space_key: the search-space key holding the choices: top level for a per-network field (`stages == ()`),
            inside each stage's dict otherwise.
        stages: the stages the field has one value for, in order (`arch[name][i]` belongs to `stages[i]`); `()`
            for a single value per network (`arch[name]` is an int).
        default: the only value where the search space does not declare `space_key` (such a field is left out of
            archs of spaces that declare it nowhere); `None`: every stage must declare it.
        largest: which choice the largest (most compute) subnet takes, `"max"` or `"min"`; the smallest subnet
            takes the other one.
        description: what the field is, for messages and docs.
        check_choices: an extra check of one stage's choices (`(stage, key, choices) -> None`, raises ValueError).

    Validation, sampling (random, largest, smallest), collapsing to a subnet, `is_supernet`, the search encoder and
    the MACs counters all iterate over `ARCH_FIELDS`; a new dimension is one entry here plus its compute.
    """

    name: str
    space_key: str
    stages: tuple[str, ...] = ()
    default: int | None = None
    largest: str = "max"
    description: str = ""
    check_choices: Callable[[str, str, list[int]], None] | None = None

    @property
    def per_network(self) -> bool:
        return not self.stages


ARCH_FIELDS: tuple[ArchField, ...] = (
    ArchField("resolution", "resolutions", (), description="input resolution"),
    ArchField("width", "c", tuple(STAGE_NAMES), description="output channels"),
    ArchField("depth", "d", tuple(BODY_STAGES), description="blocks per stage"),
    ArchField(
        "kernel_size", "k", tuple(BODY_STAGES), description="depthwise kernel size", check_choices=_check_odd_kernels
    ),
    ArchField(
        "expand_ratio", "t", tuple(BODY_STAGES), description="MBConv expand ratio", check_choices=_check_expand_ratios
    ),
    # The paper's Table 1 (not the reference code): the MLP expansion ratio of the transformer layers (both MLPs of a
    # layer, Figure 6) and the number of attention windows k (total; a perfect square; 1 = global attention). The
    # largest subnet uses the fewest windows (global attention costs the most).
    ArchField("mlp_ratio", "mlp_ratio", tuple(TRANSFORMER_STAGES), default=1, description="MLP expansion ratio"),
    ArchField(
        "num_windows",
        "num_windows",
        tuple(TRANSFORMER_STAGES),
        default=1,
        largest="min",
        description="number of attention windows k",
        check_choices=_check_perfect_squares,
    ),
)
ARCH_KEYS = [arch_field.name for arch_field in ARCH_FIELDS]
_FIELDS_BY_NAME = {arch_field.name: arch_field for arch_field in ARCH_FIELDS}
# (name, stages, default) of the per-stage fields: arch_per_stage runs in search's inner loop (via the MACs counter).
_PER_STAGE_FIELDS = tuple((f.name, f.stages, f.default) for f in ARCH_FIELDS if not f.per_network)
# Stage keys that are structure, not searchable dimensions.
_STRUCTURE_KEYS = {"first_conv": {"s", "act_func"}, "last_conv": {"act_func"}}
_BODY_STRUCTURE_KEYS = {"s", "se", "act_func"}


def get_arch_field(name: str) -> ArchField:
    """The schema entry of the arch field `name`."""
    if name not in _FIELDS_BY_NAME:
        raise KeyError(f"unknown arch field {name!r}; the arch fields are {ARCH_KEYS}.")
    return _FIELDS_BY_NAME[name]


def arch_fields(space: dict[str, Any]) -> list[ArchField]:
    """The fields an arch of `space` has: the required ones, and each optional one the space declares somewhere."""
    return [
        arch_field
        for arch_field in ARCH_FIELDS
        if arch_field.default is None or any(arch_field.space_key in space[stage] for stage in arch_field.stages)
    ]


def field_choices(space: dict[str, Any], arch_field: ArchField) -> list[list[int]]:
    """The choices of `arch_field` in a normalised `space`: one list per stage (one list for a per-network field);
    a stage that does not declare an optional field has only its default."""
    if arch_field.per_network:
        return [space[arch_field.space_key]]
    return [space[stage].get(arch_field.space_key, [arch_field.default]) for stage in arch_field.stages]


def _draw_index(generator: Any) -> Callable[[int], int]:
    """A function drawing a uniform index in [0, n) from `generator` (a `random.Random`, a `torch.Generator`, or
    None for torch's global generator; torch is imported only then, so this file itself needs no torch)."""
    if isinstance(generator, random.Random):
        return generator.randrange
    import torch

    return lambda count: int(torch.randint(count, (1,), generator=generator))


def sample_arch(space: dict[str, Any], generator: Any = None, rule: str = "random") -> dict[str, Any]:
    """An arch of a normalised search space: `rule="random"` draws every value uniformly and independently from
    `generator` (a `torch.Generator`, a `random.Random`, or None for torch's global generator), field by field in
    `ARCH_FIELDS` order and stage by stage; `"largest"` / `"smallest"` take each field's largest / smallest-compute
    choice (`ArchField.largest`) and draw nothing."""
    if rule not in ("random", "largest", "smallest"):
        raise ValueError(f"rule must be 'random', 'largest' or 'smallest', got {rule!r}.")
    draw = _draw_index(generator) if rule == "random" else None
    arch: dict[str, Any] = {}
    for arch_field in arch_fields(space):
        if draw is not None:
            values = [choices[draw(len(choices))] for choices in field_choices(space, arch_field)]
        else:
            pick = max if (arch_field.largest == "max") == (rule == "largest") else min
            values = [pick(choices) for choices in field_choices(space, arch_field)]
        arch[arch_field.name] = values[0] if arch_field.per_network else values
    return arch


def largest_arch(space: dict[str, Any]) -> dict[str, Any]:
    return sample_arch(space, rule="largest")


def smallest_arch(space: dict[str, Any]) -> dict[str, Any]:
    return sample_arch(space, rule="smallest")


def arch_per_stage(arch: dict[str, Any]) -> dict[str, dict[str, int]]:
    """`{stage: {field: value}}` for every per-stage field of the schema (defaults filled in for optional fields
    the arch leaves out): what a stage builder or counter reads instead of indexing the arch lists itself."""
    per_stage: dict[str, dict[str, int]] = {stage: {} for stage in STAGE_NAMES}
    for name, stages, default in _PER_STAGE_FIELDS:
        values = arch.get(name)
        if values is None:
            for stage in stages:
                per_stage[stage][name] = default
        else:
            for stage, value in zip(stages, values):
                per_stage[stage][name] = value
    return per_stage


def stage_choices(space: dict[str, Any], stage: str) -> dict[str, list[int]]:
    """`{field: choices}` of every per-stage field covering `stage` in a normalised `space` (an optional field the
    stage does not declare has only its default): what a stage reads to size its largest weights."""
    return {
        arch_field.name: space[stage].get(arch_field.space_key, [arch_field.default])
        for arch_field in ARCH_FIELDS
        if stage in arch_field.stages
    }


def search_space_is_supernet(space: dict[str, Any]) -> bool:
    """True when some dimension of the (normalised) search space has more than one choice."""
    return any(len(choices) > 1 for field in arch_fields(space) for choices in field_choices(space, field))


def normalize_search_space(space: dict[str, Any]) -> dict[str, Any]:
    """Validate a search space in the reference schema and return a clean copy (sorted, de-duplicated lists).

    The schema is the reference's: `resolutions`, then one entry per stage of `STAGE_NAMES` with `c` (widths) and,
    for the body stages `mb1`..`mb7`, `d` (depths), `k` (kernel sizes), `t` (expand ratios), `s` (stride) and `se`;
    the stage keys of the searchable dimensions are `ArchField.space_key` of `ARCH_FIELDS`. Keys the reference stores
    but never varies (`act_func`, `use_v3_head`) are accepted when they have their reference value.
    """
    if isinstance(space, str):
        try:
            space = json.loads(space)
        except json.JSONDecodeError:
            raise ValueError(
                f"search_space must be a dict in the reference schema (or its JSON text), got the string {space!r}; "
                "for a preset, pass nasvit_hf.presets.get_search_space(name)."
            ) from None
    if not isinstance(space, dict):
        raise ValueError(f"search_space must be a dict in the reference schema, got {type(space).__name__}.")
    network_keys = {arch_field.space_key for arch_field in ARCH_FIELDS if arch_field.per_network}
    unknown = set(space) - set(STAGE_NAMES) - network_keys - {"use_v3_head", "act_func"}
    if unknown:
        raise ValueError(
            f"search_space has unknown entries {sorted(unknown)}; allowed: 'resolutions' and the stages {STAGE_NAMES}."
        )
    missing = [name for name in [*sorted(network_keys), *STAGE_NAMES] if name not in space]
    if missing:
        raise ValueError(
            f"search_space is missing {missing}; it needs 'resolutions' and every stage of {STAGE_NAMES}."
        )
    if space.get("use_v3_head", True) is not True:
        raise ValueError("search_space['use_v3_head'] must be true: only the MBPool (v3) head is implemented.")
    clean: dict[str, Any] = {}
    for arch_field in ARCH_FIELDS:
        if arch_field.per_network:
            clean[arch_field.space_key] = _int_list(
                space[arch_field.space_key], repr(arch_field.space_key), SEARCH_SPACE_BOUNDS.get(arch_field.space_key)
            )
    for name in STAGE_NAMES:
        stage = space[name]
        if not isinstance(stage, dict):
            raise ValueError(f"search_space[{name!r}] must be a dict, got {stage!r}.")
        act = stage.get("act_func", "swish")
        if act != "swish":
            raise ValueError(f"search_space[{name!r}]['act_func'] must be 'swish' (the only one used), got {act!r}.")
        stage_fields = [arch_field for arch_field in ARCH_FIELDS if name in arch_field.stages]
        allowed = {arch_field.space_key for arch_field in stage_fields}
        allowed |= _STRUCTURE_KEYS.get(name, _BODY_STRUCTURE_KEYS)
        extra = set(stage) - allowed
        if extra:
            raise ValueError(f"search_space[{name!r}] has unknown keys {sorted(extra)}; allowed: {sorted(allowed)}.")
        entry: dict[str, Any] = {}
        for arch_field in stage_fields:
            key = arch_field.space_key
            if key not in stage:
                if arch_field.default is not None:
                    continue
                raise ValueError(f"search_space[{name!r}] is missing {key!r} ({arch_field.description} choices).")
            entry[key] = _int_list(stage.get(key), f"{name!r}][{key!r}", SEARCH_SPACE_BOUNDS.get(key))
            if arch_field.check_choices is not None:
                arch_field.check_choices(name, key, entry[key])
        if name == "first_conv":
            entry["s"] = _stride(stage.get("s", 2), repr(name))
        elif name != "last_conv":
            if name in TRANSFORMER_STAGES and min(entry["d"]) < 1:
                raise ValueError(f"search_space[{name!r}]['d'] must be >= 1 (the first block is an MBConv).")
            entry["s"] = _stride(stage.get("s", 1), repr(name))
            entry["se"] = _flag(stage.get("se", False), repr(name))
        clean[name] = entry
    for name in TRANSFORMER_STAGES:
        bad = [c for c in clean[name]["c"] if c % 8]
        if bad:
            raise ValueError(
                f"search_space[{name!r}]['c'] has widths {bad} that are not multiples of the head dimension 8."
            )
    return clean


def validate_arch(space: dict[str, Any], arch: dict[str, Any]) -> dict[str, Any]:
    """Check an arch dict against a (normalised) search space; return a clean copy with plain ints.

    The arch has one entry per field of `arch_fields(space)`. An optional field the space does not declare may be
    left out, or given with its default everywhere (it is then dropped). Errors name the stage, the field and the
    allowed values.
    """
    fields = arch_fields(space)
    keys = [arch_field.name for arch_field in fields]
    if not isinstance(arch, dict):
        raise ValueError(f"arch must be a dict with keys {keys}, got {type(arch).__name__}.")
    missing = [key for key in keys if key not in arch]
    if missing:
        raise ValueError(f"arch is missing {missing}; an arch of this search space has keys {keys}.")
    unknown = set(arch) - set(ARCH_KEYS)
    if unknown:
        raise ValueError(f"arch has unknown keys {sorted(unknown)}; an arch has keys {keys}.")
    clean: dict[str, Any] = {}
    for arch_field in ARCH_FIELDS:
        if arch_field.name not in arch:
            continue
        declared = arch_field.name in keys
        values = arch[arch_field.name]
        if arch_field.per_network:
            (allowed,) = field_choices(space, arch_field)
            if not _is_int(values) or values not in allowed:
                raise ValueError(
                    f"arch[{arch_field.name!r}] = {values!r} is not in the search space; allowed: {allowed}."
                )
            clean[arch_field.name] = int(values)
            continue
        stages = list(arch_field.stages)
        if not isinstance(values, (list, tuple)) or len(values) != len(stages):
            raise ValueError(
                f"arch[{arch_field.name!r}] must be a list of {len(stages)} values (one per stage {stages}), "
                f"got {values!r}."
            )
        for stage, value, allowed in zip(stages, values, field_choices(space, arch_field)):
            if not _is_int(value) or value not in allowed:
                fix = "" if declared else f" (the search space declares no {arch_field.space_key!r} choices)"
                raise ValueError(
                    f"arch[{arch_field.name!r}] for stage {stage!r} is {value!r}; allowed values: {allowed}{fix}."
                )
        if declared:
            clean[arch_field.name] = [int(v) for v in values]
    return clean


def collapse_search_space(space: dict[str, Any], arch: dict[str, Any]) -> dict[str, Any]:
    """The search space with exactly one choice per dimension: the given arch (used for extracted subnets).
    Optional fields stay undeclared where the space does not declare them."""
    collapsed = copy.deepcopy(space)
    for arch_field in arch_fields(space):
        if arch_field.per_network:
            collapsed[arch_field.space_key] = [arch[arch_field.name]]
            continue
        for stage, value in zip(arch_field.stages, arch[arch_field.name]):
            if arch_field.default is None or arch_field.space_key in space[stage]:
                collapsed[stage][arch_field.space_key] = [value]
    return collapsed


WINDOW_CONVENTIONS = ["total", "per_side"]


def normalize_num_windows(value: Any, convention: str = "total") -> int | str | list[int | str] | None:
    """Validate the runtime window option `num_windows`: None, k (the total number of windows, a perfect square:
    1, 4, 9, ...), "auto" (feature-map side // 7 windows per side), or one of those per transformer stage (a list
    of 4). `convention="per_side"` reads ints as windows per side (configs saved before k was adopted) and returns k.
    """
    if convention not in WINDOW_CONVENTIONS:
        raise ValueError(f"windows_convention must be one of {WINDOW_CONVENTIONS}, got {convention!r}.")

    def check(item: Any, where: str) -> int | str:
        if isinstance(item, str) and item == "auto":
            return item
        if _is_int(item) and item >= 1:
            per_side = int(item) if convention == "per_side" else math.isqrt(int(item))
            if (convention == "per_side" or per_side * per_side == item) and per_side <= MAX_NUM_WINDOWS:
                return per_side * per_side
        raise ValueError(
            f"num_windows{where} must be the total number of windows k, a perfect square of at most "
            f"{MAX_NUM_WINDOWS}**2 (1 = global attention, 4 = 2x2 windows, 9 = 3x3, ...), or 'auto' "
            f"(feature-map side // 7 windows per side, at least 1), got {item!r}."
        )

    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(value) != len(TRANSFORMER_STAGES):
            raise ValueError(
                f"num_windows as a list needs one entry per transformer stage {TRANSFORMER_STAGES}, got {value!r}."
            )
        return [check(item, f"[{i}]") for i, item in enumerate(value)]
    return check(value, "")


def window_grid(num_windows: int | str, height: int, width: int) -> tuple[int, int]:
    """Windows along each axis of an height×width token grid: k windows are sqrt(k) per side (never more windows
    than tokens along an axis); `"auto"` is the paper's segmentation rule, side // 7 per side (at least 1)."""
    if num_windows == "auto":
        return max(1, height // 7), max(1, width // 7)
    side = math.isqrt(num_windows)
    return min(side, height), min(side, width)


def resolve_num_windows(arch: dict[str, Any], override: int | str | list[int | str] | None) -> list[int | str]:
    """The windows each transformer stage mb4..mb7 runs: the runtime `override` (`config.num_windows`, one value or
    one per stage) where set, else the arch's `num_windows` (its default, 1, in spaces without that field)."""
    if override is None:
        windows = arch.get("num_windows")
        return list(windows) if windows is not None else [_FIELDS_BY_NAME["num_windows"].default] * 4
    return list(override) if isinstance(override, list) else [override] * len(TRANSFORMER_STAGES)


def _pop_renamed_keys(kwargs: dict[str, Any], **current: Any) -> dict[str, Any]:
    """Take the release-0.1.0 names of `RENAMED_CONFIG_KEYS` out of `kwargs` and return `current` with their values.

    Each old name warns (FutureWarning) once per load; an old and a new name given different values is an error."""
    defaults = {"switchable_scaling": "tokens", "switchable_scaling_init": 1e-4, "switchable_scaling_depth_slots": 10}
    for old, new in RENAMED_CONFIG_KEYS.items():
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if current[new] != defaults[new] and current[new] != value:
            raise ValueError(f"got both {old}={value!r} (the old name) and {new}={current[new]!r}; pass only {new}.")
        warnings.warn(
            f"NASViTConfig key {old!r} is deprecated and will stop being read in a future release; it is now "
            f"{new!r}. Re-save the config (config.save_pretrained / model.save_pretrained) to update it.",
            FutureWarning,
            stacklevel=3,
        )
        current[new] = value
    return current


class NASViTConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of a NASViT supernet (or of a subnet extracted from one).

    Args:
        search_space (`dict`, *optional*):
            The search space in the reference schema (see `REFERENCE_SEARCH_SPACE`, the default): `resolutions`
            and, per stage of `first_conv, mb1..mb7, last_conv`, the width choices `c`; the body stages add depth
            `d`, kernel size `k`, expand ratio `t`, stride `s` and squeeze-excite `se`. Stages `mb1`-`mb3` are MBConv
            stages; `mb4`-`mb7` start with an MBConv block followed by transformer layers, and may add the paper's
            `mlp_ratio` (MLP expansion ratio choices) and `num_windows` (choices of k, the total number of attention
            windows, perfect squares); a stage without them has only 1 (the reference).
        arch (`dict`, *optional*):
            The active architecture: `{"resolution": int, "width": [9], "depth": [7], "kernel_size": [7],
            "expand_ratio": [7]}`, plus `"mlp_ratio": [4]` and `"num_windows": [4]` (mb4..mb7) when the space declares
            them (`ARCH_FIELDS` is the schema). Defaults to the largest subnet of the space.
        num_channels (`int`, *optional*, defaults to 3): input channels.
        head_dim (`int`, *optional*, defaults to 8): channels per attention head (query/key).
        value_expansion (`int`, *optional*, defaults to 4): value channels are `value_expansion * width`.
        max_relative_position (`int`, *optional*, defaults to 18): side of the largest token grid the relative
            position bias table covers (the reference's window of 18).
        switchable_scaling (`str`, *optional*, defaults to `"tokens"`): how the switchable scaling layers of the
            transformer layers are keyed: `"tokens"` (reference checkpoint: active depth and token count mod 8),
            `"width"` (the paper: active depth and width choice), `"shared"` (one non-switchable scale per layer) or
            `"none"` (no scaling).
        switchable_scaling_init (`float`, *optional*, defaults to 1e-4): initial value of the scaling tables.
        switchable_scaling_depth_slots (`int`, *optional*, defaults to 10): first dimension of the scaling tables (the
            reference stores 10 so any depth up to 9 has its own row).
        (The three keys were called `layer_scale`, `layer_scale_init` and `layer_scale_depth_slots` in release 0.1.0;
        configs with the old names still load, with a `FutureWarning`: re-save them to update.)
        drop_path_rate (`float`, *optional*, defaults to 0.0): stochastic depth on the transformer branches.
        drop_connect_rate (`float`, *optional*, defaults to 0.0): stochastic depth on the MBConv residual branches.
        classifier_dropout (`float`, *optional*, defaults to 0.0): dropout before the classifier.
        batch_norm_eps, batch_norm_momentum, layer_norm_eps: normalisation constants (reference: 1e-5, 0.1, 1e-5).
        initializer_range (`float`, *optional*, defaults to 0.02): std of the truncated normal for linear layers.
        num_windows (`int`, `"auto"` or a list of 4 of those, *optional*): a runtime override of the windowed attention
            of the transformer layers. An int is k, the total number of windows (a perfect square: 4 means a 2×2
            partition of the token grid; the paper's Table 1 convention, the same as the arch field `num_windows`).
            `"auto"` is the paper's segmentation setting: feature-map side // 7 windows per side (at least 1). A list
            sets mb4..mb7 one by one. `None` (default) runs the arch's `num_windows` (1, global attention, in spaces
            without that field, as the reference) for classification, and `"auto"` for the backbone and segmentation.
        windows_convention (`str`, *optional*, defaults to `"total"`): how ints in `num_windows` are read. Configs
            saved before k was adopted counted windows per side; `from_dict` / `from_pretrained` pass `"per_side"`
            for a config dict that has a `num_windows` but no `windows_convention` key, and ints are migrated to k
            (2 per side -> 4). Saved configs always record `"total"`.
        out_features / out_indices (`list`, *optional*): the feature maps a `NASViTBackbone` returns, out of
            `stage_names` = `["stem", "mb1", ..., "mb7"]`. `None` (both) means the last stage, as for every
            transformers backbone, here and when set later. `NASViTForSemanticSegmentation` asks for
            `SEGMENTATION_OUT_FEATURES` = `["mb2", "mb3", "mb4", "mb6"]` (strides 4-32) unless the config names other
            maps (see `segmentation_out_features`).
        decoder_hidden_size (`int`, *optional*, defaults to 256): width of the Segformer all-MLP decode head.
        semantic_loss_ignore_index (`int`, *optional*, defaults to 255): mask label ignored by the segmentation loss.
    """

    model_type = "nasvit"

    def __init__(
        self,
        search_space: dict[str, Any] | None = None,
        arch: dict[str, Any] | None = None,
        num_channels: int = 3,
        head_dim: int = 8,
        value_expansion: int = 4,
        max_relative_position: int = 18,
        switchable_scaling: str = "tokens",
        switchable_scaling_init: float = 1e-4,
        switchable_scaling_depth_slots: int = 10,
        drop_path_rate: float = 0.0,
        drop_connect_rate: float = 0.0,
        classifier_dropout: float = 0.0,
        batch_norm_eps: float = 1e-5,
        batch_norm_momentum: float = 0.1,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        num_windows: int | str | list[int | str] | None = None,
        windows_convention: str = "total",
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        decoder_hidden_size: int = 256,
        semantic_loss_ignore_index: int = 255,
        **kwargs,
    ):
        if "num_labels" not in kwargs and "id2label" not in kwargs:
            kwargs["num_labels"] = 1000
        self.search_space = normalize_search_space(
            copy.deepcopy(REFERENCE_SEARCH_SPACE if search_space is None else search_space)
        )
        self.arch = validate_arch(self.search_space, arch) if arch is not None else largest_arch(self.search_space)
        renamed = _pop_renamed_keys(
            kwargs,
            switchable_scaling=switchable_scaling,
            switchable_scaling_init=switchable_scaling_init,
            switchable_scaling_depth_slots=switchable_scaling_depth_slots,
        )
        switchable_scaling = renamed["switchable_scaling"]
        if "num_labels" in kwargs:
            kwargs["num_labels"] = check_int_field("num_labels", kwargs["num_labels"], 0, MAX_NUM_LABELS)
        check_label_maps(kwargs)
        check_dtype(kwargs)
        scalars = check_scalar_fields(
            num_channels=num_channels,
            head_dim=head_dim,
            value_expansion=value_expansion,
            max_relative_position=max_relative_position,
            switchable_scaling_init=renamed["switchable_scaling_init"],
            switchable_scaling_depth_slots=renamed["switchable_scaling_depth_slots"],
            drop_path_rate=drop_path_rate,
            drop_connect_rate=drop_connect_rate,
            classifier_dropout=classifier_dropout,
            batch_norm_eps=batch_norm_eps,
            batch_norm_momentum=batch_norm_momentum,
            layer_norm_eps=layer_norm_eps,
            initializer_range=initializer_range,
            decoder_hidden_size=decoder_hidden_size,
            semantic_loss_ignore_index=semantic_loss_ignore_index,
        )
        if not isinstance(switchable_scaling, str) or switchable_scaling not in SWITCHABLE_SCALING_MODES:
            raise ValueError(
                f"switchable_scaling must be one of {SWITCHABLE_SCALING_MODES}, got {switchable_scaling!r}."
            )
        if switchable_scaling == "width" and any(len(self.search_space[s]["c"]) > 8 for s in TRANSFORMER_STAGES):
            raise ValueError("switchable_scaling='width' supports at most 8 width choices per transformer stage.")
        max_depth = max(max(self.search_space[s]["d"]) for s in TRANSFORMER_STAGES)
        if scalars["switchable_scaling_depth_slots"] <= max_depth:
            raise ValueError(
                f"switchable_scaling_depth_slots must be an int above the largest transformer-stage depth "
                f"({max_depth}), got {scalars['switchable_scaling_depth_slots']!r}."
            )
        for name in TRANSFORMER_STAGES:
            bad = [c for c in self.search_space[name]["c"] if c % scalars["head_dim"]]
            if bad:
                raise ValueError(
                    f"search_space[{name!r}]['c'] has widths {bad} not divisible by head_dim={scalars['head_dim']}."
                )
        for field, value in scalars.items():
            setattr(self, field, value)
        self.switchable_scaling = switchable_scaling
        self.num_windows = normalize_num_windows(num_windows, windows_convention)
        self.windows_convention = "total"
        self.stage_names = list(BACKBONE_STAGE_NAMES)
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        super().__init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> NASViTConfig:
        """`PretrainedConfig.from_dict`, reading the `num_windows` of configs saved before the total-windows (k)
        convention (they carry no `windows_convention`) as windows per side."""
        if config_dict.get("num_windows") is not None and "windows_convention" not in config_dict:
            config_dict = {**config_dict, "windows_convention": "per_side"}
        return super().from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """`PretrainedConfig.to_dict`; `windows_convention` is written only where `num_windows` holds an int (the
        only case it disambiguates), so configs without windows save exactly as before the k convention."""
        output = super().to_dict()
        values = self.num_windows if isinstance(self.num_windows, list) else [self.num_windows]
        if not any(_is_int(value) for value in values):
            output.pop("windows_convention", None)
        return output

    # ----------------------------------------------------------------------------------------------------------------
    # Search-space helpers (pure Python, used by the model, the MACs counter, search and export)
    # ----------------------------------------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """The active resolution (the input the model resizes to)."""
        return self.arch["resolution"]

    @property
    def is_supernet(self) -> bool:
        """True when some dimension of the search space has more than one choice."""
        return search_space_is_supernet(self.search_space)

    def largest_arch(self) -> dict[str, Any]:
        return largest_arch(self.search_space)

    def smallest_arch(self) -> dict[str, Any]:
        return smallest_arch(self.search_space)

    def validate_arch(self, arch: dict[str, Any]) -> dict[str, Any]:
        return validate_arch(self.search_space, arch)

    def subnet_config(self, arch: dict[str, Any]) -> NASViTConfig:
        """The config of the standalone subnet `arch`: same settings, search space collapsed to that arch."""
        arch = self.validate_arch(arch)
        config_dict = self.to_dict()
        config_dict.pop("auto_map", None)
        config_dict["search_space"] = collapse_search_space(self.search_space, arch)
        config_dict["arch"] = arch
        return self.__class__.from_dict(config_dict)


def segmentation_out_features(config: NASViTConfig) -> list[str]:
    """The feature maps the segmentation decoder reads: `config.out_features`, except that transformers' default (the
    last stage only, a stride-64 map) means Segformer's four scales, `SEGMENTATION_OUT_FEATURES`."""
    if list(config.out_features) == [config.stage_names[-1]]:
        return list(SEGMENTATION_OUT_FEATURES)
    return list(config.out_features)
