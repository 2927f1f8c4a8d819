"""nasvit_hf: NASViT supernets and subnets as Hugging Face models.

`import nasvit_hf` registers the `nasvit` model type with transformers' Auto classes (config, models, image
processor), so NASViT folders load with `AutoModelForImageClassification.from_pretrained` and
`pipeline("image-classification")`. Saved folders also carry their code (`trust_remote_code=True`).
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .macs import count_macs, count_parameters
from .models import (
    REFERENCE_SEARCH_SPACE,
    NASViTConfig,
    NASViTForImageClassification,
    NASViTImageProcessor,
    NASViTModel,
    NASViTPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register("nasvit", NASViTConfig, exist_ok=True)
AutoModel.register(NASViTConfig, NASViTModel, exist_ok=True)
AutoModelForImageClassification.register(NASViTConfig, NASViTForImageClassification, exist_ok=True)
AutoImageProcessor.register(NASViTConfig, fast_image_processor_class=NASViTImageProcessor, exist_ok=True)

NASViTConfig.register_for_auto_class()
NASViTModel.register_for_auto_class("AutoModel")
NASViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")
NASViTImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "REFERENCE_SEARCH_SPACE",
    "NASViTConfig",
    "NASViTForImageClassification",
    "NASViTImageProcessor",
    "NASViTModel",
    "NASViTPreTrainedModel",
    "count_macs",
    "count_parameters",
]
