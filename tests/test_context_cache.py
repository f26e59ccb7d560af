"""The cross-attention context cache: exact outputs, hits where the context repeats, misses where it
does not, its byte budget, no hooks left behind, and no cache where weights may change per step."""

import comfy.hooks
import torch

from fia_engine.host import context_cache as cc
from fia_engine.host.recording import latent_geometry, sample_recorded_steps


def unet_and_projections(tiny_model):
    unet = tiny_model.model.diffusion_model
    return unet, cc.context_projections(unet)


def forward(unet, x, context):
    with torch.inference_mode():
        return unet(x, torch.full((x.shape[0],), 500.0), context=context)


def test_projections_are_the_cross_attention_k_and_v(tiny_model):
    unet, modules = unet_and_projections(tiny_model)
    blocks = [n for n, _ in unet.named_modules() if n.endswith("attn2")]
    assert blocks and len(modules) == 2 * len(blocks)
    assert all(m.in_features == tiny_model.model.model_config.unet_config["context_dim"] for m in modules.values())


def test_repeated_context_is_served_exactly_and_a_new_one_is_computed(tiny_model):
    unet, modules = unet_and_projections(tiny_model)
    gen = torch.Generator().manual_seed(0)
    context = torch.randn(2, 77, modules[next(iter(modules))].in_features, generator=gen)
    xs = [torch.randn(2, 4, 8, 8, generator=gen) for _ in range(3)]
    plain = [forward(unet, x, context) for x in xs]
    cache = cc.ContextProjectionCache(modules)
    served = []
    for x in xs:
        with cache.serving((0,)):
            served.append(forward(unet, x, context.clone()))  # equal values, another tensor
    assert all(torch.equal(a, b) for a, b in zip(plain, served, strict=True))
    assert cache.hits == 2 * len(modules)
    other = context + 1
    with cache.serving((0,)):
        assert torch.equal(forward(unet, xs[0], other), forward(unet, xs[0], other))  # computed, then served
    assert cache.hits == 3 * len(modules)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in modules.values())


def test_the_budget_bounds_what_is_kept(tiny_model):
    unet, modules = unet_and_projections(tiny_model)
    context = torch.randn(2, 77, modules[next(iter(modules))].in_features)
    one_entry = 2 * 77 * next(iter(modules.values())).out_features * 4
    cache = cc.ContextProjectionCache(modules, budget_bytes=one_entry)
    for _ in range(2):
        with cache.serving((0,)):
            forward(unet, torch.randn(2, 4, 8, 8), context)
    assert len(cache.entries) == 1 and cache.nbytes <= one_entry and cache.hits == 1
    empty = cc.ContextProjectionCache(modules, budget_bytes=0)
    with empty.serving((0,)):
        forward(unet, torch.randn(2, 4, 8, 8), context)
    assert not empty.entries


def test_recording_with_the_cache_equals_recording_without(engine, tiny_model, encode):
    """Through the real sampler: T calls of one prompt batch, cond and uncond together."""
    _, layers = engine.layers_of_patcher(tiny_model)
    unet, projections = unet_and_projections(tiny_model)
    settings = engine.SamplingSettings(steps=20, recorded_steps=4, width=64, height=64, prompts_per_batch=2,
                                       schedule="sampler")
    positive = engine.recording.batch_conditioning([encode("a cat"), encode("a dog")])
    results, caches = [], []
    for cache in (None, cc.ContextProjectionCache(projections)):
        work = tiny_model.clone()
        modules = engine.layers.modules_by_path(unet, layers)
        recorder = engine.recording.ActivationRecorder(layers, modules, "reference", settings, context_cache=cache)
        recorder.install(work)
        accumulators = {layer.key: engine.statistics.MomentAccumulator(4, (layer.in_features,), torch.device("cpu"), with_std=True)
                        for layer in layers}
        recorder.begin_batch(accumulators, 2)
        sample_recorded_steps(work, recorder, positive, encode(""), [7, 7], latent_geometry(tiny_model, 64, 64))
        results.append({k: a.finalize().mean for k, a in accumulators.items()})
        caches.append(cache)
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    assert caches[1].hits == 3 * len(projections)  # every call after the first
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in projections.values())


def test_no_cache_when_hook_patches_can_change_weights_between_steps(tiny_model):
    work = tiny_model.clone()
    assert cc.cacheable(work)
    key = next(k for k in work.model.state_dict() if k.endswith("attn2.to_k.weight"))
    work.add_hook_patches(comfy.hooks.WeightHook(), {key: ("diff", (torch.zeros_like(work.model.state_dict()[key]),))})
    assert not cc.cacheable(work)
