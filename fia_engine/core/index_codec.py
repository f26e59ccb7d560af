"""Compact storage of sorted flat indices as the gaps between neighbours.

Two codes. LEB128 varints (`encode_sorted`, mask format 1): whole bytes, at least 8 bits a gap.
Rice codes (`encode_rice`, mask formats 2 and 3): a gap g is q = g >> k in unary plus k low bits,
with k chosen per stream to minimise the total -- close to the entropy of randomly placed indices
(about 5.6 bits a gap at 6 % density, 9.1 at 0.5 %, where varints take 8 and 12.2). The unary parts,
the low bits and the rare long quotients (varints) are kept in three separate runs so both
directions are vectorised numpy, not a bit-by-bit loop. Format 3 codes a layer's indices in
column-major order (`column_major`), where FIA's masks have short gaps.

Streams come from shared files, so decoding trusts nothing: it reads a stream in chunks of at
most `CHUNK_BYTES` and checks every chunk as it goes (gaps bounded before they are shifted or
summed, so nothing wraps around 2^64; indices strictly increasing and below the layer's size),
stopping at the first bad chunk. Work and memory are linear in the stream's length.
"""

from __future__ import annotations

import numpy as np
import torch

_PAYLOAD_BITS = 7
_CONTINUE = 0x80
CHUNK_BYTES = 1 << 14  # a chunk's unpacked bits and low-bit rows stay a few MB
MAX_INDEX = 1 << 41  # decoders' largest limit: a chunk's gaps then sum without int64 overflow


def encode_sorted(indices: torch.Tensor) -> torch.Tensor:
    """Sorted, unique, non-negative indices -> uint8 bytes of their gaps (first gap from 0)."""
    values = indices.to(torch.int64).cpu().numpy()
    gaps = np.diff(values, prepend=0).astype(np.uint64)
    lengths = np.ones(len(gaps), dtype=np.int64)
    rest = gaps >> _PAYLOAD_BITS
    while rest.any():
        lengths += rest > 0
        rest >>= _PAYLOAD_BITS
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    remaining = gaps.copy()
    for byte in range(int(lengths.max(initial=0))):
        active = lengths > byte
        chunk = (remaining[active] & 0x7F).astype(np.uint8)
        more = lengths[active] > byte + 1
        out[starts[active] + byte] = chunk | np.where(more, _CONTINUE, 0).astype(np.uint8)
        remaining[active] >>= _PAYLOAD_BITS
    return torch.from_numpy(out)


_RICE_HEADER = 4  # uint64 fields: count, k, unary bits, overflow bytes
_MAX_UNARY = 32  # quotients from here on are stored as varints after the unary run


def rice_bits(gaps: np.ndarray, k: int) -> int:
    """Total bits of a Rice stream for these gaps with parameter k, long quotients as varints."""
    quotients = (gaps >> np.uint64(k)).astype(np.int64)
    long = quotients[quotients >= _MAX_UNARY] - _MAX_UNARY
    varint_bytes = np.maximum(1, -(-np.floor(np.log2(long + 1) + 1).astype(np.int64) // _PAYLOAD_BITS))
    return int(gaps.size * (k + 1) + np.minimum(quotients, _MAX_UNARY).sum() + 8 * varint_bytes.sum())


def best_rice_parameter(gaps: np.ndarray) -> int:
    """The k that makes the stream shortest, tried exhaustively: a few huge gaps (between the
    neurons of a column-ordered mask) skew any estimate from the mean."""
    if gaps.size == 0:
        return 0
    return min(range(min(62, int(gaps.max()).bit_length() + 1)), key=lambda k: rice_bits(gaps, k))


def encode_rice(indices: torch.Tensor) -> torch.Tensor:
    """Sorted, unique, non-negative indices -> uint8 Rice stream of their gaps (first gap from 0)."""
    values = indices.to(torch.int64).cpu().numpy()
    return encode_rice_gaps(np.diff(values, prepend=0).astype(np.uint64))


def encode_rice_gaps(gaps: np.ndarray, k: int | None = None) -> torch.Tensor:
    """Any uint64 gaps -> Rice stream, with the best k unless given (tests forge hostile streams with it)."""
    k = best_rice_parameter(gaps) if k is None else k
    quotients = (gaps >> np.uint64(k)).astype(np.int64)
    unary_q = np.minimum(quotients, _MAX_UNARY)
    unary = np.ones(int(unary_q.sum()) + gaps.size, dtype=np.uint8)
    unary[np.cumsum(unary_q + 1) - 1] = 0
    low_bits = ((gaps[:, None] >> np.arange(k - 1, -1, -1, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    overflow = encode_sorted(torch.from_numpy(np.cumsum(quotients[quotients >= _MAX_UNARY] - _MAX_UNARY)))
    header = np.array([gaps.size, k, unary.size, overflow.numel()], dtype="<u8").view(np.uint8)
    parts = [header, np.packbits(unary), np.packbits(low_bits.reshape(-1)), overflow.numpy()]
    return torch.from_numpy(np.concatenate(parts))


def index_dtype(limit: int) -> torch.dtype:
    """int32 for indices below `limit` when they fit (every known layer), as masks store them."""
    return torch.int32 if limit <= torch.iinfo(torch.int32).max else torch.int64


class _Positions:
    """Indices from their gaps, chunk by chunk: refuses a repeated index (gap 0 after the first)
    and one at or past `limit` before the next chunk is read."""

    def __init__(self, limit: int):
        if not 0 < limit <= MAX_INDEX:
            raise ValueError(f"index limit {limit} outside 1..{MAX_INDEX}")
        self.limit, self.last, self.count, self.chunks = limit, 0, 0, []

    def add(self, gaps: np.ndarray) -> None:
        if gaps.size == 0:
            return
        if (gaps[1:] == 0).any() or (self.count and gaps[0] == 0):
            raise ValueError("an index is repeated (indices must be strictly increasing)")
        positions = np.cumsum(gaps) + self.last  # gaps are < 2 * MAX_INDEX: no int64 overflow
        if positions[-1] >= self.limit:
            raise ValueError(f"an index ({int(positions[-1]):,}) lies outside the layer ({self.limit:,} weights)")
        self.last, self.count = int(positions[-1]), self.count + gaps.size
        self.chunks.append(torch.from_numpy(positions).to(index_dtype(self.limit)))

    def result(self) -> torch.Tensor:
        return torch.cat(self.chunks) if self.chunks else torch.zeros(0, dtype=index_dtype(self.limit))


def _as_bytes(data: torch.Tensor) -> np.ndarray:
    return data.cpu().reshape(-1).numpy().view(np.uint8) if data.dtype == torch.uint8 else data.cpu().numpy().astype(np.uint8)


def _varints(raw: np.ndarray, limit: int):
    """The LEB128 values of `raw`, one chunk at a time. A value may take no more bytes than one
    below `limit` needs, so shifts stay far from 64 bits."""
    max_bytes = max(1, -(-(limit - 1).bit_length() // _PAYLOAD_BITS))
    carry = raw[:0]
    for start in range(0, raw.size, CHUNK_BYTES):
        buf = np.concatenate([carry, raw[start:start + CHUNK_BYTES]])
        ends = np.flatnonzero(buf < _CONTINUE)
        done = int(ends[-1]) + 1 if ends.size else 0
        carry = buf[done:]
        starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
        lengths = ends + 1 - starts
        if carry.size >= max_bytes or (lengths.size and int(lengths.max()) > max_bytes):
            raise ValueError("a gap is longer than any gap inside the layer")
        if done:
            shift = (np.arange(done) - np.repeat(starts, lengths)) * _PAYLOAD_BITS
            yield np.add.reduceat((buf[:done] & 0x7F).astype(np.int64) << shift, starts)
    if carry.size:
        raise ValueError("truncated index stream")


def decode_sorted(data: torch.Tensor, limit: int = MAX_INDEX) -> torch.Tensor:
    """Inverse of `encode_sorted` for indices below `limit`; ValueError on a damaged stream."""
    positions = _Positions(limit)
    for gaps in _varints(_as_bytes(data), limit):
        positions.add(gaps)
    return positions.result()


def _low_values(low: np.ndarray, first: int, count: int, k: int) -> np.ndarray:
    """The k low bits of gaps first..first+count, as integers."""
    values = np.zeros(count, dtype=np.int64)
    if k:
        begin = first * k
        bits = np.unpackbits(low[begin // 8: (begin + count * k + 7) // 8])[begin % 8: begin % 8 + count * k]
        for column in bits.reshape(count, k).T:
            values = (values << 1) | column
    return values


def decode_rice(data: torch.Tensor, limit: int = MAX_INDEX) -> torch.Tensor:
    """Inverse of `encode_rice` for indices below `limit`; ValueError on a damaged stream.

    The header is bounded first (at most `limit` gaps, k no wider than the layer, lengths that
    add up to the stream's), then the unary run is read chunk by chunk; every quotient is bounded
    before it is shifted, so no gap can wrap around and land back inside the layer.
    """
    raw = _as_bytes(data)
    if raw.size < 8 * _RICE_HEADER:
        raise ValueError("truncated index stream")
    count, k, unary_bits, overflow_bytes = (int(v) for v in raw[: 8 * _RICE_HEADER].view("<u8"))
    if count > limit:
        raise ValueError(f"the stream claims {count:,} indices, more than the layer's {limit:,} weights")
    if k > (limit - 1).bit_length():
        raise ValueError(f"Rice parameter {k} is wider than any gap inside the layer")
    if not count <= unary_bits <= count * (_MAX_UNARY + 1):
        raise ValueError(f"{unary_bits:,} unary bits cannot code {count:,} gaps")
    unary_end = 8 * _RICE_HEADER + (unary_bits + 7) // 8
    low_end = unary_end + (count * k + 7) // 8
    if low_end + overflow_bytes != raw.size:
        raise ValueError("index stream length does not match its header")
    extra = np.concatenate([np.zeros(0, np.int64), *_varints(raw[low_end:], limit)])
    unary, low = raw[8 * _RICE_HEADER: unary_end], raw[unary_end:low_end]
    positions, last_zero, used, max_quotient = _Positions(limit), -1, 0, (limit - 1) >> k
    for start in range(0, unary.size, CHUNK_BYTES):
        bits = np.unpackbits(unary[start:start + CHUNK_BYTES])[: unary_bits - 8 * start]
        zeros = np.flatnonzero(bits == 0) + 8 * start
        quotients = np.diff(zeros, prepend=last_zero) - 1
        ones_run = 8 * start + bits.size - last_zero - 1  # the run so far, when this chunk ends none
        if (quotients.max(initial=0) if zeros.size else ones_run) > _MAX_UNARY:
            raise ValueError("a unary quotient is longer than the code allows")
        if not zeros.size:
            continue
        last_zero = int(zeros[-1])
        if positions.count + quotients.size > count:
            raise ValueError("index stream holds more gaps than its header says")
        long = np.flatnonzero(quotients == _MAX_UNARY)
        if used + long.size > extra.size:
            raise ValueError("index stream's long quotients do not match its header")
        quotients[long] += extra[used: used + long.size]
        used += long.size
        if int(quotients.max()) > max_quotient:
            raise ValueError(f"an index lies outside the layer ({limit:,} weights)")
        positions.add((quotients << k) | _low_values(low, positions.count, quotients.size, k))
    if positions.count != count or used != extra.size or last_zero != unary_bits - 1:
        raise ValueError("index stream holds a different number of gaps than its header says")
    return positions.result()


def column_major(indices: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Row-major flat indices of a [rows, columns] weight -> sorted column-major flat indices.

    FIA selects by |W| times per-column (per-neuron) statistics, so a mask's weights crowd into
    the columns of concept-sensitive neurons while every row gets about the same share (Eq.5's
    per-row top-r2). Read column by column the gaps are short inside those columns: on the perf
    bench's 10-concept SD1.5 mask, 1.47 MB instead of 2.11 MB row by row.
    """
    rows, columns = shape
    flat = indices.long()
    return torch.sort((flat % columns) * rows + flat // columns).values


def row_major(indices: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of `column_major`: column-major order of a [rows, columns] weight is row-major
    order of its [columns, rows] transpose."""
    return column_major(indices, (shape[1], shape[0]))
