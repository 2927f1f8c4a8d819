#!/usr/bin/env python
"""Benchmark of the predictor-driven evolution (paper sizes, reference search space, CPU).

    PYTHONPATH=. python benchmarks/bench_search.py [--generations 40] [--repeats 3]

The random forest is fitted on 1,024 random archs with a synthetic accuracy (a smooth function of the arch plus
noise: the search's speed does not depend on what the accuracies are). Reports, per MACs budget A0-A5, the wall time
of one evolution (1,024 -> 128 parents -> 128 + 128 children, 40 generations, about 11 K archs scored) and, as the
baseline measured in the same run, what scoring archs one predictor call at a time and counting MACs uncached
costs per arch (the speed-ups of batching per generation and caching MACs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from nasvit_hf import NASViTConfig, count_macs
from nasvit_hf.search import AccuracyPredictor, ArchEncoder, EvolutionConfig, MacsEfficiency, evolutionary_search

BUDGETS_M = {"a0": 208, "a1": 309, "a2": 421, "a3": 528, "a4": 591, "a5": 757}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generations", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = NASViTConfig()
    encoder = ArchEncoder(config.search_space)
    rng = np.random.default_rng(0)
    genes = encoder.sample(1024, rng)
    features = encoder.features(genes)
    accuracy = 70 + 5 * np.tanh(features @ rng.normal(size=features.shape[1]) / 50) + rng.normal(0, 0.3, len(genes))
    predictor = AccuracyPredictor(n_estimators=100, seed=0).fit(features, accuracy)
    settings = EvolutionConfig(generations=args.generations)
    anchor = encoder.encode(config.smallest_arch())

    # Baseline, same run: one predictor call and one uncached MACs count per arch.
    sample = encoder.sample(200, rng)
    start = time.perf_counter()
    for row in sample:
        predictor.predict(encoder.features(row[None]))
    per_arch_predict = (time.perf_counter() - start) / len(sample)
    start = time.perf_counter()
    predictor.predict(encoder.features(encoder.sample(256, rng)))
    batched_predict = (time.perf_counter() - start) / 256
    start = time.perf_counter()
    for row in sample:
        count_macs(config, encoder.decode(row))
    per_arch_macs = (time.perf_counter() - start) / len(sample)

    print(f"{'budget':<8}{'archs scored':>14}{'median s':>10}{'min s':>8}")
    totals = []
    for index, (name, budget) in enumerate(BUDGETS_M.items()):
        times = []
        for repeat in range(args.repeats):
            macs = MacsEfficiency(config, encoder)  # fresh cache: each run pays its own MACs counts
            start = time.perf_counter()
            result = evolutionary_search(
                encoder,
                predictor.predict,
                macs,
                budget * 1e6,
                settings,
                np.random.default_rng([index, repeat]),
                anchor=anchor,
            )
            times.append(time.perf_counter() - start)
            assert result.efficiency <= budget * 1e6
        totals.append(statistics.median(times))
        print(f"{name:<8}{result.num_scored:>14}{statistics.median(times):>10.2f}{min(times):>8.2f}")
    scored = result.num_scored
    naive = scored * (per_arch_predict + per_arch_macs)
    print(
        f"\nper arch: predictor alone {per_arch_predict * 1e3:.2f} ms vs batched {batched_predict * 1e3:.3f} ms "
        f"({per_arch_predict / batched_predict:.0f}x); MACs count {per_arch_macs * 1e3:.3f} ms uncached"
    )
    print(
        f"one-at-a-time estimate for {scored} archs: {naive:.1f} s vs measured median "
        f"{statistics.median(totals):.2f} s per budget ({naive / statistics.median(totals):.0f}x)"
    )


if __name__ == "__main__":
    main()
