"""The checks of `NASViTConfig`'s fields other than the search space and the arch (`search_space_nasvit.py`): the
scalar fields and their ranges, the label maps, the dtype, the attention settings, and the keys renamed since release
0.1.0. Each raises a `ValueError` naming the field, the value and what is allowed.

This file is Hub-portable (it travels with `save_pretrained` folders, imported by `configuration_nasvit.py`): it
imports only the standard library and its sibling `search_space_nasvit.py`.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

from .search_space_nasvit import TRANSFORMER_STAGES, is_int

__all__ = [
    "FLOAT_DTYPES",
    "MAX_NUM_LABELS",
    "RENAMED_CONFIG_KEYS",
    "SCALAR_FLOAT_FIELDS",
    "SCALAR_INT_FIELDS",
    "SWITCHABLE_SCALING_MODES",
    "check_attention_settings",
    "check_dtype",
    "check_float_field",
    "check_int_field",
    "check_label_maps",
    "check_scalar_fields",
    "pop_renamed_keys",
]

SWITCHABLE_SCALING_MODES = ["tokens", "width", "shared", "none"]
# Config keys renamed after release 0.1.0: transformers' helpers treat any `*layer_scale*` key as a numeric init scale,
# and these held a mode string and an int. Old saved configs still load: `NASViTConfig.__init__` maps the old names
# to the new ones with a FutureWarning.
RENAMED_CONFIG_KEYS = {
    "layer_scale": "switchable_scaling",
    "layer_scale_init": "switchable_scaling_init",
    "layer_scale_depth_slots": "switchable_scaling_depth_slots",
}


def check_int_field(name: str, value: Any, low: int, high: int | None = None) -> int:
    """`value` as a plain int, or a `ValueError` naming the field, the value and the allowed range.

    Python and numpy integers are accepted; bools, floats and strings (even "3") are not."""
    allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
    if not is_int(value):
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
            index = key if is_int(key) else (int(key) if isinstance(key, str) and key.strip().isdigit() else None)
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


def check_attention_settings(
    search_space: dict[str, Any], switchable_scaling: Any, switchable_scaling_depth_slots: int, head_dim: int
) -> None:
    """Check the transformer stages' settings against a normalised `search_space`: the switchable scaling mode (its
    tables have a row per depth and, keyed by width, at most 8 width choices) and widths divisible by `head_dim`."""
    if not isinstance(switchable_scaling, str) or switchable_scaling not in SWITCHABLE_SCALING_MODES:
        raise ValueError(f"switchable_scaling must be one of {SWITCHABLE_SCALING_MODES}, got {switchable_scaling!r}.")
    if switchable_scaling == "width" and any(len(search_space[s]["c"]) > 8 for s in TRANSFORMER_STAGES):
        raise ValueError("switchable_scaling='width' supports at most 8 width choices per transformer stage.")
    max_depth = max(max(search_space[s]["d"]) for s in TRANSFORMER_STAGES)
    if switchable_scaling_depth_slots <= max_depth:
        raise ValueError(
            f"switchable_scaling_depth_slots must be an int above the largest transformer-stage depth "
            f"({max_depth}), got {switchable_scaling_depth_slots!r}."
        )
    for name in TRANSFORMER_STAGES:
        bad = [c for c in search_space[name]["c"] if c % head_dim]
        if bad:
            raise ValueError(f"search_space[{name!r}]['c'] has widths {bad} not divisible by head_dim={head_dim}.")


def pop_renamed_keys(kwargs: dict[str, Any], init: Callable[..., Any], **current: Any) -> dict[str, Any]:
    """Take the release-0.1.0 names of `RENAMED_CONFIG_KEYS` out of `kwargs` and return `current` with their values.

    `init` is the config's `__init__`: its signature's defaults tell a new name left at its default from one given.
    Each old name warns (FutureWarning) once per load; an old and a new name given different values is an error."""
    parameters = inspect.signature(init).parameters
    defaults = {new: parameters[new].default for new in RENAMED_CONFIG_KEYS.values()}
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
