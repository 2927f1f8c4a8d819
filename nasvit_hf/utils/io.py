"""Atomic, umask-respecting file and folder writes: the one place the package writes results.

Every result file is written to a temporary sibling and moved into place with `os.replace` (a reader sees the old or
the new file, never half of one; an interrupted run leaves at most a hidden temporary file), and every file and folder
gets the permissions the user's umask gives (`tempfile.mkstemp`/`mkdtemp` alone would give 0600/0700).

Folders a tool creates and may later replace carry a marker file (`write_marker`); `replace_folder` with
`marker=` only ever replaces a folder holding that marker, so an `--overwrite` can never delete a folder the tool did
not make.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "OwnershipError",
    "atomic_file",
    "atomic_write_json",
    "atomic_write_text",
    "apply_umask_modes",
    "current_umask",
    "has_marker",
    "make_dir",
    "replace_folder",
    "staging_folder",
    "temporary_sibling",
    "write_marker",
]


class OwnershipError(FileExistsError):
    """A folder exists and was not made by the tool asked to replace it; the message says what to do."""


def current_umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    return 0o666 & ~current_umask()


def _dir_mode() -> int:
    return 0o777 & ~current_umask()


def make_dir(path: str | os.PathLike) -> Path:
    """`mkdir -p` (modes from the umask, as `os.makedirs` gives)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def apply_umask_modes(folder: str | os.PathLike) -> None:
    """Give every file and folder under `folder` (and `folder` itself) the mode the umask gives a new one (0644 /
    0755 under umask 022). For folders the package has just written with writers that pick their own modes:
    safetensors creates `model.safetensors` 0600, `tempfile` 0600 / 0700. Symbolic links are left alone."""
    file_mode, dir_mode = _file_mode(), _dir_mode()
    os.chmod(folder, dir_mode)
    for root, folders, files in os.walk(folder):
        for name in folders:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), dir_mode)
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), file_mode)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (temporary sibling, fsync, `os.replace`), mode from the umask."""
    path = Path(path)
    make_dir(path.parent)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding=encoding) as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, _file_mode())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> None:
    """`atomic_write_text` of `data` as JSON (floats for numpy scalars and other numbers)."""
    atomic_write_text(path, json.dumps(data, indent=indent, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def temporary_sibling(path: str | os.PathLike, suffix: str = "") -> tuple[str, str]:
    """`(final_path, temp_path)` for a writer that takes a path (ONNX, a plot): write temp_path, then
    `os.replace(temp_path, final_path)`. The folder is created; the name is unique and hidden."""
    final = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(final)
    make_dir(folder)
    temp = os.path.join(folder, f".{os.path.basename(final)}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    return final, temp


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[tuple[str, str]]:
    """`(final_path, temp_path)` for a writer that takes a path (ONNX, torch.export, a plot): write and check the file
    at temp_path; when the block ends without an error it is moved to final_path (`os.replace`), otherwise it is
    removed and nothing appears at final_path."""
    final, temp = temporary_sibling(path, suffix)
    try:
        yield final, temp
        os.replace(temp, final)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def write_marker(folder: str | os.PathLike, marker: str, content: dict[str, Any] | None = None) -> None:
    """Record that `folder` was made by the tool that owns `marker` (a file name, e.g. "nasvit_subnet.json")."""
    atomic_write_json(Path(folder) / marker, content or {})


def has_marker(folder: str | os.PathLike, marker: str, legacy_markers: Sequence[str] = ()) -> bool:
    """Whether `folder` holds `marker` or one of `legacy_markers` (the names the same tool's marker had before)."""
    return any((Path(folder) / name).is_file() for name in (marker, *legacy_markers))


def replace_folder(
    temporary: str | os.PathLike,
    target: str | os.PathLike,
    marker: str | None = None,
    legacy_markers: Sequence[str] = (),
) -> None:
    """Move a finished folder into place. An existing `target` is replaced only once the new one is complete and,
    with `marker`, only if it holds that marker or one of `legacy_markers` (else `OwnershipError`, and nothing is
    touched)."""
    temporary, target = Path(temporary), Path(target)
    if target.exists() or target.is_symlink():
        owned = marker is None or (
            target.is_dir() and not target.is_symlink() and has_marker(target, marker, legacy_markers)
        )
        if not owned:
            raise OwnershipError(
                f"{target} exists and was not written by this tool (no {marker} marker inside): refusing to replace "
                "it. Choose another output folder, or move it away yourself."
            )
        trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, trash / target.name)
        os.replace(temporary, target)
        shutil.rmtree(trash)
    else:
        os.replace(temporary, target)


@contextlib.contextmanager
def staging_folder(
    target: str | os.PathLike,
    marker: str | None = None,
    overwrite: bool = True,
    legacy_markers: Sequence[str] = (),
) -> Iterator[Path]:
    """A fresh hidden folder beside `target` to write into; on success it replaces `target` (`replace_folder`,
    `marker` written into it first, every mode set from the umask: `apply_umask_modes`), on failure it is removed and
    `target` is untouched. Without `overwrite`, an existing `target` is refused before anything is written; with it,
    only a `target` holding `marker` (or one of `legacy_markers`, its earlier names) is replaced."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists: pass --overwrite to replace it.")
    if target.exists() and marker is not None and not has_marker(target, marker, legacy_markers):
        raise OwnershipError(
            f"{target} exists and was not written by this tool (no {marker} marker inside): refusing to replace it. "
            "Choose another output folder, or move it away yourself."
        )
    make_dir(target.parent)
    temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    os.chmod(temporary, _dir_mode())
    try:
        yield temporary
        if marker is not None and not has_marker(temporary, marker):
            write_marker(temporary, marker)
        apply_umask_modes(temporary)
        replace_folder(temporary, target, marker=marker, legacy_markers=legacy_markers)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
