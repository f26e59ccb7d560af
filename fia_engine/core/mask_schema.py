"""What a mask file may claim, checked before any index is decoded: shared masks come from strangers.

Every metadata field has a type and a bound that a real mask meets with room to spare: the header
is at most `MAX_HEADER_BYTES`; layers are the recorded family's FF layers (names its spec
recognises, at most its `max_layers`, each once, with that layer's stream and neuron columns);
shapes are whole numbers up to `MAX_DIM`, `MAX_LAYER_WEIGHTS` weights a layer; concepts are
1..`MAX_CONCEPTS` printable names of at most `MAX_NAME_CHARS`; hyperparameters are a JSON object
of finite numbers, short strings and at most `MAX_DEPTH` levels. Each refusal is an
FIAInputError naming the file, the field and the fix.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .architectures import DIFFUSION_PREFIX, LAYER_KINDS, LAYER_NAMES, PrunableLayer, spec_of_family
from .errors import FIAInputError
from .request import concept_key

FORMAT = "fia-unlearning-mask"
VERSION_ENCODINGS = {1: "leb128-gaps", 2: "rice-gaps", 3: "rice-gaps-by-column"}
FORMAT_VERSION = max(VERSION_ENCODINGS)
MAX_HEADER_BYTES = 4 << 20  # a 70-layer, 1000-concept mask needs well under 1 MB
MAX_CONCEPTS = 1000
MAX_NAME_CHARS = 200
MAX_TEXT_CHARS = 2000
MAX_DEPTH = 6
MAX_DIM = 1 << 16
MAX_LAYER_WEIGHTS = torch.iinfo(torch.int32).max  # the largest real layer (Flux linear2) has 47M
LAYER_FIELDS = {"key", "module_path", "shape", "neuron_start", "neuron_stop", "stream"}
OPTIONAL_LAYER_FIELDS = {"kind"}  # absent = ff2 (files written before the layer ablation)
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z0-9_]{1,64}){0,15}")
_FAMILY = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
_FINGERPRINT = re.compile(r"[0-9a-f]{0,64}")
_COUNT = re.compile(r"[0-9]{1,19}")
FIX = "Use a mask written by FIA Save Mask: ask its author for a fresh copy, or recompute it"


@dataclass(frozen=True)
class MaskHeader:
    """The checked metadata of a mask file."""

    version: int
    encoding: str
    architecture: str
    layers: list[PrunableLayer]
    concepts: list[str]
    hyperparameters: dict
    fingerprint: str
    pruned_weights: int | None


def refuse(name: str, field: str, problem: str, fix: str = FIX) -> FIAInputError:
    return FIAInputError(f"mask file '{name}': {field}: {problem}. {fix}.")


def check_header_size(path: str | Path) -> None:
    """Refuses a header too large for any mask before safetensors parses it (it allows 100 MB)."""
    name = Path(path).name
    try:
        with open(path, "rb") as handle:
            length, size = int.from_bytes(handle.read(8), "little"), os.fstat(handle.fileno()).st_size
    except OSError as error:
        raise refuse(name, "file", f"cannot be read ({error})", "Check the file and its permissions") from error
    if length > size - 8:
        raise refuse(name, "file", f"not a readable safetensors file (its header claims {length:,} bytes, the "
                                   f"file has {size:,})", "Choose a file written by FIA Save Mask")
    if length > MAX_HEADER_BYTES:
        raise refuse(name, "header", f"{length:,} bytes, more than a mask's {MAX_HEADER_BYTES:,}")


def _reject_constant(text: str):
    raise ValueError(f"{text} is not a finite number")


def parse_json(name: str, field: str, text: str):
    """JSON with NaN/Infinity refused and too-deep nesting turned into a refusal, not a RecursionError."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise refuse(name, field, f"not valid JSON ({str(error)[:80]})") from None


def _check_value(name: str, field: str, value, depth: int = 0) -> None:
    """Bounded JSON: at most MAX_DEPTH levels, short keys and strings (no NaN: parse_json refused it)."""
    if depth > MAX_DEPTH:
        raise refuse(name, field, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
        raise refuse(name, field, f"a text of {len(value):,} characters (at most {MAX_TEXT_CHARS:,})")
    if isinstance(value, dict):
        for key, item in value.items():
            if len(key) > MAX_NAME_CHARS:
                raise refuse(name, field, f"a key of {len(key):,} characters (at most {MAX_NAME_CHARS})")
            _check_value(name, f"{field}.{key[:40]}", item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(name, field, item, depth + 1)


def _whole(name: str, field: str, value, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise refuse(name, field, f"{str(value)[:40]!r} is not a whole number from {low} to {high:,}")
    return value


def _text(name: str, field: str, metadata: dict[str, str], pattern: re.Pattern, default: str | None = None) -> str:
    value = metadata.get(field, default)
    if value is None:
        raise refuse(name, field, "missing")
    if not pattern.fullmatch(value):
        raise refuse(name, field, f"{value[:40]!r} is not a valid value")
    return value


def _layer(name: str, number: int, data, spec) -> PrunableLayer:
    field = f"layers[{number}]"
    if not isinstance(data, dict) or not LAYER_FIELDS <= set(data) <= LAYER_FIELDS | OPTIONAL_LAYER_FIELDS:
        raise refuse(name, field, f"must be an object with the fields {', '.join(sorted(LAYER_FIELDS))} "
                                  f"(and optionally {', '.join(sorted(OPTIONAL_LAYER_FIELDS))})")
    path = data["module_path"]
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        raise refuse(name, f"{field}.module_path", f"{str(path)[:60]!r} is not a module path")
    probe = torch.nn.Linear(1, 1, device="meta")
    if not spec.is_prunable(path, probe):
        raise refuse(name, f"{field}.module_path", f"'{path}' is not a {LAYER_NAMES[spec.layers]} of {spec.family} models")
    if data["key"] != f"{DIFFUSION_PREFIX}{path}.weight":
        raise refuse(name, f"{field}.key", f"must be '{DIFFUSION_PREFIX}{path}.weight'")
    shape = data["shape"]
    if not isinstance(shape, list) or len(shape) != 2:
        raise refuse(name, f"{field}.shape", "must be [rows, columns]")
    rows, columns = (_whole(name, f"{field}.shape", size, 1, MAX_DIM) for size in shape)
    if rows * columns > MAX_LAYER_WEIGHTS:
        raise refuse(name, f"{field}.shape", f"{rows}x{columns} is larger than any supported layer")
    stream = spec.stream_of(path)
    if data["stream"] != stream:
        raise refuse(name, f"{field}.stream", f"{str(data['stream'])[:20]!r}, but that layer is in the '{stream}' stream")
    start, stop = spec.neuron_range(path, torch.nn.Linear(columns, rows, device="meta"))
    claimed = (data["neuron_start"], data["neuron_stop"])
    if claimed != (start, stop) or any(type(value) is not int for value in claimed):
        raise refuse(name, f"{field}.neuron_start/neuron_stop", f"that layer's neurons are columns {start}..{stop}")
    return PrunableLayer(data["key"], path, rows, columns, start, stop, stream, spec.layers)


def check_layers(name: str, architecture: str, data) -> list[PrunableLayer]:
    """The family's FF layers, each once, at most as many as its largest model has."""
    spec = spec_of_family(architecture)
    if spec.unsupported:
        raise refuse(name, "architecture", f"{architecture} models are not supported ({spec.unsupported})")
    if not isinstance(data, list):
        raise refuse(name, "layers", "must be a list of layers")
    if not data:
        raise refuse(name, "layers", "the mask lists no layers, so it would change nothing",
                     "Compute the mask again on a model and save it with FIA Save Mask")
    kind = data[0].get("kind", "ff2") if isinstance(data[0], dict) else "ff2"
    if not isinstance(kind, str) or kind not in LAYER_KINDS:
        raise refuse(name, "layers[0].kind", f"{str(kind)[:40]!r} is not one of {', '.join(LAYER_KINDS)}")
    if any(isinstance(item, dict) and item.get("kind", "ff2") != kind for item in data):
        raise refuse(name, "layers", "its layers are of more than one kind; a mask covers one kind")
    try:
        spec = spec.with_layers(kind)
    except FIAInputError as error:
        raise refuse(name, "layers[0].kind", str(error).removeprefix("layers: ").rstrip(".")) from None
    if len(data) > spec.max_layers:
        which = "" if kind == "ff2" else f" {kind}"
        raise refuse(name, "layers", f"{len(data):,}{which} layers, but {architecture} models have at most "
                                     f"{spec.max_layers}")
    layers = [_layer(name, number, item, spec) for number, item in enumerate(data)]
    if len({layer.key for layer in layers}) != len(layers):
        raise refuse(name, "layers", "a layer is listed twice")
    return layers


def check_concepts(name: str, data, field: str = "concepts") -> list[str]:
    if not isinstance(data, list) or not 1 <= len(data) <= MAX_CONCEPTS:
        raise refuse(name, field, f"must be a list of 1 to {MAX_CONCEPTS} names")
    for concept in data:
        if not isinstance(concept, str) or not 1 <= len(concept) <= MAX_NAME_CHARS or not concept.isprintable():
            raise refuse(name, field, f"{str(concept)[:40]!r} is not a printable name of 1 to "
                                      f"{MAX_NAME_CHARS} characters")
    if len({concept_key(c) for c in data}) != len(data):
        raise refuse(name, field, "a concept is listed twice")
    return data


def check_hyperparameters(name: str, data, concepts: list[str]) -> dict:
    """A bounded JSON object whose known entries have the types the Inspector and nodes read."""
    if not isinstance(data, dict):
        raise refuse(name, "hyperparameters", "must be a JSON object")
    _check_value(name, "hyperparameters", data)
    alpha = data.get("alpha", 0.5)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise refuse(name, "hyperparameters.alpha", f"{str(alpha)[:40]!r} is not a fraction from 0 to 1")
    for field, kind in (("per_concept", dict), ("saliency", dict), ("fusion", str)):
        if field in data and not isinstance(data[field], kind):
            raise refuse(name, f"hyperparameters.{field}", f"must be a JSON {'object' if kind is dict else 'string'}")
    per_concept = data.get("per_concept", {})
    if not set(per_concept) <= set(concepts) or not all(isinstance(v, dict) for v in per_concept.values()):
        raise refuse(name, "hyperparameters.per_concept", "must hold one settings object per listed concept")
    if not isinstance(data.get("saliency", {}).get("sampling", {}), dict):
        raise refuse(name, "hyperparameters.saliency.sampling", "must be a JSON object")
    if "keep" in data:
        keep = data["keep"]
        spared = keep.get("weights_spared") if isinstance(keep, dict) else None
        if (not isinstance(keep, dict) or isinstance(spared, bool) or not isinstance(spared, int) or spared < 0
                or not isinstance(keep.get("concepts"), list)):
            raise refuse(name, "hyperparameters.keep", "must be an object with a 'concepts' list and 'weights_spared' >= 0")
        check_concepts(name, keep["concepts"], field="hyperparameters.keep.concepts")
    return data


def check_metadata(name: str, metadata: dict[str, str]) -> MaskHeader:
    """Every field of the file's metadata, typed and bounded; unknown extra fields are ignored."""
    if metadata.get("format") != FORMAT:
        raise refuse(name, "format", f"this safetensors file is not an FIA mask (no '{FORMAT}' metadata); it may "
                                     "be a checkpoint or LoRA", "Choose a file written by FIA Save Mask")
    version = int(_text(name, "format_version", metadata, _COUNT))
    if version > FORMAT_VERSION:
        raise refuse(name, "format_version", f"{version} is newer than this pack reads", "Update the pack")
    if version not in VERSION_ENCODINGS or metadata.get("index_encoding") != VERSION_ENCODINGS[version]:
        raise refuse(name, "index_encoding", f"format {version} files use '{VERSION_ENCODINGS.get(version)}', "
                                             f"not {str(metadata.get('index_encoding'))[:40]!r}")
    architecture = _text(name, "architecture", metadata, _FAMILY)
    layers = check_layers(name, architecture, parse_json(name, "layers", metadata.get("layers", "null")))
    concepts = check_concepts(name, parse_json(name, "concepts", metadata.get("concepts", "null")))
    hyper = parse_json(name, "hyperparameters", metadata.get("hyperparameters", "{}"))
    hyper = check_hyperparameters(name, hyper, concepts)
    pruned = metadata.get("pruned_weights")
    if pruned is not None and not _COUNT.fullmatch(pruned):
        raise refuse(name, "pruned_weights", f"{pruned[:40]!r} is not a count")
    total = metadata.get("total_weights")
    if total is not None and total != str(sum(layer.out_features * layer.in_features for layer in layers)):
        raise refuse(name, "total_weights", f"{total[:40]!r} is not the sum of its layers' sizes")
    return MaskHeader(version, VERSION_ENCODINGS[version], architecture, layers, concepts, hyper,
                      _text(name, "fingerprint", metadata, _FINGERPRINT, ""), None if pruned is None else int(pruned))
