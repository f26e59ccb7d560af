"""Compact storage of sorted flat indices: gaps between neighbours as LEB128 varints.

A mask keeps about one weight in a hundred, so neighbouring indices are typically tens apart:
one byte each instead of four (int32) or the N/8 bytes a bitmap of the whole layer would take.
"""

from __future__ import annotations

import numpy as np
import torch

_PAYLOAD_BITS = 7
_CONTINUE = 0x80


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


def decode_sorted(data: torch.Tensor) -> torch.Tensor:
    """Inverse of `encode_sorted` -> int64 indices."""
    raw = data.cpu().numpy().astype(np.uint64)
    if raw.size == 0:
        return torch.zeros(0, dtype=torch.int64)
    last = (raw & _CONTINUE) == 0
    if not last[-1]:
        raise ValueError("truncated index stream")
    value_id = np.concatenate([[0], np.cumsum(last)[:-1]])
    first_byte = np.concatenate([[True], last[:-1]])
    position = np.arange(raw.size) - np.maximum.accumulate(np.where(first_byte, np.arange(raw.size), 0))
    parts = (raw & 0x7F) << (position.astype(np.uint64) * _PAYLOAD_BITS)
    # a gap is below the layer size (< 2**53), so float64 sums of its 7-bit parts are exact
    gaps = np.bincount(value_id, weights=parts.astype(np.float64), minlength=int(last.sum()))
    return torch.from_numpy(np.cumsum(gaps.astype(np.int64)))
