"""The Pareto fronts of a search (`pareto.json`) and their plot (`pareto.png`): top-1 vs MACs and vs latency, every
evaluated candidate, the fronts, named picks."""

from __future__ import annotations

import os
from typing import Any

from ..utils.io import atomic_file
from .encoding import ArchEncoder
from .named import SearchedSubnet
from .results import SearchResults, pareto_front

__all__ = ["plot_pareto", "write_pareto"]


def write_pareto(
    results: SearchResults,
    encoder: ArchEncoder,
    candidates: list[dict[str, Any]],
    named: dict[str, SearchedSubnet],
    latency,
    title: str = "",
) -> None:
    """Write `pareto.json` (both fronts over the evaluated candidates and the named picks; a candidate's latency is
    the latency model's prediction, `latency` the search's `LatencyEfficiency`) and `pareto.png`."""
    points = []
    for record in candidates:
        genes = encoder.encode(record["arch"])[None]
        points.append({**record, "latency_ms": float(latency(genes)[0]), "name": None})
    for name, entry in named.items():
        points.append(
            {
                "kind": f"searched:{name}",
                "arch": entry.arch,
                "macs": entry.macs,
                "params": entry.params,
                "accuracy": entry.accuracy,
                "latency_ms": entry.predicted_latency_ms,
                "name": name,
            }
        )
    fronts = {
        "accuracy_vs_macs": pareto_front(points, "macs", "accuracy"),
        "accuracy_vs_latency": pareto_front(points, "latency_ms", "accuracy"),
        "latency_note": "latency_ms here is the latency model's prediction (the measured one is in named.json)",
        "num_points": len(points),
    }
    results.write_json("pareto.json", fronts)
    plot_pareto(points, fronts, results.path("pareto.png"), title=title)


def plot_pareto(
    points: list[dict[str, Any]], fronts: dict[str, Any], path: str | os.PathLike, title: str = ""
) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = [
        ("macs", 1e-6, "MACs (M)", "accuracy_vs_macs"),
        ("latency_ms", 1.0, "latency (ms)", "accuracy_vs_latency"),
    ]
    for axis, (key, scale, label, front_key) in zip(axes, panels):
        sampled = [p for p in points if p.get("name") is None]
        axis.scatter(
            [p[key] * scale for p in sampled],
            [p["accuracy"] for p in sampled],
            s=10,
            alpha=0.5,
            label="evaluated subnets",
        )
        front = fronts[front_key]
        axis.plot(
            [p[key] * scale for p in front],
            [p["accuracy"] for p in front],
            "-o",
            color="C3",
            markersize=3,
            label="Pareto front",
        )
        labels: dict[tuple[float, float], list[str]] = {}
        for p in points:
            if p.get("name"):
                labels.setdefault((p[key] * scale, p["accuracy"]), []).append(p["name"].upper())
        for (x, y), names in labels.items():
            axis.scatter([x], [y], marker="*", s=90, color="C2")
            axis.annotate("/".join(names), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axis.set_xlabel(label)
        axis.set_ylabel("top-1 (%) after BN recalibration")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    try:
        with atomic_file(path, ".png") as (_, temp):
            figure.savefig(temp, dpi=120)
    finally:
        plt.close(figure)
