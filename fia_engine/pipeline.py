"""Select Sensitive Neurons and Fuse Masks on whole saliency records (Eq.3-8, layer by layer)."""

from __future__ import annotations

import dataclasses
import logging

import torch

from . import fusion, paper, selection
from .errors import FIAInputError
from .masks import ConceptMasks, UnlearningMask, check_layers_match, compact_indices, warn_if_other_weights
from .memory import release_freed_memory
from .prompts import r2_for
from .saliency import SaliencyRecord
from .statistics import FORMS, contrastive_saliency

SELECTION_METHODS = ("fia", "conceptprune")
FUSION_MODES = ("concept-agnostic", "union")
log = logging.getLogger("FIA")


def check_ratio(name: str, value: float, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        bound = "0 <= " if allow_zero else "0 < "
        raise FIAInputError(f"{name}: {value} is out of range; it is a fraction, {bound}{name} <= 1 (e.g. 0.01 = 1%).")


def select_sensitive_neurons(
    record: SaliencyRecord,
    *,
    r1: float = paper.GENERAL.r1,
    r2: float = 0.0,
    r2_overrides: dict[str, float] | None = None,
    method: str = "fia",
    device: torch.device | str | None = None,
    compatibility: str | selection.SelectionRules = "fixed",
) -> ConceptMasks:
    """Eq.3-6 for every concept. r2 = 0 uses the preset's paper value (Table 8).

    compatibility "reference" reproduces the reference code's selection bit for bit, pitfalls
    included (selection.SelectionRules); "fixed" (default) departs from it where it is wrong.

    Runs layer by layer on `device` (default: the GPU when there is one); masks come back to
    the CPU. CPU results are bit-identical from run to run.
    """
    check_ratio("r1", r1)
    check_ratio("r2", r2, allow_zero=True)
    if method not in SELECTION_METHODS:
        raise FIAInputError(f"method: '{method}' is unknown; use one of {', '.join(SELECTION_METHODS)}.")
    rules = _rules(compatibility)
    if method == "conceptprune" and record.form != "reference":
        raise FIAInputError("method: ConceptPrune selection needs a saliency run with saliency_form = reference.")
    overrides = {k.lower(): v for k, v in (r2_overrides or {}).items()}
    steps = record.recorded_steps
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    selected: dict[str, dict[str, torch.Tensor]] = {}
    settings: dict[str, dict] = {}
    for concept in record.concepts:
        ratio = r2_for(concept, record.preset, r2, overrides)
        base = record.base_moments[record.concept_base[concept]]
        per_layer = {}
        for layer in record.layers:
            abs_weight = record.abs_weights[layer.key].to(device)  # model dtype; fp32 one block at a time
            mean_c = record.concept_moments[concept][layer.key].mean.to(device)
            mean_b, std_b = base[layer.key].mean.to(device), base[layer.key].std.to(device)
            if method == "fia":
                step_saliency = _step_saliency(abs_weight, mean_c, mean_b, std_b, FORMS[record.form].per_weight)
                shape = tuple(abs_weight.shape)
                sensitivity = selection.time_integrated_sensitivity(step_saliency, shape, steps, r1)
                rows, cols = selection.spatial_selection(sensitivity, ratio, shape, rules)
            else:
                chosen = selection.conceptprune_selection(abs_weight.to(device, torch.float32), mean_c, mean_b, ratio)
                rows, cols = chosen.nonzero(as_tuple=True)
            flat = rows * layer.in_features + cols + layer.neuron_columns.start
            per_layer[layer.key] = compact_indices(flat, layer.out_features * layer.in_features).cpu()
            release_freed_memory()
        selected[concept] = per_layer
        settings[concept] = {"r1": r1, "r2": ratio, "method": method, "form": record.form, "preset": record.preset,
                             "compatibility": _rules_name(rules)}
    return ConceptMasks(
        record.architecture, list(record.layers), selected, settings, record.fingerprint,
        source={"saliency": record.settings, "recorded_steps": steps},
    )


def _rules(compatibility: str | selection.SelectionRules) -> selection.SelectionRules:
    """A named compatibility setting, or single switches (SelectionRules) for ablations."""
    if isinstance(compatibility, selection.SelectionRules):
        return compatibility
    if compatibility not in selection.COMPATIBILITY:
        raise FIAInputError(
            f"compatibility: '{compatibility}' is unknown; use one of {', '.join(selection.COMPATIBILITY)}."
        )
    return selection.COMPATIBILITY[compatibility]


def _rules_name(rules: selection.SelectionRules) -> str | dict:
    """How the mask file states the rules: a setting's name, or the switches themselves."""
    names = [name for name, known in selection.COMPATIBILITY.items() if known == rules]
    return names[0] if names else dataclasses.asdict(rules)


def _step_saliency(abs_weight, mean_c, mean_b, std_b, per_weight: bool) -> selection.StepSaliency:
    """Eq.2 for one step and a block of rows, recomputed on demand instead of stored for all steps.

    Per-column statistics ([T, C_in]) broadcast over rows; per-weight ones ([T, C_out, C_in]) are sliced.
    """

    def step_saliency(t: int, rows: slice) -> torch.Tensor:
        def moment(m: torch.Tensor) -> torch.Tensor:
            return m[t, rows] if per_weight else m[t]

        return contrastive_saliency(abs_weight[rows].float(), moment(mean_c), moment(mean_b), moment(std_b))

    return step_saliency


def merge_concept_masks(inputs: list[ConceptMasks]) -> ConceptMasks:
    """Puts masks from separate saliency runs (e.g. objects and artists) into one set."""
    first = inputs[0]
    merged = ConceptMasks(first.architecture, list(first.layers), {}, {}, first.fingerprint, dict(first.source))
    for number, masks in enumerate(inputs, start=1):
        what = f"concept_masks input {number}"
        check_layers_match(what, masks.architecture, masks.layers, first.architecture, first.layers, "first input")
        if {layer.key for layer in masks.layers} != {layer.key for layer in first.layers}:
            raise FIAInputError(f"{what}: covers other layers than the first input; compute both on one model.")
        warn_if_other_weights(what, masks.fingerprint, first.fingerprint)
        for concept in masks.concepts:
            if concept.lower() in {c.lower() for c in merged.selected}:
                raise FIAInputError(
                    f"{what}: concept '{concept}' is already in another input. Remove it from one of the runs."
                )
            merged.selected[concept] = masks.selected[concept]
            merged.settings[concept] = masks.settings[concept]
    return merged


def fuse_masks(
    inputs: list[ConceptMasks],
    *,
    alpha: float = paper.GENERAL.alpha,
    mode: str = "concept-agnostic",
    compatibility: str | selection.SelectionRules = "fixed",
) -> UnlearningMask:
    """Eq.7-8 over all concepts of all inputs; compatibility as in select_sensitive_neurons."""
    check_ratio("alpha", alpha)
    rules = _rules(compatibility)
    if mode not in FUSION_MODES:
        raise FIAInputError(f"fusion: '{mode}' is unknown; use one of {', '.join(FUSION_MODES)}.")
    if not inputs:
        raise FIAInputError("concept_masks: connect at least one FIA_CONCEPT_MASKS input.")
    masks = merge_concept_masks(inputs)
    concepts = masks.concepts
    threshold = fusion.agnostic_threshold(alpha, len(concepts), rules) if mode == "concept-agnostic" else None
    pruned, kept = {}, {}
    for layer in masks.layers:
        counts = fusion.concept_counts([masks.selected[c][layer.key] for c in concepts], layer.out_features * layer.in_features)
        pruned[layer.key], kept[layer.key] = fusion.fuse_counts(counts, threshold)
        del counts
        release_freed_memory()
    mask = UnlearningMask(
        masks.architecture, list(masks.layers), pruned, kept, concepts,
        {"alpha": alpha, "fusion": mode, "agnostic_threshold": threshold, "compatibility": _rules_name(rules),
         "per_concept": masks.settings,
         "saliency": masks.source.get("saliency", {})},
        masks.fingerprint,
    )
    log.info("FIA: fused %d concepts: %d weights pruned (%.4f%%), %d concept-agnostic kept",
             len(concepts), mask.pruned_count, 100 * mask.sparsity, sum(int(k.numel()) for k in kept.values()))
    return mask
