"""Strict loading of NASViT checkpoints for the package's own tools (search, export, deployment).

`read_nasvit_config` reads the config of a folder (or Hub id) that should hold a NASViT model and refuses anything
else up front: a folder without config.json (transformers would build a default config), a config.json that is not
a JSON object, or one of another model type (transformers would only log a warning and build a NASViT config from
it).

`from_pretrained` initialises missing weights at random and skips unexpected ones with only a log line: right for
fine-tuning a checkpoint on another task, wrong when a tool is about to rank, export or deploy exactly the weights in
the folder. `load_pretrained_strict` loads with transformers' `output_loading_info` and refuses any checkpoint whose
weights do not match the model its config describes, naming the first few keys of each kind.
"""

from __future__ import annotations

import json
import os
from typing import Any

from transformers import PreTrainedModel

__all__ = ["CheckpointMismatchError", "load_pretrained_strict", "read_nasvit_config"]

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


def read_nasvit_config(path: str | os.PathLike, what: str = "a NASViT model"):
    """The `NASViTConfig` of a `save_pretrained` folder or Hub id, with one ValueError naming the folder for anything
    that is not `what`: no config.json, a config.json that is not a JSON object, another `model_type`, or a NASViT
    config that fails its own checks (`NASViTConfig.__init__`)."""
    from .models.configuration_nasvit import NASViTConfig

    where = str(path)
    advice = (
        "Pass a folder written by save_pretrained (recipes/train.py, recipes/export.py, "
        "recipes/convert_official_checkpoint.py)."
    )
    try:
        if os.path.exists(path):
            config_file = os.path.join(path, "config.json")
            if not os.path.isdir(path) or not os.path.isfile(config_file):
                raise ValueError("it has no config.json")
            with open(config_file, encoding="utf-8") as file:
                raw = json.load(file)
        else:  # a Hub id: transformers fetches (or finds in its cache) the config file
            raw, _ = NASViTConfig.get_config_dict(path)
        if not isinstance(raw, dict):
            raise ValueError(f"its config.json holds a {type(raw).__name__}, not a JSON object")
        if raw.get("model_type") != NASViTConfig.model_type:
            raise ValueError(
                f"its config.json has model_type {raw.get('model_type')!r}, not {NASViTConfig.model_type!r}"
            )
        return NASViTConfig.from_pretrained(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as error:
        message = " ".join(str(error).split()).rstrip(".")
        raise ValueError(f"{where!r} is not {what}: {message}. {advice}") from None


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
