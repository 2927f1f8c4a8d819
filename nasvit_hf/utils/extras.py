"""Optional dependencies ("extras"): one place that names them, and one error for a missing one.

A feature that needs an extra calls `require_extra(name, feature)` before importing its modules; a missing one is a
`MissingExtraError` whose one-line message names the extra to install (recipes print it as their `error:` line).
`EXTRAS` must list exactly the extras of pyproject.toml that hold runtime features (tests/test_dependencies.py checks
it, and that every import of an extra's distribution sits behind `require_extra` of that extra).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "require_extra"]

# extra name -> the modules it provides (import names), as declared in pyproject.toml's [project.optional-dependencies]
EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("onnx", "onnxruntime", "onnxscript"),
}


class MissingExtraError(ImportError):
    """An optional dependency of a feature is not installed; the message names the extra that installs it."""


def require_extra(extra: str, feature: str) -> tuple[ModuleType, ...]:
    """Import the modules of `extra` (in `EXTRAS` order) for `feature`, or raise `MissingExtraError` naming the extra.

    >>> onnx, onnxruntime, onnxscript = require_extra("export", "ONNX export")
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; the extras are {sorted(EXTRAS)}.")
    modules, missing, broken = [], [], []
    for name in EXTRAS[extra]:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as error:  # not installed, or installed but failing to import (a broken install)
            if isinstance(error, ModuleNotFoundError) and (error.name or name).split(".")[0] == name:
                missing.append(name)
            else:
                broken.append(f"{name} ({' '.join(str(error).split())})")
    if missing or broken:
        problems = [f"{', '.join(missing)} not installed"] if missing else []
        problems += [f"{', '.join(broken)} failing to import"] if broken else []
        raise MissingExtraError(
            f"{feature} needs the '{extra}' extra ({', '.join(EXTRAS[extra])}); {'; '.join(problems)}: "
            f"pip install 'nasvit_hf[{extra}]'"
        )
    return tuple(modules)
