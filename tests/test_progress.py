"""Progress and cancel as ComfyUI sees them, and the one-node path (FIA Unlearn) on the same engine.

The server turns `comfy.utils.ProgressBar` updates into websocket events through the global progress
hook, and cancels by setting the interrupt flag: both are exercised here in-process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import comfy.model_management
import comfy.utils
import pytest
import torch
from chain import apply_node, fuse_node, loaded_state, saliency_node, select_node

from devkit import tiny

SMALL = dict(concepts="cat\ndog", prompt_pairs=2, prompts_per_batch=2, recorded_steps=2, steps=10, width=32,
             height=32)
# 1 shared base batch + 2 concept batches, 2 recorded steps each, cond and uncond in one call on CPU
SMALL_CALLS = 6


@pytest.fixture(scope="module")
def model():
    return tiny.tiny_sd15_patcher(seed=3)


@contextlib.contextmanager
def progress_hook(on_update=None):
    """Captures (value, total) as the server's hook would receive them; restores the previous hook and flag."""
    seen: list[tuple[int, int]] = []

    def hook(value, total, preview, node_id=None, **_):
        seen.append((value, total))
        if on_update is not None:
            on_update(value, total)

    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        yield seen
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        comfy.model_management.interrupt_current_processing(False)


# ComfyUI 0.33's ProgressBar sends the first and last update and others only 100 ms and 0.5 % apart
# (0.3.75 sends all): a UNet call at least this long is what every real model takes.
THROTTLE_S = getattr(comfy.utils, "PROGRESS_THROTTLE_MIN_INTERVAL", 0.0)


@contextlib.contextmanager
def unet_calls(patcher, after_call=None, seconds: float = 0.0):
    """Counts the diffusion model's forward calls; `after_call(n)` runs when call n has returned and
    `seconds` makes each call at least that long (a real model's pace on the tiny one)."""
    count = [0]

    def done(module, args, output):
        count[0] += 1
        if seconds:
            time.sleep(seconds)
        if after_call is not None:
            after_call(count[0])

    handle = patcher.model.diffusion_model.register_forward_hook(done)
    try:
        yield count
    finally:
        handle.remove()


def ff_modules(engine, patcher) -> list[torch.nn.Module]:
    _, layers = engine.layers_of_patcher(patcher)
    return list(engine.layers.modules_by_path(patcher.model.diffusion_model, layers).values())


def test_saliency_reports_every_unet_call_to_its_progress_callback(engine, model, tiny_clip):
    seen: list[tuple[int, int]] = []
    preset = engine.resolve_preset("objects")
    settings = engine.SamplingSettings(steps=10, recorded_steps=2, width=32, height=32, prompts_per_batch=2)
    record = engine.compute_saliency(model, tiny.clip_encoder(tiny_clip), ["cat", "dog"], preset, num_pairs=2,
                                     settings=settings, progress=lambda done, total: seen.append((done, total)))
    assert record.unet_calls == SMALL_CALLS
    assert seen == [(value, SMALL_CALLS) for value in range(1, SMALL_CALLS + 1)]


def test_progress_bar_shows_start_and_end_and_every_call_at_a_real_models_pace(pack, model, tiny_clip):
    with progress_hook() as seen:  # calls far faster than the throttle: it may drop the ones between
        saliency_node(pack, model, tiny_clip, **SMALL)
    values = [value for value, _ in seen]
    assert values[0] == 1 and values[-1] == SMALL_CALLS and values == sorted(set(values))
    assert all(total == SMALL_CALLS for _, total in seen)
    with progress_hook() as seen, unet_calls(model, seconds=THROTTLE_S * 1.2):
        saliency_node(pack, model, tiny_clip, **SMALL)
    assert seen == [(value, SMALL_CALLS) for value in range(1, SMALL_CALLS + 1)]


def raise_if_interrupted(value, total):
    """The server's own hook: raises from inside a progress update when the flag is set."""
    comfy.model_management.throw_exception_if_processing_interrupted()


@pytest.mark.parametrize("when", ["between calls", "in the server's hook", "inside a UNet call"])
def test_interrupt_stops_promptly_and_leaves_the_model_as_it_was(pack, engine, model, tiny_clip, when):
    """Cancel sets the flag; no UNet call may start after it, whichever progress updates were sent."""
    before_state = loaded_state(model)
    before_patches = {k: list(v) for k, v in model.patches.items()}
    before_options = repr(model.model_options)
    modules = ff_modules(engine, model)
    middle = model.model.diffusion_model.middle_block[0]  # a ResBlock: called as a module
    calls = {"middle": 0}

    def interrupt_mid_call(module, args):  # ComfyUI ops check the flag at every layer
        calls["middle"] += 1
        if calls["middle"] == 4:
            comfy.model_management.interrupt_current_processing()

    def interrupt_after_third_call(n):
        if n == 3 and when != "inside a UNet call":
            comfy.model_management.interrupt_current_processing()

    on_update = raise_if_interrupted if when == "in the server's hook" else None
    # in the server's hook: calls at a real model's pace, so the update after call 3 reaches the hook
    pace = THROTTLE_S * 1.2 if when == "in the server's hook" else 0.0
    handle = middle.register_forward_pre_hook(interrupt_mid_call) if when == "inside a UNet call" else None
    try:
        with progress_hook(on_update) as seen, unet_calls(model, interrupt_after_third_call, pace) as finished, \
                pytest.raises(comfy.model_management.InterruptProcessingException):
            saliency_node(pack, model, tiny_clip, **SMALL)
    finally:
        if handle is not None:
            handle.remove()
    assert finished[0] == 3  # nothing ran after the interrupt (inside a call: the 4th never returned)
    assert seen and all(value <= 3 for value, _ in seen)
    if when == "in the server's hook":
        assert seen[-1] == (3, SMALL_CALLS)  # the hook got the update and raised from it
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in modules)
    assert not comfy.model_management.processing_interrupted()
    assert model.patches == before_patches and repr(model.model_options) == before_options
    after_state = loaded_state(model)
    assert after_state.keys() == before_state.keys()
    assert all(torch.equal(after_state[k], v) for k, v in before_state.items())
    with progress_hook() as seen:  # and the next run works from the start
        assert saliency_node(pack, model, tiny_clip, **SMALL).unet_calls == SMALL_CALLS
    assert seen[-1] == (SMALL_CALLS, SMALL_CALLS)


def test_unlearn_node_is_the_five_node_chain_at_paper_settings(pack, engine, model, tiny_clip):
    from fia_pack.nodes import unlearn

    paper = engine.SamplingSettings(steps=50, recorded_steps=10, cfg=0.0, sampler_name="euler", scheduler="normal",
                                    width=0, height=0, prompts_per_batch=4)  # cfg 0 = the family's: 7.5 on SD1.x
    assert paper == unlearn.PAPER_SAMPLING
    assert pack.fia_engine.paper.for_task("art").r1 == 0.05 and "custom" not in unlearn.ONE_NODE_PRESETS
    small = dataclasses.replace(unlearn.PAPER_SAMPLING, steps=SMALL["steps"], width=32, height=32,
                                prompts_per_batch=2)
    # the paper's geometry costs minutes on CPU
    knobs = dict(concepts="cat\ndog\nbird", preset="art", prompt_pairs=2, seed=7, recorded_steps=2, r2=0.0,
                 sampling=small)
    with progress_hook() as seen:
        unlearned, mask = pack.nodes.FIAUnlearn.execute(model=model, clip=tiny_clip, alpha=0.0, strength=1.0,
                                                        **knobs).args
    # 1 base batch + 3 concept batches, 2 recorded steps each (0.33 may drop updates between the ends)
    assert seen[0] == (1, 8) and seen[-1] == (8, 8)

    saliency = saliency_node(pack, model, tiny_clip, concepts=knobs["concepts"], preset="art",
                             prompt_pairs=2, seed=7, steps=SMALL["steps"], recorded_steps=2, width=32, height=32,
                             prompts_per_batch=2)
    expected = fuse_node(pack, select_node(pack, saliency, r1=0.05, r2=0.0), alpha=0.0)  # 0 = the paper's
    assert mask.concepts == expected.concepts and mask.settings == expected.settings
    assert mask.settings.alpha == 0.8  # art: paper alpha 0.8
    assert mask.settings.per_concept["dog"].r2 == 0.02  # r2 0 = the art preset's paper value
    assert all(torch.equal(mask.pruned[k], expected.pruned[k]) for k in expected.pruned)
    assert mask.pruned_count > 0
    assert all(torch.equal(a, b) for a, b in zip(loaded_state(unlearned).values(),
                                                   loaded_state(apply_node(pack, model, expected)).values()))
    assert not model.patches  # the input model is untouched
