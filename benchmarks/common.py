"""Timing helpers shared by the benchmarks: interleaved repeats, medians, ratios measured in one run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_callables(fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median wall time (seconds) of each callable; runs are interleaved so load changes hit all of them alike."""
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        samples: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def machine_summary() -> str:
    import os
    import platform

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
