#!/usr/bin/env python
"""Export named NASViT subnets (A0-A5, B0-B2, the paper's Table 13 archs) of a supernet as standalone Hub
checkpoints, re-deriving searched archs with one command.

    python recipes/export.py --supernet runs/tiny_supernet --names a0 a1 a2 b0 --output_dir exports \
        [--config recipes/configs/search_tiny.yaml] [--push_to_hub --hub_org my-org]
    python recipes/export.py --supernet nasvit-supernet --names table13-a1 --output_dir exports \
        --dataset imagefolder --data_dir /data/imagenet       # a preset arch: no search, BN calibration data only
    python recipes/export.py --supernet runs/tiny_supernet --arch_file arch.json --name mine --output_dir exports

Names without a published arch (A0-A5, B0-B2) are searched first with --config (default: search_reference.yaml for
the reference space, search_tiny.yaml otherwise; results in <output_dir>/search, resumable). Each subnet is then
extracted, its BN statistics recalibrated, its top-1 and latency measured, and saved to <output_dir>/nasvit-<name>
with safetensors weights, config (id2label), image processor, code for trust_remote_code and a README model card.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import yaml

from nasvit_hf.hub import export_subnet, named_subnet_from_arch, resolve_named_archs
from nasvit_hf.hub.family import push_family, write_family_index
from nasvit_hf.presets import get_search_space
from nasvit_hf.search import (
    SearchConfig,
    SearchRun,
    load_evaluation_data,
    load_supernet,
    load_supernet_processor,
    supernet_fingerprint,
    torch_threads,
)
from nasvit_hf.search.cli import add_data_arguments, configure_for_supernet
from nasvit_hf.search.config import BudgetSpec
from nasvit_hf.search.results import atomic_write_text

logger = logging.getLogger("nasvit_hf.export")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", required=True, help="folder of a NASViT supernet")
    parser.add_argument("--names", nargs="+", default=[], help="subnet names: a0..a5, b0..b2, table13-a1..a4")
    parser.add_argument("--arch_file", default=None, help="a JSON arch (or a named.json entry) to export as --name")
    parser.add_argument("--name", default=None, help="the name of the --arch_file subnet (folder <prefix><name>)")
    parser.add_argument(
        "--no_recalibration",
        action="store_true",
        help="keep the supernet's shared BN statistics (no calibration data needed; recorded in the card)",
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--config", default=None, help="search config (default: by the supernet's search space)")
    parser.add_argument("--search_dir", default=None, help="search results folder (default: <output_dir>/search)")
    parser.add_argument(
        "--license",
        default=None,
        help="license of the source weights for the model cards (default: the supernet README's, else 'unknown'; "
        "the reference checkpoint is cc-by-nc-4.0)",
    )
    parser.add_argument("--prefix", default="nasvit-", help="folder / repo name prefix (default: nasvit-)")
    parser.add_argument("--device", default=None, help="evaluation device (cpu, cuda, auto; default: the config's)")
    add_data_arguments(parser)
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_org", default=None, help="user or organisation the repos are created under")
    parser.add_argument(
        "--hub_private",
        action="store_true",
        help="create private repos and refuse to push to a public one (default: the account's default visibility)",
    )
    parser.add_argument(
        "--hub_token",
        default=None,
        help="discouraged (visible in the process list and shell history): use HF_TOKEN or `huggingface-cli login`",
    )
    parser.add_argument("--log_level", default="INFO")
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_org:
        parser.error("--push_to_hub needs --hub_org (the user or organisation to create the repos under).")
    if bool(args.arch_file) != bool(args.name):
        parser.error("--arch_file and --name go together: the arch to export and the name to export it under.")
    if not args.names and not args.arch_file:
        parser.error("nothing to export: give --names and/or --arch_file with --name.")
    if args.hub_token:
        logger.warning(
            "--hub_token puts the token in the process list and shell history; set HF_TOKEN or run "
            "`huggingface-cli login` instead."
        )
    return args


def default_config(search_space: dict) -> Path:
    return CONFIG_DIR / (
        "search_reference.yaml" if search_space == get_search_space("reference") else "search_tiny.yaml"
    )


def supernet_license(supernet_dir: Path) -> str:
    readme = supernet_dir / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        if text.startswith("---"):
            front = yaml.safe_load(text.split("---")[1]) or {}
            if isinstance(front, dict) and front.get("license"):
                return str(front["license"])
    return "unknown"


def main(argv=None) -> list:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supernet_dir = Path(args.supernet)
    names = [name.lower() for name in args.names]
    # Validate the names before loading anything heavy.
    resolve_named_archs(names)
    arch = None
    if args.arch_file:
        try:
            arch = json.loads(Path(args.arch_file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"--arch_file {args.arch_file!r} does not exist.") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"--arch_file {args.arch_file!r} is not JSON: {error}.") from None
    config_path = Path(args.config) if args.config else None
    supernet = load_supernet(supernet_dir)
    config_path = config_path or default_config(supernet.config.search_space)
    config = configure_for_supernet(SearchConfig.from_yaml(config_path), args, supernet_dir)
    custom = named_subnet_from_arch(args.name, arch, supernet.config, args.arch_file) if args.arch_file else None
    supernet.to(config.device)
    with torch_threads(config.num_threads):
        return export(args, names, supernet, supernet_dir, config, config_path, custom)


def export(args, names, supernet, supernet_dir: Path, config: SearchConfig, config_path: Path, custom=None) -> list:
    named = resolve_named_archs(names, supernet.config) + ([custom] if custom is not None else [])
    processor = load_supernet_processor(supernet_dir)  # the supernet's evaluation protocol, carried by the exports
    to_search = [entry.name for entry in named if entry.arch is None]
    data = None
    if to_search:
        missing = [name for name in to_search if name not in {b.name for b in config.budgets}]
        if missing:
            raise ValueError(
                f"{missing} have no published arch and no budget in {config_path}; add entries like "
                f"{BudgetSpec(name=missing[0], macs_millions=300).to_dict()} to its budgets."
            )
        run = SearchRun(
            supernet,
            config,
            Path(args.search_dir or Path(args.output_dir) / "search"),
            supernet_name=supernet_dir.resolve().name,
            config_name=config_path.name,
            supernet_id=supernet_fingerprint(supernet_dir),
            processor=processor,
        )
        searched = run.run(to_search)
        named = resolve_named_archs(names, supernet.config, searched) + ([custom] if custom is not None else [])
        data = run.data
    if data is None:
        data = load_evaluation_data(config.data, processor)
        if data.num_labels != supernet.config.num_labels:
            raise ValueError(
                f"the calibration/evaluation data ({data.description}) has {data.num_labels} classes, the supernet "
                f"{supernet.config.num_labels}: name the data it was trained on (--dataset / --data_dir)."
            )
    license = args.license or supernet_license(supernet_dir)
    if license == "unknown":
        logger.warning(
            "the source weights' license is unknown: pass --license (the reference checkpoint's is "
            "cc-by-nc-4.0); the model cards say it is not stated"
        )
    exported = []
    for entry in named:
        folder = Path(args.output_dir) / f"{args.prefix}{entry.name}"
        repo_id = f"{args.hub_org}/{folder.name}" if args.hub_org else None
        exported.append(
            export_subnet(
                supernet,
                entry,
                folder,
                data,
                supernet_name=supernet_dir.resolve().name,  # a name, not a local path: the folder may be pushed
                license=license,
                latency_kwargs=config.latency.measure_kwargs(),
                repo_id=repo_id,
                recalibrate=not args.no_recalibration,
            )
        )
    summary = [item.__dict__ for item in exported]
    atomic_write_text(Path(args.output_dir) / "exports.json", json.dumps(summary, indent=2) + "\n")
    index = write_family_index(
        exported, Path(args.output_dir), supernet=supernet_dir.resolve().name, hub_org=args.hub_org, prefix=args.prefix
    )
    if args.push_to_hub:
        push_family(
            exported,
            index,
            args.hub_org,
            prefix=args.prefix,
            token=args.hub_token,
            private=True if args.hub_private else None,
        )
    print(f"{'name':<12}{'MACs (M)':>10}{'params (M)':>12}{'latency (ms)':>14}{'top-1 (%)':>11}  folder")
    for item in exported:
        print(
            f"{item.name:<12}{item.macs / 1e6:>10.2f}{item.params / 1e6:>12.3f}{item.latency_ms:>14.2f}"
            f"{item.accuracy:>11.2f}  {item.path}"
        )
    return exported


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError) as error:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {error}") from None
