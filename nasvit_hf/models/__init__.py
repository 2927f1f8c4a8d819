"""The Hub-portable model files: configuration, modeling and image processing of NASViT."""

from .configuration_nasvit import REFERENCE_SEARCH_SPACE, NASViTConfig, make_divisible
from .image_processing_nasvit import NASViTImageProcessor
from .image_processing_nasvit_segmentation import NASViTSegmentationImageProcessor
from .modeling_nasvit import NASViTForImageClassification, NASViTModel, NASViTPreTrainedModel
from .modeling_nasvit_segmentation import NASViTBackbone, NASViTDecodeHead, NASViTForSemanticSegmentation

__all__ = [
    "REFERENCE_SEARCH_SPACE",
    "NASViTBackbone",
    "NASViTConfig",
    "NASViTDecodeHead",
    "NASViTForSemanticSegmentation",
    "NASViTSegmentationImageProcessor",
    "NASViTForImageClassification",
    "NASViTImageProcessor",
    "NASViTModel",
    "NASViTPreTrainedModel",
    "make_divisible",
]
