"""The README's quickstart runs as written."""

from __future__ import annotations

import os
import re

from .conftest import REPO_ROOT


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md#quickstart", "exec"), namespace)
    assert os.path.isfile(tmp_path / "nasvit-small" / "model.safetensors")
    assert namespace["out"].logits.shape == (2, 1000)
    assert namespace["classifier"].model.config.model_type == "nasvit"
