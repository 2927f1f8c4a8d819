"""Strict loading of NASViT checkpoints for the package's own tools (search, export, deployment).

`from_pretrained` initialises missing weights at random and skips unexpected ones with only a log line: right for
fine-tuning a checkpoint on another task, wrong when a tool is about to rank, export or deploy exactly the weights in
the folder. `load_pretrained_strict` loads with transformers' `output_loading_info` and refuses any checkpoint whose
weights do not match the model its config describes, naming the first few keys of each kind.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import PreTrainedModel

__all__ = ["CheckpointMismatchError", "load_pretrained_strict"]

_SHOWN_KEYS = 5


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not match its config's model: missing, unexpected or differently shaped keys."""


def _describe(keys: Any, what: str) -> str | None:
    keys = sorted(str(key) for key in (keys or []))
    if not keys:
        return None
    shown = ", ".join(keys[:_SHOWN_KEYS]) + (
        f", ... ({len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else ""
    )
    return f"{len(keys)} {what} ({shown})"


def load_pretrained_strict(
    model_class: type[PreTrainedModel], path: str | os.PathLike, **kwargs: Any
) -> PreTrainedModel:
    """`model_class.from_pretrained(path, **kwargs)`, refusing a checkpoint with missing, unexpected or
    differently shaped weights (`CheckpointMismatchError`, a `ValueError`)."""
    kwargs = {**kwargs, "output_loading_info": True, "ignore_mismatched_sizes": True}
    model, info = model_class.from_pretrained(path, **kwargs)
    mismatched = [
        entry[0] if isinstance(entry, (list, tuple)) else entry for entry in info.get("mismatched_keys") or []
    ]
    problems = [
        _describe(info.get("missing_keys"), "missing weights"),
        _describe(info.get("unexpected_keys"), "unexpected weights"),
        _describe(mismatched, "weights of another shape"),
        _describe(info.get("error_msgs"), "load errors"),
    ]
    problems = [problem for problem in problems if problem]
    if problems:
        raise CheckpointMismatchError(
            f"the checkpoint in {str(path)!r} does not match the {model_class.__name__} its config.json describes: "
            f"{'; '.join(problems)}. It is incomplete, corrupt or from another model; use a folder written by "
            "save_pretrained (recipes/train.py, recipes/export.py, recipes/convert_official_checkpoint.py)."
        )
    return model
