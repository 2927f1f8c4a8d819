"""CPU latency of NASViT A-sized subnets: onnxruntime and torch.compile against PyTorch eager, in one run.

    python benchmarks/bench_deployment.py                       # A0-A5, batch 1 and 32, torch.compile on A0
    python benchmarks/bench_deployment.py --sizes a0,a5 --compile_sizes a0,a5 --output results.json

For each size it builds a subnet of the reference search space with random weights (latency does not depend on the
values), exports it with `nasvit_hf.deploy.export_onnx` (dynamic batch, verified against eager), and times
eager (`torch.inference_mode`), onnxruntime (CPU provider) and, for `--compile_sizes`,
`torch.compile` (default mode, one static compile per batch size). Rounds interleave the backends in a rotating
order and each backend's median is compared with eager's median from the same rounds, so machine noise shared by
the rounds cancels in the ratios. Compilation (minutes per shape on 2 cores) is why torch.compile runs on A0 only
by default; export and compile times are reported too. Every backend gets `--threads` threads (default 1).

Peers (`--peers`, default MobileNetV2 and LeViT-128S): transformers' MobileNetV2ForImageClassification (1.0, 224) and
LevitForImageClassification (128S) built from their default configs with ImageNet's 1000 classes (as NASViT) and
random weights, exported the same way
(`torch.onnx.export(dynamo=True)`, dynamic batch, outputs checked against eager) and timed in the same rounds scheme
at 224 px, so the table places NASViT among deployed peers. The `onnxruntime-modules` backend (off by default) exports
the NASViT subnet with its inference plan switched off (`inference_fast_path = False`: the graph of the modules, BN
and all), to show what the plan brings to the exported graph.

A-sized archs: the paper's A0-A5 MACs budgets (Table 6: 208, 309, 421, 528, 591, 757 M). A named preset `aN` with a
searched arch is used when there is one; else a Table 13 arch within 3 % of the budget (table13-a1 for A0,
table13-a3 for A4, table13-a4 for A5; see nasvit_hf.presets on why Table 13's labels are off); else the seeded
random arch of the reference space whose `count_macs` is nearest the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Any

import torch

import nasvit_hf
from nasvit_hf.deploy import OnnxRunner, export_onnx
from nasvit_hf.deploy.common import MAX_DYNAMIC_BATCH
from nasvit_hf.models.search_space_nasvit import sample_arch
from nasvit_hf.presets import NAMED_ARCHS, TABLE13_MEASURED_MACS_MILLIONS, get_named_arch
from nasvit_hf.utils.extras import require_extra

PAPER_BUDGETS_MILLIONS = {"a0": 208, "a1": 309, "a2": 421, "a3": 528, "a4": 591, "a5": 757}
BACKENDS = ["eager", "onnxruntime", "onnxruntime-modules", "compile"]
PEERS = ["mobilenetv2", "levit"]


def a_sized_arch(name: str, config: nasvit_hf.NASViTConfig, seed: int = 0, samples: int = 20000) -> dict[str, Any]:
    """`{"arch", "macs_millions", "source"}` of the subnet standing in for the paper's `name` (a0..a5)."""
    budget = PAPER_BUDGETS_MILLIONS[name]
    named = get_named_arch(name)
    if named.arch is not None:
        arch, source = named.arch, f"preset {name}"
    else:
        close = [key for key, macs in TABLE13_MEASURED_MACS_MILLIONS.items() if abs(macs - budget) <= 0.03 * budget]
        if close:
            key = min(close, key=lambda k: abs(TABLE13_MEASURED_MACS_MILLIONS[k] - budget))
            arch, source = NAMED_ARCHS[key].arch, f"preset {key}"
        else:
            rng = random.Random(f"{seed}-{name}")
            best, best_gap = None, float("inf")
            for _ in range(samples):
                candidate = sample_arch(config.search_space, rng)
                gap = abs(nasvit_hf.count_macs(config, candidate) / 1e6 - budget)
                if gap < best_gap:
                    best, best_gap = candidate, gap
            arch, source = best, f"random sample nearest {budget} M (seed {seed})"
    return {"arch": arch, "macs_millions": nasvit_hf.count_macs(config, arch) / 1e6, "source": source}


def time_call(function, inputs) -> float:
    start = time.perf_counter()
    function(inputs)
    return time.perf_counter() - start


def benchmark_size(name: str, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    reference = nasvit_hf.NASViTConfig()
    chosen = a_sized_arch(name, reference, seed=args.seed)
    arch = chosen["arch"]
    config = reference.subnet_config(arch)
    torch.manual_seed(args.seed)
    model = nasvit_hf.NASViTForImageClassification(config).eval()
    result: dict[str, Any] = {"size": name, "resolution": arch["resolution"], **chosen, "batches": {}}
    backends = [backend for backend in args.backends if backend != "compile" or name in args.compile_sizes]

    runners = {}
    if "onnxruntime" in backends:
        report = export_onnx(model, os.path.join(workdir, f"{name}.onnx"), dynamic_batch=True)
        result["onnx_export_seconds"] = report.export_seconds
        result["onnx_max_abs_diff"] = max(report.max_abs_diff.values())
        runners["onnxruntime"] = OnnxRunner(report.path, num_threads=args.threads)
    if "onnxruntime-modules" in backends:
        model.nasvit.inference_fast_path = False
        report = export_onnx(model, os.path.join(workdir, f"{name}-modules.onnx"), dynamic_batch=True)
        model.nasvit.inference_fast_path = True
        runners["onnxruntime-modules"] = OnnxRunner(report.path, num_threads=args.threads)
    compiled = torch.compile(model) if "compile" in backends else None

    calls = {
        "eager": lambda x: model(x).logits,
        "compile": lambda x: compiled(x).logits,
        **{
            key: (lambda x, r=runner: r.session.run(None, {"pixel_values": x.numpy()}))
            for key, runner in runners.items()
        },
    }
    time_backends(calls, backends, arch["resolution"], args, result)
    return result


def _export_peer(model: torch.nn.Module, path: str, example: torch.Tensor) -> dict[str, Any]:
    """Export a transformers image classifier exactly as `export_onnx` exports NASViT (dynamo, dynamic batch)."""
    import numpy as np

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values).logits

    wrapper = Logits(model).eval()
    start = time.perf_counter()
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},),
            verbose=False,
        )
    seconds = time.perf_counter() - start
    program.save(path, external_data=False)
    session = _peer_session(path, threads=None)
    with torch.no_grad():
        expected = wrapper(example).numpy()
    output = session.run(None, {"pixel_values": example.numpy()})[0]
    return {"seconds": seconds, "max_abs_diff": float(np.abs(output - expected).max())}


def _peer_session(path: str, threads: int | None):
    """A plain onnxruntime session for a peer's graph (OnnxRunner is for NASViT exports: it checks their metadata),
    with OnnxRunner's thread settings."""
    _, onnxruntime, _ = require_extra("export", "the deployment benchmark")
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def benchmark_peer(name: str, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """MobileNetV2-1.0 or LeViT-128S from transformers (default config, random weights): eager and onnxruntime."""
    from transformers import (
        LevitConfig,
        LevitForImageClassification,
        MobileNetV2Config,
        MobileNetV2ForImageClassification,
    )

    torch.manual_seed(args.seed)
    if name == "mobilenetv2":
        model, label = MobileNetV2ForImageClassification(MobileNetV2Config(num_labels=1000)).eval(), "MobileNetV2-1.0"
    else:
        model, label = LevitForImageClassification(LevitConfig(num_labels=1000)).eval(), "LeViT-128S"
    resolution = 224
    macs = {"mobilenetv2": 300, "levit": 305}[name]
    result: dict[str, Any] = {"size": label, "resolution": resolution, "macs_millions": macs, "batches": {}}
    result["source"] = "transformers, default config with 1000 classes, random weights (MACs as published)"
    backends = [backend for backend in args.backends if backend in ("eager", "onnxruntime")]
    runners = {}
    if "onnxruntime" in backends:
        path = os.path.join(workdir, f"{name}.onnx")
        export = _export_peer(model, path, torch.randn(2, 3, resolution, resolution))
        result["onnx_export_seconds"] = export["seconds"]
        result["onnx_max_abs_diff"] = export["max_abs_diff"]
        runners["onnxruntime"] = _peer_session(path, threads=args.threads)
    calls = {
        "eager": lambda x: model(x).logits,
        **{key: (lambda x, s=session: s.run(None, {"pixel_values": x.numpy()})) for key, session in runners.items()},
    }
    time_backends(calls, backends, resolution, args, result)
    return result


def time_backends(calls, backends: list[str], resolution: int, args: argparse.Namespace, result: dict) -> None:
    name = result["size"]
    for batch in args.batch_sizes:
        pixel_values = torch.randn(batch, 3, resolution, resolution)
        repeats = args.repeats if batch <= 8 else args.repeats_large
        times: dict[str, list[float]] = {backend: [] for backend in backends}
        entry: dict[str, Any] = {"repeats": repeats}
        with torch.inference_mode():
            for backend in backends:  # warm-up; the first torch.compile call compiles this shape
                seconds = time_call(calls[backend], pixel_values)
                if backend == "compile":
                    entry["compile_seconds"] = seconds
            for round_index in range(repeats):
                shift = round_index % len(backends)
                for backend in backends[shift:] + backends[:shift]:
                    times[backend].append(time_call(calls[backend], pixel_values))
        medians = {backend: statistics.median(values) for backend, values in times.items()}
        entry["median_ms"] = {backend: 1000 * value for backend, value in medians.items()}
        entry["speedup_vs_eager"] = {backend: medians["eager"] / value for backend, value in medians.items()}
        result["batches"][str(batch)] = entry
        entry["load_average"] = f"{os.getloadavg()[0]:.1f}"
        print(
            f"  {name} batch {batch}: "
            + ", ".join(f"{b} {1000 * m:.1f} ms" for b, m in medians.items())
            + f" (load average {entry['load_average']})",
            flush=True,
        )


def _cell(entry: dict[str, Any], backend: str) -> str:
    if backend not in entry["median_ms"]:
        return "-"
    return f"{entry['median_ms'][backend]:.1f} ({entry['speedup_vs_eager'][backend]:.2f}x)"


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | MACs, px | batch | eager ms | onnxruntime ms (speed-up) | onnxruntime, plan off ms (speed-up) "
        "| torch.compile ms (speed-up) | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for batch, entry in result["batches"].items():
            lines.append(
                f"| {result['size'].upper() if len(result['size']) == 2 else result['size']} | "
                f"{result['macs_millions']:.0f} M, {result['resolution']} | {batch} | "
                f"{entry['median_ms']['eager']:.1f} | {_cell(entry, 'onnxruntime')} | "
                f"{_cell(entry, 'onnxruntime-modules')} | {_cell(entry, 'compile')} | {entry['load_average']} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="a0,a1,a2,a3,a4,a5", help="Comma-separated A-sizes (a0..a5).")
    parser.add_argument("--batch_sizes", default="1,32")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"Comma-separated subset of {BACKENDS}.")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"Comma-separated subset of {PEERS} to run beside NASViT ('' for none).",
    )
    parser.add_argument("--compile_sizes", default="a0", help="Sizes that also run torch.compile ('all': every size).")
    parser.add_argument("--repeats", type=int, default=10, help="Timed rounds at batch sizes <= 8.")
    parser.add_argument("--repeats_large", type=int, default=3, help="Timed rounds at larger batch sizes.")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for every backend (default 1: on a shared machine OpenMP barriers of several threads make "
        "eager PyTorch up to 100x slower and the timings meaningless; raise it on a dedicated machine).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="Write the results as JSON here.")
    args = parser.parse_args(argv)
    args.sizes = [size.strip().lower() for size in args.sizes.split(",")]
    unknown = [size for size in args.sizes if size not in PAPER_BUDGETS_MILLIONS]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {sorted(PAPER_BUDGETS_MILLIONS)}.")
    args.batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    args.backends = [backend.strip() for backend in args.backends.split(",")]
    if "eager" not in args.backends or any(backend not in BACKENDS for backend in args.backends):
        parser.error(f"--backends must include eager and be a subset of {BACKENDS}.")
    args.peers = [peer.strip().lower() for peer in args.peers.split(",") if peer.strip()]
    if any(peer not in PEERS for peer in args.peers):
        parser.error(f"--peers must be a subset of {PEERS}.")
    args.compile_sizes = args.sizes if args.compile_sizes == "all" else args.compile_sizes.lower().split(",")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.sizes:
            results.append(benchmark_size(name, args, workdir))
        for name in args.peers:
            results.append(benchmark_peer(name, args, workdir))
    table = markdown_table(results)
    print(table)
    for result in results:
        extras = [f"{result['size'].upper()}: {result['source']}"]
        if "onnx_export_seconds" in result:
            extras.append(f"ONNX export {result['onnx_export_seconds']:.0f} s")
        compile_seconds = [entry.get("compile_seconds") for entry in result["batches"].values()]
        if any(compile_seconds):
            extras.append(
                "torch.compile " + ", ".join(f"{s:.0f} s" for s in compile_seconds if s) + " (per batch size)"
            )
        print("  " + "; ".join(extras))
    total = time.perf_counter() - start
    print(f"total {total / 60:.1f} min")
    if args.output:
        temp = f"{args.output}.tmp"
        with open(temp, "w") as handle:
            json.dump(
                {"results": results, "table": table, "threads": args.threads, "seconds": total}, handle, indent=2
            )
        os.replace(temp, args.output)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
