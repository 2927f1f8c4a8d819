#!/usr/bin/env python
"""Search a trained NASViT supernet for the best subnets under MACs / latency budgets (paper, Appendix C.1/C.2).

    python recipes/search.py --supernet runs/tiny_supernet --config recipes/configs/search_tiny.yaml \
        --output_dir runs/tiny_search

Steps (each persisted in --output_dir; rerun the same command to resume after an interruption):
BN recalibration + top-1 of N sampled subnets on the held-out split → random-forest accuracy predictor (Kendall tau,
Spearman rho on a validation half) → latency measurements and latency model (held-out error) → evolutionary search
per budget → the winners' real accuracy and latency → Pareto fronts (pareto.json, pareto.png) and named.json.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nasvit_hf.search import (
    SearchConfig,
    SearchRun,
    load_supernet,
    load_supernet_processor,
    supernet_fingerprint,
    torch_threads,
)
from nasvit_hf.search.cli import add_data_arguments, configure_for_supernet

logger = logging.getLogger("nasvit_hf.search")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True, help="folder of a NASViT supernet (save_pretrained format)")
    parser.add_argument("--config", required=True, help="search config YAML (recipes/configs/search_<name>.yaml)")
    parser.add_argument("--output_dir", default=None, help="results folder (default: <supernet>/search_<config>)")
    parser.add_argument("--names", nargs="*", default=None, help="search only these budget names (default: all)")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument("--device", default=None, help="evaluation device (cpu, cuda, auto; default: the config's)")
    add_data_arguments(parser)
    parser.add_argument("--log_level", default="INFO")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raw_config = SearchConfig.from_yaml(args.config).to_dict()
    if args.seed is not None:
        raw_config["seed"] = args.seed
        raw_config["data"]["seed"] = args.seed
    config = configure_for_supernet(SearchConfig.from_dict(raw_config), args, Path(args.supernet))
    with torch_threads(config.num_threads):
        return search(args, config)


def search(args: argparse.Namespace, config: SearchConfig) -> dict:
    supernet_dir = Path(args.supernet)
    supernet = load_supernet(supernet_dir, device=config.device)
    output_dir = Path(args.output_dir or supernet_dir / f"search_{Path(args.config).stem}")
    run = SearchRun(
        supernet,
        config,
        output_dir,
        supernet_name=supernet_dir.resolve().name,
        config_name=Path(args.config).name,
        supernet_id=supernet_fingerprint(supernet_dir),
        processor=load_supernet_processor(supernet_dir),  # evaluate as the exported subnets will preprocess
    )
    named = run.run(args.names)
    print(f"results in {output_dir}")
    print(f"{'name':<8}{'MACs (M)':>10}{'params (M)':>12}{'latency (ms)':>14}{'top-1 (%)':>11}  budget")
    for name, entry in named.items():
        print(
            f"{name:<8}{entry['macs'] / 1e6:>10.2f}{entry['params'] / 1e6:>12.3f}{entry['latency_ms']:>14.2f}"
            f"{entry['accuracy']:>11.2f}  {entry['budget']['metric']} <= {entry['budget']['value']:.4g}"
        )
    return named


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError) as error:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {error}") from None
