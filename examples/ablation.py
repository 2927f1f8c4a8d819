#!/usr/bin/env python
"""The paper's Table 7 at toy scale: the tiny search space on the bundled digits.

Five supernets, each trained with recipes/train.py from the same seed and the same data order:

  baseline        AlphaNet-style recipe: RandAugment n=2 m=9 (stand-in for AutoAugment), weight decay 1e-5,
                  DropConnect 0.2, dropout 0.2; one non-switchable layer scale (switchable_scaling=shared); plain sum
  + weak DA & reg RandAugment n=1 m=1, no weight decay, DropConnect or dropout
  + switchable    switchable scaling layers keyed by (depth, width) as in the paper (switchable_scaling=width)
  + proj (sub)    gradient projection prioritising the subnets (Eqn. 1, per tensor, cap 2)
  + proj (sup)    the roles swapped

Each run reports the smallest and largest subnet's top-1 on the validation split (after BN recalibration) and the
gradient-conflict ratio (share of parameter tensors with cos(g_sup, g_sub) < 0, measured before combination),
averaged over the last epoch. Writes ablation.md, ablation.json and ablation.png to --output_dir.

    python examples/ablation.py --epochs 3 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASELINE = {
    "randaugment_num_ops": 2,
    "randaugment_magnitude": 9,
    "weight_decay": 1e-5,
    "drop_connect_rate": 0.2,
    "dropout": 0.2,
    "switchable_scaling": "shared",
    "gradient_priority": "none",
}
WEAK = {
    "randaugment_num_ops": 1,
    "randaugment_magnitude": 1,
    "weight_decay": 0.0,
    "drop_connect_rate": 0.0,
    "dropout": 0.0,
}
VARIANTS = {
    "baseline": BASELINE,
    "weak_da_reg": {**BASELINE, **WEAK},
    "switchable_scaling": {**BASELINE, **WEAK, "switchable_scaling": "width"},
    "prioritize_sub": {**BASELINE, **WEAK, "switchable_scaling": "width", "gradient_priority": "sub"},
    "prioritize_sup": {**BASELINE, **WEAK, "switchable_scaling": "width", "gradient_priority": "sup"},
}
TITLES = {
    "baseline": "Baseline",
    "weak_da_reg": "Weak DA & Reg",
    "switchable_scaling": "Switchable scaling",
    "prioritize_sub": "Prioritize (sub)",
    "prioritize_sup": "Prioritize (sup)",
}


def run_variant(name: str, overrides: dict, args) -> dict:
    output_dir = Path(args.output_dir) / f"{name}_seed{args.seed}"
    command = [sys.executable, str(ROOT / "recipes" / "train.py"), "--config", str(args.config)]
    values = {
        **overrides,
        "num_train_epochs": args.epochs,
        "eval_every_epochs": args.epochs,
        "seed": args.seed,
        "output_dir": str(output_dir),
        "num_threads": 1,
        "progress_bar": False,
        "checkpointing_steps": None,
        "save_final_model": False,
    }
    for key, value in values.items():
        command += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    start = time.time()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-4000:]}")
    summary = json.loads((output_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]
    last_epoch = max(r["epoch"] for r in records)
    ratios = [r["conflict_ratio"] for r in records if r["epoch"] == last_epoch]
    all_ratios = [r["conflict_ratio"] for r in records]
    return {
        "variant": name,
        "overrides": overrides,
        "smallest_top1": summary["validation"]["smallest"]["top1"],
        "largest_top1": summary["validation"]["largest"]["top1"],
        "conflict_ratio_last_epoch": sum(ratios) / len(ratios),
        "conflict_ratio_all_steps": sum(all_ratios) / len(all_ratios),
        "conflict_curve": all_ratios,
        "steps": summary["steps"],
        "seconds": round(time.time() - start, 1),
    }


def write_report(results: list[dict], args) -> str:
    output_dir = Path(args.output_dir)
    names = [r["variant"] for r in results]
    header = "| | " + " | ".join(TITLES[n] for n in names) + " |"
    lines = [header, "|---" * (len(names) + 1) + "|"]
    lines.append("| Top-1 smallest (%) | " + " | ".join(f"{r['smallest_top1']:.1f}" for r in results) + " |")
    lines.append("| Top-1 largest (%) | " + " | ".join(f"{r['largest_top1']:.1f}" for r in results) + " |")
    lines.append(
        "| Conflict ratio, last epoch | "
        + " | ".join(f"{100 * r['conflict_ratio_last_epoch']:.0f}%" for r in results)
        + " |"
    )
    lines.append(
        "| Conflict ratio, all steps | "
        + " | ".join(f"{100 * r['conflict_ratio_all_steps']:.0f}%" for r in results)
        + " |"
    )
    table = "\n".join(lines)
    (output_dir / "ablation.md").write_text(table + "\n")
    (output_dir / "ablation.json").write_text(json.dumps(results, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    positions = range(len(results))
    width = 0.38
    left.bar([p - width / 2 for p in positions], [r["smallest_top1"] for r in results], width, label="smallest")
    left.bar([p + width / 2 for p in positions], [r["largest_top1"] for r in results], width, label="largest")
    left.set_xticks(list(positions), [TITLES[n] for n in names], rotation=20, ha="right")
    left.set_ylabel("validation top-1 (%)")
    left.set_title(f"Digits, tiny space, {args.epochs} epochs")
    left.legend(loc="lower right")
    window = 10
    for r in results:
        curve = r["conflict_curve"]
        smooth = [
            sum(curve[max(0, i - window + 1) : i + 1]) / len(curve[max(0, i - window + 1) : i + 1])
            for i in range(len(curve))
        ]
        right.plot(range(1, len(curve) + 1), smooth, label=TITLES[r["variant"]])
    right.set_xlabel("step")
    right.set_ylabel(f"conflict ratio (before combination, {window}-step mean)")
    right.legend()
    figure.tight_layout()
    figure.savefig(output_dir / "ablation.png", dpi=120)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "digits_tiny.yaml"))
    parser.add_argument("--output_dir", default="outputs/ablation")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one CPU thread each)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--report_only", action="store_true", help="rewrite table and plot from ablation.json")
    args = parser.parse_args(argv)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    if args.report_only:
        print(write_report(json.loads((Path(args.output_dir) / "ablation.json").read_text()), args))
        return
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda name: run_variant(name, VARIANTS[name], args), args.variants))
    table = write_report(results, args)
    print(table)
    print(f"\nwritten to {args.output_dir}/ablation.{{md,json,png}}")


if __name__ == "__main__":
    main()
