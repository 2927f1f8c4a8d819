"""Tiny local timm-format teacher folders for the teacher tests (not a test module)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def write_timm_teacher(
    folder: Path,
    label_names: list[str],
    seed: int = 0,
    input_size: int = 48,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    architecture: str = "resnet10t",
) -> Path:
    """A randomly initialised timm model saved as timm does for the Hub (`save_for_hf`), loadable with
    AutoModelForImageClassification. transformers' timm wrapper rejects `model_args.num_classes`: that key is
    dropped (the class count comes from the top-level `num_classes`)."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False, num_classes=len(label_names))
    model.pretrained_cfg = dict(
        model.pretrained_cfg, input_size=(3, input_size, input_size), mean=tuple(mean), std=tuple(std)
    )
    save_for_hf(model, str(folder), model_config={"label_names": list(label_names)}, safe_serialization=True)
    config_path = Path(folder) / "config.json"
    config = json.loads(config_path.read_text())
    config.get("model_args", {}).pop("num_classes", None)
    config_path.write_text(json.dumps(config, indent=2))
    return Path(folder)
