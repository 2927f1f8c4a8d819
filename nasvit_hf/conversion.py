"""Conversion of reference NASViT checkpoints (facebookresearch/NASViT format) to `nasvit_hf` models.

The reference stores a `torch.save` dict with `model`, `model_ema` (the weights it evaluates), `optimizer`, ...;
other checkpoints of this family use `state_dict`, or are a bare state dict. Keys may carry a `module.` prefix.
All key renaming lives in `reference_key_to_ours`; everything else here is I/O and checking.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

from .models.configuration_nasvit import NASViTConfig
from .models.modeling_nasvit import NASViTAttention, NASViTForImageClassification
from .models.search_space_nasvit import BODY_STAGES, TRANSFORMER_STAGES

__all__ = [
    "NotANASViTCheckpointError",
    "convert_reference_state_dict",
    "load_reference_checkpoint",
    "reference_key_to_ours",
    "unwrap_checkpoint",
]

logger = logging.getLogger(__name__)

# Stored by the reference but never used by its forward pass: ignored by name.
_UNUSED_PATTERNS = [
    re.compile(r"(^|\.)bn_tracking\."),
    re.compile(r"\.mobile_inverted_conv\.rescale$"),
    re.compile(r"\.attn\.relative_position_index$"),
]

_LEAF_RENAMES = [
    # (reference suffix regex, our suffix template)
    (r"mobile_inverted_conv\.inverted_bottleneck\.conv\.conv\.weight", "expansion.conv.weight"),
    (r"mobile_inverted_conv\.inverted_bottleneck\.bn\.bn\.(\w+)", "expansion.norm.{0}"),
    (r"mobile_inverted_conv\.depth_conv\.conv\.conv\.weight", "depthwise.conv.weight"),
    (r"mobile_inverted_conv\.depth_conv\.bn\.bn\.(\w+)", "depthwise.norm.{0}"),
    (r"mobile_inverted_conv\.depth_conv\.se\.fc\.(reduce|expand)\.(weight|bias)", "squeeze_excite.{0}.{1}"),
    (r"mobile_inverted_conv\.point_linear\.conv\.conv\.weight", "projection.conv.weight"),
    (r"mobile_inverted_conv\.point_linear\.bn\.bn\.(\w+)", "projection.norm.{0}"),
    (r"shortcut\.conv\.conv\.weight", "shortcut.weight"),
    (r"norm([123])\.(weight|bias)", "norm{0}.{1}"),
    (r"attn\.(q|k|v|proj)\.linear\.(weight|bias)", "attention.{0}.{1}"),
    (r"attn\.proj_l\.linear\.(weight|bias)", "attention.talking_heads_pre.{0}"),
    (r"attn\.proj_w\.linear\.(weight|bias)", "attention.talking_heads_post.{0}"),
    (r"attn\.vconv\.weight", "attention.value_conv.weight"),
    (r"attn\.relative_position_bias_table", "attention.relative_position_bias_table"),
    (r"mlp([12])\.linear([12])\.linear\.(weight|bias)", "mlp{0}.fc{1}.{2}"),
    (r"rescale_attn", "layer_scale_attn"),
    (r"rescale_mlp", "layer_scale_mlp"),
]
_LEAF_RENAMES = [(re.compile(pattern + "$"), template) for pattern, template in _LEAF_RENAMES]

_HEAD_RENAMES = {
    "first_conv.conv.conv.weight": "nasvit.stem.conv.weight",
    "last_conv.final_expand_layer.conv.conv.weight": "nasvit.head.final_expand.conv.weight",
    "last_conv.feature_mix_layer.conv.conv.weight": "nasvit.head.feature_mix.weight",
    "classifier.linear.linear.weight": "classifier.weight",
    "classifier.linear.linear.bias": "classifier.bias",
}
_BN_PREFIXES = {
    "first_conv.bn.bn.": "nasvit.stem.norm.",
    "last_conv.final_expand_layer.bn.bn.": "nasvit.head.final_expand.norm.",
}


class NotANASViTCheckpointError(ValueError):
    """The file or dict does not hold a reference NASViT state dict."""


def _block_locations(config: NASViTConfig) -> list[tuple[int, int]]:
    """`blocks.N` of the reference → (stage index, block index in stage); each stage reserves its maximum depth."""
    locations = []
    for stage_index, name in enumerate(BODY_STAGES):
        locations.extend((stage_index, block) for block in range(max(config.search_space[name]["d"])))
    return locations


def reference_key_to_ours(key: str, config: NASViTConfig) -> str | None:
    """Our parameter name for a reference key, `None` for a key the reference stores but never uses.

    Raises `KeyError` for a key that is not part of the reference format.
    """
    if any(pattern.search(key) for pattern in _UNUSED_PATTERNS):
        return None
    if key in _HEAD_RENAMES:
        return _HEAD_RENAMES[key]
    for prefix, ours in _BN_PREFIXES.items():
        if key.startswith(prefix):
            return ours + key[len(prefix) :]
    match = re.match(r"blocks\.(\d+)\.(.+)$", key)
    if match is None:
        raise KeyError(key)
    locations = _block_locations(config)
    number, rest = int(match.group(1)), match.group(2)
    if number >= len(locations):
        raise KeyError(key)
    stage, block = locations[number]
    is_mbconv = block == 0 or BODY_STAGES[stage] not in TRANSFORMER_STAGES
    for pattern, template in _LEAF_RENAMES:
        leaf = pattern.match(rest)
        if leaf is None:
            continue
        mbconv_leaf = rest.startswith(("mobile_inverted_conv.", "shortcut."))
        if mbconv_leaf != is_mbconv:
            raise KeyError(key)
        return f"nasvit.stages.{stage}.blocks.{block}." + template.format(*leaf.groups())
    raise KeyError(key)


def unwrap_checkpoint(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a reference checkpoint: `model_ema` (preferred), `model`, `state_dict`, or the dict
    itself; a leading `module.` is stripped from every key."""
    if not isinstance(checkpoint, Mapping):
        raise NotANASViTCheckpointError(
            f"expected a checkpoint dict or a state dict, got {type(checkpoint).__name__}."
        )
    state_dict: Any = checkpoint
    for entry in ("model_ema", "model", "state_dict"):
        if isinstance(checkpoint.get(entry), Mapping):
            state_dict = checkpoint[entry]
            if entry != "model_ema":
                logger.info("checkpoint has no 'model_ema'; converting %r", entry)
            break
    if isinstance(state_dict.get("state_dict"), Mapping):  # an EMA wrapper that saved its own dict
        state_dict = state_dict["state_dict"]
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        tensors[key[len("module.") :] if key.startswith("module.") else key] = value
    if "first_conv.conv.conv.weight" not in tensors or "classifier.linear.linear.weight" not in tensors:
        sample = sorted(tensors)[:5]
        raise NotANASViTCheckpointError(
            "this is not a reference NASViT checkpoint: it lacks 'first_conv.conv.conv.weight' and/or "
            f"'classifier.linear.linear.weight' (first keys found: {sample}). Expected the format of "
            "facebookresearch/NASViT (a dict with 'model_ema', 'model' or 'state_dict', or a bare state dict)."
        )
    return tensors


def convert_reference_state_dict(
    reference_state_dict: Mapping[str, torch.Tensor], config: NASViTConfig | NASViTForImageClassification
) -> dict[str, torch.Tensor]:
    """Rename and check a reference state dict against a supernet (given by its config, or the model itself);
    returns our state dict. Raises `ValueError` listing unknown keys, missing keys and shape mismatches.
    """
    if isinstance(config, torch.nn.Module):
        model, config = config, config.config
    else:
        model = NASViTForImageClassification(config)
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    converted: dict[str, torch.Tensor] = {}
    unknown, mismatched, unused_shortcuts = [], [], []
    for key, tensor in reference_state_dict.items():
        try:
            ours = reference_key_to_ours(key, config)
        except KeyError:
            unknown.append(key)
            continue
        if ours is None:
            continue
        if ours not in expected:
            if ours.endswith(".shortcut.weight"):  # stored for every block, runs only where widths can differ
                unused_shortcuts.append(key)
                continue
            unknown.append(key)
            continue
        if tuple(tensor.shape) != tuple(expected[ours]):
            mismatched.append(f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[ours])}")
            continue
        converted[ours] = tensor.detach().clone().contiguous()
    missing = sorted(set(expected) - set(converted))
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unknown key(s): {unknown[:20]}{' ...' if len(unknown) > 20 else ''}")
    if mismatched:
        problems.append(
            f"{len(mismatched)} shape mismatch(es) (is --search_space right?): {mismatched[:20]}"
            f"{' ...' if len(mismatched) > 20 else ''}"
        )
    if missing:
        problems.append(f"{len(missing)} missing key(s): {missing[:20]}{' ...' if len(missing) > 20 else ''}")
    if problems:
        raise ValueError("the checkpoint does not match the NASViT supernet:\n- " + "\n- ".join(problems))
    for key, tensor in reference_state_dict.items():
        if key.endswith("attn.relative_position_index"):
            window = config.max_relative_position
            if not torch.equal(tensor.long(), NASViTAttention._relative_position_index(window)):
                raise ValueError(
                    f"{key} differs from the standard relative position index of a {window}x{window} window."
                )
            break
    if unused_shortcuts:
        logger.info("ignored %d shortcut convs of blocks whose widths never differ", len(unused_shortcuts))
    return converted


def _load_file(path: str | os.PathLike, trust_checkpoint: bool = False) -> Any:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist.")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise NotANASViTCheckpointError(
                f"could not read {path!r} as a safetensors file ({_first_line(error)}): it is damaged or not a "
                "checkpoint."
            ) from None
    damaged = f"could not read {path!r} as a torch checkpoint: it is damaged or not a checkpoint"
    if not _looks_like_torch_file(path):
        raise NotANASViTCheckpointError(f"{damaged} (neither the zip archive nor the pickle torch.save writes).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with advice
        # Only a pickle that holds Python objects (globals the weights-only unpickler does not allow) may load with
        # trust; anything else (random bytes, a truncated file) is damaged and trust would not help.
        refused = isinstance(error, pickle.UnpicklingError) and "unsupported global" in str(error).lower()
        if not refused:
            raise NotANASViTCheckpointError(f"{damaged} ({_first_line(error)}).") from None
        if not trust_checkpoint:
            raise NotANASViTCheckpointError(
                f"could not read {path!r} as a weights-only torch checkpoint ({_first_line(error)}). If it is a "
                "reference checkpoint that also stores Python objects (e.g. its training config) and you trust its "
                "source, pass trust_checkpoint=True (--trust_checkpoint on the command line)."
            ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - the file is already trusted: what fails is its content
        raise NotANASViTCheckpointError(f"{damaged} ({_first_line(error)}).") from None


def _first_line(error: BaseException) -> str:
    """`Type: the first line of the message` (for torch's weights-only unpickler: its reason, not its advice)."""
    text = str(error).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    lines = text.splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _looks_like_torch_file(path: str) -> bool:
    """A zip archive (torch.save since 1.6) or a pickle (the legacy format starts with a protocol-2 opcode)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as file:
        return file.read(1) == b"\x80"


def load_reference_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    search_space: dict[str, Any] | None = None,
    trust_checkpoint: bool = False,
    **config_kwargs,
) -> NASViTForImageClassification:
    """A `NASViTForImageClassification` supernet holding a reference checkpoint's weights.

    `checkpoint` is a path (`torch.save` file or `.safetensors`) or an already loaded dict. The class count is read
    from the classifier; `search_space` defaults to the reference supernet's.
    """
    if not isinstance(checkpoint, Mapping):
        checkpoint = _load_file(checkpoint, trust_checkpoint=trust_checkpoint)
    state_dict = unwrap_checkpoint(checkpoint)
    num_labels = state_dict["classifier.linear.linear.weight"].shape[0]
    config = NASViTConfig(search_space=search_space, num_labels=num_labels, **config_kwargs)
    model = NASViTForImageClassification(config)
    converted = convert_reference_state_dict(state_dict, model)
    model.load_state_dict(converted, strict=True)
    model.eval()
    return model
