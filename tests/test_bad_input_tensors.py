"""Bad tensors for the forward passes (classification and segmentation): a clear error, or the right cast.

Refusals (table): empty batches, integer pixels, non-integer single-label targets, labels of the wrong length.
Accepted: float64 / half / bfloat16 pixel values (cast to the model's dtype) and any integer label dtype (int32,
uint8, int16 ...), giving the same loss as int64 labels.
"""

import copy

import pytest
import torch

from nasvit_hf import NASViTConfig, NASViTForSemanticSegmentation
from tests._training_helpers import micro_model, micro_space

NUM_LABELS = 4


@pytest.fixture(scope="module")
def classifier():
    return micro_model(num_labels=NUM_LABELS).eval()


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    config = NASViTConfig(search_space=micro_space(), num_labels=NUM_LABELS)
    return NASViTForSemanticSegmentation(config).eval()


def _pixels(batch=2, dtype=torch.float32):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(dtype)


BAD_CLASSIFICATION_INPUTS = [
    ("empty batch", lambda: {"pixel_values": _pixels(0)}, ValueError, "pixel_values is empty"),
    ("zero-width image", lambda: {"pixel_values": torch.zeros(1, 3, 32, 0)}, ValueError, "pixel_values is empty"),
    ("uint8 pixels", lambda: {"pixel_values": _pixels().to(torch.uint8)}, ValueError, "must be a float tensor"),
    ("numpy pixels", lambda: {"pixel_values": _pixels().numpy()}, TypeError, "must be a torch.Tensor"),
    ("3-D pixels", lambda: {"pixel_values": _pixels()[0]}, ValueError, "must have shape (batch, 3, height, width)"),
    (
        "meta pixels",
        lambda: {"pixel_values": torch.empty(2, 3, 32, 32, device="meta")},
        ValueError,
        "on the meta device",
    ),
    (
        "float class indices",
        lambda: {"pixel_values": _pixels(), "labels": torch.tensor([1.0, 2.0])},
        ValueError,
        "needs integer class indices",
    ),
    (
        "half class indices",
        lambda: {"pixel_values": _pixels(), "labels": torch.tensor([1, 2], dtype=torch.half)},
        ValueError,
        "needs integer class indices",
    ),
    (
        "labels of another batch size",
        lambda: {"pixel_values": _pixels(), "labels": torch.tensor([1, 2, 3])},
        ValueError,
        "one entry per image (2)",
    ),
    (
        "scalar label",
        lambda: {"pixel_values": _pixels(), "labels": torch.tensor(1)},
        ValueError,
        "one entry per image",
    ),
    (
        "label list",
        lambda: {"pixel_values": _pixels(), "labels": [1, 2]},
        TypeError,
        "labels must be a torch.Tensor",
    ),
    (
        "class index out of range",
        lambda: {"pixel_values": _pixels(), "labels": torch.tensor([1, 9], dtype=torch.int32)},
        ValueError,
        "class indices in [0, 4)",
    ),
]


@pytest.mark.parametrize(
    "case, make, error_type, phrase", BAD_CLASSIFICATION_INPUTS, ids=[row[0] for row in BAD_CLASSIFICATION_INPUTS]
)
def test_bad_classification_input_is_refused(classifier, case, make, error_type, phrase):
    with pytest.raises(error_type) as error:
        classifier(**make())
    assert phrase in str(error.value)


def test_single_label_problem_type_refuses_float_targets(classifier):
    model = copy.deepcopy(classifier)
    model.config.problem_type = "single_label_classification"
    with pytest.raises(ValueError, match="needs integer class indices"):
        model(pixel_values=_pixels(), labels=torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_pixel_values_are_cast_to_the_model_dtype(classifier, dtype):
    with torch.no_grad():
        expected = classifier(pixel_values=_pixels()).logits
        got = classifier(pixel_values=_pixels(dtype=dtype)).logits
    assert got.dtype == torch.float32
    # The only difference is the input's rounding to `dtype`.
    tolerance = {torch.float64: 1e-5, torch.float16: 5e-2, torch.bfloat16: 3e-1}[dtype]
    torch.testing.assert_close(got, expected, rtol=0, atol=tolerance)


def test_a_float64_model_takes_float32_pixels():
    model = micro_model(num_labels=NUM_LABELS).eval().double()
    with torch.no_grad():
        assert model(pixel_values=_pixels()).logits.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.int8], ids=str)
def test_any_integer_label_dtype_gives_the_int64_loss(classifier, dtype):
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        expected = classifier(pixel_values=_pixels(), labels=labels).loss
        got = classifier(pixel_values=_pixels(), labels=labels.to(dtype)).loss
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


BAD_SEGMENTATION_INPUTS = [
    ("empty batch", lambda: {"pixel_values": _pixels(0)}, ValueError, "pixel_values is empty"),
    ("int pixels", lambda: {"pixel_values": _pixels().long()}, ValueError, "must be a float tensor"),
    (
        "meta pixels",
        lambda: {"pixel_values": torch.empty(2, 3, 32, 32, device="meta")},
        ValueError,
        "on the meta device",
    ),
    (
        "float mask",
        lambda: {"pixel_values": _pixels(), "labels": torch.zeros(2, 32, 32)},
        ValueError,
        "must be an integer mask",
    ),
    (
        "mask of another size",
        lambda: {"pixel_values": _pixels(), "labels": torch.zeros(2, 16, 16, dtype=torch.long)},
        ValueError,
        "must match the images",
    ),
]


@pytest.mark.parametrize(
    "case, make, error_type, phrase", BAD_SEGMENTATION_INPUTS, ids=[row[0] for row in BAD_SEGMENTATION_INPUTS]
)
def test_bad_segmentation_input_is_refused(segmenter, case, make, error_type, phrase):
    with pytest.raises(error_type) as error:
        segmenter(**make())
    assert phrase in str(error.value)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32], ids=str)
def test_segmentation_takes_float64_pixels_and_any_integer_mask(segmenter, dtype):
    labels = torch.randint(NUM_LABELS, (2, 32, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = segmenter(pixel_values=_pixels(), labels=labels).loss
        got = segmenter(pixel_values=_pixels(dtype=torch.float64), labels=labels.to(dtype)).loss
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_a_model_on_the_meta_device_still_takes_meta_pixels():
    """Shape inference with an empty model (accelerate's init_empty_weights): meta in, meta out."""
    model = micro_model(num_labels=NUM_LABELS).to("meta").eval()
    with torch.no_grad():
        logits = model(pixel_values=torch.empty(2, 3, 32, 32, device="meta")).logits
    assert logits.device.type == "meta" and tuple(logits.shape) == (2, NUM_LABELS)
