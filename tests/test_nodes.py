"""The nodes chained through `execute` on a tiny SD1.5-layout model, with real patching and sampling."""

import asyncio
import concurrent.futures

import comfy.model_management
import comfy.sample
import comfy.sd
import pytest
import torch
from chain import apply_node, fuse_node, loaded_state, saliency_node, select_node

from devkit import tiny

NODE_IDS = {
    "FIAComputeConceptSaliency", "FIASelectSensitiveNeurons", "FIAFuseMasks", "FIAApplyUnlearningMask",
    "FIASaveMask", "FIALoadMask", "FIAUnlearn", "FIAMaskInspector",
}


@pytest.fixture(scope="module")
def model():
    return tiny.tiny_sd15_patcher(seed=0)


@pytest.fixture(scope="module")
def mask(pack, model, tiny_clip):
    saliency = saliency_node(pack, model, tiny_clip)
    return fuse_node(pack, select_node(pack, saliency))


def sample(patcher, encode, seed=5):
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(patcher, noise, 4, 5.0, "euler", "normal", encode("a cat in a park"), encode(""),
                               latent, disable_pbar=True)


def run_coroutine(coroutine):
    """asyncio.run in a worker thread: the thread running the tests may already own an event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_pack_registers_its_v3_nodes_with_tooltips(pack):
    extension = run_coroutine(pack.comfy_entrypoint())
    nodes = run_coroutine(extension.get_node_list())
    schemas = [node.define_schema() for node in nodes]
    assert {s.node_id for s in schemas} == NODE_IDS
    for schema in schemas:
        assert schema.category == "FIA" and schema.display_name and schema.description
        for item in schema.inputs:
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"
        for item in schema.outputs:
            assert item.tooltip, f"{schema.node_id} output has no tooltip"


@pytest.mark.slow
def test_chain_prunes_exactly_the_mask_and_leaves_the_input_alone(pack, model, mask, encode):
    before_patches = {k: list(v) for k, v in model.patches.items()}
    base_state = loaded_state(model)
    unlearned = apply_node(pack, model, mask)
    patched_state = loaded_state(unlearned)
    assert mask.pruned_count > 0
    for key, value in base_state.items():
        full_key = f"diffusion_model.{key}"
        if full_key in mask.pruned:
            pruned = mask.dense(full_key)
            assert torch.all(patched_state[key][pruned] == 0)
            assert torch.equal(patched_state[key][~pruned], value[~pruned])
            assert torch.count_nonzero(value[pruned]) == pruned.sum()  # they were not zero before
        else:
            assert torch.equal(patched_state[key], value), key
    assert model.patches == before_patches and not unlearned.model_options.get("transformer_options", {}).get("wrappers")
    assert all(torch.equal(v, loaded_state(model)[k]) for k, v in base_state.items())
    base_out, unlearned_out = sample(model, encode), sample(unlearned, encode)
    assert torch.isfinite(unlearned_out).all() and not torch.equal(base_out, unlearned_out)
    assert torch.equal(sample(model, encode), base_out)  # the input model samples as before


@pytest.mark.slow
def test_patch_mode_prunes_once_not_per_step(pack, engine, model, mask, encode, monkeypatch):
    """The pruned weights are computed when the model loads; later samplings reuse them."""
    calls = []
    prune = engine.patching.prune
    monkeypatch.setattr(engine.patching, "prune", lambda *a, **k: calls.append(1) or prune(*a, **k))
    masked = apply_node(pack, model, mask)
    sample(masked, encode)
    layers_with_pruning = sum(1 for indices in mask.pruned.values() if indices.numel())
    assert len(calls) == layers_with_pruning > 0
    sample(masked, encode, seed=6)
    assert len(calls) == layers_with_pruning


def test_strength_scales_and_zero_is_identity(pack, model, mask):
    key = next(k for k, v in mask.pruned.items() if v.numel())
    module_key = key.removeprefix("diffusion_model.")
    base = loaded_state(model)[module_key]
    half = loaded_state(apply_node(pack, model, mask, strength=0.5))[module_key]
    pruned = mask.dense(key)
    assert torch.allclose(half[pruned], base[pruned] * 0.5) and torch.equal(half[~pruned], base[~pruned])
    assert torch.equal(loaded_state(apply_node(pack, model, mask, strength=0.0))[module_key], base)


def seeded_lora(layers, rank=2, seed=9):
    gen = torch.Generator().manual_seed(seed)
    lora = {}
    for layer in layers:
        name = "lora_unet_" + layer.module_path.replace(".", "_")
        lora[f"{name}.lora_up.weight"] = torch.randn(layer.out_features, rank, generator=gen) * 0.1
        lora[f"{name}.lora_down.weight"] = torch.randn(rank, layer.in_features, generator=gen) * 0.1
    return lora


def test_mask_after_lora_cannot_be_refilled(pack, engine, model, mask):
    lora = seeded_lora(mask.layers)
    with_lora, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)
    lora_state = loaded_state(with_lora)
    masked_state = loaded_state(apply_node(pack, with_lora, mask))
    for layer in mask.layers:
        key = layer.key.removeprefix("diffusion_model.")
        pruned = mask.dense(layer.key)
        assert torch.all(masked_state[key][pruned] == 0)
        assert torch.equal(masked_state[key][~pruned], lora_state[key][~pruned])


def test_lora_after_patch_mask_refills_pruned_weights_with_its_delta(pack, model, mask):
    """Documented: in 'patch' mode a LoRA loaded AFTER the mask adds its delta to the zeros."""
    lora = seeded_lora(mask.layers)
    base = loaded_state(model)
    lora_only = loaded_state(comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0])
    lora_after, _ = comfy.sd.load_lora_for_models(apply_node(pack, model, mask), None, lora, 1.0, 0)
    state = loaded_state(lora_after)
    for layer in mask.layers:
        key = layer.key.removeprefix("diffusion_model.")
        pruned = mask.dense(layer.key)
        delta = lora_only[key] - base[key]
        assert torch.allclose(state[key][pruned], delta[pruned], atol=1e-6)
        assert torch.count_nonzero(state[key][pruned]) > 0


def test_wrapper_mode_masks_whatever_order(pack, model, mask, encode):
    """Documented: in 'wrapper' mode a later LoRA cannot refill; result equals mask-after-LoRA."""
    lora = seeded_lora(mask.layers)
    with_lora, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)
    reference = sample(apply_node(pack, with_lora, mask), encode)
    wrapper_first, _ = comfy.sd.load_lora_for_models(apply_node(pack, model, mask, mode="wrapper"), None, lora, 1.0, 0)
    assert torch.allclose(sample(wrapper_first, encode), reference, atol=1e-5)
    assert not torch.allclose(sample(with_lora, encode), reference, atol=1e-3)


@pytest.mark.slow
def test_same_inputs_give_bit_identical_masks(pack, engine, tiny_clip, mask):
    record = saliency_node(pack, tiny.tiny_sd15_patcher(seed=0), tiny_clip)
    selected = select_node(pack, record)
    small_blocks = engine.select_sensitive_neurons(record, r1=0.05, r2=0.05, block_entries=100)  # any block size
    assert all(torch.equal(selected.selected[c][k], small_blocks.selected[c][k])
               for c in selected.concepts for k in selected.selected[c])
    again = fuse_node(pack, selected)
    assert mask.pruned.keys() == again.pruned.keys()
    assert all(torch.equal(mask.pruned[k], again.pruned[k]) for k in mask.pruned)
    assert all(torch.equal(mask.kept_agnostic[k], again.kept_agnostic[k]) for k in mask.pruned)


def test_fusing_separate_runs_and_union(pack, model, tiny_clip):
    objects = select_node(pack, saliency_node(pack, model, tiny_clip, concepts="cat\ndog", recorded_steps=1))
    art = select_node(pack, saliency_node(pack, model, tiny_clip, concepts="Monet", preset="art", recorded_steps=1))
    fused = fuse_node(pack, objects, art, alpha=0.6)
    union = fuse_node(pack, objects, art, fusion="union")
    assert fused.concepts == ["cat", "dog", "Monet"]
    assert fused.settings.agnostic_threshold == 2
    for key in union.pruned:
        all_selected = set().union(*(set(m.selected[c][key].tolist()) for m in (objects, art) for c in m.concepts))
        assert set(union.pruned[key].tolist()) == all_selected
        assert set(fused.pruned[key].tolist()) | set(fused.kept_agnostic[key].tolist()) == all_selected
    with pytest.raises(Exception, match="already in another input"):
        fuse_node(pack, objects, objects)


def test_exact_form_and_conceptprune_run_through_the_nodes(pack, engine, model, tiny_clip):
    exact = saliency_node(pack, model, tiny_clip, concepts="cat", saliency_form="exact", recorded_steps=2)
    layer = exact.layers[0]
    assert exact.concept_moments["cat"][layer.key].mean.shape == (2, layer.out_features, layer.in_features)
    whole = select_node(pack, exact)
    assert whole.count("cat") > 0
    blockwise = engine.select_sensitive_neurons(exact, r1=0.05, r2=0.05, block_entries=100)  # a few rows per block
    assert all(torch.equal(whole.selected["cat"][k], blockwise.selected["cat"][k]) for k in whole.selected["cat"])
    reference = saliency_node(pack, model, tiny_clip, concepts="cat", recorded_steps=2)
    assert select_node(pack, reference, r2=0.02, method="conceptprune").count("cat") > 0
