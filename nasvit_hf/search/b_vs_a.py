"""The paper's Table 12 record: a latency-tuned B-model against the A-model whose latency is its budget, both timed
in the same session, on the same runtime (`latency.backend`), on the same machine.

Two latencies measured minutes apart on a shared CPU differ by tens of percent for the same model, so the two
subnets are compared by `compare_latency`: timed in alternating rounds (A, B, B, A, ...) after a common warm-up,
each one's latency the median of its round medians. B is kept only when it is faster than A **by more than the
noise** (`PairedLatency.faster_beyond_noise`): B is faster in every round, and its speed-up, one minus the median
over rounds of B's round median over A's, exceeds the noise of this session's measurements: how far the same
model's round medians spread, (largest - smallest) / median, the larger of A's and B's (with a single round: the
inter-quartile range over the median of its timed runs). Otherwise B is A's arch and the record says why
(`choose_b_model`, which `SearchRun` calls for each latency budget with a `latency_of`).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .config import BudgetSpec
from .encoding import ArchEncoder
from .evolution import EvolutionResult
from .latency import LatencyEfficiency, measure_timed
from .latency_session import LatencySession
from .named import SearchedSubnet
from .runtimes import LatencyBackend, Timed, machine_description, quartiles

__all__ = ["PairedLatency", "choose_b_model", "compare_latency", "machine_description"]


@dataclass
class PairedLatency:
    first_ms: float  # median over the first model's round medians
    second_ms: float
    rounds: int
    repeats_per_round: int
    first_rounds_ms: list[float]
    second_rounds_ms: list[float]
    first_quartiles_ms: list[float]  # q25, q75 of all the first model's timed repeats
    second_quartiles_ms: list[float]
    speedup_pct: float  # 100 * (1 - median over rounds of second / first): > 0 when the second is faster
    noise_pct: float  # 100 * the larger spread (max - min) / median of one model's round medians (one round: IQR)
    within_round_iqr_pct: float  # 100 * median relative IQR of the timed runs within the rounds (both models)
    faster_every_round: bool
    device: str
    num_threads: int | None
    batch_size: int
    backend: str
    machine: str
    runtime: dict[str, Any] | None = None

    @property
    def faster_beyond_noise(self) -> bool:
        """The second model is faster than the first in every round, by more than the session's noise."""
        return self.faster_every_round and self.speedup_pct > self.noise_pct

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "faster_beyond_noise": self.faster_beyond_noise}


def compare_latency(
    backend: LatencyBackend, first: Timed, second: Timed, *, rounds: int = 5, warmup: int = 5, repeats: int = 15
) -> PairedLatency:
    """Time two prepared subnets on `backend` in `rounds` alternating rounds (`repeats` timed runs each, median per
    round) after `warmup` runs of each."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}.")
    for timed in (first, second):
        backend.time(timed, warmup=warmup, repeats=1)
    pooled: dict[int, list[float]] = {0: [], 1: []}
    medians: dict[int, list[float]] = {0: [], 1: []}
    spreads = []
    for index in range(rounds):
        # Alternate which goes first, so neither always runs right after the other's warm caches.
        order = [(0, first), (1, second)]
        for which, timed in order if index % 2 == 0 else order[::-1]:
            times = backend.time(timed, warmup=1, repeats=repeats)
            q25, median, q75 = quartiles(times)
            pooled[which].extend(times)
            medians[which].append(median)
            spreads.append((q75 - q25) / median if median > 0 else 0.0)
    ratios = [b / a for a, b in zip(medians[0], medians[1]) if a > 0]
    if rounds > 1:
        noise = max(
            (max(v) - min(v)) / statistics.median(v) if statistics.median(v) > 0 else 0.0 for v in medians.values()
        )
    else:
        noise = statistics.median(spreads)
    spec = backend.spec
    first_q, second_q = quartiles(pooled[0]), quartiles(pooled[1])
    return PairedLatency(
        first_ms=float(statistics.median(medians[0])),
        second_ms=float(statistics.median(medians[1])),
        rounds=rounds,
        repeats_per_round=repeats,
        first_rounds_ms=medians[0],
        second_rounds_ms=medians[1],
        first_quartiles_ms=[first_q[0], first_q[2]],
        second_quartiles_ms=[second_q[0], second_q[2]],
        speedup_pct=float(100 * (1 - statistics.median(ratios))) if ratios else 0.0,
        noise_pct=float(100 * noise),
        within_round_iqr_pct=float(100 * statistics.median(spreads)),
        faster_every_round=all(b < a for a, b in zip(medians[0], medians[1])),
        device=spec.device,
        num_threads=first.num_threads,
        batch_size=spec.batch_size,
        backend=spec.backend,
        machine=machine_description(),
        runtime=backend.record(),
    )


def choose_b_model(
    session: LatencySession,
    encoder: ArchEncoder,
    budget: BudgetSpec,
    result: EvolutionResult,
    reference: SearchedSubnet,
    latency: LatencyEfficiency,
    value: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Walk the B-candidates (within A's predicted latency), best predicted first, that are predicted at least as
    accurate as the A-model `reference`; re-time each against A on the runtime, alternating in the same session
    (`compare_latency`), and keep the first measured faster than A by more than the noise. Else B is A's arch,
    and the record says why. The latency model alone cannot decide for candidates predicted within its error of
    the budget (`near_budget` in the record), and most winners of a search sit there. Returns (genes, Table 12
    record); `session` is the search's `LatencySession` (latency model fitted), `value` the budget in predicted ms."""
    settings = session.config.latency
    a_name, b_name = budget.latency_of.upper(), budget.name.upper()
    reference_genes = encoder.encode(reference.arch)
    reference_timed = session.prepared(reference.arch, keep=True)
    band = session.near_budget_band()
    timing = {"rounds": settings.b_vs_a_rounds, "warmup": settings.warmup, "repeats": settings.repeats}
    checked: list[dict[str, Any]] = []
    for genes, score in zip(result.final_population, result.final_scores):
        if len(checked) >= settings.b_vs_a_candidates:
            break
        if np.array_equal(genes, reference_genes) or score < reference.predicted_accuracy:
            break  # A itself, or predicted less accurate than A: no B worth its name from here on
        arch = encoder.decode(genes)
        predicted_ms = float(latency(genes[None])[0])
        paired = compare_latency(session.runtime, reference_timed, session.prepared(arch, keep=True), **timing)
        checked.append(
            {
                "arch": arch,
                "predicted_accuracy": float(score),
                "predicted_latency_ms": predicted_ms,
                "near_budget": abs(predicted_ms / value - 1) * 100 <= band,
                "a_ms": paired.first_ms,
                "b_ms": paired.second_ms,
                "speedup_pct": paired.speedup_pct,
                "noise_pct": paired.noise_pct,
                "faster_every_round": paired.faster_every_round,
                "faster_beyond_noise": paired.faster_beyond_noise,
            }
        )
        if paired.faster_beyond_noise:
            return genes, {
                "a_model": budget.latency_of,
                "same_arch_as_a": False,
                "a_latency_ms": paired.first_ms,
                "b_latency_ms": paired.second_ms,
                "a_latency_quartiles_ms": paired.first_quartiles_ms,
                "b_latency_quartiles_ms": paired.second_quartiles_ms,
                "speedup_pct": paired.speedup_pct,
                "noise_pct": paired.noise_pct,
                "measurement": paired.to_dict(),
                "candidates_checked": len(checked),
                "candidates": checked,
            }
    # A's arch: timed once more for the record, in this session.
    own = measure_timed(session.runtime, reference_timed, warmup=settings.warmup, repeats=settings.repeats)
    if checked:
        best = max(checked, key=lambda c: c["speedup_pct"])
        rounds = "" if best["faster_every_round"] else ", not in every round"
        note = (
            f"none of the {len(checked)} candidate(s) within {a_name}'s predicted latency and predicted at least "
            f"as accurate was measured faster than {a_name} in every round by more than the noise (best: "
            f"{best['speedup_pct']:.1f} % faster{rounds}, noise {best['noise_pct']:.1f} %): {b_name} is "
            f"{a_name}'s arch"
        )
    else:
        note = (
            f"no arch within {a_name}'s predicted latency is predicted more accurate than {a_name}: {b_name} is "
            f"{a_name}'s arch"
        )
    return reference_genes, {
        "a_model": budget.latency_of,
        "same_arch_as_a": True,
        "a_latency_ms": own.median_ms,
        "b_latency_ms": own.median_ms,
        "a_latency_quartiles_ms": [own.q25_ms, own.q75_ms],
        "b_latency_quartiles_ms": [own.q25_ms, own.q75_ms],
        "measurement": {**own.to_dict(), "machine": own.runtime["machine"]},
        "candidates_checked": len(checked),
        "candidates": checked,
        "note": note,
    }
