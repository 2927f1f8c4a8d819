"""The NASViT search space: its stages, the arch schema (`ArchField`, `ARCH_FIELDS`), search-space and arch
validation, sampling (random, largest, smallest), collapsing to a subnet, and the attention-window conventions.

NASViT: Neural Architecture Search for Efficient Vision Transformers with Gradient Conflict-Aware Supernet
Training (Gong et al., ICLR 2022). Reference code: https://github.com/facebookresearch/NASViT.

A search space holds, per stage, the choices of width, depth, kernel size and expand ratio (and, where searched, MLP
ratio and number of windows per transformer stage); an arch is one choice per dimension. The arch fields are declared
once, in `ARCH_FIELDS`; validation, sampling, collapsing and, outside this file, the config, the model, the search
encoder and the MACs counters read that table. This file is Hub-portable (it travels with `save_pretrained` folders,
imported by `configuration_nasvit.py`): it imports only the standard library (`sample_arch` imports torch only when
given a `torch.Generator` or none).
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "ARCH_FIELDS",
    "ARCH_KEYS",
    "ArchField",
    "BACKBONE_STAGE_NAMES",
    "BODY_STAGES",
    "MAX_NUM_WINDOWS",
    "MBCONV_STAGES",
    "REFERENCE_SEARCH_SPACE",
    "SEARCH_SPACE_BOUNDS",
    "SEGMENTATION_OUT_FEATURES",
    "STAGE_NAMES",
    "TRANSFORMER_STAGES",
    "WINDOW_CONVENTIONS",
    "arch_fields",
    "arch_per_stage",
    "centre_crop_kernel",
    "collapse_search_space",
    "field_choices",
    "get_arch_field",
    "is_bool",
    "is_int",
    "largest_arch",
    "make_divisible",
    "normalize_num_windows",
    "normalize_search_space",
    "resolve_num_windows",
    "sample_arch",
    "search_space_is_supernet",
    "smallest_arch",
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


def is_int(value: Any) -> bool:
    """An integer, Python or numpy (`numbers.Integral`), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_bool(value: Any) -> bool:
    """A Python or numpy bool (never a string such as "no", nor an int)."""
    if isinstance(value, bool):
        return True
    kind = type(value)  # numpy.bool (numpy >= 2) / numpy.bool_, without importing numpy here
    return kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")


def _int_list(value: Any, where: str, bounds: tuple[int, int] | None = None) -> list[int]:
    if is_int(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(is_int(v) for v in value):
        raise ValueError(f"search_space[{where}] must be a non-empty list of integers, got {value!r}.")
    if any(v <= 0 for v in value):
        raise ValueError(f"search_space[{where}] must hold positive integers, got {[int(v) for v in value]}.")
    if bounds is not None and any(not bounds[0] <= v <= bounds[1] for v in value):
        raise ValueError(
            f"search_space[{where}] must hold integers in [{bounds[0]}, {bounds[1]}], got {[int(v) for v in value]}."
        )
    return sorted(set(int(v) for v in value))


def _stride(value: Any, where: str) -> int:
    if not is_int(value) or value not in (1, 2):
        raise ValueError(f"search_space[{where}]['s'] (stride) must be the integer 1 or 2, got {value!r}.")
    return int(value)


def _flag(value: Any, where: str) -> bool:
    if not is_bool(value):
        raise ValueError(f"search_space[{where}]['se'] must be true or false (a JSON boolean), got {value!r}.")
    return bool(value)


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
            if not is_int(values) or values not in allowed:
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
            if not is_int(value) or value not in allowed:
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
MAX_NUM_WINDOWS = 64  # windows per side, at most, of the runtime option `num_windows`


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
        if is_int(item) and item >= 1:
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


def centre_crop_kernel(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The kernel-size convention (once-for-all's elastic kernel): a conv weight `(out, in, K, K)` run at kernel size
    `k <= K` uses its centred `k x k` window."""
    full = weight.shape[-1]
    if kernel_size == full:
        return weight
    start = (full - kernel_size) // 2
    return weight[:, :, start : start + kernel_size, start : start + kernel_size]


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
