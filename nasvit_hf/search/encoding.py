"""Architecture encoding for search: an arch as a row of choice indices ("genes"), vectorised over populations.

Every searchable dimension of a search space (each field of the arch schema `ARCH_FIELDS` the space declares, once
per stage it covers: resolution; width per stage; depth, kernel size and expand ratio per body stage; ...) is one gene: the index of the chosen value in that dimension's sorted choices. A population is an
`int64` array of shape `(n, num_genes)`, so sampling, mutation, crossover and feature extraction are numpy
operations on whole generations, and a row's bytes key the MACs / latency caches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models.search_space_nasvit import arch_fields, field_choices, normalize_search_space

__all__ = ["ArchEncoder"]


class ArchEncoder:
    """Maps arch dicts of one search space to gene rows and numeric features, and back."""

    def __init__(self, search_space: dict[str, Any]):
        space = normalize_search_space(search_space)
        self.search_space = space
        self.fields = arch_fields(space)
        dims: list[tuple[str, int, list[int]]] = []  # (field, stage index or -1 for a per-network field, choices)
        for arch_field in self.fields:
            for index, choices in enumerate(field_choices(space, arch_field)):
                dims.append((arch_field.name, -1 if arch_field.per_network else index, list(choices)))
        self.dimensions = dims
        self.num_genes = len(dims)
        self.num_choices = np.array([len(choices) for _, _, choices in dims], dtype=np.int64)
        width = int(self.num_choices.max())
        self.values = np.zeros((self.num_genes, width), dtype=np.float64)
        for gene, (_, _, choices) in enumerate(dims):
            self.values[gene, : len(choices)] = choices
        # The predictor only sees dimensions that vary: a fixed one carries no information.
        self.variable_genes = np.flatnonzero(self.num_choices > 1)
        self._gene_index = np.arange(self.num_genes)[None, :]

    @property
    def feature_names(self) -> list[str]:
        names = []
        for gene in self.variable_genes:
            field, index, _ = self.dimensions[gene]
            names.append(field if index < 0 else f"{field}[{index}]")
        return names

    def encode(self, arch: dict[str, Any]) -> np.ndarray:
        """The gene row (choice indices) of `arch`; raises ValueError for values outside the space."""
        row = np.empty(self.num_genes, dtype=np.int64)
        if not isinstance(arch, dict) or any(field not in arch for field, _, _ in self.dimensions):
            keys = sorted({field for field, _, _ in self.dimensions})
            raise ValueError(f"arch must be a dict with keys {keys}, got {str(arch)[:120]}.")
        for gene, (field, index, choices) in enumerate(self.dimensions):
            value = arch[field] if index < 0 else arch[field][index]
            if value not in choices:
                where = field if index < 0 else f"{field}[{index}]"
                raise ValueError(f"arch {where} = {value!r} is not in the search space; allowed: {choices}.")
            row[gene] = choices.index(value)
        return row

    def encode_many(self, archs: list[dict[str, Any]]) -> np.ndarray:
        return np.stack([self.encode(arch) for arch in archs]) if archs else np.empty((0, self.num_genes), np.int64)

    def decode(self, row: np.ndarray) -> dict[str, Any]:
        """The arch dict of one gene row (a ValueError for a row of another length or with a choice index outside
        its dimension's choices)."""
        row = np.asarray(row)
        if row.shape != (self.num_genes,) or row.dtype.kind not in "iu":
            raise ValueError(f"a gene row holds {self.num_genes} integer choice indices, got {row.dtype} {row.shape}.")
        arch: dict[str, Any] = {arch_field.name: 0 if arch_field.per_network else [] for arch_field in self.fields}
        for gene, (field, index, choices) in enumerate(self.dimensions):
            if not 0 <= int(row[gene]) < len(choices):
                raise ValueError(
                    f"gene {gene} ({field}) is {int(row[gene])}; it indexes {len(choices)} choices {choices}."
                )
            value = int(choices[int(row[gene])])
            if index < 0:
                arch[field] = value
            else:
                arch[field].append(value)
        return arch

    def features(self, genes: np.ndarray) -> np.ndarray:
        """Float features (the chosen values of the varying dimensions) of a `(n, num_genes)` population."""
        genes = np.atleast_2d(genes)
        values = self.values[self._gene_index, genes]
        return values[:, self.variable_genes]

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` uniformly random gene rows (each dimension drawn independently, as the supernet samples)."""
        return rng.integers(0, self.num_choices, size=(count, self.num_genes))

    def mutate(self, genes: np.ndarray, probability: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each gene is resampled uniformly with `probability` (a float, or an `(n, 1)` array of per-row rates)."""
        mask = rng.random(genes.shape) < probability
        fresh = rng.integers(0, self.num_choices, size=genes.shape)
        return np.where(mask, fresh, genes)

    @staticmethod
    def crossover(first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Uniform crossover: each gene from either parent with probability 1/2."""
        mask = rng.random(first.shape) < 0.5
        return np.where(mask, first, second)

    @staticmethod
    def key(row: np.ndarray) -> bytes:
        return np.ascontiguousarray(row, dtype=np.int64).tobytes()
