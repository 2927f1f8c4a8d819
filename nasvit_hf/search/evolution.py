"""Constrained evolutionary search on the accuracy predictor (paper, Appendix C.1; after AttentiveNAS/AlphaNet).

Per budget: sample an initial population of archs within the budget, then for each generation keep the best
`parents` by predicted accuracy and add `mutations` mutated parents and `crossovers` uniform crossovers of two
parents, every child within the budget. With the paper's sizes (1,024 → 128 parents → 128 + 128 children, 40
generations) about 11 K archs are scored. Populations are numpy gene arrays (`ArchEncoder`); the predictor is called
once per generation on the whole batch of children and the efficiency function caches per arch, so the loop runs in
seconds on a CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from ..config_system import check_field_ranges
from .encoding import ArchEncoder

__all__ = ["EvolutionConfig", "EvolutionResult", "evolutionary_search", "sample_within_budget"]

logger = logging.getLogger(__name__)


@dataclass
class EvolutionConfig:
    population_size: int = 1024
    parents: int = 128
    mutations: int = 128
    crossovers: int = 128
    generations: int = 40
    mutation_probability: float = 0.1
    max_sampling_rounds: int = 200  # rounds of rejection sampling before giving up on filling a batch

    CONFIG_SECTION: ClassVar[str] = "evolution"
    FIELD_RANGES: ClassVar[dict[str, str]] = {
        "population_size": "[1, 10000000]",
        "parents": "[1, 10000000]",
        "mutations": "[0, 10000000]",
        "crossovers": "[0, 10000000]",
        "generations": "[1, 100000]",
        "mutation_probability": "(0, 1]",
        "max_sampling_rounds": "[1, 100000]",
    }

    def __post_init__(self):
        check_field_ranges(self)


@dataclass
class EvolutionResult:
    genes: np.ndarray  # best arch's gene row
    predicted_accuracy: float
    efficiency: float
    num_scored: int  # archs the predictor scored (initial population + all children)
    history: list[float]  # best predicted accuracy after each generation
    final_population: np.ndarray  # the last generation's parents, best first
    final_scores: np.ndarray

    def summary(self) -> dict:
        result = asdict(self)
        for key in ("genes", "final_population", "final_scores"):
            result.pop(key)
        return result


def sample_within_budget(
    encoder: ArchEncoder,
    efficiency: Callable[[np.ndarray], np.ndarray],
    budget: float,
    count: int,
    rng: np.random.Generator,
    max_rounds: int = 200,
    anchor: np.ndarray | None = None,
) -> np.ndarray:
    """`count` random archs with `efficiency <= budget` (rejection sampling in batches, bounded).

    Uniform samples rarely fit a budget near the bottom of the space (the paper's A0 is 208 M MACs where the
    reference space starts at 190 M), so when `anchor` (a gene row within budget, e.g. the smallest arch) is given,
    half of each batch are mutations of it with a per-row rate drawn uniformly in (0, 1): from near-copies of the
    anchor up to uniform samples. Raises when the budget admits too few archs.
    """
    kept: list[np.ndarray] = []
    total = 0
    batch_size = max(count, 64)
    for _ in range(max_rounds):
        batch = encoder.sample(batch_size, rng)
        if anchor is not None:
            half = batch_size // 2
            rates = rng.random((half, 1))
            batch[:half] = encoder.mutate(np.repeat(anchor[None], half, axis=0), rates, rng)
        batch = batch[efficiency(batch) <= budget]
        kept.append(batch)
        total += len(batch)
        if total >= count:
            return np.concatenate(kept)[:count]
    raise ValueError(
        f"random sampling found only {total} archs within the budget {budget:g} in {max_rounds} rounds (needed "
        f"{count}); the budget is too tight: raise it or lower evolution.population_size."
    )


def _children(
    make: Callable[[int], np.ndarray],
    efficiency: Callable[[np.ndarray], np.ndarray],
    budget: float,
    count: int,
    max_rounds: int,
) -> np.ndarray:
    if count == 0:
        return make(0)
    kept, total = [], 0
    for _ in range(max_rounds):
        batch = make(count)
        batch = batch[efficiency(batch) <= budget]
        kept.append(batch)
        total += len(batch)
        if total >= count:
            break
    return np.concatenate(kept)[:count]


def evolutionary_search(
    encoder: ArchEncoder,
    predict: Callable[[np.ndarray], np.ndarray],
    efficiency: Callable[[np.ndarray], np.ndarray],
    budget: float,
    config: EvolutionConfig,
    rng: np.random.Generator,
    initial_population: np.ndarray | None = None,
    anchor: np.ndarray | None = None,
) -> EvolutionResult:
    """Maximise `predict(encoder.features(genes))` subject to `efficiency(genes) <= budget`.

    `predict` takes a `(n, num_features)` array and returns `n` scores; `efficiency` takes a gene array. Every arch
    ever returned satisfies the budget. `initial_population` (within budget) replaces the random start; `anchor` (a
    gene row within budget, typically the smallest arch) helps sampling the start under tight budgets.
    """
    if initial_population is None:
        population = sample_within_budget(
            encoder, efficiency, budget, config.population_size, rng, config.max_sampling_rounds, anchor
        )
    else:
        population = np.asarray(initial_population, dtype=np.int64)
        if np.any(efficiency(population) > budget):
            raise ValueError("initial_population holds archs over the budget.")
    scores = predict(encoder.features(population))
    num_scored = len(population)
    history = []
    for _ in range(config.generations):
        order = np.argsort(-scores, kind="stable")[: config.parents]
        parents, parent_scores = population[order], scores[order]

        def mutate(count: int, parents=parents) -> np.ndarray:
            picked = parents[rng.integers(0, len(parents), size=count)]
            return encoder.mutate(picked, config.mutation_probability, rng)

        def cross(count: int, parents=parents) -> np.ndarray:
            first = parents[rng.integers(0, len(parents), size=count)]
            second = parents[rng.integers(0, len(parents), size=count)]
            return encoder.crossover(first, second, rng)

        children = np.concatenate(
            [
                _children(mutate, efficiency, budget, config.mutations, config.max_sampling_rounds),
                _children(cross, efficiency, budget, config.crossovers, config.max_sampling_rounds),
            ]
        )
        child_scores = predict(encoder.features(children)) if len(children) else np.empty(0)
        num_scored += len(children)
        population = np.concatenate([parents, children])
        scores = np.concatenate([parent_scores, child_scores])
        history.append(float(scores.max()))
    order = np.argsort(-scores, kind="stable")
    population, scores = population[order], scores[order]
    # Deduplicate the final ranking so callers can walk down distinct runners-up.
    _, first_index = np.unique(population, axis=0, return_index=True)
    keep = np.sort(first_index)[: config.parents]
    population, scores = population[keep], scores[keep]
    best = population[0]
    return EvolutionResult(
        genes=best,
        predicted_accuracy=float(scores[0]),
        efficiency=float(efficiency(best[None])[0]),
        num_scored=num_scored,
        history=history,
        final_population=population,
        final_scores=scores,
    )
