"""FIA Mask Inspector: the numbers, the text and the drawn chart agree with the mask (no sampling needed)."""

from __future__ import annotations

import folder_paths
import pytest
import torch

CONCEPTS = ("cat", "dog", "bird")


def base_count(n: int, layer) -> int:
    return (n + 4) * layer.out_features * layer.in_features // 1000


@pytest.fixture()
def concept_masks(engine, tiny_model):
    """Known selections: in layer n concept k takes the first (k+1) * base(n) weights, base(n) ~ (n+4) per mille."""
    _, layers = engine.layers_of_patcher(tiny_model)
    selected = {
        concept: {layer.key: torch.arange((k + 1) * base_count(n, layer)) for n, layer in enumerate(layers)}
        for k, concept in enumerate(CONCEPTS)
    }
    settings = {c: engine.masks.SelectionSettings(0.05, 0.01, "fia", "reference", "objects", "fixed") for c in CONCEPTS}
    recording = engine.record.RecordingProvenance(engine.SamplingSettings(steps=50, recorded_steps=10), "reference",
                                                  "objects", 0, 1244, 0)
    return engine.ConceptMasks("SD1.x", layers, selected, settings, "00ff00ff00ff00ff", recording=recording)


@pytest.fixture()
def mask(engine, concept_masks):
    return engine.fuse_masks([concept_masks], alpha=0.6)


@pytest.fixture()
def inspector(pack, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "temp_directory", str(tmp_path))  # where the node's preview PNG goes
    return pack.nodes.FIAMaskInspector


def bar_lengths(image: torch.Tensor, colour: tuple[int, int, int]) -> list[int]:
    """Pixel length of each horizontal bar of one colour, top to bottom (a bar = consecutive rows with it)."""
    pixels = (image[0] * 255).round().to(torch.int16)
    hits = (pixels - torch.tensor(colour, dtype=torch.int16)).abs().amax(dim=-1) <= 2
    per_row = hits.sum(dim=1).tolist()
    lengths, current = [], 0
    for count in [*per_row, 0]:
        if count > 20:  # legend swatches are 15 px wide: not bars
            current = max(current, count)
        elif current:
            lengths.append(current)
            current = 0
    return lengths


def test_needs_a_mask_or_concept_masks(engine, inspector):
    with pytest.raises(engine.FIAInputError, match="connect a mask"):
        inspector.execute()


def test_fused_chart_counts_are_the_masks_in_execution_order(engine, pack, mask, concept_masks):
    from fia_pack.fia_engine.core.inspection import concept_masks_chart, fused_mask_chart

    chart = fused_mask_chart(mask)
    assert [layer.label for layer in chart.layers] == [engine.architectures.block_label(layer) for layer in mask.layers]
    assert chart.layers[0].label == "input_blocks.1 tb0" and chart.layers[-1].label.startswith("output_blocks")
    # threshold max(2, ceil(0.6*3)) = 2: weights of two or three concepts are kept, bird's tail alone is pruned
    for n, (bar, layer) in enumerate(zip(chart.layers, mask.layers)):
        base = base_count(n, layer)
        assert bar.counts == (base, 2 * base) == (mask.pruned[layer.key].numel(), mask.kept_agnostic[layer.key].numel())
        assert bar.total == layer.out_features * layer.in_features
    stacked = concept_masks_chart(concept_masks)
    assert stacked.series == CONCEPTS
    assert stacked.layers[2].counts == tuple(k * base_count(2, mask.layers[2]) for k in (1, 2, 3))


def test_summary_names_concepts_counts_sparsity_settings_and_fingerprint(pack, inspector, mask, tmp_path):
    _, summary = inspector.execute(mask=mask).args
    pruned = mask.pruned_count
    assert "Concepts (3): cat, dog, bird" in summary
    assert f"Pruned: {pruned:,} weights, sparsity {100 * mask.sparsity:.4f}%" in summary
    assert f"Kept concept-agnostic: {2 * pruned:,}" in summary
    assert "alpha 0.6" in summary and "agnostic_threshold 2" in summary and "r2 0.01" in summary
    assert "recorded_steps 10" in summary and "00ff00ff00ff00ff" in summary
    assert summary.count(" tb0 ") == len(mask.layers)
    # a mask read back from its file describes itself the same way
    path = pack.fia_engine.save_mask(mask, tmp_path / "m.safetensors")
    assert inspector.execute(mask=pack.fia_engine.load_mask(path)).args[1] == summary


def test_chart_bars_are_proportional_to_the_pruned_share(inspector, mask, tmp_path):
    from fia_pack.fia_engine.core.inspection import PRUNED
    from fia_pack.nodes.chart import SERIES_COLOURS

    output = inspector.execute(mask=mask)
    image = output.args[0]
    assert image.dtype == torch.float32 and image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0 and image.shape[1] > 300
    shares = [100 * mask.pruned[layer.key].numel() / (layer.out_features * layer.in_features) for layer in mask.layers]
    lengths = bar_lengths(image, SERIES_COLOURS[PRUNED])
    assert len(lengths) == len(shares)
    pixels_per_percent = max(lengths) / max(shares)  # measured on the longest bar, where rounding matters least
    for length, share in zip(lengths, shares):
        assert length == pytest.approx(share * pixels_per_percent, abs=2)
    saved = output.ui.as_dict()["images"][0]
    assert (tmp_path / saved["subfolder"] / saved["filename"]).is_file()  # shown on the node itself


def test_concept_chart_stacks_one_colour_per_concept_and_both_inputs_stack(inspector, mask, concept_masks):
    from fia_pack.nodes.chart import PALETTE

    only_concepts = inspector.execute(concept_masks=concept_masks).args[0]
    first = bar_lengths(only_concepts, PALETTE[0])
    for k in range(len(CONCEPTS)):  # concept k selects (k+1)x as much as concept 0 in every layer
        lengths = bar_lengths(only_concepts, PALETTE[k])
        assert len(lengths) == len(concept_masks.layers)
        assert all(a == pytest.approx((k + 1) * b, abs=1 + 2 * (k + 1)) for a, b in zip(lengths, first))
    both, summary = inspector.execute(mask=mask, concept_masks=concept_masks).args
    assert both.shape[1] > only_concepts.shape[1] and both.shape[2] == only_concepts.shape[2]
    assert "FIA mask (" in summary and "FIA concept masks (" in summary


def test_inspector_cost_is_bounded_whatever_the_mask_claims(engine, inspector, concept_masks):
    """300 long-named concepts with huge settings and a 500-layer mask: a bounded image and text,
    the smallest concepts and neighbouring layers merged, totals kept."""
    from fia_pack.fia_engine.core.inspection import concept_masks_chart, fused_mask_chart

    names = [f"{'a very long concept name ' * 20}{i}" for i in range(300)]
    big = engine.ConceptMasks("SD1.x", concept_masks.layers, {c: concept_masks.selected["cat"] for c in names},
                              {c: engine.masks.SelectionSettings(0.05, 0.01, "y" * 5000, "reference", "x" * 500, "fixed")
                               for c in names}, "0" * 16)
    image, summary = inspector.execute(concept_masks=big).args
    assert image.shape[2] == 1000 and image.shape[1] < 2400
    assert len(summary) < 12_000 and "and 280 more" in summary
    chart = concept_masks_chart(big)
    assert len(chart.series) == 12 and chart.series[-1] == "289 other concepts"
    assert sum(map(sum, (layer.counts for layer in chart.layers))) == 300 * concept_masks.count("cat")
    layers = [engine.PrunableLayer(f"diffusion_model.input_blocks.{i}.1.transformer_blocks.0.ff.net.2.weight",
                             f"input_blocks.{i}.1.transformer_blocks.0.ff.net.2", 8, 32) for i in range(500)]
    pruned = {layer.key: torch.arange(i % 7) for i, layer in enumerate(layers)}
    mask = engine.UnlearningMask("SD1.x", layers, pruned, {k: v[:0] for k, v in pruned.items()}, ["cat"], engine.masks.StatedSettings({}), "")
    rows = fused_mask_chart(mask).layers
    assert len(rows) <= 80 and sum(row.counts[0] for row in rows) == mask.pruned_count
    assert inspector.execute(mask=mask).args[0].shape[1] < 2400
