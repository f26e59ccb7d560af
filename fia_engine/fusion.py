"""Eq.7-8: fuse per-concept masks, keeping the concept-agnostic weights many concepts share."""

from __future__ import annotations

import math

import torch

AGNOSTIC_MIN_SHARE = 2


def agnostic_threshold(alpha: float, num_concepts: int) -> int:
    """tau_ca = ceil(alpha * C), but at least 2.

    The paper's rule (keep weights in >= ceil(alpha*C) masks) prunes nothing for C = 1 (every
    selected weight is 'shared by all concepts') and, for alpha*C <= 1, nothing at all. A weight
    chosen for a single concept is concept-specific by definition, so agnostic means shared by at
    least two. From C = 3 at the paper's alphas this equals the paper's rule. The small epsilon
    keeps float products such as 0.6 * 10 = 6.000000000000001 from rounding up.
    """
    return max(AGNOSTIC_MIN_SHARE, math.ceil(alpha * num_concepts - 1e-9))


def concept_counts(selected: list[torch.Tensor], numel: int) -> torch.Tensor:
    """s_ij of Eq.7: in how many concept masks each weight is (flat indices in, dense counts out)."""
    counts = torch.zeros(numel, dtype=torch.int16)
    for indices in selected:
        counts.index_add_(0, indices.long(), torch.ones(indices.numel(), dtype=torch.int16))
    return counts


def fuse_counts(counts: torch.Tensor, threshold: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq.8: prune where 0 < s < tau_ca, keep (agnostic) where s >= tau_ca.

    threshold None = plain union (the paper's 'naive' fusion): everything selected is pruned.
    Returns (pruned, kept_agnostic) as flat sorted indices.
    """
    if threshold is None:
        pruned = counts > 0
        kept = torch.zeros_like(pruned)
    else:
        pruned = (counts > 0) & (counts < threshold)
        kept = counts >= threshold
    return pruned.nonzero().flatten(), kept.nonzero().flatten()
