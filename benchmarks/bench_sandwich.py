#!/usr/bin/env python
"""Cost of weight sharing and of gradient combination in one sandwich step (CPU by default).

Measured in one run, interleaved, median of repeats:
  A. one sandwich step on the supernet (largest + smallest + N random archs: forward, backward, gradient harvesting,
     clipping, conflict ratio, projection, AdamW step);
  B. the same archs trained separately as standalone extracted subnets (`extract_subnet`): forward + backward each,
     plus one AdamW step each: what the same work costs without weight sharing;
  C. the gradient-combination part alone (conflict ratio + `combine_gradients` on the step's real gradients).
Reports A / B (weight-sharing overhead, target <= 1.2x) and C / A (combination overhead, target <= 5 %).

With `--baseline REV` (a git revision of this repository) it also times A against the same step of that revision's
code: its `nasvit_hf` is unpacked with `git archive` into a temporary folder, and two worker processes (the current
package and the baseline's) build the same supernet, batch and archs and are stepped alternately, so one load affects
both; the ratio current / baseline is what issue 14 bounds ("the sandwich step no slower than today").
`BASELINE_REVISION` is the commit the inference fast path started from.

    python benchmarks/bench_sandwich.py --space tiny --batch_size 32 --repeats 7
    python benchmarks/bench_sandwich.py --space tiny --batch_size 32 --repeats 15 --baseline 11fd7cb
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from nasvit_hf import NASViTConfig, NASViTForImageClassification
from nasvit_hf.presets import get_search_space
from nasvit_hf.training import ArchSampler, SandwichConfig, SandwichTrainer, combine_gradients, conflict_ratio
from nasvit_hf.training.losses import adaptive_alpha_divergence, soft_target_cross_entropy

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REVISION = "11fd7cb"  # the parent of the first inference-fast-path commit (efc21ae)


def _start_worker(pythonpath: str, settings: dict) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS=str(settings["threads"]))
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "_sandwich_worker.py"), json.dumps(settings)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    ready = json.loads(worker.stdout.readline())
    if not ready.get("ready", "").startswith(pythonpath):
        raise RuntimeError(f"worker imported nasvit_hf from {ready.get('ready')!r}, not from {pythonpath!r}")
    return worker


def _step(worker: subprocess.Popen) -> float:
    worker.stdin.write("step\n")
    worker.stdin.flush()
    line = worker.stdout.readline()
    if not line:
        raise RuntimeError("a sandwich worker exited early: run it alone to see its error")
    return float(line)


def compare_with_baseline(revision: str, settings: dict, repeats: int) -> dict:
    """Median sandwich-step seconds of the current code and of `revision`'s, stepped alternately."""
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "nasvit_hf"],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        workers = {"current": _start_worker(str(ROOT), settings), "baseline": _start_worker(folder, settings)}
        try:
            for worker in workers.values():  # warm-up
                _step(worker)
            times: dict[str, list[float]] = {name: [] for name in workers}
            for index in range(repeats):
                order = list(workers) if index % 2 == 0 else list(reversed(workers))
                for name in order:
                    times[name].append(_step(workers[name]))
        finally:
            for worker in workers.values():
                worker.stdin.close()
                try:
                    worker.wait(timeout=300)  # on a throttled machine tearing down torch can take a minute
                except subprocess.TimeoutExpired:
                    worker.kill()  # its timings are already read
                    worker.wait()
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "baseline_revision": revision,
        "median_seconds": {name: round(value, 4) for name, value in median.items()},
        "current_over_baseline": round(median["current"] / median["baseline"], 3),
        # each current step next to the baseline step taken just before or after it: steadier under drifting load
        "median_of_paired_ratios": round(
            statistics.median(c / b for c, b in zip(times["current"], times["baseline"], strict=True)), 3
        ),
        "seconds": {name: [round(value, 4) for value in values] for name, values in times.items()},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_random", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--granularity", default="tensor", choices=["tensor", "global"])
    parser.add_argument(
        "--baseline",
        nargs="?",
        const=BASELINE_REVISION,
        default=None,
        help=f"also time the sandwich step against this git revision's code (default {BASELINE_REVISION})",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = NASViTConfig(search_space=get_search_space(args.space), num_labels=10)
    supernet = NASViTForImageClassification(config).train()
    optimizer = torch.optim.AdamW(supernet.parameters(), lr=1e-4)
    trainer = SandwichTrainer(
        supernet, SandwichConfig(num_random_subnets=args.num_random, granularity=args.granularity)
    )
    archs = ArchSampler(config, args.num_random, seed=0).sample()
    resolution = max(config.search_space["resolutions"])
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(args.batch_size, 3, resolution, resolution, generator=generator)
    labels = torch.randint(10, (args.batch_size,), generator=generator)
    subnets = []
    for _, arch in archs:
        subnet = supernet.extract_subnet(arch).train()
        subnets.append((subnet, torch.optim.AdamW(subnet.parameters(), lr=1e-4)))

    def sandwich():
        trainer.accumulate(pixel_values, labels, archs)
        trainer.step(optimizer)

    def separate():
        teacher_logits = None
        for index, (subnet, subnet_optimizer) in enumerate(subnets):
            logits = subnet(pixel_values=pixel_values).logits
            if index == 0:
                loss = soft_target_cross_entropy(logits, labels)
                teacher_logits = logits.detach()
            else:
                loss = adaptive_alpha_divergence(logits, teacher_logits)
            loss.backward()
            subnet_optimizer.step()
            subnet_optimizer.zero_grad(set_to_none=True)

    def gradients():
        trainer.accumulate(pixel_values, labels, archs)
        sup, sub = list(trainer.sup_grads), list(trainer.sub_grads)
        trainer._reset_buffers()
        return sup, sub

    sup_grads, sub_grads = gradients()

    def combination():
        conflict_ratio(sup_grads, sub_grads)
        combine_gradients(sup_grads, sub_grads, "sub", args.granularity)

    for function in (sandwich, separate, combination):  # warm-up
        function()
    times = {"sandwich": [], "separate": [], "combination": []}
    for _ in range(args.repeats):
        for name, function in (("sandwich", sandwich), ("separate", separate), ("combination", combination)):
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "space": args.space,
        "batch_size": args.batch_size,
        "archs": len(archs),
        "threads": args.threads,
        "granularity": args.granularity,
        "parameter_tensors": len(trainer.parameters),
        "median_seconds": {k: round(v, 4) for k, v in median.items()},
        "sandwich_over_separate": round(median["sandwich"] / median["separate"], 3),
        "combination_share_of_step": round(median["combination"] / median["sandwich"], 4),
    }
    if args.baseline:
        settings = {
            "space": args.space,
            "threads": args.threads,
            "granularity": args.granularity,
            "batch_size": args.batch_size,
            "resolution": resolution,
            "archs": [[name, arch] for name, arch in archs],
        }
        result["baseline"] = compare_with_baseline(args.baseline, settings, args.repeats)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
