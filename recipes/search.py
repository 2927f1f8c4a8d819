#!/usr/bin/env python
"""Search a trained NASViT supernet for the best subnets under MACs / latency budgets (paper, Appendix C.1/C.2).

    python recipes/search.py --supernet outputs/digits_tiny/final --config recipes/configs/search_tiny.yaml \
        --output_dir runs/tiny_search [--device cpu] [--predictor.num_subnets 32]

Steps (each persisted in --output_dir; rerun the same command to resume after an interruption):
BN recalibration + top-1 of N sampled subnets on the held-out split → random-forest accuracy predictor (Kendall tau,
Spearman rho on a validation half) → latency measurements and latency model (held-out error) → evolutionary search
per budget → the winners' real accuracy and latency → Pareto fronts (pareto.json, pareto.png) and named.json.
Every key of the search config (`nasvit_hf.search.SearchConfig`, listed by --help) can be overridden as
`--key value`, nested ones with dots (`--latency.repeats 10`, `--data.dataset imagefolder --data.data_dir DIR`). A
supernet trained with `holdout_per_class` is ranked on its held-out split (holdout.json, found beside it, or named
with `--data.holdout`); ranking on the split the supernet was trained on is refused.
"""

# No `from __future__ import annotations`: the options dataclass must resolve its annotations even when the recipe
# is loaded as a file without a module in sys.modules (tests load it with importlib).
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from nasvit_hf.config_system import ConfigError, ConfigMixin, exit_on_user_error, parse_command_line, run_recipe
from nasvit_hf.loading import load_supernet, load_supernet_processor
from nasvit_hf.search import (
    SearchConfig,
    SearchRun,
    supernet_fingerprint,
    torch_threads,
)

logger = logging.getLogger("nasvit_hf.search")


@dataclass
class SearchOptions(ConfigMixin):
    supernet: str  # folder of a NASViT supernet (save_pretrained format)
    output_dir: str | None = None  # results folder (default: <supernet>/search_<config name>)
    names: list[str] | None = None  # search only these budget names (default: all)
    log_level: str = "INFO"


def parse_args(argv: list[str] | None = None) -> tuple[SearchOptions, SearchConfig, str, dict]:
    """(options, search config, its path, the command line's config overrides)."""
    with exit_on_user_error():
        options, overrides, path = parse_command_line(argv, SearchOptions, SearchConfig, __doc__)
        if path is None:
            raise ConfigError("--config is required: a search config YAML (recipes/configs/search_<name>.yaml).")
        if "seed" in overrides:  # one seed for the search and its data, unless the data's is given
            overrides.setdefault("data.seed", overrides["seed"])
        config = SearchConfig.from_yaml(path, overrides).with_available_devices()
    return options, config, path, overrides


def main(argv: list[str] | None = None) -> dict:
    options, config, config_path, overrides = parse_args(argv)
    logging.basicConfig(level=options.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supernet_dir = Path(options.supernet)
    config.with_evaluation_data(supernet_dir, overrides)  # its held-out split; never its training images
    with torch_threads(config.num_threads):
        supernet = load_supernet(supernet_dir, device=config.device)
        output_dir = Path(options.output_dir or supernet_dir / f"search_{Path(config_path).stem}")
        run = SearchRun(
            supernet,
            config,
            output_dir,
            supernet_name=supernet_dir.resolve().name,
            config_name=Path(config_path).name,
            supernet_id=supernet_fingerprint(supernet_dir),
            processor=load_supernet_processor(supernet_dir),  # evaluate as the exported subnets will preprocess
        )
        named = run.run(options.names)
    print(f"results in {output_dir}")
    print(f"{'name':<8}{'MACs (M)':>10}{'params (M)':>12}{'latency (ms)':>14}{'top-1 (%)':>11}  budget")
    for name, entry in named.items():
        print(
            f"{name:<8}{entry['macs'] / 1e6:>10.2f}{entry['params'] / 1e6:>12.3f}{entry['latency_ms']:>14.2f}"
            f"{entry['accuracy']:>11.2f}  {entry['budget']['metric']} <= {entry['budget']['value']:.4g}"
        )
    return named


if __name__ == "__main__":
    sys.exit(run_recipe(main))
