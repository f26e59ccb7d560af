"""Eq.3-6: from per-step saliency to one boolean mask per concept and layer.

Fixes over the reference code, each on purpose:
- Eq.3's indicator counts only positive saliency: when fewer than r1 of the entries are
  positive the top-r1 value is 0, and `S >= 0` would mark every weight as sensitive.
- Eq.4-6 keep only A > 0: top-k always returns k entries, so without it zero-saliency weights
  are pruned whenever too few weights respond to the concept.
- Thresholds are k-th largest values and ties at a threshold are all kept, so the result does
  not depend on how a top-k kernel breaks ties (bit-identical masks on CPU).

Memory per layer: one step's saliency S[t] (recomputed from |W| and the statistics, never
stored for all steps), the running A, a uint8 hit count, and the top-k values of a threshold.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

StepSaliency = Callable[[int], torch.Tensor]
"""step t -> S[t], Eq.2's contrastive saliency of one layer at that step, [C_out, C_in]."""


def count_for(fraction: float, n: int) -> int:
    """How many entries a top-`fraction` keeps out of n: round(fraction * n), at least 1."""
    return min(n, max(1, round(fraction * n)))


def kth_largest(values: torch.Tensor, k: int, dim: int | None = None) -> torch.Tensor:
    """The k-th largest value (of all entries, or along `dim`, kept as a size-1 dim).

    topk keeps only k values, where kthvalue copies the whole input; for the small fractions
    FIA uses, that is less memory and about the same time.
    """
    if dim is None:
        return torch.topk(values.reshape(-1), k, sorted=False).values.min()
    return torch.topk(values, k, dim=dim, sorted=False).values.amin(dim=dim, keepdim=True)


def sensitive(saliency: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """1[S > tau] of Eq.3, counting only positive saliency (tau is the top-r1 value)."""
    return (saliency >= tau) & (saliency > 0)


def time_integrated_sensitivity(step_saliency: StepSaliency, steps: int, r1: float) -> torch.Tensor:
    """Eq.3: A = 0.5 * mean_t(S) / max(mean_t(S)) + 0.5 * mean_t(1[S > tau_t]).

    tau_t is the top-r1 value of S[t] over the whole layer. The division by the layer maximum is
    the reference code's, so both halves lie in [0, 1].
    """
    total: torch.Tensor | None = None
    hits: torch.Tensor | None = None
    for t in range(steps):
        saliency = step_saliency(t).float()
        tau = kth_largest(saliency, count_for(r1, saliency.numel()))
        if total is None:
            total = saliency.clone()
            hits = torch.zeros_like(saliency, dtype=torch.uint8 if steps < 256 else torch.int16)
        else:
            total += saliency
        hits += sensitive(saliency, tau)
        del saliency
    if total is None or hits is None:
        raise ValueError("time_integrated_sensitivity needs at least one step")
    peak = total.max()
    total.mul_(0.5 / peak if peak > 0 else 0.0)  # mean_t's 1/T cancels in the normalisation
    return total.add_(hits, alpha=0.5 / steps)


def spatial_selection(sensitivity: torch.Tensor, r2: float) -> torch.Tensor:
    """Eq.4-6: Q = (top r2 of each output row) AND (top r2 of the layer) AND (A > 0)."""
    rows, columns = sensitivity.shape
    row_threshold = kth_largest(sensitivity, count_for(r2, columns), dim=1)
    layer_threshold = kth_largest(sensitivity, count_for(r2, rows * columns))
    return (sensitivity >= row_threshold) & (sensitivity >= layer_threshold) & (sensitivity > 0)


def conceptprune_selection(
    abs_weight: torch.Tensor, concept_means: torch.Tensor, base_means: torch.Tensor, skill_ratio: float
) -> torch.Tensor:
    """ConceptPrune (Chavhan et al.) for comparison: per step, a weight is a concept 'skill'
    if it is in its row's top-`skill_ratio` Wanda score under concept prompts and scores higher
    than under base prompts; the mask is the union over the recorded steps.

    concept_means / base_means: [T, C_in] mean column norms (ConceptPrune pools prompts before
    the norm; the mean of per-prompt norms is used here, which differs slightly).
    """
    k_row = count_for(skill_ratio, abs_weight.shape[1])
    selected = torch.zeros_like(abs_weight, dtype=torch.bool)
    for concept_norm, base_norm in zip(concept_means, base_means, strict=True):
        score = abs_weight * concept_norm
        selected |= (score >= kth_largest(score, k_row, dim=1)) & (concept_norm > base_norm) & (score > 0)
    return selected
