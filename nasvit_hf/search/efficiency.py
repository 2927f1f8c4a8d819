"""Efficiency functions for constrained search: MACs (analytic) and predicted latency, cached per arch.

An efficiency function maps a `(n, num_genes)` population to one float per row; evolution only talks to it through
`__call__`, so MACs, a latency model, or anything else (energy, memory) plug in the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..macs import count_macs, stage_macs
from ..models.configuration_nasvit import NASViTConfig
from ..models.search_space_nasvit import TRANSFORMER_STAGES
from .encoding import ArchEncoder

__all__ = ["LATENCY_FEATURE_NAMES", "CachedEfficiency", "MacsEfficiency", "latency_features"]

LATENCY_FEATURE_NAMES = ["conv_macs", "transformer_macs", "head_macs", "mbconv_blocks", "transformer_layers"]


def latency_features(config: NASViTConfig, arch: dict[str, Any]) -> np.ndarray:
    """What a subnet's latency is regressed on (`arch` must come from the config's space: it is not re-validated): MACs of the convolutional part (stem, MBConv stages, the MBConv
    block opening each transformer stage), of the transformer layers, of the head, and the block counts (per-op
    overhead dominates small models at batch 1)."""
    stages = stage_macs(config, arch, validate=False)
    total = count_macs(config, arch, validate=False)
    conv = stages[0][1]
    transformer = 0
    mbconv_blocks = 0
    transformer_layers = 0
    for (name, macs, _), depth in zip(stages[1:], arch["depth"]):
        if name in TRANSFORMER_STAGES:
            transformer += macs
            mbconv_blocks += 1
            transformer_layers += depth - 1
        else:
            conv += macs
            mbconv_blocks += depth
    head = total - sum(macs for _, macs, _ in stages)
    return np.array([conv, transformer, head, mbconv_blocks, transformer_layers], dtype=np.float64)


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
