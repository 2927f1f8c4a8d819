"""The imagefolder index: datasets' own splits, reopened while the folder is unchanged, rebuilt when it changes,
built by one process of a machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from nasvit_hf.data.imagefolder import folder_digest, load_imagefolder


def write_folder(root: Path, classes: int = 5, per_class: int = 4) -> Path:
    """train/<class>/*.JPEG and val/<class>/*.JPEG of small random images (ImageNet's layout)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for index in range(classes):
            folder = root / split / f"n{index:08d}"
            folder.mkdir(parents=True)
            for item in range(count):
                pixels = rng.integers(0, 255, (int(rng.integers(8, 20)), int(rng.integers(8, 20)), 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"n{index:08d}_{item}.JPEG")
    return root


def rows(split) -> list[tuple[str, int]]:
    raw = split.cast_column("image", datasets.Image(decode=False))
    return [(row["image"]["path"], row["label"]) for row in raw]


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "data")


def test_the_index_gives_datasets_own_splits_and_is_reopened_while_the_folder_is_unchanged(folder, tmp_path):
    expected = datasets.load_dataset("imagefolder", data_dir=str(folder))
    first = load_imagefolder(folder, cache_dir=tmp_path / "cache")
    assert first.built and first.path.is_file() and first.num_files == 30
    second = load_imagefolder(folder, cache_dir=tmp_path / "cache")
    assert not second.built
    assert set(second.splits) == set(expected) == {"train", "validation"}
    for name in expected:
        assert rows(second.splits[name]) == rows(expected[name])
        assert second.splits[name].features == expected[name].features
    image = second.splits["train"][3]["image"]
    assert np.array_equal(np.asarray(image), np.asarray(expected["train"][3]["image"]))


def test_a_changed_folder_rebuilds_the_index(folder, tmp_path):
    cache = tmp_path / "cache"
    load_imagefolder(folder, cache_dir=cache)
    extra = folder / "train" / "n00000001" / "extra.JPEG"
    Image.fromarray(np.zeros((9, 9, 3), dtype=np.uint8)).save(extra)
    changed = load_imagefolder(folder, cache_dir=cache)
    assert changed.built and len(changed.splits["train"]) == 21
    assert str(extra) in {path for path, _ in rows(changed.splits["train"])}
    (folder / "train" / "n00000001" / "extra.JPEG").unlink()
    (folder / "train" / "metadata.txt").write_text("a file that is not an image: its size and time count")
    assert load_imagefolder(folder, cache_dir=cache).built
    assert not load_imagefolder(folder, cache_dir=cache).built


@pytest.mark.parametrize(
    "damage",
    [
        lambda record: "not json",
        lambda record: json.dumps([record]),
        lambda record: json.dumps({**record, "splits": {"train": ["/etc/passwd"]}}),
        lambda record: json.dumps({**record, "splits": {"train": [record["splits"]["train"][0] + ".x.arrow"]}}),
        lambda record: json.dumps({**record, "version": 0}),
    ],
    ids=["not-json", "not-a-mapping", "not-arrow", "missing-arrow", "old-version"],
)
def test_a_damaged_index_is_rebuilt_not_trusted(folder, tmp_path, damage):
    first = load_imagefolder(folder, cache_dir=tmp_path / "cache")
    first.path.write_text(damage(json.loads(first.path.read_text())))
    again = load_imagefolder(folder, cache_dir=tmp_path / "cache")
    assert again.built and len(again.splits["train"]) == 20


def test_the_digest_lists_names_not_image_contents(folder):
    digest, count = folder_digest(folder)
    image = next((folder / "train" / "n00000000").iterdir())
    Image.fromarray(np.full((5, 5, 3), 7, dtype=np.uint8)).save(image, format="JPEG")
    assert folder_digest(folder) == (digest, count)  # rows hold paths: a re-encoded image is still that row
    image.rename(image.with_name("renamed.JPEG"))
    assert folder_digest(folder)[0] != digest


@pytest.mark.slow
def test_concurrent_processes_build_the_index_once(folder, tmp_path):
    """As the processes of a multi-GPU run start at once: one builds under the file lock, the others read it."""
    code = (
        "import sys; from nasvit_hf.data.imagefolder import load_imagefolder; "
        "print('built' if load_imagefolder(sys.argv[1], cache_dir=sys.argv[2]).built else 'read')"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(folder), str(tmp_path / "cache")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=240) for process in processes]
    assert all(process.returncode == 0 for process in processes), [error[-2000:] for _, error in outputs]
    assert sorted(output.strip() for output, _ in outputs) == ["built", "read", "read"]


def _exif_rotated_jpeg(path: Path) -> None:
    pixels = np.zeros((6, 10, 3), dtype=np.uint8)
    pixels[:, :5] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    image.save(path, exif=exif)


def test_training_items_of_an_image_folder_are_what_datasets_rows_give(folder, tmp_path):
    """ImageClassificationDataset reads path-backed images straight from the Arrow table (after a selection too):
    the same decoded image (EXIF orientation applied, as datasets does) and label as dataset[i]; the per-image seeded
    augmentation is the same in the main process (states restored) and in DataLoader workers (not restored)."""
    import torch
    from torch.utils.data import DataLoader

    from nasvit_hf.training.data import ImageClassificationDataset, collate_image_batch
    from nasvit_hf.training.timm_data import build_timm_train_transform

    _exif_rotated_jpeg(folder / "train" / "n00000002" / "rotated.JPEG")
    train = load_imagefolder(folder, cache_dir=tmp_path / "cache").splits["train"]
    rotated = next(index for index, (path, _) in enumerate(rows(train)) if path.endswith("rotated.JPEG"))
    split = train.select([rotated, 3, 0, 7, 12, 19])

    def raw_image(image):
        return torch.from_numpy(np.asarray(image).copy())

    plain = ImageClassificationDataset(split, raw_image)
    assert plain._paths is not None  # the fast path is taken
    for index in range(len(split)):
        row = split[index]
        assert (
            torch.equal(plain[index]["pixel_values"], raw_image(row["image"]))
            and plain[index]["labels"] == row["label"]
        )
    assert plain[0]["pixel_values"].shape[:2] == (10, 6)  # the EXIF-rotated image, as datasets decodes it

    transform = build_timm_train_transform(16, "rand-n1-m1-mstd0.5-inc1", random_erasing=0.5)
    augmented = ImageClassificationDataset(split, transform, seed=3)
    state = (np.random.get_state()[1].copy(), torch.random.get_rng_state())
    main = torch.stack([augmented[index]["pixel_values"] for index in range(len(split))])
    assert np.array_equal(np.random.get_state()[1], state[0]) and torch.equal(torch.random.get_rng_state(), state[1])
    loader = DataLoader(augmented, batch_size=3, num_workers=2, collate_fn=collate_image_batch)
    torch.testing.assert_close(torch.cat([batch["pixel_values"] for batch in loader]), main, rtol=0, atol=0)


def test_datasets_with_embedded_images_keep_the_row_path():
    from nasvit_hf.data import load_bundled_dataset
    from nasvit_hf.training.data import ImageClassificationDataset

    digits = load_bundled_dataset("digits")["train"].select(range(4))
    dataset = ImageClassificationDataset(digits, lambda image: np.asarray(image))
    assert dataset._paths is None
    assert np.array_equal(dataset[2]["pixel_values"], np.asarray(digits[2]["image"]))


def test_persistent_workers_follow_the_epoch(folder, tmp_path):
    """With workers that stay up between epochs, set_epoch still reaches them (the epoch lives in shared memory):
    each epoch's augmentation is the one the main process computes for that epoch, and epochs differ."""
    import torch
    from torch.utils.data import DataLoader

    from nasvit_hf.training.data import ImageClassificationDataset, collate_image_batch
    from nasvit_hf.training.timm_data import build_timm_train_transform

    split = load_imagefolder(folder, cache_dir=tmp_path / "cache").splits["train"].select(range(6))
    dataset = ImageClassificationDataset(split, build_timm_train_transform(16, "rand-n1-m1-mstd0.5-inc1"), seed=1)
    loader = DataLoader(dataset, batch_size=3, num_workers=2, persistent_workers=True, collate_fn=collate_image_batch)
    seen = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        loaded = torch.cat([batch["pixel_values"] for batch in loader])
        expected = torch.stack([dataset[index]["pixel_values"] for index in range(len(dataset))])
        torch.testing.assert_close(loaded, expected, rtol=0, atol=0)
        seen.append(loaded)
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
