import pytest
import torch

from nasvit_hf import NASViTImageProcessor
from nasvit_hf.data import load_digits_dataset
from nasvit_hf.training import build_batch_mixing, build_eval_transform, build_train_transform


@pytest.fixture(scope="module")
def digit():
    return load_digits_dataset()["train"][0]["image"]  # PIL "L", 8x8


def test_eval_transform_is_the_image_processor(digit):
    expected = NASViTImageProcessor.for_resolution(32)(digit, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(build_eval_transform(32)(digit), expected)


def test_train_transform_gives_normalised_rgb_tensors_and_varies_with_the_rng(digit):
    transform = build_train_transform(32, randaugment_num_ops=2, randaugment_magnitude=9, crop_scale=(0.5, 1.0))
    torch.manual_seed(0)
    first = transform(digit)
    second = transform(digit)
    assert first.shape == (3, 32, 32) and first.dtype == torch.float32
    assert not torch.equal(first, second)
    torch.manual_seed(0)
    torch.testing.assert_close(transform(digit), first)


def test_train_transform_rejects_bad_knobs():
    with pytest.raises(ValueError, match="RandAugment"):
        build_train_transform(32, randaugment_num_ops=-1)
    with pytest.raises(ValueError, match="crop_scale"):
        build_train_transform(32, crop_scale=(0.9, 0.5))


def test_batch_mixing_makes_soft_labels_and_is_off_by_default():
    assert build_batch_mixing(0.0, 0.0, 10) is None
    mixing = build_batch_mixing(0.8, 1.0, 10)
    images, labels = mixing(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert labels.shape == (4, 10)
    torch.testing.assert_close(labels.sum(-1), torch.ones(4))
