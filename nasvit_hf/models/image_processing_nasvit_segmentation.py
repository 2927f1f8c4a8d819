"""Image processor for NASViT semantic segmentation: resize (bilinear) to a fixed size, or keep the size, + ImageNet
mean/std, with segmentation maps resized alongside (nearest) and `post_process_semantic_segmentation`, so
`pipeline("image-segmentation")` works. Hub-portable (imports only torch, transformers and its siblings)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_utils import PILImageResampling, is_pil_image

from .image_processing_nasvit import NASViTImageProcessor, check_resize_pixels

__all__ = ["NASViTSegmentationImageProcessor"]


def _as_list(items: Any) -> list:
    return list(items) if isinstance(items, (list, tuple)) else [items]


def _image_size(image: Any) -> tuple[int, int]:
    """(height, width) of a PIL image, or of an array/tensor in HW, HWC or CHW layout."""
    if is_pil_image(image):
        width, height = image.size
        return height, width
    shape = tuple(image.shape)
    if len(shape) == 2:
        return shape
    if len(shape) == 3:
        channels_first = shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4)
        return shape[1:] if channels_first else shape[:2]
    raise ValueError(f"an image must be 2-D (H, W) or 3-D (HWC / CHW), got shape {shape}.")


def _mask_tensor(mask: Any, index: int = 0) -> torch.Tensor:
    """A segmentation map (PIL 'L'/'P'/'I' image, array or tensor of class ids, (H, W) or (1, H, W)) as int64 (H, W)."""
    if mask is None or isinstance(mask, (str, bytes)):
        raise ValueError(
            f"segmentation map {index} is {mask!r}: pass one map of class ids per image (a PIL image, array or tensor; "
            "open files first), or segmentation_maps=None for none."
        )
    if isinstance(mask, torch.Tensor):
        tensor = mask.detach().cpu()
    else:
        array = np.asarray(mask)
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"segmentation map {index} has dtype {array.dtype}: a map holds integer class ids (uint8, int64, ...)."
            )
        if array.dtype == np.uint16 or array.dtype == np.uint32:
            array = array.astype(np.int64)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim == 3 and 1 in (tensor.shape[0], tensor.shape[-1]):
        tensor = tensor.squeeze(0) if tensor.shape[0] == 1 else tensor.squeeze(-1)
    if tensor.ndim != 2:
        raise ValueError(
            f"a segmentation map must be a single-channel (H, W) array of class ids, got shape {tuple(tensor.shape)}; "
            "convert colour-coded masks to class ids first."
        )
    if tensor.is_floating_point():
        raise ValueError(f"a segmentation map must hold integer class ids, got dtype {tensor.dtype}.")
    return tensor.to(torch.int64)


def _target_size(size: Any, index: int) -> tuple[int, int]:
    """A `post_process_semantic_segmentation` target size as (height, width) of positive ints, within the pixel bound
    of the processors (`check_resize_pixels`)."""
    values = size.tolist() if isinstance(size, torch.Tensor) else size
    pair = tuple(values) if isinstance(values, (list, tuple)) else ()
    if len(pair) != 2 or not all(
        isinstance(side, numbers.Real) and not isinstance(side, bool) and float(side).is_integer() and side >= 1
        for side in pair
    ):
        raise ValueError(f"target_sizes[{index}] must be a (height, width) pair of positive ints, got {size!r}.")
    height, width = int(pair[0]), int(pair[1])
    check_resize_pixels(height * width, f"target_sizes[{index}] = {(height, width)}")
    return height, width


class NASViTSegmentationImageProcessor(NASViTImageProcessor):
    r"""Preprocessing for `NASViTForSemanticSegmentation` (Segformer's conventions).

    Images: resize to `size` (`{"height", "width"}`, bilinear; `do_resize=False` keeps each image's size), rescale to
    [0, 1], normalise with the ImageNet mean and std, convert to RGB. No centre crop. `segmentation_maps` (class ids)
    get the same resize with nearest-neighbour interpolation and come back as `labels` (int64); with
    `do_reduce_labels=True`, 0 becomes the ignore index 255 and every other id moves down by one (ADE20K's
    convention). Each map must have its image's size.
    """

    resample = PILImageResampling.BILINEAR
    size = {"height": 512, "width": 512}
    default_to_square = True
    crop_size = None
    do_center_crop = False
    do_reduce_labels = False
    ignore_index = 255

    def __init__(self, do_reduce_labels: bool | None = None, ignore_index: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if do_reduce_labels is not None:
            self.do_reduce_labels = do_reduce_labels
        if ignore_index is not None:
            self.ignore_index = ignore_index

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["do_reduce_labels"] = self.do_reduce_labels
        output["ignore_index"] = self.ignore_index
        return output

    def preprocess(self, images: Any, segmentation_maps: Any = None, **kwargs) -> BatchFeature:
        do_reduce_labels = kwargs.pop("do_reduce_labels", self.do_reduce_labels)
        return_tensors = kwargs.get("return_tensors")
        batch = super().preprocess(images, **kwargs)
        if segmentation_maps is None:
            return batch
        images = _as_list(images)
        masks = [_mask_tensor(mask, index) for index, mask in enumerate(_as_list(segmentation_maps))]
        if len(masks) != len(images):
            raise ValueError(f"got {len(images)} images but {len(masks)} segmentation maps; pass one map per image.")
        pixel_values = batch["pixel_values"]
        labels = []
        for index, (image, mask) in enumerate(zip(images, masks)):
            if tuple(mask.shape) != tuple(_image_size(image)):
                raise ValueError(
                    f"segmentation map {index} is {tuple(mask.shape)} (height, width) but its image is "
                    f"{tuple(_image_size(image))}: every mask must have its image's size."
                )
            if do_reduce_labels:
                mask = torch.where(mask == 0, self.ignore_index, mask - 1)
                mask = torch.where(mask == self.ignore_index - 1, self.ignore_index, mask)
            target = tuple(pixel_values[index].shape[-2:])
            if tuple(mask.shape) != target:
                mask = F.interpolate(mask[None, None].float(), size=target, mode="nearest-exact")[0, 0].long()
            labels.append(mask)
        if return_tensors == "pt" and len({tuple(label.shape) for label in labels}) == 1:
            batch["labels"] = torch.stack(labels)
        else:
            batch["labels"] = labels
        return batch

    def post_process_semantic_segmentation(
        self,
        outputs: Any,
        target_sizes: list[tuple[int, int]] | torch.Tensor | None = None,
        return_segmentation_scores: bool = False,
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """Per image, the (height, width) map of predicted class ids, the logits bilinearly resized to
        `target_sizes[i]` first when given (e.g. the original image sizes), else at the logits' size. With
        `return_segmentation_scores=True` (as Segformer's processor), each item is a
        `SemanticSegmentationPostProcessorOutput` with `segmentation` and the (num_labels, height, width) logits
        `segmentation_scores`."""
        # a SemanticSegmenterOutput or a dict
        logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
        if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
            raise ValueError(
                "outputs must hold logits of shape (batch, num_labels, height, width) (a NASViTForSemanticSegmentation "
                f"output), got {type(logits).__name__ if logits is None else tuple(logits.shape)}."
            )
        if target_sizes is None:
            scores = list(logits)
        else:
            if len(target_sizes) != len(logits):
                raise ValueError(
                    f"got {len(target_sizes)} target sizes for a batch of {len(logits)}; pass one (height, width) "
                    "per image."
                )
            scores = []
            for index, size in enumerate(target_sizes):
                size = _target_size(size, index)
                resized = F.interpolate(logits[index : index + 1], size=size, mode="bilinear", align_corners=False)
                scores.append(resized[0])
        if not return_segmentation_scores:
            return [score.argmax(dim=0) for score in scores]
        return [
            SemanticSegmentationPostProcessorOutput(
                data={"segmentation": score.argmax(dim=0), "segmentation_scores": score}
            )
            for score in scores
        ]
