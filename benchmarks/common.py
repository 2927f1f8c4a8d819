"""Timing helpers shared by the benchmarks: interleaved repeats, medians, ratios measured in one run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_callables(fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median wall time (seconds) of each callable; runs are interleaved (in an order that rotates every round, so
    no callable always follows the same one) so load changes hit all of them alike."""
    names = list(fns)
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        samples: dict[str, list[float]] = {name: [] for name in fns}
        for round_index in range(repeats):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                fns[name]()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def load_average() -> str:
    """The 1-minute load average (other jobs on a shared machine), for the record beside each timing."""
    import os

    return f"{os.getloadavg()[0]:.1f}"


def machine_summary() -> str:
    import os
    import platform

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
