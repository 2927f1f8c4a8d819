"""Image processor for NASViT: resize (bicubic) + centre crop + ImageNet mean/std, in one of two evaluation
protocols. Grayscale and RGBA images are converted to RGB. Hub-portable (imports only torch and transformers).

- `crop_mode="resolution"` (the default; timm's convention): shortest edge to `resolution / 0.875`, centre crop
  `resolution`. The image is cropped at the arch's own resolution.
- `crop_mode="reference"` (the reference NASViT code's evaluation): shortest edge to 256, centre crop 224, then the
  model's own bicubic resize (`F.interpolate(..., mode="bicubic", align_corners=False)`) to the arch's resolution.
  Every subnet sees the same 224 crop. The converted reference checkpoint's published accuracy holds under this
  protocol only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import BatchFeature
from transformers.image_processing_utils_fast import BaseImageProcessorFast
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

__all__ = ["CROP_MODES", "DEFAULT_CROP_PCT", "NASViTImageProcessor"]

DEFAULT_CROP_PCT = 0.875
CROP_MODES = ("resolution", "reference")
REFERENCE_RESIZE = 256
REFERENCE_CROP = 224


class NASViTImageProcessor(BaseImageProcessorFast):
    r"""Evaluation preprocessing for NASViT classifiers.

    Resize the shortest edge to `size` (bicubic), centre crop `crop_size`, rescale to [0, 1], normalise with the
    ImageNet mean and std; then, when `resolution` is set and differs from the crop, resize the normalised tensor to
    `resolution` x `resolution` exactly as the model does (bicubic, `align_corners=False`). Build one with
    `NASViTImageProcessor.for_resolution(r, crop_mode=...)`, and the one for another arch of the same protocol with
    `processor.at_resolution(r)`.

    Args:
        crop_mode: `"resolution"` (crop at the resolution itself, size `r / crop_pct`) or `"reference"` (resize 256,
            crop 224, then resize to `r`: the reference code's evaluation). Only decides what `at_resolution` builds.
        resolution: the model's input size; None = the crop size (no resize after the crop).
    """

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
    crop_mode = "resolution"
    resolution = None

    def __init__(self, crop_mode: str | None = None, resolution: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if crop_mode is not None:
            if crop_mode not in CROP_MODES:
                raise ValueError(f"crop_mode must be one of {list(CROP_MODES)}, got {crop_mode!r}.")
            self.crop_mode = crop_mode
        if resolution is not None:
            if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
                raise ValueError(f"resolution must be a positive int or None, got {resolution!r}.")
            self.resolution = resolution

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["crop_mode"] = self.crop_mode
        output["resolution"] = self.resolution
        return output

    @classmethod
    def for_resolution(
        cls, resolution: int, crop_pct: float = DEFAULT_CROP_PCT, crop_mode: str = "resolution", **kwargs
    ) -> NASViTImageProcessor:
        """The processor for an arch of input `resolution`.

        `crop_mode="resolution"`: resize to `int(resolution / crop_pct)`, crop `resolution`. `crop_mode="reference"`:
        resize to 256, crop 224, resize to `resolution` (`crop_pct` is not used)."""
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
            raise ValueError(f"resolution must be a positive int, got {resolution!r}.")
        if not 0.0 < crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}.")
        if crop_mode == "reference":
            return cls(
                size={"shortest_edge": REFERENCE_RESIZE},
                crop_size={"height": REFERENCE_CROP, "width": REFERENCE_CROP},
                crop_mode="reference",
                resolution=resolution,
                **kwargs,
            )
        if crop_mode != "resolution":
            raise ValueError(f"crop_mode must be one of {list(CROP_MODES)}, got {crop_mode!r}.")
        return cls(
            size={"shortest_edge": int(resolution / crop_pct)},
            crop_size={"height": resolution, "width": resolution},
            crop_mode="resolution",
            resolution=resolution,
            **kwargs,
        )

    def at_resolution(self, resolution: int) -> NASViTImageProcessor:
        """A processor of the same protocol (crop mode, crop fraction, mean/std) for an arch of `resolution`."""
        settings = {key: value for key, value in self.to_dict().items() if not key.startswith("_")}
        for key in ("crop_mode", "resolution", "image_processor_type", "auto_map"):
            settings.pop(key, None)
        size, crop_size = settings.pop("size"), settings.pop("crop_size")
        if self.crop_mode == "reference":
            return self.__class__(
                size=size, crop_size=crop_size, crop_mode="reference", resolution=resolution, **settings
            )
        crop_pct = DEFAULT_CROP_PCT
        edge, crop = (size or {}).get("shortest_edge"), (crop_size or {}).get("height")
        if edge and crop and int(crop / DEFAULT_CROP_PCT) != edge:  # int(r / 0.875) floors: keep 0.875 if it fits
            crop_pct = min(1.0, crop / edge)
        return self.__class__.for_resolution(resolution, crop_pct=crop_pct, **settings)

    def _preprocess(self, images: list[torch.Tensor], *args, return_tensors=None, **kwargs) -> BatchFeature:
        batch = super()._preprocess(images, *args, return_tensors=None, **kwargs)
        resolution = self.resolution
        if resolution is not None:
            resized = []
            for image in batch["pixel_values"]:
                if tuple(image.shape[-2:]) != (resolution, resolution):
                    image = F.interpolate(
                        image[None].float(), size=(resolution, resolution), mode="bicubic", align_corners=False
                    )[0].to(image.dtype)
                resized.append(image)
            batch = BatchFeature(data={"pixel_values": resized})
        pixel_values = batch["pixel_values"]
        if return_tensors is not None and isinstance(pixel_values, list):
            pixel_values = torch.stack(pixel_values) if pixel_values else pixel_values
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)
