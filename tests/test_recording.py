"""Recording during real ComfyUI sampling: call counts, CFG halves, batching, layer order."""

import comfy.patcher_extension
import pytest
import torch

from devkit import tiny

SETTINGS = dict(steps=20, recorded_steps=3, width=64, height=64)


def call_counter(patcher, log):
    """A second APPLY_MODEL wrapper on the input model that logs every UNet call's CFG layout."""

    def count(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        output = executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        log.append((list(transformer_options.get("cond_or_uncond", [])), x.shape[0]))  # only calls that ran
        return output

    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_counter", count)


def saliency(engine, model, encode, concepts=("cat",), pairs=3, **overrides):
    settings = engine.SamplingSettings(**(SETTINGS | overrides))
    return engine.compute_saliency(model, encode, list(concepts), engine.resolve_preset("objects"), num_pairs=pairs,
                                   seed=1244, settings=settings)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_exactly_t_unet_calls_per_prompt_batch(engine, tiny_model, encode, sampler):
    calls = []
    call_counter(tiny_model, calls)
    record = saliency(engine, tiny_model, encode, pairs=3, prompts_per_batch=2, sampler_name=sampler, schedule="sampler")
    batches = 2 + 2  # base set: 3 prompts in 2 batches; one concept: 2 batches
    assert len(calls) == record.unet_calls == batches * 3
    assert all(sorted(chunks) == [0, 1] for chunks, _ in calls)  # cond and uncond in one call
    assert [size for _, size in calls] == ([4] * 3 + [2] * 3) * 2  # 2 prompts x 2 CFG halves, then 1 x 2


def test_reference_schedule_makes_the_reference_codes_calls(engine, tiny_model, encode):
    """SD1.x default: diffusers' PNDM (skip_prk_steps) calls, 961 twice, from unit-variance noise."""
    seen = []
    sampling = tiny_model.get_model_object("model_sampling")

    def spy(executor, x, t, *args, **kwargs):
        seen.append((int(sampling.timestep(t)[0]), float(x.std() / (1 + t[0] ** 2) ** 0.5)))
        return executor(x, t, *args, **kwargs)

    tiny_model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_spy", spy)
    saliency(engine, tiny_model, encode, pairs=1, steps=50, recorded_steps=10, prompts_per_batch=1)
    assert [t for t, _ in seen[:10]] == [981, 961, 961, 941, 921, 901, 881, 861, 841, 821]
    assert 0.8 < seen[0][1] < 1.2  # the UNet sees the unit-variance starting noise itself at t = 981
    assert engine.plms.call_timesteps(2) == [501, 1, 1] and max(engine.plms.inference_timesteps(1000)) == 999


def test_cfg_one_records_cond_only(engine, tiny_model, encode):
    calls = []
    call_counter(tiny_model, calls)
    record = saliency(engine, tiny_model, encode, pairs=2, prompts_per_batch=2, cfg=1.0)
    assert record.unet_calls == len(calls) == 2 * 3
    assert all(chunks == [0] for chunks, _ in calls)


def capture_first_call(model, module):
    """Raw input of `module` and the CFG layout at the first UNet call."""
    seen = {}

    def wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        seen.setdefault("chunks", list(transformer_options["cond_or_uncond"]))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    def hook(mod, args):
        seen.setdefault("x", args[0].detach().clone())

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_capture", wrapper)
    return seen, module.register_forward_pre_hook(hook)


@pytest.mark.parametrize("pool_uncond", [True, False])
def test_cond_and_uncond_rows_are_split_per_prompt(engine, tiny_model, encode, pool_uncond):
    st = engine.statistics
    _, layers = engine.layers_of_patcher(tiny_model)
    layer = layers[2]
    module = dict(tiny_model.model.diffusion_model.named_modules())[layer.module_path]
    seen, handle = capture_first_call(tiny_model, module)
    try:  # the base set (2 prompts, one batch) runs first: its first call is the one captured
        record = saliency(engine, tiny_model, encode, pairs=2, prompts_per_batch=2, recorded_steps=1,
                          pool_uncond=pool_uncond)
    finally:
        handle.remove()
    x = seen["x"].reshape(len(seen["chunks"]), 2, -1, layer.in_features)
    expected = []
    for prompt in range(2):
        rows = [x[c, prompt] for c, kind in enumerate(seen["chunks"]) if pool_uncond or kind == 0]
        expected.append(st.column_energy(torch.cat(rows)[None])[0].sqrt())
    expected = torch.stack(expected)
    base = record.base_moments[record.concept_base["cat"]][layer.key]
    assert torch.allclose(base.mean[0], expected.mean(0), rtol=1e-5, atol=1e-6)
    assert torch.allclose(base.std[0], expected.std(0, unbiased=False), rtol=1e-4, atol=1e-6)


def test_cfg_halves_arriving_in_separate_calls_are_pooled(engine, tiny_model):
    """ComfyUI runs cond and uncond apart under memory pressure; one evaluation must still pool both."""
    st = engine.statistics
    _, layers = engine.layers_of_patcher(tiny_model)
    layer = layers[0]
    modules = engine.layers.modules_by_path(tiny_model.model.diffusion_model, [layer])
    module = modules[layer.module_path]
    settings = engine.SamplingSettings(recorded_steps=1, prompts_per_batch=2)
    recorder = engine.recording.ActivationRecorder([layer], modules, "reference", settings)
    accumulators = {layer.key: st.MomentAccumulator(1, (layer.in_features,), torch.device("cpu"), with_std=True)}
    recorder.begin_batch(accumulators, 2)
    gen = torch.Generator().manual_seed(0)
    x_cond, x_uncond = torch.randn(2, 5, layer.in_features, generator=gen), torch.randn(2, 5, layer.in_features, generator=gen)

    def executor(x, *args, **kwargs):
        return module(x)

    recorder.wrapper(executor, x_cond, None, None, None, None, {"cond_or_uncond": [0]})
    assert recorder.evaluation == 0
    recorder.wrapper(executor, x_uncond, None, None, None, None, {"cond_or_uncond": [1]})
    assert recorder.evaluation == 1 and recorder.complete
    expected = (st.column_energy(x_cond) + st.column_energy(x_uncond)).sqrt()
    assert torch.allclose(accumulators[layer.key].finalize().mean[0], expected.mean(0), atol=1e-6)


def test_batched_equals_unbatched(engine, tiny_model, encode):
    one = saliency(engine, tiny_model, encode, concepts=("cat", "dog"), pairs=3, prompts_per_batch=1)
    many = saliency(engine, tiny_model, encode, concepts=("cat", "dog"), pairs=3, prompts_per_batch=3)
    for concept in ("cat", "dog"):
        for key, moments in one.concept_moments[concept].items():
            # concept means are stored in fp16: equal up to one fp16 rounding step
            assert torch.allclose(moments.mean.float(), many.concept_moments[concept][key].mean.float(),
                                  rtol=1e-3, atol=1e-5)
    for base_id, per_layer in one.base_moments.items():
        for key, moments in per_layer.items():
            assert torch.allclose(moments.std, many.base_moments[base_id][key].std, rtol=1e-3, atol=1e-5)


def test_base_prompts_run_once_for_concepts_that_share_them(engine, tiny_model, encode):
    calls = []
    call_counter(tiny_model, calls)
    record = saliency(engine, tiny_model, encode, concepts=("cat", "dog", "bird"), pairs=2, prompts_per_batch=2)
    assert len(record.base_moments) == 1
    assert len(calls) == (1 + 3) * 3  # one base batch + one batch per concept, T = 3 each


def test_layers_are_found_in_execution_order(engine, tiny_model):
    model = tiny_model.model.diffusion_model
    _, layers = engine.layers_of_patcher(tiny_model)
    named = dict(model.named_modules())
    order = []
    handles = [named[layer.module_path].register_forward_pre_hook(
        lambda mod, args, path=layer.module_path: order.append(path)) for layer in layers]
    try:
        x = torch.randn(1, 4, 8, 8)
        model(x, torch.tensor([500.0]), context=torch.randn(1, 77, 64))
    finally:
        for handle in handles:
            handle.remove()
    assert order == [layer.module_path for layer in layers]
    assert all(layer.key.endswith("ff.net.2.weight") for layer in layers)


def test_full_size_sd15_has_the_papers_16_layers(engine):
    import comfy.supported_models

    cfg = comfy.supported_models.SD15(tiny.SD15_FULL_UNET)
    model = cfg.get_model({}, device=torch.device("meta"))
    spec = engine.architecture_of(cfg)
    layers = engine.discover_layers(model.diffusion_model, spec)
    assert spec.family == "SD1.x" and len(layers) == 16
    assert sum(layer.out_features * layer.in_features for layer in layers) == 49_561_600  # the paper's 49.6M
    blocks = [layer.module_path.split(".transformer_blocks")[0] for layer in layers]
    assert blocks == [f"input_blocks.{i}.1" for i in (1, 2, 4, 5, 7, 8)] + ["middle_block.1"] + [
        f"output_blocks.{i}.1" for i in range(3, 12)]


def test_shared_base_results_equal_per_concept_results(engine, tiny_model, encode):
    together = saliency(engine, tiny_model, encode, concepts=("cat", "dog"), pairs=2, prompts_per_batch=2)
    for concept in ("cat", "dog"):
        alone = saliency(engine, tiny_model, encode, concepts=(concept,), pairs=2, prompts_per_batch=2)
        base_id = alone.concept_base[concept]
        assert together.concept_base[concept] == base_id
        for key, moments in alone.concept_moments[concept].items():
            assert torch.equal(moments.mean, together.concept_moments[concept][key].mean)
            assert torch.equal(alone.base_moments[base_id][key].std, together.base_moments[base_id][key].std)
