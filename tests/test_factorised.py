"""The factorised selection (sorted |W| columns) against the general path, bit for bit."""

import pytest
import torch


def general(engine, abs_weight, margins, r1, r2, rules):
    """Eq.3-6 the general way: S[t] formed block by block from |W| and the margins."""
    sel = engine.selection

    def step(t, rows):
        return abs_weight[rows].float() * margins[t]

    shape = tuple(abs_weight.shape)
    rows, cols = sel.spatial_selection(sel.time_integrated_sensitivity(step, shape, len(margins), r1), r2, shape, rules)
    return rows * shape[1] + cols


def factorised(engine, abs_weight, margins, r1, r2, rules):
    found = engine.factorised.select_layer(engine.factorised.SortedColumns(abs_weight), margins, r1, r2, rules)
    return None if found is None else found[0] * abs_weight.shape[1] + found[1]


def inputs(seed: int, rows: int, cols: int, steps: int, ties: bool, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    abs_weight = (torch.randn(rows, cols, generator=gen).abs() * 0.02).to(dtype)
    margins = (torch.randn(steps, cols, generator=gen) * 0.05).clamp_min(0)
    if ties:  # few distinct values: ties inside columns, across columns and at every threshold
        abs_weight = ((abs_weight.float() * 300).round() / 300).to(dtype)
        margins = (margins * 40).round() / 40
    return abs_weight, margins


CASES = [(seed, rows, cols, ties) for seed, (rows, cols) in enumerate([(40, 160), (96, 64), (130, 300), (257, 33)])
         for ties in (False, True)]


@pytest.mark.parametrize("seed,rows,cols,ties", CASES)
@pytest.mark.parametrize("compatibility", ["fixed", "reference"])
def test_factorised_equals_general(engine, seed, rows, cols, ties, compatibility):
    rules = engine.selection.COMPATIBILITY[compatibility]
    abs_weight, margins = inputs(seed, rows, cols, 10, ties)
    decided = 0
    for r1, r2 in ((0.05, 0.007), (0.05, 0.03), (0.3, 0.1), (0.01, 0.5)):
        fast = factorised(engine, abs_weight, margins, r1, r2, rules)
        slow = general(engine, abs_weight, margins, r1, r2, rules)
        if fast is None:  # the reference rules' top-k would break a tie: the general path decides
            assert compatibility == "reference"
            continue
        decided += 1
        assert torch.equal(fast, slow), (r1, r2, len(fast), len(slow))
    assert decided > 0 or (ties and compatibility == "reference")


def test_factorised_sparse_and_fp16(engine):
    """Few responding columns (tau = 0, fewer positive A than r2 asks), zero weights, fp16 |W|."""
    rules = engine.selection.FIXED_RULES
    abs_weight, margins = inputs(7, 120, 90, 10, False, torch.float16)
    abs_weight[:, ::3] = 0
    margins[:, 5:] = 0
    margins[::2, :2] = 0
    for r1, r2 in ((0.05, 0.007), (0.05, 0.2)):
        assert torch.equal(factorised(engine, abs_weight, margins, r1, r2, rules),
                           general(engine, abs_weight, margins, r1, r2, rules))
    assert factorised(engine, abs_weight, margins, 0.05, 0.2, engine.selection.REFERENCE_RULES) is None


def test_kth_largest_in_columns_brackets_exactly(engine):
    """Eq.3's thresholds from counting in sorted columns equal the k-th largest of the formed S[t]."""
    fz = engine.factorised
    abs_weight, margins = inputs(3, 200, 150, 6, True)
    columns = fz.SortedColumns(abs_weight)
    for k in (1, 17, 1500, 6000, 29999):
        taus = fz.step_thresholds(columns, margins, k)
        for t in range(len(margins)):
            products = (abs_weight * margins[t]).flatten()
            assert taus[t] == products.sort().values[-k], (k, t)


def test_selection_takes_the_factorised_path_with_the_general_masks(engine, monkeypatch):
    """select_sensitive_neurons on a record: factorised and forced-general runs give the same masks."""
    RecordingProvenance, SaliencyRecord = engine.record.RecordingProvenance, engine.SaliencyRecord
    Moments = engine.statistics.Moments

    sel = engine.selection
    gen = torch.Generator().manual_seed(5)
    layers = [engine.PrunableLayer(f"diffusion_model.l{i}.weight", f"l{i}", 64, 48) for i in range(2)]
    abs_weights = {layer.key: torch.randn(64, 48, generator=gen).abs() for layer in layers}
    base = {layer.key: Moments(0.5 + torch.rand(10, 48, generator=gen), 0.03 * torch.rand(10, 48, generator=gen), 5)
            for layer in layers}
    concepts = {c: {layer.key: Moments(base[layer.key].mean + 0.2 * torch.rand(10, 48, generator=gen) - 0.05, None, 5)
                    for layer in layers} for c in ("a", "b", "c")}
    record = SaliencyRecord("SD1.x", layers, "reference", "objects", list(concepts), concepts, {"b": base},
                            dict.fromkeys(concepts, "b"), abs_weights, {},
                            RecordingProvenance(engine.SamplingSettings(), "reference", "objects", 5, 0, 0), "0" * 16)
    for compatibility in ("fixed", "reference"):
        fast = engine.select_sensitive_neurons(record, r2=0.05, compatibility=compatibility)
        monkeypatch.setattr(engine.factorised, "MAX_ROWS", 0)  # every layer the general way
        slow = engine.select_sensitive_neurons(record, r2=0.05, compatibility=compatibility)
        monkeypatch.undo()
        for concept in concepts:
            for layer in layers:
                assert torch.equal(fast.selected[concept][layer.key], slow.selected[concept][layer.key])
        assert sel.rules_name(sel.COMPATIBILITY[compatibility]) == fast.settings["a"].compatibility


def test_sorted_columns_are_kept_for_the_same_weights_only(engine):
    fz = engine.factorised
    fz.clear_sorted_columns()
    abs_weight, margins = inputs(9, 64, 48, 4, ties=False)
    first = fz.sorted_columns("layer", abs_weight)
    assert fz.sorted_columns("layer", abs_weight.clone()) is first  # equal contents: kept
    changed = abs_weight.clone()
    changed[3, 5] += 0.01  # a fine-tune the sampled fingerprint could miss: sorted afresh
    again = fz.sorted_columns("layer", changed)
    assert again is not first and torch.equal(again.abs_weight, changed)
    rules = engine.selection.compatibility_rules("fixed")
    assert torch.equal(torch.stack(fz.select_layer(again, margins, 0.05, 0.01, rules)),
                       torch.stack(fz.select_layer(fz.SortedColumns(changed), margins, 0.05, 0.01, rules)))
    fz.sorted_columns("other", abs_weight, budget=again.nbytes + 1)  # room for one layer: the oldest goes
    assert fz.sorted_columns_bytes() <= again.nbytes + 1 and fz.sorted_columns("layer", changed) is not again
    fz.clear_sorted_columns()
    assert fz.sorted_columns_bytes() == 0
