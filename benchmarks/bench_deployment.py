"""CPU latency of NASViT A0-A5-sized subnets where they are deployed (onnxruntime fp32 and int8, PyTorch eager),
against the models people would deploy instead, in one run.

    python benchmarks/bench_deployment.py --output results.json --markdown tables.md --plot pareto.png
    python benchmarks/bench_deployment.py --sizes a1 --accuracy_peers "" --threads 1   # the MAC-matched A1 check

Two tables come out of one run:

1. MACs matched: every A-sized NASViT subnet (random weights: latency does not depend on the values) exported with
   `nasvit_hf.deploy.export_onnx` (the graph laid out for onnxruntime, dynamic batch, verified against the modules)
   and, with `quantize="int8"`, onnxruntime's static int8 quantization of it; MobileNetV2-1.0 (300 M MACs) and
   LeViT-128S (305 M) from transformers' classes, exported the same way (`torch.onnx.export(dynamo=True)`, dynamic
   batch) and MobileNetV2 quantized the same way (`quantize_onnx`). Eager PyTorch (`model(x)` under
   `torch.inference_mode`, the inference plan) is timed at batch 1 for NASViT and the two peers: issue 14's eager
   target (NASViT <= 0.8x MobileNetV2 at batch 1); `eager-frozen` times NASViT after `freeze_inference_plan()`
   (the derived weights kept between calls). `--modules_sizes` (default a1) also times the graph of the plain
   modules (`export_onnx(graph="modules")`), to show what the layout brings.
2. Accuracy matched: the A-models (the paper's ImageNet top-1, Table 6) beside the models transformers ships at
   similar published top-1 (EfficientNet-B0, LeViT-128/192/256, SwiftFormer-XS/S/L1, MobileViT-S), built from their
   transformers configs (random weights: nothing is downloaded), exported the same way and timed in onnxruntime
   (fp32), with their published top-1 and its source. The Pareto check: no peer both at least as accurate as an
   A-model and faster. `--plot` draws top-1 vs onnxruntime latency.

Timing: for each thread count (`--threads`, default 1 and 2; onnxruntime `intra_op_num_threads`, torch's threads)
and batch size (1 and 32), every model and backend runs once per round in a rotating order (`--repeats` rounds at
batch <= 8, `--repeats_large` at 32), after one warm-up call each; medians. Ratios are taken within one run, so
machine load shared by the rounds cancels. Each call's thread CPU time is recorded beside the wall time: with one
thread on a shared machine it leaves out the time other processes held the core.

A-sized archs: the paper's A0-A5 MACs budgets (Table 6: 208, 309, 421, 528, 591, 757 M). A named preset `aN` with a
searched arch is used when there is one; else a Table 13 arch, at any resolution of the reference space, within 3 %
of the budget (A0: table13-a1 at 192 px, A1: table13-a1 at 224 px, the issue's A1 target; A4: table13-a3; A5:
table13-a4); else the seeded random arch of the reference space whose `count_macs` is nearest the budget.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import time_callables_wall_and_cpu  # noqa: E402

import nasvit_hf  # noqa: E402
from nasvit_hf.deploy import export_onnx, quantize_onnx  # noqa: E402
from nasvit_hf.deploy.common import MAX_DYNAMIC_BATCH  # noqa: E402
from nasvit_hf.models.search_space_nasvit import sample_arch  # noqa: E402
from nasvit_hf.presets import NAMED_ARCHS, get_named_arch  # noqa: E402
from nasvit_hf.utils.extras import require_extra  # noqa: E402

PAPER_BUDGETS_MILLIONS = {"a0": 208, "a1": 309, "a2": 421, "a3": 528, "a4": 591, "a5": 757}
BACKENDS = ["eager", "eager-frozen", "onnxruntime", "onnxruntime-int8", "onnxruntime-modules", "compile"]
IMAGENET_CLASSES = 1000
ARENA_MAX_BATCH = 8  # larger batches run without onnxruntime's memory arena (session()); a call takes >= 100 ms there

# The peers: transformers classes and configs, MACs as counted by torch's FlopCounterMode (1000 classes; published
# counts in brackets), published ImageNet top-1 with its source.
PEERS: dict[str, dict[str, Any]] = {
    "mobilenetv2": dict(
        label="MobileNetV2-1.0", model="MobileNetV2", config={}, resolution=224, macs=301, top1=72.0,
        source="Sandler et al., CVPR 2018, Table 4 (300 M MACs)",
    ),
    "levit-128s": dict(
        label="LeViT-128S", model="Levit", config=dict(num_attention_heads=[4, 6, 8], depths=[2, 3, 4]),
        resolution=224, macs=304, top1=76.6, source="Graham et al., ICCV 2021, Table 3 (305 M FLOPs)",
    ),
    "efficientnet-b0": dict(
        label="EfficientNet-B0", model="EfficientNet",
        config=dict(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, hidden_dim=1280, dropout_rate=0.2),
        resolution=224, macs=386, top1=77.1, source="Tan & Le, ICML 2019, Table 2 (0.39 B FLOPs)",
    ),
    "levit-128": dict(
        label="LeViT-128", model="Levit", config={}, resolution=224, macs=405, top1=78.6,
        source="Graham et al., ICCV 2021, Table 3 (406 M FLOPs)",
    ),
    "levit-192": dict(
        label="LeViT-192", model="Levit",
        config=dict(hidden_sizes=[192, 288, 384], num_attention_heads=[3, 5, 6], key_dim=[32, 32, 32]),
        resolution=224, macs=657, top1=80.0, source="Graham et al., ICCV 2021, Table 3 (658 M FLOPs)",
    ),
    "levit-256": dict(
        label="LeViT-256", model="Levit",
        config=dict(hidden_sizes=[256, 384, 512], num_attention_heads=[4, 6, 8], key_dim=[32, 32, 32]),
        resolution=224, macs=1127, top1=81.6, source="Graham et al., ICCV 2021, Table 3 (1120 M FLOPs)",
    ),
    "swiftformer-xs": dict(
        label="SwiftFormer-XS", model="SwiftFormer", config={}, resolution=224, macs=602, top1=75.7,
        source="Shaker et al., ICCV 2023, Table 2 (0.6 G MACs)",
    ),
    "swiftformer-s": dict(
        label="SwiftFormer-S", model="SwiftFormer", config=dict(depths=[3, 3, 9, 6], embed_dims=[48, 64, 168, 224]),
        resolution=224, macs=985, top1=78.5, source="Shaker et al., ICCV 2023, Table 2 (1.0 G MACs)",
    ),
    "swiftformer-l1": dict(
        label="SwiftFormer-L1", model="SwiftFormer",
        config=dict(depths=[4, 3, 10, 5], embed_dims=[48, 96, 192, 384]),
        resolution=224, macs=1596, top1=80.9, source="Shaker et al., ICCV 2023, Table 2 (1.6 G MACs)",
    ),
    "mobilevit-s": dict(
        label="MobileViT-S", model="MobileViT", config={}, resolution=256, macs=2001, top1=78.4,
        source="Mehta & Rastegari, ICLR 2022, Table 1 (256 px; 2.0 G MACs)",
    ),
}  # fmt: skip
MAC_PEERS = ["mobilenetv2", "levit-128s"]
ACCURACY_PEERS = [name for name in PEERS if name not in MAC_PEERS]


@dataclass
class Entry:
    """One model in the run: its callables per backend (built per thread count) and what the tables need."""

    name: str
    label: str
    kind: str  # "nasvit" or "peer"
    macs: float
    resolution: int
    top1: float | None
    source: str
    files: dict[str, str] = field(default_factory=dict)  # backend -> ONNX file
    eager: torch.nn.Module | None = None
    frozen: torch.nn.Module | None = None  # NASViT with `freeze_inference_plan()` (the eager-frozen backend)
    compiled: Any = None
    info: dict[str, Any] = field(default_factory=dict)


def a_sized_arch(name: str, config: nasvit_hf.NASViTConfig, seed: int = 0, samples: int = 20000) -> dict[str, Any]:
    """`{"arch", "macs_millions", "source"}` of the subnet standing in for the paper's `name` (a0..a5)."""
    budget = PAPER_BUDGETS_MILLIONS[name]
    named = get_named_arch(name)
    if named.arch is not None:
        arch, source = named.arch, f"preset {name}"
    else:
        candidates = []
        for key, entry in NAMED_ARCHS.items():
            if not key.startswith("table13-") or entry.arch is None:
                continue
            for resolution in config.search_space["resolutions"]:
                candidate = dict(copy.deepcopy(entry.arch), resolution=resolution)
                macs = nasvit_hf.count_macs(config, candidate) / 1e6
                if abs(macs - budget) <= 0.03 * budget:
                    candidates.append((abs(macs - budget), key, resolution, candidate))
        if candidates:
            _, key, resolution, arch = min(candidates, key=lambda item: item[0])
            source = f"preset {key} at {resolution} px"
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


def calibration_pixels(resolution: int, count: int = 8, seed: int = 0) -> np.ndarray:
    """Random images for int8 ranges in a latency benchmark (int8 kernels' speed does not depend on the ranges)."""
    return np.random.default_rng(seed).standard_normal((count, 3, resolution, resolution), dtype=np.float32)


def build_nasvit(name: str, args: argparse.Namespace, workdir: str) -> Entry:
    reference = nasvit_hf.NASViTConfig()
    chosen = a_sized_arch(name, reference, seed=args.seed)
    arch = chosen["arch"]
    torch.manual_seed(args.seed)
    model = nasvit_hf.NASViTForImageClassification(reference.subnet_config(arch)).eval()
    paper_top1 = get_named_arch(name).paper_top1
    entry = Entry(
        name=name, label=f"NASViT {name.upper()}-sized", kind="nasvit", macs=chosen["macs_millions"],
        resolution=arch["resolution"], top1=paper_top1, source=chosen["source"], eager=model,
    )  # fmt: skip
    entry.info["arch"] = arch
    if {"onnxruntime", "onnxruntime-int8"} & set(args.backends):
        report = export_onnx(model, os.path.join(workdir, f"{name}.onnx"), dynamic_batch=True)
        entry.files["onnxruntime"] = report.path
        entry.info.update(
            onnx_export_seconds=report.export_seconds, onnx_max_abs_diff=max(report.max_abs_diff.values())
        )
    if "onnxruntime-int8" in args.backends:
        path = os.path.join(workdir, f"{name}-int8.onnx")
        quantize_onnx(entry.files["onnxruntime"], path, calibration_pixels(arch["resolution"]))
        entry.files["onnxruntime-int8"] = path
    if "onnxruntime-modules" in args.backends and name in args.modules_sizes:
        path = os.path.join(workdir, f"{name}-modules.onnx")
        entry.files["onnxruntime-modules"] = export_onnx(model, path, dynamic_batch=True, graph="modules").path
    if "eager-frozen" in args.backends:
        entry.frozen = copy.deepcopy(model).freeze_inference_plan()
    if "compile" in args.backends and name in args.compile_sizes:
        entry.compiled = torch.compile(model)
    return entry


def peer_model(name: str) -> torch.nn.Module:
    import transformers

    spec = PEERS[name]
    config_class = getattr(transformers, f"{spec['model']}Config")
    model_class = getattr(transformers, f"{spec['model']}ForImageClassification")
    return model_class(config_class(num_labels=IMAGENET_CLASSES, **spec["config"])).eval()


def export_peer(model: torch.nn.Module, path: str, resolution: int) -> dict[str, Any]:
    """Export a transformers image classifier as `export_onnx` exports NASViT (dynamo, dynamic batch) and check it."""

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values).logits

    wrapper = Logits(model).eval()
    example = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
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
    with torch.no_grad():
        expected = wrapper(example).numpy()
    output = session(path, threads=None).run(None, {"pixel_values": example.numpy()})[0]
    return {"onnx_export_seconds": seconds, "onnx_max_abs_diff": float(np.abs(output - expected).max())}


def build_peer(name: str, args: argparse.Namespace, workdir: str, eager: bool) -> Entry:
    spec = PEERS[name]
    torch.manual_seed(args.seed)
    model = peer_model(name)
    entry = Entry(
        name=name, label=spec["label"], kind="peer", macs=spec["macs"], resolution=spec["resolution"],
        top1=spec["top1"], source=spec["source"], eager=model if eager else None,
    )  # fmt: skip
    path = os.path.join(workdir, f"{name}.onnx")
    entry.info.update(export_peer(model, path, spec["resolution"]))
    entry.files["onnxruntime"] = path
    if "onnxruntime-int8" in args.backends and name in args.int8_peers:
        int8 = os.path.join(workdir, f"{name}-int8.onnx")
        quantize_onnx(path, int8, calibration_pixels(spec["resolution"]))
        entry.files["onnxruntime-int8"] = int8
    return entry


def session(path: str, threads: int | None, arena: bool = True, profile_prefix: str | None = None):
    """A plain onnxruntime session with `threads` intra-op threads (OnnxRunner's settings); `arena=False` returns
    its memory after every call instead of keeping the largest call's (for batch-32 blocks: two dozen sessions'
    arenas at batch 32 held 15 GB, and the OOM killer stopped a run); `profile_prefix`: profile it (`profile()`)."""
    _, onnxruntime, _ = require_extra("export", "the deployment benchmark")

    options = onnxruntime.SessionOptions()
    options.enable_cpu_mem_arena = arena
    if profile_prefix is not None:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")  # see main(): flush-to-zero everywhere
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def callables(entries: list[Entry], threads: int, batch: int, args) -> dict[tuple[str, str], Callable[[], Any]]:
    """(model, backend) -> a no-argument call on this batch's inputs, with sessions for `threads` threads."""
    calls: dict[tuple[str, str], Callable[[], Any]] = {}
    for entry in entries:
        pixels = torch.randn(batch, 3, entry.resolution, entry.resolution, generator=torch.Generator().manual_seed(1))
        feed = {"pixel_values": pixels.numpy()}
        for backend, path in entry.files.items():
            sess = session(path, threads, arena=batch <= ARENA_MAX_BATCH)
            calls[(entry.name, backend)] = lambda s=sess, f=feed: s.run(None, f)
        if entry.eager is not None and batch <= args.eager_max_batch:
            calls[(entry.name, "eager")] = lambda m=entry.eager, x=pixels: m(x).logits
        if entry.frozen is not None and batch <= args.eager_max_batch:
            calls[(entry.name, "eager-frozen")] = lambda m=entry.frozen, x=pixels: m(x).logits
        if entry.compiled is not None:
            calls[(entry.name, "compile")] = lambda m=entry.compiled, x=pixels: m(x).logits
    return calls


def denormals_flushed() -> bool:
    """Whether this thread flushes denormal floats to zero (its MXCSR FTZ/DAZ bits, which eager PyTorch and
    onnxruntime's calling thread both compute under)."""
    return float(torch.tensor([1e-39], dtype=torch.float32).mul(1.0001).item()) == 0.0


def flush_denormals() -> None:
    """Flush denormals to zero on this thread, and check it took. Random-init weights of several peers (EfficientNet,
    MobileViT) shrink their activations into denormals, which x86 computes 10-40x slower (EfficientNet-B0: 360-470 ms
    instead of 14 ms at batch 1); trained weights do not. onnxruntime clears the calling thread's flags when it
    creates a session without `session.set_denormal_as_zero` (export_onnx's check and the int8 calibration do), so
    this runs right before timing, not once at start-up."""
    torch.set_flush_denormal(True)
    if not denormals_flushed():
        raise RuntimeError(
            "this CPU cannot flush denormals to zero (torch.set_flush_denormal); timings would be unfair"
        )


def time_round_robin(calls: dict, repeats: int) -> dict[tuple[str, str], dict[str, float]]:
    """Median wall and thread-CPU milliseconds of each call: one warm-up each, then `repeats` rounds in which every
    call runs once, in an order rotated every round."""
    flush_denormals()  # after every session of this block is built: creating one can clear the flags
    wall, cpu = time_callables_wall_and_cpu(calls, repeats, warmup=1, cpu_clock=time.thread_time)
    if not denormals_flushed():
        raise RuntimeError("denormals stopped being flushed to zero while timing; the timings are not comparable")
    return {key: {"ms": 1000 * wall[key], "cpu_ms": 1000 * cpu[key]} for key in calls}


def run(entries: list[Entry], args) -> dict[str, dict[str, Any]]:
    """{"<threads>x<batch>": {"timings": {model: {backend: {ms, cpu_ms}}}, "load_average": ...}}."""
    results: dict[str, dict[str, Any]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch_sizes:
            calls = callables(entries, threads, batch, args)
            repeats = args.repeats if batch <= 8 else args.repeats_large
            load_before = os.getloadavg()[0]
            timed = time_round_robin(calls, repeats)
            count = len(calls)
            del calls  # this block's sessions
            timings: dict[str, dict[str, Any]] = {}
            for (name, backend), value in timed.items():
                timings.setdefault(name, {})[backend] = value
            key = f"{threads}x{batch}"
            results[key] = {
                "threads": threads,
                "batch": batch,
                "repeats": repeats,
                "load_average": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}",
                "timings": timings,
            }
            print(f"  {threads} thread(s), batch {batch}: {count} calls x {repeats} rounds", flush=True)
    return results


def profile(entries: list[Entry], wanted: list[str], runs: int = 20) -> str:
    """onnxruntime's own profile (`SessionOptions.enable_profiling`) of the named files, one thread, batch 1: the
    median kernel time of every node, summed per operator type (after onnxruntime's fusions), and the node counts.
    `wanted` names `<model>` (fp32), `<model>-int8` or `<model>-modules`."""
    _, onnxruntime, _ = require_extra("export", "the deployment benchmark")
    lines = []
    for key in wanted:
        name, _, variant = key.partition("-int8") if key.endswith("-int8") else key.partition("-modules")
        backend = {"-int8": "onnxruntime-int8", "-modules": "onnxruntime-modules"}.get(key[len(name) :], "onnxruntime")
        entry = next((e for e in entries if e.name == name), None)
        if entry is None or backend not in entry.files:
            lines.append(f"{key}: not exported in this run")
            continue
        prefix = os.path.join(os.path.dirname(entry.files[backend]), f"profile-{key}")
        sess = session(entry.files[backend], 1, profile_prefix=prefix)
        flush_denormals()
        pixels = np.random.default_rng(0).standard_normal((1, 3, entry.resolution, entry.resolution), np.float32)
        for _ in range(runs):
            sess.run(None, {"pixel_values": pixels})
        with open(sess.end_profiling()) as handle:
            events = json.load(handle)
        per_node: dict[str, list[float]] = {}
        op_of: dict[str, str] = {}
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                per_node.setdefault(event["name"], []).append(event["dur"])
                op_of[event["name"]] = event["args"]["op_name"]
        per_op: dict[str, list[float]] = {}
        for node, durations in per_node.items():
            per_op.setdefault(op_of[node], []).append(statistics.median(durations) / 1000)
        total = sum(sum(values) for values in per_op.values())
        import onnx

        file_nodes = len(onnx.load(entry.files[backend], load_external_data=False).graph.node)
        top = sorted(per_op.items(), key=lambda item: -sum(item[1]))[:12]
        parts = ", ".join(f"{op} {sum(values):.2f} ms ({len(values)})" for op, values in top)
        lines.append(
            f"- {entry.label} {backend}: {file_nodes} nodes in the file, {len(per_node)} after onnxruntime's "
            f"optimisations; kernel time {total:.2f} ms per call (median per node, {runs} calls): {parts}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------------
CLOCK = {"wall": "ms", "cpu": "cpu_ms"}
_clock = ["ms"]  # the timing the tables and the plot read (--clock)


def _ms(timings: dict, name: str, backend: str) -> float | None:
    value = timings.get(name, {}).get(backend)
    return None if value is None else value[_clock[0]]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return "–" if numerator is None or denominator is None else f"{numerator / denominator:.2f}"


def mac_table(entries: list[Entry], results: dict) -> str:
    nasvit = [entry for entry in entries if entry.kind == "nasvit"]
    peers = [entry for entry in entries if entry.name in MAC_PEERS]
    lines = [
        "| threads, batch | model | MACs (M), px | onnxruntime ms | / MobileNetV2 | / LeViT-128S | int8 ms | int8 "
        "speed-up | eager ms | eager / MobileNetV2 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results.values():
        timings = result["timings"]
        mobilenet = _ms(timings, "mobilenetv2", "onnxruntime")
        levit = _ms(timings, "levit-128s", "onnxruntime")
        mobilenet_eager = _ms(timings, "mobilenetv2", "eager")
        for entry in nasvit + peers:
            fp32 = _ms(timings, entry.name, "onnxruntime")
            int8 = _ms(timings, entry.name, "onnxruntime-int8")
            eager = _ms(timings, entry.name, "eager")
            label = entry.label if entry.kind == "peer" else f"NASViT {entry.name.upper()}-sized"
            lines.append(
                f"| {result['threads']}, {result['batch']} | {label} | {entry.macs:.0f}, {entry.resolution} | "
                f"{_fmt(fp32)} | {_ratio(fp32, mobilenet)} | {_ratio(fp32, levit)} | {_fmt(int8)} | "
                f"{_ratio(fp32, int8)} | {_fmt(eager)} | {_ratio(eager, mobilenet_eager)} |"
            )
            frozen = _ms(timings, entry.name, "eager-frozen")
            if frozen is not None:
                lines.append(
                    f"| {result['threads']}, {result['batch']} | {label}, `freeze_inference_plan()` | "
                    f"{entry.macs:.0f}, {entry.resolution} | | | | | | {_fmt(frozen)} | "
                    f"{_ratio(frozen, mobilenet_eager)} |"
                )
            modules = _ms(timings, entry.name, "onnxruntime-modules")
            if modules is not None:
                lines.append(
                    f"| {result['threads']}, {result['batch']} | {label}, graph of the modules | "
                    f"{entry.macs:.0f}, {entry.resolution} | {_fmt(modules)} | {_ratio(modules, mobilenet)} | "
                    f"{_ratio(modules, levit)} | | | | |"
                )
    return "\n".join(lines)


def pareto_violations(entries: list[Entry], timings: dict) -> list[str]:
    """Peers at least as accurate as an A-model and faster than it in onnxruntime (fp32)."""
    found = []
    for model in (entry for entry in entries if entry.kind == "nasvit"):
        mine = _ms(timings, model.name, "onnxruntime")
        for peer in (entry for entry in entries if entry.kind == "peer"):
            theirs = _ms(timings, peer.name, "onnxruntime")
            if mine is None or theirs is None:
                continue
            if peer.top1 >= model.top1 and theirs < mine:
                found.append(f"{peer.label} ({peer.top1} %, {theirs:.1f} ms) beats {model.name.upper()} "
                             f"({model.top1} %, {mine:.1f} ms)")  # fmt: skip
    return found


def accuracy_table(entries: list[Entry], results: dict) -> str:
    keys = list(results)
    header = " | ".join(f"{results[k]['threads']} thr, batch {results[k]['batch']} ms" for k in keys)
    lines = [
        f"| model | ImageNet top-1 (%, published) | MACs (M), px | {header} |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    rows = sorted(entries, key=lambda entry: (entry.top1, entry.kind != "nasvit"))
    for entry in rows:
        label = f"**NASViT {entry.name.upper()}**-sized" if entry.kind == "nasvit" else entry.label
        cells = " | ".join(_fmt(_ms(results[k]["timings"], entry.name, "onnxruntime")) for k in keys)
        lines.append(f"| {label} | {entry.top1} | {entry.macs:.0f}, {entry.resolution} | {cells} |")
    lines.append("")
    for key in keys:
        found = pareto_violations(entries, results[key]["timings"])
        verdict = "none: every A-model is on the front" if not found else "; ".join(found)
        lines.append(f"- {results[key]['threads']} thread(s), batch {results[key]['batch']}: peers both at least as "
                     f"accurate and faster: {verdict}")  # fmt: skip
    return "\n".join(lines)


def plot(entries: list[Entry], results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from nasvit_hf.utils.io import atomic_file

    panels = [key for key in results if results[key]["batch"] in (1, 32)][:4]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for axis, key in zip(axes[0], panels):
        timings = results[key]["timings"]
        for kind, color, marker in (("nasvit", "C3", "o"), ("peer", "C0", "s")):
            chosen = [e for e in entries if e.kind == kind and _ms(timings, e.name, "onnxruntime") is not None]
            chosen.sort(key=lambda e: _ms(timings, e.name, "onnxruntime"))
            xs = [_ms(timings, e.name, "onnxruntime") for e in chosen]
            ys = [e.top1 for e in chosen]
            axis.plot(xs, ys, marker=marker, color=color, linestyle="-" if kind == "nasvit" else "",
                      label="NASViT A0-A5-sized" if kind == "nasvit" else "transformers models")  # fmt: skip
            for entry, x, y in zip(chosen, xs, ys):
                text = entry.name.upper() if kind == "nasvit" else entry.label
                axis.annotate(text, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
        result = results[key]
        clock = "thread CPU time" if _clock[0] == "cpu_ms" else "latency"
        axis.set_xlabel(f"onnxruntime {clock} (ms), batch {result['batch']}, {result['threads']} thread(s)")
        axis.set_ylabel("ImageNet top-1 (%, published)")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    figure.suptitle("Top-1 vs onnxruntime latency (benchmarks/bench_deployment.py)", fontsize=9)
    figure.tight_layout()
    with atomic_file(path, ".png") as (_, temp):
        figure.savefig(temp, dpi=110)
    plt.close(figure)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="a0,a1,a2,a3,a4,a5", help="Comma-separated A-sizes (a0..a5).")
    parser.add_argument("--batch_sizes", default="1,32")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="Thread counts, each timed in turn.")
    parser.add_argument("--backends", default="eager,eager-frozen,onnxruntime,onnxruntime-int8,onnxruntime-modules",
                        help=f"Comma-separated subset of {BACKENDS}.")  # fmt: skip
    parser.add_argument("--peers", default=",".join(MAC_PEERS), help=f"MAC-matched peers: subset of {MAC_PEERS}.")
    parser.add_argument(
        "--accuracy_peers",
        default=",".join(ACCURACY_PEERS),
        help=f"Accuracy-matched peers: subset of {ACCURACY_PEERS}.",
    )
    parser.add_argument("--int8_peers", default="mobilenetv2", help="Peers also quantized to int8.")
    parser.add_argument("--modules_sizes", default="a1", help="Sizes also timed as the graph of the modules.")
    parser.add_argument("--compile_sizes", default="", help="Sizes also timed with torch.compile (with 'compile').")
    parser.add_argument("--eager_max_batch", type=int, default=1, help="Largest batch size timed in eager PyTorch.")
    parser.add_argument("--repeats", type=int, default=15, help="Timed rounds at batch sizes <= 8.")
    parser.add_argument("--repeats_large", type=int, default=3, help="Timed rounds at larger batch sizes.")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCK),
        default="wall",
        help="What the tables and the plot show: wall time (default; an idle machine) or the calling thread's CPU "
        "time (a shared machine: it leaves out the time other processes held the core; exact for 1 thread, it "
        "misses onnxruntime's worker thread with 2). The JSON output has both.",
    )
    parser.add_argument(
        "--profile",
        default="",
        help="Comma-separated files to profile with onnxruntime after the timing (1 thread, batch 1): <model> "
        "(fp32), <model>-int8 or <model>-modules, e.g. 'a1,a1-int8,a1-modules,mobilenetv2,levit-128s'.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tables_from",
        default=None,
        help="Measure nothing: print (and --markdown / --plot) the tables of an earlier run's --output JSON with "
        "this --clock.",
    )
    parser.add_argument("--output", default=None, help="Write the results as JSON here.")
    parser.add_argument("--markdown", default=None, help="Write the two tables as Markdown here.")
    parser.add_argument("--plot", default=None, help="Draw top-1 vs onnxruntime latency here (PNG).")
    args = parser.parse_args(argv)

    def names(value: str) -> list[str]:
        return [item.strip().lower() for item in value.split(",") if item.strip()]

    args.sizes = names(args.sizes)
    if any(size not in PAPER_BUDGETS_MILLIONS for size in args.sizes):
        parser.error(f"--sizes must be a subset of {sorted(PAPER_BUDGETS_MILLIONS)}.")
    args.batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    args.backends = names(args.backends)
    if any(backend not in BACKENDS for backend in args.backends):
        parser.error(f"--backends must be a subset of {BACKENDS}.")
    args.peers, args.accuracy_peers = names(args.peers), names(args.accuracy_peers)
    if any(peer not in MAC_PEERS for peer in args.peers) or any(p not in ACCURACY_PEERS for p in args.accuracy_peers):
        parser.error(f"--peers must be a subset of {MAC_PEERS}, --accuracy_peers of {ACCURACY_PEERS}.")
    args.int8_peers, args.modules_sizes, args.compile_sizes = (
        names(args.int8_peers), names(args.modules_sizes), names(args.compile_sizes)
    )  # fmt: skip
    args.profile = names(args.profile)
    return args


def tables_text(args: argparse.Namespace, entries: list[Entry], results: dict, source: str, extra=()) -> str:
    """The two tables (MACs matched, with `source` in its title; accuracy matched) and any `extra` paragraphs."""
    return "\n\n".join(
        [
            f"MACs matched ({args.clock} time; {source}):",
            mac_table(entries, results),
            f"Accuracy matched (onnxruntime fp32, {args.clock} time, ms):",
            accuracy_table([e for e in entries if e.top1 is not None], results),
            *extra,
        ]
    )


def write_tables(args: argparse.Namespace, tables: str, entries: list[Entry], results: dict) -> None:
    """`tables` to `--markdown` and the plot to `--plot`, where asked."""
    if args.markdown:
        with open(f"{args.markdown}.tmp", "w") as handle:
            handle.write(tables + "\n")
        os.replace(f"{args.markdown}.tmp", args.markdown)
    if args.plot:
        plot([e for e in entries if e.top1 is not None], results, args.plot)


def render(args: argparse.Namespace) -> dict[str, Any]:
    """The tables (and plot) of an earlier run (`--tables_from`), with this run's `--clock`."""
    with open(args.tables_from) as handle:
        saved = json.load(handle)
    fields = {"name", "label", "kind", "macs", "resolution", "top1", "source"}
    entries = [Entry(**{key: value for key, value in model.items() if key in fields}) for model in saved["models"]]
    source = f"from {args.tables_from}, measured by: {saved.get('command')}"
    tables = tables_text(args, entries, saved["results"], source)
    print(tables)
    write_tables(args, tables, entries, saved["results"])
    return saved


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    _clock[0] = CLOCK[args.clock]
    if args.tables_from:
        return render(args)
    # Denormal floats are flushed to zero in every backend (this thread's MXCSR, set again right before timing:
    # eager PyTorch and onnxruntime's calling thread; the session option: its pool threads). See flush_denormals().
    flush_denormals()
    start = time.perf_counter()
    _, onnxruntime, _ = require_extra("export", "the deployment benchmark")

    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, threads {args.threads}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as workdir:
        entries = []
        for name in args.sizes:
            entries.append(build_nasvit(name, args, workdir))
            print(f"  {entries[-1].label}: {entries[-1].source}, {entries[-1].macs:.0f} M MACs", flush=True)
        for name in args.peers + args.accuracy_peers:
            entries.append(build_peer(name, args, workdir, eager="eager" in args.backends and name in MAC_PEERS))
            print(f"  {entries[-1].label}: exported ({entries[-1].info['onnx_export_seconds']:.0f} s)", flush=True)
        results = run(entries, args)
        profiles = profile(entries, args.profile) if args.profile else ""
    source = "onnxruntime fp32 and int8, eager PyTorch; ratios within each thread/batch block"
    extra = ["onnxruntime's profile (1 thread, batch 1):", profiles] if profiles else []
    tables = tables_text(args, entries, results, source, extra)
    print(tables)
    total = time.perf_counter() - start
    print(f"total {total / 60:.1f} min")
    output = {
        "results": results,
        "models": [
            {key: value for key, value in vars(entry).items() if key not in ("eager", "frozen", "compiled", "files")}
            | {"info": {k: v for k, v in entry.info.items() if not k.startswith("_")}}
            for entry in entries
        ],
        "tables": tables,
        "threads": args.threads,
        "seconds": total,
        "command": " ".join(sys.argv),
        "clock": args.clock,
    }
    if args.output:
        with open(f"{args.output}.tmp", "w") as handle:
            json.dump(output, handle, indent=2, default=str)
        os.replace(f"{args.output}.tmp", args.output)
    write_tables(args, tables, entries, results)
    return output


if __name__ == "__main__":
    main(sys.argv[1:])
