#!/usr/bin/env python
"""Convert a reference NASViT checkpoint (facebookresearch/NASViT format) to a Hugging Face supernet folder.

    python recipes/convert_official_checkpoint.py --checkpoint supernet.pth --output_dir nasvit-supernet \
        [--search_space space.json]

Accepts a `torch.save` dict with `model_ema` (preferred), `model` or `state_dict`, or a bare state dict (also
`.safetensors`); `module.` prefixes are stripped and the class count is read from the classifier. The folder is
written atomically, with a nasvit_conversion.json marker: --overwrite replaces only a folder this converter made,
never anything else. It loads with `AutoModelForImageClassification.from_pretrained` after `import nasvit_hf`, or
with `trust_remote_code=True` without it.
"""

# No `from __future__ import annotations`: the options dataclass must resolve its annotations even when the recipe
# is loaded as a file without a module in sys.modules.
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from nasvit_hf import NASViTImageProcessor
from nasvit_hf.config_system import ConfigError, ConfigMixin, exit_on_user_error, parse_command_line, run_recipe
from nasvit_hf.conversion import load_reference_checkpoint
from nasvit_hf.utils.io import atomic_write_json, staging_folder

logger = logging.getLogger("nasvit_hf.conversion")
CONVERSION_MARKER = "nasvit_conversion.json"  # written into every converted folder: only such folders are replaced


@dataclass
class ConvertOptions(ConfigMixin):
    checkpoint: str  # reference checkpoint (.pth/.pt/.safetensors)
    output_dir: str  # folder to write (must not exist unless --overwrite)
    search_space: str | None = None  # JSON file of the search space (default: reference)
    overwrite: bool = False  # replace an output_dir that this converter wrote earlier (never any other folder)
    trust_checkpoint: bool = False  # allow unpickling Python objects stored beside the weights (only for
    # checkpoints you trust)


def parse_args(argv: list[str] | None = None) -> ConvertOptions:
    with exit_on_user_error():
        return parse_command_line(argv, ConvertOptions, None, __doc__)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output_dir = Path(os.path.abspath(args.output_dir))
    if output_dir.exists() and not args.overwrite:
        raise FileExistsError(f"{output_dir} already exists; pass --overwrite to replace it (only a folder this "
                              "converter wrote can be replaced).")  # fmt: skip
    search_space = None
    if args.search_space is not None:
        try:
            search_space = json.loads(Path(args.search_space).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read the search space {args.search_space}: {error}") from None
    with staging_folder(output_dir, marker=CONVERSION_MARKER) as staging:  # checks ownership before converting
        model = load_reference_checkpoint(args.checkpoint, search_space, trust_checkpoint=args.trust_checkpoint)
        # The reference evaluates every subnet on resize 256 -> centre crop 224 -> bicubic resize to its resolution:
        # its published accuracy holds under that protocol, which search and extraction then carry to every subnet.
        processor = NASViTImageProcessor.for_resolution(model.config.arch["resolution"], crop_mode="reference")
        processor.save_pretrained(staging)
        model.save_pretrained(staging)
        atomic_write_json(staging / CONVERSION_MARKER, {"converted_from": Path(args.checkpoint).name})
    num_params = sum(p.numel() for p in model.parameters())
    logger.info(
        "wrote %s: supernet with %d classes, %.2f M parameters, search space resolutions %s",
        output_dir,
        model.config.num_labels,
        num_params / 1e6,
        model.config.search_space["resolutions"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_recipe(main))
