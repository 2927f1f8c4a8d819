"""Pipeline choices: torchvision vs timm augmentation, targets (mixup, label smoothing), final model folders."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from nasvit_hf.training.pipeline import (
    build_eval_processor,
    build_target_transform,
    build_training_transform,
    smooth_targets,
)
from nasvit_hf.training.timm_data import find_rand_augment

from ._training_helpers import micro_model


def test_pipelines_are_chosen_by_name():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    timm = build_training_transform("timm", 32, auto_augment="rand-n1-m1-mstd0.5-inc1")
    assert find_rand_augment(timm) is not None and timm(image).shape == (3, 32, 32)
    digits = build_training_transform("torchvision", 32, randaugment_num_ops=1, randaugment_magnitude=1)
    assert find_rand_augment(digits) is None and digits(image).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="data_pipeline: timm"):
        build_training_transform("torchvision", 32, auto_augment="rand-n1-m1")
    with pytest.raises(ValueError, match="data_pipeline"):
        build_training_transform("albumentations", 32)


def test_label_smoothing_of_indices_and_of_mixed_targets():
    torch.testing.assert_close(smooth_targets(torch.tensor([2]), 4, 0.1), torch.tensor([[0.025, 0.025, 0.925, 0.025]]))
    soft = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(smooth_targets(soft, 4, 0.1), torch.tensor([[0.475, 0.475, 0.025, 0.025]]))
    assert build_target_transform("timm", 4) is None
    smoothing = build_target_transform("torchvision", 4, label_smoothing=0.1)
    pixels = torch.randn(2, 3, 8, 8)
    same, targets = smoothing(pixels, torch.tensor([0, 3]))
    assert same is pixels and targets.shape == (2, 4) and float(targets[1, 3]) == pytest.approx(0.925)
    mixing = build_target_transform("timm", 4, mixup_alpha=0.01, cutmix_alpha=0.01, label_smoothing=0.1)
    _, targets = mixing(pixels, torch.tensor([0, 3]))
    torch.testing.assert_close(targets.sum(-1), torch.ones(2))
    assert float(targets.min()) >= 0.025 - 1e-6
    with pytest.raises(ValueError, match="timm Mixup settings"):
        build_target_transform("torchvision", 4, mixup_alpha=0.2, mixup_switch_prob=0.9)


def test_final_folder_holds_the_ema_and_raw_weights_beside_it(tmp_path):
    from types import SimpleNamespace

    from nasvit_hf import NASViTForImageClassification
    from nasvit_hf.training.classification import save_final_supernets

    model, ema_model = micro_model(seed=0), micro_model(seed=1)
    processor = build_eval_processor("reference", 32)
    saved = save_final_supernets(tmp_path, model, SimpleNamespace(module=ema_model), processor)
    assert saved == {"final_model": str(tmp_path / "final"), "raw_model": str(tmp_path / "final" / "raw")}
    final = NASViTForImageClassification.from_pretrained(saved["final_model"])
    raw = NASViTForImageClassification.from_pretrained(saved["raw_model"])
    for name, tensor in ema_model.state_dict().items():
        assert torch.equal(final.state_dict()[name], tensor)
        assert torch.equal(raw.state_dict()[name], model.state_dict()[name])
    assert AutoImageProcessor.from_pretrained(saved["final_model"]).crop_mode == "reference"
    assert AutoImageProcessor.from_pretrained(saved["raw_model"]).crop_mode == "reference"
    assert save_final_supernets(tmp_path / "no_ema", model) == {"final_model": str(tmp_path / "no_ema" / "final")}


@pytest.mark.parametrize("mode", ["evaluation", "training"])
def test_bn_calibration_images_come_through_the_chosen_transform(mode):
    """With "evaluation", training images through the evaluation processor at the arch's resolution; "training" (the
    reference): through the training augmentation at image_size (the model resizes), the same tensors every time."""
    from nasvit_hf.training import TrainingConfig
    from nasvit_hf.training.classification import build_classification_data, load_classification_splits

    config = TrainingConfig(
        max_train_samples=8, max_eval_samples=4, per_device_train_batch_size=4, calibration_transform=mode
    )
    data = build_classification_data(config, load_classification_splits(config), 64, 64)
    calibration, _ = data.eval_loaders(32)
    first = next(iter(calibration))["pixel_values"]
    torch.testing.assert_close(calibration.dataset[0]["pixel_values"], calibration.dataset[0]["pixel_values"])
    if mode == "training":
        assert first.shape == (4, 3, 64, 64)
        assert calibration.dataset.transform is data.train_dataset.transform and calibration.dataset.seed is not None
    else:
        assert first.shape == (4, 3, 32, 32) and calibration.dataset.seed is None
