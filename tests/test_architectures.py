"""SD2.x, SDXL, SD3 and Flux: layer discovery, recording and masking on tiny seeded models built with
ComfyUI's own classes, and full-size layer counts on the meta device. Mechanics only: the paper
validates the method on SD1.x alone."""

from types import SimpleNamespace

import comfy.patcher_extension
import comfy.sample
import pytest
import torch
from chain import apply_node, fuse_node, loaded_state, saliency_node, select_node

from devkit import tiny, tiny_archs

FAMILIES = list(tiny_archs.TINY)


@pytest.fixture(scope="module", params=FAMILIES)
def arch(request):
    """(family, patcher) of one tiny seeded model, shared by this module's tests."""
    return request.param, tiny_archs.tiny_patcher(request.param)


def log_chunks(patcher, log):
    """An APPLY_MODEL wrapper on `patcher` that logs each call's CFG chunks."""

    def wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        log.append(list(transformer_options["cond_or_uncond"]))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_chunks", wrapper)


@pytest.mark.parametrize(("name", "family", "total", "default"), [
    ("SD2.x", "SD2.x", 16, 16), ("SDXL", "SDXL", 70, 70), ("SD3 medium", "SD3", 47, 24),
    ("SD3.5 medium", "SD3", 47, 24), ("SD3.5 large", "SD3", 75, 38), ("Flux dev", "Flux", 76, 57),
    ("Flux schnell", "Flux", 76, 57),
])
def test_full_size_layer_counts(engine, name, family, total, default):
    cfg, model = tiny_archs.full_size_model(name)
    spec = engine.architecture_of(cfg)
    every = engine.discover_layers(model.diffusion_model, spec, ("all",))
    assert spec.family == family
    assert len(every) == total <= spec.max_layers  # a mask file may claim no more
    assert len(engine.discover_layers(model.diffusion_model, spec)) == default


def test_full_size_flux_neuron_columns_are_the_mlp_part_of_linear2(engine):
    cfg, model = tiny_archs.full_size_model("Flux dev")
    layers = engine.discover_layers(model.diffusion_model, engine.architecture_of(cfg), ("all",))
    single = [layer for layer in layers if layer.stream == "single"]
    assert len(single) == 38 and all(layer.key.endswith(".linear2.weight") for layer in single)
    assert {(layer.shape, layer.neuron_start, layer.neuron_stop) for layer in single} == {((3072, 15360), 3072, 15360)}
    assert all(layer.neuron_columns == slice(0, 12288) for layer in layers if layer.stream != "single")


def test_streams_defaults_all_and_unknown(engine):
    cfg, model = tiny_archs.full_size_model("SD3 medium")
    spec = engine.architecture_of(cfg)
    default = engine.discover_layers(model.diffusion_model, spec)
    text = engine.discover_layers(model.diffusion_model, spec, ("txt",))
    assert all(".x_block.mlp.fc2" in layer.key and layer.stream == "img" for layer in default)
    assert len(text) == 23 and all(".context_block.mlp.fc2" in layer.key for layer in text)
    assert "joint_blocks.23.context_block" not in " ".join(layer.key for layer in text)  # pre-only: no MLP
    with pytest.raises(engine.FIAInputError, match="SD3 models have no 'single' stream"):
        engine.discover_layers(model.diffusion_model, spec, ("img", "single"))


def test_flux2_is_refused_not_taken_for_flux1(engine):
    import comfy.supported_models

    cfg = comfy.supported_models.Flux2({"image_model": "flux2", "hidden_size": 6144})  # 0.33 reads hidden_size
    patcher = SimpleNamespace(model=SimpleNamespace(model_config=cfg))
    with pytest.raises(engine.FIAInputError, match="Flux.2 models are not supported yet"):
        engine.layers_of_patcher(patcher)


def test_layers_run_in_discovery_order_with_chunk_major_batches(engine, arch):
    """One real sampling step, cond and uncond of two prompts batched: every FF layer of every stream
    runs in the order discovery lists it, and sees [chunks * prompts, tokens, in_features]."""
    family, patcher = arch
    _, layers = engine.layers_of_patcher(patcher, ("all",))
    named = dict(patcher.model.diffusion_model.named_modules())
    seen = []
    handles = [named[layer.module_path].register_forward_pre_hook(
        lambda module, args, layer=layer: seen.append((layer, args[0].shape))) for layer in layers]
    encode = tiny_archs.hash_encoder(family)
    batch = engine.recording.batch_conditioning
    latent = torch.zeros(2, patcher.model.latent_format.latent_channels, 8, 8)
    try:
        comfy.sample.sample(patcher, torch.randn_like(latent), 1, 5.0, "euler", "normal", batch([encode("a"), encode("b")]),
                            batch([encode(""), encode("")]), latent, disable_pbar=True)
    finally:
        for handle in handles:
            handle.remove()
    assert [layer for layer, _ in seen] == layers
    for layer, shape in seen:
        assert len(shape) == 3 and shape[0] == 2 * 2 and shape[2] == layer.in_features
        if layer.stream == "single":  # Flux single blocks run text and image tokens together
            assert shape[1] == tiny_archs.TOKENS + 16  # 8x8 latent, 2x2 patches


def recorded(engine, patcher, family, batch, **settings):
    sampling = engine.SamplingSettings(**(dict(steps=4, recorded_steps=2, width=64, height=64) | settings),
                                       prompts_per_batch=batch)
    return engine.compute_saliency(patcher, tiny_archs.hash_encoder(family), ["cat"], engine.resolve_preset("objects"),
                                   num_pairs=3, seed=1244, settings=sampling, streams=("all",))


def test_batched_recording_equals_unbatched(engine, arch):
    """Cond rows only, so a batch layout other than chunk-major ([cond prompts..., uncond prompts...])
    would mix prompts or CFG halves and break the equality."""
    family, patcher = arch
    one = recorded(engine, patcher, family, 1, pool_uncond=False)
    many = recorded(engine, patcher, family, 3, pool_uncond=False)
    for key, moments in one.concept_moments["cat"].items():  # fp16 storage: one rounding step apart at most
        assert torch.allclose(moments.mean.float(), many.concept_moments["cat"][key].mean.float(),
                              rtol=1e-3, atol=1e-5), key
    for base_id, per_layer in one.base_moments.items():
        for key, moments in per_layer.items():
            assert torch.allclose(moments.mean, many.base_moments[base_id][key].mean, rtol=1e-4, atol=1e-5), key
            assert torch.allclose(moments.std, many.base_moments[base_id][key].std, rtol=1e-3, atol=1e-5), key


def test_cfg_zero_records_with_the_familys_cfg(engine, arch):
    family, patcher = arch
    calls = []
    work = patcher.clone()
    log_chunks(work, calls)
    record = recorded(engine, work, family, 3, cfg=0.0, recorded_steps=1)
    cfg = engine.architecture_of(patcher.model.model_config).recording_cfg
    assert record.provenance.sampling.cfg == cfg
    assert all(sorted(chunks) == ([0] if cfg == 1.0 else [0, 1]) for chunks in calls) and len(calls) == 2
    assert (family == "Flux") == (cfg == 1.0)  # distilled guidance: cond only


def test_nodes_chain_prunes_exactly_on_every_architecture(pack, engine, arch):
    """Saliency -> select -> fuse -> apply through the nodes' `execute`, then ComfyUI loads the model:
    pruned weights are exactly zero, every other weight is unchanged, the input model is untouched."""
    family, patcher = arch
    before = loaded_state(patcher)
    saliency = saliency_node(pack, patcher, tiny_archs.HashClip(family))
    concept_masks = select_node(pack, saliency)
    mask = fuse_node(pack, concept_masks)
    spec, default_layers = engine.layers_of_patcher(patcher)
    assert mask.architecture == spec.family == family and mask.layers == default_layers
    assert mask.pruned_count > 0
    after = loaded_state(apply_node(pack, patcher, mask))
    for layer in mask.layers:
        name = layer.key.removeprefix("diffusion_model.")
        expected = before[name].clone()
        expected.view(-1)[mask.pruned[layer.key].long()] = 0.0
        assert torch.equal(after[name], expected), name
        assert torch.count_nonzero(before[name].view(-1)[mask.pruned[layer.key].long()]) == mask.pruned[layer.key].numel()
    again = loaded_state(patcher)
    assert all(torch.equal(value, again[name]) for name, value in before.items())
    if family == "Flux":
        check_flux_attention_columns_untouched(patcher, mask, concept_masks, before, after)


def check_flux_attention_columns_untouched(patcher, mask, concept_masks, before, after):
    single = [layer for layer in mask.layers if layer.stream == "single"]
    assert len(single) == 2
    for layer in single:
        block = dict(patcher.model.diffusion_model.named_modules())[layer.module_path.removesuffix(".linear2")]
        hidden = block.hidden_size
        assert layer.neuron_columns == slice(hidden, hidden + block.mlp_hidden_dim)  # 64 + 3 * 64, not 3072
        for indices in [mask.pruned[layer.key], *(per[layer.key] for per in concept_masks.selected.values())]:
            assert bool(((indices % layer.in_features) >= hidden).all())
        name = layer.key.removeprefix("diffusion_model.")
        assert torch.equal(after[name][:, :hidden], before[name][:, :hidden])
        assert mask.pruned[layer.key].numel() > 0


def empty_mask(engine, patcher):
    """A one-weight mask for `patcher`'s default layers (the checks run before any weight is read)."""
    spec, layers = engine.layers_of_patcher(patcher)
    pruned = {layer.key: torch.tensor([0]) for layer in layers}
    kept = {layer.key: torch.tensor([], dtype=torch.long) for layer in layers}
    return engine.UnlearningMask(spec.family, layers, pruned, kept, ["x"], engine.masks.StatedSettings({}), "")


@pytest.fixture(scope="module")
def sd15():
    return tiny.tiny_sd15_patcher(seed=0)


@pytest.mark.parametrize(("source", "target"), [("SDXL", "SD1.x"), ("Flux", "SD3"), ("SD3", "Flux"), ("SD2.x", "SDXL")])
def test_saved_mask_is_refused_on_another_architecture(engine, sd15, tmp_path, source, target):
    patchers = {"SD1.x": sd15} | {f: tiny_archs.tiny_patcher(f) for f in (source, target) if f != "SD1.x"}
    path = engine.save_mask(empty_mask(engine, patchers[source]), tmp_path / "mask.safetensors")
    mask = engine.load_mask(path)
    _, target_layers = engine.layers_of_patcher(patchers[target])
    with pytest.raises(engine.FIAInputError, match=f"computed for a {source} model but the model is {target}"):
        engine.masks.check_layers_match("mask", mask.architecture, mask.layers, target, target_layers)
    with pytest.raises(engine.FIAInputError, match=target):
        engine.apply_mask(patchers[target], mask)
