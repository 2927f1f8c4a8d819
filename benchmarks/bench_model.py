#!/usr/bin/env python
"""Forward latency on CPU: supernet set to an arch vs the extracted subnet, and an extracted A1-sized NASViT vs
transformers' MobileNetV2-1.0 and LeViT-128S built from config (random weights). Ratios come from one run with
interleaved repeats (medians), so machine load affects every model alike.

    python benchmarks/bench_model.py [--repeats 20] [--batch_sizes 1 32] [--json out.json]

The A1-sized arch is the paper's Table 13 "NASViT-A1" column evaluated at 224 px (307.2 M MACs, close to the
paper's A1 budget of 309 M); MobileNetV2-1.0 is ~300 M MACs and LeViT-128S ~305 M.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

import torch
from transformers import LevitConfig, LevitForImageClassification, MobileNetV2Config, MobileNetV2ForImageClassification

sys.path.insert(0, os.path.dirname(__file__))
from common import machine_summary, time_callables  # noqa: E402

import nasvit_hf  # noqa: E402
from nasvit_hf.presets import get_named_arch  # noqa: E402


def a1_sized_arch() -> dict:
    arch = copy.deepcopy(get_named_arch("table13-a1").arch)
    arch["resolution"] = 224
    return arch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = nasvit_hf.NASViTConfig()
    supernet = nasvit_hf.NASViTForImageClassification(config).eval()
    arch = a1_sized_arch()
    supernet.set_active_subnet(arch)
    subnet = supernet.extract_subnet(arch).eval()
    models = {
        "nasvit supernet@A1": supernet,
        "nasvit extracted A1": subnet,
        "MobileNetV2-1.0": MobileNetV2ForImageClassification(MobileNetV2Config()).eval(),
        "LeViT-128S": LevitForImageClassification(LevitConfig()).eval(),
    }
    macs = nasvit_hf.count_macs(config, arch)
    print(f"# {machine_summary()}; A1-sized arch: {macs / 1e6:.1f} M MACs at 224 px")
    results = {"machine": machine_summary(), "macs_millions": macs / 1e6, "arch": arch, "batches": {}}
    for batch_size in args.batch_sizes:
        pixel_values = torch.randn(batch_size, 3, 224, 224)
        repeats = args.repeats if batch_size < 8 else max(3, args.repeats // 4)
        times = time_callables(
            {name: (lambda m=m, x=pixel_values: m(x)) for name, m in models.items()}, repeats=repeats
        )
        base = times["nasvit extracted A1"]
        print(f"\nbatch {batch_size} ({repeats} interleaved repeats, median)")
        print(f"{'model':<22} {'ms':>9} {'extracted A1 / model':>22}")
        for name, seconds in times.items():
            print(f"{name:<22} {seconds * 1e3:>9.1f} {base / seconds:>22.2f}")
        results["batches"][batch_size] = {name: seconds * 1e3 for name, seconds in times.items()}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
