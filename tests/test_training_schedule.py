import pytest
import torch

from nasvit_hf.training.schedule import build_lr_scheduler


def _lrs(scheduler, steps):
    values = []
    for _ in range(steps):
        values.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return values


def _optimizer(lr=1e-3):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_from_a_small_lr_then_cosine_to_the_minimum():
    lrs = _lrs(build_lr_scheduler(_optimizer(), "cosine_warmup_with_min_lr", 5, 105, 0.02, 0.002), 105)
    assert lrs[0] == pytest.approx(2e-6) and lrs[4] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(2e-5, rel=0.05) and min(lrs[5:]) >= 2e-5 - 1e-12
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:]))


def test_min_lr_is_checked_against_the_schedule():
    with pytest.raises(ValueError, match="needs min_lr_rate"):
        build_lr_scheduler(_optimizer(), "cosine_with_min_lr", 1, 10)
    with pytest.raises(ValueError, match="min_lr_rate applies"):
        build_lr_scheduler(_optimizer(), "cosine", 1, 10, min_lr_rate=0.1)
    with pytest.raises(ValueError, match="warmup_lr_rate applies"):
        build_lr_scheduler(_optimizer(), "cosine_with_min_lr", 1, 10, min_lr_rate=0.1, warmup_lr_rate=0.01)
    assert _lrs(build_lr_scheduler(_optimizer(), "cosine", 0, 10), 1)[0] == pytest.approx(1e-3)


@pytest.mark.parametrize("name", ["polynomial", "cosine", "linear", "constant_with_warmup"])
@pytest.mark.parametrize("steps", [3, 5])
def test_a_run_no_longer_than_its_warmup_only_warms_up(name, steps, caplog):
    # transformers' polynomial decay divided by zero when the run ended exactly at the end of its warm-up
    with caplog.at_level("WARNING", logger="nasvit_hf.training.schedule"):
        lrs = _lrs(build_lr_scheduler(_optimizer(), name, 5, steps), steps + 1)
    assert lrs == pytest.approx([1e-3 * step / 5 for step in range(steps + 1)])
    assert "the learning rate only rises" in caplog.text


def test_segmentation_schedule_with_max_steps_at_or_below_the_warmup_steps_through_the_run():
    from nasvit_hf.training.segmentation import SegmentationTrainingConfig, build_segmentation_scheduler

    for max_steps in (4, 20):
        config = SegmentationTrainingConfig(lr_scheduler_type="poly", warmup_steps=20)
        lrs = _lrs(build_segmentation_scheduler(config, _optimizer(), max_steps), max_steps + 1)
        assert lrs[-1] == pytest.approx(1e-3 * max_steps / 20)


def test_reference_warmup_and_min_lr_scale_with_the_base_lr():
    """The reference's WARMUP_LR 5e-7 and MIN_LR 5e-6 are scaled by total batch / 512 like its base lr 3e-4: the
    schedule starts at 5e-7 × B/512 and ends at 5e-6 × B/512 whatever the batch."""
    from nasvit_hf.training import TrainingConfig
    from nasvit_hf.training.classification import build_optimizer, build_schedule

    config = TrainingConfig(
        learning_rate=3e-4, scale_lr=True, per_device_train_batch_size=64, lr_scheduler_type="cosine_warmup_with_min_lr",
        warmup_steps=5, max_steps=105, warmup_learning_rate=5e-7, min_learning_rate=5e-6,
    )  # fmt: skip
    for processes in (1, 8, 16):
        scale = 64 * processes / 512
        model = torch.nn.Linear(2, 2)
        optimizer = build_optimizer(model, config, processes)
        scheduler, _, _ = build_schedule(config, optimizer, 105)
        lrs = _lrs(scheduler, 105)  # the lr of each of the 105 steps
        assert lrs[4] == pytest.approx(3e-4 * scale)  # the peak, at the last warm-up step
        assert lrs[0] == pytest.approx(5e-7 * scale) and lrs[-1] == pytest.approx(5e-6 * scale)


def test_an_lr_and_its_rate_are_not_both_given():
    from nasvit_hf.training import TrainingConfig

    with pytest.raises(ValueError, match="both min_learning_rate and min_lr_rate"):
        TrainingConfig(lr_scheduler_type="cosine_with_min_lr", min_learning_rate=1e-6, min_lr_rate=0.1)
    with pytest.raises(ValueError, match="warmup_learning_rate must be in"):
        TrainingConfig(learning_rate=1e-4, warmup_learning_rate=1e-3)
