#!/usr/bin/env python
"""Throughput of the analytic MACs counter (search calls it in its inner loop; target >= 10,000 archs/s), and the
cost of a traced count (torch.utils.flop_counter on a real forward pass) for comparison, in one run.

    python benchmarks/bench_macs.py [--archs 20000]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import nasvit_hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archs", type=int, default=20000)
    args = parser.parse_args()
    config = nasvit_hf.NASViTConfig()
    model = nasvit_hf.NASViTForImageClassification(config).eval()
    generator = torch.Generator().manual_seed(0)
    archs = [model.sample_active_subnet(generator) for _ in range(min(args.archs, 2000))]
    archs = (archs * (args.archs // len(archs) + 1))[: args.archs]
    for validate in (True, False):
        start = time.perf_counter()
        for arch in archs:
            nasvit_hf.count_macs(config, arch, validate=validate)
        elapsed = time.perf_counter() - start
        print(f"count_macs(validate={validate}): {len(archs) / elapsed:,.0f} archs/s")
    start = time.perf_counter()
    for arch in archs[:3]:
        model.set_active_subnet(arch)
        with FlopCounterMode(display=False), torch.no_grad():
            model(torch.randn(1, 3, arch["resolution"], arch["resolution"]))
    traced = (time.perf_counter() - start) / 3
    print(f"traced count (forward pass): {1 / traced:,.1f} archs/s")


if __name__ == "__main__":
    main()
