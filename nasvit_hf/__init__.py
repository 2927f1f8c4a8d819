"""nasvit_hf: NASViT supernets and subnets as Hugging Face models.

`import nasvit_hf` registers the `nasvit` model type with transformers' Auto classes (config, models, image
processor), so NASViT folders load with `AutoModelForImageClassification.from_pretrained` and
`pipeline("image-classification")`, as `AutoBackbone` and, with `AutoModelForSemanticSegmentation`,
`pipeline("image-segmentation")`. Saved folders also carry their code (`trust_remote_code=True`).
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    AutoVideoProcessor,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

from .macs import count_macs, count_parameters, count_segmentation_macs
from .models import (
    REFERENCE_SEARCH_SPACE,
    NASViTBackbone,
    NASViTConfig,
    NASViTForImageClassification,
    NASViTForSemanticSegmentation,
    NASViTImageProcessor,
    NASViTModel,
    NASViTPreTrainedModel,
    NASViTSegmentationImageProcessor,
)

__version__ = "0.1.0"

AutoConfig.register("nasvit", NASViTConfig, exist_ok=True)
AutoModel.register(NASViTConfig, NASViTModel, exist_ok=True)
AutoModelForImageClassification.register(NASViTConfig, NASViTForImageClassification, exist_ok=True)
AutoImageProcessor.register(NASViTConfig, fast_image_processor_class=NASViTImageProcessor, exist_ok=True)


class _SegmentationImageProcessorKey(NASViTConfig):
    """Registration key only. `AutoImageProcessor` resolves a saved `image_processor_type` by finding that class name
    among the registered processors, one per config class; the segmentation processor needs a key of its own."""


AutoImageProcessor.register(
    _SegmentationImageProcessorKey, fast_image_processor_class=NASViTSegmentationImageProcessor, exist_ok=True
)
# NASViT has no video processor. Saying so keeps `pipeline(...)` from deriving a remote "NASViTVideoProcessor" from
# the image processor's auto_map and prompting the user to trust remote code for it.
AutoVideoProcessor.register(NASViTConfig, video_processor_classes={}, exist_ok=True)
AutoBackbone.register(NASViTConfig, NASViTBackbone, exist_ok=True)
AutoModelForSemanticSegmentation.register(NASViTConfig, NASViTForSemanticSegmentation, exist_ok=True)
# The image-segmentation pipeline checks a model's class name against transformers' own name tables, not the Auto
# classes' registrations, and logs "is not supported for image-segmentation" for anything else (though it runs it):
# list NASViT in the table it reads. Its key is the model type: no transformers module is imported for it.
MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault("nasvit", NASViTForSemanticSegmentation.__name__)

NASViTConfig.register_for_auto_class()
NASViTModel.register_for_auto_class("AutoModel")
NASViTForImageClassification.register_for_auto_class("AutoModelForImageClassification")
NASViTImageProcessor.register_for_auto_class("AutoImageProcessor")
NASViTBackbone.register_for_auto_class("AutoBackbone")
NASViTForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
NASViTSegmentationImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "REFERENCE_SEARCH_SPACE",
    "NASViTBackbone",
    "NASViTConfig",
    "NASViTForImageClassification",
    "NASViTForSemanticSegmentation",
    "NASViTImageProcessor",
    "NASViTModel",
    "NASViTPreTrainedModel",
    "NASViTSegmentationImageProcessor",
    "count_macs",
    "count_parameters",
    "count_segmentation_macs",
]
