"""Eq.3-6: from per-step saliency to one boolean mask per concept and layer.

Fixes over the reference code, each on purpose:
- Eq.3's indicator counts only positive saliency: when fewer than r1 of the entries are
  positive the top-r1 value is 0, and `S >= 0` would mark every weight as sensitive.
- Eq.4-6 keep only A > 0: top-k always returns k entries, so without it zero-saliency weights
  are pruned whenever too few weights respond to the concept.
- Thresholds are k-th largest values and ties at a threshold are all kept, so the result does
  not depend on how a top-k kernel breaks ties (bit-identical masks on CPU).

Memory: a layer is processed in blocks of rows and the per-step saliency S[t] is never held
whole (it is recomputed per block from |W| and the statistics); a top-k threshold keeps only k
candidates. What stays alive is A (fp32) and a uint8 hit count per weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

StepSaliency = Callable[[int, slice], torch.Tensor]
"""(step t, block of rows) -> S[t][rows, :], Eq.2's contrastive saliency for those rows."""

ROWS_PER_BLOCK = 256


def count_for(fraction: float, n: int) -> int:
    """How many entries a top-`fraction` keeps out of n: round(fraction * n), at least 1."""
    return min(n, max(1, round(fraction * n)))


def row_blocks(rows: int, per_block: int = ROWS_PER_BLOCK) -> list[slice]:
    return [slice(start, min(start + per_block, rows)) for start in range(0, rows, per_block)]


def kth_largest(chunks: Iterable[torch.Tensor], k: int) -> torch.Tensor:
    """The k-th largest value over all chunks, holding at most k candidates plus one chunk."""
    best: torch.Tensor | None = None
    for chunk in chunks:
        flat = chunk.reshape(-1)
        pool = flat if best is None else torch.cat([best, flat])
        best = torch.topk(pool, min(k, pool.numel()), sorted=False).values
    if best is None:
        raise ValueError("kth_largest needs at least one value")
    return best.min()


def sensitive(saliency: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """1[S > tau] of Eq.3, counting only positive saliency (tau is the top-r1 value)."""
    return (saliency >= tau) & (saliency > 0)


def time_integrated_sensitivity(
    step_saliency: StepSaliency, steps: int, shape: tuple[int, int], r1: float, per_block: int = ROWS_PER_BLOCK
) -> torch.Tensor:
    """Eq.3: A = 0.5 * mean_t(S) / max(mean_t(S)) + 0.5 * mean_t(1[S > tau_t]).

    tau_t is the top-r1 value of S[t] over the whole layer. The division by the layer maximum is
    the reference code's, so both halves lie in [0, 1].
    """
    blocks = row_blocks(shape[0], per_block)
    k = count_for(r1, shape[0] * shape[1])
    taus = [kth_largest((step_saliency(t, rows) for rows in blocks), k) for t in range(steps)]
    total = torch.empty(shape, dtype=torch.float32)
    hits = torch.empty(shape, dtype=torch.uint8 if steps < 256 else torch.int16)
    for rows in blocks:
        block_total = torch.zeros((rows.stop - rows.start, shape[1]), dtype=torch.float32)
        block_hits = torch.zeros_like(block_total, dtype=hits.dtype)
        for t in range(steps):
            saliency = step_saliency(t, rows)
            block_total += saliency
            block_hits += sensitive(saliency, taus[t])
        total[rows], hits[rows] = block_total, block_hits
    peak = total.max()
    total.mul_(0.5 / peak if peak > 0 else 0.0)  # mean_t's 1/T cancels in the normalisation
    return total.add_(hits, alpha=0.5 / steps)


def spatial_selection(sensitivity: torch.Tensor, r2: float, per_block: int = ROWS_PER_BLOCK) -> torch.Tensor:
    """Eq.4-6: Q = (top r2 of each output row) AND (top r2 of the layer) AND (A > 0)."""
    rows, columns = sensitivity.shape
    blocks = row_blocks(rows, per_block)
    layer_threshold = kth_largest((sensitivity[b] for b in blocks), count_for(r2, rows * columns))
    k_row = count_for(r2, columns)
    selected = torch.empty_like(sensitivity, dtype=torch.bool)
    for block in blocks:
        scores = sensitivity[block]
        row_threshold = torch.topk(scores, k_row, dim=1).values[:, -1:]
        selected[block] = (scores >= row_threshold) & (scores >= layer_threshold) & (scores > 0)
    return selected


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
        top_of_row = score >= torch.topk(score, k_row, dim=1).values[:, -1:]
        selected |= top_of_row & (concept_norm > base_norm) & (score > 0)
    return selected
