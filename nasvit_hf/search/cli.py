"""Command-line pieces shared by `recipes/search.py` and `recipes/export.py`: naming the data for BN recalibration and
ranking on the command line, picking the device that exists, and finding a supernet's held-out split."""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import SearchConfig
from .evaluation import resolve_device, resolve_evaluation_data

__all__ = ["DATA_ARGUMENTS", "add_data_arguments", "configure_for_supernet"]

DATA_ARGUMENTS = {
    "dataset": "data for BN recalibration and ranking: digits, mnist_5k, imagefolder, or a datasets name/path",
    "dataset_config": "the datasets config name",
    "data_dir": "the image folder (dataset imagefolder), or the data_dir of a datasets dataset",
    "calibration_split": "split whose images recalibrate BN (training images)",
    "evaluation_split": "split to rank subnets on, held out of training (default: the supernet's held-out split)",
    "image_column": "image column name",
    "label_column": "label column name",
}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--dataset, --data_dir, ... (each overrides the search config's `data` section) and --holdout."""
    group = parser.add_argument_group("data (default: the supernet's held-out split, else the config's data section)")
    for name, help_text in DATA_ARGUMENTS.items():
        group.add_argument(f"--{name}", default=None, help=help_text)
    group.add_argument(
        "--holdout",
        default=None,
        help="a holdout.json written by training (default: found beside the supernet, <output_dir>/final)",
    )


def configure_for_supernet(config: SearchConfig, args: argparse.Namespace, supernet_dir: Path) -> SearchConfig:
    """The search config with the command line's data and device applied, the device checked to exist, and the
    evaluation data resolved for this supernet (its held-out split when it has one; never its training images)."""
    raw = config.to_dict()
    explicit = set()
    for name in DATA_ARGUMENTS:
        value = getattr(args, name, None)
        if value is not None:
            raw["data"][name] = value
            explicit.add(name)
    if getattr(args, "holdout", None):
        raw["data"]["holdout"] = args.holdout
    if "dataset" in explicit and "data_dir" not in explicit:
        raw["data"]["data_dir"] = None  # the config's folder belongs to the config's dataset
    device_argument = getattr(args, "device", None)
    raw["device"] = resolve_device(
        device_argument if device_argument is not None else raw["device"],
        "--device" if device_argument is not None else "the search config's device",
    )
    raw["latency"]["device"] = resolve_device(raw["latency"]["device"], "the search config's latency.device")
    config = SearchConfig.from_dict(raw)
    config.data = resolve_evaluation_data(config.data, supernet_dir, explicit)
    return config
