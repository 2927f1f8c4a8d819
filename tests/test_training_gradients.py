import math

import pytest
import torch

from nasvit_hf.training import combine_gradients, conflict_ratio, gradient_cosines


def _flat_cos(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def _conflicting_pair():
    sup = [torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 1.0]])]
    sub = [torch.tensor([-1.0, 1.0]), torch.tensor([[2.0, 0.5]])]  # first conflicts (dot -1), second agrees
    return sup, sub


def test_priority_none_is_the_plain_sum():
    sup, sub = _conflicting_pair()
    for got, a, b in zip(combine_gradients(sup, sub, "none"), sup, sub):
        torch.testing.assert_close(got, a + b)


def test_priority_sub_projects_the_supernet_gradient_only_where_it_conflicts():
    sup, sub = _conflicting_pair()
    combined = combine_gradients(sup, sub, "sub", "tensor", max_coefficient=None, eps=0.0)
    projected = combined[0] - sub[0]
    assert _flat_cos(projected, sub[0]) == pytest.approx(0.0, abs=1e-7)
    torch.testing.assert_close(combined[0], torch.tensor([0.5, 0.5]) + sub[0])
    torch.testing.assert_close(combined[1], sup[1] + sub[1])


def test_projection_coefficient_cap_defaults_to_two():
    sup = [torch.tensor([-10.0, 0.0])]
    sub = [torch.tensor([1.0, 0.0])]  # coefficient would be 10
    capped = combine_gradients(sup, sub, "sub")[0]
    torch.testing.assert_close(capped, sup[0] + 3.0 * sub[0], atol=1e-5, rtol=0)
    exact = combine_gradients(sup, sub, "sub", max_coefficient=None, eps=0.0)[0]
    torch.testing.assert_close(exact, sub[0])


def test_priority_sup_swaps_the_roles():
    sup, sub = _conflicting_pair()
    combined = combine_gradients(sup, sub, "sup", max_coefficient=None, eps=0.0)
    assert _flat_cos(combined[0] - sup[0], sup[0]) == pytest.approx(0.0, abs=1e-7)
    torch.testing.assert_close(combined[0], sup[0] + torch.tensor([0.0, 1.0]))


def test_global_granularity_uses_one_coefficient_for_the_whole_gradient():
    sup, sub = _conflicting_pair()
    flat_sup, flat_sub = torch.cat([g.flatten() for g in sup]), torch.cat([g.flatten() for g in sub])
    dot = torch.dot(flat_sup, flat_sub).item()
    assert dot > 0  # globally no conflict: the global rule leaves everything as the plain sum
    combined = combine_gradients(sup, sub, "sub", "global")
    for got, a, b in zip(combined, sup, sub):
        torch.testing.assert_close(got, a + b)
    sup_conflict = [-3 * g for g in sup]
    combined = combine_gradients(sup_conflict, sub, "sub", "global", max_coefficient=None, eps=0.0)
    flat_projected = torch.cat([(c - b).flatten() for c, b in zip(combined, sub)])
    assert _flat_cos(flat_projected, flat_sub) == pytest.approx(0.0, abs=1e-6)


def test_combination_never_conflicts_with_the_prioritized_gradient_on_random_inputs():
    generator = torch.Generator().manual_seed(0)
    sup = [torch.randn(7, 3, generator=generator) for _ in range(20)]
    sub = [torch.randn(7, 3, generator=generator) for _ in range(20)]
    combined = combine_gradients(sup, sub, "sub", max_coefficient=None, eps=0.0)
    for c, b in zip(combined, sub):
        assert torch.dot((c - b).flatten(), b.flatten()).item() >= -1e-5


def test_none_gradients_count_as_zero_and_stay_none_when_both_missing():
    sup = [None, torch.ones(2), None]
    sub = [torch.ones(2), None, None]
    combined = combine_gradients(sup, sub, "sub")
    torch.testing.assert_close(combined[0], torch.ones(2))
    torch.testing.assert_close(combined[1], torch.ones(2))
    assert combined[2] is None


def test_inputs_are_not_modified():
    sup, sub = _conflicting_pair()
    copies = [g.clone() for g in sup + sub]
    combine_gradients(sup, sub, "sub")
    for original, copy in zip(sup + sub, copies):
        torch.testing.assert_close(original, copy)


def test_conflict_ratio_counts_negative_cosines_among_defined_tensors():
    sup, sub = _conflicting_pair()
    assert conflict_ratio(sup, sub) == pytest.approx(0.5)
    assert conflict_ratio(sup + [None, torch.zeros(3)], sub + [torch.ones(2), torch.ones(3)]) == pytest.approx(0.5)
    assert math.isnan(conflict_ratio([None], [torch.ones(1)]))
    cosines = gradient_cosines(sup, sub)
    assert cosines[0].item() < 0 < cosines[1].item()


def test_combine_gradients_rejects_bad_arguments():
    with pytest.raises(ValueError, match="priority"):
        combine_gradients([torch.ones(1)], [torch.ones(1)], "both")
    with pytest.raises(ValueError, match="granularity"):
        combine_gradients([torch.ones(1)], [torch.ones(1)], "sub", "layer")
    with pytest.raises(ValueError, match="one entry per parameter"):
        combine_gradients([torch.ones(1)], [], "sub")


def test_all_reduce_gradients_is_a_copy_without_a_process_group():
    from nasvit_hf.training import all_reduce_gradients

    params = [torch.zeros(2), torch.zeros(3)]
    sup, sub = [torch.ones(2), None], [None, torch.ones(3)]
    reduced_sup, reduced_sub = all_reduce_gradients([sup, sub], params)
    assert reduced_sup[1] is None and reduced_sub[0] is None
    torch.testing.assert_close(reduced_sup[0], torch.ones(2))
    with pytest.raises(ValueError, match="one per parameter"):
        all_reduce_gradients([[None]], params)


def test_global_projection_spans_tensors_where_only_the_kept_gradient_exists():
    sup = [torch.tensor([-2.0, 0.0]), None]
    sub = [torch.tensor([1.0, 0.0]), torch.tensor([1.0])]
    combined = combine_gradients(sup, sub, "sub", "global", max_coefficient=None, eps=0.0)
    flat_sub = torch.cat([g.flatten() for g in sub])
    flat_projected = torch.cat([(c - b).flatten() for c, b in zip(combined, sub)])
    assert _flat_cos(flat_projected, flat_sub) == pytest.approx(0.0, abs=1e-7)
    torch.testing.assert_close(combined[1], torch.tensor([2.0]))  # 1 + (2 / 2) * 1


@pytest.mark.parametrize("priority", ["sub", "sup"])
@pytest.mark.parametrize("granularity", ["tensor", "global"])
@pytest.mark.parametrize("max_coefficient", [2.0, 0.3, None])
def test_conflicts_after_combination_from_the_pair_statistics_equal_those_of_the_projected_gradients(
    priority, granularity, max_coefficient
):
    """The sandwich step counts conflicts after combination from the pair's statistics, re-reading only the tensors
    the projection changed (`combined_pair_stats`); it gives the cosines and the ratio of the projected pair."""
    from nasvit_hf.training.gradients import (
        AFTER_COMBINATION_TOLERANCE,
        _dots_and_norms,
        combined_pair_stats,
        projected_pair,
    )

    generator = torch.Generator().manual_seed(7)
    shapes = [(3, 4), (5,), (2, 2, 3), (7,), (4,), (6, 2), (1,), (3,)]
    sup = [torch.randn(shape, generator=generator) for shape in shapes] + [torch.randn(2), None]
    # mostly against the supernet gradient (so the global dot is negative too), two tensors along it
    sub = [
        (1 if index in (1, 4) else -2) * a + 0.5 * torch.randn(a.shape, generator=generator)
        for index, a in enumerate(sup[: len(shapes)])
    ] + [None, torch.randn(2)]
    stats = _dots_and_norms(sup, sub)
    coefficients: list[float] = []
    combined = combine_gradients(
        sup, sub, priority, granularity, max_coefficient, _stats=stats, _coefficients_out=coefficients
    )
    assert len(coefficients) == len(stats[0]) and any(c > 0 for c in coefficients)
    expected_pair = projected_pair(sup, sub, combined, priority)
    indices, dots, sup_sq, sub_sq = combined_pair_stats(stats, coefficients, sup, sub, combined, priority)
    _, expected_dots, expected_sup_sq, expected_sub_sq = _dots_and_norms(*expected_pair)
    # (projected_pair re-forms the untouched tensors as (a + b) - b: equal up to float32 rounding)
    for value, expected in ((dots, expected_dots), (sup_sq, expected_sup_sq), (sub_sq, expected_sub_sq)):
        torch.testing.assert_close(value, expected, atol=1e-5, rtol=1e-5)
    fast = conflict_ratio(sup, sub, _stats=(indices, dots, sup_sq, sub_sq), tolerance=AFTER_COMBINATION_TOLERANCE)
    slow = conflict_ratio(*expected_pair, tolerance=AFTER_COMBINATION_TOLERANCE)
    assert fast == slow
    # measure_conflicts' per-tensor cosines after combination come from the same statistics
    from nasvit_hf.training.gradients import gradient_cosines

    torch.testing.assert_close(
        gradient_cosines(sup, sub, _stats=(indices, dots, sup_sq, sub_sq)),
        gradient_cosines(*expected_pair),
        atol=1e-5,
        rtol=1e-5,
        equal_nan=True,
    )
    assert combined_pair_stats(stats, coefficients, sup, sub, combined, "none") is stats
