"""NASViT model configuration.

NASViT: Neural Architecture Search for Efficient Vision Transformers with Gradient Conflict-Aware Supernet
Training (Gong et al., ICLR 2022). Reference code: https://github.com/facebookresearch/NASViT.

The configuration carries the *search space* (per stage: width, depth, kernel size and expand-ratio choices; MLP
ratio and window choices per transformer stage where searched) and the *active architecture* chosen inside it. A
supernet config has several choices somewhere; an extracted subnet's config has exactly one choice per dimension.
The search space itself (the arch schema `ARCH_FIELDS`, validation, sampling, the window conventions) is
`search_space_nasvit.py`; the checks of the other fields are `config_checks_nasvit.py`. This file is Hub-portable: it
imports only the standard library, transformers and those two siblings.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from transformers import PretrainedConfig

from .config_checks_nasvit import (
    MAX_NUM_LABELS,
    check_attention_settings,
    check_dtype,
    check_int_field,
    check_label_maps,
    check_scalar_fields,
    pop_renamed_keys,
)
from .search_space_nasvit import (
    BACKBONE_STAGE_NAMES,
    REFERENCE_SEARCH_SPACE,
    SEGMENTATION_OUT_FEATURES,
    collapse_search_space,
    is_int,
    largest_arch,
    normalize_num_windows,
    normalize_search_space,
    search_space_is_supernet,
    smallest_arch,
    validate_arch,
)

try:  # transformers >= 5.x moved the backbone helpers out of `utils`
    from transformers.backbone_utils import BackboneConfigMixin
except ImportError:  # pragma: no cover - older releases
    from transformers.utils.backbone_utils import BackboneConfigMixin

__all__ = ["NASViTConfig", "segmentation_out_features"]


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
        renamed = pop_renamed_keys(
            kwargs,
            NASViTConfig.__init__,
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
        check_attention_settings(
            self.search_space, switchable_scaling, scalars["switchable_scaling_depth_slots"], scalars["head_dim"]
        )
        self.num_channels = scalars["num_channels"]
        self.head_dim = scalars["head_dim"]
        self.value_expansion = scalars["value_expansion"]
        self.max_relative_position = scalars["max_relative_position"]
        self.switchable_scaling_init = scalars["switchable_scaling_init"]
        self.switchable_scaling_depth_slots = scalars["switchable_scaling_depth_slots"]
        self.drop_path_rate = scalars["drop_path_rate"]
        self.drop_connect_rate = scalars["drop_connect_rate"]
        self.classifier_dropout = scalars["classifier_dropout"]
        self.batch_norm_eps = scalars["batch_norm_eps"]
        self.batch_norm_momentum = scalars["batch_norm_momentum"]
        self.layer_norm_eps = scalars["layer_norm_eps"]
        self.initializer_range = scalars["initializer_range"]
        self.decoder_hidden_size = scalars["decoder_hidden_size"]
        self.semantic_loss_ignore_index = scalars["semantic_loss_ignore_index"]
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
        if not any(is_int(value) for value in values):
            output.pop("windows_convention", None)
        return output

    def to_diff_dict(self) -> dict[str, Any]:
        """`PretrainedConfig.to_diff_dict`, always keeping the label maps: transformers drops them when they equal its
        base default (two labels `LABEL_0`, `LABEL_1`), but NASViT's default is 1000 classes, so a two-class config
        saved without them would reload with 1000."""
        output = super().to_diff_dict()
        full = self.to_dict()
        for key in ("id2label", "label2id"):
            if key not in output and key in full:
                output[key] = full[key]
        return output

    # ----------------------------------------------------------------------------------------------------------------
    # Search-space helpers (pure Python, used by the model, the MACs counter, search and extraction)
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


# The search-space library and the field checks lived in this file until they got their own modules. Their names
# still import from here (the old path), with a FutureWarning naming the new home; the names this file imports for
# its own use import from here without one.
_MOVED_TO = {
    **dict.fromkeys(
        [
            "ARCH_FIELDS",
            "ARCH_KEYS",
            "ArchField",
            "BODY_STAGES",
            "MAX_NUM_WINDOWS",
            "MBCONV_STAGES",
            "SEARCH_SPACE_BOUNDS",
            "STAGE_NAMES",
            "TRANSFORMER_STAGES",
            "WINDOW_CONVENTIONS",
            "arch_fields",
            "arch_per_stage",
            "field_choices",
            "get_arch_field",
            "make_divisible",
            "resolve_num_windows",
            "sample_arch",
            "stage_choices",
            "window_grid",
        ],
        "search_space_nasvit",
    ),
    **dict.fromkeys(
        [
            "FLOAT_DTYPES",
            "RENAMED_CONFIG_KEYS",
            "SCALAR_FLOAT_FIELDS",
            "SCALAR_INT_FIELDS",
            "SWITCHABLE_SCALING_MODES",
            "check_float_field",
        ],
        "config_checks_nasvit",
    ),
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED_TO:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import config_checks_nasvit, search_space_nasvit

    module = search_space_nasvit if _MOVED_TO[name] == "search_space_nasvit" else config_checks_nasvit
    warnings.warn(
        f"importing {name} from configuration_nasvit is deprecated; import it from {module.__name__}.",
        FutureWarning,
        stacklevel=2,
    )
    return vars(module)[name]
