"""The Hub-portable model files: configuration, modeling and image processing of NASViT."""

from .configuration_nasvit import NASViTConfig
from .image_processing_nasvit import NASViTImageProcessor
from .image_processing_nasvit_segmentation import NASViTSegmentationImageProcessor
from .modeling_nasvit import NASViTForImageClassification, NASViTModel, NASViTPreTrainedModel
from .modeling_nasvit_segmentation import NASViTBackbone, NASViTDecodeHead, NASViTForSemanticSegmentation
from .search_space_nasvit import REFERENCE_SEARCH_SPACE, make_divisible

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
