"""Each equation against small cases computed by hand (or by the definition, loop by loop)."""

import math

import pytest
import torch


def test_column_energy_normalises_rows_then_sums_squares(engine):
    st = engine.statistics
    x = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])  # rows -> [0.6, 0.8], [0, 1]
    energy = st.column_energy(x)
    assert torch.allclose(energy, torch.tensor([[0.36, 0.64 + 1.0]]))
    assert torch.allclose(st.reference_unit_saliency(energy), torch.tensor([[0.6, math.sqrt(1.64)]]))


def test_exact_unit_saliency_matches_eq1_by_definition(engine):
    st = engine.statistics
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 7, 5, generator=gen)
    weight = torch.randn(4, 5, generator=gen)
    products, out_energy = st.output_input_products(x, weight)
    unit = st.exact_unit_saliency(products, out_energy)[0]
    xn = st.normalize_rows(x)[0]
    y = xn @ weight.t()
    for i in range(4):
        for j in range(5):
            cos = torch.dot(xn[:, j], y[:, i]) / (xn[:, j].norm() * y[:, i].norm())
            expected = xn[:, j].norm() * cos.abs()  # U / |W_ij| = ||X_j|| |cos(X_j, Y_i)|
            assert unit[i, j].item() == pytest.approx(expected.item(), rel=1e-5)


def test_contrastive_saliency_eq2(engine):
    abs_w = torch.tensor([[2.0, 1.0], [0.5, 3.0]])
    s = engine.statistics.contrastive_saliency(
        abs_w, torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.0])
    )
    assert torch.equal(s, torch.tensor([[3.0, 0.0], [0.75, 0.0]]))


def test_moments_use_population_std(engine):
    acc = engine.statistics.MomentAccumulator(2, (3,), torch.device("cpu"), with_std=True)
    values = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 7.0], [5.0, 2.0, 2.0]])
    acc.add(0, values[:2])
    acc.add(0, values[2:])
    acc.add(1, values)
    moments = acc.finalize()
    assert moments.count == 3
    assert torch.allclose(moments.mean[0], values.mean(0))
    assert torch.allclose(moments.std[1], values.std(0, unbiased=False))


def test_incomplete_recording_is_refused(engine):
    acc = engine.statistics.MomentAccumulator(2, (3,), torch.device("cpu"), with_std=False)
    acc.add(0, torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="incomplete"):
        acc.finalize()


def test_eq3_by_hand(engine):
    sel = engine.selection
    s1 = torch.tensor([[4.0, 0.0], [2.0, 1.0]])
    s2 = torch.tensor([[0.0, 0.0], [2.0, 3.0]])
    # r1 = 0.5 -> k = 2: tau_1 = 2, tau_2 = 2; S > tau marks (0,0) at t=1 and (1,1) at t=2
    a = sel.time_integrated_sensitivity(lambda t, rows: (s1, s2)[t][rows], (2, 2), 2, r1=0.5)(slice(None))
    mean = (s1 + s2) / 2  # [[2, 0], [2, 2]], max 2
    hits = torch.tensor([[0.5, 0.0], [0.0, 0.5]])
    assert torch.allclose(a, 0.5 * mean / 2 + 0.5 * hits)


def test_eq3_blockwise_equals_whole_layer(engine):
    """Eq.3 computed a few rows at a time equals the formula on whole matrices."""
    sel = engine.selection
    gen = torch.Generator().manual_seed(3)
    steps = [torch.randn(13, 11, generator=gen).clamp_min(0) for _ in range(4)]
    sensitivity = sel.time_integrated_sensitivity(lambda t, rows: steps[t][rows], (13, 11), 4, r1=0.1, block_entries=40)
    blocks = list(sel.row_blocks(13, 11, block_entries=40))
    assert len(blocks) == 5
    a = torch.cat([sensitivity(b) for b in blocks])
    assert a.shape == (13, 11)
    mean = torch.stack(steps).mean(0)
    k = sel.count_for(0.1, 13 * 11)
    hits = torch.stack([s > s.flatten().sort().values[-k] for s in steps]).float().mean(0)
    assert torch.allclose(a, 0.5 * mean / mean.max() + 0.5 * hits)


def test_eq3_indicator_ignores_zero_saliency(engine):
    """Fewer positive entries than r1 asks for: tau = 0 must not mark every weight."""
    s = torch.zeros(4, 4)
    s[1, 2] = 0.3
    sel = engine.selection
    hits = sel.sensitive(s, sel.kth_largest(s, sel.count_for(0.5, s.numel())))
    assert hits.sum() == 1 and hits[1, 2]


@pytest.mark.parametrize("block_entries", [64, 1 << 20])
def test_kth_largest_matches_sorting(engine, block_entries):
    """Radix select over blocks (one or many): ties, negatives, zeros of both signs, tiny values."""
    sel = engine.selection
    values = torch.randn(37, 23, generator=torch.Generator().manual_seed(1)).round(decimals=1)  # with ties
    values[0, :5] = torch.tensor([-0.0, 0.0, 1e-39, -1e-39, 3e38])
    for k in (1, 2, 9, 500, values.numel() - 1, values.numel()):
        assert sel.kth_largest(values, k, block_entries=block_entries) == values.reshape(-1).sort().values[-k]
    assert torch.equal(sel.kth_largest(values, 3, dim=1), values.sort(dim=1).values[:, -3:-2])


@pytest.mark.parametrize("block_entries", [4, 1 << 20])
def test_eq4_6_row_and_layer_intersection(engine, block_entries):
    a = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.5, 0.4, 0.3, 0.0], [0.2, 0.0, 0.0, 0.0]])
    # r2 = 0.25: one per row (cols 4 * .25), top 3 of the 12 in the layer (0.9, 0.5, 0.4)
    rows, cols = engine.selection.spatial_selection(lambda b: a[b], 0.25, a.shape, block_entries=block_entries)
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 0]


def test_eq4_6_never_selects_zero_scores(engine):
    a = torch.zeros(3, 4)
    a[0, 1] = 0.2
    rows, cols = engine.selection.spatial_selection(lambda b: a[b], 0.5, a.shape)  # top-k alone would return 2 per row
    assert rows.tolist() == [0] and cols.tolist() == [1]


def test_counts_truncate_like_the_reference(engine):
    sel = engine.selection
    assert sel.count_for(0.007, 1280) == 8  # 8.96: the reference's int(), not round()
    assert sel.count_for(0.001, 100) == 1 and sel.count_for(1.0, 7) == 7


def test_reference_rules_pad_with_zeros_and_break_ties_by_topk(engine):
    """The reference's top-k returns k entries even when fewer are positive; the fixed rules never do."""
    sel = engine.selection
    a = torch.zeros(3, 4)
    a[0, 1] = 0.2
    rows, cols = sel.spatial_selection(lambda b: a[b], 0.5, a.shape, sel.REFERENCE_RULES)
    assert len(rows) > 1 and (a[rows, cols] == 0).sum() == len(rows) - 1  # zero-saliency weights picked
    rows, cols = sel.spatial_selection(lambda b: a[b], 0.5, a.shape, sel.FIXED_RULES)
    assert rows.tolist() == [0] and cols.tolist() == [1]
    tied = torch.tensor([[0.5, 0.5, 0.1, 0.0]])
    assert len(sel.spatial_selection(lambda b: tied[b], 0.25, tied.shape, sel.FIXED_RULES)[0]) == 2  # both ties kept
    assert len(sel.spatial_selection(lambda b: tied[b], 0.25, tied.shape, sel.REFERENCE_RULES)[0]) == 1


def test_eq8_threshold_and_small_c_rule(engine):
    fusion = engine.fusion
    assert fusion.agnostic_threshold(0.6, 1) == 2  # C = 1: nothing is agnostic, all of Q is pruned
    assert fusion.agnostic_threshold(0.6, 2) == 2
    assert fusion.agnostic_threshold(0.6, 5) == 3
    assert fusion.agnostic_threshold(0.28, 25) == 7  # 0.28 * 25 = 7.000000000000001 in floats
    assert fusion.agnostic_threshold(0.8, 5) == 4
    assert fusion.agnostic_threshold(0.1, 5) == 2  # never 1: a weight of one concept is concept-specific
    reference = engine.selection.REFERENCE_RULES
    assert fusion.agnostic_threshold(0.6, 1, reference) == 1  # the reference: one concept prunes nothing
    assert fusion.agnostic_threshold(0.28, 25, reference) == 8  # and its float overshoot


def test_eq7_8_counts_and_fusion(engine):
    fusion = engine.fusion
    masks = [torch.tensor([0, 1, 2]), torch.tensor([1, 2]), torch.tensor([2, 5])]
    counts = fusion.concept_counts(masks, 6)
    assert counts.tolist() == [1, 2, 3, 0, 0, 1]
    pruned, kept = fusion.fuse_counts(counts, threshold=2)
    assert pruned.tolist() == [0, 5] and kept.tolist() == [1, 2]
    pruned, kept = fusion.fuse_counts(counts, threshold=None)
    assert pruned.tolist() == [0, 1, 2, 5] and kept.numel() == 0


def test_single_concept_prunes_its_whole_selection(engine):
    fusion = engine.fusion
    counts = fusion.concept_counts([torch.tensor([3, 4])], 6)
    pruned, kept = fusion.fuse_counts(counts, fusion.agnostic_threshold(0.6, 1))
    assert pruned.tolist() == [3, 4] and kept.numel() == 0


def test_conceptprune_rule(engine):
    abs_w = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    concept = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.1]])
    base = torch.tensor([[2.0, 0.5, 0.5], [0.5, 0.5, 0.5]])
    q = engine.selection.conceptprune_selection(abs_w, concept, base, skill_ratio=0.34)
    # step 0: row tops are col 2 and col 0; col 0 loses to base -> only (0, 2)
    # step 1: scores [1, 2, .3] / [3, 2, .1] -> tops col 1 and col 0, both above base
    expected = torch.tensor([[False, True, True], [True, False, False]])
    assert torch.equal(q, expected)


def test_freed_memory_goes_back_to_the_os_on_glibc(engine):
    """Selection trims the heap after every layer; on this glibc machine the trim is found, and
    a freed 64 MB of small blocks no longer counts in the process's resident memory."""
    import platform

    from fia_engine import memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert memory._malloc_trim() is not None
    resident = memory.process_memory_bytes
    blocks = [torch.ones(1 << 16) for _ in range(256)]  # 256 KiB each: below glibc's mmap threshold
    keep = [torch.ones(16) for _ in range(256)]  # small live blocks that pin the heap's top
    before_free = resident()
    del blocks
    memory.release_freed_memory()
    assert resident() < before_free - (32 << 20)
    assert len(keep) == 256
