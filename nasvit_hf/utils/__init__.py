"""Small helpers shared across the package (file writing)."""

from .io import (
    OwnershipError,
    atomic_write_json,
    atomic_write_text,
    make_dir,
    replace_folder,
    staging_folder,
    temporary_sibling,
)

__all__ = [
    "OwnershipError",
    "atomic_write_json",
    "atomic_write_text",
    "make_dir",
    "replace_folder",
    "staging_folder",
    "temporary_sibling",
]
