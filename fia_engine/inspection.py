"""What a mask removes, as numbers per layer and as a text summary (FIA Mask Inspector).

Layers stay in execution order and are labelled by block and transformer depth, so a chart
reads like the UNet from input to output. Counts are shown next to the share of the layer's
weights: layers differ in size by 16x in SD1.5, so counts alone hide where the mask bites.
"""

from __future__ import annotations

from dataclasses import dataclass

from .layers import FFLayer, block_label
from .masks import ConceptMasks, UnlearningMask

PRUNED = "pruned"
KEPT = "kept concept-agnostic"


@dataclass(frozen=True)
class LayerCounts:
    """One bar: the weights of one layer in each series (a concept, or pruned / kept)."""

    label: str
    group: str
    total: int
    counts: tuple[int, ...]

    def share(self, count: int) -> float:
        return 100.0 * count / max(1, self.total)

    def note(self, series: tuple[int, ...]) -> str:
        count = sum(self.counts[i] for i in series)
        return f"{count:,} ({self.share(count):.2f}%)"


@dataclass(frozen=True)
class MaskChart:
    """Everything a chart of one mask needs; the series of a layer are stacked into one bar."""

    title: str
    subtitle: str
    series: tuple[str, ...]
    layers: tuple[LayerCounts, ...]
    noted: tuple[int, ...]  # series whose summed count is written beside each bar
    note_header: str


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def layer_group(layer: FFLayer) -> str:
    """The block family a layer belongs to ('input_blocks', 'middle_block', ...), for separators."""
    return layer.module_path.split(".")[0]


def _layer_counts(layer: FFLayer, counts: list[int]) -> LayerCounts:
    return LayerCounts(block_label(layer), layer_group(layer), layer.out_features * layer.in_features, tuple(counts))


def fused_mask_chart(mask: UnlearningMask) -> MaskChart:
    """Pruned and kept concept-agnostic weights per layer of a fused mask (together: all that was selected)."""
    layers = tuple(
        _layer_counts(layer, [int(mask.pruned[layer.key].numel()), int(mask.kept_agnostic[layer.key].numel())])
        for layer in mask.layers
    )
    return MaskChart(
        title=f"FIA mask: {_plural(len(mask.concepts), 'concept')} forgotten",
        subtitle=f"{', '.join(mask.concepts)}  |  {mask.pruned_count:,} weights pruned "
                 f"({100 * mask.sparsity:.4f}% of {mask.total_weights:,})",
        series=(PRUNED, KEPT),
        layers=layers,
        noted=(0,),
        note_header=PRUNED,
    )


def concept_masks_chart(masks: ConceptMasks) -> MaskChart:
    """Selected weights per layer for every concept, stacked (before fusion)."""
    layers = tuple(
        _layer_counts(layer, [int(masks.selected[c][layer.key].numel()) for c in masks.concepts])
        for layer in masks.layers
    )
    total = sum(layer.total for layer in layers)
    return MaskChart(
        title=f"FIA concept masks: {_plural(len(masks.concepts), 'concept')} (before fusion)",
        subtitle="  |  ".join(f"{c}: {masks.count(c):,} ({100 * masks.count(c) / max(1, total):.4f}%)"
                              for c in masks.concepts),
        series=tuple(masks.concepts),
        layers=layers,
        noted=tuple(range(len(masks.concepts))),
        note_header="selected, all concepts",
    )


def _settings_line(settings: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in settings.items() if not isinstance(value, dict))


def _saliency_lines(saliency: dict) -> list[str]:
    """The sampling run the masks came from (the record's settings), when the object carries them."""
    if not saliency:
        return []
    sampling = saliency.get("sampling", {})
    lines = [f"Saliency: {_settings_line(saliency)}"]
    if sampling:
        lines.append(f"Sampling: {_settings_line(sampling)}")
    return lines


def _table(chart: MaskChart) -> list[str]:
    width = max(len(layer.label) for layer in chart.layers)
    columns = [max(len(name), 14) for name in chart.series]
    head = "  ".join(f"{name:>{w}}" for name, w in zip(chart.series, columns))
    lines = ["Per layer, in execution order (count and share of the layer's weights):", f"  {'layer':<{width}}  {head}"]
    for layer in chart.layers:
        cells = "  ".join(f"{f'{n:,} ({layer.share(n):.2f}%)':>{w}}" for n, w in zip(layer.counts, columns))
        lines.append(f"  {layer.label:<{width}}  {cells}")
    return lines


def fused_mask_summary(mask: UnlearningMask) -> str:
    hyper = mask.hyperparameters
    kept = sum(int(k.numel()) for k in mask.kept_agnostic.values())
    lines = [
        f"FIA mask ({mask.architecture}, {len(mask.layers)} feed-forward layers, {mask.total_weights:,} weights)",
        f"Concepts ({len(mask.concepts)}): {', '.join(mask.concepts)}",
        f"Pruned: {mask.pruned_count:,} weights, sparsity {100 * mask.sparsity:.4f}%",
        f"Kept concept-agnostic: {kept:,} weights",
        f"Fusion: {_settings_line(hyper)}",
    ]
    for concept, settings in hyper.get("per_concept", {}).items():
        lines.append(f"  {concept}: {_settings_line(settings)}")
    lines += _saliency_lines(hyper.get("saliency", {}))
    lines.append(f"Source model fingerprint: {mask.fingerprint or 'unknown'}")
    return "\n".join(lines + _table(fused_mask_chart(mask)))


def concept_masks_summary(masks: ConceptMasks) -> str:
    chart = concept_masks_chart(masks)
    lines = [
        f"FIA concept masks ({masks.architecture}, {len(masks.layers)} feed-forward layers, "
        f"{sum(layer.total for layer in chart.layers):,} weights), before fusion",
        f"Concepts ({len(masks.concepts)}): {', '.join(masks.concepts)}",
    ]
    for concept in masks.concepts:
        lines.append(f"  {concept}: {masks.count(concept):,} selected; {_settings_line(masks.settings[concept])}")
    lines += _saliency_lines(masks.source.get("saliency", {}))
    lines.append(f"Source model fingerprint: {masks.fingerprint or 'unknown'}")
    return "\n".join(lines + _table(chart))
