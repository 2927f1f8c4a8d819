"""The ImageNet recipe end to end on an ImageNet-shaped folder (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) with two
local timm-format teachers, timm augmentation, EMA and the reference evaluation protocol; then the conflict sweep."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ._timm_teachers import write_timm_teacher
from ._training_helpers import micro_space

ROOT = Path(__file__).resolve().parents[1]
WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]


def write_imagenet_folder(root: Path, per_class_train: int = 7, per_class_val: int = 2) -> Path:
    # 7 training images per class: the ImageNet config holds 5 of each class out for search (holdout_per_class).
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class_train), ("val", per_class_val)):
        for index, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for item in range(count):
                height, width = int(rng.integers(40, 72)), int(rng.integers(40, 72))
                pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
                pixels[..., index % 3] //= 2  # a little class signal
                name = f"{wnid}_{item}.JPEG" if split == "train" else f"ILSVRC2012_val_{index:04d}{item:04d}.JPEG"
                Image.fromarray(pixels).save(folder / name, format="JPEG")
    return root


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("ACCELERATE_CONFIG_FILE", None)
    return env


def _run(command, timeout=300):
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(
            f"{command[:4]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


@pytest.fixture(scope="module")
def imagenet_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_recipe")
    data = write_imagenet_folder(root / "imagenet")
    teachers = [
        write_timm_teacher(root / "teacher_a", WNIDS, seed=0, input_size=48),
        write_timm_teacher(root / "teacher_b", WNIDS, seed=1, input_size=40, mean=(0.5,) * 3, std=(0.5,) * 3),
    ]
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(micro_space(resolutions=(32, 48))))
    overrides = {
        "--dataset": "imagefolder",
        "--data_dir": data,
        "--validation_split": "validation",  # datasets names the val/ folder "validation"
        "--search_space": json.dumps(micro_space(resolutions=(32, 48))),
        "--image_size": 40,
        "--per_device_train_batch_size": 4,
        "--per_device_eval_batch_size": 8,
        "--num_workers": 0,
        "--calibration_batches": 1,
        "--max_steps": 4,  # 2 epochs of 2 steps (8 training images once 20 are held out)
        "--logging_steps": 1,
        "--checkpointing_steps": "null",
        "--report_to": "none",
        "--progress_bar": "false",
        "--num_threads": 1,
        "--teachers": ",".join(str(t) for t in teachers),
        "--output_dir": root / "run",
    }
    command = [sys.executable, "-m", "accelerate.commands.launch", str(ROOT / "recipes" / "train.py")]
    command += ["--config", str(ROOT / "recipes" / "configs" / "imagenet_reference.yaml")]
    for key, value in overrides.items():
        command += [key, str(value)]
    result = _run(command)
    return root, result


@pytest.mark.slow
def test_reference_recipe_trains_on_an_imagenet_folder_with_two_teachers_and_ema(imagenet_run):
    root, result = imagenet_run
    run = root / "run"
    assert "Trained 4 sandwich steps" in result.stdout
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(0.0 <= r["conflict_ratio"] <= 1.0 and 0.0 <= r["conflict_ratio_after"] <= 1.0 for r in records)
    config = json.loads((run / "training_config.json").read_text())
    assert config["data_pipeline"] == "timm" and config["auto_augment"] == "rand-n1-m1-mstd0.5-inc1"
    assert len(config["teachers"]) == 2 and config["teacher_temperature"] == 0.2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["validated_weights"] == "ema" and set(summary["validation"]) == {"smallest", "largest"}

    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import nasvit_hf  # noqa: F401

    final = AutoModelForImageClassification.from_pretrained(run / "final")
    raw = AutoModelForImageClassification.from_pretrained(run / "final" / "raw")
    assert final.config.id2label[0] == WNIDS[0] and final.config.num_labels == 4
    assert any(not torch.equal(a, b) for a, b in zip(final.state_dict().values(), raw.state_dict().values()))
    processor = AutoImageProcessor.from_pretrained(run / "final")
    assert processor.crop_mode == "reference" and processor.resolution == 48


@pytest.mark.slow
def test_conflict_sweep_reports_per_layer_ratios_for_the_saved_supernet(imagenet_run):
    root, _ = imagenet_run
    report = root / "conflicts.json"
    command = [sys.executable, str(ROOT / "recipes" / "conflict_ratio.py"), "--supernet", str(root / "run" / "final")]
    command += ["--config", str(root / "run" / "training_config.json"), "--max_batches", "2", "--output", str(report)]
    result = _run(command)
    data = json.loads(report.read_text())
    assert data["num_batches"] == 2 and data["num_images"] == 8
    assert 0.0 <= data["conflict_ratio_before"] <= 1.0 and data["per_layer"]
    assert "conflict ratio" in result.stdout


@pytest.mark.slow
def test_table4_snapshots_of_one_run_give_the_conflict_table(imagenet_run):
    """snapshot_epochs: table4 keeps epochs 1, 90, 180, 270, 360 of 360 scaled to the run (2 epochs: 1 and 2);
    conflict_ratio.py --snapshots sweeps each with the same images and archs and writes the table."""
    root, _ = imagenet_run
    run = root / "run"
    assert sorted(path.name for path in (run / "snapshots").iterdir()) == ["epoch_1", "epoch_2"]
    command = [sys.executable, str(ROOT / "recipes" / "conflict_ratio.py"), "--snapshots", str(run)]
    result = _run(command + ["--max_batches", "1"])
    table = json.loads((run / "conflict_ratio_table.json").read_text())
    assert [row["epoch"] for row in table["epochs"]] == [1, 2]
    assert all(0.0 <= row["before"] <= 1.0 for row in table["epochs"])
    assert (run / "snapshots" / "epoch_2" / "conflict_ratio.json").is_file()
    assert "epoch | conflict ratio before" in result.stdout
