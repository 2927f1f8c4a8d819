"""How often sandwich training trains each choice of the search space: a diagnostic for subnets that lag.

Each sandwich step trains the largest, the smallest and `num_random` uniformly random subnets. Choices the two
extremes use are trained every step; every other choice (a middle resolution, a stage at its largest width behind
one at its smallest, a switchable-scaling slot keyed by a depth and token count the extremes never combine) only
when a random subnet draws it. `sandwich_coverage` replays an `ArchSampler` and counts, per choice, the share of
steps that train it at least once and the share in which only random subnets do.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from ..models.search_space_nasvit import ARCH_FIELDS, BODY_STAGES, STAGE_NAMES, TRANSFORMER_STAGES
from .sandwich import ArchSampler

__all__ = ["scale_slots", "sandwich_coverage"]


def _token_counts(search_space: dict[str, Any], resolution: int) -> dict[str, int]:
    """Tokens of each transformer stage at `resolution` (each stride-2 stage halves the side, rounding up)."""
    side, tokens = resolution, {}
    for name in STAGE_NAMES[:-1]:
        side = math.ceil(side / search_space[name]["s"])
        if name in TRANSFORMER_STAGES:
            tokens[name] = side * side
    return tokens


def scale_slots(config, arch: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The switchable-scaling row each transformer stage of `arch` uses: (depth, token count mod 8) for
    `switchable_scaling="tokens"` (the reference), (depth, width index) for `"width"`; {} when scaling is not switchable."""
    if config.switchable_scaling not in ("tokens", "width"):
        return {}
    tokens = _token_counts(config.search_space, arch["resolution"])
    slots = {}
    for name in TRANSFORMER_STAGES:
        index = BODY_STAGES.index(name)
        depth = arch["depth"][index]
        if config.switchable_scaling == "tokens":
            slots[name] = (depth, tokens[name] % 8)
        else:
            width = arch["width"][index + 1]
            slots[name] = (depth, config.search_space[name]["c"].index(width))
    return slots


def _choices(config, arch: dict[str, Any]) -> set[tuple]:
    """The choices `arch` trains: `(field, value)` for each per-network field and `(stage, field, value)` for each
    per-stage field of the arch schema (`ARCH_FIELDS`: a new dimension is counted without a change here), the width a
    stage reads next to the one it writes (a weight slice), and the switchable-scaling slots."""
    choices = set()
    for arch_field in ARCH_FIELDS:
        if arch_field.name not in arch:  # an optional field (MLP ratio, windows) of a space that does not search it
            continue
        if arch_field.per_network:
            choices.add((arch_field.name, arch[arch_field.name]))
        else:
            choices.update(
                (stage, arch_field.name, value) for stage, value in zip(arch_field.stages, arch[arch_field.name])
            )
    for index, name in enumerate(BODY_STAGES[1:], start=1):
        choices.add((name, "width_after", arch["width"][index], arch["width"][index + 1]))
    for name, slot in scale_slots(config, arch).items():
        choices.add((name, "scale_slot", *slot))
    return choices


def sandwich_coverage(config, num_steps: int = 1000, num_random: int = 2, seed: int = 0) -> list[dict[str, Any]]:
    """One row per choice: {"choice", "trained" (share of steps that train it), "random_only" (share of steps in
    which it is trained and the extremes do not use it), "by_extremes" (bool)}, rarest first."""
    sampler = ArchSampler(config, num_random, seed=seed)
    extremes = _choices(config, config.largest_arch()) | _choices(config, config.smallest_arch())
    trained: Counter = Counter()
    for _ in range(num_steps):
        step = set()
        for _name, arch in sampler.sample():
            step |= _choices(config, arch)
        trained.update(step)
    every = {  # every choice of a per-network field is listed, trained or not
        (arch_field.name, value)
        for arch_field in ARCH_FIELDS
        if arch_field.per_network
        for value in config.search_space.get(arch_field.space_key, [])
    }
    rows = []
    for choice in sorted(set(trained) | every, key=str):
        share = trained[choice] / num_steps
        rows.append(
            {
                "choice": list(choice),
                "trained": share,
                "random_only": 0.0 if choice in extremes else share,
                "by_extremes": choice in extremes,
            }
        )
    rows.sort(key=lambda row: (row["trained"], str(row["choice"])))
    return rows
