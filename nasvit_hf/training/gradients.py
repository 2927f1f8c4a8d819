"""Gradient combination for sandwich training (NASViT, Section 3, Eqn. (1)) and the gradient-conflict ratio.

Gradients are lists of tensors, one entry per parameter, `None` where a parameter got no gradient (an inactive part
of the supernet): `None` counts as zero. `combine_gradients(sup, sub, priority="sub")` projects the supernet
gradient onto the normal plane of the (summed) subnet gradient when they conflict (negative cosine), then adds:

    g = g_sub + g_sup - min(cap, max(0, -g_sup·g_sub / (‖g_sub‖² + eps))) g_sub

`priority="sup"` swaps the roles; `"none"` is the plain sum. `granularity="tensor"` does it per parameter tensor (the
reference code's `Constraint` optimizer: cap 2, eps 1e-6); `"global"` on the whole flattened gradient (the paper's
statement of Eqn. (1)). `max_coefficient=None, eps=0` is the exact projection: g_sup is then orthogonal to g_sub
wherever they conflicted, however small ‖g_sub‖ is (with the reference's eps, tensors with ‖g_sub‖² ≲ eps are barely
projected and keep their conflicts).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

__all__ = [
    "AFTER_COMBINATION_TOLERANCE",
    "PRIORITIES",
    "GRANULARITIES",
    "all_reduce_gradients",
    "combine_gradients",
    "combined_pair_stats",
    "conflict_ratio",
    "gradient_cosines",
    "projected_pair",
]

PRIORITIES = ("sub", "sup", "none")
GRANULARITIES = ("tensor", "global")
GradList = Sequence[torch.Tensor | None]
# A tensor counts as conflicting after combination when its cosine is below -1e-3: the capped projection with the
# reference's eps leaves residues of order eps / ‖g_sub‖² (~1e-5 here), which are not conflicts.
AFTER_COMBINATION_TOLERANCE = 1e-3


def _check_pair(sup_grads: GradList, sub_grads: GradList) -> None:
    if len(sup_grads) != len(sub_grads):
        raise ValueError(
            f"sup_grads and sub_grads must have one entry per parameter; got {len(sup_grads)} and {len(sub_grads)}."
        )
    for index, (sup, sub) in enumerate(zip(sup_grads, sub_grads)):
        if sup is not None and sub is not None and sup.shape != sub.shape:
            raise ValueError(
                f"gradient {index} has shape {tuple(sup.shape)} in sup_grads, {tuple(sub.shape)} in sub_grads."
            )


def _dots_and_norms(sup_grads: GradList, sub_grads: GradList):
    """Per-tensor (a·b, ‖a‖², ‖b‖²) as float64 tensors over the entries where both gradients are present (BLAS dot
    products and fused `_foreach_norm`; accumulation in the gradients' dtype, results in float64)."""
    pairs = [(i, a, b) for i, (a, b) in enumerate(zip(sup_grads, sub_grads)) if a is not None and b is not None]
    if not pairs:
        empty = torch.zeros(0, dtype=torch.float64)
        return [], empty, empty, empty
    indices = [i for i, _, _ in pairs]
    sups = [a.reshape(-1) for _, a, _ in pairs]
    subs = [b.reshape(-1) for _, _, b in pairs]
    dots = torch.stack([torch.dot(a, b) for a, b in zip(sups, subs)]).double()
    sup_sq = torch.stack(torch._foreach_norm(sups)).double().pow(2)
    sub_sq = torch.stack(torch._foreach_norm(subs)).double().pow(2)
    return indices, dots, sup_sq, sub_sq


def gradient_cosines(sup_grads: GradList, sub_grads: GradList, _stats=None) -> torch.Tensor:
    """cos(g_sup, g_sub) per parameter tensor (float64); NaN where either gradient is missing or zero. `_stats`: the
    pair's `(indices, a·b, ‖a‖², ‖b‖²)` when already computed (e.g. `combined_pair_stats` for the pair after
    combination), so the gradients are not read again."""
    _check_pair(sup_grads, sub_grads)
    cosines = torch.full((len(sup_grads),), float("nan"), dtype=torch.float64)
    indices, dots, sup_sq, sub_sq = _stats if _stats is not None else _dots_and_norms(sup_grads, sub_grads)
    if indices:
        denominator = (sup_sq * sub_sq).sqrt()
        values = torch.where(denominator > 0, dots / denominator.clamp_min(1e-300), torch.nan)
        cosines[torch.tensor(indices)] = values.cpu()
    return cosines


def conflict_ratio(sup_grads: GradList, sub_grads: GradList, _stats=None, tolerance: float = 0.0) -> float:
    """The paper's gradient-conflict ratio (Tables 4 and 7): the share of parameter tensors whose cosine between the
    supernet and the subnet gradient is negative (below `-tolerance`), among the tensors where both gradients are
    present and non-zero. Returns NaN when no tensor qualifies.

    After a projection the cosines are 0 up to the reference's eps (1e-6 added to ‖g‖²): measure the ratio after
    combination with `tolerance=AFTER_COMBINATION_TOLERANCE` so those round-off residues do not count as conflicts."""
    _check_pair(sup_grads, sub_grads)
    _, dots, sup_sq, sub_sq = _stats if _stats is not None else _dots_and_norms(sup_grads, sub_grads)
    defined = (sup_sq > 0) & (sub_sq > 0)
    if not bool(defined.any()):
        return float("nan")
    threshold = -tolerance * (sup_sq[defined] * sub_sq[defined]).sqrt()
    return float((dots[defined] < threshold).double().mean())


def projected_pair(
    sup_grads: GradList, sub_grads: GradList, combined: GradList, priority: str
) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
    """The two gradients as `combine_gradients` added them: with priority "sub", (g_sup projected, g_sub), the
    projected supernet gradient being `combined - g_sub`; with "sup", (g_sup, g_sub projected); with "none", the
    inputs. `conflict_ratio(*projected_pair(...), tolerance=AFTER_COMBINATION_TOLERANCE)` is the conflict ratio after
    combination (Table 7 counts it after
    projection: 0 % where the capped coefficient sufficed)."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {list(PRIORITIES)}, got {priority!r}.")
    if priority == "none":
        return list(sup_grads), list(sub_grads)
    keep = sub_grads if priority == "sub" else sup_grads
    moved = [
        None if other is None else (other.clone() if kept is None else whole - kept)
        for whole, kept, other in zip(combined, keep, sup_grads if priority == "sub" else sub_grads)
    ]
    return (moved, list(sub_grads)) if priority == "sub" else (list(sup_grads), moved)


def _coefficient(dot: torch.Tensor, norm_sq: torch.Tensor, max_coefficient: float | None, eps: float):
    denominator = norm_sq + eps
    # eps = 0 (the exact projection): a zero gradient has nothing to project onto (its dot product is 0 too).
    coefficient = torch.where(denominator > 0, -dot / denominator.clamp_min(1e-300), 0.0).clamp_min(0.0)
    if max_coefficient is not None:
        coefficient = coefficient.clamp_max(max_coefficient)
    return coefficient


@torch.no_grad()
def combine_gradients(
    sup_grads: GradList,
    sub_grads: GradList,
    priority: str = "sub",
    granularity: str = "tensor",
    max_coefficient: float | None = 2.0,
    eps: float = 1e-6,
    _stats=None,
    _coefficients_out: list[float] | None = None,
) -> list[torch.Tensor | None]:
    """Combine the supernet and (summed) subnet gradients; returns new tensors (inputs are not modified).

    Args:
        sup_grads, sub_grads: one tensor (or None = no gradient) per parameter.
        priority: `"sub"` (Eqn. (1): remove from g_sup its component against g_sub when they conflict), `"sup"` (the
            roles swapped: "Prioritize (sup)" of Table 7) or `"none"` (plain sum).
        granularity: `"tensor"` (per parameter tensor, the reference) or `"global"` (whole gradient, the paper).
        max_coefficient: cap of the projection coefficient (the reference: 2); None = exact projection.
        eps: added to the squared norm in the coefficient's denominator (the reference: 1e-6); 0 with
            `max_coefficient=None` = the exact projection.
    Entries where both inputs are None stay None.
    """
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {list(PRIORITIES)}, got {priority!r}.")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}.")
    if max_coefficient is not None and max_coefficient < 0:
        raise ValueError(f"max_coefficient must be non-negative or None, got {max_coefficient}.")
    if not eps >= 0:
        raise ValueError(f"eps must be non-negative (0 = the exact projection), got {eps}.")
    _check_pair(sup_grads, sub_grads)
    combined: list[torch.Tensor | None] = []
    for sup, sub in zip(sup_grads, sub_grads):
        if sup is None and sub is None:
            combined.append(None)
        elif sup is None:
            combined.append(sub.clone())
        elif sub is None:
            combined.append(sup.clone())
        else:
            combined.append(sup + sub)
    if priority == "none":
        return combined
    # Prioritize "sub": the supernet gradient is projected, so the coefficient multiplies the subnet gradient.
    keep = sub_grads if priority == "sub" else sup_grads
    indices, dots, sup_sq, sub_sq = _stats if _stats is not None else _dots_and_norms(sup_grads, sub_grads)
    if not indices:
        return combined
    if granularity == "global":
        # One coefficient for the whole flattened gradient: ‖keep‖² counts every tensor that has a keep gradient,
        # and the correction applies to all of them (where the other gradient is None, a·b is 0 there).
        keep_present = [i for i, g in enumerate(keep) if g is not None]
        keep_norm_sq = torch.stack(torch._foreach_norm([keep[i] for i in keep_present])).double().pow(2).sum()
        coefficient = float(_coefficient(dots.sum(), keep_norm_sq, max_coefficient, eps))
        targets = [(i, coefficient) for i in keep_present]
    else:
        keep_sq = sub_sq if priority == "sub" else sup_sq
        targets = list(zip(indices, _coefficient(dots, keep_sq, max_coefficient, eps).tolist()))
    if _coefficients_out is not None:  # one coefficient per entry of `indices`, for `combined_pair_stats`
        by_index = dict(targets)
        _coefficients_out[:] = [by_index.get(index, 0.0) for index in indices]
    for index, coefficient in targets:
        if coefficient > 0.0:
            combined[index].add_(keep[index], alpha=coefficient)
    return combined


def combined_pair_stats(
    stats, coefficients: list[float], sup_grads: GradList, sub_grads: GradList, combined: GradList, priority: str
):
    """`(indices, a·b, ‖a‖², ‖b‖²)` of the two gradients as `combine_gradients` added them (`projected_pair`), given
    the pair's own statistics and the projection coefficients: a tensor the projection left alone (coefficient 0)
    keeps its statistics, so only the projected tensors are read again (`combined - kept`, exactly as
    `projected_pair` forms them). `conflict_ratio(..., _stats=combined_pair_stats(...))` is then the ratio after
    combination of `conflict_ratio(*projected_pair(...))` at the cost of the conflicting tensors only."""
    indices, dots, sup_sq, sub_sq = stats
    if priority == "none" or not indices:
        return stats
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {list(PRIORITIES)}, got {priority!r}.")
    keep = sub_grads if priority == "sub" else sup_grads
    positions = [position for position, coefficient in enumerate(coefficients) if coefficient > 0.0]
    if not positions:
        return stats
    moved = [combined[indices[p]] - keep[indices[p]] for p in positions]
    kept = [keep[indices[p]].reshape(-1) for p in positions]
    moved = [tensor.reshape(-1) for tensor in moved]
    new_dots = torch.stack([torch.dot(a, b) for a, b in zip(moved, kept)]).double()
    new_sq = torch.stack(torch._foreach_norm(moved)).double().pow(2)
    where = torch.tensor(positions, device=dots.device)
    dots = dots.index_copy(0, where, new_dots.to(dots.device))
    if priority == "sub":
        return indices, dots, sup_sq.index_copy(0, where, new_sq.to(sup_sq.device)), sub_sq
    return indices, dots, sup_sq, sub_sq.index_copy(0, where, new_sq.to(sub_sq.device))


@torch.no_grad()
def all_reduce_gradients(
    gradient_lists: Sequence[GradList], parameters: Sequence[torch.Tensor], group=None
) -> list[list[torch.Tensor | None]]:
    """Average several gradient lists (each with one entry per tensor of `parameters`) over the processes of `group`
    in ONE flattened all-reduce, so every rank ends with identical gradients. `None` entries count as zero; a result
    entry is `None` only where no rank had that gradient. A plain copy when torch.distributed is not initialised or
    has a single process."""
    gradient_lists = [list(grads) for grads in gradient_lists]
    for grads in gradient_lists:
        if len(grads) != len(parameters):
            raise ValueError(
                f"each gradient list needs {len(parameters)} entries (one per parameter), got {len(grads)}."
            )
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return gradient_lists
    device = parameters[0].device
    flags = torch.tensor(
        [[g is not None for g in grads] for grads in gradient_lists], dtype=torch.float32, device=device
    )
    parts = [flags.reshape(-1)]
    for grads in gradient_lists:
        for grad, param in zip(grads, parameters):
            parts.append(
                grad.reshape(-1).float() if grad is not None else param.new_zeros(param.numel(), dtype=torch.float32)
            )
    buffer = torch.cat(parts)
    dist.all_reduce(buffer, group=group)
    buffer /= dist.get_world_size(group)
    global_flags = (buffer[: flags.numel()].view_as(flags) > 0).tolist()
    offset = flags.numel()
    result: list[list[torch.Tensor | None]] = []
    for list_flags in global_flags:
        reduced: list[torch.Tensor | None] = []
        for present, param in zip(list_flags, parameters):
            chunk = buffer[offset : offset + param.numel()]
            offset += param.numel()
            reduced.append(chunk.view(param.shape).to(param.dtype) if present else None)
        result.append(reduced)
    return result
