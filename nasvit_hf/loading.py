"""Loading NASViT checkpoints for the package's own tools (search, extraction, deployment, training from a folder): the
one home of loading.

`read_nasvit_config` reads the config of a folder (or Hub id) that should hold a NASViT model and refuses anything
else up front: a folder without config.json (transformers would build a default config), a config.json that is not
a JSON object, or one of another model type (transformers would only log a warning and build a NASViT config from
it).

`from_pretrained` initialises missing weights at random and skips unexpected ones with only a log line: right for
fine-tuning a checkpoint on another task, wrong when a tool is about to rank, extract or deploy exactly the weights in
the folder. `load_pretrained_strict` loads with transformers' `output_loading_info` and refuses any checkpoint whose
weights do not match the model its config describes, naming the first few keys of each kind.

`load_nasvit_model` puts the two together for a saved NASViT model of any class (the one its config.json names);
`load_supernet` is the same for a supernet folder that search, extraction and the training tools rank subnets of, and
`load_supernet_processor` reads the image processor saved beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from .models.configuration_nasvit import NASViTConfig
from .models.image_processing_nasvit import NASViTImageProcessor
from .models.modeling_nasvit import NASViTForImageClassification, NASViTPreTrainedModel

__all__ = [
    "CheckpointMismatchError",
    "load_nasvit_model",
    "load_pretrained_strict",
    "load_supernet",
    "load_supernet_processor",
    "read_nasvit_config",
]

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


def read_nasvit_config(path: str | os.PathLike, what: str = "a NASViT model") -> NASViTConfig:
    """The `NASViTConfig` of a `save_pretrained` folder or Hub id, with one ValueError naming the folder for anything
    that is not `what`: no config.json, a config.json that is not a JSON object, another `model_type`, or a NASViT
    config that fails its own checks (`NASViTConfig.__init__`)."""
    where = str(path)
    advice = (
        "Pass a folder written by save_pretrained (recipes/train.py, recipes/extract.py, "
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
            "save_pretrained (recipes/train.py, recipes/extract.py, recipes/convert_official_checkpoint.py)."
        )
    return model


def load_nasvit_model(
    path: str | os.PathLike,
    what: str = "a NASViT model folder",
    model_class: type[NASViTPreTrainedModel] | None = None,
    check_config: Callable[[NASViTConfig], None] | None = None,
) -> NASViTPreTrainedModel:
    """The NASViT model saved in `path` (a `save_pretrained` folder or Hub id), loaded strictly.

    The config is read with `read_nasvit_config` (anything that is not `what` is a ValueError naming the folder),
    checked by `check_config` (which raises ValueError) when given, and the weights are loaded into `model_class`, or
    the nasvit_hf class `config.architectures` names, with `load_pretrained_strict` (`CheckpointMismatchError`). A
    folder without weights is a ValueError naming the fix."""
    import nasvit_hf  # every NASViT model class, by the name in config.architectures

    advice = "Pass a folder written by save_pretrained (config.json + model.safetensors) or a NASViT model instance."
    config = read_nasvit_config(path, what)
    if check_config is not None:
        check_config(config)
    if model_class is None:
        names = config.architectures or ["NASViTForImageClassification"]
        model_class = vars(nasvit_hf).get(names[0])
        if not (isinstance(model_class, type) and issubclass(model_class, NASViTPreTrainedModel)):
            raise ValueError(f"{str(path)!r} holds a {names[0]!r}, which is not a NASViT model class of nasvit_hf.")
    try:
        return load_pretrained_strict(model_class, path, config=config)
    except OSError as error:  # no weights file: transformers' own message, made actionable
        raise ValueError(
            f"cannot load the NASViT weights from {str(path)!r}: {str(error).rstrip('.')}. {advice}"
        ) from error


def load_supernet(path: str | Path, device: str = "cpu") -> NASViTForImageClassification:
    """The NASViT supernet classifier saved in the folder `path`, loaded strictly (`load_nasvit_model`), on `device`,
    in eval mode; a folder of an extracted subnet or of a model without a classifier is a ValueError naming it."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a NASViT supernet folder: there is no such folder.")

    def check_supernet(config: NASViTConfig) -> None:
        if not config.is_supernet:
            raise ValueError(
                f"{str(path)!r} holds a single extracted subnet (its search space has one choice per dimension), not "
                "a supernet: there is nothing to search. Point --supernet at the supernet it came from."
            )
        if config.num_labels < 1:
            raise ValueError(f"{str(path)!r} has no classifier (num_labels=0); search ranks subnets by top-1.")

    model = load_nasvit_model(path, "a NASViT supernet", NASViTForImageClassification, check_supernet)
    return model.to(device).eval()


def load_supernet_processor(path: str | Path) -> NASViTImageProcessor | None:
    """The image processor saved with a supernet (its evaluation protocol: search and extraction evaluate through it, and
    extracted subnets carry it moved to their resolution), or None when the folder has none."""
    if not (Path(path) / "preprocessor_config.json").is_file():
        return None
    return NASViTImageProcessor.from_pretrained(path)
