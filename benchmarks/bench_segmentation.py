#!/usr/bin/env python
"""CPU latency of an NASViT-A1-sized backbone + Segformer all-MLP head vs transformers' Segformer-B0 (built from
config, random weights) at 512x512, batch 1, eval mode, 150 classes (ADE20K).

    PYTHONPATH=. python benchmarks/bench_segmentation.py [--repeats 15] [--threads 1] [--size 512]

The NASViT arch is A1-sized: the paper's Table 6 gives A1 309 M MACs at 224 px, but publishes no A1 architecture
(Table 13's columns do not match Table 6's counts, see nasvit_hf.presets), so we use Table 13's "A2" column with
transformer depths 3, 3, 3 and the mb3 expand ratio 5: 311.3 M MACs at 224 px by `nasvit_hf.count_macs`. Windows are
"auto" (feature side // 7, the paper's segmentation setting), the decode head 256 wide like Segformer-B0's.

"nasvit_plan_off" is the same NASViT model with the inference fast paths switched off (`model.nasvit` and
`model.decode_head`'s `inference_fast_path = False`: the modules, the code before them); the "*_backbone" rows time
the two models' backbones alone (`model.nasvit`, the feature maps the decode head reads).

Baseline and candidates are timed interleaved in the same process (one forward each per round, after warm-up), so
machine load hits both alike; the report is the median per model and the ratio of medians, plus MACs (NASViT:
`count_segmentation_macs`, checked against torch's FlopCounterMode; Segformer: FlopCounterMode / 2). One thread by
default: on a shared, oversubscribed machine multi-thread barriers swamp the models' own differences.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from nasvit_hf import NASViTConfig, NASViTForSemanticSegmentation, count_macs
from nasvit_hf.macs import count_segmentation_macs
from nasvit_hf.presets import get_named_arch


def a1_sized_arch() -> dict:
    arch = copy.deepcopy(get_named_arch("table13-a2").arch)
    arch["depth"] = [1, 3, 3, 4, 3, 3, 3]
    arch["expand_ratio"] = [1, 4, 5, 4, 4, 6, 6]
    return arch


def traced_macs(model: torch.nn.Module, pixel_values: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(pixel_values=pixel_values)
    return counter.get_total_flops() // 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's choice); default 1")
    parser.add_argument("--num_labels", type=int, default=150)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    arch = a1_sized_arch()
    supernet_config = NASViTConfig(num_labels=args.num_labels, num_windows="auto", decoder_hidden_size=256)
    nasvit = NASViTForSemanticSegmentation(supernet_config.subnet_config(arch)).eval()
    segformer = SegformerForSemanticSegmentation(SegformerConfig(num_labels=args.num_labels)).eval()  # B0 defaults
    pixel_values = torch.randn(1, 3, args.size, args.size)

    macs = {
        "nasvit_a1_sized": count_segmentation_macs(nasvit.config, image_size=args.size),
        "segformer_b0": traced_macs(segformer, pixel_values),
    }
    assert traced_macs(nasvit, pixel_values) == macs["nasvit_a1_sized"], "analytic MACs disagree with the trace"

    plan_off = copy.deepcopy(nasvit)
    plan_off.nasvit.inference_fast_path = plan_off.decode_head.inference_fast_path = False
    models = {
        "segformer_b0": segformer,
        "nasvit_a1_sized": nasvit,
        "nasvit_plan_off": plan_off,
        "nasvit_backbone": nasvit.nasvit,
        "nasvit_backbone_plan_off": plan_off.nasvit,
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(args.warmup):
            for model in models.values():
                model(pixel_values=pixel_values)
        for _ in range(args.repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(pixel_values=pixel_values)
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    report = {
        "input": [args.size, args.size],
        "batch": 1,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "nasvit_arch": json.dumps(arch),
        "nasvit_classification_macs_at_224_millions": round(count_macs(NASViTConfig(), arch) / 1e6, 1),
        "gmacs": {name: round(value / 1e9, 3) for name, value in macs.items()},
        "params_millions": {
            name: round(sum(p.numel() for p in m.parameters()) / 1e6, 2)
            for name, m in models.items()
            if name in ("segformer_b0", "nasvit_a1_sized")
        },
        "median_ms": {name: round(value, 1) for name, value in medians.items()},
        "latency_ratio_nasvit_over_segformer_b0": round(medians["nasvit_a1_sized"] / medians["segformer_b0"], 3),
        "latency_ratio_plan_off_over_segformer_b0": round(medians["nasvit_plan_off"] / medians["segformer_b0"], 3),
        "latency_ratio_nasvit_over_plan_off": round(medians["nasvit_a1_sized"] / medians["nasvit_plan_off"], 3),
        "latency_ratio_backbone_over_plan_off": round(
            medians["nasvit_backbone"] / medians["nasvit_backbone_plan_off"], 3
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
