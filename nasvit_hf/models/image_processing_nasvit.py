"""Image processor for NASViT: resize (bicubic) + centre crop at the arch's resolution (crop 0.875) + ImageNet
mean/std. Grayscale and RGBA images are converted to RGB. Hub-portable (imports only transformers)."""

from __future__ import annotations

from transformers.image_processing_utils_fast import BaseImageProcessorFast
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

__all__ = ["DEFAULT_CROP_PCT", "NASViTImageProcessor"]

DEFAULT_CROP_PCT = 0.875


class NASViTImageProcessor(BaseImageProcessorFast):
    r"""Evaluation preprocessing of the reference: shortest edge to `resolution / 0.875`, centre crop
    `resolution`, rescale to [0, 1], normalise with the ImageNet mean and std. Use
    `NASViTImageProcessor.for_resolution(r)` to build the one that matches an arch of resolution `r`."""

    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    model_input_names = ["pixel_values"]

    @classmethod
    def for_resolution(cls, resolution: int, crop_pct: float = DEFAULT_CROP_PCT, **kwargs) -> NASViTImageProcessor:
        """The processor for an arch of input `resolution`: resize to `int(resolution / crop_pct)`, crop `resolution`."""
        if not isinstance(resolution, int) or resolution <= 0:
            raise ValueError(f"resolution must be a positive int, got {resolution!r}.")
        if not 0.0 < crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}.")
        return cls(
            size={"shortest_edge": int(resolution / crop_pct)},
            crop_size={"height": resolution, "width": resolution},
            **kwargs,
        )
