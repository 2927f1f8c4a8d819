"""Bad and unusual images for both image processors: refused with a clear ValueError, or read correctly.

Refusals (table): absurd aspect ratios (memory would be unbounded), resizes to absurd sizes, high-bit images whose
value range is unknown. Accepted (table): 16-bit / 32-bit integer / float PIL modes scaled by their value range, 2-D
numpy arrays and tensors, integer arrays, all giving the same pixels as the equivalent 8-bit image.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from nasvit_hf import NASViTImageProcessor, NASViTSegmentationImageProcessor

PROCESSORS = {
    "classification": lambda: NASViTImageProcessor.for_resolution(32),
    "segmentation": lambda: NASViTSegmentationImageProcessor(size={"height": 32, "width": 32}),
}


def _png(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return Image.open(io.BytesIO(buffer.getvalue()))


RAMP16 = np.linspace(0, 65535, 48 * 40).reshape(48, 40).astype(np.uint16)
RAMP8 = np.round(RAMP16 / 257.0).astype(np.uint8)

BAD_IMAGES = [
    ("1x100000 PNG strip", lambda: _png(Image.new("L", (100000, 1))), {}, "aspect ratio of 100000:1"),
    ("100000x1 array", lambda: np.zeros((100000, 1, 3), np.uint8), {}, "images more elongated than 100:1"),
    ("2-D strip", lambda: np.zeros((2, 500), np.uint8), {}, "aspect ratio of 250:1"),
    ("empty array", lambda: np.zeros((0, 5, 3), np.uint8), {}, "at least one pixel"),
    ("huge resize", lambda: RAMP8, {"size": {"shortest_edge": 100000}}, "more than the 67,108,864 allowed"),
    ("F outside [0, 1]", lambda: Image.fromarray(np.full((8, 8), 3.0, np.float32)), {}, "in [0, 1]"),
    ("F with NaN", lambda: Image.fromarray(np.full((8, 8), np.nan, np.float32)), {}, "finite intensities"),
    ("I negative", lambda: Image.fromarray(np.full((8, 8), -3, np.int32)), {}, "intensities in [0, 65535]"),
    ("I above 16 bit", lambda: Image.fromarray(np.full((8, 8), 70000, np.int32)), {}, "[70000, 70000]"),
    ("int64 array above 255", lambda: np.full((8, 8, 3), 300), {}, "8-bit values in [0, 255]"),
    ("int32 tensor negative", lambda: torch.full((3, 8, 8), -1, dtype=torch.int32), {}, "8-bit values in [0, 255]"),
    ("complex array", lambda: np.zeros((8, 8, 3), np.complex64), {}, "not an image type"),
    ("float array with NaN", lambda: np.full((8, 8, 3), np.nan, np.float32), {}, "holds NaN or infinite values"),
    ("float16 array with inf", lambda: np.full((8, 8, 3), np.inf, np.float16), {}, "holds NaN or infinite values"),
    ("2-D float array with NaN", lambda: np.full((8, 8), np.nan), {}, "holds NaN or infinite values"),
    ("float tensor with NaN", lambda: torch.full((3, 8, 8), float("nan")), {}, "holds NaN or infinite values"),
    ("object array", lambda: np.array([[None] * 8] * 8), {}, "not an image type"),
    ("an empty list", lambda: [], {}, "no images"),
]


@pytest.mark.parametrize("processor_name", sorted(PROCESSORS))
@pytest.mark.parametrize("case, make, kwargs, phrase", BAD_IMAGES, ids=[row[0] for row in BAD_IMAGES])
def test_bad_image_is_refused(processor_name, case, make, kwargs, phrase):
    processor = PROCESSORS[processor_name]()
    if processor_name == "segmentation" and "size" in kwargs:
        kwargs = {"size": {"height": 10000, "width": 10000}}
        phrase = "more than the 67,108,864 allowed"
    with pytest.raises(ValueError) as error:
        processor(make(), return_tensors="pt", **kwargs)
    assert phrase in str(error.value)


EQUIVALENT_IMAGES = [
    ("I;16 PNG", lambda: _png(Image.fromarray(RAMP16))),
    ("I (16-bit values)", lambda: Image.fromarray(RAMP16.astype(np.int32))),
    ("F in [0, 1]", lambda: Image.fromarray((RAMP8 / 255.0).astype(np.float32))),
    ("2-D uint8 array", lambda: RAMP8),
    ("2-D uint8 tensor", lambda: torch.from_numpy(RAMP8)),
    ("2-D uint16 array", lambda: RAMP16),
    ("HWC uint16 array", lambda: RAMP16[..., None].repeat(3, axis=-1)),
    ("HWC int64 array", lambda: RAMP8[..., None].repeat(3, axis=-1).astype(np.int64)),
    ("CHW int32 tensor", lambda: torch.from_numpy(RAMP8.astype(np.int32))[None].repeat(3, 1, 1)),
]


@pytest.mark.parametrize("processor_name", sorted(PROCESSORS))
@pytest.mark.parametrize("case, make", EQUIVALENT_IMAGES, ids=[row[0] for row in EQUIVALENT_IMAGES])
def test_high_bit_and_2d_images_match_their_8_bit_equivalent(processor_name, case, make):
    processor = PROCESSORS[processor_name]()
    expected = processor(Image.fromarray(RAMP8), return_tensors="pt")["pixel_values"]
    got = processor(make(), return_tensors="pt")["pixel_values"]
    assert got.shape == expected.shape == (1, 3, 32, 32)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_a_list_of_2d_arrays_is_a_batch_of_grayscale_images():
    processor = PROCESSORS["classification"]()
    batch = processor([RAMP8, 255 - RAMP8], return_tensors="pt")["pixel_values"]
    assert batch.shape == (2, 3, 32, 32) and not torch.equal(batch[0], batch[1])


def test_elongated_but_allowed_image_is_processed():
    processor = PROCESSORS["classification"]()
    assert processor(np.zeros((3, 297, 3), np.uint8), return_tensors="pt")["pixel_values"].shape == (1, 3, 32, 32)


def test_segmentation_maps_with_a_2d_image():
    processor = PROCESSORS["segmentation"]()
    batch = processor(RAMP8, segmentation_maps=np.ones((48, 40), np.uint8), return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 3, 32, 32) and batch["labels"].shape == (1, 32, 32)


def _segmentation_logits(batch=1):
    return {"logits": torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(0))}


# (case, call(processor), phrase): segmentation maps and post-processing of NASViTSegmentationImageProcessor
BAD_SEGMENTATION_CALLS = [
    ("segmentation_maps=[None]", lambda p: p(RAMP8, segmentation_maps=[None]), "segmentation map 0 is None"),
    ("one map None of two", lambda p: p([RAMP8, RAMP8], segmentation_maps=[np.ones((48, 40), np.uint8), None]),
     "segmentation map 1 is None"),
    ("a path as the map", lambda p: p(RAMP8, segmentation_maps="mask.png"), "open files first"),
    ("an object array map", lambda p: p(RAMP8, segmentation_maps=np.array([[None] * 40] * 48)), "has dtype object"),
    ("a float map", lambda p: p(RAMP8, segmentation_maps=np.ones((48, 40), np.float32)), "must hold integer class ids"),
    ("target size (0, 0)", lambda p: p.post_process_semantic_segmentation(_segmentation_logits(), [(0, 0)]),
     "target_sizes[0] must be a (height, width) pair of positive ints"),
    ("target size (-5, 10)", lambda p: p.post_process_semantic_segmentation(_segmentation_logits(), [(-5, 10)]), "got (-5, 10)"),
    ("target size (10,)", lambda p: p.post_process_semantic_segmentation(_segmentation_logits(), [(10,)]), "got (10,)"),
    ("target size (10.5, 10)", lambda p: p.post_process_semantic_segmentation(_segmentation_logits(), [(10.5, 10)]), "positive ints"),
    ("target size None", lambda p: p.post_process_semantic_segmentation(_segmentation_logits(), [None]), "got None"),
    ("target size of 10^12 pixels", lambda p: p.post_process_semantic_segmentation(_segmentation_logits(), [(10**6, 10**6)]),
     "more than the 67,108,864 allowed"),
    ("target sizes for another batch", lambda p: p.post_process_semantic_segmentation(_segmentation_logits(2), [(8, 8)]),
     "got 1 target sizes for a batch of 2"),
    ("outputs without logits", lambda p: p.post_process_semantic_segmentation({"loss": 1.0}), "outputs must hold logits"),
    ("3-D logits", lambda p: p.post_process_semantic_segmentation({"logits": torch.zeros(3, 8, 8)}), "got (3, 8, 8)"),
]  # fmt: skip


@pytest.mark.parametrize("case, call, phrase", BAD_SEGMENTATION_CALLS, ids=[row[0] for row in BAD_SEGMENTATION_CALLS])
def test_bad_segmentation_maps_and_target_sizes_are_refused(case, call, phrase):
    with pytest.raises(ValueError) as error:
        call(PROCESSORS["segmentation"]())
    assert phrase in str(error.value)


def test_target_sizes_as_a_tensor_and_numpy_ints_are_accepted():
    processor = PROCESSORS["segmentation"]()
    maps = processor.post_process_semantic_segmentation(_segmentation_logits(2), torch.tensor([[10, 12], [5, 5]]))
    assert [tuple(m.shape) for m in maps] == [(10, 12), (5, 5)]
    maps = processor.post_process_semantic_segmentation(_segmentation_logits(), [(np.int64(7), np.int64(9))])
    assert tuple(maps[0].shape) == (7, 9)
