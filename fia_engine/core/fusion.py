"""Eq.7-8: fuse per-concept masks, keeping the concept-agnostic weights many concepts share."""

from __future__ import annotations

import logging
import math
from collections import Counter

import torch

from . import paper, selection
from .errors import FIAInputError
from .masks import (
    ConceptMasks,
    KeptConcepts,
    MaskSettings,
    UnlearningMask,
    check_has_layers,
    check_layers_match,
    compact_indices,
    warn_if_other_weights,
)
from .memory import release_freed_memory
from .request import check_forgotten_not_kept, concept_key
from .selection import check_ratio, compatibility_rules, rules_name

AGNOSTIC_MIN_SHARE = 2
FUSION_MODES = ("concept-agnostic", "union")
log = logging.getLogger("FIA")


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


def concept_counts(selected: list[torch.Tensor], numel: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """s_ij of Eq.7: in how many concept masks each weight is (flat indices in, dense counts out, on `device`).

    One byte a weight on the CPU; int32 on a GPU, whose atomic adds want it."""
    device = torch.device(device)
    dtype = torch.int32 if device.type != "cpu" else torch.uint8 if len(selected) < 256 else torch.int16
    counts = torch.zeros(numel, dtype=dtype, device=device)
    for indices in selected:
        indices = indices.to(device, torch.long)
        counts.index_add_(0, indices, torch.ones(indices.numel(), dtype=dtype, device=device))
    return counts


def fuse_counts(counts: torch.Tensor, threshold: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq.8: prune where 0 < s < tau_ca, keep (agnostic) where s >= tau_ca.

    threshold None = plain union (the paper's 'naive' fusion): everything selected is pruned.
    Returns (pruned, kept_agnostic) as flat sorted indices: one pass over the counts, then only
    the selected weights are touched.
    """
    selected = counts.nonzero().flatten()
    agnostic = counts[selected] >= threshold if threshold is not None else torch.zeros_like(selected, dtype=torch.bool)
    return compact_indices(selected[~agnostic], counts.numel()), compact_indices(selected[agnostic], counts.numel())


def merge_concept_masks(inputs: list[ConceptMasks], what: str = "concept_masks") -> ConceptMasks:
    """Puts masks from separate saliency runs (e.g. objects and artists) into one set."""
    first = inputs[0]
    merged = ConceptMasks(first.architecture, list(first.layers), {}, {}, first.fingerprint, first.recording)
    for number, masks in enumerate(inputs, start=1):
        label = f"{what} input {number}"
        check_same_layers(label, masks, first, "the first input")
        for concept in masks.concepts:
            if concept_key(concept) in {concept_key(c) for c in merged.selected}:
                raise FIAInputError(
                    f"{label}: concept '{concept}' is already in another input. Remove it from one of the runs."
                )
            merged.selected[concept] = masks.selected[concept]
            merged.settings[concept] = masks.settings[concept]
    return merged


def check_same_layers(what: str, masks: ConceptMasks, target: ConceptMasks, target_name: str) -> None:
    """Masks fused together must cover the same layers of one model (a warning if other weights)."""
    check_has_layers(what, masks.layers)
    kind, target_kind = masks.layers[0].kind, target.layers[0].kind
    if kind != target_kind:
        raise FIAInputError(f"{what}: its layers are {kind}, those of {target_name} {target_kind}; compute both "
                            "with the same `layers` setting.")
    check_layers_match(what, masks.architecture, masks.layers, target.architecture, target.layers, target_name)
    if {layer.key for layer in masks.layers} != {layer.key for layer in target.layers}:
        raise FIAInputError(f"{what}: covers other layers than {target_name}; compute both on one model.")
    warn_if_other_weights(what, masks.fingerprint, target.fingerprint)


def fuse_masks(
    inputs: list[ConceptMasks],
    *,
    alpha: float = 0.0,
    mode: str = "concept-agnostic",
    compatibility: str | selection.SelectionRules = "fixed",
    keep: list[ConceptMasks] | None = None,
    device: torch.device | str | None = None,
) -> UnlearningMask:
    """Eq.7-8 over all concepts of all inputs; compatibility as in select_sensitive_neurons.

    Runs layer by layer on `device` (default: the GPU when there is one), each layer's indices
    moved there and the result brought back to the CPU; the same mask on any device.

    alpha 0 = the paper's value for the concepts' task (`paper_alpha`). `keep`: masks of concepts
    to preserve, selected exactly as the forgotten ones; no weight selected for a kept concept is
    pruned (UCE and MACE take such a list; FIA's reference code does not).
    """
    check_ratio("alpha", alpha, allow_zero=True)
    rules = compatibility_rules(compatibility)
    if mode not in FUSION_MODES:
        raise FIAInputError(f"fusion: '{mode}' is unknown; use one of {', '.join(FUSION_MODES)}.")
    if not inputs:
        raise FIAInputError("concept_masks: connect at least one FIA_CONCEPT_MASKS input.")
    masks = merge_concept_masks(inputs)
    kept_masks = _merge_keep(keep or [], masks)
    concepts = masks.concepts
    alpha_source = None
    if alpha == 0:
        alpha, alpha_source = paper_alpha(masks)
    threshold = agnostic_threshold(alpha, len(concepts), rules) if mode == "concept-agnostic" else None
    device = selection.selection_device(device)
    pruned, kept, spared = {}, {}, 0
    for layer in masks.layers:
        numel = layer.out_features * layer.in_features
        layer_pruned, layer_kept = fuse_counts(concept_counts([masks.selected[c][layer.key] for c in concepts], numel, device),
                                               threshold)
        if kept_masks is not None:
            protected = torch.cat([kept_masks.selected[c][layer.key].to(device, layer_pruned.dtype)
                                   for c in kept_masks.concepts])
            spare = torch.isin(layer_pruned, protected)
            spared += int(spare.sum())
            layer_pruned = layer_pruned[~spare]
        pruned[layer.key], kept[layer.key] = layer_pruned.cpu(), layer_kept.cpu()
        del layer_pruned, layer_kept
        release_freed_memory()
    mask = UnlearningMask(
        masks.architecture, list(masks.layers), pruned, kept, concepts,
        MaskSettings(alpha, mode, threshold, rules_name(rules), masks.settings, masks.recording, alpha_source,
                     None if kept_masks is None else KeptConcepts(tuple(kept_masks.concepts), spared)),
        masks.fingerprint,
    )
    log.info("FIA: fused %d concepts: %d weights pruned (%.4f%%), %d concept-agnostic kept%s",
             len(concepts), mask.pruned_count, 100 * mask.sparsity, sum(int(k.numel()) for k in kept.values()),
             "" if kept_masks is None else f", {spared} spared for {len(kept_masks.concepts)} kept concepts")
    return mask


def paper_alpha(masks: ConceptMasks) -> tuple[float, str]:
    """The paper's alpha for the concepts' task; concepts of several tasks (e.g. objects and art
    fused together) get the mean of their tasks' alphas, weighted by how many concepts each has."""
    tasks = Counter(masks.settings[c].preset for c in masks.concepts)
    alpha = sum(paper.for_task(task).alpha * n for task, n in tasks.items()) / sum(tasks.values())
    source = ", ".join(f"{task} {paper.for_task(task).alpha} x {n}" for task, n in sorted(tasks.items()))
    return round(alpha, 6), f"paper: {source}"


def _merge_keep(keep: list[ConceptMasks], forget: ConceptMasks) -> ConceptMasks | None:
    """The kept concepts' masks as one set, checked against the forgotten concepts' layers and names."""
    if not keep:
        return None
    kept = merge_concept_masks(keep, what="keep")
    check_same_layers("keep", kept, forget, "concept_masks")
    check_forgotten_not_kept(forget.concepts, kept.concepts)
    return kept
