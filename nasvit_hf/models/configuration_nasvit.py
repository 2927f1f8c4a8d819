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
import warnings
from typing import Any

from transformers import PretrainedConfig

try:  # transformers >= 5.x moved the backbone helpers out of `utils`
    from transformers.backbone_utils import BackboneConfigMixin
except ImportError:  # pragma: no cover - older releases
    from transformers.utils.backbone_utils import BackboneConfigMixin

__all__ = [
    "ARCH_KEYS",
    "BACKBONE_STAGE_NAMES",
    "SEGMENTATION_OUT_FEATURES",
    "MBCONV_STAGES",
    "REFERENCE_SEARCH_SPACE",
    "STAGE_NAMES",
    "TRANSFORMER_STAGES",
    "NASViTConfig",
    "make_divisible",
    "segmentation_out_features",
]

# Stage order of the reference implementation: a stem conv, seven body stages, the MBPool head.
STAGE_NAMES = ["first_conv", "mb1", "mb2", "mb3", "mb4", "mb5", "mb6", "mb7", "last_conv"]
BODY_STAGES = STAGE_NAMES[1:-1]
MBCONV_STAGES = ["mb1", "mb2", "mb3"]
TRANSFORMER_STAGES = ["mb4", "mb5", "mb6", "mb7"]
ARCH_KEYS = ["resolution", "width", "depth", "kernel_size", "expand_ratio"]
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(value: Any, where: str) -> list[int]:
    if _is_int(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) for v in value):
        raise ValueError(f"search_space[{where}] must be a non-empty list of integers, got {value!r}.")
    if any(v <= 0 for v in value):
        raise ValueError(f"search_space[{where}] must hold positive integers, got {list(value)}.")
    return sorted(set(int(v) for v in value))


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
    clean: dict[str, Any] = {"resolutions": _int_list(space["resolutions"], "'resolutions'")}
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
        entry: dict[str, Any] = {"c": _int_list(stage.get("c"), f"{name!r}]['c'")}
        if name == "first_conv":
            entry["s"] = int(stage.get("s", 2))
        elif name != "last_conv":
            for key in ("d", "k", "t"):
                if key not in stage:
                    raise ValueError(f"search_space[{name!r}] is missing {key!r} ({_SPACE_FIELDS[key]} choices).")
                entry[key] = _int_list(stage[key], f"{name!r}][{key!r}")
            if any(k % 2 == 0 for k in entry["k"]):
                raise ValueError(f"search_space[{name!r}]['k'] must hold odd kernel sizes, got {entry['k']}.")
            if 1 in entry["t"] and len(entry["t"]) > 1:
                raise ValueError(
                    f"search_space[{name!r}]['t'] mixes expand ratio 1 with others ({entry['t']}): a stage whose "
                    "only expand ratio is 1 has no expansion layer, so 1 cannot be one choice among several."
                )
            if name in TRANSFORMER_STAGES and min(entry["d"]) < 1:
                raise ValueError(f"search_space[{name!r}]['d'] must be >= 1 (the first block is an MBConv).")
            stride = stage.get("s", 1)
            if stride not in (1, 2):
                raise ValueError(f"search_space[{name!r}]['s'] must be 1 or 2, got {stride!r}.")
            entry["s"] = int(stride)
            entry["se"] = bool(stage.get("se", False))
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
        if item == "auto" or (_is_int(item) and item >= 1):
            return item
        raise ValueError(
            f"num_windows{where} must be a positive int (windows per side of the token grid) or 'auto' "
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
            stages; `mb4`-`mb7` start with an MBConv block followed by transformer layers.
        arch (`dict`, *optional*):
            The active architecture: `{"resolution": int, "width": [9], "depth": [7], "kernel_size": [7],
            "expand_ratio": [7]}`. Defaults to the largest subnet of the space.
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
        num_windows (`int`, `"auto"` or a list of 4 of those, *optional*): windowed attention in the transformer
            layers, per side of the token grid (so 2 means 2×2 windows; the paper's Table 1 "4 windows"). `"auto"`
            is the paper's segmentation setting: feature-map side // 7 (at least 1). A list sets mb4..mb7 one by
            one. `None` (default) means 1 (global attention, the reference) for classification and `"auto"` for the
            backbone and segmentation models.
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
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        decoder_hidden_size: int = 256,
        semantic_loss_ignore_index: int = 255,
        **kwargs,
    ):
        if "num_labels" not in kwargs and "id2label" not in kwargs:
            kwargs["num_labels"] = 1000
        self.search_space = normalize_search_space(copy.deepcopy(search_space or REFERENCE_SEARCH_SPACE))
        self.arch = validate_arch(self.search_space, arch) if arch is not None else largest_arch(self.search_space)
        renamed = _pop_renamed_keys(
            kwargs,
            switchable_scaling=switchable_scaling,
            switchable_scaling_init=switchable_scaling_init,
            switchable_scaling_depth_slots=switchable_scaling_depth_slots,
        )
        switchable_scaling = renamed["switchable_scaling"]
        switchable_scaling_init = renamed["switchable_scaling_init"]
        switchable_scaling_depth_slots = renamed["switchable_scaling_depth_slots"]
        if switchable_scaling not in SWITCHABLE_SCALING_MODES:
            raise ValueError(
                f"switchable_scaling must be one of {SWITCHABLE_SCALING_MODES}, got {switchable_scaling!r}."
            )
        if switchable_scaling == "width" and any(len(self.search_space[s]["c"]) > 8 for s in TRANSFORMER_STAGES):
            raise ValueError("switchable_scaling='width' supports at most 8 width choices per transformer stage.")
        max_depth = max(max(self.search_space[s]["d"]) for s in TRANSFORMER_STAGES)
        if not _is_int(switchable_scaling_depth_slots) or switchable_scaling_depth_slots <= max_depth:
            raise ValueError(
                f"switchable_scaling_depth_slots must be an int above the largest transformer-stage depth "
                f"({max_depth}), got {switchable_scaling_depth_slots!r}."
            )
        if head_dim <= 0 or value_expansion <= 0:
            raise ValueError(f"head_dim and value_expansion must be positive, got {head_dim} and {value_expansion}.")
        for name in TRANSFORMER_STAGES:
            bad = [c for c in self.search_space[name]["c"] if c % head_dim]
            if bad:
                raise ValueError(f"search_space[{name!r}]['c'] has widths {bad} not divisible by head_dim={head_dim}.")
        for field, value in (
            ("drop_path_rate", drop_path_rate),
            ("drop_connect_rate", drop_connect_rate),
            ("classifier_dropout", classifier_dropout),
        ):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{field} must be in [0, 1), got {value}.")
        self.num_channels = num_channels
        self.head_dim = head_dim
        self.value_expansion = value_expansion
        self.max_relative_position = max_relative_position
        self.switchable_scaling = switchable_scaling
        self.switchable_scaling_init = switchable_scaling_init
        self.switchable_scaling_depth_slots = switchable_scaling_depth_slots
        self.drop_path_rate = drop_path_rate
        self.drop_connect_rate = drop_connect_rate
        self.classifier_dropout = classifier_dropout
        self.batch_norm_eps = batch_norm_eps
        self.batch_norm_momentum = batch_norm_momentum
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.num_windows = normalize_num_windows(num_windows)
        if not _is_int(decoder_hidden_size) or decoder_hidden_size <= 0:
            raise ValueError(f"decoder_hidden_size must be a positive int, got {decoder_hidden_size!r}.")
        self.decoder_hidden_size = decoder_hidden_size
        self.semantic_loss_ignore_index = semantic_loss_ignore_index
        self.stage_names = list(BACKBONE_STAGE_NAMES)
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


def segmentation_out_features(config: NASViTConfig) -> list[str]:
    """The feature maps the segmentation decoder reads: `config.out_features`, except that transformers' default (the
    last stage only, a stride-64 map) means Segformer's four scales, `SEGMENTATION_OUT_FEATURES`."""
    if list(config.out_features) == [config.stage_names[-1]]:
        return list(SEGMENTATION_OUT_FEATURES)
    return list(config.out_features)
