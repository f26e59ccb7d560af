"""Eq.3-6 for the reference form of Eq.1 without forming S or A for a whole layer.

In the reference form S_t[i, j] = |W_ij| * m_t[j]: Eq.2's margin m (statistics.contrastive_margin)
is one number per input column and step. Every quantity of Eq.3 is then monotone in |W_ij| within
a column (fp32 products with m >= 0, their sum over steps, the indicator S > tau, A), so with each
column of |W| sorted once (`SortedColumns`, the model's, shared by every concept of a run):
- Eq.3's tau_t, the top-r1 value of S_t, is found by counting with a binary search in the sorted
  columns; only the entries between two bracketing values are formed;
- the peak of mean_t(S) lies at each column's largest |W|;
- A is formed only for the top of each column, down to a lower bound of Eq.5's top-r2 value of
  the layer: every selected weight is among them, and so are the values Eq.4's row thresholds need.
Each value is formed by the general path's own functions (contrastive_margin, step_mean,
combine_steps: the same fp32 operations in the same order), so the masks are bit for bit those of
`selection.time_integrated_sensitivity` + `spatial_selection`. Where the reference rules' top-k
would have to break a tie, or a product could underflow, `select_layer` returns None and the
caller takes the general path.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from . import selection

KEY_DTYPE = torch.float16
"""The sorted copy only guides binary searches (exact |W| is read through the permutation), so
half precision does: rounding is monotone. With its int16 permutation: 4 bytes a weight, one fp32 layer."""
_SMALLEST_SAFE = 2.0**-100  # products at least this large are far from fp32's subnormals
_COLUMN_BLOCK = 256
_SLACKS = (0, 4, 32)  # positions a guessed boundary is moved out by until confirmed (else: the whole column)
ValueAt = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(problems, columns, sorted positions) -> exact values there."""
MAX_ROWS = torch.iinfo(torch.int16).max  # rows are kept as int16


class SortedColumns:
    """|W| of one layer with every input column sorted ascending: `keys` [C_in, C_out] (half
    precision, for searching) and `rows` [C_in, C_out] (the row of each sorted entry)."""

    def __init__(self, abs_weight: torch.Tensor):
        self.abs_weight = abs_weight  # [C_out, C_in], exact values
        self.out_features, self.in_features = abs_weight.shape
        if self.out_features > MAX_ROWS:
            raise ValueError(f"SortedColumns keeps rows as int16: at most {MAX_ROWS}")
        self.keys = torch.empty((self.in_features, self.out_features), dtype=KEY_DTYPE, device=abs_weight.device)
        self.rows = torch.empty((self.in_features, self.out_features), dtype=torch.int16, device=abs_weight.device)
        self.positive = torch.empty(self.in_features, dtype=torch.long, device=abs_weight.device)  # per column
        smallest = []
        row_ids = torch.arange(self.out_features, device=abs_weight.device)
        for start in range(0, self.in_features, _COLUMN_BLOCK):  # bounded: a block's int64 keys at a time
            # non-negative floats order as their bit patterns, so one int64 sort of (bits, row) orders
            # the values and carries their rows, without the index tensor of a float sort
            bits = abs_weight[:, start:start + _COLUMN_BLOCK].t().float().contiguous().view(torch.int32).long()
            packed = torch.sort((bits << 16) | row_ids, dim=1).values
            values = (packed >> 16).to(torch.int32).view(torch.float32)
            block = slice(start, start + values.shape[0])
            self.keys[block], self.rows[block] = values, (packed & 0xFFFF).to(torch.int16)
            self.positive[block] = (values > 0).sum(1)
            smallest.append(torch.where(values > 0, values, math.inf).amin())
        self.smallest_positive = float(torch.stack(smallest).min())
        self.column_max = self.weight_at(torch.arange(self.in_features, device=abs_weight.device),
                                         torch.full((self.in_features,), self.out_features - 1, device=abs_weight.device))

    @property
    def nbytes(self) -> int:
        """What keeping it adds: the sorted copy and its rows, 4 bytes a weight (the |W| it reads
        exact values from is the record's own tensor, kept alive with it)."""
        return sum(t.numel() * t.element_size() for t in (self.keys, self.rows))

    def flat_index(self, columns: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Flat (row-major) index into the layer of the entry at ascending `positions` of `columns`."""
        rows = self.rows.view(-1).index_select(0, columns * self.out_features + positions)
        return rows.long() * self.in_features + columns

    def weight_at(self, columns: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Exact |W| (fp32) at sorted positions."""
        return self.abs_weight.view(-1).index_select(0, self.flat_index(columns, positions)).float()


SORT_CACHE_BYTES = 512 << 20
"""The CPU's sorted columns kept between selections (SD1.5's sixteen `ff.net.2` layers need about
200 MB): selecting again from one model (another r2, more concepts, a re-run graph) skips the
sort, the one step that costs more than a concept. GPU sorts are not kept: they are fast there and
VRAM is the user's."""
_sorted: OrderedDict[tuple, SortedColumns] = OrderedDict()


def sorted_columns(layer_key: str, abs_weight: torch.Tensor, budget: int = SORT_CACHE_BYTES) -> SortedColumns:
    """`SortedColumns(abs_weight)`, from the cache when the same |W| was sorted before. A hit is
    checked against the whole tensor (a model's fingerprint samples its weights, so it cannot
    tell two fine-tunes apart for certain). `budget`: the bytes kept at most, oldest dropped first."""
    if abs_weight.device.type != "cpu":
        return SortedColumns(abs_weight)
    key = (layer_key, tuple(abs_weight.shape), abs_weight.dtype)
    hit = _sorted.get(key)
    if hit is not None and torch.equal(hit.abs_weight, abs_weight):
        _sorted.move_to_end(key)
        return hit
    columns = SortedColumns(abs_weight)
    _sorted[key] = columns
    while _sorted and sorted_columns_bytes() > budget:
        _sorted.popitem(last=False)
    return columns


def clear_sorted_columns() -> None:
    _sorted.clear()


def sorted_columns_bytes() -> int:
    return sum(c.nbytes for c in _sorted.values())


def _ranges(start: torch.Tensor, stop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat index into start's shape, position) of every position in [start, stop) of every entry."""
    lengths = (stop - start).clamp_min(0).reshape(-1)
    total = int(lengths.sum())
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=start.device), lengths, output_size=total)
    offsets = torch.cumsum(lengths, 0) - lengths
    positions = torch.arange(total, device=start.device) - offsets[owner] + start.reshape(-1)[owner]
    return owner, positions


def _kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Along the last dim."""
    return torch.kthvalue(values, values.shape[-1] - k + 1, dim=-1).values


@dataclass
class Bracket:
    """The k-th largest value of a layer and where it was found: every entry at a column's position
    >= stop is >= value; the entries in [start, stop) were formed (`columns`, `positions`, `values`)."""

    value: torch.Tensor
    stop: torch.Tensor
    columns: torch.Tensor
    positions: torch.Tensor
    values: torch.Tensor


def kth_largest_in_columns(
    columns: SortedColumns, value_at: ValueAt, first_at_least: Callable[[torch.Tensor], torch.Tensor],
    k: int, sample: torch.Tensor, stride: int, floor: float,
) -> list[Bracket]:
    """For each of B problems, the k-th largest of a layer's values, each column's values
    non-decreasing along its sorted positions, given that it is at least `floor`.

    value_at(problem, column, position) forms values exactly. `sample` [B, S] (values at every
    `stride`-th position) proposes two values around the k-th; `first_at_least(v [B])` guesses,
    per column, the first position holding at least v ([B, C_in]), and one exact value on each side
    confirms every guess (else the column is searched whole). What lies above the upper value is
    counted, only what lies between is formed; a bracket widens until it holds the k-th value.
    """
    rows, cols = columns.out_features, columns.in_features
    device = sample.device
    problems = sample.shape[0]
    every = torch.arange(cols, device=device).repeat(problems)
    owner_of = torch.arange(problems, device=device).repeat_interleave(cols)
    estimate = k / stride
    spread = torch.full((problems,), 4.0 * math.sqrt(cols / 12.0) + 2.0)
    found: dict[int, Bracket] = {}

    def sample_value(rank: torch.Tensor, beyond: float) -> torch.Tensor:
        """The rank-th largest sample of each problem (beyond: past either end)."""
        inside = (rank >= 1) & (rank <= sample.shape[1])
        ranks = rank.clamp(1, sample.shape[1])
        if bool((ranks == ranks[0]).all()):  # one call for all problems
            value = _kth_largest(sample, int(ranks[0]))
        else:
            value = torch.stack([_kth_largest(sample[b], int(ranks[b])) for b in range(problems)])
        return torch.where(inside.to(device), value, beyond)

    while len(found) < problems:
        upper_rank = (estimate - spread).long()
        high = torch.where(upper_rank.to(device) >= 1, sample_value(upper_rank, math.inf), math.inf)
        low = sample_value((estimate + spread).long() + 1, floor).clamp_min(floor)
        guess_stop, guess_start = first_at_least(high), first_at_least(low)
        stop = torch.full_like(guess_stop, rows)
        start = torch.zeros_like(guess_start)
        for slack in _SLACKS:  # a guess moved out until one exact value confirms it
            moved = (guess_stop + slack).clamp(0, rows)
            confirmed = (moved == rows) | (value_at(owner_of, every, moved.clamp_max(rows - 1).reshape(-1))
                                           .view(problems, cols) >= high[:, None])
            stop = torch.where(confirmed & (stop == rows), moved, stop)
            moved = (guess_start - slack).clamp(0, rows)
            confirmed = (moved == 0) | (value_at(owner_of, every, (moved - 1).clamp_min(0).reshape(-1))
                                        .view(problems, cols) < low[:, None])
            start = torch.where(confirmed & (start == 0), moved, start)
        start = start.minimum(stop)
        for b in range(problems):
            if b in found:
                continue
            above = int((rows - stop[b]).sum())
            if above < k:
                c, p = _ranges(start[b], stop[b])
                values = value_at(torch.full_like(c, b), c, p)
                rank = k - above
                if rank <= values.numel():
                    x = _kth_largest(values, rank)
                    if bool(low[b] <= x) and bool(x <= high[b]):
                        found[b] = Bracket(x, stop[b], c, p, values)
                        continue
            if float(spread[b]) > sample.shape[1]:  # the whole layer was bracketed: only a broken assumption gets here
                raise ArithmeticError("kth_largest_in_columns: the bracket failed")
            spread[b] *= 4
    return [found[b] for b in range(problems)]


def step_thresholds(columns: SortedColumns, margins: torch.Tensor, k: int) -> torch.Tensor:
    """Eq.3's tau_t for every step: the k-th largest of fl(|W_ij| * margins[t, j]) over the layer, [T]."""
    rows = columns.out_features
    active = margins > 0
    taus = torch.zeros(len(margins), device=margins.device)
    # fewer positive products than k (none underflows: select_layer): tau = 0
    wanted = [t for t in range(len(margins)) if int(columns.positive[active[t]].sum()) >= k]
    if not wanted:
        return taus
    margin = margins[wanted]
    stride = max(1, rows // 16)
    sample = (columns.keys[:, stride // 2::stride].float()[None] * margin[:, :, None]).reshape(len(wanted), -1)

    def value_at(b: torch.Tensor, c: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return columns.weight_at(c, p) * margin[b, c]

    def first_at_least(v: torch.Tensor) -> torch.Tensor:
        query = (v[None, :] / margin.t().clamp_min(1e-30)).to(KEY_DTYPE)
        found = torch.searchsorted(columns.keys, query.contiguous()).t()
        return torch.where(margin > 0, found, rows)

    brackets = kth_largest_in_columns(columns, value_at, first_at_least, k, sample, stride, _SMALLEST_SAFE)
    taus[wanted] = torch.stack([b.value for b in brackets])
    return taus


def sensitivity_boundary(columns: SortedColumns, margins: torch.Tensor, taus: torch.Tensor, peak: torch.Tensor):
    """Per column, a guess of the first sorted position where A >= v, from A's form
    0.5 * |W| * mean_t(m) / peak + 0.5 * hits / T (hits: the steps with |W| * m_t > tau_t)."""
    steps = len(margins)
    mean = margins.mean(0)
    hit_at = (taus[:, None] / margins).sort(dim=0).values  # |W| above which step t hits (inf: never)
    lower = torch.cat([torch.zeros_like(hit_at[:1]), hit_at])  # |W| range with h hits: [lower_h, upper_h)
    upper = torch.cat([hit_at, torch.full_like(hit_at[:1], math.inf)])
    hits = torch.arange(steps + 1, device=margins.device, dtype=torch.float32)[:, None]

    def first_at_least(v: torch.Tensor) -> torch.Tensor:
        need = ((v - 0.5 * hits / steps) * 2 * peak / mean).clamp_min(0)
        need = torch.where(mean > 0, need, math.inf)
        weight = torch.maximum(lower, need)
        weight = torch.where(weight < upper, weight, math.inf).amin(0)
        return torch.searchsorted(columns.keys, weight.to(KEY_DTYPE)[:, None])[:, 0][None]

    return first_at_least


@contextmanager
def small_ops(device: torch.device) -> Iterator[None]:
    """One CPU thread while selecting: the factorised path runs many operations on a few thousand
    entries each, where a thread pool costs more than it gives (fixture-width layers, 3 concepts:
    1.85 s of CPU with 2 threads, 0.42 s with one, on this shared 2-core machine). The column sort
    keeps every thread."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def select_layer(
    columns: SortedColumns, margins: torch.Tensor, r1: float, r2: float, rules: selection.SelectionRules
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Eq.3-6 for one concept in one layer from its margins [T, C_in]: Q's (rows, columns) indices,
    sorted row-major as the general path returns them, or None where the general path must decide."""
    rows, cols = columns.out_features, columns.in_features
    steps = len(margins)
    positive_margins = margins[margins > 0]
    if positive_margins.numel() and columns.smallest_positive * float(positive_margins.min()) < _SMALLEST_SAFE:
        return None  # products near fp32's subnormals: the brackets' error bounds do not hold there
    taus = list(step_thresholds(columns, margins, selection.count_for(r1, rows * cols)))
    peak = selection.step_mean(columns.column_max * margins[t] for t in range(steps)).max().clamp_min(1e-12)
    if float(peak) > 2.0**20:
        return None  # keeps A's smallest positive value far from the subnormals too

    def sensitivity(c: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        weight, margin = columns.weight_at(c, p), margins.index_select(1, c)
        return selection.combine_steps((weight * margin[t] for t in range(steps)), taus, peak)

    k_layer, k_row = selection.count_for(r2, rows * cols), selection.count_for(r2, cols)
    responding = (margins > 0).any(0)  # A > 0 exactly where |W| > 0 in a column with a positive margin
    if int(columns.positive[responding].sum()) < k_layer:
        if not rules.positive_only:
            return None  # the reference's top-k pads with zero-saliency weights in an order only it knows
        c, p = _ranges(torch.where(responding, rows - columns.positive, rows), torch.full_like(columns.positive, rows))
        a = sensitivity(c, p)
        layer_threshold = torch.zeros((), device=a.device)
    else:
        stride = max(1, rows // 8)
        grid = torch.arange(stride // 2, rows, stride, device=margins.device)
        sample = sensitivity(*(t.reshape(-1) for t in torch.meshgrid(torch.arange(cols, device=grid.device), grid,
                                                                      indexing="ij")))[None]
        boundary = sensitivity_boundary(columns, margins, torch.stack(taus), peak)
        bracket, = kth_largest_in_columns(columns, lambda _, c, p: sensitivity(c, p), boundary, k_layer, sample, stride,
                                          _SMALLEST_SAFE)
        c_above, p_above = _ranges(bracket.stop, torch.full_like(bracket.stop, rows))
        c = torch.cat([c_above, bracket.columns])
        p = torch.cat([p_above, bracket.positions])
        a = torch.cat([sensitivity(c_above, p_above), bracket.values])
        layer_threshold = bracket.value
    keep = a >= layer_threshold
    if rules.positive_only:
        keep &= a > 0
    if not rules.ties_by_value and int(keep.sum()) != k_layer:
        return None  # a tie at the layer's top-k boundary: the general path asks topk itself
    c, a = c[keep], a[keep]
    r = columns.rows[c, p[keep]].long()
    # Eq.4 among the candidates: a row with at least k_row of them has its whole top k_row there;
    # a row with fewer has its k_row-th value below the layer threshold, so all of them pass
    by_value = torch.argsort(a, descending=True, stable=True)
    order = by_value[torch.argsort(r[by_value], stable=True)]
    r_sorted, a_sorted = r[order], a[order]
    counts = torch.bincount(r_sorted, minlength=rows)
    starts = torch.cumsum(counts, 0) - counts
    full = counts >= k_row
    row_threshold = torch.full((rows,), -math.inf, device=a.device)
    row_threshold[full] = a_sorted[starts[full] + k_row - 1]
    if not rules.ties_by_value:
        tied = full & (counts > k_row)
        nxt = a_sorted[(starts + k_row).clamp_max(max(0, len(a_sorted) - 1))] if len(a_sorted) else row_threshold
        if bool((tied & (nxt == row_threshold)).any()):
            return None  # a tie at a row's top-k boundary
    chosen = a >= row_threshold[r]
    flat = (r * cols + c)[chosen]
    flat = flat.sort().values
    return flat // cols, flat % cols
