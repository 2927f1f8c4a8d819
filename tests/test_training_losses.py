import pytest
import torch
import torch.nn.functional as F

from nasvit_hf.training import (
    AdaptiveAlphaDivergence,
    adaptive_alpha_divergence,
    alpha_divergence,
    kl_distillation,
    soft_target_cross_entropy,
)


def _logits(seed=0, shape=(6, 5), scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) * scale


def test_alpha_one_is_kl_teacher_student_in_value_and_gradient():
    student = _logits(0).requires_grad_(True)
    teacher = _logits(1)
    value, surrogate = alpha_divergence(student, teacher, alpha=1.0, iw_clip=1e9)
    p = teacher.softmax(-1)
    kl = (p * (p.log() - student.log_softmax(-1))).sum(-1)
    torch.testing.assert_close(value, kl.detach(), atol=1e-5, rtol=1e-5)
    (grad_surrogate,) = torch.autograd.grad(surrogate.sum(), student)
    (grad_kl,) = torch.autograd.grad(kl.sum(), student)
    torch.testing.assert_close(grad_surrogate, grad_kl, atol=1e-5, rtol=1e-5)


def test_alpha_divergence_gradient_matches_autograd_without_clipping():
    # D_a(p||q) = sum q ((p/q)^a - 1) / (a (a - 1)); the surrogate's gradient is its exact gradient when the
    # importance weights are not clipped.
    student = _logits(2, scale=0.3).requires_grad_(True)
    teacher = _logits(3, scale=0.3)
    alpha = -1.0
    _, surrogate = alpha_divergence(student, teacher, alpha, iw_clip=1e9)
    q, p = student.softmax(-1), teacher.softmax(-1)
    exact = (q * ((p / q) ** alpha - 1.0)).sum(-1) / (alpha * (alpha - 1.0))
    (grad_surrogate,) = torch.autograd.grad(surrogate.sum(), student)
    (grad_exact,) = torch.autograd.grad(exact.sum(), student)
    torch.testing.assert_close(grad_surrogate, grad_exact, atol=1e-5, rtol=1e-4)


def test_adaptive_alpha_divergence_takes_the_larger_divergence_per_sample():
    student, teacher = _logits(4, scale=3.0), _logits(5, scale=3.0)
    left, _ = alpha_divergence(student, teacher, -1.0, 5.0)
    right, _ = alpha_divergence(student, teacher, 1.0, 5.0)
    loss = adaptive_alpha_divergence(student, teacher)
    torch.testing.assert_close(loss, torch.maximum(left, right).mean())
    assert AdaptiveAlphaDivergence()(student, teacher).item() == pytest.approx(loss.item())


def test_adaptive_alpha_divergence_is_zero_with_zero_gradient_at_the_teacher():
    logits = _logits(6).requires_grad_(True)
    loss = adaptive_alpha_divergence(logits, logits.detach())
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert logits.grad.abs().max().item() < 1e-6


def test_importance_weight_clip_bounds_the_gradient():
    student = torch.tensor([[10.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 10.0, 0.0]])
    loose = torch.autograd.grad(adaptive_alpha_divergence(student, teacher, iw_clip=1e6), student)[0]
    tight = torch.autograd.grad(adaptive_alpha_divergence(student, teacher, iw_clip=1.0), student)[0]
    assert tight.norm() < loose.norm()


def test_adaptive_alpha_divergence_rejects_shape_mismatch_and_bad_range():
    with pytest.raises(ValueError, match="shape"):
        adaptive_alpha_divergence(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="alpha_min"):
        adaptive_alpha_divergence(torch.zeros(2, 3), torch.zeros(2, 3), alpha_min=1.0, alpha_max=-1.0)


def test_kl_distillation_matches_kl_div_times_t_squared():
    student, teacher = _logits(7), _logits(8)
    expected = F.kl_div(F.log_softmax(student / 2, -1), F.softmax(teacher / 2, -1), reduction="batchmean") * 4
    torch.testing.assert_close(kl_distillation(student, teacher, temperature=2.0), expected)


def test_soft_target_cross_entropy_with_one_hot_equals_cross_entropy():
    logits = _logits(9)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    one_hot = F.one_hot(labels, 5).float()
    torch.testing.assert_close(soft_target_cross_entropy(logits, one_hot), F.cross_entropy(logits, labels))
    torch.testing.assert_close(soft_target_cross_entropy(logits, labels), F.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match="shape"):
        soft_target_cross_entropy(logits, torch.ones(6, 4) / 4)
