"""The ImageNet recipe's augmentation is timm's: RandAugment spec strings, Mixup/CutMix, RandomErasing."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from nasvit_hf.training import ImageClassificationDataset
from nasvit_hf.training.timm_data import (
    build_timm_mixup,
    build_timm_train_transform,
    find_rand_augment,
)

SPEC = "rand-n1-m1-mstd0.5-inc1"


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).resize((96, 80), Image.BICUBIC)


def _seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_rand_augment_is_timms_for_the_reference_spec(photo):
    from timm.data import rand_augment_transform
    from timm.data.auto_augment import RandAugment

    ours = find_rand_augment(build_timm_train_transform(64, SPEC))
    assert isinstance(ours, RandAugment)
    assert ours.num_layers == 1 and len(ours.ops) > 10
    assert all(op.prob == 0.5 and op.magnitude == 1 and op.magnitude_std == 0.5 for op in ours.ops)
    # timm's create_transform hparams for a 64 px crop with ImageNet's mean and bicubic interpolation
    hparams = {"translate_const": int(64 * 0.45), "img_mean": (124, 116, 104), "interpolation": Image.BICUBIC}
    reference = rand_augment_transform(SPEC, hparams)
    assert [op.name for op in ours.ops] == [op.name for op in reference.ops]  # "inc1": the increasing ops
    changed = 0
    for seed in range(40):
        _seed(seed)
        expected = np.asarray(reference(photo))
        _seed(seed)
        actual = np.asarray(ours(photo))
        np.testing.assert_array_equal(actual, expected)
        changed += not np.array_equal(actual, np.asarray(photo))
    assert 5 < changed < 35  # each op applies with probability 0.5


def test_train_transform_matches_timm_create_transform_and_is_seeded_per_item(photo):
    from timm.data import create_transform

    ours = build_timm_train_transform(48, SPEC, crop_scale=(0.25, 1.0), random_erasing=0.5)
    reference = create_transform(
        48,
        is_training=True,
        scale=(0.25, 1.0),
        auto_augment=SPEC,
        interpolation="bicubic",
        re_prob=0.5,
        re_mode="pixel",
        color_jitter=None,
    )
    _seed(3)
    expected = reference(photo)
    _seed(3)
    torch.testing.assert_close(ours(photo), expected)
    assert expected.shape == (3, 48, 48)
    dataset = ImageClassificationDataset([{"image": photo, "label": 0}], ours, seed=7)
    state = random.getstate()
    first, second = dataset[0]["pixel_values"], dataset[0]["pixel_values"]
    torch.testing.assert_close(first, second)
    assert random.getstate() == state  # the global RNGs are left alone
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["pixel_values"], first)


def test_grayscale_and_cmyk_images_become_rgb(photo):
    transform = build_timm_train_transform(32, SPEC)
    for mode in ("L", "CMYK", "RGBA"):
        assert transform(photo.convert(mode)).shape == (3, 32, 32)


def test_bad_spec_is_a_clear_error():
    with pytest.raises(ValueError, match="rand-n1-m1"):
        build_timm_train_transform(32, "rand-nX")


def test_timm_mixup_switches_between_mixup_and_cutmix_and_smooths():
    assert build_timm_mixup(0.0, 0.0, 10) is None
    mixing = build_timm_mixup(0.8, 1.0, 10, switch_prob=0.5, label_smoothing=0.1)
    assert mixing.mixup.switch_prob == 0.5 and mixing.mixup.mix_prob == 1.0
    np.random.seed(0)
    images, targets = mixing(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert targets.shape == (4, 10)
    torch.testing.assert_close(targets.sum(-1), torch.ones(4))
    assert float(targets.min()) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="even"):
        mixing(torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 2]))


def test_fused_to_tensor_and_normalize_gives_timms_values_bit_for_bit():
    """The training transform's MaybeToTensor + Normalize pair is replaced by one pass with the same float32
    arithmetic: the same tensors to the last bit, on real photos of several sizes, and whole-pipeline outputs equal to
    timm's create_transform under the same seeds."""
    from sklearn.datasets import load_sample_images
    from timm.data import create_transform
    from timm.data.transforms import MaybeToTensor
    from torchvision import transforms

    from nasvit_hf.training.timm_data import ToNormalizedTensor

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pair = transforms.Compose([MaybeToTensor(), transforms.Normalize(mean, std)])
    fused = ToNormalizedTensor(mean, std)
    for array in load_sample_images().images:
        for size in [(224, 224), (331, 287), (17, 5)]:
            image = Image.fromarray(array).resize(size)
            ours = fused(image)
            assert ours.is_contiguous() and torch.equal(ours, pair(image))
    tensor = torch.rand(3, 9, 7)
    assert torch.equal(fused(tensor), pair(tensor))  # other inputs: the pair itself
    ours = build_timm_train_transform(64, SPEC, random_erasing=0.5)
    assert any(isinstance(step, ToNormalizedTensor) for step in ours.transforms[1].transforms)
    reference = create_transform(
        64, is_training=True, scale=(0.08, 1.0), auto_augment=SPEC, interpolation="bicubic", re_prob=0.5,
        re_mode="pixel",
    )  # fmt: skip
    photo = Image.fromarray(load_sample_images().images[1])
    for seed in range(6):
        _seed(seed)
        expected = reference(photo)
        _seed(seed)
        assert torch.equal(ours(photo), expected)
