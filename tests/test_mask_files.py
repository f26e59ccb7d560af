"""Mask files: safetensors round trip, metadata, refusals with clear messages."""

import dataclasses
import json

import folder_paths
import pytest
import torch
from chain import apply_node, fuse_node, saliency_node, select_node
from safetensors.torch import save_file

from devkit import tiny


@pytest.fixture(scope="module")
def mask(pack, tiny_clip):
    model = tiny.tiny_sd15_patcher(seed=0)
    return fuse_node(pack, select_node(pack, saliency_node(pack, model, tiny_clip, recorded_steps=1)))


@pytest.fixture()
def mask_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "fia_masks", ([str(tmp_path)], {".safetensors"}))
    return tmp_path


def test_mask_folder_keeps_a_users_extra_path_and_filters_safetensors(pack, monkeypatch, tmp_path):
    extra = str(tmp_path / "mine")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "fia_masks", ([extra], set()))  # as extra_model_paths does
    pack.nodes.mask_files.register_mask_folder()
    paths, extensions = folder_paths.folder_names_and_paths["fia_masks"]
    assert paths[0] == extra and paths[1].endswith("fia_masks") and extensions == {".safetensors"}


def test_save_then_load_gives_identical_mask(pack, mask, mask_folder):
    saved = pack.nodes.FIASaveMask.execute(mask=mask, filename_prefix="runs/objects")
    path = saved[0]
    assert "runs/objects_00001_.safetensors" in saved.ui.as_dict()["text"][0]
    assert path.startswith(str(mask_folder)) and path.endswith(".safetensors")
    name = next(n for n in folder_paths.get_filename_list("fia_masks"))
    loaded = pack.nodes.FIALoadMask.execute(mask_name=name)[0]
    assert loaded.concepts == mask.concepts and loaded.architecture == "SD1.x"
    assert loaded.fingerprint == mask.fingerprint and loaded.layers == mask.layers
    for key in mask.pruned:
        assert torch.equal(loaded.pruned[key], mask.pruned[key])
        assert torch.equal(loaded.kept_agnostic[key], mask.kept_agnostic[key])
    meta = pack.fia_engine.read_metadata(path)
    assert meta["format"] == "fia-unlearning-mask" and meta["format_version"] == "3" and meta["index_encoding"] == "rice-gaps-by-column"
    assert json.loads(meta["concepts"]) == ["cat", "dog", "bird"]
    hyper = json.loads(meta["hyperparameters"])
    assert hyper["alpha"] == 0.6 and hyper["per_concept"]["cat"]["r2"] == 0.05
    assert hyper["saliency"]["sampling"]["recorded_steps"] == 1
    assert int(meta["pruned_weights"]) == mask.pruned_count


def test_mask_for_other_shapes_is_refused(pack, engine, mask):
    wider = tiny.tiny_sd15_patcher(seed=0, unet_config=tiny.TINY_SD15_UNET | {"model_channels": 64})
    with pytest.raises(engine.FIAInputError, match="layer shapes differ"):
        apply_node(pack, wider, mask)


def test_mask_for_other_architecture_is_refused(pack, engine, mask):
    sdxl_mask = dataclasses.replace(mask, architecture="SDXL")
    with pytest.raises(engine.FIAInputError, match="computed for a SDXL model but the model is SD1.x"):
        apply_node(pack, tiny.tiny_sd15_patcher(), sdxl_mask)


def test_other_finetune_gets_a_warning(pack, mask, caplog):
    with caplog.at_level("WARNING"):
        apply_node(pack, tiny.tiny_sd15_patcher(seed=42), mask)
    assert "other weights" in caplog.text


def test_corrupt_and_foreign_files_are_refused(engine, tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(engine.FIAInputError, match="not a readable safetensors file"):
        engine.load_mask(garbage)
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_up.weight": torch.zeros(2, 2)}, str(lora), metadata={"ss_network_dim": "2"})
    with pytest.raises(engine.FIAInputError, match="not an FIA mask"):
        engine.load_mask(lora)


def test_damaged_mask_is_refused(engine, mask, tmp_path):
    path = engine.save_mask(mask, tmp_path / "m.safetensors")
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    metadata = engine.read_metadata(path)
    key = next(iter(tensors))
    codec = engine.index_codec
    good = tensors[key]
    tensors[key] = codec.encode_rice(torch.tensor([3, 10**9]))
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(engine.FIAInputError, match=f"{key}: damaged index stream: Rice parameter 28 is wider"):
        engine.load_mask(path)
    for damaged in (good[:-1], good[:20], torch.cat([good, good[-1:]])):  # truncated, no header, trailing byte
        tensors[key] = damaged.contiguous()
        save_file(tensors, str(path), metadata=metadata)
        with pytest.raises(engine.FIAInputError, match="damaged index stream"):
            engine.load_mask(path)


@pytest.mark.parametrize("version, encoding, code", [("1", "leb128-gaps", "sorted"), ("2", "rice-gaps", "rice")])
def test_older_mask_formats_still_load(engine, mask, tmp_path, version, encoding, code):
    """Files written before column-by-column storage (format 2: Rice gaps row by row) and before
    the Rice code (format 1: varint gaps) keep working."""
    path = engine.save_mask(mask, tmp_path / "m.safetensors")
    metadata = engine.read_metadata(path) | {"format_version": version, "index_encoding": encoding}
    encode = getattr(engine.index_codec, f"encode_{code}")
    tensors = {f"pruned/{k}": encode(v) for k, v in mask.pruned.items()}
    tensors |= {f"kept/{k}": encode(v) for k, v in mask.kept_agnostic.items()}
    save_file(tensors, str(path), metadata=metadata)
    loaded = engine.load_mask(path)
    assert all(torch.equal(loaded.pruned[k], mask.pruned[k]) for k in mask.pruned)
    assert all(torch.equal(loaded.kept_agnostic[k], mask.kept_agnostic[k]) for k in mask.kept_agnostic)
    if code == "sorted":
        tensors[next(iter(tensors))] = torch.tensor([0x85], dtype=torch.uint8)  # continuation byte, nothing after
        save_file(tensors, str(path), metadata=metadata)
        with pytest.raises(engine.FIAInputError, match="damaged"):
            engine.load_mask(path)


def test_column_order_round_trips_and_shrinks_neuron_concentrated_masks(engine):
    """Masks that crowd into a few neurons (columns), as FIA's do, store in far fewer bytes read
    column by column; scattered masks cost about the same either way."""
    codec = engine.index_codec
    gen = torch.Generator().manual_seed(0)
    shape = (320, 1280)
    scattered = torch.randperm(shape[0] * shape[1], generator=gen)[:20_000].sort().values
    columns = torch.randperm(shape[1], generator=gen)[:64]
    dense = torch.rand(shape, generator=gen) < 0.5
    concentrated = (torch.zeros(shape, dtype=torch.bool).index_fill_(1, columns, True) & dense).flatten().nonzero().flatten()
    for indices in (scattered, concentrated):
        by_column = codec.column_major(indices, shape)
        assert torch.equal(codec.row_major(by_column, shape), indices)
    size = {name: {order: codec.encode_rice(f(idx, shape) if f else idx).numel()
                   for order, f in (("rows", None), ("columns", codec.column_major))}
            for name, idx in (("scattered", scattered), ("concentrated", concentrated))}
    assert size["concentrated"]["columns"] < 0.5 * size["concentrated"]["rows"]
    assert 0.95 < size["scattered"]["columns"] / size["scattered"]["rows"] < 1.05


INDEX_CASES = [[], [0], [0, 1, 2], [5, 6, 7], [127, 128, 16383, 16384, 2**31 + 5, 2**40],
               list(range(0, 4000, 37)) + [10**7, 10**7 + 1, 3 * 10**7]]  # long gaps use the varint overflow


@pytest.mark.parametrize("code", ["sorted", "rice"])
@pytest.mark.parametrize("indices", INDEX_CASES)
def test_index_codec_round_trip(engine, indices, code):
    encode, decode = getattr(engine.index_codec, f"encode_{code}"), getattr(engine.index_codec, f"decode_{code}")
    original = torch.tensor(indices, dtype=torch.int64)
    encoded = encode(original)
    assert encoded.dtype == torch.uint8 and torch.equal(decode(encoded), original)


@pytest.mark.parametrize("density, entropy_bits", [(0.06, 5.45), (0.01, 8.08), (0.001, 11.4)])
def test_rice_code_is_near_the_entropy_of_random_indices(engine, density, entropy_bits):
    """Per index, within 0.3 bits of log2-binomial entropy (varints: 8-16 bits)."""
    gen = torch.Generator().manual_seed(0)
    size = 2_000_000
    indices = torch.randperm(size, generator=gen)[: int(size * density)].sort().values
    encoded = engine.index_codec.encode_rice(indices)
    bits = 8 * encoded.numel() / indices.numel()
    assert entropy_bits - 0.1 < bits < entropy_bits + 0.3
    assert bits < 8 * engine.index_codec.encode_sorted(indices).numel() / indices.numel()
    assert torch.equal(engine.index_codec.decode_rice(encoded), indices)


def test_equal_masks_save_to_identical_bytes(engine, mask, tmp_path):
    """Users share and hash mask files: the bytes must depend on the mask alone."""
    extra = {f"note_{i}": str(i) for i in range(8)}
    first = engine.save_mask(mask, tmp_path / "a.safetensors", extra).read_bytes()
    again = [engine.save_mask(mask, tmp_path / f"{i}.safetensors", dict(reversed(extra.items()))).read_bytes()
             for i in range(3)]
    assert all(data == first for data in again)
    header_length = int.from_bytes(first[:8], "little")
    assert header_length % 8 == 0
    assert engine.read_metadata(tmp_path / "a.safetensors")["note_7"] == "7"


def test_load_mask_lists_a_mask_saved_after_start(pack, mask, mask_folder):
    """The browser's list comes from INPUT_TYPES, which ComfyUI asks again on every refresh."""
    def listed():
        kind, options = pack.nodes.FIALoadMask.INPUT_TYPES()["required"]["mask_name"]
        assert kind == "COMBO"
        return options["options"]

    assert not any(name.startswith("later") for name in listed())
    pack.nodes.FIASaveMask.execute(mask=mask, filename_prefix="later")
    assert "later_00001_.safetensors" in listed()


def test_saves_with_one_prefix_never_replace_each_other(engine, mask, mask_folder):
    """Another process took the counter this save computed: the save moves on, the other file stays;
    concurrent saves get one file each and leave no temporaries."""
    from concurrent.futures import ThreadPoolExecutor

    save = engine.mask_io.save_numbered_mask
    taken = mask_folder / "race_00001_.safetensors"
    taken.write_bytes(b"another process's mask")
    assert save(mask, mask_folder, "race", 1).name == "race_00002_.safetensors"
    assert taken.read_bytes() == b"another process's mask"
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: save(mask, mask_folder, "race", 1), range(8)))
    assert len(set(paths)) == 8 and all(engine.load_mask(path).concepts == mask.concepts for path in paths)
    assert not list(mask_folder.glob("*.tmp"))


def test_stale_temporaries_of_killed_saves_are_removed(pack, mask, mask_folder):
    import os
    import time

    old = time.time() - 3600
    stale = [mask_folder / "m_00001_.safetensors.0a1b2c3d4e5f.tmp", mask_folder / "m_00007_.safetensors.tmp"]
    kept = [mask_folder / "m_00002_.safetensors.ffeeddccbbaa.tmp", mask_folder / "notes.tmp"]  # a running save; not ours
    for path in stale + kept:
        path.write_bytes(b"partial")
    for path in stale + kept[1:]:
        os.utime(path, (old, old))
    pack.nodes.FIASaveMask.execute(mask=mask, filename_prefix="m")
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
