"""Mask files: safetensors round trip, metadata, refusals with clear messages."""

import dataclasses
import json

import folder_paths
import pytest
import tiny
import torch
from chain import apply_node, fuse_node, saliency_node, select_node
from safetensors.torch import save_file


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
    assert meta["format"] == "fia-unlearning-mask" and meta["format_version"] == "1"
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
    tensors[key] = codec.encode_sorted(torch.tensor([3, 10**9]))
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(engine.FIAInputError, match="indices outside"):
        engine.load_mask(path)
    tensors[key] = torch.tensor([0x85], dtype=torch.uint8)  # a continuation byte with nothing after it
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(engine.FIAInputError, match="damaged"):
        engine.load_mask(path)


@pytest.mark.parametrize("indices", [[], [0], [5, 6, 7], [127, 128, 16383, 16384, 2**31 + 5, 2**40]])
def test_index_codec_round_trip(engine, indices):
    codec = engine.index_codec
    original = torch.tensor(indices, dtype=torch.int64)
    encoded = codec.encode_sorted(original)
    assert encoded.dtype == torch.uint8 and torch.equal(codec.decode_sorted(encoded), original)


def test_index_codec_is_about_one_byte_per_index_at_mask_density(engine):
    gen = torch.Generator().manual_seed(0)
    indices = torch.randperm(1_000_000, generator=gen)[:10_000].sort().values  # 1% density
    encoded = engine.index_codec.encode_sorted(indices)
    assert encoded.numel() < 1.4 * indices.numel()  # int32 would be 4 bytes each
    assert torch.equal(engine.index_codec.decode_sorted(encoded), indices)
