#!/usr/bin/env python
"""Convert a reference NASViT checkpoint (facebookresearch/NASViT format) to a Hugging Face supernet folder.

    python recipes/convert_official_checkpoint.py --checkpoint supernet.pth --output_dir nasvit-supernet \
        [--search_space space.json]

Accepts a `torch.save` dict with `model_ema` (preferred), `model` or `state_dict`, or a bare state dict (also
`.safetensors`); `module.` prefixes are stripped and the class count is read from the classifier. The folder is
written atomically and loads with `AutoModelForImageClassification.from_pretrained` after `import nasvit_hf`, or
with `trust_remote_code=True` without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile

from nasvit_hf import NASViTImageProcessor
from nasvit_hf.conversion import NotANASViTCheckpointError, load_reference_checkpoint

logger = logging.getLogger("convert_official_checkpoint")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="reference checkpoint (.pth/.pt/.safetensors)")
    parser.add_argument("--output_dir", required=True, help="folder to write (must not exist unless --overwrite)")
    parser.add_argument("--search_space", default=None, help="JSON file of the search space (default: reference)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")
    parser.add_argument(
        "--trust_checkpoint",
        action="store_true",
        help="allow unpickling Python objects stored beside the weights (only for checkpoints you trust)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output_dir = os.path.abspath(args.output_dir)
    if os.path.exists(output_dir) and not args.overwrite:
        print(f"error: {output_dir} already exists; pass --overwrite to replace it.", file=sys.stderr)
        return 2
    search_space = None
    if args.search_space is not None:
        try:
            with open(args.search_space) as handle:
                search_space = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            print(f"error: cannot read the search space {args.search_space}: {error}", file=sys.stderr)
            return 2
    try:
        model = load_reference_checkpoint(args.checkpoint, search_space, trust_checkpoint=args.trust_checkpoint)
    except (NotANASViTCheckpointError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    parent = os.path.dirname(output_dir) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".converting-", dir=parent)
    try:
        # The reference evaluates every subnet on resize 256 -> centre crop 224 -> bicubic resize to its resolution:
        # its published accuracy holds under that protocol, which search and export then carry to every subnet.
        processor = NASViTImageProcessor.for_resolution(model.config.arch["resolution"], crop_mode="reference")
        processor.save_pretrained(staging)
        model.save_pretrained(staging)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
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
    sys.exit(main())
