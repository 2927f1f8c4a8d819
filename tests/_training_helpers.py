"""Shared tiny fixtures for the training tests (not a test module)."""

import copy

import torch

from nasvit_hf import NASViTConfig, NASViTForImageClassification
from nasvit_hf.presets import get_search_space

# The CI machine is small and shared: one intra-op thread is several times faster than oversubscribed threads.
torch.set_num_threads(1)


def micro_space(resolutions=(32,)):
    space = copy.deepcopy(get_search_space("tiny"))
    space["resolutions"] = list(resolutions)
    return space


_CACHE = {}


def micro_model(seed=0, num_labels=4, **kwargs):
    """A tiny-space supernet at 32 px (built once per arguments, then deep-copied: construction is the slow part)."""
    key = (seed, num_labels, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        torch.manual_seed(seed)
        config = NASViTConfig(search_space=micro_space(), num_labels=num_labels, **kwargs)
        _CACHE[key] = NASViTForImageClassification(config)
    return copy.deepcopy(_CACHE[key])


def batch(seed=0, size=2, num_labels=4, resolution=32):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(size, 3, resolution, resolution, generator=generator)
    labels = torch.randint(num_labels, (size,), generator=generator)
    return pixel_values, labels
