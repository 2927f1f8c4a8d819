"""NASViT model configuration.

NASViT: Neural Architecture Search for Efficient Vision Transformers with Gradient Conflict-Aware Supernet
Training (Gong et al., ICLR 2022). Reference code: https://github.com/facebookresearch/NASViT.

The configuration carries the *search space* (per stage: width, depth, kernel size and expand-ratio choices) and the
*active architecture* chosen inside it. A supernet config has several choices somewhere; an extracted subnet's config
has exactly one choice per dimension. This file is Hub-portable: it imports only the standard library and
transformers.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
from typing import Any

from transformers import PretrainedConfig

try:  # transformers >= 5.x moved the backbone helpers out of `utils`
    from transformers.backbone_utils import BackboneConfigMixin
except ImportError:  # pragma: no cover - older releases
    from transformers.utils.backbone_utils import BackboneConfigMixin

__all__ = [
    "ARCH_KEYS",
    "BACKBONE_STAGE_NAMES",
    "DEFAULT_BACKBONE_OUT_FEATURES",
    "MBCONV_STAGES",
    "REFERENCE_SEARCH_SPACE",
    "STAGE_NAMES",
    "TRANSFORMER_STAGES",
    "NASViTConfig",
    "make_divisible",
]

# Stage order of the reference implementation: a stem conv, seven body stages, the MBPool head.
STAGE_NAMES = ["first_conv", "mb1", "mb2", "mb3", "mb4", "mb5", "mb6", "mb7", "last_conv"]
BODY_STAGES = STAGE_NAMES[1:-1]
MBCONV_STAGES = ["mb1", "mb2", "mb3"]
TRANSFORMER_STAGES = ["mb4", "mb5", "mb6", "mb7"]
ARCH_KEYS = ["resolution", "width", "depth", "kernel_size", "expand_ratio"]
# Feature maps a backbone can return (transformers' `stage_names`): the stem and each body stage. In the reference
# space their strides are 2, 2, 4, 8, 16, 32, 32, 64; the default multi-scale set is strides 4, 8, 16, 32.
BACKBONE_STAGE_NAMES = ["stem", *BODY_STAGES]
DEFAULT_BACKBONE_OUT_FEATURES = ["mb2", "mb3", "mb4", "mb6"]
LAYER_SCALE_MODES = ["tokens", "width", "shared", "none"]
_SPACE_FIELDS = {"c": "width", "d": "depth", "k": "kernel_size", "t": "expand_ratio"}

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


MAX_NUM_LABELS = 1_000_000
MAX_NUM_WINDOWS = 64
# The scalar fields of `NASViTConfig.__init__`: name -> (low, high) for ints, (low, high, low_open, high_open) for
# floats. The eps values must be > 0 (BatchNorm/LayerNorm divide by sqrt(var + eps)); dropout rates < 1.
SCALAR_INT_FIELDS: dict[str, tuple[int, int]] = {
    "num_channels": (1, 256),
    "head_dim": (1, 1024),
    "value_expansion": (1, 64),
    "max_relative_position": (1, 512),
    "layer_scale_depth_slots": (1, 1024),
    "decoder_hidden_size": (1, 65536),
    "semantic_loss_ignore_index": (-(2**31), 2**31 - 1),
}
SCALAR_FLOAT_FIELDS: dict[str, tuple[float, float, bool, bool]] = {
    "layer_scale_init": (0.0, 100.0, False, False),
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


def normalize_search_space(space: dict[str, Any]) -> dict[str, Any]:
    """Validate a search space in the reference schema and return a clean copy (sorted, de-duplicated lists).

    The schema is the reference's: `resolutions`, then one entry per stage of `STAGE_NAMES` with `c` (widths) and,
    for the body stages `mb1`..`mb7`, `d` (depths), `k` (kernel sizes), `t` (expand ratios), `s` (stride) and `se`.
    Keys the reference stores but never varies (`act_func`, `use_v3_head`) are accepted when they have their
    reference value.
    """
    if isinstance(space, str):
        space = json.loads(space)
    if not isinstance(space, dict):
        raise ValueError(f"search_space must be a dict in the reference schema, got {type(space).__name__}.")
    unknown = set(space) - set(STAGE_NAMES) - {"resolutions", "use_v3_head", "act_func"}
    if unknown:
        raise ValueError(
            f"search_space has unknown entries {sorted(unknown)}; allowed: 'resolutions' and the stages {STAGE_NAMES}."
        )
    missing = [name for name in ["resolutions", *STAGE_NAMES] if name not in space]
    if missing:
        raise ValueError(
            f"search_space is missing {missing}; it needs 'resolutions' and every stage of {STAGE_NAMES}."
        )
    if space.get("use_v3_head", True) is not True:
        raise ValueError("search_space['use_v3_head'] must be true: only the MBPool (v3) head is implemented.")
    clean: dict[str, Any] = {
        "resolutions": _int_list(space["resolutions"], "'resolutions'", SEARCH_SPACE_BOUNDS["resolutions"])
    }
    for name in STAGE_NAMES:
        stage = space[name]
        if not isinstance(stage, dict):
            raise ValueError(f"search_space[{name!r}] must be a dict, got {stage!r}.")
        act = stage.get("act_func", "swish")
        if act != "swish":
            raise ValueError(f"search_space[{name!r}]['act_func'] must be 'swish' (the only one used), got {act!r}.")
        if name == "first_conv":
            allowed = {"c", "s", "act_func"}
        elif name == "last_conv":
            allowed = {"c", "act_func"}
        else:
            allowed = {"c", "d", "k", "t", "s", "se", "act_func"}
        extra = set(stage) - allowed
        if extra:
            raise ValueError(f"search_space[{name!r}] has unknown keys {sorted(extra)}; allowed: {sorted(allowed)}.")
        entry: dict[str, Any] = {"c": _int_list(stage.get("c"), f"{name!r}]['c'", SEARCH_SPACE_BOUNDS["c"])}
        if name == "first_conv":
            entry["s"] = _stride(stage.get("s", 2), repr(name))
        elif name != "last_conv":
            for key in ("d", "k", "t"):
                if key not in stage:
                    raise ValueError(f"search_space[{name!r}] is missing {key!r} ({_SPACE_FIELDS[key]} choices).")
                entry[key] = _int_list(stage[key], f"{name!r}][{key!r}", SEARCH_SPACE_BOUNDS[key])
            if any(k % 2 == 0 for k in entry["k"]):
                raise ValueError(f"search_space[{name!r}]['k'] must hold odd kernel sizes, got {entry['k']}.")
            if 1 in entry["t"] and len(entry["t"]) > 1:
                raise ValueError(
                    f"search_space[{name!r}]['t'] mixes expand ratio 1 with others ({entry['t']}): a stage whose "
                    "only expand ratio is 1 has no expansion layer, so 1 cannot be one choice among several."
                )
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


def largest_arch(space: dict[str, Any]) -> dict[str, Any]:
    return _extreme_arch(space, max)


def smallest_arch(space: dict[str, Any]) -> dict[str, Any]:
    return _extreme_arch(space, min)


def _extreme_arch(space: dict[str, Any], pick) -> dict[str, Any]:
    return {
        "resolution": pick(space["resolutions"]),
        "width": [pick(space[name]["c"]) for name in STAGE_NAMES],
        "depth": [pick(space[name]["d"]) for name in BODY_STAGES],
        "kernel_size": [pick(space[name]["k"]) for name in BODY_STAGES],
        "expand_ratio": [pick(space[name]["t"]) for name in BODY_STAGES],
    }


def validate_arch(space: dict[str, Any], arch: dict[str, Any]) -> dict[str, Any]:
    """Check an arch dict against a (normalised) search space; return a clean copy with plain ints.

    Errors name the stage, the field and the allowed values.
    """
    if not isinstance(arch, dict):
        raise ValueError(f"arch must be a dict with keys {ARCH_KEYS}, got {type(arch).__name__}.")
    missing = [key for key in ARCH_KEYS if key not in arch]
    if missing:
        raise ValueError(f"arch is missing {missing}; an arch has keys {ARCH_KEYS}.")
    unknown = set(arch) - set(ARCH_KEYS)
    if unknown:
        raise ValueError(f"arch has unknown keys {sorted(unknown)}; an arch has keys {ARCH_KEYS}.")
    resolution = arch["resolution"]
    if not _is_int(resolution) or resolution not in space["resolutions"]:
        raise ValueError(
            f"arch['resolution'] = {resolution!r} is not in the search space; allowed: {space['resolutions']}."
        )
    clean: dict[str, Any] = {"resolution": int(resolution)}
    lengths = {"width": STAGE_NAMES, "depth": BODY_STAGES, "kernel_size": BODY_STAGES, "expand_ratio": BODY_STAGES}
    space_key = {"width": "c", "depth": "d", "kernel_size": "k", "expand_ratio": "t"}
    for field, stages in lengths.items():
        values = arch[field]
        if not isinstance(values, (list, tuple)) or len(values) != len(stages):
            raise ValueError(
                f"arch[{field!r}] must be a list of {len(stages)} values (one per stage {stages}), got {values!r}."
            )
        for stage, value in zip(stages, values):
            allowed = space[stage][space_key[field]]
            if not _is_int(value) or value not in allowed:
                raise ValueError(f"arch[{field!r}] for stage {stage!r} is {value!r}; allowed values: {allowed}.")
        clean[field] = [int(v) for v in values]
    return clean


def collapse_search_space(space: dict[str, Any], arch: dict[str, Any]) -> dict[str, Any]:
    """The search space with exactly one choice per dimension: the given arch (used for extracted subnets)."""
    collapsed = copy.deepcopy(space)
    collapsed["resolutions"] = [arch["resolution"]]
    for i, name in enumerate(STAGE_NAMES):
        collapsed[name]["c"] = [arch["width"][i]]
    for i, name in enumerate(BODY_STAGES):
        collapsed[name]["d"] = [arch["depth"][i]]
        collapsed[name]["k"] = [arch["kernel_size"][i]]
        collapsed[name]["t"] = [arch["expand_ratio"][i]]
    return collapsed


def normalize_num_windows(value: Any) -> int | str | list[int | str] | None:
    """Validate `num_windows`: None, a positive int, "auto", or one of those per transformer stage (a list of 4)."""

    def check(item: Any, where: str) -> int | str:
        if isinstance(item, str) and item == "auto":
            return item
        if _is_int(item) and 1 <= item <= MAX_NUM_WINDOWS:
            return int(item)
        raise ValueError(
            f"num_windows{where} must be an int in [1, {MAX_NUM_WINDOWS}] (windows per side of the token grid) or 'auto' "
            f"(feature-map side // 7, at least 1), got {item!r}."
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


class NASViTConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Configuration of a NASViT supernet (or of a subnet extracted from one).

    Args:
        search_space (`dict`, *optional*):
            The search space in the reference schema (see `REFERENCE_SEARCH_SPACE`, the default): `resolutions`
            and, per stage of `first_conv, mb1..mb7, last_conv`, the width choices `c`; the body stages add depth
            `d`, kernel size `k`, expand ratio `t`, stride `s` and squeeze-excite `se`. Stages `mb1`-`mb3` are MBConv
            stages; `mb4`-`mb7` start with an MBConv block followed by transformer layers.
        arch (`dict`, *optional*):
            The active architecture: `{"resolution": int, "width": [9], "depth": [7], "kernel_size": [7],
            "expand_ratio": [7]}`. Defaults to the largest subnet of the space.
        num_channels (`int`, *optional*, defaults to 3): input channels.
        head_dim (`int`, *optional*, defaults to 8): channels per attention head (query/key).
        value_expansion (`int`, *optional*, defaults to 4): value channels are `value_expansion * width`.
        max_relative_position (`int`, *optional*, defaults to 18): side of the largest token grid the relative
            position bias table covers (the reference's window of 18).
        layer_scale (`str`, *optional*, defaults to `"tokens"`): how the switchable scaling layers are keyed:
            `"tokens"` (reference checkpoint: active depth and token count mod 8), `"width"` (the paper: active depth
            and width choice), `"shared"` (one non-switchable scale per layer) or `"none"` (no scaling).
        layer_scale_init (`float`, *optional*, defaults to 1e-4): initial value of the scaling tables.
        layer_scale_depth_slots (`int`, *optional*, defaults to 10): first dimension of the scaling tables (the
            reference stores 10 so any depth up to 9 has its own row).
        drop_path_rate (`float`, *optional*, defaults to 0.0): stochastic depth on the transformer branches.
        drop_connect_rate (`float`, *optional*, defaults to 0.0): stochastic depth on the MBConv residual branches.
        classifier_dropout (`float`, *optional*, defaults to 0.0): dropout before the classifier.
        batch_norm_eps, batch_norm_momentum, layer_norm_eps: normalisation constants (reference: 1e-5, 0.1, 1e-5).
        initializer_range (`float`, *optional*, defaults to 0.02): std of the truncated normal for linear layers.
        num_windows (`int`, `"auto"` or a list of 4 of those, *optional*): windowed attention in the transformer
            layers, per side of the token grid (so 2 means 2×2 windows; the paper's Table 1 "4 windows"). `"auto"`
            is the paper's segmentation setting: feature-map side // 7 (at least 1). A list sets mb4..mb7 one by
            one. `None` (default) means 1 (global attention, the reference) for classification and `"auto"` for the
            backbone and segmentation models.
        out_features / out_indices (`list`, *optional*): the feature maps a `NASViTBackbone` returns, out of
            `stage_names` = `["stem", "mb1", ..., "mb7"]`; default `["mb2", "mb3", "mb4", "mb6"]` (strides 4-32).
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
        layer_scale: str = "tokens",
        layer_scale_init: float = 1e-4,
        layer_scale_depth_slots: int = 10,
        drop_path_rate: float = 0.0,
        drop_connect_rate: float = 0.0,
        classifier_dropout: float = 0.0,
        batch_norm_eps: float = 1e-5,
        batch_norm_momentum: float = 0.1,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        num_windows: int | str | list[int | str] | None = None,
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
        if "num_labels" in kwargs:
            kwargs["num_labels"] = check_int_field("num_labels", kwargs["num_labels"], 0, MAX_NUM_LABELS)
        scalars = check_scalar_fields(
            num_channels=num_channels,
            head_dim=head_dim,
            value_expansion=value_expansion,
            max_relative_position=max_relative_position,
            layer_scale_init=layer_scale_init,
            layer_scale_depth_slots=layer_scale_depth_slots,
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
        if not isinstance(layer_scale, str) or layer_scale not in LAYER_SCALE_MODES:
            raise ValueError(f"layer_scale must be one of {LAYER_SCALE_MODES}, got {layer_scale!r}.")
        if layer_scale == "width" and any(len(self.search_space[s]["c"]) > 8 for s in TRANSFORMER_STAGES):
            raise ValueError("layer_scale='width' supports at most 8 width choices per transformer stage.")
        max_depth = max(max(self.search_space[s]["d"]) for s in TRANSFORMER_STAGES)
        if scalars["layer_scale_depth_slots"] <= max_depth:
            raise ValueError(
                f"layer_scale_depth_slots must exceed the largest transformer-stage depth ({max_depth}), "
                f"got {layer_scale_depth_slots}."
            )
        for name in TRANSFORMER_STAGES:
            bad = [c for c in self.search_space[name]["c"] if c % scalars["head_dim"]]
            if bad:
                raise ValueError(f"search_space[{name!r}]['c'] has widths {bad} not divisible by head_dim={head_dim}.")
        for field, value in scalars.items():
            setattr(self, field, value)
        self.layer_scale = layer_scale
        self.num_windows = normalize_num_windows(num_windows)
        self.stage_names = list(BACKBONE_STAGE_NAMES)
        if out_features is None and out_indices is None:
            out_features = list(DEFAULT_BACKBONE_OUT_FEATURES)
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        super().__init__(**kwargs)

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
        space = self.search_space
        if len(space["resolutions"]) > 1:
            return True
        return any(len(space[name].get(key, [0])) > 1 for name in STAGE_NAMES for key in ("c", "d", "k", "t"))

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
