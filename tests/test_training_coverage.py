"""sandwich_coverage: which choices of the space the sandwich rule trains, and how often."""

from __future__ import annotations

import pytest

from nasvit_hf.training.coverage import sandwich_coverage, scale_slots


def test_extremes_train_their_choices_every_step_and_random_subnets_the_rest(tiny_config):
    rows = {tuple(row["choice"]): row for row in sandwich_coverage(tiny_config, num_steps=3000, num_random=2, seed=0)}
    assert rows[("resolution", 32)]["trained"] == 1.0 and rows[("resolution", 64)]["by_extremes"]
    middle = rows[("resolution", 48)]
    assert not middle["by_extremes"]
    assert middle["trained"] == pytest.approx(1 - (2 / 3) ** 2, abs=0.03)  # drawn by one of two random subnets
    assert middle["random_only"] == middle["trained"]
    mixed = rows[("mb2", "width_after", 8, 24)]  # mb2 at its largest width behind mb1 at its smallest
    assert mixed["trained"] == pytest.approx(1 - (3 / 4) ** 2, abs=0.03)


def test_scale_slots_follow_depth_and_token_count(tiny_config):
    smallest, largest = tiny_config.smallest_arch(), tiny_config.largest_arch()
    # 32 px: mb4 sees a 2x2 grid (4 tokens), mb5-mb7 1x1; 64 px: 4x4, 2x2, 2x2, 1x1
    assert scale_slots(tiny_config, smallest) == {"mb4": (2, 4), "mb5": (2, 1), "mb6": (2, 1), "mb7": (2, 1)}
    assert scale_slots(tiny_config, largest) == {"mb4": (3, 0), "mb5": (3, 4), "mb6": (3, 4), "mb7": (3, 1)}
    tiny_config.switchable_scaling = "none"
    assert scale_slots(tiny_config, largest) == {}


def test_every_arch_field_is_counted_including_the_papers_mlp_ratio_and_windows():
    from nasvit_hf import NASViTConfig
    from nasvit_hf.models.search_space_nasvit import ARCH_FIELDS
    from nasvit_hf.presets import get_search_space

    config = NASViTConfig(search_space=get_search_space("tiny-paper"))
    counted = {row["choice"][1] for row in sandwich_coverage(config, num_steps=20) if len(row["choice"]) > 2}
    counted |= {row["choice"][0] for row in sandwich_coverage(config, num_steps=20)}
    assert {arch_field.name for arch_field in ARCH_FIELDS} <= counted
    assert {"mlp_ratio", "num_windows"} <= counted
