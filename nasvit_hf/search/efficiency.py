"""Efficiency functions for constrained search: MACs (analytic) here, predicted latency in `latency.py`; cached per
arch.

An efficiency function maps a `(n, num_genes)` population to one float per row; evolution only talks to it through
`__call__`, so MACs, a latency model, or anything else (energy, memory) plug in the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..macs import count_macs
from ..models.configuration_nasvit import NASViTConfig
from .encoding import ArchEncoder

__all__ = ["CachedEfficiency", "MacsEfficiency"]


class CachedEfficiency:
    """Base: computes a per-arch value once and caches it by gene row."""

    name = "efficiency"
    unit = ""

    def __init__(self, config: NASViTConfig, encoder: ArchEncoder):
        self.config = config
        self.encoder = encoder
        self._cache: dict[bytes, float] = {}

    def value(self, arch: dict[str, Any]) -> float:
        raise NotImplementedError

    def __call__(self, genes: np.ndarray) -> np.ndarray:
        genes = np.atleast_2d(genes)
        out = np.empty(len(genes), dtype=np.float64)
        for i, row in enumerate(genes):
            key = ArchEncoder.key(row)
            cached = self._cache.get(key)
            if cached is None:
                cached = self._cache[key] = float(self.value(self.encoder.decode(row)))
            out[i] = cached
        return out


class MacsEfficiency(CachedEfficiency):
    """Multiply-accumulates per image (`count_macs`, the paper's convention) at the config's number of labels."""

    name = "macs"
    unit = "MACs"

    def value(self, arch: dict[str, Any]) -> float:
        return float(count_macs(self.config, arch, validate=False))  # decoded from the space: valid
