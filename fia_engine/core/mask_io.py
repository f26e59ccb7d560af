"""FIA_MASK files: safetensors (never pickle) with the metadata needed to refuse a wrong model.

Tensors: `pruned/<key>` and `kept/<key>`: the weight's indices read column by column (neuron by
neuron), stored as Rice-coded gaps (uint8, see index_codec): at most 5.6-11.5 bits per pruned weight
from 6% to 0.1% density, less where the mask crowds into few neurons, as FIA's masks do. Format 1
(varint gaps) and format 2 (Rice gaps, row by row) files still load.
Metadata (strings): format, format_version, architecture, layers (keys, shapes, neuron columns),
concepts, hyperparameters, fingerprint of the weights the mask was computed on, pruned count.

Mask files are shared, so loading trusts nothing: mask_schema bounds every metadata claim before
an index is decoded, the decoders check every index as it is decoded, and pruned and kept must
be disjoint. Saving checks the name first (nothing is made for a name that cannot be written),
writes a private temporary and then links it to a name that no other save holds, so concurrent
saves never lose a file and no name ever shows a partial file; temporaries left by killed saves
are removed.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from .architectures import PrunableLayer
from .errors import FIAInputError
from .index_codec import column_major, decode_rice, decode_sorted, encode_rice, row_major
from .mask_schema import FORMAT, FORMAT_VERSION, VERSION_ENCODINGS, check_header_size, check_metadata, refuse
from .masks import MaskSettings, StatedSettings, UnlearningMask, check_has_layers

INDEX_ENCODING = VERSION_ENCODINGS[FORMAT_VERSION]
# index encoding -> (gap decoder, whether the indices were stored column by column)
DECODERS = {
    "rice-gaps-by-column": (decode_rice, True),
    "rice-gaps": (decode_rice, False),
    "leb128-gaps": (decode_sorted, False),
}
TOKEN_BYTES = 6  # a temporary is named <file>.<2 * TOKEN_BYTES hex digits>.tmp
TEMPORARY_SUFFIX = len(f".{'0' * 2 * TOKEN_BYTES}.tmp")
STALE_SECONDS = 600  # a save takes well under a second; an older temporary belongs to a killed one
__all__ = ["FORMAT", "FORMAT_VERSION", "check_save_prefix", "load_mask", "read_metadata", "save_mask",
           "save_numbered_mask", "settings_json"]



def settings_json(settings: MaskSettings | StatedSettings) -> dict:
    """A mask's settings as the JSON its file states (`hyperparameters`); the one place that knows
    the file's layout. A loaded file's settings are written back as it stated them."""
    if isinstance(settings, StatedSettings):
        return dict(settings.stated)
    data = {
        "alpha": settings.alpha, "fusion": settings.fusion, "agnostic_threshold": settings.agnostic_threshold,
        "compatibility": settings.compatibility,
        "per_concept": {concept: asdict(selection) for concept, selection in settings.per_concept.items()},
        "saliency": asdict(settings.recording) if settings.recording is not None else {},
    }
    if settings.alpha_source is not None:
        data["alpha_source"] = settings.alpha_source
    if settings.keep is not None:
        data["keep"] = {"concepts": list(settings.keep.concepts), "weights_spared": settings.keep.weights_spared}
    return data


def mask_file_bytes(mask: UnlearningMask, extra_metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    check_has_layers("mask", mask.layers)  # loading would refuse the file
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
        "hyperparameters": json.dumps(settings_json(mask.settings), default=str),
        "fingerprint": mask.fingerprint,
        "pruned_weights": str(mask.pruned_count),
        "total_weights": str(mask.total_weights),
    } | (extra_metadata or {})
    return _with_sorted_header(save(tensors, metadata=metadata))


def save_mask(mask: UnlearningMask, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Writes (or replaces) `path`; readers see the old file or the whole new one, never a part."""
    path = Path(path)
    with _complete_temporary(path, mask_file_bytes(mask, extra_metadata), "path") as tmp:
        os.replace(tmp, path)
    return path


def save_numbered_mask(mask: UnlearningMask, folder: str | Path, stem: str, first: int = 1,
                       what: str = "filename_prefix") -> Path:
    """Saves to `<stem>_<counter>_.safetensors` with the first counter from `first` that no file
    holds, claimed atomically: two processes saving with one prefix get two files. The file is
    written once; each taken counter costs one failed link."""
    folder = Path(folder)
    with _complete_temporary(folder / f"{stem}_{first:05}_.safetensors", mask_file_bytes(mask), what) as tmp:
        counter = first
        while True:
            path = folder / f"{stem}_{counter:05}_.safetensors"
            try:
                _claim(tmp, path)
                return path
            except FileExistsError:
                counter += 1


@contextmanager
def _complete_temporary(path: Path, data: bytes, what: str) -> Iterator[Path]:
    """A private temporary beside `path` holding all of `data`, removed on exit however it ends;
    the name is checked before any folder or file is made."""
    check_file_name(path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(TOKEN_BYTES)}.tmp")  # one per save: never shared
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _claim(tmp: Path, path: Path) -> None:
    """Gives the complete file `tmp` the name `path` if no file holds it, else FileExistsError.

    A hard link claims name and content in one step. A file system without hard links (FAT,
    some network shares) gets a claim file instead: saves of one name take it exclusively, look
    whether the name is free and rename the content in, so the name never shows an empty or
    partial file and two saves never take one number (a killed save's claim goes stale like a
    temporary).
    """
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError:  # no hard links here
        pass
    claim = path.with_name(f"{path.name}.claim.tmp")
    os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # FileExistsError: another save holds it
    try:
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "taken", str(path))
        os.replace(tmp, path)
    finally:
        claim.unlink(missing_ok=True)


def check_save_prefix(folder: str | Path, prefix: str) -> None:
    """Refuses a save prefix (ComfyUI's convention: optional subfolders, then the file name's start;
    a counter follows) that leaves the mask folder, names no file or could not be written in full,
    before anything is made: ComfyUI's own helper would make its folders first."""
    normal = os.path.normpath(prefix)
    if os.path.isabs(normal) or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise FIAInputError(f"filename_prefix: {_quoted(prefix)} points outside the mask folder. Use a name inside "
                            "it, such as fia/mask (subfolders are fine; no '..' and no leading '/').")
    if os.path.basename(normal) in ("", os.curdir):
        raise FIAInputError(f"filename_prefix: {_quoted(prefix)} names no file. Enter a name such as fia/mask.")
    check_file_name(Path(folder) / f"{normal}_00001_.safetensors", "filename_prefix")  # the first number's name


def check_file_name(path: Path, what: str) -> None:
    """Refuses a file the save could not create in full, before any folder or file is made: a NUL,
    characters the file system cannot store, a folder in the way that is a file, or a name or path
    too long for the file system (counting the temporary the save writes first)."""
    if "\0" in str(path):
        raise FIAInputError(f"{what}: contains a NUL character (\\0), which no file name may hold. Remove it.")
    try:
        total = len(os.fsencode(path)) + TEMPORARY_SUFFIX
    except UnicodeError:
        raise FIAInputError(f"{what}: contains characters the file system cannot store (unpaired surrogates). "
                            "Use ordinary letters, digits, '-', '_' and '/'.") from None
    existing = path.parent
    while not os.path.isdir(existing) and existing != existing.parent:
        if os.path.lexists(existing):
            raise FIAInputError(f"{what}: {_quoted(existing.name)} is a file, not a folder. Use another folder name.")
        existing = existing.parent
    name_max, path_max = (_limit(existing, "PC_NAME_MAX", 255), _limit(existing, "PC_PATH_MAX", 4096))
    for part, extra in [(part, 0) for part in path.parent.parts] + [(path.name, TEMPORARY_SUFFIX)]:
        size = len(os.fsencode(part)) + extra
        if size > name_max:
            which = "file name (with the counter, extension and temporary suffix the save adds)" if extra else \
                "folder name"
            raise FIAInputError(f"{what}: the {which} {_quoted(part)} is {size} bytes; this file system allows "
                                f"{name_max}. Shorten it by at least {size - name_max} bytes.")
    if total >= path_max:
        raise FIAInputError(f"{what}: the file's whole path would be {total:,} bytes; this file system allows "
                            f"{path_max - 1:,}. Use fewer or shorter folders (at least {total - path_max + 1:,} "
                            "bytes shorter).")


def _limit(folder: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):  # not reported on this system
        return default


def _quoted(text: str | Path) -> str:
    text = str(text)
    return repr(text if len(text) <= 40 else f"{text[:37]}...")


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


def _streams(path: str | Path, layers: list[PrunableLayer]) -> Iterator[tuple[str, PrunableLayer, torch.Tensor]]:
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


def _indices(name: str, key: str, layer: PrunableLayer, stream: torch.Tensor, encoding: str) -> torch.Tensor:
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
                          StatedSettings(header.hyperparameters), header.fingerprint)
    if header.pruned_weights is not None and header.pruned_weights != mask.pruned_count:
        raise refuse(name, "pruned_weights", f"claims {header.pruned_weights:,}, the streams hold {mask.pruned_count:,}")
    return mask
