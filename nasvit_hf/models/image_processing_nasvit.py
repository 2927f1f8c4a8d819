"""Image processor for NASViT: resize (bicubic) + centre crop + ImageNet mean/std, in one of two evaluation
protocols. Grayscale and RGBA images are converted to RGB. Hub-portable (imports only numpy, PIL, torch and
transformers).

- `crop_mode="resolution"` (the default; timm's convention): shortest edge to `resolution / 0.875`, centre crop
  `resolution`. The image is cropped at the arch's own resolution.
- `crop_mode="reference"` (the reference NASViT code's evaluation): shortest edge to 256, centre crop 224, then the
  model's own bicubic resize (`F.interpolate(..., mode="bicubic", align_corners=False)`) to the arch's resolution.
  Every subnet sees the same 224 crop. The converted reference checkpoint's published accuracy holds under this
  protocol only.

Inputs it accepts beyond transformers' defaults, and what it refuses (docs/bad-input.md, "Images"):
- PIL images in 16-bit (`I;16*`) and 32-bit integer (`I`, values in [0, 65535]) modes are scaled from [0, 65535] to
  8 bits, float (`F`) images from [0, 1]; other value ranges are refused with a clear error (their scale is unknown).
- numpy arrays and tensors: 2-D (height, width) grayscale is accepted; `uint16` is scaled from [0, 65535], other
  integer types must hold values in [0, 255], `bool` maps to 0/255; float arrays keep transformers' convention (pass
  `do_rescale=False` when they already lie in [0, 1]).
- Memory stays bounded: an image whose long side exceeds `MAX_ASPECT_RATIO` times its short side (a 1x100000 strip
  would need gigabytes once its short side is resized) and any resize to more than `MAX_RESIZED_PIXELS` pixels are
  refused with an error that says what to do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BatchFeature
from transformers.image_processing_utils_fast import BaseImageProcessorFast
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

__all__ = ["CROP_MODES", "DEFAULT_CROP_PCT", "MAX_ASPECT_RATIO", "MAX_RESIZED_PIXELS", "NASViTImageProcessor"]

DEFAULT_CROP_PCT = 0.875
CROP_MODES = ("resolution", "reference")
REFERENCE_RESIZE = 256
REFERENCE_CROP = 224
# Longest side / shortest side above which an image is refused (panoramas are ~10:1; 1x100000 strips are attacks).
MAX_ASPECT_RATIO = 100.0
# Most pixels a resize may produce (8192 x 8192): beyond it the processor would need gigabytes per image.
MAX_RESIZED_PIXELS = 8192 * 8192
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _to_uint8(values: np.ndarray, what: str) -> np.ndarray:
    """An integer/bool/high-bit image array as uint8: bool -> 0/255, uint16 scaled from [0, 65535], other integer
    types unchanged when in [0, 255]. Float and uint8 arrays are returned as they are."""
    if values.dtype == np.uint8 or values.dtype.kind == "f":
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype == np.uint16:
        return np.round(values.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    if values.dtype.kind in "iu":
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 255:
            raise ValueError(
                f"{what} has dtype {values.dtype} with values in [{low}, {high}]; integer images must hold 8-bit values "
                "in [0, 255] (uint16 is scaled from [0, 65535]). Rescale it to uint8, or to floats in [0, 1] with "
                "do_rescale=False."
            )
        return values.astype(np.uint8)
    raise ValueError(
        f"{what} has dtype {values.dtype}, which is not an image type; pass uint8, uint16 or float pixels."
    )


def _pil_to_supported(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float PIL images as 8-bit 'L' images, scaled by the mode's value range."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image).astype(np.int64)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise ValueError(
                f"a mode {mode!r} image with values in [{low}, {high}]: 32-bit integer images are read as 16-bit "
                "intensities in [0, 65535]. Convert it to 'L' or 'RGB' (8-bit) with the scaling it needs first."
            )
        return Image.fromarray(np.round(values * (255.0 / 65535.0)).astype(np.uint8), mode="L")
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if values.size and (not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0):
            raise ValueError(
                f"a mode 'F' (float) image with values in [{float(values.min()):g}, {float(values.max()):g}]: "
                "float images must hold finite intensities in [0, 1]. Rescale it to [0, 1], or convert it to 'L' / "
                "'RGB' (8-bit) first."
            )
        return Image.fromarray(np.round(values * 255.0).astype(np.uint8), mode="L")
    return image


_NOT_FINITE = (
    "{what} holds NaN or infinite values: images must hold finite pixels (float images are multiplied by "
    "rescale_factor; pass do_rescale=False for values already in [0, 1])."
)


def _is_2d_array(image: Any) -> bool:
    return isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 2


def check_resize_pixels(pixels: float, what: str) -> None:
    """A clear error when a resize would produce more than `MAX_RESIZED_PIXELS` pixels."""
    if pixels > MAX_RESIZED_PIXELS:
        raise ValueError(
            f"{what} would produce {int(pixels):,} pixels, more than the {MAX_RESIZED_PIXELS:,} allowed; use a smaller "
            "size (the model's resolution is enough)."
        )


def check_image_shape(height: int, width: int) -> None:
    """A clear error for an empty image or one more elongated than `MAX_ASPECT_RATIO`."""
    if height < 1 or width < 1:
        raise ValueError(f"an image is {height}x{width} (height x width): images must have at least one pixel.")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(
            f"an image is {height}x{width} (height x width), an aspect ratio of {ratio:.0f}:1; images more elongated "
            f"than {MAX_ASPECT_RATIO:.0f}:1 are refused (resizing their short side would need unbounded memory). "
            "Crop or pad it to a less extreme shape first."
        )


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

    def _prepare_images_structure(self, images: Any, expected_ndims: int = 3) -> Any:
        # transformers only takes 3-D arrays; a 2-D (height, width) array is one grayscale image.
        if isinstance(images, (list, tuple)) and not images:
            raise ValueError("no images: pass an image or a non-empty list of images.")
        if _is_2d_array(images):
            return [images]
        if isinstance(images, (list, tuple)) and images and any(_is_2d_array(image) for image in images):
            return list(images)
        return super()._prepare_images_structure(images, expected_ndims=expected_ndims)

    def process_image(self, image: Any, *args, **kwargs) -> torch.Tensor:
        """One image as a channels-first tensor: high-bit PIL modes and non-uint8 integer arrays scaled to 8 bits
        first, and its shape checked (`check_image_shape`)."""
        if isinstance(image, Image.Image):
            image = _pil_to_supported(image)
        elif isinstance(image, np.ndarray):
            image = _to_uint8(image, "an image array")
            if image.dtype.kind == "f" and not np.isfinite(image).all():
                raise ValueError(_NOT_FINITE.format(what="an image array"))
        elif isinstance(image, torch.Tensor) and not image.is_floating_point() and image.dtype != torch.uint8:
            image = torch.from_numpy(_to_uint8(image.detach().cpu().numpy(), "an image tensor"))
        elif isinstance(image, torch.Tensor) and not bool(torch.isfinite(image).all()):
            raise ValueError(_NOT_FINITE.format(what="an image tensor"))
        tensor = super().process_image(image, *args, **kwargs)
        check_image_shape(int(tensor.shape[-2]), int(tensor.shape[-1]))
        return tensor

    def resize(self, image: torch.Tensor, size: Any, *args, **kwargs) -> torch.Tensor:
        height, width = int(image.shape[-2]), int(image.shape[-1])
        if size.shortest_edge:
            short = size.shortest_edge
            long = short * max(height, width) / max(1, min(height, width))
            if size.longest_edge:
                long = min(long, size.longest_edge)
            pixels = short * long
        elif size.height and size.width:
            pixels = size.height * size.width
        else:
            pixels = 0
        check_resize_pixels(pixels, f"resizing a {height}x{width} image with size={dict(size)}")
        return super().resize(image, size, *args, **kwargs)

    def center_crop(self, image: torch.Tensor, size: Any, **kwargs) -> torch.Tensor:
        """Centre crop with torchvision's `CenterCrop` offsets, `int(round((side - crop) / 2))` (Python's round: halves
        to even), which the reference's and timm's evaluation use; transformers floors them, one pixel off whenever
        the margin is odd and its half rounds up. A crop larger than the image is padded as transformers does."""
        height, width = int(image.shape[-2]), int(image.shape[-1])
        crop_height, crop_width = size.height, size.width
        if crop_height is None or crop_width is None or crop_height > height or crop_width > width:
            return super().center_crop(image, size, **kwargs)
        top = int(round((height - crop_height) / 2.0))
        left = int(round((width - crop_width) / 2.0))
        return image[..., top : top + crop_height, left : left + crop_width]

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
            check_resize_pixels(resolution * resolution, f"resizing to resolution={resolution}")
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
