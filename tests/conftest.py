"""Shared test fixtures. Tests run offline on CPU; the parity fixtures live in tests/fixtures (copied from the reference's
parity data in ../shared/fixtures, so a fresh clone proves parity on its own)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# The suite runs as `pytest -n 2` on a 2-core machine: one intra-op thread per worker avoids oversubscription (several
# times faster here) and makes results independent of which worker ran what before.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
OFFICIAL_TINY_DIR = FIXTURES_DIR / "official_tiny"


@pytest.fixture(scope="session")
def official_cases() -> dict:
    return json.loads((OFFICIAL_TINY_DIR / "cases.json").read_text())


@pytest.fixture(scope="session")
def official_tensors() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(OFFICIAL_TINY_DIR / "cases.safetensors")


@pytest.fixture(scope="session")
def official_state_dict_path() -> Path:
    return OFFICIAL_TINY_DIR / "official_state_dict.safetensors"


@pytest.fixture(scope="session")
def reference_manifest() -> dict:
    return json.loads((FIXTURES_DIR / "official_supernet_manifest.json").read_text())


@pytest.fixture
def tiny_config():
    import nasvit_hf
    from nasvit_hf.presets import get_search_space

    return nasvit_hf.NASViTConfig(search_space=get_search_space("tiny"), num_labels=10)


@pytest.fixture
def tiny_model(tiny_config):
    import nasvit_hf

    torch.manual_seed(0)
    return nasvit_hf.NASViTForImageClassification(tiny_config).eval()


def randomize_batchnorm_and_scales(model: torch.nn.Module, seed: int = 0) -> None:
    """Give BN statistics/affines, layer scales and zero-initialised weights non-trivial values, so parity tests
    exercise every slice (a fresh model has zero projection-BN weights and identical layer scales)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith(("running_mean", "norm.bias", "layer_scale_attn", "layer_scale_mlp")):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif name.endswith("norm.weight"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)


_BLOCK_NASVIT = """
import sys
class _BlockNASViT:
    def find_spec(self, name, path=None, target=None):
        if name == "nasvit_hf" or name.startswith("nasvit_hf."):
            raise ImportError("nasvit_hf is blocked in this interpreter")
        return None
sys.meta_path.insert(0, _BlockNASViT())
"""


def run_without_nasvit(code: str, cwd: Path) -> str:
    """Run `code` in a fresh Python where `import nasvit_hf` fails (the package is blocked on the meta path and the
    repo is off sys.path); returns stdout, raises AssertionError with stderr on failure."""
    import subprocess
    import sys

    script = (
        _BLOCK_NASVIT + "\ntry:\n    import nasvit_hf\nexcept ImportError:\n    pass\nelse:\n"
        "    raise SystemExit('nasvit_hf must not be importable here')\n" + code
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # same kernels as this process
    result = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"subprocess failed:\n{result.stderr[-4000:]}"
    return result.stdout


# Search and extraction fixtures (toy supernet, search config, a complete search), computed once per session.
from tests.search_fixtures import search_config_file, search_dir, toy_supernet_dir  # noqa: E402, F401
