"""What a mask removes, as numbers per layer and as a text summary (FIA Mask Inspector).

Layers stay in execution order and are labelled by block and transformer depth, so a chart
reads like the UNet from input to output. Counts are shown next to the share of the layer's
weights: layers differ in size by 16x in SD1.5, so counts alone hide where the mask bites.

A mask may come from a stranger's file, so what is shown is bounded whatever it claims: at most
`MAX_ROWS` bars (consecutive layers merged beyond that), `MAX_SERIES` series (the smallest
concepts merged), `MAX_LISTED` names per list, every name and setting cut to a few dozen
characters. The chart and the text then cost the same for any mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .architectures import PrunableLayer, block_label, layers_named
from .mask_io import settings_json
from .masks import ConceptMasks, UnlearningMask, check_has_layers

PRUNED = "pruned"
KEPT = "kept concept-agnostic"
MAX_ROWS = 80  # Flux, the largest family, has 76 FF layers
MAX_SERIES = 12  # the chart's palette
MAX_LISTED = 20
NAME_CHARS = 40


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


def short(text: object, chars: int = NAME_CHARS) -> str:
    """`text` cut to `chars` characters (an ellipsis marks the cut)."""
    text = str(text)
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


def listed(names: list[str], limit: int = MAX_LISTED) -> str:
    """The first `limit` names, shortened, and how many more there are."""
    shown = ", ".join(short(name) for name in names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit:,} more"


def _merged_rows(layers: tuple[LayerCounts, ...]) -> tuple[LayerCounts, ...]:
    """At most MAX_ROWS bars: consecutive layers summed into one bar each beyond that."""
    if len(layers) <= MAX_ROWS:
        return layers
    size = -(-len(layers) // MAX_ROWS)
    rows = []
    for start in range(0, len(layers), size):
        part = layers[start:start + size]
        label = f"{short(part[0].label, 24)} +{len(part) - 1}" if len(part) > 1 else part[0].label
        counts = tuple(sum(column) for column in zip(*(layer.counts for layer in part)))
        rows.append(LayerCounts(label, part[0].group, sum(layer.total for layer in part), counts))
    return tuple(rows)


def _merged_series(series: tuple[str, ...], layers: tuple[LayerCounts, ...]) -> tuple[tuple[str, ...], tuple[LayerCounts, ...]]:
    """At most MAX_SERIES series: the concepts with the fewest weights summed into one."""
    if len(series) <= MAX_SERIES:
        return series, layers
    totals = [sum(layer.counts[i] for layer in layers) for i in range(len(series))]
    kept = sorted(sorted(range(len(series)), key=lambda i: -totals[i])[: MAX_SERIES - 1])
    rest = sorted(set(range(len(series))) - set(kept))
    names = (*(series[i] for i in kept), f"{len(rest):,} other concepts")
    merged = tuple(LayerCounts(layer.label, layer.group, layer.total,
                               (*(layer.counts[i] for i in kept), sum(layer.counts[i] for i in rest)))
                   for layer in layers)
    return names, merged


def _bounded(chart: MaskChart) -> MaskChart:
    series, layers = _merged_series(tuple(short(name) for name in chart.series), chart.layers)
    noted = chart.noted if len(series) == len(chart.series) else tuple(range(len(series)))
    return MaskChart(short(chart.title, 120), short(chart.subtitle, 600), series, _merged_rows(layers), noted,
                     chart.note_header)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def layer_group(layer: PrunableLayer) -> str:
    """The block family a layer belongs to ('input_blocks', 'middle_block', ...), for separators."""
    return layer.module_path.split(".")[0]


def _layer_counts(layer: PrunableLayer, counts: list[int]) -> LayerCounts:
    return LayerCounts(short(block_label(layer)), short(layer_group(layer)), layer.out_features * layer.in_features,
                       tuple(counts))


def fused_mask_chart(mask: UnlearningMask) -> MaskChart:
    """Pruned and kept concept-agnostic weights per layer of a fused mask (together: all that was selected)."""
    layers = tuple(
        _layer_counts(layer, [int(mask.pruned[layer.key].numel()), int(mask.kept_agnostic[layer.key].numel())])
        for layer in mask.layers
    )
    return _bounded(MaskChart(
        title=f"FIA mask: {_plural(len(mask.concepts), 'concept')} forgotten",
        subtitle=f"{listed(mask.concepts)}  |  {mask.pruned_count:,} weights pruned "
                 f"({100 * mask.sparsity:.4f}% of {mask.total_weights:,})",
        series=(PRUNED, KEPT),
        layers=layers,
        noted=(0,),
        note_header=PRUNED,
    ))


def concept_masks_chart(masks: ConceptMasks) -> MaskChart:
    """Selected weights per layer for every concept, stacked (before fusion)."""
    layers = tuple(
        _layer_counts(layer, [int(masks.selected[c][layer.key].numel()) for c in masks.concepts])
        for layer in masks.layers
    )
    total = sum(layer.total for layer in layers)
    subtitle = "  |  ".join(f"{short(c)}: {masks.count(c):,} ({100 * masks.count(c) / max(1, total):.4f}%)"
                            for c in masks.concepts[:MAX_LISTED])
    more = len(masks.concepts) - MAX_LISTED
    return _bounded(MaskChart(
        title=f"FIA concept masks: {_plural(len(masks.concepts), 'concept')} (before fusion)",
        subtitle=subtitle + (f"  |  and {more:,} more" if more > 0 else ""),
        series=tuple(masks.concepts),
        layers=layers,
        noted=tuple(range(len(masks.concepts))),
        note_header="selected, all concepts",
    ))


def _settings_line(settings: dict) -> str:
    items = [(key, value) for key, value in settings.items() if not isinstance(value, dict)]
    line = ", ".join(f"{short(key)} {short(value)}" for key, value in items[:MAX_LISTED])
    return line + (f", and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _saliency_lines(saliency: dict) -> list[str]:
    """The sampling run the masks came from (the record's settings), when the object carries them."""
    if not saliency:
        return []
    sampling = saliency.get("sampling") if isinstance(saliency.get("sampling"), dict) else {}
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
    check_has_layers("mask", mask.layers)
    hyper = settings_json(mask.settings)  # as its file states them: a loaded mask's may be anything bounded
    kept = sum(int(k.numel()) for k in mask.kept_agnostic.values())
    lines = [
        f"FIA mask ({mask.architecture}, {layers_named(mask.layers[0].kind, len(mask.layers))}, "
        f"{mask.total_weights:,} weights)",
        f"Concepts ({len(mask.concepts)}): {listed(mask.concepts)}",
        f"Pruned: {mask.pruned_count:,} weights, sparsity {100 * mask.sparsity:.4f}%",
        f"Kept concept-agnostic: {kept:,} weights",
        f"Fusion: {_settings_line(hyper)}",
    ]
    keep = hyper.get("keep")
    if isinstance(keep, dict):
        lines.insert(4, f"Kept concepts ({len(keep.get('concepts', []))}): {listed(keep.get('concepts', []))}; "
                        f"keeping them spared {keep.get('weights_spared', 0):,} weights")
    per_concept = list(hyper.get("per_concept", {}).items())
    lines += [f"  {short(concept)}: {_settings_line(settings)}" for concept, settings in per_concept[:MAX_LISTED]]
    if len(per_concept) > MAX_LISTED:
        lines.append(f"  and {len(per_concept) - MAX_LISTED:,} more concepts")
    lines += _saliency_lines(hyper.get("saliency", {}))
    lines.append(f"Source model fingerprint: {short(mask.fingerprint or 'unknown', 64)}")
    return "\n".join(lines + _table(fused_mask_chart(mask)))


def concept_masks_summary(masks: ConceptMasks) -> str:
    chart = concept_masks_chart(masks)
    lines = [
        f"FIA concept masks ({masks.architecture}, {len(masks.layers)} feed-forward layers, "
        f"{sum(layer.total for layer in chart.layers):,} weights), before fusion",
        f"Concepts ({len(masks.concepts)}): {listed(masks.concepts)}",
    ]
    for concept in masks.concepts[:MAX_LISTED]:
        lines.append(f"  {short(concept)}: {masks.count(concept):,} selected; "
                     f"{_settings_line(asdict(masks.settings[concept]))}")
    if len(masks.concepts) > MAX_LISTED:
        lines.append(f"  and {len(masks.concepts) - MAX_LISTED:,} more concepts")
    lines += _saliency_lines(asdict(masks.recording) if masks.recording is not None else {})
    lines.append(f"Source model fingerprint: {short(masks.fingerprint or 'unknown', 64)}")
    return "\n".join(lines + _table(chart))
