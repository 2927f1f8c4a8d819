"""Conflict ratio before and after the gradient combination, and the per-layer sweep of Table 4."""

import math

import torch

from nasvit_hf.training import ArchSampler, SandwichConfig, SandwichTrainer, conflict_ratio
from nasvit_hf.training.conflicts import sweep_gradient_conflicts
from nasvit_hf.training.gradients import combine_gradients, gradient_cosines, projected_pair

from ._training_helpers import batch, micro_model


def test_exact_projection_removes_every_conflict():
    generator = torch.Generator().manual_seed(0)
    sup = [torch.randn(5, generator=generator) for _ in range(40)]
    sub = [torch.randn(5, generator=generator) for _ in range(40)]
    assert conflict_ratio(sup, sub) > 0.2
    combined = combine_gradients(sup, sub, "sub", "tensor", max_coefficient=None, eps=0.0)
    projected_sup, same_sub = projected_pair(sup, sub, combined, "sub")
    assert same_sub == sub
    for whole, a, b in zip(combined, projected_sup, sub):
        torch.testing.assert_close(whole, a + b)
    cosines = gradient_cosines(projected_sup, sub)
    assert bool((cosines > -1e-6).all())  # orthogonal where they conflicted, untouched elsewhere
    combined_sup = combine_gradients(sup, sub, "sup", "tensor", max_coefficient=None, eps=0.0)
    assert bool((gradient_cosines(*projected_pair(sup, sub, combined_sup, "sup")) > -1e-6).all())
    assert projected_pair(sup, sub, combined, "none") == (sup, sub)


def test_step_reports_the_conflict_ratio_before_and_after_combination():
    model = micro_model()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = SandwichTrainer(model, SandwichConfig(priority="sub", max_projection_coefficient=None))
    sampler = ArchSampler(model.config, num_random=1, seed=0)
    trainer.accumulate(*batch(size=4), sampler.sample())
    output = trainer.step(optimizer)
    # Tensors whose subnet gradient has ‖g_sub‖² below the reference's eps (1e-6) are barely projected: the
    # conflicts left after combination are those.
    assert 0 < output.conflict_ratio_after < output.conflict_ratio
    trainer.accumulate(*batch(seed=1, size=4), sampler.sample())
    plain = trainer.step(optimizer, project=False)
    assert plain.conflict_ratio_after == plain.conflict_ratio


def test_sweep_counts_per_layer_and_leaves_the_model_unchanged():
    model = micro_model()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    trainer = SandwichTrainer(model, SandwichConfig(priority="sub", max_projection_coefficient=None))
    batches = [batch(seed=seed, size=4) for seed in range(3)]
    sweep = sweep_gradient_conflicts(trainer, batches, ArchSampler(model.config, num_random=1, seed=0))
    assert sweep.num_batches == 3 and sweep.num_images == 12
    assert 0.0 < sweep.ratio_after < sweep.ratio_before < 1.0
    layers = sweep.per_layer()
    assert "classifier.weight" in layers and all(1 <= entry["batches"] <= 3 for entry in layers.values())
    overall = sum(e["before"] * e["batches"] for e in layers.values()) / sum(e["batches"] for e in layers.values())
    assert math.isclose(overall, sweep.ratio_before)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert all(p.grad is None for p in model.parameters())
    report = sweep.to_dict()
    assert report["num_batches"] == 3 and set(report["per_layer"]) == set(layers)
    limited = sweep_gradient_conflicts(trainer, batches, ArchSampler(model.config, 1, 0), project=False, max_batches=2)
    assert limited.num_batches == 2 and limited.ratio_after == limited.ratio_before


def test_exact_projection_mode_leaves_no_conflict_after_combination_in_training_steps():
    """Table 7's 0 %: with no eps and no cap, every conflicting tensor is projected onto g_sub's normal plane,
    including those with tiny subnet gradients that the reference's eps leaves alone (same model, same batches)."""
    ratios = {}
    for mode, settings in {
        "reference": {},
        "exact": {"projection_eps": 0.0, "max_projection_coefficient": None},
    }.items():
        model = micro_model()
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        trainer = SandwichTrainer(model, SandwichConfig(priority="sub", **settings))
        sampler = ArchSampler(model.config, num_random=1, seed=0)
        ratios[mode] = []
        for seed in range(3):
            trainer.accumulate(*batch(seed=seed, size=4), sampler.sample())
            output = trainer.step(optimizer)
            assert output.conflict_ratio > 0.1
            ratios[mode].append(output.conflict_ratio_after)
    assert ratios["exact"] == [0.0, 0.0, 0.0]
    assert all(ratio > 0.0 for ratio in ratios["reference"])


def test_exact_projection_of_a_zero_subnet_gradient_is_the_plain_sum():
    sup, sub = [torch.tensor([1.0, -2.0]), torch.tensor([3.0, 1.0])], [torch.zeros(2), torch.tensor([-1e-4, 0.0])]
    combined = combine_gradients(sup, sub, "sub", "tensor", max_coefficient=None, eps=0.0)
    torch.testing.assert_close(combined[0], sup[0])  # nothing to project onto: no NaN
    torch.testing.assert_close(combined[1], torch.tensor([-1e-4, 1.0]))  # projected however small g_sub is
    reference = combine_gradients(sup, sub, "sub", "tensor")  # eps 1e-6, cap 2: barely moved
    torch.testing.assert_close(reference[1], torch.tensor([3.0 - 3e-4, 1.0]))


def test_projection_settings_come_from_the_training_config():
    from nasvit_hf.training import TrainingConfig

    config = TrainingConfig(projection_eps=0.0, max_projection_coefficient=None)
    sandwich = SandwichConfig.from_training_config(config)
    assert sandwich.projection_eps == 0.0 and sandwich.max_projection_coefficient is None
    import pytest

    with pytest.raises(ValueError, match="projection_eps"):
        TrainingConfig(projection_eps=-1.0)
