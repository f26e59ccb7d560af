"""FIA_MASK files: safetensors (never pickle) with the metadata needed to refuse a wrong model.

Tensors: `pruned/<key>` and `kept/<key>`: the weight's indices read column by column (neuron by
neuron), stored as Rice-coded gaps (uint8, see index_codec): at most 5.6-11.5 bits per pruned weight
from 6% to 0.1% density, less where the mask crowds into few neurons, as FIA's masks do. Format 1
(varint gaps) and format 2 (Rice gaps, row by row) files still load.
Metadata (strings): format, format_version, architecture, layers (keys, shapes, neuron columns),
concepts, hyperparameters, fingerprint of the weights the mask was computed on, pruned count.

Mask files are shared, so loading trusts nothing: mask_schema bounds every metadata claim before
an index is decoded, the decoders check every index as it is decoded, and pruned and kept must
be disjoint. Saving writes a private temporary and then links it to a name that no other save
holds, so concurrent saves never lose a file; temporaries left by killed saves are removed.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch

from .architectures import FFLayer
from .errors import FIAInputError
from .index_codec import column_major, decode_rice, decode_sorted, encode_rice, row_major
from .mask_schema import FORMAT, FORMAT_VERSION, VERSION_ENCODINGS, check_header_size, check_metadata, refuse
from .masks import SelectionSettings, UnlearningMask
from .record import RecordingProvenance

INDEX_ENCODING = VERSION_ENCODINGS[FORMAT_VERSION]
# index encoding -> (gap decoder, whether the indices were stored column by column)
DECODERS = {
    "rice-gaps-by-column": (decode_rice, True),
    "rice-gaps": (decode_rice, False),
    "leb128-gaps": (decode_sorted, False),
}
STALE_SECONDS = 600  # a save takes well under a second; an older temporary belongs to a killed one
__all__ = ["FORMAT", "FORMAT_VERSION", "load_mask", "read_metadata", "save_mask", "save_numbered_mask"]



def fusion_metadata(
    *, alpha: float, fusion: str, agnostic_threshold: int | None, compatibility: str | dict,
    per_concept: dict[str, SelectionSettings], recording: RecordingProvenance | None,
    alpha_source: str | None = None, keep: tuple[list[str], int] | None = None,
) -> dict:
    """The typed settings of a fused mask as the JSON its file states (`hyperparameters`).

    alpha_source says where an automatic alpha came from; keep = (kept concepts, pruned weights spared).
    """
    data = {
        "alpha": alpha, "fusion": fusion, "agnostic_threshold": agnostic_threshold, "compatibility": compatibility,
        "per_concept": {concept: asdict(settings) for concept, settings in per_concept.items()},
        "saliency": asdict(recording) if recording is not None else {},
    }
    if alpha_source is not None:
        data["alpha_source"] = alpha_source
    if keep is not None:
        data["keep"] = {"concepts": list(keep[0]), "weights_spared": keep[1]}
    return data

def mask_file_bytes(mask: UnlearningMask, extra_metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    tensors = {}
    for layer in mask.layers:
        tensors[f"pruned/{layer.key}"] = encode_rice(column_major(mask.pruned[layer.key], layer.shape))
        tensors[f"kept/{layer.key}"] = encode_rice(column_major(mask.kept_agnostic[layer.key], layer.shape))
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "index_encoding": INDEX_ENCODING,
        "architecture": mask.architecture,
        "layers": json.dumps([layer.as_dict() for layer in mask.layers]),
        "concepts": json.dumps(mask.concepts),
        "hyperparameters": json.dumps(mask.hyperparameters, default=str),
        "fingerprint": mask.fingerprint,
        "pruned_weights": str(mask.pruned_count),
        "total_weights": str(mask.total_weights),
    } | (extra_metadata or {})
    return _with_sorted_header(save(tensors, metadata=metadata))


def save_mask(mask: UnlearningMask, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Writes (or replaces) `path`; readers see the old file or the whole new one, never a part."""
    return _write(Path(path), mask_file_bytes(mask, extra_metadata), exclusive=False)


def save_numbered_mask(mask: UnlearningMask, folder: str | Path, stem: str, first: int = 1) -> Path:
    """Saves to `<stem>_<counter>_.safetensors` with the first counter from `first` that no file
    holds, claimed atomically: two processes saving with one prefix get two files."""
    data = mask_file_bytes(mask)
    counter = first
    while True:
        try:
            return _write(Path(folder) / f"{stem}_{counter:05}_.safetensors", data, exclusive=True)
        except FileExistsError:
            counter += 1


def _write(path: Path, data: bytes, exclusive: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}.tmp")  # one per save: saves never share it
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
        if exclusive:
            _link_new(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _link_new(tmp: Path, path: Path) -> None:
    """Gives the written file the name `path` atomically; FileExistsError where the name is taken."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: claim the name first, then fill it
        open(path, "xb").close()
        os.replace(tmp, path)


def remove_stale_temporaries(folder: Path) -> None:
    """Deletes temporaries of saves killed mid-write (older than STALE_SECONDS, so never a running save's)."""
    now = time.time()
    for stale in folder.glob("*.safetensors*.tmp"):
        try:
            if now - stale.stat().st_mtime > STALE_SECONDS:
                stale.unlink()
        except OSError:  # another process removed it first
            pass


def _with_sorted_header(serialized: bytes) -> bytes:
    """The same file with its JSON header's keys sorted: safetensors writes the metadata in hash
    order, which changes from run to run, so equal masks would not hash equal as files."""
    length = int.from_bytes(serialized[:8], "little")
    header = json.loads(serialized[8:8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + serialized[8 + length:]


def read_metadata(path: str | Path) -> dict[str, str]:
    """The file's metadata strings; its header is bounded before safetensors parses it."""
    from safetensors import safe_open

    check_header_size(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises several types for damaged files
        raise _unreadable(path, error) from error


def _unreadable(path: str | Path, error: Exception):
    return refuse(Path(path).name, "file", f"not a readable safetensors file ({str(error)[:120]})",
                  "Choose a file written by FIA Save Mask, or save the mask again")


def _streams(path: str | Path, layers: list[FFLayer]) -> Iterator[tuple[str, FFLayer, torch.Tensor]]:
    """(tensor name, layer, uint8 stream) one at a time, after checking the file holds exactly
    the streams its layers need; only one stream is in memory at a time."""
    from safetensors import safe_open

    name = Path(path).name
    wanted = [(f"{kind}/{layer.key}", layer) for layer in layers for kind in ("pruned", "kept")]
    try:
        with safe_open(str(path), framework="pt") as handle:
            held = set(handle.keys())
            missing = [key for key, _ in wanted if key not in held]
            extra = held - {key for key, _ in wanted}
            if missing or extra:
                first = (missing or sorted(extra))[0]
                raise refuse(name, "tensors", f"{'missing' if missing else 'unexpected'} tensor '{first[:120]}'")
            for key, layer in wanted:
                part = handle.get_slice(key)
                if part.get_dtype() != "U8" or len(part.get_shape()) != 1:
                    raise refuse(name, key, f"a {part.get_dtype()} tensor of shape {part.get_shape()}, not a byte stream")
                yield key, layer, handle.get_tensor(key)
    except (FIAInputError, GeneratorExit):
        raise
    except Exception as error:  # safetensors' own errors for damaged files
        raise _unreadable(path, error) from error


def _indices(name: str, key: str, layer: FFLayer, stream: torch.Tensor, encoding: str) -> torch.Tensor:
    """A layer's flat row-major indices, each checked as it is decoded (strictly increasing,
    inside the layer) before the column order is undone."""
    decode, by_column = DECODERS[encoding]
    numel = layer.out_features * layer.in_features
    try:
        flat = decode(stream, limit=numel)
    except ValueError as error:
        raise refuse(name, key, f"damaged index stream: {error}") from None
    return row_major(flat, layer.shape).to(flat.dtype) if by_column else flat


def load_mask(path: str | Path) -> UnlearningMask:
    name = Path(path).name
    header = check_metadata(name, read_metadata(path))
    indices: dict[str, dict[str, torch.Tensor]] = {"pruned": {}, "kept": {}}
    for key, layer, stream in _streams(path, header.layers):
        indices[key.split("/", 1)[0]][layer.key] = _indices(name, key, layer, stream, header.encoding)
    for layer in header.layers:
        pruned, kept = indices["pruned"][layer.key], indices["kept"][layer.key]
        if kept.numel() and pruned.numel() and torch.isin(kept, pruned).any():
            raise refuse(name, f"kept/{layer.key}", "a weight is both pruned and kept")
    mask = UnlearningMask(header.architecture, header.layers, indices["pruned"], indices["kept"], header.concepts,
                          header.hyperparameters, header.fingerprint)
    if header.pruned_weights is not None and header.pruned_weights != mask.pruned_count:
        raise refuse(name, "pruned_weights", f"claims {header.pruned_weights:,}, the streams hold {mask.pruned_count:,}")
    return mask
