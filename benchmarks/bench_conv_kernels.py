"""Per-convolution CPU kernel choice of the eager inference plan: ATen's convolution + a separate in-place swish
against oneDNN's fused convolution + swish (weights as they are, and reordered once into oneDNN's layout as the frozen
plan does), for every convolution an A-sized subnet runs, at the batch sizes asked.

    python benchmarks/bench_conv_kernels.py --size a1 --batch_sizes 1 16

The convs are recorded from one forward of the frozen plan (their input shapes, folded weights, stride, groups,
swish), then each kernel runs on the recorded shape in interleaved rounds (thread CPU time, medians). The table
shows the three timings per conv, what the default plan and the frozen plan pick
(`nasvit_hf.models.inference_nasvit.onednn_conv`) and the totals against always-ATen, always-oneDNN and the best of
the kernels each plan can use.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_deployment import a_sized_arch  # noqa: E402
from common import time_callables_wall_and_cpu  # noqa: E402

import nasvit_hf  # noqa: E402
from nasvit_hf.models import inference_nasvit  # noqa: E402
from nasvit_hf.models.inference_nasvit import NASViTInferencePlan  # noqa: E402


def record_convs(model: torch.nn.Module, pixel_values: torch.Tensor) -> list[tuple]:
    """(input shape, weight, bias, stride, padding, groups, swish) of every conv one frozen-plan forward runs."""
    recorded = []
    original = NASViTInferencePlan._conv

    def spy(self, hidden_states, weight, bias, stride, padding, groups, swish, module=None):
        if weight.is_mkldnn:  # a reordered weight from an earlier call: record the plain one instead
            raise RuntimeError("record on a fresh frozen model")
        recorded.append((tuple(hidden_states.shape), weight.contiguous(), bias, stride, padding, groups, swish))
        return original(self, hidden_states, weight, bias, stride, padding, groups, swish, module)

    NASViTInferencePlan._conv = spy
    try:
        with torch.inference_mode():
            model(pixel_values)
    finally:
        NASViTInferencePlan._conv = original
    return recorded


def kernels(shape, weight, bias, stride, padding, groups, swish) -> dict:
    pixels = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    packed = torch.ops.mkldnn._reorder_convolution_weight(
        weight, [padding, padding], [stride, stride], [1, 1], groups, list(shape)
    )
    activation = "swish" if swish else "none"

    def aten():
        out = F.conv2d(pixels, weight, bias, stride, padding, 1, groups)
        return F.silu(out, inplace=True) if swish else out

    def onednn(w):
        return lambda: torch.ops.mkldnn._convolution_pointwise(
            pixels, w, bias, [padding, padding], [stride, stride], [1, 1], groups, activation, [], ""
        )

    return {"aten": aten, "onednn": onednn(weight), "onednn-reordered": onednn(packed)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="a1", help="A-size (a0..a5) of the subnet, as bench_deployment.py picks it.")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")):
        raise SystemExit("bench_conv_kernels.py needs a torch build with oneDNN (mkldnn) on the CPU.")
    torch.set_num_threads(args.threads)
    config = nasvit_hf.NASViTConfig()
    arch = a_sized_arch(args.size, config)["arch"]
    torch.manual_seed(0)
    model = nasvit_hf.NASViTForImageClassification(config.subnet_config(arch)).eval()
    summary = {}
    for batch in args.batch_sizes:
        model.freeze_inference_plan()  # a fresh snapshot: the recorded weights are plain tensors
        pixel_values = torch.randn(batch, 3, arch["resolution"], arch["resolution"])
        names = ("aten", "onednn", "onednn-reordered")
        rows, totals = [], dict.fromkeys([*names, "plan", "best for plan", "frozen plan", "best for frozen"], 0.0)
        for shape, weight, bias, stride, padding, groups, swish in record_convs(model, pixel_values):
            calls = kernels(shape, weight, bias, stride, padding, groups, swish)
            _, cpu = time_callables_wall_and_cpu(calls, args.rounds, warmup=1, cpu_clock=time.thread_time)
            timing = {name: seconds * 1e6 for name, seconds in cpu.items()}
            size = weight.shape[-1]
            out_pixels = shape[0] * ((shape[2] + 2 * padding - size) // stride + 1) ** 2
            macs = out_pixels * weight.shape[0] * weight.shape[1] * size * size
            pointwise = size == 1 and groups == 1
            pick = "onednn" if inference_nasvit.onednn_conv(pointwise, out_pixels, macs, False) else "aten"
            frozen_pick = "aten"
            if inference_nasvit.onednn_conv(pointwise, out_pixels, macs, True):
                frozen_pick = "onednn-reordered"
            for name in names:
                totals[name] += timing[name]
            totals["plan"] += timing[pick]
            totals["best for plan"] += min(timing["aten"], timing["onednn"])
            totals["frozen plan"] += timing[frozen_pick]
            totals["best for frozen"] += min(timing["aten"], timing["onednn-reordered"])
            kind = "1x1" if pointwise else ("dw" if groups > 1 else "kxk") + f"{size}x{size}"
            rows.append(
                f"| {tuple(shape)} | {kind}, {weight.shape[0]} out, stride {stride} | {out_pixels} | "
                f"{macs / 1e6:.1f} | {timing['aten']:.0f} | {timing['onednn']:.0f} | {timing['onednn-reordered']:.0f} | "
                f"{pick} | {frozen_pick} |"
            )
        print(f"\nbatch {batch}, {args.threads} thread(s), {args.size}-sized subnet at {arch['resolution']} px "
              f"(thread CPU µs, median of {args.rounds} interleaved rounds):\n")  # fmt: skip
        print(
            "| input | conv | output pixels | M MACs | ATen + swish | oneDNN fused | oneDNN fused, reordered | plan "
            "| frozen plan |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        print(
            "\ntotals (ms): "
            + ", ".join(f"{name} {value / 1000:.2f}" for name, value in totals.items())
            + f"; picks / best: plan {totals['plan'] / totals['best for plan']:.3f}, frozen plan "
            + f"{totals['frozen plan'] / totals['best for frozen']:.3f}"
        )
        summary[batch] = totals
    return summary


if __name__ == "__main__":
    main()
