"""A held-out split carved out of the training data: the images that search ranks subnets on, never trained on.

The paper (Appendix C.1) ranks subnets on a few images per class of ImageNet's *training* set that supernet training
never saw (the reference README: 5 per class). `carve_holdout(dataset, per_class, seed)` picks `per_class` images of
every class, class-balanced and seeded, and returns the rest for training together with a `HoldoutSplit`: the row
indices, the images' file ids where the data has files (an `imagefolder`'s paths), the seed, and where the data came
from. Training saves it as `holdout.json` in its output folder and beside the final supernet; search and extraction find
it there (`find_holdout`), rebuild exactly that split (`HoldoutSplit.select`, which checks that the data is the one
training saw), and refuse to rank subnets on images the supernet was trained on.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["HOLDOUT_FILE", "HoldoutSplit", "carve_holdout", "find_holdout", "image_file_ids"]

HOLDOUT_FILE = "holdout.json"
_FORMAT = 1


@dataclass
class HoldoutSplit:
    """Which training rows were held out. `indices` are row positions in the training split as loaded (before any
    `max_train_samples` cap); `file_ids` (same order) name the image files where the data has them."""

    per_class: int
    seed: int
    label_column: str
    image_column: str
    source: dict[str, Any]  # dataset, dataset_config, data_dir, split, num_rows
    indices: list[int]
    labels: list[int]
    file_ids: list[str] | None = None
    format: int = _FORMAT
    notes: str = field(
        default="Rows of the training split held out of supernet training (class-balanced, seeded); search and "
        "export rank subnets on them."
    )

    def __post_init__(self):
        """Refuse a split that cannot be what it claims (a damaged or hand-edited holdout.json)."""
        num_rows = self.source.get("num_rows") if isinstance(self.source, dict) else None
        problems = []
        if not isinstance(num_rows, int) or isinstance(num_rows, bool) or num_rows < 1:
            problems.append(f"source.num_rows is {num_rows!r}")
        for key in ("dataset", "dataset_config", "data_dir", "split"):
            value = self.source.get(key) if isinstance(self.source, dict) else None
            if value is not None and not isinstance(value, str):
                problems.append(f"source.{key} is {value!r}")
        if self.per_class < 1:
            problems.append(f"per_class is {self.per_class}")
        if len(self.labels) != len(self.indices):
            problems.append(f"{len(self.labels)} labels for {len(self.indices)} indices")
        if self.file_ids is not None and len(self.file_ids) != len(self.indices):
            problems.append(f"{len(self.file_ids)} file ids for {len(self.indices)} indices")
        if len(set(self.indices)) != len(self.indices):
            problems.append("repeated indices")
        if self.indices and not problems and not 0 <= min(self.indices) <= max(self.indices) < num_rows:
            problems.append(f"indices outside the {num_rows} training rows [0, {num_rows})")
        if any(label < 0 for label in self.labels):
            problems.append("negative labels")
        if problems:
            raise ValueError(f"not a valid held-out split: {'; '.join(problems)}")

    def __len__(self) -> int:
        return len(self.indices)

    # ---------------------------------------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / HOLDOUT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{HOLDOUT_FILE}.tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> HoldoutSplit:
        path = Path(path)
        if path.is_dir():
            path = path / HOLDOUT_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"held-out split file {str(path)!r} does not exist.") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{str(path)!r} is not a held-out split file (invalid JSON: {error}).") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{str(path)!r} is not a held-out split file (it holds a {type(raw).__name__}).")
        missing = [name for name in ("per_class", "seed", "indices", "labels", "source") if name not in raw]
        if missing or raw.get("format") != _FORMAT:
            raise ValueError(f"{str(path)!r} is not a held-out split file of format {_FORMAT} (missing {missing}).")
        import typing

        from ..config_system import coerce_value

        hints = typing.get_type_hints(cls)
        try:  # types checked by the config system (lists of ints, a source mapping, ...), then __post_init__
            values = {
                key: coerce_value(key, value, hints[key], path.name) for key, value in raw.items() if key in hints
            }
            return cls(**values)
        except ValueError as error:
            raise ValueError(
                f"{str(path)!r} is damaged ({error}): rerun the training that wrote it, or name the data to rank on "
                "without it."
            ) from None

    # ---------------------------------------------------------------------------------------------------------------
    def check_matches(self, dataset) -> None:
        """Raise a ValueError unless `dataset` (the training split) is the data this split was carved from: same
        number of rows, same labels at the held-out rows, and the same files where file ids were recorded."""
        where = f"the held-out split (seed {self.seed}, {self.per_class} per class of {self.source.get('dataset')!r})"
        if len(dataset) != self.source.get("num_rows"):
            raise ValueError(
                f"{where} was carved from {self.source.get('num_rows')} training rows, the data given has "
                f"{len(dataset)}: point search and extraction at the data the supernet was trained on."
            )
        labels = [int(v) for v in dataset.select(self.indices)[self.label_column]] if self.indices else []
        if labels != list(self.labels):
            raise ValueError(f"{where} does not match this data: the labels at the held-out rows differ.")
        if self.file_ids is not None:
            found = image_file_ids(dataset, self.image_column, self.indices, self.source.get("data_dir"))
            # A path outside data_dir (a datasets cache made before the folder moved) matches by its tail.
            same = found is None or (
                len(found) == len(self.file_ids)
                and all(a == b or a.endswith("/" + b) for a, b in zip(found, self.file_ids))
            )
            if not same:
                raise ValueError(f"{where} does not match this data: the image files at the held-out rows differ.")

    def select(self, dataset):
        """(held-out rows, training rows) of `dataset`, after `check_matches`."""
        self.check_matches(dataset)
        keep = np.ones(len(dataset), dtype=bool)
        keep[self.indices] = False
        return dataset.select(self.indices), dataset.select(np.flatnonzero(keep))


def image_file_ids(dataset, image_column: str, indices: list[int], data_dir: str | None = None) -> list[str] | None:
    """The file paths (relative to `data_dir` when under it) of the images at `indices`, or None when the images are
    not files (in-memory arrays, bytes of a Hub dataset)."""
    from datasets import Image

    feature = dataset.features.get(image_column)
    if not isinstance(feature, Image) or not indices:
        return None
    import pyarrow.compute as pc

    # Through Arrow, a slice at a time: no per-row formatting, and embedded image bytes are never all in memory.
    selected = dataset.select(indices).cast_column(image_column, Image(decode=False)).with_format("arrow")
    paths = []
    for start in range(0, len(selected), 1024):
        paths.extend(pc.struct_field(selected[start : start + 1024][image_column], "path").to_pylist())
    if any(path is None for path in paths):
        return None
    if data_dir:
        root = Path(data_dir).resolve()
        relative = []
        for path in paths:
            resolved = Path(path).resolve()
            relative.append(
                resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else Path(path).as_posix()
            )
        return relative
    return [Path(path).as_posix() for path in paths]


def carve_holdout(
    dataset,
    per_class: int,
    seed: int,
    *,
    label_column: str = "label",
    image_column: str = "image",
    source: dict[str, Any] | None = None,
):
    """Split `dataset` (a `datasets.Dataset`, the training split) into (training rows, held-out rows, HoldoutSplit):
    `per_class` rows of every class drawn with `numpy.random.default_rng(seed)`. A class with no more than
    `per_class` rows is an error (nothing of it would be left to train on)."""
    if per_class < 1:
        raise ValueError(f"holdout_per_class must be >= 1, got {per_class}.")
    if label_column not in dataset.column_names:
        raise ValueError(f"column {label_column!r} is not in the dataset; it has {dataset.column_names}.")
    labels = np.asarray(dataset.with_format("arrow")[label_column].to_numpy(), dtype=np.int64)
    rng = np.random.default_rng(seed)
    held: list[int] = []
    # Rows grouped by label in one stable sort (each group in row order, as np.flatnonzero(labels == label) lists
    # them): O(n log n) instead of one pass over every row per class (1,000 passes over 1.28 M rows for ImageNet).
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    for label, start, stop in zip(classes, starts, [*starts[1:], len(order)]):
        rows = order[start:stop]
        if len(rows) <= per_class:
            raise ValueError(
                f"holdout_per_class={per_class} would hold out every training image of class {int(label)} "
                f"({len(rows)} images): lower holdout_per_class."
            )
        held.extend(rng.choice(rows, size=per_class, replace=False).tolist())
    held.sort()
    keep = np.ones(len(labels), dtype=bool)
    keep[held] = False
    rest = np.flatnonzero(keep)
    source = dict(source or {})
    source["num_rows"] = len(dataset)
    split = HoldoutSplit(
        per_class=per_class,
        seed=seed,
        label_column=label_column,
        image_column=image_column,
        source=source,
        indices=held,
        labels=labels[held].tolist(),
        file_ids=image_file_ids(dataset, image_column, held, source.get("data_dir")),
    )
    return dataset.select(rest), dataset.select(held), split


def find_holdout(supernet_dir: str | os.PathLike) -> Path | None:
    """The `holdout.json` of a supernet trained with `holdout_per_class`: in its folder, or in the training output
    folder above it (`<output_dir>/final`, `<output_dir>/final_ema`). None when there is none."""
    folder = Path(supernet_dir)
    for candidate in (folder / HOLDOUT_FILE, folder.parent / HOLDOUT_FILE):
        if candidate.is_file():
            return candidate
    return None
