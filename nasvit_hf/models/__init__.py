"""The Hub-portable model files: configuration, modeling and image processing of NASViT."""

from .configuration_nasvit import REFERENCE_SEARCH_SPACE, NASViTConfig, make_divisible
from .image_processing_nasvit import NASViTImageProcessor
from .modeling_nasvit import NASViTForImageClassification, NASViTModel, NASViTPreTrainedModel

__all__ = [
    "REFERENCE_SEARCH_SPACE",
    "NASViTConfig",
    "NASViTForImageClassification",
    "NASViTImageProcessor",
    "NASViTModel",
    "NASViTPreTrainedModel",
    "make_divisible",
]
