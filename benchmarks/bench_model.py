#!/usr/bin/env python
"""Forward latency on CPU of an extracted, saved and reloaded A1-sized NASViT subnet against transformers'
MobileNetV2-1.0 and LeViT-128S (transformers' classes with ImageNet's 1000 classes, random weights; MobileNetV2's
default config, LeViT's default config with LeViT-128S's heads and depths), through the plain Hugging Face
path: `model(pixel_values)` in eval mode under `torch.inference_mode`, and `pipeline("image-classification")` on one
image. Beside them: the same NASViT subnet with its inference plan switched off (`model.nasvit.inference_fast_path =
False`: the modules themselves, i.e. the code before the plan) and the supernet set to the same arch. Ratios come from
one process with interleaved repeats in a rotating order (medians), so machine load affects every model alike; the
1-minute load average is printed beside each table. Each call's process CPU time is recorded too: on a shared machine
it leaves out the time other jobs held the cores (with one thread it is the steadier measure; with two it also counts
the OpenMP workers' spinning).

    python benchmarks/bench_model.py [--repeats 20] [--batch_sizes 1 32] [--threads 1 2] [--json out.json]

The A1-sized arch is the paper's Table 13 "NASViT-A1" column evaluated at 224 px (307.2 M MACs, close to the
paper's A1 budget of 309 M); MobileNetV2-1.0 is ~300 M MACs and LeViT-128S ~305 M. Targets (issue 14): NASViT
<= 0.8x MobileNetV2's time at batch 1 and <= 0.6x at batch 32, at 1 and 2 threads.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from transformers import (
    LevitConfig,
    LevitForImageClassification,
    LevitImageProcessor,
    MobileNetV2Config,
    MobileNetV2ForImageClassification,
    MobileNetV2ImageProcessor,
    pipeline,
)

sys.path.insert(0, os.path.dirname(__file__))
from common import load_average, machine_summary, time_callables_wall_and_cpu  # noqa: E402

import nasvit_hf  # noqa: E402
from nasvit_hf.presets import get_named_arch  # noqa: E402

NASVIT = "NASViT A1 (from_pretrained)"
NASVIT_MODULES = "NASViT A1, plan off"
SUPERNET = "supernet set to A1"
MOBILENET = "MobileNetV2-1.0"
LEVIT = "LeViT-128S"
# Every model gets ImageNet-1k's classifier, as published (transformers' default configs have 2 labels, which would
# leave the peers without their 1280x1000 / 2x384x1000 classifiers while NASViT keeps its 1792x1000 one).
IMAGENET_CLASSES = 1000


def a1_sized_arch() -> dict:
    arch = copy.deepcopy(get_named_arch("table13-a1").arch)
    arch["resolution"] = 224
    return arch


def build_models(workdir: str) -> tuple[dict[str, torch.nn.Module], dict[str, str], dict]:
    """The models to time, and the saved folders the pipelines load."""
    torch.manual_seed(0)
    config = nasvit_hf.NASViTConfig()
    supernet = nasvit_hf.NASViTForImageClassification(config).eval()
    arch = a1_sized_arch()
    supernet.set_active_subnet(arch)
    folders = {name: os.path.join(workdir, name.split()[0]) for name in (NASVIT, MOBILENET, LEVIT)}
    supernet.extract_subnet(arch).save_pretrained(folders[NASVIT])
    subnet = nasvit_hf.NASViTForImageClassification.from_pretrained(folders[NASVIT]).eval()
    modules_only = nasvit_hf.NASViTForImageClassification.from_pretrained(folders[NASVIT]).eval()
    modules_only.nasvit.inference_fast_path = False
    mobilenet = MobileNetV2ForImageClassification(MobileNetV2Config(num_labels=IMAGENET_CLASSES)).eval()
    # LevitConfig()'s defaults are LeViT-128 (405 M MACs); LeViT-128S has heads (4, 6, 8) and depths (2, 3, 4).
    levit_config = LevitConfig(num_labels=IMAGENET_CLASSES, num_attention_heads=[4, 6, 8], depths=[2, 3, 4])
    levit = LevitForImageClassification(levit_config).eval()
    for model, processor, name in (
        (mobilenet, MobileNetV2ImageProcessor(), MOBILENET),
        (levit, LevitImageProcessor(), LEVIT),
    ):
        model.save_pretrained(folders[name])
        processor.save_pretrained(folders[name])
    models = {NASVIT: subnet, NASVIT_MODULES: modules_only, SUPERNET: supernet, MOBILENET: mobilenet, LEVIT: levit}
    return models, folders, arch


def print_table(title: str, times: dict[str, float], cpu_times: dict[str, float]) -> None:
    print(f"\n{title}; load average {load_average()}")
    print(
        f"{'model':<30} {'wall ms':>9} {'/ MobileNetV2':>14} {'NASViT / model':>15} {'CPU ms':>9} {'CPU / MobileNetV2':>18}"
    )
    for name, seconds in times.items():
        print(
            f"{name:<30} {seconds * 1e3:>9.1f} {seconds / times[MOBILENET]:>14.2f} {times[NASVIT] / seconds:>15.2f} "
            f"{cpu_times[name] * 1e3:>9.1f} {cpu_times[name] / cpu_times[MOBILENET]:>18.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="Interleaved rounds at batch sizes < 8.")
    parser.add_argument("--repeats_large", type=int, default=7, help="Interleaved rounds at batch sizes >= 8.")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="Intra-op thread counts to run.")
    parser.add_argument("--no_pipeline", action="store_true", help="Skip the pipeline('image-classification') rows.")
    parser.add_argument("--no_supernet", action="store_true", help="Skip the supernet row.")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        models, folders, arch = build_models(workdir)
        if args.no_supernet:
            models.pop(SUPERNET)
        pipelines = {}
        if not args.no_pipeline:
            pipelines = {name: pipeline("image-classification", model=folder) for name, folder in folders.items()}
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
        macs = nasvit_hf.count_macs(nasvit_hf.NASViTConfig(), arch)
        print(f"# {machine_summary()}; A1-sized arch: {macs / 1e6:.1f} M MACs at 224 px")
        results = {"machine": machine_summary(), "macs_millions": macs / 1e6, "arch": arch, "runs": []}
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch_size in args.batch_sizes:
                pixel_values = torch.randn(batch_size, 3, 224, 224)
                repeats = args.repeats if batch_size < 8 else args.repeats_large
                load_before = load_average()
                times, cpu_times = time_callables_wall_and_cpu(
                    {name: (lambda m=m, x=pixel_values: m(x)) for name, m in models.items()}, repeats=repeats
                )
                print_table(
                    f"{threads} thread(s), batch {batch_size}, model(pixel_values), {repeats} rounds", times, cpu_times
                )
                results["runs"].append(
                    {
                        "threads": threads,
                        "batch": batch_size,
                        "path": "model",
                        "load_average": [load_before, load_average()],
                        "ms": {name: seconds * 1e3 for name, seconds in times.items()},
                        "cpu_ms": {name: seconds * 1e3 for name, seconds in cpu_times.items()},
                    }
                )
            if pipelines:
                load_before = load_average()
                times, cpu_times = time_callables_wall_and_cpu(
                    {name: (lambda p=p: p(image)) for name, p in pipelines.items()}, repeats=args.repeats
                )
                print_table(f"{threads} thread(s), pipeline('image-classification'), one image", times, cpu_times)
                results["runs"].append(
                    {
                        "threads": threads,
                        "batch": 1,
                        "path": "pipeline",
                        "load_average": [load_before, load_average()],
                        "ms": {name: seconds * 1e3 for name, seconds in times.items()},
                        "cpu_ms": {name: seconds * 1e3 for name, seconds in cpu_times.items()},
                    }
                )
        if pipelines:
            assert pipelines[NASVIT].model.nasvit._inference_cache.plan is not None, (
                "the pipeline did not use the plan"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
