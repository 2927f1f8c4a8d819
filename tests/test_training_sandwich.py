import math

import pytest
import torch

from nasvit_hf.training import ArchSampler, ModelEMA, SandwichConfig, SandwichTrainer, set_regularization
from nasvit_hf.training import sandwich as sandwich_module

from ._training_helpers import batch, micro_model


def _setup(priority="sub", **kwargs):
    model = micro_model()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = SandwichTrainer(model, SandwichConfig(priority=priority, **kwargs))
    sampler = ArchSampler(model.config, num_random=2, seed=0)
    return model, optimizer, trainer, sampler


def test_sandwich_step_runs_largest_smallest_and_random_archs_and_updates_weights():
    model, optimizer, trainer, sampler = _setup()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    pixel_values, labels = batch()
    archs = sampler.sample()
    losses = trainer.accumulate(pixel_values, labels, archs)
    output = trainer.step(optimizer)
    assert [name for name, _ in archs] == ["largest", "smallest", "random0", "random1"]
    assert archs[0][1] == model.config.largest_arch() and archs[1][1] == model.config.smallest_arch()
    assert set(losses) == {"largest", "smallest", "random0", "random1"}
    assert all(math.isfinite(v) for v in output.losses.values())
    assert 0.0 <= output.conflict_ratio <= 1.0 and output.projected and not output.skipped
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert any("classifier" in name for name in changed)
    assert all(p.grad is None for p in model.parameters())


def test_subnets_are_distilled_from_the_detached_largest_logits(monkeypatch):
    model, optimizer, trainer, sampler = _setup()
    seen = []
    original = trainer.distillation_loss

    def spy(student, teacher):
        seen.append(teacher.requires_grad)
        return original(student, teacher)

    monkeypatch.setattr(trainer, "distillation_loss", spy)
    trainer.accumulate(*batch(), sampler.sample())
    assert seen == [False, False, False]


def test_step_combines_the_clipped_subnet_gradient_with_the_supernet_gradient(monkeypatch):
    model, optimizer, trainer, sampler = _setup(max_grad_norm=1e-3)
    captured = {}
    original = sandwich_module.combine_gradients

    def spy(sup, sub, *args, **kwargs):
        captured["sub_norm"] = torch.stack([g.norm() for g in sub if g is not None]).norm().item()
        captured["args"] = args
        return original(sup, sub, *args, **kwargs)

    monkeypatch.setattr(sandwich_module, "combine_gradients", spy)
    trainer.accumulate(*batch(), sampler.sample())
    output = trainer.step(optimizer)
    assert captured["sub_norm"] == pytest.approx(1e-3, rel=1e-3)
    assert output.sub_grad_norm > 1e-3  # reported before clipping
    assert captured["args"][0] == "sub" and captured["args"][1] == "tensor"


def test_project_false_uses_the_plain_sum(monkeypatch):
    model, optimizer, trainer, sampler = _setup()
    priorities = []
    original = sandwich_module.combine_gradients
    monkeypatch.setattr(
        sandwich_module,
        "combine_gradients",
        lambda s, b, p, *a, **k: priorities.append(p) or original(s, b, p, *a, **k),
    )
    trainer.accumulate(*batch(), sampler.sample())
    output = trainer.step(optimizer, project=False)
    assert priorities == ["none"] and not output.projected


def test_inactive_parameters_get_no_gradient_and_do_not_move():
    model, optimizer, trainer, sampler = _setup(num_random_subnets=0)
    smallest = model.config.smallest_arch()
    largest = model.config.largest_arch()
    # Deep transformer layers run only when a stage is deeper than its minimum: with only the largest subnet they
    # run; a parameter that no arch of the step uses (none here) would keep grad None. Check the bookkeeping: after
    # a step nothing holds a .grad and parameters without any gradient are exactly unchanged.
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.accumulate(*batch(), [("largest", largest), ("smallest", smallest)])
    unused = [i for i, (a, b) in enumerate(zip(trainer.sup_grads, trainer.sub_grads)) if a is None and b is None]
    trainer.step(optimizer)
    names = [name for name, _ in model.named_parameters()]
    for index in unused:
        torch.testing.assert_close(dict(model.named_parameters())[names[index]], before[names[index]])


def test_non_finite_loss_skips_the_step_and_leaves_weights_and_optimizer_state_untouched():
    model, optimizer, trainer, sampler = _setup()
    trainer.accumulate(*batch(), sampler.sample())
    trainer.step(optimizer)
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer_state = {k: {n: t.clone() for n, t in v.items()} for k, v in optimizer.state.items()}
    pixel_values, labels = batch(1)
    pixel_values[0, 0, 0, 0] = float("nan")
    trainer.accumulate(pixel_values, labels, sampler.sample())
    output = trainer.step(optimizer)
    assert output.skipped and "non-finite" in output.skip_reason
    for name, p in model.named_parameters():
        assert torch.equal(p, weights[name])
    for key, values in optimizer.state.items():
        for name, tensor in values.items():
            assert torch.equal(tensor, optimizer_state[key][name])
    assert all(p.grad is None for p in model.parameters())


def test_gradient_accumulation_averages_micro_batch_gradients(monkeypatch):
    model, optimizer, trainer, sampler = _setup(max_grad_norm=None)
    archs = sampler.sample()
    first, second = batch(0), batch(1)
    trainer.accumulate(*first, archs)
    single_sup = [g.clone() if g is not None else None for g in trainer.sup_grads]
    trainer._reset_buffers()
    trainer.accumulate(*second, archs)
    second_sup = [g.clone() if g is not None else None for g in trainer.sup_grads]
    trainer._reset_buffers()
    captured = {}
    original = sandwich_module.combine_gradients
    monkeypatch.setattr(
        sandwich_module,
        "combine_gradients",
        lambda s, b, *a, **k: captured.setdefault("sup", s) and original(s, b, *a, **k),
    )
    trainer.accumulate(*first, archs)
    trainer.accumulate(*second, archs)
    trainer.step(optimizer)
    for got, a, b in zip(captured["sup"], single_sup, second_sup):
        if a is not None:
            torch.testing.assert_close(got, (a + b) / 2, atol=1e-6, rtol=1e-5)


def test_accumulate_requires_the_largest_arch_first():
    model, optimizer, trainer, sampler = _setup()
    with pytest.raises(ValueError, match="largest"):
        trainer.accumulate(*batch(), sampler.sample()[1:])


def test_arch_sampler_state_dict_round_trip_reproduces_the_archs():
    model = micro_model()
    sampler = ArchSampler(model.config, num_random=3, seed=5)
    sampler.sample()
    state = sampler.state_dict()
    expected = sampler.sample()
    restored = ArchSampler(model.config, num_random=3, seed=0)
    restored.load_state_dict(state)
    assert restored.sample() == expected
    for _, arch in expected:
        model.config.validate_arch(arch)


def test_per_rank_sampling_draws_different_random_subnets_on_each_rank_and_resumes_exactly():
    model = micro_model()
    ranks = [ArchSampler(model.config, num_random=2, seed=5, sampling="per_rank", rank=rank) for rank in range(2)]
    steps = [[sampler.sample() for sampler in ranks] for _ in range(6)]
    assert all(step[0][:2] == step[1][:2] for step in steps)  # largest and smallest on every rank
    assert any(step[0][2:] != step[1][2:] for step in steps)  # the random subnets differ between ranks
    state = ranks[0].state_dict()  # the main process saves it; every rank resumes from it
    expected = [sampler.sample() for sampler in ranks]
    for rank in range(2):
        restored = ArchSampler(model.config, num_random=2, seed=0, sampling="per_rank", rank=rank)
        restored.load_state_dict(state)
        assert restored.sample() == expected[rank]
    synchronized = [ArchSampler(model.config, num_random=2, seed=5, rank=rank) for rank in range(2)]
    assert all(a.sample() == b.sample() for a, b in [synchronized] * 6)


def test_arch_sampler_refuses_a_checkpoint_of_the_other_sampling_mode():
    model = micro_model()
    state = ArchSampler(model.config, sampling="per_rank").state_dict()
    with pytest.raises(ValueError, match="subnet_sampling: per_rank"):
        ArchSampler(model.config).load_state_dict(state)
    with pytest.raises(ValueError, match="subnet sampling must be one of"):
        ArchSampler(model.config, sampling="independent")


def test_set_regularization_sets_every_drop_rate():
    model = micro_model()
    set_regularization(model, 0.1, 0.2, 0.3)
    from nasvit_hf.models.modeling_nasvit import NASViTMBConvBlock, NASViTTransformerLayer

    assert {m.drop_prob for m in model.modules() if isinstance(m, NASViTTransformerLayer)} == {0.1}
    assert {m.drop_prob for m in model.modules() if isinstance(m, NASViTMBConvBlock)} == {0.2}
    assert model.dropout.p == 0.3


def test_model_ema_tracks_the_weights_and_round_trips_its_state():
    model = micro_model()
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    name, param = next(iter(model.named_parameters()))
    torch.testing.assert_close(dict(ema.module.named_parameters())[name], param - 0.5)
    clone = ModelEMA(micro_model(seed=1), decay=0.9)
    clone.load_state_dict(ema.state_dict())
    assert clone.decay == 0.5 and clone.num_updates == 1
    torch.testing.assert_close(dict(clone.module.named_parameters())[name], param - 0.5)


def test_teacher_probabilities_replace_the_labels_for_the_largest_subnet():
    model, optimizer, trainer, sampler = _setup(num_random_subnets=0)
    pixel_values, labels = batch()
    teacher_probs = torch.softmax(torch.randn(2, 4, generator=torch.Generator().manual_seed(3)), dim=-1)
    archs = sampler.sample()[:1]
    losses = trainer.accumulate(pixel_values, labels, archs, teacher_probs=teacher_probs)
    model.set_active_subnet(archs[0][1])
    with torch.no_grad():
        torch.manual_seed(0)
        logits = model(pixel_values=pixel_values).logits
    expected = -(teacher_probs * logits.log_softmax(-1)).sum(-1).mean().item()
    assert losses["largest"].item() == pytest.approx(expected, rel=1e-4)
