"""Bad input: a clear message naming the input and the fix, before any sampling."""

import comfy.patcher_extension
import pytest
import tiny
from chain import apply_node, fuse_node, saliency_node, select_node


@pytest.fixture()
def counted_model():
    model = tiny.tiny_sd15_patcher()
    calls = []

    def count(executor, *args, **kwargs):
        calls.append(1)
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "count", count)
    return model, calls


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(concepts=" \n"), "concepts: the list is empty"),
        (dict(preset="custom", concept_template="a {placeholder}", placeholders="dog"), r"concept_template: .*\{concept\}"),
        (dict(recorded_steps=60, steps=50), "recorded_steps: T = 60 must be between 1 and the schedule's steps"),
        (dict(saliency_form="fancy"), "saliency_form"),
        (dict(width=4, height=4), "width/height"),
    ],
)
def test_saliency_input_errors_come_before_sampling(pack, engine, tiny_clip, counted_model, overrides, message):
    model, calls = counted_model
    with pytest.raises(engine.FIAInputError, match=message):
        saliency_node(pack, model, tiny_clip, **overrides)
    assert calls == []


def test_model_without_feed_forward_layers(pack, engine, tiny_clip):
    no_attention = tiny.TINY_SD15_UNET | {"transformer_depth": [0, 0], "transformer_depth_middle": 0,
                                          "transformer_depth_output": [0, 0, 0, 0]}
    model = tiny.tiny_sd15_patcher(unet_config=no_attention)
    with pytest.raises(engine.FIAInputError, match="no supported feed-forward layers"):
        saliency_node(pack, model, tiny_clip)


@pytest.fixture(scope="module")
def saliency(pack, tiny_clip):
    return saliency_node(pack, tiny.tiny_sd15_patcher(), tiny_clip, recorded_steps=1, concepts="cat\ndog")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(r1=0.0), "r1: 0.0 is out of range"), (dict(r1=1.5), "r1"), (dict(r2=2.0), "r2: 2.0 is out of range"),
     (dict(r2=-0.1), "r2"), (dict(method="magic"), "method"),
     (dict(r2_overrides="Picasso: 0.1"), "r2_overrides: 'Picasso' is not one of the concepts")],
)
def test_selection_input_errors(pack, engine, saliency, kwargs, message):
    with pytest.raises(engine.FIAInputError, match=message):
        select_node(pack, saliency, **kwargs)


def test_fusion_and_apply_input_errors(pack, engine, saliency):
    masks = select_node(pack, saliency)
    for alpha in (0.0, 1.2):
        with pytest.raises(engine.FIAInputError, match="alpha"):
            fuse_node(pack, masks, alpha=alpha)
    with pytest.raises(engine.FIAInputError, match="fusion"):
        fuse_node(pack, masks, fusion="everything")
    mask = fuse_node(pack, masks)
    with pytest.raises(engine.FIAInputError, match="strength"):
        apply_node(pack, tiny.tiny_sd15_patcher(), mask, strength=1.5)
    with pytest.raises(engine.FIAInputError, match="mode"):
        apply_node(pack, tiny.tiny_sd15_patcher(), mask, mode="bake")
