"""Eq.7-8: fuse per-concept masks, keeping the concept-agnostic weights many concepts share."""

from __future__ import annotations

import math

import torch

from . import selection
from .masks import compact_indices

AGNOSTIC_MIN_SHARE = 2


def agnostic_threshold(alpha: float, num_concepts: int, rules: selection.SelectionRules = selection.FIXED_RULES) -> int:
    """tau_ca = ceil(alpha * C), but at least 2.

    The paper's rule (keep weights in >= ceil(alpha*C) masks) prunes nothing for C = 1 (every
    selected weight is 'shared by all concepts') and, for alpha*C <= 1, nothing at all. A weight
    chosen for a single concept is concept-specific by definition, so agnostic means shared by at
    least two (rules.agnostic_needs_two). From C = 3 at the paper's alphas this equals the paper's
    rule. The small epsilon (rules.exact_ceil) keeps float products such as 0.28 * 25 =
    7.000000000000001 from rounding up.
    """
    product = alpha * num_concepts - (1e-9 if rules.exact_ceil else 0.0)
    return max(AGNOSTIC_MIN_SHARE if rules.agnostic_needs_two else 1, math.ceil(product))


def concept_counts(selected: list[torch.Tensor], numel: int) -> torch.Tensor:
    """s_ij of Eq.7: in how many concept masks each weight is (flat indices in, dense counts out)."""
    dtype = torch.uint8 if len(selected) < 256 else torch.int16
    counts = torch.zeros(numel, dtype=dtype)
    for indices in selected:
        counts.index_add_(0, indices.long(), torch.ones(indices.numel(), dtype=dtype))
    return counts


def fuse_counts(counts: torch.Tensor, threshold: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq.8: prune where 0 < s < tau_ca, keep (agnostic) where s >= tau_ca.

    threshold None = plain union (the paper's 'naive' fusion): everything selected is pruned.
    Returns (pruned, kept_agnostic) as flat sorted indices, found one block of entries at a time.
    """
    pruned, kept = [], []
    block = selection.BLOCK_ENTRIES
    for start in range(0, counts.numel(), block):
        part = counts[start:start + block]
        selected = part > 0
        agnostic = part >= threshold if threshold is not None else torch.zeros_like(selected)
        pruned.append(compact_indices((selected & ~agnostic).nonzero().flatten() + start, counts.numel()))
        kept.append(compact_indices(agnostic.nonzero().flatten() + start, counts.numel()))
    empty = compact_indices(torch.zeros(0, dtype=torch.int64), counts.numel())
    return torch.cat(pruned) if pruned else empty, torch.cat(kept) if kept else empty
