"""Mask files are shared, so every claim a hostile file can make is refused with a clear FIAInputError,
early and in bounded memory. Files are forged here by code from a valid tiny mask (no binaries)."""

from __future__ import annotations

import json
import random
import re
import signal
import struct
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from devkit import tiny

MEMORY_LIMIT = 64 << 20  # peak RSS growth allowed while loading one forged file (files are <= 13 MB)


@contextmanager
def peak_growth():
    """Peak resident memory above the starting point while the block runs (Linux: the peak is reset first)."""
    from fia_pack.fia_engine.core.memory import process_memory_bytes, release_freed_memory

    release_freed_memory()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    result = {"before": process_memory_bytes("VmRSS")}
    yield result
    result["growth"] = process_memory_bytes("VmHWM") - result["before"]


@pytest.fixture(scope="module")
def model():
    return tiny.tiny_sd15_patcher(seed=0)


@pytest.fixture(scope="module")
def valid(engine, model):
    """A mask on the tiny SD1.5 layers: seeded random pruned and kept weights, disjoint."""
    _, layers = engine.layers_of_patcher(model)
    gen = torch.Generator().manual_seed(0)
    pruned, kept = {}, {}
    for layer in layers:
        order = torch.randperm(layer.out_features * layer.in_features, generator=gen)
        pruned[layer.key] = order[:300].sort().values.int()
        kept[layer.key] = order[300:400].sort().values.int()
    hyper = {"alpha": 0.6, "fusion": "concept-agnostic", "agnostic_threshold": 2,
             "per_concept": {c: {"r1": 0.05, "r2": 0.01} for c in ("cat", "dog", "bird")},
             "saliency": {"seed": 1244, "sampling": {"steps": 50, "recorded_steps": 10}}}
    return engine.UnlearningMask("SD1.x", layers, pruned, kept, ["cat", "dog", "bird"],
                                 engine.masks.StatedSettings(hyper), "00ff00ff00ff00ff")


@pytest.fixture(scope="module")
def parts(engine, valid, tmp_path_factory):
    """(tensors, metadata) of the valid mask's file, to forge from."""
    path = engine.save_mask(valid, tmp_path_factory.mktemp("valid") / "valid.safetensors")
    return load_file(str(path)), engine.read_metadata(path)


def first_key(parts) -> str:
    return next(key for key in parts[0] if key.startswith("pruned/"))


def layers_json(parts) -> list[dict]:
    return json.loads(parts[1]["layers"])


def with_meta(**changes):
    return lambda parts, tmp: (parts[0], parts[1] | changes)


def with_layer(**changes):
    def forge(parts, tmp):
        layers = layers_json(parts)
        layers[0] |= changes
        return parts[0], parts[1] | {"layers": json.dumps(layers)}
    return forge


def with_stream(stream_of):
    """The first pruned stream replaced by stream_of(layer size)."""
    def forge(parts, tmp):
        numel = int(np.prod(layers_json(parts)[0]["shape"]))
        return parts[0] | {first_key(parts): stream_of(numel)}, parts[1]
    return forge


def rice_header(count: int, k: int, unary_bits: int, overflow: int) -> torch.Tensor:
    return torch.tensor(list(struct.pack("<4Q", count, k, unary_bits, overflow)), dtype=torch.uint8)


def huge_count(numel: int) -> torch.Tensor:
    """100 million gap-0 'duplicates' in a consistent 12.5 MB stream (the old loader decoded all of them)."""
    count = 100_000_000
    return torch.cat([rice_header(count, 0, count, 0), torch.zeros(count // 8, dtype=torch.uint8)])


def duplicates(numel: int) -> torch.Tensor:
    return torch.cat([rice_header(numel, 0, numel, 0), torch.zeros(-(-numel // 8), dtype=torch.uint8)])


def gaps(values: list[int], k: int):
    from fia_pack.fia_engine.core.index_codec import encode_rice_gaps

    return lambda numel: encode_rice_gaps(np.array(values, dtype=np.uint64), k)


def wrapping(numel: int) -> torch.Tensor:
    """Gaps summing to 2^64 + 3,000,000: an index of 3,000,000 wrapped back between valid ones."""
    return gaps([100, 2**63, 2**63 - 100 + 3_000_000, 7], k=2)(numel)


def overlap(parts, tmp):
    key = first_key(parts)
    return parts[0] | {key.replace("pruned/", "kept/"): parts[0][key].clone()}, parts[1]


def many_layers(parts, tmp):
    layer = layers_json(parts)[0]
    return parts[0], parts[1] | {"layers": json.dumps([layer] * 2500)}


def big_header(parts, tmp):
    return parts[0], parts[1] | {"concepts": json.dumps([f"concept {i}" for i in range(1_000_000)])}


def raw_file(data: bytes):
    def forge(parts, tmp):
        return data
    return forge


CASES = {
    "2,500 layers": (many_layers, r"layers: 2,500 layers, but SD1.x models have at most 16"),
    "a million concepts (13 MB header)": (big_header, r"header: [\d,]+ bytes, more than a mask's 4,194,304"),
    "100M indices in a 4,096-weight layer": (
        with_stream(huge_count), r"damaged index stream: the stream claims 100,000,000 indices, more than the layer's"),
    "gap-0 duplicates": (with_stream(duplicates), r"damaged index stream: an index is repeated"),
    "gaps wrapping around 2^64": (with_stream(wrapping), r"damaged index stream: a gap is longer than any gap inside"),
    "index past the layer": (
        with_stream(lambda numel: gaps([5, numel], k=3)(numel)), r"damaged index stream: an index .*lies outside the layer \(4,096 weights\)"),
    "unary run without end": (
        with_stream(lambda numel: torch.cat([rice_header(numel, 0, 33 * numel, 0), torch.full((33 * numel // 8,), 255, dtype=torch.uint8)])),
        r"a unary quotient is longer than the code allows"),
    "pruned and kept overlap": (overlap, r"kept/.*: a weight is both pruned and kept"),
    "layers []": (with_meta(layers="[]"), r"layers: the mask lists no layers, so it would change nothing"),
    "layers not a list": (with_meta(layers='{"a": 1}'), r"layers: must be a list of layers"),
    "missing architecture": (lambda p, t: (p[0], {k: v for k, v in p[1].items() if k != "architecture"}),
                             r"architecture: missing"),
    "architecture of another family": (with_meta(architecture="SD3"), r"is not a feed-forward layer of SD3 models"),
    "unsupported architecture": (with_meta(architecture="Flux.2"), r"architecture: Flux.2 models are not supported"),
    "format_version abc": (with_meta(format_version="abc"), r"format_version: 'abc' is not a valid value"),
    "format_version from the future": (with_meta(format_version="9"), r"format_version: 9 is newer .* Update the pack"),
    "encoding of another version": (with_meta(index_encoding="leb128-gaps"),
                                    r"index_encoding: format 3 files use 'rice-gaps-by-column'"),
    "hyperparameters nested 100k deep": (with_meta(hyperparameters="[" * 100_000 + "]" * 100_000),
                                         r"hyperparameters: not valid JSON"),
    "hyperparameters nested 8 deep": (with_meta(hyperparameters=json.dumps({"a": [[[[[[[1]]]]]]]})),
                                      r"hyperparameters.a: nested deeper than 6 levels"),
    "hyperparameters as a list": (with_meta(hyperparameters="[1, 2]"), r"hyperparameters: must be a JSON object"),
    "NaN alpha": (with_meta(hyperparameters='{"alpha": NaN}'), r"hyperparameters: not valid JSON \(NaN is not a finite"),
    "alpha 7": (with_meta(hyperparameters='{"alpha": 7}'), r"hyperparameters.alpha: '7' is not a fraction"),
    "per_concept a number": (with_meta(hyperparameters='{"per_concept": 3}'),
                             r"hyperparameters.per_concept: must be a JSON object"),
    "per_concept of other concepts": (with_meta(hyperparameters='{"per_concept": {"zebra": {}}}'),
                                      r"hyperparameters.per_concept: must hold one settings object per listed concept"),
    "a 100k-character setting": (with_meta(hyperparameters=json.dumps({"fusion": "x" * 100_000})),
                                 r"hyperparameters.fusion: a text of 100,000 characters"),
    "concepts a string": (with_meta(concepts='"cat"'), r"concepts: must be a list of 1 to 1000 names"),
    "concepts a number": (with_meta(concepts="7"), r"concepts: must be a list of 1 to 1000 names"),
    "no concepts": (with_meta(concepts="[]"), r"concepts: must be a list of 1 to 1000 names"),
    "a 1 MB concept name": (with_meta(concepts=json.dumps(["x" * 1_000_000])),
                            r"concepts: 'xxx.*' is not a printable name of 1 to 200 characters"),
    "a concept name with a newline": (with_meta(concepts=json.dumps(["cat\nrm -rf"])), r"is not a printable name"),
    "a concept listed twice": (with_meta(concepts=json.dumps(["cat", "Cat"])), r"concepts: a concept is listed twice"),
    "a 10 MB fingerprint": (with_meta(fingerprint="f" * 10_000_000), r"header: [\d,]+ bytes, more than a mask's"),
    "a 1,000-character fingerprint": (with_meta(fingerprint="f" * 1000), r"fingerprint: 'fff.*' is not a valid value"),
    "shape 1e30": (with_layer(shape=[1e30, 4]), r"layers\[0\].shape: '1e\+30' is not a whole number from 1 to 65,536"),
    "shape Infinity": (with_meta(layers='[{"shape": [Infinity, 4]}]'), r"layers: not valid JSON \(Infinity"),
    "fractional shape": (with_layer(shape=[32.5, 128]), r"layers\[0\].shape: '32.5' is not a whole number"),
    "negative shape": (with_layer(shape=[-32, 128]), r"layers\[0\].shape: '-32' is not a whole number"),
    "boolean shape": (with_layer(shape=[True, 128]), r"layers\[0\].shape: 'True' is not a whole number"),
    "three-number shape": (with_layer(shape=[32, 128, 1]), r"layers\[0\].shape: must be \[rows, columns\]"),
    "a 2^32-weight layer": (with_layer(shape=[65536, 65536]), r"layers\[0\].shape: 65536x65536 is larger than any"),
    "a layer that is not FF": (with_layer(module_path="input_blocks.1.1.proj_out",
                                          key="diffusion_model.input_blocks.1.1.proj_out.weight"),
                               r"layers\[0\].module_path: 'input_blocks.1.1.proj_out' is not a feed-forward layer"),
    "a key that is not the path": (with_layer(key="diffusion_model.out.2.weight"), r"layers\[0\].key: must be"),
    "a path with odd characters": (with_layer(module_path="../../etc/passwd"), r"layers\[0\].module_path: .* is not a module path"),
    "an extra layer field": (with_layer(extra=1), r"layers\[0\]: must be an object with the fields key, module_path, neuron_start, neuron_stop, shape, stream \(and optionally kind\)"),
    "a wrong stream": (with_layer(stream="img"), r"layers\[0\].stream: 'img', but that layer is in the 'unet' stream"),
    "neuron columns not the layer's": (with_layer(neuron_start=3), r"layers\[0\].neuron_start/neuron_stop: that layer's"),
    "fractional neuron column": (with_layer(neuron_start=0.0), r"layers\[0\].neuron_start/neuron_stop"),
    "a layer listed twice": (lambda p, t: (p[0], p[1] | {"layers": json.dumps(layers_json(p)[:1] * 2)}),
                             r"layers: a layer is listed twice"),
    "a missing stream": (lambda p, t: ({k: v for k, v in p[0].items() if k != first_key(p)}, p[1]),
                         r"tensors: missing tensor 'pruned/"),
    "an extra tensor": (lambda p, t: (p[0] | {"pickle": torch.zeros(3, dtype=torch.uint8)}, p[1]),
                        r"tensors: unexpected tensor 'pickle'"),
    "a float stream": (lambda p, t: (p[0] | {first_key(p): torch.zeros(40)}, p[1]), r"a F32 tensor of shape \[40\]"),
    "pruned_weights lie": (with_meta(pruned_weights="5"), r"pruned_weights: claims 5, the streams hold 2,100"),
    "pruned_weights not a count": (with_meta(pruned_weights="-1"), r"pruned_weights: '-1' is not a count"),
    "total_weights lie": (with_meta(total_weights="12"), r"total_weights: '12' is not the sum"),
    "not safetensors": (raw_file(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      "),
                        r"file: not a readable safetensors file"),
    "header longer than the file": (raw_file((1 << 40).to_bytes(8, "little") + b"{}"),
                                    r"file: not a readable safetensors file \(its header claims"),
    "not a mask": (with_meta(format="lora"), r"format: this safetensors file is not an FIA mask"),
}


def forge_file(case, parts, tmp_path) -> Path:
    forged = case(parts, tmp_path)
    path = tmp_path / "forged.safetensors"
    if isinstance(forged, bytes):
        path.write_bytes(forged)
    else:
        tensors, metadata = forged
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("name", CASES)
def test_hostile_mask_is_refused_early_in_bounded_memory(engine, parts, tmp_path, name):
    case, message = CASES[name]
    path = forge_file(case, parts, tmp_path)
    with peak_growth() as memory, pytest.raises(engine.FIAInputError) as refused:
        engine.load_mask(path)
    text = str(refused.value)
    assert text.startswith("mask file 'forged.safetensors': ")
    assert text.endswith(".") and len(text) < 600  # a field, the problem and the fix; never the hostile value
    assert re.search(message, text), text
    print(f"{name}: peak +{memory['growth'] / 2**20:.1f} MB")
    assert memory["growth"] < MEMORY_LIMIT


def test_valid_forge_base_loads(engine, parts, valid, tmp_path):
    """The forgeries differ from a loadable file only by what each case changes."""
    mask = engine.load_mask(forge_file(lambda p, t: p, parts, tmp_path))
    assert all(torch.equal(mask.pruned[k], valid.pruned[k]) for k in valid.pruned)
    assert engine.mask_io.settings_json(mask.settings) == engine.mask_io.settings_json(valid.settings)


def test_decoders_refuse_before_reading_the_rest(engine):
    """A bad index in the first chunk stops decoding there: the rest of a long stream is never read."""
    codec = engine.index_codec
    limit, ones = 4_000_000, [1] * 2_000_000

    def seconds(call) -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    full = seconds(lambda: codec.decode_rice(codec.encode_rice_gaps(np.array(ones, dtype=np.uint64), 0), limit))
    for gaps, message in (([5, 0] + ones, "an index is repeated"), ([limit - 10] + ones, "lies outside the layer")):
        stream = codec.encode_rice_gaps(np.array(gaps, dtype=np.uint64), 0)
        start = time.perf_counter()
        with pytest.raises(ValueError, match=message):
            codec.decode_rice(stream, limit)
        assert time.perf_counter() - start < 0.2 * full
    with pytest.raises(ValueError, match="a gap is longer than any gap inside the layer"):
        codec.decode_sorted(codec.encode_sorted(torch.tensor([3, 3 + 2**40])), limit=4096)


ITERATIONS = 1500
MUTATIONS = ("header byte", "metadata value", "layer field", "stream byte", "stream header", "stream length")
HOSTILE_VALUES = ["", "-1", "0", "1e30", "NaN", "[]", "{}", "null", "true", '"x"', "[[[[[[[[]]]]]]]]", "x" * 5000,
                  json.dumps({"alpha": "x"}), "9" * 30, "[1, 2.5]", json.dumps(["a"] * 3)]

LAYER_VALUES = [-1, 0, 65, 2**40, 1e30, 2.5, None, True, "x", [], {}, [4096, 1], [1, 4096], [32, 128.5],
                "input_blocks.1.1.proj_out", "output_blocks.3.1.transformer_blocks.0.ff.net.2"]


def mutate(rng: random.Random, data: bytes, parts) -> bytes:
    """One random damage to a valid file's bytes: its JSON header, a metadata value, a layer's field,
    or an index stream (bytes, its four header numbers, its length)."""
    kind = rng.choice(MUTATIONS)
    tensors, metadata = dict(parts[0]), dict(parts[1])
    if kind == "header byte":
        length = int.from_bytes(data[:8], "little")
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            out[8 + rng.randrange(length)] = rng.randrange(256)
        return bytes(out)
    if kind == "metadata value":
        metadata[rng.choice(sorted(metadata))] = rng.choice(HOSTILE_VALUES)
    elif kind == "layer field":
        layers = json.loads(metadata["layers"])
        layer = rng.choice(layers)
        layer[rng.choice(sorted(layer))] = rng.choice(LAYER_VALUES)
        metadata["layers"] = json.dumps(layers)
    else:
        key = rng.choice(sorted(tensors))
        stream = tensors[key].clone()
        if kind == "stream byte" and stream.numel():
            for _ in range(rng.randint(1, 3)):
                stream[rng.randrange(stream.numel())] = rng.randrange(256)
        elif kind == "stream header":
            field = rng.randrange(4)
            value = rng.choice([0, 1, 2**31, 2**63, 2**64 - 1, rng.randrange(2**16)])
            stream[8 * field: 8 * field + 8] = torch.tensor(list(value.to_bytes(8, "little")), dtype=torch.uint8)
        else:
            cut = rng.randrange(stream.numel() + 1)
            stream = torch.cat([stream[:cut], torch.randint(0, 256, (rng.randrange(3),), dtype=torch.uint8)])
        tensors[key] = stream
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)


@pytest.mark.slow
def test_fuzzed_masks_load_and_apply_or_are_refused(engine, pack, parts, model, tmp_path):
    """Seeded damage to a valid file: every outcome is a mask that applies and inspects cleanly, or an
    FIAInputError; never another exception, a hang or a blow-up."""
    from fia_pack.fia_engine.core.inspection import fused_mask_chart, fused_mask_summary
    from fia_pack.nodes.chart import render_chart

    rng = random.Random(20240615)
    data = (tmp_path / "valid.safetensors")
    save_file({k: v.contiguous() for k, v in parts[0].items()}, str(data), metadata=parts[1])
    valid_bytes = data.read_bytes()
    path = tmp_path / "fuzzed.safetensors"
    outcomes = {"refused": 0, "loaded": 0}

    def too_slow(signum, frame):
        raise TimeoutError("one fuzzed file took over 10 s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    start = time.perf_counter()
    try:
        with peak_growth() as memory:
            for _ in range(ITERATIONS):
                path.write_bytes(mutate(rng, valid_bytes, parts))
                signal.alarm(10)
                try:
                    mask = engine.load_mask(path)
                    patched = engine.apply_mask(model, mask)  # may refuse a mask of another family or shapes
                except engine.FIAInputError:
                    outcomes["refused"] += 1
                    continue
                finally:
                    signal.alarm(0)
                patched.patch_model()
                patched.unpatch_model()
                fused_mask_summary(mask)
                render_chart(fused_mask_chart(mask))
                outcomes["loaded"] += 1
    finally:
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - start
    assert outcomes["refused"] > ITERATIONS // 2 and outcomes["loaded"] > 20, outcomes  # both paths are exercised
    assert memory["growth"] < MEMORY_LIMIT
    print(f"fuzz: {outcomes}, {elapsed:.1f} s, peak +{memory['growth'] / 2**20:.1f} MB")
