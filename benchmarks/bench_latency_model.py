#!/usr/bin/env python
"""How well search's latency model predicts subnets it was not fitted on, per runtime, and what fitting it costs.

    python benchmarks/bench_latency_model.py --backend eager --output_dir outputs/latency_model/eager
    python benchmarks/bench_latency_model.py --backend onnxruntime --output_dir outputs/latency_model/onnxruntime
    python benchmarks/bench_latency_model.py --report outputs/latency_model/eager outputs/latency_model/onnxruntime

Each measuring run samples `--num_archs` seeded random archs of the reference search space (the paper's resolutions,
192-288 px; `--space` for another), builds each subnet with random weights (latency does not depend on the values) and
times it on the runtime search uses for `latency.backend` (`nasvit_hf.search.runtimes`: eager PyTorch, or onnxruntime
on the graph `nasvit_hf.deploy.export_onnx` writes), batch `--batch_size`, `--threads` intra-op threads, `--warmup` +
`--repeats` runs, median, on the wall clock or (`--clock process`, one thread) this process's CPU time, what an idle
core would take, for a machine shared with other jobs. The measurements go to `<output_dir>/measurements.jsonl` as they
are taken (rerun the same command to resume; onnxruntime exports take half a minute each). At the end the first
`--repeat_archs` archs are timed a second time, in the same session: that run-to-run difference and the repeats'
inter-quartile range are the measurement noise every error figure is reported against. Right after each arch, arch 0 is
timed again (`reference_ms`): on a machine shared with other jobs its speed drifts over an hour-long run, and the
errors are also reported on timings scaled by arch 0's time at that moment (`drift_corrected` in the report).

Then the latency model (`nasvit_hf.search.LatencyModel`: non-negative linear, relative-error weighted) is fitted with
each feature set below and its mean absolute percentage error is reported on archs it was not fitted on: on the
held-out quarter (the first archs sampled, as search holds them out) and as the mean over `--splits` random 3:1 splits.

- `all`: every operator count (`nasvit_hf.macs.operator_counts`): MACs by operator class, activation elements,
  block counts (search's model);
- `all - <group>`: without one of the groups `macs`, `memory`, `overhead` (`nasvit_hf.search.latency.FEATURE_GROUPS`);
- `macs`: the MACs total alone; `previous features`: the features search used before (convolution / transformer / head
  MACs and block counts), fitted the same way; `previous model`: those features fitted for the absolute error, as
  search did before.

And a learning curve: the error of `all` fitted on fewer archs. `report.json` / `report.md` in the output folder;
`--report DIR [DIR ...]` prints one table over several runs (the one in docs/search-and-extract.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import nasvit_hf
from nasvit_hf.macs import stage_macs
from nasvit_hf.models.search_space_nasvit import TRANSFORMER_STAGES, sample_arch
from nasvit_hf.presets import get_search_space
from nasvit_hf.search import LatencyModel, RuntimeSpec, SearchResults, make_backend
from nasvit_hf.search.latency import (
    FEATURE_GROUPS,
    LATENCY_FEATURE_NAMES,
    latency_features,
    measure_timed,
    min_fit_archs,
)
from nasvit_hf.utils.io import atomic_write_json, atomic_write_text

PREVIOUS_FEATURES = ["conv_macs", "transformer_macs", "head_macs", "mbconv_blocks", "transformer_layers"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["eager", "onnxruntime"], default="eager")
    parser.add_argument("--output_dir", help="measurements and report (resumable)")
    parser.add_argument("--space", default="reference", help="search space preset (default: the reference space)")
    parser.add_argument("--num_archs", type=int, default=48)
    parser.add_argument("--holdout_fraction", type=float, default=0.25)
    parser.add_argument("--repeat_archs", type=int, default=12, help="archs timed twice (run-to-run noise)")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="wall time, or this process's CPU time (one thread: what an idle core takes, on a shared machine)",
    )
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--splits", type=int, default=200, help="random 3:1 splits for the mean held-out error")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", nargs="+", metavar="DIR", help="print one table over these finished runs")
    parser.add_argument(
        "--from_search",
        nargs=2,
        metavar=("SEARCH_DIR", "SUPERNET_DIR"),
        help="evaluate the feature sets on a search's own latency measurements (latency.jsonl) instead of measuring",
    )
    return parser.parse_args(argv)


def previous_features(config: nasvit_hf.NASViTConfig, arch: dict[str, Any]) -> np.ndarray:
    """The features of the latency model search used before the operator counts (for the comparison only)."""
    stages = stage_macs(config, arch, validate=False)
    conv, transformer, mbconv_blocks, transformer_layers = stages[0][1], 0, 0, 0
    for (name, macs, _), depth in zip(stages[1:], arch["depth"]):
        if name in TRANSFORMER_STAGES:
            transformer += macs
            mbconv_blocks += 1
            transformer_layers += depth - 1
        else:
            conv += macs
            mbconv_blocks += depth
    head = nasvit_hf.count_macs(config, arch, validate=False) - sum(macs for _, macs, _ in stages)
    return np.array([conv, transformer, head, mbconv_blocks, transformer_layers], dtype=np.float64)


def feature_sets() -> dict[str, list[str]]:
    sets = {"all": list(LATENCY_FEATURE_NAMES)}
    for group, names in FEATURE_GROUPS.items():
        sets[f"all - {group}"] = [name for name in LATENCY_FEATURE_NAMES if name not in names]
    sets["macs"] = ["macs"]
    sets["previous features"] = PREVIOUS_FEATURES
    sets["previous model"] = PREVIOUS_FEATURES  # the same features, fitted for the absolute error as it was
    return sets


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line of an interrupted run
            break
    return records


def measure(args: argparse.Namespace, output: Path) -> list[dict[str, Any]]:
    config = nasvit_hf.NASViTConfig(search_space=get_search_space(args.space), num_labels=1000)
    rng = random.Random(args.seed)
    archs = [sample_arch(config.search_space, rng) for _ in range(args.num_archs)]
    keys = ("backend", "space", "batch_size", "threads", "clock", "warmup", "repeats", "seed")
    settings = {key: getattr(args, key) for key in keys}
    run_file = output / "run.json"
    if run_file.is_file() and json.loads(run_file.read_text())["settings"] != settings:
        raise SystemExit(f"{output} holds a run with other settings; use another --output_dir.")
    backend = make_backend(RuntimeSpec(args.backend, "cpu", args.threads, args.batch_size, clock=args.clock))
    atomic_write_json(run_file, {"settings": settings, "runtime": backend.record()})
    results = SearchResults(output)  # its jsonl reader drops a torn last line from the file before more is appended
    done = {(r["index"], r["pass"]): r for r in results.read_jsonl("measurements.jsonl")}
    kept = {}

    def prepare(index: int):
        start = time.perf_counter()
        torch.manual_seed(index)
        model = nasvit_hf.NASViTForImageClassification(config.subnet_config(archs[index])).eval()
        return backend.prepare(model, archs[index]["resolution"]), time.perf_counter() - start

    reference = None  # arch 0, timed again right after every arch: how fast the machine was at that moment
    for index, arch in enumerate(archs):
        needs_repeat = index < args.repeat_archs and (index, 2) not in done
        if (index, 1) in done and not needs_repeat:
            continue
        timed, prepare_seconds = prepare(index)
        if reference is None:  # prepared only when something is measured (a finished run is only evaluated)
            reference = timed if index == 0 else prepare(0)[0]
        if needs_repeat:
            kept[index] = timed
        if (index, 1) in done:
            continue
        record = _timing(backend, timed, args, index, arch, 1, prepare_seconds, time.perf_counter(), reference)
        results.append_jsonl("measurements.jsonl", record)
        done[(index, 1)] = record
        print(f"[{index + 1}/{len(archs)}] {arch['resolution']} px: {record['median_ms']:.2f} ms "
              f"(IQR {100 * record['relative_iqr']:.1f} %, prepared in {prepare_seconds:.1f} s)", flush=True)  # fmt: skip
    for index, timed in kept.items():  # the second pass: run-to-run noise in the same session
        record = _timing(backend, timed, args, index, archs[index], 2, 0.0, time.perf_counter(), reference)
        results.append_jsonl("measurements.jsonl", record)
        done[(index, 2)] = record
    return [done[key] for key in sorted(done)]


def _timing(backend, timed, args, index, arch, which, prepare_seconds, start, reference) -> dict[str, Any]:
    measurement = measure_timed(backend, timed, warmup=args.warmup, repeats=args.repeats)
    timing_seconds = time.perf_counter() - start  # the drift reference's timing is the benchmark's, not search's
    reference_ms = measure_timed(backend, reference, warmup=args.warmup, repeats=args.repeats).median_ms
    return {
        "index": index,
        "pass": which,
        "arch": arch,
        "median_ms": measurement.median_ms,
        "reference_ms": reference_ms,
        "relative_iqr": measurement.relative_iqr,
        "prepare_seconds": prepare_seconds,
        "timing_seconds": timing_seconds,
        "load_average": os.getloadavg()[0],
    }


def _mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(100 * np.mean(np.abs(predicted - measured) / measured))


def drift_corrected(records: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The records with each latency scaled by how fast the machine was when it was taken: arch 0's time measured
    right after it, against arch 0's median over the session (None when the run has no reference timings). On an
    idle machine the factor is 1; on a shared one it removes the slow drift of the machine's speed over a run."""
    if not records or any("reference_ms" not in r for r in records):
        return None
    typical = statistics.median(r["reference_ms"] for r in records)
    return [{**r, "median_ms": r["median_ms"] * typical / r["reference_ms"]} for r in records]


def evaluate(records: list[dict[str, Any]], args: argparse.Namespace, config=None) -> dict[str, Any]:
    if config is None:
        config = nasvit_hf.NASViTConfig(search_space=get_search_space(args.space), num_labels=1000)
    first = sorted((r for r in records if r["pass"] == 1), key=lambda r: r["index"])
    second = {r["index"]: r for r in records if r["pass"] == 2}
    measured = np.array([r["median_ms"] for r in first])
    count = len(first)
    num_holdout = max(1, int(round(count * args.holdout_fraction)))
    matrices = {}
    for name, names in feature_sets().items():
        if name.startswith("previous"):
            matrices[name] = np.stack([previous_features(config, r["arch"]) for r in first])
        else:
            matrices[name] = np.stack([latency_features(config, r["arch"], names) for r in first])
    split_rng = np.random.default_rng(args.seed)
    splits = [split_rng.permutation(count) for _ in range(args.splits)]
    results = {name: _errors(matrix, measured, num_holdout, splits, name) for name, matrix in matrices.items()}
    curve = {}
    for fit_size in sorted({min_fit_archs(), 28, count - num_holdout}):
        if fit_size > count - num_holdout:
            continue
        errors = [
            _fit_error(
                "all", matrices["all"], measured, order[num_holdout : num_holdout + fit_size], order[:num_holdout]
            )
            for order in splits
        ]
        curve[str(fit_size)] = float(np.mean(errors))
    repeat = [
        abs(second[i]["median_ms"] - r["median_ms"]) / ((second[i]["median_ms"] + r["median_ms"]) / 2)
        for i, r in enumerate(first)
        if i in second
    ]
    return {
        "num_archs": count,
        "num_holdout": num_holdout,
        "num_splits": len(splits),
        "latency_ms": {
            "min": float(measured.min()),
            "median": float(np.median(measured)),
            "max": float(measured.max()),
        },
        "noise": {
            "repeats_relative_iqr_pct": float(100 * statistics.median(r["relative_iqr"] for r in first)),
            "run_to_run_pct": float(100 * statistics.median(repeat)) if repeat else None,
            "run_to_run_archs": len(repeat),
            # arch 0 timed after every arch, over the whole session: the machine's drift plus run-to-run noise
            "reference_spread_pct": _reference_spread(records),
        },
        "feature_sets": results,
        "learning_curve_all": curve,
        "cost_seconds_per_arch": {
            "prepare": float(statistics.median(r["prepare_seconds"] for r in first)),
            "timing": float(statistics.median(r["timing_seconds"] for r in first)),
            "total_measuring": float(sum(r["prepare_seconds"] + r["timing_seconds"] for r in records)),
        },
        "load_average_median": float(statistics.median(r.get("load_average", float("nan")) for r in records)),
    }


def _reference_spread(records: list[dict[str, Any]]) -> float | None:
    """100 * the median absolute deviation of arch 0's repeated timings from their median, over their median."""
    times = [r["reference_ms"] for r in records if "reference_ms" in r]
    if len(times) < 2:
        return None
    middle = statistics.median(times)
    return float(100 * statistics.median(abs(t - middle) for t in times) / middle)


def _model(name: str) -> LatencyModel:
    return LatencyModel(feature_names=feature_sets()[name], relative=name != "previous model")


def _fit_error(name: str, matrix, measured, fit, holdout) -> float:
    model = _model(name).fit(matrix[fit], measured[fit])
    return _mape(model.predict(matrix[holdout]), measured[holdout])


def _errors(matrix, measured, num_holdout, splits, name) -> dict[str, Any]:
    holdout, fit = np.arange(num_holdout), np.arange(num_holdout, len(measured))
    model = _model(name).fit(matrix[fit], measured[fit])
    predicted = model.predict(matrix[holdout])
    errors = np.abs(predicted - measured[holdout]) / measured[holdout]
    split_errors = [_fit_error(name, matrix, measured, order[num_holdout:], order[:num_holdout]) for order in splits]
    return {
        "features": feature_sets()[name],
        "holdout_mean_abs_pct_error": float(100 * errors.mean()),
        "holdout_max_abs_pct_error": float(100 * errors.max()),
        "splits_mean_abs_pct_error": float(np.mean(split_errors)),
        "splits_p90_abs_pct_error": float(np.percentile(split_errors, 90)),
    }


def markdown(runs: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> str:
    """One column per run, and one more per run with drift-corrected timings (`drift_corrected`)."""
    runs = [
        column
        for name, run, report in runs
        for column in (
            [(name, run, report)]
            + (
                [(name, {"settings": {**run["settings"], "clock": run["settings"]["clock"] + ", drift-corrected"}},
                  report["drift_corrected"])]
                if "drift_corrected" in report
                else []
            )
        )
    ]  # fmt: skip
    names = list(feature_sets())
    header = "| features | " + " | ".join(
        f"{run['settings']['backend']} ({run['settings']['clock']} clock): held out / {report['num_splits']} splits"
        for _, run, report in runs
    )
    lines = [header + " |", "|---|" + "---|" * len(runs)]
    for name in names:
        cells = [
            f"{report['feature_sets'][name]['holdout_mean_abs_pct_error']:.1f} / "
            f"{report['feature_sets'][name]['splits_mean_abs_pct_error']:.1f} %"
            for _, _, report in runs
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    def noise(report: dict[str, Any]) -> str:
        parts = [f"{report['noise']['repeats_relative_iqr_pct']:.1f} % IQR"]
        if report["noise"].get("run_to_run_pct") is not None:
            parts.append(f"{report['noise']['run_to_run_pct']:.1f} % run to run")
        if report["noise"].get("reference_spread_pct") is not None:
            parts.append(f"arch 0 over the session {report['noise']['reference_spread_pct']:.1f} %")
        return ", ".join(parts)

    lines.append("| *measurement noise* | " + " | ".join(noise(report) for _, _, report in runs) + " |")
    return "\n".join(lines)


def from_search(args: argparse.Namespace, search_dir: Path, supernet_dir: Path) -> int:
    """The feature-set table on the measurements a search made (its held-out archs are the first ones, as here)."""
    config = nasvit_hf.NASViTConfig.from_pretrained(supernet_dir)
    settings = json.loads((search_dir / "latency_model.json").read_text())["settings"]
    args.holdout_fraction = settings["holdout_fraction"]
    records = [
        {"index": r["index"], "pass": 1, "arch": r["arch"], "median_ms": r["measurement"]["median_ms"],
         "relative_iqr": (r["measurement"]["q75_ms"] - r["measurement"]["q25_ms"]) / r["measurement"]["median_ms"],
         "prepare_seconds": r.get("seconds", 0.0), "timing_seconds": 0.0}
        for r in _jsonl(search_dir / "latency.jsonl")
    ] + [
        {"index": r["index"], "pass": 2, "median_ms": r["median_ms"], "prepare_seconds": 0.0, "timing_seconds": 0.0}
        for r in _jsonl(search_dir / "latency_repeat.jsonl")
    ]  # fmt: skip
    report = evaluate(records, args, config)
    run = {"settings": {**settings, "clock": settings.get("clock", "wall")}}
    print(markdown([(str(search_dir), run, report)]))
    print(json.dumps({k: report[k] for k in ("noise", "learning_curve_all")}, indent=2))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        runs = []
        for folder in args.report:
            folder = Path(folder)
            runs.append((str(folder), json.loads((folder / "run.json").read_text()),
                         json.loads((folder / "report.json").read_text())))  # fmt: skip
        print(markdown(runs))
        return 0
    if args.from_search:
        return from_search(args, *map(Path, args.from_search))
    if not args.output_dir:
        raise SystemExit("--output_dir is required to measure (or give --report DIR ... to print a table).")
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    records = measure(args, output)
    report = evaluate(records, args)
    corrected = drift_corrected(records)
    if corrected is not None:
        report["drift_corrected"] = evaluate(corrected, args)
    report["runtime"] = json.loads((output / "run.json").read_text())["runtime"]
    atomic_write_json(output / "report.json", report)
    run = json.loads((output / "run.json").read_text())
    text = markdown([(str(output), run, report)])
    atomic_write_text(output / "report.md", text + "\n")
    print(text)
    print(json.dumps({k: report[k] for k in ("noise", "learning_curve_all", "cost_seconds_per_arch")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
