"""Timing helpers shared by the benchmarks: interleaved repeats, medians, ratios measured in one run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable

import torch


def time_callables(fns: dict[str, Callable[[], object]], repeats: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median wall time (seconds) of each callable; runs are interleaved (in an order that rotates every round, so
    no callable always follows the same one) so load changes hit all of them alike."""
    return time_callables_wall_and_cpu(fns, repeats, warmup)[0]


def time_callables_wall_and_cpu(
    fns: dict[Hashable, Callable[[], object]],
    repeats: int = 10,
    warmup: int = 2,
    cpu_clock: Callable[[], float] = time.process_time,
) -> tuple[dict[Hashable, float], dict[Hashable, float]]:
    """Median wall time and median CPU time (seconds) per callable, from the same interleaved calls.

    On a machine shared with other jobs, wall time includes the time other processes held the cores; CPU time does
    not, so with one intra-op thread it is the steadier measure of the work done. `cpu_clock`: the process's CPU
    time (all its threads, the default) or `time.thread_time` (the calling thread only: onnxruntime's and torch's
    one-thread work runs on it, other threads of the process do not count).
    """
    names = list(fns)
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        wall: dict[str, list[float]] = {name: [] for name in fns}
        cpu: dict[str, list[float]] = {name: [] for name in fns}
        for round_index in range(repeats):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                start, start_cpu = time.perf_counter(), cpu_clock()
                fns[name]()
                cpu[name].append(cpu_clock() - start_cpu)
                wall[name].append(time.perf_counter() - start)
    return (
        {name: statistics.median(values) for name, values in wall.items()},
        {name: statistics.median(values) for name, values in cpu.items()},
    )


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
