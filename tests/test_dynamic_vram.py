"""The mask on the paths that apply patches per cast rather than once at load, called on the CPU.

On a GPU, ComfyUI 0.16+ loads models through ModelPatcherDynamic ("dynamic VRAM"): every patched
weight is recomputed by a `LowVramPatch` each time it is cast to the device, and since 0.21 the patch
values travel first: `comfy.lora.prefetch_prepared_value` copies every tensor of an adapter into a
byte buffer and rebuilds the adapter as `type(v)(v.loaded_keys, weights)` around views of it. On a
CPU ModelPatcherDynamic falls back to the plain ModelPatcher, so these tests call those functions
themselves (0.3.75 has none of them: those tests skip there). The low-VRAM load, which also patches
per cast, runs on both versions, and the weights F.linear receives are read during a real forward.
"""

from __future__ import annotations

import comfy.lora
import comfy.model_management
import pytest
import torch

from devkit import forward_weights, tiny
from devkit.comfy_env import comfyui_version

PREFETCH = hasattr(comfy.lora, "prefetch_prepared_value")
needs_prefetch = pytest.mark.skipif(
    not PREFETCH, reason=f"ComfyUI {comfyui_version()} has no dynamic VRAM patch prefetch (0.21+)")


@pytest.fixture(scope="module")
def model():
    return tiny.tiny_sd15_patcher(seed=5)


@pytest.fixture(scope="module")
def mask(engine, model):
    return tiny.seeded_mask(engine, model, 0.05, seed=5)


@pytest.fixture(scope="module")
def masked(engine, model, mask):
    return engine.apply_mask(model, mask)


@pytest.fixture(scope="module")
def originals(engine, model, mask):
    return {k: w.detach().clone() for k, w in engine.layers.original_weights(model, mask.layers).items()}


def pruned_as_expected(weight: torch.Tensor, original: torch.Tensor, indices: torch.Tensor) -> bool:
    """Exact zeros at the mask's entries, the original (in weight's dtype) everywhere else."""
    expected = original.to(weight.dtype).flatten().clone()
    expected[indices.long()] = 0
    return torch.equal(weight.flatten(), expected) and bool((weight.flatten()[indices.long()] == 0).all())


def assert_pruned_within_fp8_rounding(weight: torch.Tensor, original: torch.Tensor, indices: torch.Tensor) -> None:
    """Pruned entries exactly zero; the others the fp8 values, but for ComfyUI 0.3.75's stochastic
    rounding back to fp8, which moves about 0.1 % of even representable values one step (0.33: none)."""
    pruned = torch.zeros(weight.numel(), dtype=torch.bool)
    pruned[indices.long()] = True
    used, kept = weight.flatten(), original.flatten()
    assert bool((used[pruned] == 0).all())
    changed = used[~pruned] != kept[~pruned]
    assert changed.float().mean() <= 0.01
    step = kept[~pruned].abs() * 2.0**-3 + 2.0**-9  # e4m3: 3 mantissa bits; smallest subnormal 2^-9
    assert bool(((used[~pruned] - kept[~pruned]).abs() <= step).all())


def mask_patch(masked, key):
    (patch,) = masked.patches[key]
    return patch


def test_adapter_rebuilt_from_loaded_keys_and_weights_prunes_the_same(masked, mask, originals):
    """What prefetch_prepared_value does with every adapter: type(v)(v.loaded_keys, weights)."""
    for key, indices in mask.pruned.items():
        strength, adapter, strength_model, offset, function = mask_patch(masked, key)
        rebuilt = type(adapter)(adapter.loaded_keys, tuple(w.clone() for w in adapter.weights))
        assert rebuilt.loaded_keys == {key} and rebuilt.calculate_shape(key) is None
        weight = comfy.lora.calculate_weight([(strength, rebuilt, strength_model, offset, function)],
                                             originals[key].clone(), key)
        assert pruned_as_expected(weight, originals[key], indices)


@needs_prefetch
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("route", ["direct", "through a pinned buffer"])
def test_lowvram_patch_prefetched_into_a_byte_buffer_prunes_the_cast_weight(masked, mask, originals, dtype, route):
    """comfy.ops.cast_modules_with_vbar: the patch is committed as views of the device buffer
    (copy=False), whose bytes arrive afterwards, straight or via a pinned staging buffer."""
    from comfy.model_patcher import LowVramPatch

    for key, indices in mask.pruned.items():
        patch = LowVramPatch(key, masked.patches)
        size = patch.memory_required()
        assert size >= indices.numel() * indices.element_size()
        dest = torch.full((size,), 0xAB, dtype=torch.uint8)  # stale bytes where the indices will land
        patch.prepare(dest, None, copy=False, commit=True)
        if route == "direct":
            patch.prepare(dest, None, copy=True, commit=False)
        else:
            pin = torch.empty((size,), dtype=torch.uint8)
            patch.prepare(pin, None, copy=True, commit=False)
            comfy.model_management.cast_to_gathered([pin], dest)
        prepared = patch.prepared_patches[0][1]
        assert type(prepared) is type(mask_patch(masked, key)[1])
        (moved,) = prepared.weights
        assert moved.untyped_storage().data_ptr() == dest.untyped_storage().data_ptr()  # a view: it travelled
        assert moved.dtype == indices.dtype and torch.equal(moved, indices)
        # the weight as cast for the forward: a device copy in the compute dtype, which patches edit in place
        assert pruned_as_expected(patch(originals[key].to(dtype, copy=True)), originals[key], indices)
        patch.clear_prepared()
        assert pruned_as_expected(patch(originals[key].to(dtype, copy=True)), originals[key], indices)  # unprepared


def ff_modules(engine, patcher, layers) -> dict[str, torch.nn.Module]:
    """{weight key: FF module} of `patcher`'s model."""
    modules = engine.layers.modules_by_path(patcher.model.diffusion_model, layers)
    return {layer.key: modules[layer.module_path] for layer in layers}


@pytest.fixture(scope="module")
def fp8_model():
    return tiny.tiny_sd15_patcher(seed=5, dtype=torch.float8_e4m3fn)


@pytest.mark.parametrize("storage", ["fp32", "fp8 (quantised storage, computed in fp32)"])
@pytest.mark.parametrize("load", ["full", "low VRAM (patched per cast)"])
def test_forward_uses_pruned_weights_and_the_shared_module_keeps_the_originals(request, engine, load, storage):
    """fp8 weights are patched in fp32 and rounded back (stochastically): zeros and fp8 values survive it."""
    model = request.getfixturevalue("fp8_model" if storage.startswith("fp8") else "model")
    mask = tiny.seeded_mask(engine, model, 0.05, seed=5)
    originals = {k: w.detach().clone() for k, w in engine.layers.original_weights(model, mask.layers).items()}
    patcher = engine.apply_mask(model, mask)
    lowvram = 1 if load.startswith("low") else 0  # 1 byte of budget: every module is cast with its patches
    with torch.inference_mode():  # as ComfyUI runs nodes (fp8 rounding refuses tensors that need grad)
        patcher.patch_model(torch.device("cpu"), lowvram_model_memory=lowvram)
    try:
        modules = ff_modules(engine, patcher, mask.layers)
        if lowvram:
            assert all(m.weight_function for m in modules.values())  # the per-cast path, not a baked weight
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4, 8, 8, generator=gen)
        context = torch.randn(1, 3, tiny.TINY_CONTEXT, generator=gen)
        with torch.inference_mode(), forward_weights.recording(modules) as seen:
            patcher.model.diffusion_model(x, timesteps=torch.tensor([500.0]), context=context)
        assert seen.keys() == mask.pruned.keys()
        for key, indices in mask.pruned.items():
            assert seen[key].dtype == torch.float32
            if storage == "fp32":
                assert pruned_as_expected(seen[key], originals[key], indices), key
            else:
                assert_pruned_within_fp8_rounding(seen[key], originals[key].float(), indices)
            assert modules[key].weight.dtype == originals[key].dtype
            if lowvram:
                assert torch.equal(modules[key].weight, originals[key])  # patched on the cast copy only
    finally:
        patcher.unpatch_model(torch.device("cpu"))
    assert all(torch.equal(w, originals[k]) for k, w in engine.layers.original_weights(model, mask.layers).items())
