"""Bypass-mode LoRAs (ComfyUI 0.33's LoraLoaderBypass): the LoRA runs as its own path beside the
layer, output = W x + B A x, so pruning W leaves the LoRA's delta on the pruned weights. FIA Apply
refuses such a LoRA on the mask's layers, names the fix, and accepts one on other layers."""

from __future__ import annotations

import comfy.sd
import pytest
import torch
from e2e.make_checkpoint import build_lora

from devkit import forward_weights, tiny
from devkit.comfy_env import comfyui_version

pytestmark = pytest.mark.skipif(not hasattr(comfy.sd, "load_bypass_lora_for_models"),
                                reason=f"ComfyUI {comfyui_version()} has no bypass-mode LoRA")


@pytest.fixture(scope="module")
def model():
    return tiny.tiny_sd15_patcher(seed=8)


@pytest.fixture(scope="module")
def mask(engine, model):
    return tiny.seeded_mask(engine, model, 0.05, seed=8)


def bypass_lora(model, layer: str):
    state = {"model." + key: value for key, value in model.model.state_dict().items()}
    lora = build_lora(state, layer=layer)
    assert lora, f"no {layer} in the tiny model"
    bypassed, _ = comfy.sd.load_bypass_lora_for_models(model, None, lora, 1.0, 0.0)
    return bypassed


def test_bypass_lora_on_the_masked_layers_is_refused_with_the_fix(pack, engine, model, mask):
    bypassed = bypass_lora(model, ".ff.net.2.weight")
    assert engine.patching.bypass_lora_keys(bypassed) == set(mask.pruned)
    for mode in ("patch", "wrapper"):  # neither weight patches nor weight wrappers reach the LoRA's path
        with pytest.raises(engine.FIAInputError, match=r"LoraLoaderBypass.*beside 7 of the mask's 7 layers.*Load that LoRA with "
                                                       r"LoraLoader before FIA Apply Unlearning Mask"):
            pack.nodes.FIAApplyUnlearningMask.execute(model=bypassed, mask=mask, strength=1.0, mode=mode)
    assert pack.nodes.FIAApplyUnlearningMask.execute(model=bypassed, mask=mask, strength=0.0, mode="patch")[0]
    assert engine.patching.bypass_lora_keys(model) == set()  # the LoRA went on a clone


def test_bypass_lora_on_other_layers_is_kept_and_the_mask_still_prunes(engine, model, mask):
    bypassed = bypass_lora(model, ".attn2.to_q.weight")
    keys = engine.patching.bypass_lora_keys(bypassed)
    assert keys and not keys & set(mask.pruned)
    masked = engine.apply_mask(bypassed, mask)
    layers = engine.layers.modules_by_path(masked.model.diffusion_model, mask.layers)
    modules = {layer.key: layers[layer.module_path] for layer in mask.layers}
    to_q = masked.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn2.to_q
    with torch.inference_mode():
        masked.patch_model(torch.device("cpu"))
    try:
        assert "_bypass_forward" in getattr(to_q.forward, "__name__", "")  # the LoRA's path is in place
        gen = torch.Generator().manual_seed(0)
        x, context = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 3, tiny.TINY_CONTEXT, generator=gen)
        with torch.inference_mode(), forward_weights.recording(modules) as seen:
            masked.model.diffusion_model(x, timesteps=torch.tensor([500.0]), context=context)
    finally:
        masked.unpatch_model(torch.device("cpu"))
    assert seen.keys() == mask.pruned.keys()
    assert all(bool((seen[k].flatten()[i.long()] == 0).all()) for k, i in mask.pruned.items())
