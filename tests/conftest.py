import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def toy_supernet_dir(tmp_path_factory):
    """A tiny supernet trained for a few dozen steps on the digits (session-scoped: trained once per run)."""
    from toy_supernet import train_toy_supernet

    return train_toy_supernet(tmp_path_factory.mktemp("toy_supernet") / "supernet")
