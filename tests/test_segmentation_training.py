"""Segmentation data, mIoU metric, joint augmentation and the training recipe (learning, checkpoints, resume)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch
from PIL import Image

from nasvit_hf.data import digits_segmentation_labels, load_digits_segmentation_dataset
from nasvit_hf.metrics import metric_path
from nasvit_hf.training.segmentation import (
    SegmentationTrainingConfig,
    SegmentationTransform,
    collate_segmentation_batch,
    load_segmentation_splits,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))


def naive_mean_iou(predictions, references, num_labels, ignore_index=255):
    ious = []
    for label in range(num_labels):
        intersection = union = 0
        for prediction, reference in zip(predictions, references):
            valid = reference != ignore_index
            p, r = (prediction == label) & valid, (reference == label) & valid
            intersection += int((p & r).sum())
            union += int((p | r).sum())
        ious.append(intersection / union if union else np.nan)
    return float(np.nanmean(ious))


def test_mean_iou_metric_matches_a_naive_count():
    rng = np.random.default_rng(0)
    predictions = [rng.integers(0, 4, (13, 17)) for _ in range(3)]
    references = [rng.integers(0, 4, (13, 17)) for _ in range(3)]
    references[0][:4] = 255
    metric = evaluate.load(metric_path("mean_iou"))
    metric.add_batch(predictions=predictions[:2], references=references[:2])
    metric.add_batch(predictions=predictions[2:], references=references[2:])
    result = metric.compute(num_labels=5, ignore_index=255)
    assert result["mean_iou"] == pytest.approx(naive_mean_iou(predictions, references, 5))
    assert np.isnan(result["per_category_iou"][4])  # class 4 occurs nowhere: left out of the mean


def test_mean_iou_metric_rejects_mismatched_shapes_and_labels():
    metric = evaluate.load(metric_path("mean_iou"))
    with pytest.raises(ValueError, match="resize the prediction"):
        metric.compute(predictions=[np.zeros((2, 3))], references=[np.zeros((3, 2))], num_labels=2)
    with pytest.raises(ValueError, match="outside"):
        metric.compute(predictions=[np.zeros((2, 2))], references=[np.full((2, 2), 7)], num_labels=2)
    with pytest.raises(ValueError, match="no local metric"):
        metric_path("nope")


def test_digits_segmentation_data_is_deterministic_and_labelled():
    first = load_digits_segmentation_dataset(num_train=6, num_validation=3, size=48, seed=1)
    second = load_digits_segmentation_dataset(num_train=6, num_validation=3, size=48, seed=1)
    assert len(first["train"]) == 6 and len(first["validation"]) == 3
    for a, b in zip(first["train"], second["train"]):
        assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
        assert np.array_equal(np.asarray(a["annotation"]), np.asarray(b["annotation"]))
    masks = np.stack([np.asarray(example["annotation"]) for example in first["train"]])
    assert masks.shape == (6, 48, 48) and masks.max() <= 10 and (masks > 0).any() and (masks == 0).mean() > 0.5
    assert first["train"][0]["image"].mode == "RGB"
    assert len(digits_segmentation_labels("digits")) == 11 and len(digits_segmentation_labels("foreground")) == 2
    foreground = load_digits_segmentation_dataset(num_train=2, num_validation=1, size=48, label_mode="foreground")
    assert np.asarray(foreground["train"][0]["annotation"]).max() == 1


def test_joint_augmentation_keeps_image_and_mask_aligned():
    config = SegmentationTrainingConfig(crop_size=[24, 20], scale_base=[32, 32], scale_range=[0.5, 2.0], hflip=0.5)
    transform = SegmentationTransform(config, train=True, image_column="image", label_column="annotation")
    # A mask equal to the image's red channel > 127: any misalignment between the two shows up.
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    agreement = []
    for _ in range(20):
        array = (rng.random((32, 40, 3)) > 0.5).astype(np.uint8) * 255
        array = np.repeat(np.repeat(array[::8, ::8], 8, axis=0), 8, axis=1)  # blocky, so resizing keeps edges
        batch = transform({"image": [Image.fromarray(array)], "annotation": [Image.fromarray(array[..., 0] // 255)]})
        pixels, mask = batch["pixel_values"][0], batch["labels"][0]
        assert pixels.shape == (3, 24, 20) and mask.shape == (24, 20)
        red = pixels[0] * 0.229 + 0.485
        inside = mask != 255
        agreement.append(((red > 0.5) == (mask == 1))[inside].float().mean().item())
    # Aligned pairs disagree only along resized block edges; a mirrored image agrees on about 60 % of pixels.
    assert np.mean(agreement) > 0.9 and min(agreement) > 0.8, agreement


def test_transform_rejects_masks_of_another_size():
    config = SegmentationTrainingConfig()
    transform = SegmentationTransform(config, train=False, image_column="image", label_column="annotation")
    with pytest.raises(ValueError, match="every mask must have its image's size"):
        transform({"image": [Image.new("RGB", (30, 20))], "annotation": [Image.new("L", (30, 21))]})


def test_folder_dataset_and_eval_batches_of_mixed_sizes(tmp_path):
    for split, sizes in (("train", [(20, 30), (20, 30)]), ("validation", [(20, 30), (17, 25)])):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
        for index, (height, width) in enumerate(sizes):
            Image.new("RGB", (width, height), (200, 10, 10)).save(tmp_path / split / "images" / f"{index}.jpg")
            Image.new("L", (width, height), 1).save(tmp_path / split / "masks" / f"{index}.png")
    config = SegmentationTrainingConfig(dataset="folder", data_dir=str(tmp_path), num_labels=2)
    train, validation, id2label, label_column = load_segmentation_splits(config)
    assert len(train) == 2 and len(validation) == 2 and id2label == {0: "class_0", 1: "class_1"}
    transform = SegmentationTransform(config, train=False, image_column="image", label_column=label_column)
    batch = collate_segmentation_batch([validation.with_transform(transform)[i] for i in range(2)])
    assert isinstance(batch["pixel_values"], list) and [p.shape[-2:] for p in batch["pixel_values"]] == [
        (20, 30),
        (17, 25),
    ]
    with pytest.raises(ValueError, match="id2label"):
        load_segmentation_splits(SegmentationTrainingConfig(dataset="folder", data_dir=str(tmp_path)))


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="unknown keys"):
        SegmentationTrainingConfig.from_dict({"learning_rte": 1.0})
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        SegmentationTrainingConfig(lr_scheduler_type="step")
    with pytest.raises(ValueError, match="crop_size"):
        SegmentationTrainingConfig(crop_size=[0, 4])


def _recipe_args(output_dir: Path, **overrides) -> list[str]:
    values = {
        "output_dir": str(output_dir),
        "report_to": "none",
        "arch": "smallest",
        "decoder_hidden_size": 32,
        "digits_size": 48,
        "crop_size": [48, 48],
        "scale_base": [48, 48],
        "digits_num_train": 256,
        "digits_num_validation": 48,
        "per_device_train_batch_size": 8,
        "learning_rate": 0.004,
        "logging_steps": 5,
        **overrides,
    }
    args = []
    for key, value in values.items():
        args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return args


def test_training_raises_miou_well_above_the_all_background_baseline(tmp_path):
    import train_segmentation

    # Digit vs background on real digits over real photos, from scratch, a few dozen steps.
    args = _recipe_args(tmp_path, max_steps=30, checkpointing_steps=0, digits_label_mode="foreground")
    summary = train_segmentation.main(args)
    # Baseline: predict background everywhere on the same validation scenes (mIoU = background IoU / 2).
    config = SegmentationTrainingConfig(
        digits_size=48, digits_num_train=256, digits_num_validation=48, digits_label_mode="foreground"
    )
    _, validation, id2label, _ = load_segmentation_splits(config)
    references = [np.asarray(example["annotation"]) for example in validation]
    metric = evaluate.load(metric_path("mean_iou"))
    baseline = metric.compute(
        predictions=[np.zeros_like(r) for r in references], references=references, num_labels=len(id2label)
    )["mean_iou"]
    assert summary["steps"] == 30
    assert baseline < 0.5
    assert summary["mean_iou"] > baseline + 0.15, (summary["mean_iou"], baseline)
    assert summary["per_category_iou"]["digit"] > 0.3
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["mean_iou"] == pytest.approx(summary["mean_iou"])


def test_checkpoint_and_resume_continue_the_step_count(tmp_path):
    import train_segmentation

    common = {"digits_num_train": 32, "digits_num_validation": 4, "checkpointing_steps": 3, "eval_every_steps": 100}
    train_segmentation.main(_recipe_args(tmp_path, max_steps=3, **common))
    assert (tmp_path / "checkpoints" / "step_3").is_dir()
    summary = train_segmentation.main(_recipe_args(tmp_path, max_steps=5, resume_from_checkpoint="latest", **common))
    assert summary["steps"] == 5
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_3", "step_5"]


def _classification_subnet(folder: Path):
    import nasvit_hf
    from nasvit_hf.presets import get_search_space

    torch.manual_seed(0)
    config = nasvit_hf.NASViTConfig(search_space=get_search_space("tiny"), num_labels=10)
    model = nasvit_hf.NASViTForImageClassification(config)
    subnet = model.extract_subnet(config.smallest_arch())
    subnet.save_pretrained(folder)
    return subnet


def test_fine_tuning_a_classification_subnet_says_in_one_line_what_is_expected(tmp_path, caplog):
    from transformers.utils import logging as transformers_logging

    from nasvit_hf.training.segmentation import build_segmentation_model

    subnet = _classification_subnet(tmp_path / "a0")
    config = SegmentationTrainingConfig(model_name_or_path=str(tmp_path / "a0"), decoder_hidden_size=16)
    transformers_logging.enable_propagation()  # transformers' warnings reach caplog too
    try:
        with caplog.at_level("INFO"):
            model = build_segmentation_model(config, {0: "background", 1: "digit"})
    finally:
        transformers_logging.disable_propagation()
    assert model.config.id2label == {0: "background", 1: "digit"} and model.config.num_labels == 2
    backbone = {k: v for k, v in subnet.state_dict().items() if k.startswith("nasvit.")}
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in backbone.items() if k in loaded) and len(backbone) > 10
    messages = [record.getMessage() for record in caplog.records if record.levelname != "DEBUG"]
    assert [m for m in messages if "decode head" in m] == [
        f"{tmp_path / 'a0'}: backbone weights loaded; the decode head (16 tensors) starts from scratch for 2 labels "
        "(expected: fine-tuning a classification subnet for segmentation)"
    ]
    assert not [m for m in messages if "MISSING" in m or "incompatible" in m or "newly initialized" in m], messages


def test_fine_tuning_from_a_folder_missing_backbone_weights_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from nasvit_hf.loading import CheckpointMismatchError
    from nasvit_hf.training.segmentation import build_segmentation_model

    _classification_subnet(tmp_path / "a0")
    weights = load_file(tmp_path / "a0" / "model.safetensors")
    backbone = [key for key in weights if key.startswith("nasvit.") and not key.startswith("nasvit.head.")]
    dropped = sorted(key for key in backbone if key.endswith(".weight"))[0]
    save_file({k: v for k, v in weights.items() if k != dropped}, tmp_path / "a0" / "model.safetensors")
    config = SegmentationTrainingConfig(model_name_or_path=str(tmp_path / "a0"), decoder_hidden_size=16)
    with pytest.raises(CheckpointMismatchError, match=dropped.replace(".", r"\.")):
        build_segmentation_model(config, {0: "background", 1: "digit"})
