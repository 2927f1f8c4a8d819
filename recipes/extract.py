#!/usr/bin/env python
"""Extract named NASViT subnets (A0-A5, B0-B2, the paper's Table 13 archs) of a supernet and save them as standalone
Hub checkpoints with model cards, re-deriving searched archs with one command. (Exporting is writing a graph:
`recipes/deploy.py` / `nasvit_hf.deploy`. This command was `recipes/export.py`, which still forwards here.)

    python recipes/extract.py --supernet outputs/digits_tiny/final --names a0 a1 a2 b0 --output_dir subnets \
        [--config recipes/configs/search_tiny.yaml] [--push_to_hub --hub_org my-org]
    python recipes/extract.py --supernet nasvit-supernet --names table13-a1 --output_dir subnets \
        --data.dataset imagefolder --data.data_dir /data/imagenet   # a preset arch: no search, BN calibration data only
    python recipes/extract.py --supernet outputs/digits_tiny/final --arch_file arch.json --name mine --output_dir subnets

Names without a published arch (A0-A5, B0-B2) are searched first with --config (default: search_reference.yaml for
the reference space, search_tiny.yaml otherwise; results in <output_dir>/search, resumable). Each subnet is then
extracted, its BN statistics recalibrated, its top-1 and latency measured, and saved to <output_dir>/nasvit-<name>
with safetensors weights, config (id2label), image processor, code for trust_remote_code and a README model card.
An existing folder is replaced only with --overwrite, and only if this tool saved it (it holds
nasvit_subnet.json, or nasvit_export.json from earlier versions). Every key of the search config can be overridden
as `--key value` (e.g. `--device cpu`, `--data.data_dir DIR`); --help lists them. A supernet trained with
`holdout_per_class` is calibrated and evaluated on its held-out split (holdout.json, found beside it). Besides the folders, <output_dir>/nasvit-family holds the
family index (a card linking every member, family.json); --push_to_hub pushes the members, then the index.
"""

# No `from __future__ import annotations`: the options dataclass must resolve its annotations even when the recipe
# is loaded as a file without a module in sys.modules (tests load it with importlib).
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nasvit_hf.config_system import ConfigError, ConfigMixin, exit_on_user_error, parse_command_line, run_recipe
from nasvit_hf.hub import named_subnet_from_arch, resolve_named_archs, save_subnet
from nasvit_hf.hub.family import (
    check_family_target,
    check_member_name,
    push_family,
    write_family_index,
    write_subnets_summary,
)
from nasvit_hf.hub.subnets import check_subnet_target
from nasvit_hf.loading import load_supernet, load_supernet_processor
from nasvit_hf.presets import get_search_space
from nasvit_hf.search import (
    SearchConfig,
    SearchRun,
    load_evaluation_data,
    supernet_fingerprint,
    torch_threads,
)
from nasvit_hf.search.config import BudgetSpec

logger = logging.getLogger("nasvit_hf.extract")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class ExtractOptions(ConfigMixin):
    supernet: str  # folder of a NASViT supernet
    output_dir: str  # one folder <prefix><name> per subnet is written here
    names: list[str] = field(default_factory=list)  # subnet names: a0..a5, b0..b2, table13-a1..a4
    arch_file: str | None = None  # a JSON arch (or a named.json entry) to extract as --name
    name: str | None = None  # the name of the --arch_file subnet (folder <prefix><name>)
    no_recalibration: bool = False  # keep the supernet's shared BN statistics (no calibration; recorded in the card)
    search_dir: str | None = None  # search results folder (default: <output_dir>/search)
    license: str | None = None  # license of the source weights for the model cards (default: the supernet README's,
    # else 'unknown'; the reference checkpoint is cc-by-nc-4.0)
    prefix: str = "nasvit-"  # folder / repo name prefix
    overwrite: bool = False  # replace folders this tool saved earlier (holding its marker file), nothing else
    push_to_hub: bool = False
    hub_org: str | None = None  # user or organisation the repos are created under
    hub_private: bool = False  # create private repos and refuse to push to a public one (default: the account's
    # default visibility)
    hub_token: str | None = None  # discouraged (visible in the process list and shell history): use HF_TOKEN or
    # `huggingface-cli login`
    log_level: str = "INFO"


def parse_args(argv: list[str] | None = None) -> ExtractOptions:
    """The options, with `config_overrides` (search-config keys) and `config_path` (None: by the search space)."""
    with exit_on_user_error():
        options, overrides, config_path = parse_command_line(argv, ExtractOptions, SearchConfig, __doc__)
        if config_path:
            SearchConfig.from_yaml(config_path, overrides)  # a bad config file fails before anything is loaded
        if options.push_to_hub and not options.hub_org:
            raise ConfigError("--push_to_hub needs --hub_org (the user or organisation to create the repos under).")
        if bool(options.arch_file) != bool(options.name):
            raise ConfigError("--arch_file and --name go together: the arch to extract and the name to save it under.")
        if not options.names and not options.arch_file:
            raise ConfigError("nothing to extract: give --names and/or --arch_file with --name.")
    if options.hub_token:
        logger.warning(
            "--hub_token puts the token in the process list and shell history; set HF_TOKEN or run "
            "`huggingface-cli login` instead."
        )
    options.config_overrides, options.config_path = overrides, config_path
    return options


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
    overrides, config_path = args.config_overrides, args.config_path
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supernet_dir = Path(args.supernet)
    names = [name.lower() for name in args.names]
    # Validate the names, the prefix, the family index (of this supernet, or none yet), subnets.json and the output
    # folders before the supernet is loaded.
    resolve_named_archs(names)
    custom_name = check_member_name(args.name, args.prefix) if args.name else None
    args.supernet_id = supernet_fingerprint(supernet_dir)
    check_family_target(args.output_dir, args.prefix, args.supernet_id)
    for name in names + ([custom_name] if custom_name else []):
        check_subnet_target(Path(args.output_dir) / f"{args.prefix}{name}", args.overwrite)
    arch = None
    if args.arch_file:
        try:
            arch = json.loads(Path(args.arch_file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"--arch_file {args.arch_file!r} does not exist.") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"--arch_file {args.arch_file!r} is not JSON: {error}.") from None
    supernet = load_supernet(supernet_dir)
    config_path = Path(config_path) if config_path else default_config(supernet.config.search_space)
    config = SearchConfig.from_yaml(config_path, overrides).with_available_devices()
    config.with_evaluation_data(supernet_dir, overrides)  # its held-out split; never its training images
    custom = named_subnet_from_arch(custom_name, arch, supernet.config, args.arch_file) if args.arch_file else None
    supernet.to(config.device)
    with torch_threads(config.num_threads):
        return extract(args, names, supernet, supernet_dir, config, config_path, custom)


def extract(args, names, supernet, supernet_dir: Path, config: SearchConfig, config_path: Path, custom=None) -> list:
    extra = [custom] if custom is not None else []
    named = resolve_named_archs(names, supernet.config) + extra
    processor = load_supernet_processor(supernet_dir)  # the supernet's evaluation protocol, carried by the subnets
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
            supernet_id=args.supernet_id,
            processor=processor,
        )
        searched = run.run(to_search)
        named = resolve_named_archs(names, supernet.config, searched) + extra
        data = run.data
    if data is None:
        data = load_evaluation_data(config.data, processor, max(supernet.config.search_space["resolutions"]))
        if data.num_labels != supernet.config.num_labels:
            raise ConfigError(
                f"the calibration/evaluation data ({data.description}) has {data.num_labels} classes, the supernet "
                f"{supernet.config.num_labels}: name the data it was trained on (--data.dataset / --data.data_dir)."
            )
    license = args.license or supernet_license(supernet_dir)
    if license == "unknown":
        logger.warning(
            "the source weights' license is unknown: pass --license (the reference checkpoint's is "
            "cc-by-nc-4.0); the model cards say it is not stated"
        )
    saved = []
    for entry in named:
        folder = Path(args.output_dir) / f"{args.prefix}{entry.name}"
        repo_id = f"{args.hub_org}/{folder.name}" if args.hub_org else None
        saved.append(
            save_subnet(
                supernet,
                entry,
                folder,
                data,
                supernet_name=supernet_dir.resolve().name,  # a name, not a local path: the folder may be pushed
                license=license,
                latency_kwargs=config.latency.measure_kwargs(),
                repo_id=repo_id,
                overwrite=args.overwrite,
                recalibrate=not args.no_recalibration,
            )
        )
    write_subnets_summary(saved, args.output_dir)  # the subnets saved earlier into the folder stay listed
    index = write_family_index(
        saved,
        Path(args.output_dir),
        supernet=supernet_dir.resolve().name,
        hub_org=args.hub_org,
        prefix=args.prefix,
        supernet_id=args.supernet_id,
    )
    if args.push_to_hub:  # every member, then the index that links them
        push_family(
            saved,
            index,
            args.hub_org,
            prefix=args.prefix,
            token=args.hub_token,
            private=True if args.hub_private else None,
        )
    print(f"{'name':<12}{'MACs (M)':>10}{'params (M)':>12}{'latency (ms)':>14}{'top-1 (%)':>11}  folder")
    for item in saved:
        print(
            f"{item.name:<12}{item.macs / 1e6:>10.2f}{item.params / 1e6:>12.3f}{item.latency_ms:>14.2f}"
            f"{item.accuracy:>11.2f}  {item.path}"
        )
    return saved


if __name__ == "__main__":
    sys.exit(run_recipe(main))
