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
