"""The paper's Table 12 record: a latency-tuned B-model against the A-model whose measured latency is its budget,
both timed in the same session on the same machine.

Two latencies measured minutes apart on a shared CPU differ by tens of percent for the same model, so "B is no
slower than A" is judged by `compare_latency`: the two extracted subnets are timed in alternating rounds (A, B, A,
B, ...) after a common warm-up, and each one's latency is the median over all its rounds. The search picks, among
the B-candidates ranked by predicted accuracy that the latency model puts within budget, the first one measured
no slower than A this way (`SearchRun`); A's own arch always qualifies.
"""

from __future__ import annotations

import platform
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .latency import measure_latency

__all__ = ["PairedLatency", "compare_latency", "machine_description"]


def machine_description() -> str:
    """Where a latency was measured: CPU model (or CUDA device), OS, torch version."""
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    processor = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{processor}; {platform.system()} {platform.release()}; torch {torch.__version__}"


@dataclass
class PairedLatency:
    first_ms: float  # median over the first model's rounds
    second_ms: float
    rounds: int
    repeats_per_round: int
    first_rounds_ms: list[float]
    second_rounds_ms: list[float]
    device: str
    num_threads: int
    batch_size: int
    machine: str

    @property
    def second_no_slower(self) -> bool:
        return self.second_ms <= self.first_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def compare_latency(
    first: nn.Module,
    first_resolution: int,
    second: nn.Module,
    second_resolution: int,
    *,
    rounds: int = 5,
    device: str = "cpu",
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 15,
    num_threads: int | None = None,
) -> PairedLatency:
    """Time two models in `rounds` alternating rounds (`repeats` timed runs each, median per round) after `warmup`
    runs of each; returns each model's median over its rounds."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    kwargs = dict(device=device, batch_size=batch_size, repeats=repeats, num_threads=num_threads)
    measure_latency(first, first_resolution, warmup=warmup, **{**kwargs, "repeats": 1})
    measure_latency(second, second_resolution, warmup=warmup, **{**kwargs, "repeats": 1})
    first_rounds, second_rounds = [], []
    threads = torch.get_num_threads()
    for index in range(rounds):
        # Alternate which goes first, so neither always runs right after the other's warm caches.
        order = [(first, first_resolution, first_rounds), (second, second_resolution, second_rounds)]
        for model, resolution, into in order if index % 2 == 0 else order[::-1]:
            measurement = measure_latency(model, resolution, warmup=1, **kwargs)
            into.append(measurement.median_ms)
            threads = measurement.num_threads
    return PairedLatency(
        first_ms=float(statistics.median(first_rounds)),
        second_ms=float(statistics.median(second_rounds)),
        rounds=rounds,
        repeats_per_round=repeats,
        first_rounds_ms=first_rounds,
        second_rounds_ms=second_rounds,
        device=str(device),
        num_threads=threads,
        batch_size=batch_size,
        machine=machine_description(),
    )
