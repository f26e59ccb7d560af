"""Eq.3-6: from per-step saliency to one boolean mask per concept and layer.

Fixes over the reference code, each on purpose:
- Eq.3's indicator counts only positive saliency: when fewer than r1 of the entries are
  positive the top-r1 value is 0, and `S >= 0` would mark every weight as sensitive.
- Eq.4-6 keep only A > 0: top-k always returns k entries, so without it zero-saliency weights
  are pruned whenever too few weights respond to the concept.
- Thresholds are k-th largest values and ties at a threshold are all kept, so the result does
  not depend on how a top-k kernel breaks ties (bit-identical masks on CPU).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def kth_largest(values: torch.Tensor, fraction: float, dim: int | None = None) -> torch.Tensor:
    """The value at the top-`fraction` position (k = max(1, round(fraction * n)))."""
    if dim is None:
        values, dim = values.reshape(-1), 0
    n = values.shape[dim]
    k = min(n, max(1, round(fraction * n)))
    return torch.kthvalue(values, n - k + 1, dim=dim, keepdim=True).values


def sensitive_at_step(saliency: torch.Tensor, r1: float) -> torch.Tensor:
    """1[S > tau] of Eq.3: the top-r1 fraction of one step's saliency, positive entries only."""
    tau = kth_largest(saliency, r1)
    return (saliency >= tau) & (saliency > 0)


def time_integrated_sensitivity(step_saliency: Iterable[torch.Tensor], r1: float) -> torch.Tensor:
    """Eq.3: A = 0.5 * mean_t(S) / max(mean_t(S)) + 0.5 * mean_t(1[S > tau_t]).

    The division by the layer maximum is the reference code's, so both halves lie in [0, 1].
    Steps are consumed one at a time: only two layer-sized buffers are alive.
    """
    total: torch.Tensor | None = None
    hits: torch.Tensor | None = None
    steps = 0
    for saliency in step_saliency:
        saliency = saliency.float()
        if total is None:
            total = torch.zeros_like(saliency)
            hits = torch.zeros_like(saliency)
        total += saliency
        hits += sensitive_at_step(saliency, r1)
        steps += 1
    if total is None or hits is None:
        raise ValueError("time_integrated_sensitivity needs at least one step")
    peak = total.max()
    magnitude = total / peak if peak > 0 else torch.zeros_like(total)
    return 0.5 * magnitude + 0.5 * hits / steps


def spatial_selection(sensitivity: torch.Tensor, r2: float) -> torch.Tensor:
    """Eq.4-6: Q = (top r2 of each output row) AND (top r2 of the layer) AND (A > 0)."""
    row_set = sensitivity >= kth_largest(sensitivity, r2, dim=1)
    layer_set = sensitivity >= kth_largest(sensitivity, r2)
    return row_set & layer_set & (sensitivity > 0)


def conceptprune_selection(
    abs_weight: torch.Tensor, concept_means: torch.Tensor, base_means: torch.Tensor, skill_ratio: float
) -> torch.Tensor:
    """ConceptPrune (Chavhan et al.) for comparison: per step, a weight is a concept 'skill'
    if it is in its row's top-`skill_ratio` Wanda score under concept prompts and scores higher
    than under base prompts; the mask is the union over the recorded steps.

    concept_means / base_means: [T, C_in] mean column norms (ConceptPrune pools prompts before
    the norm; the mean of per-prompt norms is used here, which differs slightly).
    """
    selected = torch.zeros_like(abs_weight, dtype=torch.bool)
    for concept_norm, base_norm in zip(concept_means, base_means, strict=True):
        score = abs_weight * concept_norm
        top_of_row = score >= kth_largest(score, skill_ratio, dim=1)
        selected |= top_of_row & (concept_norm > base_norm) & (score > 0)
    return selected
