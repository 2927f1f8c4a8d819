"""The held-out split carved out of training data (nasvit_hf.data.holdout), its use by search/export
(resolve_evaluation_data), the device choice, and the bundled MNIST data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage

from nasvit_hf.data import HoldoutSplit, carve_holdout, find_holdout
from nasvit_hf.search import DataConfig, load_evaluation_data
from nasvit_hf.search.config import resolve_device
from nasvit_hf.search.evaluation import resolve_evaluation_data
from nasvit_hf.training.data import load_training_splits


def _table(num_per_class=(6, 7, 5)) -> Dataset:
    labels = [label for label, count in enumerate(num_per_class) for _ in range(count)]
    rng = np.random.default_rng(0)
    rng.shuffle(labels)
    return Dataset.from_dict(
        {"value": list(range(len(labels))), "label": labels},
        features=Features({"value": Value("int64"), "label": ClassLabel(num_classes=len(num_per_class))}),
    )


def write_image_folder(root, classes=("cat", "dog", "fox"), per_class=6, size=20, splits=("train",)) -> None:
    """An ImageNet-shaped folder: <root>/<split>/<class>/<n>.png, each class a distinct colour with noise."""
    rng = np.random.default_rng(0)
    for split in splits:
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for n in range(per_class):
                base = np.zeros((size, size, 3), dtype=np.float32)
                base[..., index % 3] = 200
                pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
                PILImage.fromarray(pixels).save(folder / f"{name}_{n}.png")


def test_carve_holdout_is_class_balanced_seeded_and_disjoint():
    table = _table()
    train, held, split = carve_holdout(table, 2, seed=3)
    assert len(held) == 6 and len(train) == len(table) - 6
    assert sorted(np.bincount(held["label"])) == [2, 2, 2]
    assert not set(train["value"]) & set(held["value"])
    assert split.indices == sorted(split.indices) and split.labels == held["label"]
    again = carve_holdout(table, 2, seed=3)[2]
    other = carve_holdout(table, 2, seed=4)[2]
    assert again.indices == split.indices and other.indices != split.indices


def test_carve_holdout_refuses_to_empty_a_class():
    with pytest.raises(ValueError, match="every training image of class 2"):
        carve_holdout(_table(), 5, seed=0)
    with pytest.raises(ValueError, match="holdout_per_class must be >= 1"):
        carve_holdout(_table(), 0, seed=0)


def test_holdout_round_trip_and_mismatch_detection(tmp_path):
    table = _table()
    _, _, split = carve_holdout(table, 1, seed=0, source={"dataset": "toy"})
    split.save(tmp_path)
    loaded = HoldoutSplit.load(tmp_path / "holdout.json")
    assert loaded == split
    held, rest = loaded.select(table)
    assert len(held) == 3 and len(rest) == len(table) - 3
    with pytest.raises(ValueError, match="carved from 18 training rows"):
        loaded.select(table.select(range(10)))
    shuffled = table.select(list(reversed(range(len(table)))))
    if [shuffled[i]["label"] for i in split.indices] != split.labels:
        with pytest.raises(ValueError, match="labels at the held-out rows differ"):
            loaded.select(shuffled)
    (tmp_path / "bad.json").write_text(json.dumps({"per_class": 1}))
    with pytest.raises(ValueError, match="not a held-out split file"):
        HoldoutSplit.load(tmp_path / "bad.json")


def test_image_folder_holdout_records_file_ids_and_search_uses_it(tmp_path):
    write_image_folder(tmp_path / "data")
    splits = load_training_splits(
        "imagefolder", validation_split=None, data_dir=str(tmp_path / "data"), holdout_per_class=2, holdout_seed=1
    )
    holdout = splits.holdout
    assert len(splits.train) == 12 and len(splits.holdout_images) == 6
    assert all(file_id.startswith("train/") and file_id.endswith(".png") for file_id in holdout.file_ids)
    run = tmp_path / "run"
    holdout.save(run)
    (run / "final").mkdir()
    assert find_holdout(run / "final") == run / "holdout.json"
    # search finds it beside the supernet and ranks on exactly those images, calibrating on the others
    data_config = resolve_evaluation_data(
        DataConfig(dataset="digits", batch_size=4, calibration_batches=2), run / "final"
    )
    assert data_config.dataset == "imagefolder" and data_config.holdout == str(run / "holdout.json")
    data = load_evaluation_data(data_config)
    assert len(data.evaluation) == 6 and data.num_labels == 3
    assert sorted(data.evaluation.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert "held out of 'train' (2 per class, seed 1)" in data.description
    # the same folder moved elsewhere: named with --data_dir, checked file by file
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    data_config = resolve_evaluation_data(
        DataConfig(data_dir=str(moved), batch_size=4, calibration_batches=2), run / "final", explicit={"data_dir"}
    )
    assert len(load_evaluation_data(data_config).evaluation) == 6
    # a different folder with as many images is refused
    for path in sorted((moved / "train" / "cat").glob("*.png"))[:1]:
        path.rename(path.with_name("zz_" + path.name))
    with pytest.raises(ValueError, match="image files at the held-out rows differ|labels at the held-out rows"):
        load_evaluation_data(data_config)


def test_search_refuses_to_rank_on_the_training_split(tmp_path):
    supernet = tmp_path / "run" / "final"
    supernet.mkdir(parents=True)
    record = {"dataset": "imagefolder", "data_dir": str(tmp_path / "data"), "train_split": "train"}
    (tmp_path / "run" / "training_config.json").write_text(json.dumps(record))
    config = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "data"), evaluation_split="train")
    with pytest.raises(ValueError, match="trained on split 'train'.*held out of training"):
        resolve_evaluation_data(config, supernet)
    held_out = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "data"), evaluation_split="validation")
    assert resolve_evaluation_data(held_out, supernet) == held_out


def test_missing_split_and_missing_data_are_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="split 'search' is not in dataset 'imagefolder'.*holdout_per_class"):
        write_image_folder(tmp_path / "data")
        load_evaluation_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "data")))
    with pytest.raises(ValueError, match="is not a folder: name the image folder"):
        load_evaluation_data(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "nowhere")))


def test_resolve_device_defaults_to_what_exists_and_rejects_absent_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == "cpu" and resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device is 'cuda', but this machine has 0 CUDA device.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu7")


def test_bundled_mnist_has_5000_images_of_28_pixels():
    from nasvit_hf.data import load_mnist_5k_dataset

    train = load_mnist_5k_dataset()["train"]
    assert len(train) == 5000 and train.features["label"].names == [str(i) for i in range(10)]
    assert train[0]["image"].size == (28, 28) and np.bincount(train["label"]).tolist() == [500] * 10
    assert isinstance(train.features["image"], Image)


def test_search_recalibrates_through_the_training_augmentation_its_training_record_names(tmp_path):
    """A run trained with calibration_transform: training records it; search and extraction then recalibrate BN on
    training images through that run's training augmentation (at its image_size, the same tensors for every
    resolution and every load), and the description (the model card's) says so."""
    supernet = tmp_path / "run" / "final"
    supernet.mkdir(parents=True)
    record = {"dataset": "digits", "train_split": "train", "calibration_transform": "training", "image_size": 48,
              "data_pipeline": "torchvision", "randaugment_num_ops": 1, "random_erasing": 0.25, "seed": 3}  # fmt: skip
    (tmp_path / "run" / "training_config.json").write_text(json.dumps(record))
    config = resolve_evaluation_data(DataConfig(dataset="digits", batch_size=4, calibration_batches=2), supernet)
    assert config.calibration_transform == "training"
    assert config.training_augmentation == {key: record[key] for key in record if key not in {"dataset", "train_split",
                                            "calibration_transform", "seed"}}  # fmt: skip
    data = load_evaluation_data(config, image_size=64)
    pixels = data.calibration.pixel_values(32)
    assert pixels.shape == (8, 3, 48, 48) and data.calibration.pixel_values(64) is pixels
    torch.testing.assert_close(load_evaluation_data(config, image_size=64).calibration.pixel_values(16), pixels)
    assert data.evaluation.pixel_values(32).shape[-1] == 32  # ranking images: the evaluation processor
    assert data.calibration_transform.startswith("the training augmentation (torchvision: random resized crop 48 px")
    assert "random erasing 0.25" in data.calibration_transform
    # the command line wins over the record
    explicit = DataConfig(dataset="digits", batch_size=4, calibration_batches=2, calibration_transform="evaluation")
    assert resolve_evaluation_data(explicit, supernet).training_augmentation is None
    assert load_evaluation_data(explicit).calibration_transform == "the evaluation preprocessing"


def test_training_calibration_without_a_training_record_is_a_clear_error(tmp_path):
    supernet = tmp_path / "final"
    supernet.mkdir()
    (tmp_path / "training_config.json").write_text("[1, 2]")  # not a record: ignored
    config = DataConfig(dataset="digits", calibration_transform="training")
    with pytest.raises(ValueError, match="no training record.*data.training_augmentation.*evaluation"):
        resolve_evaluation_data(config, supernet)
    bad = DataConfig(dataset="digits", calibration_transform="training", training_augmentation={"learning_rate": 1})
    with pytest.raises(ValueError, match="not augmentation settings"):
        load_evaluation_data(bad)
