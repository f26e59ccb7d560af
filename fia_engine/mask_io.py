"""FIA_MASK files: safetensors (never pickle) with the metadata needed to refuse a wrong model.

Tensors: `pruned/<key>` and `kept/<key>`: the weight's indices read column by column (neuron by
neuron), stored as Rice-coded gaps (uint8, see index_codec): at most 5.6-11.5 bits per pruned weight
from 6% to 0.1% density, less where the mask crowds into few neurons, as FIA's masks do. Format 1
(varint gaps) and format 2 (Rice gaps, row by row) files still load.
Metadata (strings): format, format_version, architecture, layers (keys, shapes, neuron columns),
concepts, hyperparameters, fingerprint of the weights the mask was computed on, pruned count.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import FIAInputError
from .index_codec import column_major, decode_rice, decode_sorted, encode_rice, row_major
from .layers import FFLayer
from .masks import UnlearningMask, compact_indices

FORMAT = "fia-unlearning-mask"
FORMAT_VERSION = 3
INDEX_ENCODING = "rice-gaps-by-column"
# index encoding -> (gap decoder, whether the indices were stored column by column)
DECODERS = {
    "rice-gaps-by-column": (decode_rice, True),
    "rice-gaps": (decode_rice, False),
    "leb128-gaps": (decode_sorted, False),
}


def save_mask(mask: UnlearningMask, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(_with_sorted_header(save(tensors, metadata=metadata)))
    tmp.replace(path)
    return path


def _with_sorted_header(serialized: bytes) -> bytes:
    """The same file with its JSON header's keys sorted: safetensors writes the metadata in hash
    order, which changes from run to run, so equal masks would not hash equal as files."""
    length = int.from_bytes(serialized[:8], "little")
    header = json.loads(serialized[8:8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + serialized[8 + length:]


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises several types for damaged files
        raise FIAInputError(
            f"mask file '{Path(path).name}': not a readable safetensors file ({error}). "
            "Choose a file written by FIA Save Mask, or save the mask again."
        ) from error


def _indices(encoded: torch.Tensor, layer: FFLayer, encoding: str) -> torch.Tensor:
    """Decoded indices (sorted, so the ends bound them), checked before the column order is
    undone: its modular arithmetic would fold an out-of-range index back into the layer."""
    decode, by_column = DECODERS[encoding]
    flat = decode(encoded)
    numel = layer.out_features * layer.in_features
    if flat.numel() and (int(flat[0]) < 0 or int(flat[-1]) >= numel):
        raise ValueError(f"indices outside layer {layer.key}; the file is damaged")
    return compact_indices(row_major(flat, layer.shape) if by_column else flat, numel)


def load_mask(path: str | Path) -> UnlearningMask:
    from safetensors.torch import load_file

    name = Path(path).name
    metadata = read_metadata(path)
    if metadata.get("format") != FORMAT:
        raise FIAInputError(
            f"mask file '{name}': this safetensors file is not an FIA mask (no '{FORMAT}' metadata); it may be "
            "a checkpoint or LoRA. Choose a file written by FIA Save Mask."
        )
    version = int(metadata.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise FIAInputError(f"mask file '{name}': format version {version} is newer than this pack reads; update the pack.")
    try:
        layers = [FFLayer.from_dict(d) for d in json.loads(metadata["layers"])]
        tensors = load_file(str(path))
        encoding = metadata.get("index_encoding", "")
        if encoding not in DECODERS:
            raise ValueError(f"unknown index encoding {encoding!r}")
        pruned = {layer.key: _indices(tensors[f"pruned/{layer.key}"], layer, encoding) for layer in layers}
        kept = {layer.key: _indices(tensors[f"kept/{layer.key}"], layer, encoding) for layer in layers}
        concepts = json.loads(metadata["concepts"])
        hyper = json.loads(metadata.get("hyperparameters", "{}"))
    except (KeyError, ValueError, TypeError) as error:
        raise FIAInputError(f"mask file '{name}': damaged or incomplete ({error!r}). Save the mask again.") from error
    return UnlearningMask(metadata["architecture"], layers, pruned, kept, concepts, hyper, metadata.get("fingerprint", ""))
