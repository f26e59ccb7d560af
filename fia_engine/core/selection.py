"""Eq.3-6: from per-step saliency to the selected weights of one concept in one layer.

The arithmetic is the reference code's: counts truncate (`max(1, int(r * n))`), Eq.3's indicator
is `S > tau` with tau the k-th largest entry (so it only ever counts positive saliency), and A is
formed with the reference's operations in the reference's order, in fp32. Where the reference is
wrong the default departs from it, one switch each in `SelectionRules`:
- positive_only: Eq.4-6 keep only A > 0. Top-k always returns k entries, so the reference prunes
  zero-saliency weights whenever too few weights respond to the concept.
- ties_by_value: thresholds are k-th largest values and ties at a threshold are all kept, so the
  result does not depend on how a top-k kernel breaks ties (bit-identical masks on CPU and GPU).
- agnostic_needs_two, exact_ceil: Eq.8's threshold, see fusion.agnostic_threshold.
`REFERENCE_RULES` turns all of them off and reproduces the reference's masks bit for bit.

Memory per layer: one block of rows at a time. S[t] and A are recomputed block by block from
|W| and the column statistics whenever a pass needs them (cheap next to the memory they would
take: A alone is the layer's size in fp32), and whole-layer thresholds come from a two-pass
radix select, not from topk (whose CPU kernel copies the whole layer into (value, index) pairs).
The reference rules need whole-layer top-k and hold A for one layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from . import factorised, paper
from .errors import FIAInputError
from .masks import ConceptMasks, SelectionSettings, compact_indices
from .memory import release_freed_memory
from .record import SaliencyRecord
from .request import concept_key, resolve_r2
from .statistics import FORMS, contrastive_margin, contrastive_saliency

StepSaliency = Callable[[int, slice], torch.Tensor]
"""(step t, rows) -> S[t][rows], Eq.2's contrastive saliency of one layer at that step."""
BlockSensitivity = Callable[[slice], torch.Tensor]
"""rows -> A[rows], Eq.3's time-integrated sensitivity of one layer."""

SELECTION_METHODS = ("fia", "conceptprune")
BLOCK_ENTRIES = 1 << 18
"""Entries of S or A formed at a time (about 1 MB in fp32): the general path's working memory."""
_BUCKETS = 1 << 16


@dataclass(frozen=True)
class SelectionRules:
    """The documented departures from the reference code's selection and fusion (module docstring)."""

    positive_only: bool = True  # Eq.4-6: never select A = 0
    ties_by_value: bool = True  # Eq.4-5: value thresholds, every tie kept
    agnostic_needs_two: bool = True  # Eq.8: one concept's weight is never concept-agnostic (C = 1 prunes)
    exact_ceil: bool = True  # Eq.8: ceil(alpha * C) without float overshoot (0.28 * 25 -> 7, not 8)


FIXED_RULES = SelectionRules()
REFERENCE_RULES = SelectionRules(positive_only=False, ties_by_value=False, agnostic_needs_two=False, exact_ceil=False)
COMPATIBILITY = {"fixed": FIXED_RULES, "reference": REFERENCE_RULES}
"""fixed: the reference's arithmetic with its pitfalls fixed (default). reference: bit for bit."""


def count_for(fraction: float, n: int) -> int:
    """How many entries a top-`fraction` keeps out of n: int(fraction * n) (truncated, as the reference), at least 1."""
    return min(n, max(1, int(fraction * n)))


def row_blocks(rows: int, columns: int, block_entries: int = BLOCK_ENTRIES) -> Iterator[slice]:
    """Slices of about `block_entries` entries (at least one row)."""
    step = max(1, block_entries // max(1, columns))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def _ordered_keys(values: torch.Tensor) -> torch.Tensor:
    """float32 -> int32 with the same order (sign-magnitude to two's complement); -0.0 as +0.0."""
    bits = (values.reshape(-1).float() + 0.0).view(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def _value_of_key(key: int, device: torch.device) -> torch.Tensor:
    bits = key if key >= 0 else key ^ 0x7FFFFFFF
    return torch.tensor([bits], dtype=torch.int32, device=device).view(torch.float32)[0]


def _bucket_of_kth(histogram: torch.Tensor, k: int) -> tuple[int, int]:
    """(bucket holding the k-th largest entry, how many entries lie in higher buckets)."""
    at_or_above = histogram.flip(0).cumsum(0).flip(0)
    bucket = int((at_or_above >= k).nonzero().max())
    above = int(at_or_above[bucket + 1]) if bucket + 1 < len(at_or_above) else 0
    return bucket, above


def kth_largest_streamed(blocks: Callable[[], Iterable[torch.Tensor]], k: int) -> torch.Tensor:
    """The k-th largest of all entries of the blocks `blocks()` yields (called twice).

    Exact radix select on the float bits: a histogram of the high 16 bits finds the bucket of
    the k-th entry, a second pass over that bucket's low 16 bits finds the value. Memory is one
    block, whatever the size of the whole.
    """
    high = None
    device = None
    for block in blocks():
        keys = _ordered_keys(block)
        device = keys.device
        counts = torch.bincount(((keys >> 16) + _BUCKETS // 2).long(), minlength=_BUCKETS)
        high = counts if high is None else high + counts
    if high is None or k < 1 or k > int(high.sum()):
        raise ValueError(f"k = {k} is out of range for the given values")
    bucket, above = _bucket_of_kth(high, k)
    low = torch.zeros(_BUCKETS, dtype=torch.int64, device=device)
    for block in blocks():
        keys = _ordered_keys(block)
        in_bucket = keys[((keys >> 16) + _BUCKETS // 2) == bucket]
        low += torch.bincount((in_bucket & 0xFFFF).long(), minlength=_BUCKETS)
    low_bits, _ = _bucket_of_kth(low, k - above)
    return _value_of_key(((bucket - _BUCKETS // 2) << 16) | low_bits, device)


def kth_largest(values: torch.Tensor, k: int, dim: int | None = None, block_entries: int = BLOCK_ENTRIES) -> torch.Tensor:
    """The k-th largest value (of all entries, streamed in blocks, or along `dim`, kept as a size-1 dim)."""
    if dim is None:
        flat = values.reshape(-1)
        return kth_largest_streamed(lambda: flat.split(block_entries), k).to(values.dtype)
    return torch.topk(values, k, dim=dim, sorted=False).values.amin(dim=dim, keepdim=True)


def sensitive(saliency: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """1[S > tau] of Eq.3 (tau is the top-r1 value). S >= 0, so only positive saliency ever counts,
    also when fewer than r1 of the entries are positive and tau is 0."""
    return saliency > tau


def time_integrated_sensitivity(
    step_saliency: StepSaliency, shape: tuple[int, int], steps: int, r1: float, block_entries: int = BLOCK_ENTRIES
) -> BlockSensitivity:
    """Eq.3: A = 0.5 * mean_t(S) / max(mean_t(S)) + 0.5 * mean_t(1[S > tau_t]).

    tau_t is the top-r1 value of S[t] over the whole layer. The division by the layer maximum is
    the reference code's, so both halves lie in [0, 1]; the operations and their order are the
    reference's too, so A is bit-identical to it. Returns A as a function of a block of rows: A
    is recomputed per block when asked, never held for the whole layer.
    """
    if steps < 1:
        raise ValueError("time_integrated_sensitivity needs at least one step")
    rows, columns = shape
    blocks = list(row_blocks(rows, columns, block_entries))
    k = count_for(r1, rows * columns)
    taus = [kth_largest_streamed(lambda t=t: (step_saliency(t, b).float() for b in blocks), k) for t in range(steps)]

    peak = max(step_mean(step_saliency(t, b).float() for t in range(steps)).max() for b in blocks).clamp_min(1e-12)
    return lambda b: combine_steps((step_saliency(t, b).float() for t in range(steps)), taus, peak)


def step_mean(saliencies: Iterable[torch.Tensor]) -> torch.Tensor:
    """mean_t(S) of Eq.3, summed in step order in fp32 (both selection paths sum the same way)."""
    total, steps = None, 0
    for saliency in saliencies:
        total = saliency.clone() if total is None else total.add_(saliency)  # never sum into the caller's tensor
        steps += 1
    total /= steps
    return total


def combine_steps(saliencies: Iterable[torch.Tensor], taus: list[torch.Tensor], peak: torch.Tensor) -> torch.Tensor:
    """Eq.3 for some weights from their S[t], t = 0..T-1: 0.5 * mean_t(S) / peak + 0.5 * mean_t(1[S > tau_t]).

    The one place A is formed, in the reference's operations and order (fp32), by the general path
    (blocks of rows) and the factorised one (single weights) alike: that is what keeps them bit-identical.
    """
    total, hits, steps = None, None, 0
    for saliency, tau in zip(saliencies, taus, strict=True):
        hit = sensitive(saliency, tau)
        total = saliency.clone() if total is None else total.add_(saliency)
        hits = hit.to(torch.int16) if hits is None else hits.add_(hit)
        steps += 1
    total /= steps
    frequency = hits.float()
    frequency /= steps
    return 0.5 * (total / peak) + 0.5 * frequency


def spatial_selection(
    sensitivity: BlockSensitivity, r2: float, shape: tuple[int, int], rules: SelectionRules = FIXED_RULES,
    block_entries: int = BLOCK_ENTRIES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq.4-6: Q = (top r2 of each output row) AND (top r2 of the layer) [AND A > 0].

    `sensitivity` gives A for a block of rows of a layer of `shape`.
    Returns Q's (rows, columns) indices, built block by block.
    """
    rows, columns = shape
    blocks = list(row_blocks(rows, columns, block_entries))
    k_layer, k_row = count_for(r2, rows * columns), count_for(r2, columns)
    if not rules.ties_by_value:
        return _topk_selection(torch.cat([sensitivity(b) for b in blocks]), k_row, k_layer, rules.positive_only)
    layer_threshold = kth_largest_streamed(lambda: (sensitivity(b) for b in blocks), k_layer)
    found_rows, found_columns = [], []
    for b in blocks:
        block = sensitivity(b)
        chosen = (block >= kth_largest(block, k_row, dim=1)) & (block >= layer_threshold)
        if rules.positive_only:
            chosen &= block > 0
        r, c = chosen.nonzero(as_tuple=True)
        found_rows.append(r + b.start)
        found_columns.append(c)
    return torch.cat(found_rows), torch.cat(found_columns)


def _topk_selection(a: torch.Tensor, k_row: int, k_layer: int, positive_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq.4-6 as the reference computes them: top-k indices, ties broken by the top-k kernel."""
    row_set = torch.zeros_like(a, dtype=torch.bool).scatter_(1, torch.topk(a, k=k_row, dim=1, largest=True).indices, True)
    layer_set = torch.zeros(a.numel(), dtype=torch.bool, device=a.device)
    layer_set[torch.topk(a.flatten(), k=k_layer, largest=True).indices] = True
    chosen = row_set & layer_set.view_as(a)
    if positive_only:
        chosen &= a > 0
    return chosen.nonzero(as_tuple=True)


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
        selected |= (score >= kth_largest(score, k_row, dim=1)) & (concept_norm > base_norm) & (score > 0)
    return selected


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
    compatibility: str | SelectionRules = "fixed",
    block_entries: int = BLOCK_ENTRIES,
) -> ConceptMasks:
    """Eq.3-6 for every concept. r2 = 0 uses the preset's paper value (Table 8).

    compatibility "reference" reproduces the reference code's selection bit for bit, pitfalls
    included (SelectionRules); "fixed" (default) departs from it where it is wrong.

    Runs layer by layer on `device` (default: where the model's weights were while recording),
    one layer's |W| and statistics moved there at a time; masks come back to the CPU. The
    reference form takes the factorised path (`factorised`: each column of |W| sorted once per
    layer for all concepts), which gives the general path's masks bit for bit, on any device.
    `block_entries` bounds the general path's working memory (entries formed at a time); masks do
    not depend on it.
    """
    check_ratio("r1", r1)
    check_ratio("r2", r2, allow_zero=True)
    if method not in SELECTION_METHODS:
        raise FIAInputError(f"method: '{method}' is unknown; use one of {', '.join(SELECTION_METHODS)}.")
    rules = compatibility_rules(compatibility)
    if method == "conceptprune" and record.form != "reference":
        raise FIAInputError("method: ConceptPrune selection needs a saliency run with saliency_form = reference.")
    overrides = {concept_key(k): v for k, v in (r2_overrides or {}).items()}
    device = selection_device(device, record.device)
    ratios = {c: resolve_r2(c, record.preset, r2, overrides) for c in record.concepts}
    selected: dict[str, dict[str, torch.Tensor]] = {c: {} for c in record.concepts}
    for layer in record.layers:
        abs_weight = record.abs_weights[layer.key].to(device)  # model dtype; fp32 one block at a time
        columns = None
        if method == "fia" and not FORMS[record.form].per_weight and abs_weight.shape[0] <= factorised.MAX_ROWS:
            columns = factorised.sorted_columns(layer.key, abs_weight)  # the model's: shared by every concept
        for concept in record.concepts:
            base = record.base_moments[record.concept_base[concept]][layer.key]
            stats = [m.to(device) for m in (record.concept_moments[concept][layer.key].mean, base.mean, base.std)]
            rows, cols = _select_layer(abs_weight, columns, stats, record, method, r1, ratios[concept], rules,
                                       block_entries)
            flat = rows * layer.in_features + cols + layer.neuron_columns.start
            selected[concept][layer.key] = compact_indices(flat, layer.out_features * layer.in_features).cpu()
        del columns, abs_weight
        release_freed_memory()
    settings = {c: SelectionSettings(r1, ratios[c], method, record.form, record.preset, rules_name(rules))
                for c in record.concepts}
    return ConceptMasks(
        record.architecture, list(record.layers), selected, settings, record.fingerprint, recording=record.provenance
    )


def selection_device(device: torch.device | str | None, model_device: str | None = None) -> torch.device:
    """The device asked for, else the model's (when this machine has it), else the GPU when there is one."""
    if device is not None:
        return torch.device(device)
    if model_device is not None:
        wanted = torch.device(model_device)
        if wanted.type == "cpu" or (wanted.type == "cuda" and torch.cuda.is_available()):
            return wanted
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _select_layer(abs_weight, columns, stats, record: SaliencyRecord, method: str, r1: float, r2: float,
                  rules: SelectionRules, block_entries: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq.3-6 (or ConceptPrune) for one concept in one layer: Q's (rows, columns)."""
    mean_c, mean_b, std_b = stats
    if method == "conceptprune":
        return conceptprune_selection(abs_weight.float(), mean_c, mean_b, r2).nonzero(as_tuple=True)
    if columns is not None:
        with factorised.small_ops(abs_weight.device):
            found = factorised.select_layer(columns, contrastive_margin(mean_c, mean_b, std_b), r1, r2, rules)
        if found is not None:
            return found
    step_saliency = _step_saliency(abs_weight, mean_c, mean_b, std_b, FORMS[record.form].per_weight)
    shape = tuple(abs_weight.shape)
    sensitivity = time_integrated_sensitivity(step_saliency, shape, record.recorded_steps, r1, block_entries)
    return spatial_selection(sensitivity, r2, shape, rules, block_entries)


def compatibility_rules(compatibility: str | SelectionRules) -> SelectionRules:
    """A named compatibility setting, or single switches (SelectionRules) for ablations."""
    if isinstance(compatibility, SelectionRules):
        return compatibility
    if compatibility not in COMPATIBILITY:
        raise FIAInputError(
            f"compatibility: '{compatibility}' is unknown; use one of {', '.join(COMPATIBILITY)}."
        )
    return COMPATIBILITY[compatibility]


def rules_name(rules: SelectionRules) -> str | dict:
    """How the mask file states the rules: a setting's name, or the switches themselves."""
    names = [name for name, known in COMPATIBILITY.items() if known == rules]
    return names[0] if names else dataclasses.asdict(rules)


def _step_saliency(abs_weight, mean_c, mean_b, std_b, per_weight: bool) -> StepSaliency:
    """Eq.2 for one step and a block of rows, recomputed on demand instead of stored for all steps.

    Per-column statistics ([T, C_in]) broadcast over rows; per-weight ones ([T, C_out, C_in]) are sliced.
    """

    def step_saliency(t: int, rows: slice) -> torch.Tensor:
        def moment(m: torch.Tensor) -> torch.Tensor:
            return m[t, rows] if per_weight else m[t]

        return contrastive_saliency(abs_weight[rows].float(), moment(mean_c), moment(mean_b), moment(std_b))

    return step_saliency
