"""`datasets`' `imagefolder` at ImageNet scale: the loaded splits indexed once per machine and folder state.

`datasets.load_dataset("imagefolder", data_dir=...)` resolves its data files (a glob and pattern match per file) at
every call, even when the Arrow files are cached: about 7 s per 10,000 images here, 12 minutes per million, in every
process of a multi-GPU run. `load_imagefolder` keeps an index of what it returned (the split's Arrow cache files) in
the datasets cache, keyed by the folder's absolute path, and reopens those files (memory-mapped) while the folder is
unchanged. "Unchanged" is a digest of a listing of the folder: every file's path relative to it (images by name;
any other file, e.g. a `metadata.csv`, also by size and modification time), taken with `os.scandir` (a few seconds
per million files when the directory entries are cached). A changed folder, a changed `datasets` version, a missing
Arrow file or an unreadable index rebuilds it through `load_dataset` itself, so rows, splits and labels are always
what `datasets` gives. The build runs under a file lock beside the index: the first process of a machine builds it,
the others wait and read it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["IMAGEFOLDER_INDEX_VERSION", "ImageFolderIndex", "folder_digest", "load_imagefolder"]

logger = logging.getLogger(__name__)

IMAGEFOLDER_INDEX_VERSION = 1
INDEX_FOLDER = "nasvit_hf_imagefolder"
# Files whose names are enough (their contents are read when a row is loaded, never indexed).
_IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".jfif",
    ".jp2", ".j2k", ".ico", ".tga", ".dds", ".eps", ".icns", ".im", ".msp", ".pcx", ".sgi", ".spi", ".xbm", ".blp",
}  # fmt: skip


def folder_digest(root: str | os.PathLike) -> tuple[str, int]:
    """`(sha256 hex digest, number of files)` of a listing of `root`: the sorted relative path of every file below
    it, plus size and modification time for files that are not images. Symbolic links to folders are followed once."""
    root = Path(root)
    entries: list[str] = []
    visited: set[str] = set()

    def walk(folder: str, prefix: str) -> None:
        real = os.path.realpath(folder)
        if real in visited:  # a link back up the tree
            return
        visited.add(real)
        with os.scandir(folder) as iterator:
            for entry in iterator:
                relative = prefix + entry.name
                if entry.is_dir():
                    walk(entry.path, relative + "/")
                elif os.path.splitext(entry.name)[1].lower() in _IMAGE_SUFFIXES:
                    entries.append(relative)
                else:
                    info = entry.stat()
                    entries.append(f"{relative}\0{info.st_size}\0{info.st_mtime_ns}")

    walk(str(root), "")
    entries.sort()
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest(), len(entries)


@dataclass
class ImageFolderIndex:
    """What `load_imagefolder` did: the splits, whether this call built the index, where the index lives."""

    splits: Any  # datasets.DatasetDict
    built: bool
    path: Path
    num_files: int


def _index_path(root: Path, cache_dir: str | os.PathLike | None) -> Path:
    import datasets

    base = Path(cache_dir) if cache_dir is not None else Path(datasets.config.HF_DATASETS_CACHE)
    return base / INDEX_FOLDER / f"{hashlib.sha256(str(root).encode()).hexdigest()[:24]}.json"


def _open_index(path: Path, root: Path, digest: str) -> Any | None:
    """The splits of a valid, current index at `path` (Arrow files memory-mapped), or None."""
    import datasets

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("version") != IMAGEFOLDER_INDEX_VERSION:
        return None
    if record.get("data_dir") != str(root) or record.get("digest") != digest:
        return None
    if record.get("datasets_version") != datasets.__version__:
        return None
    splits = record.get("splits")
    if not isinstance(splits, dict) or not splits:
        return None
    loaded = {}
    for name, files in splits.items():
        if not (isinstance(name, str) and isinstance(files, list) and files):
            return None
        if not all(isinstance(file, str) and file.endswith(".arrow") and os.path.isfile(file) for file in files):
            return None  # e.g. the datasets cache was cleaned
        try:
            parts = [datasets.Dataset.from_file(file) for file in files]
        except (OSError, ValueError):
            return None
        loaded[name] = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return datasets.DatasetDict(loaded)


def load_imagefolder(data_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> ImageFolderIndex:
    """`datasets.load_dataset("imagefolder", data_dir=data_dir)`, through an index while the folder is unchanged
    (see the module docstring). `cache_dir`: where the index lives (default: the datasets cache)."""
    import datasets
    from filelock import FileLock

    from ..utils.io import atomic_write_json, make_dir

    root = Path(data_dir).resolve()
    if not root.is_dir():
        raise ValueError(f"data_dir {str(data_dir)!r} is not a folder: name the image folder (--data_dir).")
    digest, num_files = folder_digest(root)
    path = _index_path(root, cache_dir)
    make_dir(path.parent)
    with FileLock(str(path) + ".lock"):
        splits = _open_index(path, root, digest)
        if splits is not None:
            return ImageFolderIndex(splits, False, path, num_files)
        logger.info("indexing %s (%d files) with datasets' imagefolder; later starts read %s", root, num_files, path)
        splits = datasets.load_dataset("imagefolder", data_dir=str(root))
        files = {name: [item["filename"] for item in split.cache_files] for name, split in splits.items()}
        if all(files.values()):  # in-memory splits (no Arrow files) cannot be indexed
            record = {
                "version": IMAGEFOLDER_INDEX_VERSION,
                "data_dir": str(root),
                "digest": digest,
                "files": num_files,
                "datasets_version": datasets.__version__,
                "splits": files,
            }
            atomic_write_json(path, record)
    return ImageFolderIndex(splits, True, path, num_files)
