"""NASViT for dense prediction: a multi-scale backbone and semantic segmentation with a Segformer all-MLP head.

NASViT (Gong et al., ICLR 2022), Section 4.2: NASViT subnets fine-tuned as backbones with the lightweight Segformer
decode head (Xie et al., 2021, https://github.com/NVlabs/SegFormer); every transformer block uses windowed attention
with (feature-map side // 7) windows per side. The decode head mirrors transformers' `SegformerDecodeHead` (same
parameter names and computation: a test checks equality) but its per-scale projections slice their weights to the
active width, so a supernet with any active arch works too.

The backbone keeps the input size (no resize to the arch's resolution, unlike classification): any height and width,
odd or not divisible by the total stride, gives stage outputs of size ceil(side / stride). This file is Hub-portable:
it imports only torch, transformers and its sibling files.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BackboneOutput, SemanticSegmenterOutput

from .configuration_nasvit import NASViTConfig, segmentation_out_features
from .modeling_nasvit import (
    NASViTDynamicLinear,
    NASViTInferencePlanMixin,
    NASViTPreTrainedModel,
    NASViTSupernetMixin,
    apply_arch_to_stages,
    build_stem_and_stages,
    check_pixel_values,
    fast_path_context_allows,
)
from .search_space_nasvit import BACKBONE_STAGE_NAMES, BODY_STAGES

try:  # transformers >= 5.x moved the backbone helpers out of `utils`
    from transformers.backbone_utils import BackboneMixin
except ImportError:  # pragma: no cover - older releases
    from transformers.utils.backbone_utils import BackboneMixin

__all__ = ["NASViTBackbone", "NASViTDecodeHead", "NASViTForSemanticSegmentation"]

# Keys of a classification checkpoint that dense prediction does not use (the MBPool head and the classifier).
_CLASSIFICATION_ONLY_KEYS = [r"(^|\.)head\.", r"^classifier\."]
# ... and of a segmentation checkpoint that a bare backbone does not use.
_BACKBONE_UNUSED_KEYS = [*_CLASSIFICATION_ONLY_KEYS, r"^decode_head\."]


class NASViTBackbone(BackboneMixin, NASViTInferencePlanMixin, NASViTSupernetMixin, NASViTPreTrainedModel):
    """Multi-scale NASViT features (`BackboneOutput.feature_maps`) for dense prediction.

    `config.out_features` / `out_indices` pick the maps out of `stage_names` = `["stem", "mb1", ..., "mb7"]`
    (reference strides 2, 2, 4, 8, 16, 32, 32, 64; default, as every transformers backbone: the last stage; the
    segmentation model asks for `["mb2", "mb3", "mb4", "mb6"]`, strides 4-32). Stages after the last requested one
    do not run. The input keeps its size. Windowed attention defaults to `"auto"`
    (`config.num_windows=None`); `set_num_windows(1)` gives global attention, i.e. exactly the classification
    model's stage outputs. The supernet API (`set_active_subnet`, `sample_*`, `extract_subnet`) works as on the
    classification model. In eval mode with no gradient to compute, forward runs the classification model's inference
    plan (`inference_nasvit.py`: BatchNorm folded, fused activations, channels_last, windowed attention too), derived
    from the weights at every call; set `inference_fast_path = False` to run the modules themselves.

    Load a saved backbone with `NASViTBackbone.from_pretrained(folder)`: transformers 5.24's
    `AutoBackbone.from_pretrained` asks the Hub whether the name is a repository first, so it fails for a local
    folder (`HFValidationError`) and offline, for every model. `AutoBackbone.from_config(config)` works.
    """

    has_attentions = False
    _keys_to_ignore_on_load_unexpected = _BACKBONE_UNUSED_KEYS

    def __init__(self, config: NASViTConfig):
        super().__init__(config)
        self.stem, self.stages = build_stem_and_stages(config)
        self.post_init()
        self._apply_arch(config.arch)
        self.set_num_windows("auto" if config.num_windows is None else config.num_windows)

    def get_supernet_body(self) -> NASViTBackbone:
        return self

    def _apply_arch(self, arch: dict[str, Any]) -> None:
        self.active_stem_channels = apply_arch_to_stages(self.stages, arch)
        # Channels of every stage output for the active arch (BackboneMixin's `channels` / `out_feature_channels`).
        self.num_features = list(arch["width"][: len(BACKBONE_STAGE_NAMES)])

    @property
    def max_channels(self) -> list[int]:
        """The largest width of each stage output over the search space (what a head must be able to take)."""
        space = self.config.search_space
        return [max(space[name]["c"]) for name in ["first_conv", *BODY_STAGES]]

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        pixel_values = check_pixel_values(
            pixel_values,
            self.config.num_channels,
            "NASViTSegmentationImageProcessor",
            dtype=self.dtype,
            model=self,
        )
        out_indices = [index % len(self.stage_names) for index in self.out_indices]
        last = len(self.stages) if output_hidden_states else max(out_indices)
        plan = self.inference_plan(pixel_values)
        if plan is not None:
            maps = plan.feature_maps(pixel_values, range(last + 1) if output_hidden_states else out_indices, last)
            all_hidden_states = [maps.get(index) for index in range(last + 1)]
        else:
            hidden_states = self.stem(pixel_values, self.active_stem_channels)
            all_hidden_states = [hidden_states]
            for stage in self.stages[:last]:
                hidden_states = stage(hidden_states)
                all_hidden_states.append(hidden_states)
        feature_maps = tuple(all_hidden_states[index] for index in out_indices)
        hidden = tuple(all_hidden_states) if output_hidden_states else None
        if not return_dict:
            return (feature_maps,) + ((hidden,) if hidden is not None else ())
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden)


class NASViTSegformerMLP(nn.Module):
    """Segformer's per-scale projection: flatten the map to tokens, Linear(C → decoder width). The weight is sliced
    to the active input width (`NASViTDynamicLinear`), so one head serves every subnet of a supernet."""

    def __init__(self, max_in_channels: int, decoder_hidden_size: int):
        super().__init__()
        self.proj = NASViTDynamicLinear(max_in_channels, decoder_hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden_states.flatten(2).transpose(1, 2))


class NASViTDecodeHead(nn.Module):
    """Segformer's all-MLP decode head: project each scale to `decoder_hidden_size`, upsample (bilinear) to the first
    (finest, stride-4) scale, concatenate (coarsest first, as Segformer), fuse (1×1 conv → BN → ReLU), dropout,
    classify (1×1 conv). Logits come out at the finest feature map's size.

    Inference fast path: in eval mode with no gradient to compute, the projection, the fuse conv's block for that
    scale and the BatchNorm (running statistics) are one C_i → width 1×1 conv applied at each scale's own resolution
    before the upsampling, and the four results are summed. Upsampling and 1×1 convs commute (bilinear weights sum to
    1), so this is the same function, to float rounding, without the 4·width → width fuse conv at the finest
    resolution (most of the head's MACs). Set `inference_fast_path = False` to run the modules; it also stands aside
    under autograd, forward hooks (global or on the head's submodules), `torch.jit` and dispatch modes (e.g.
    `FlopCounterMode`, which then counts the head as defined), but not under `torch.export` / `torch.compile`
    (exported graphs get it): `fast_path_context_allows`, shared with the backbone's inference plan.
    """

    inference_fast_path: bool = True

    def __init__(self, config: NASViTConfig, in_channels: list[int]):
        super().__init__()
        hidden = config.decoder_hidden_size
        self.linear_projections = nn.ModuleList(NASViTSegformerMLP(channels, hidden) for channels in in_channels)
        self.linear_fuse = nn.Conv2d(hidden * len(in_channels), hidden, kernel_size=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(hidden, eps=config.batch_norm_eps)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Conv2d(hidden, config.num_labels, kernel_size=1)

    def forward(self, feature_maps: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
        if len(feature_maps) != len(self.linear_projections):
            raise ValueError(
                f"the decode head was built for {len(self.linear_projections)} feature maps, got {len(feature_maps)}."
            )
        if self._use_fast_path():
            return self._fast_forward(feature_maps)
        batch = feature_maps[0].shape[0]
        size = feature_maps[0].shape[-2:]
        projected = []
        for feature_map, projection in zip(feature_maps, self.linear_projections):
            height, width = feature_map.shape[-2:]
            hidden_states = projection(feature_map).transpose(1, 2).reshape(batch, -1, height, width)
            if (height, width) != size:
                hidden_states = F.interpolate(hidden_states, size=size, mode="bilinear", align_corners=False)
            projected.append(hidden_states)
        hidden_states = self.activation(self.batch_norm(self.linear_fuse(torch.cat(projected[::-1], dim=1))))
        return self.classifier(self.dropout(hidden_states))

    def _use_fast_path(self) -> bool:
        if not fast_path_context_allows(self):
            return False
        if torch.is_grad_enabled() and any(parameter.requires_grad for parameter in self.parameters()):
            return False
        norm = self.batch_norm
        if type(norm) is not nn.BatchNorm2d or norm.running_mean is None or norm.running_var is None:
            return False
        if type(self.linear_fuse) is not nn.Conv2d or type(self.activation) is not nn.ReLU:
            return False
        if not all(type(module.proj) is NASViTDynamicLinear for module in self.linear_projections):
            return False
        return not any(
            module._forward_hooks or module._forward_pre_hooks for module in self.modules() if module is not self
        )

    def _fast_forward(self, feature_maps) -> torch.Tensor:
        norm = self.batch_norm
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        width = self.linear_fuse.out_channels
        count = len(self.linear_projections)
        # The fuse conv's input is the projections concatenated coarsest first: scale i owns block count-1-i.
        blocks = self.linear_fuse.weight.view(width, count, -1) * scale.view(width, 1, 1)
        size = feature_maps[0].shape[-2:]
        fused = None
        for index, (feature_map, projection) in enumerate(zip(feature_maps, self.linear_projections)):
            block = blocks[:, count - 1 - index]
            linear = projection.proj
            weight = block @ linear.weight[:, : feature_map.shape[1]]
            bias = block @ linear.bias if linear.bias is not None else None
            hidden_states = F.conv2d(feature_map, weight[:, :, None, None], bias)
            if hidden_states.shape[-2:] != size:
                hidden_states = F.interpolate(hidden_states, size=size, mode="bilinear", align_corners=False)
            fused = hidden_states if fused is None else fused.add_(hidden_states)
        fused = fused.add_(shift.view(1, width, 1, 1)).relu_()
        return self.classifier(self.dropout(fused))


class NASViTForSemanticSegmentation(NASViTSupernetMixin, NASViTPreTrainedModel):
    """NASViT backbone + Segformer all-MLP decode head (paper, Section 4.2).

    Build it from an extracted classification subnet, keeping its backbone weights (the MBPool head and classifier
    are dropped; the decode head starts fresh):

    ```python
    model = NASViTForSemanticSegmentation.from_pretrained("nasvit-a1", num_labels=150, id2label=..., label2id=...)
    ```

    `logits` are (batch, num_labels, ceil(H/4), ceil(W/4)) for the default stride-4 finest map; the loss upsamples
    them to the labels' size (bilinear) and skips `config.semantic_loss_ignore_index` pixels, as Segformer does.
    """

    _keys_to_ignore_on_load_unexpected = _CLASSIFICATION_ONLY_KEYS

    def __init__(self, config: NASViTConfig):
        super().__init__(config)
        if config.num_labels < 1:
            raise ValueError(f"semantic segmentation needs num_labels >= 1, got {config.num_labels}.")
        # The decoder's maps: Segformer's four scales unless the config names others (recorded in the config).
        config.out_features = segmentation_out_features(config)
        self.nasvit = NASViTBackbone(config)
        max_channels = self.nasvit.max_channels
        out_indices = [index % len(BACKBONE_STAGE_NAMES) for index in config.out_indices]
        self.decode_head = NASViTDecodeHead(config, [max_channels[index] for index in out_indices])
        self.post_init()

    def get_supernet_body(self) -> NASViTBackbone:
        return self.nasvit

    def _apply_arch(self, arch: dict[str, Any]) -> None:
        self.nasvit._apply_arch(arch)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SemanticSegmenterOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if labels is not None:
            labels = self._check_labels(labels, pixel_values)
        outputs = self.nasvit(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.decode_head(outputs.feature_maps)
        loss = self._loss(logits, labels) if labels is not None else None
        if not return_dict:
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def _check_labels(self, labels: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor of class indices, got {type(labels).__name__}.")
        if labels.ndim == 4 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 3 or labels.is_floating_point():
            raise ValueError(
                f"labels must be an integer mask of shape (batch, height, width), got {tuple(labels.shape)} "
                f"({labels.dtype})."
            )
        if isinstance(pixel_values, torch.Tensor) and pixel_values.ndim == 4:
            if labels.shape[0] != pixel_values.shape[0] or labels.shape[-2:] != pixel_values.shape[-2:]:
                raise ValueError(
                    f"the masks (labels, {tuple(labels.shape)}) must match the images (pixel_values, "
                    f"{tuple(pixel_values.shape)}) in batch size and height x width; resize or crop image and mask "
                    "together (the NASViTSegmentationImageProcessor does, given segmentation_maps=...)."
                )
        ignore_index = self.config.semantic_loss_ignore_index
        valid = labels[labels != ignore_index]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= self.config.num_labels):
            raise ValueError(
                f"labels must be class indices in [0, {self.config.num_labels}) or the ignore index {ignore_index} "
                f"(config.semantic_loss_ignore_index), got values in [{int(valid.min())}, {int(valid.max())}]. "
                "Check num_labels / id2label, or map unlabelled pixels to the ignore index (do_reduce_labels=True "
                "turns ADE20K's 0 = 'other' into it)."
            )
        return labels.long()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """As Segformer: the logits upsampled (bilinear) to the labels' size, then transformers' semantic-segmentation
        loss (`self.loss_function`: cross-entropy skipping `semantic_loss_ignore_index`); one label: binary
        cross-entropy on the valid pixels (averaged over them, where Segformer divides by every pixel)."""
        ignore_index = self.config.semantic_loss_ignore_index
        valid = labels != ignore_index
        if not bool(valid.any()):  # every pixel ignored: cross-entropy would be 0/0; a zero loss that keeps a graph
            return logits.sum() * 0.0
        if self.config.num_labels > 1:
            return self.loss_function(logits=logits, labels=labels, ignore_index=ignore_index)
        upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.binary_cross_entropy_with_logits(upsampled[:, 0], labels.to(upsampled.dtype), reduction="none")
        return loss[valid].mean()

    def save_pretrained(self, save_directory: str | os.PathLike, *args, save_image_processor: bool = True, **kwargs):
        """`save_pretrained`, plus a `NASViTSegmentationImageProcessor` config when the folder has none (so the
        folder works with `pipeline("image-segmentation")`)."""
        super().save_pretrained(save_directory, *args, save_image_processor=False, **kwargs)
        if save_image_processor and not os.path.exists(os.path.join(save_directory, "preprocessor_config.json")):
            from .image_processing_nasvit_segmentation import NASViTSegmentationImageProcessor

            processor = NASViTSegmentationImageProcessor()
            if self._auto_class is not None:
                processor.register_for_auto_class("AutoImageProcessor")
            processor.save_pretrained(save_directory)
