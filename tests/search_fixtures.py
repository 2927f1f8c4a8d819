"""Fixtures of the search and extraction tests: a toy supernet trained in-session (tiny space, digits, a few dozen
steps), a small search config, and a complete search of the toy supernet through recipes/search.py. Registered in
tests/conftest.py so that session-scoped fixtures are computed once per session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def toy_supernet_dir(tmp_path_factory):
    """A tiny supernet trained for a few dozen steps on the digits (session-scoped: trained once per run)."""
    from nasvit_hf.search import torch_threads
    from tests.toy_supernet import train_toy_supernet

    with torch_threads(1):  # tiny model: one thread is as fast, and 10x faster on a busy shared CPU
        return train_toy_supernet(tmp_path_factory.mktemp("toy_supernet") / "supernet")


ROOT = Path(__file__).resolve().parents[1]

SEARCH_CONFIG = {
    "seed": 0,
    "num_threads": 1,
    "data": {"dataset": "digits", "batch_size": 32, "max_evaluation_samples": 60},
    "calibration": {"num_batches": 2},
    "predictor": {"num_subnets": 8, "n_estimators": 20},
    "evolution": {"population_size": 128, "parents": 16, "mutations": 16, "crossovers": 16, "generations": 5},
    "latency": {"warmup": 1, "repeats": 3, "num_archs": 26, "holdout_fraction": 0.15},  # 22 fit, 4 held out
    "budgets": [
        {"name": "a0", "macs_fraction": 0.0108},
        {"name": "a2", "macs_fraction": 0.1367},
        {"name": "b0", "latency_of": "a0"},
    ],
}


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def search_config_file(tmp_path_factory):
    import yaml

    path = tmp_path_factory.mktemp("search_config") / "search_test.yaml"
    path.write_text(yaml.safe_dump(SEARCH_CONFIG))
    return path


@pytest.fixture(scope="session")
def search_dir(toy_supernet_dir, search_config_file, tmp_path_factory):
    """A complete search of the toy supernet through recipes/search.py."""
    output = tmp_path_factory.mktemp("search") / "results"
    load_recipe("search").main(
        ["--supernet", toy_supernet_dir, "--config", str(search_config_file), "--output_dir", str(output)]
    )
    return output
