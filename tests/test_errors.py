"""Bad input: a clear message naming the input and the fix, before any sampling."""

import pytest
from chain import apply_node, fuse_node, saliency_node, select_node

from devkit import tiny


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(concepts=" \n"), "concepts: the list is empty"),
        (dict(preset="custom", concept_template="a {placeholder}", placeholders="dog"), r"concept_template: .*\{concept\}"),
        (dict(recorded_steps=60, steps=50), "recorded_steps: T = 60 must be between 1 and the schedule's steps"),
        (dict(saliency_form="fancy"), "saliency_form"),
        (dict(width=4, height=4), "width/height"),
        (dict(cfg=float("nan")), r"cfg: nan is out of range. Use 0.0 to 100.0"),
        (dict(concepts="cat\n{placeholder}"), r"concepts: '\{placeholder\}' contains the template slot"),
        (dict(concepts="a {concept} b"), r"contains the template slot \{concept\}"),
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
     (dict(r1=float("nan")), "r1: nan is out of range"), (dict(r2=float("nan")), "r2: nan is out of range"),
     (dict(r2=-0.1), "r2"), (dict(method="magic"), "method"),
     (dict(r2_overrides="Picasso: 0.1"), "r2_overrides: 'Picasso' is not one of the concepts")],
)
def test_selection_input_errors(pack, engine, saliency, kwargs, message):
    with pytest.raises(engine.FIAInputError, match=message):
        select_node(pack, saliency, **kwargs)


def test_fusion_and_apply_input_errors(pack, engine, saliency):
    masks = select_node(pack, saliency)
    for alpha in (-0.1, 1.2, float("nan")):  # 0 is valid: the paper's alpha for the preset
        with pytest.raises(engine.FIAInputError, match="alpha"):
            fuse_node(pack, masks, alpha=alpha)
    with pytest.raises(engine.FIAInputError, match="fusion"):
        fuse_node(pack, masks, fusion="everything")
    mask = fuse_node(pack, masks)
    with pytest.raises(engine.FIAInputError, match="strength"):
        apply_node(pack, tiny.tiny_sd15_patcher(), mask, strength=1.5)
    with pytest.raises(engine.FIAInputError, match="mode"):
        apply_node(pack, tiny.tiny_sd15_patcher(), mask, mode="bake")
    with pytest.raises(engine.FIAInputError, match="strength: nan is out of range"):
        apply_node(pack, tiny.tiny_sd15_patcher(), mask, strength=float("nan"))


UNLEARN_DEFAULTS = dict(concepts="cat\ndog", preset="objects", prompt_pairs=1, seed=1244, recorded_steps=1, r2=0.0,
                        alpha=0.0, strength=1.0)


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(r2=float("nan")), "r2: nan is out of range"), (dict(alpha=float("nan")), "alpha: nan is out of range"),
    (dict(strength=float("nan")), "strength: nan is out of range"),
    (dict(preset="custom"), 'preset: "custom" is not one of objects, explicit, art. For your own prompt templates '
                            r"use FIA Compute Concept Saliency \(preset custom\)"),
    (dict(concepts="{placeholder}"), "contains the template slot"),
])
def test_unlearn_input_errors_come_before_sampling(pack, engine, tiny_clip, counted_model, overrides, message):
    model, calls = counted_model
    with pytest.raises(engine.FIAInputError, match=message):
        pack.nodes.FIAUnlearn.execute(model=model, clip=tiny_clip, **(UNLEARN_DEFAULTS | overrides))
    assert calls == []


def test_results_that_change_nothing_are_shown_and_logged(pack, engine, saliency, caplog):
    """One concept under the reference fusion rule prunes nothing: Fuse and Apply say so on the node
    and in the log; a concept that selected nothing is named by Select's warning."""
    masks = select_node(pack, saliency)
    one = engine.ConceptMasks(masks.architecture, masks.layers, {"cat": masks.selected["cat"]},
                              {"cat": masks.settings["cat"]}, masks.fingerprint)
    with caplog.at_level("WARNING"):
        fused = pack.nodes.FIAFuseMasks.execute(concept_masks=one, alpha=0.6, fusion="concept-agnostic",
                                                compatibility="reference")
        applied = pack.nodes.FIAApplyUnlearningMask.execute(model=tiny.tiny_sd15_patcher(), mask=fused[0],
                                                             strength=1.0, mode="patch")
    assert fused[0].pruned_count == 0
    for output in (fused, applied):
        assert "the mask prunes no weights, so the model is unchanged" in output.ui.as_dict()["text"][0]
    assert caplog.text.count("prunes no weights") == 2
    assert pack.nodes.FIAFuseMasks.execute(concept_masks=masks, alpha=0.6, fusion="concept-agnostic").ui is None
    empty = {key: indices[:0] for key, indices in masks.selected["dog"].items()}
    silent = engine.ConceptMasks(masks.architecture, masks.layers, {"cat": masks.selected["cat"], "dog": empty},
                                 masks.settings, masks.fingerprint)
    from fia_pack.fia_engine.core.checks import empty_selection_warning

    assert "1 concept(s) selected no weights (dog)" in empty_selection_warning(silent)
    assert empty_selection_warning(masks) == ""


def test_recorded_size_is_the_sampled_size(pack, tiny_clip):
    """65x71 samples a 8x8 latent, that is 64x64 pixels: the record says what was sampled."""
    record = saliency_node(pack, tiny.tiny_sd15_patcher(), tiny_clip, recorded_steps=1, prompt_pairs=1,
                           concepts="cat", width=65, height=71)
    assert (record.provenance.sampling.width, record.provenance.sampling.height) == (64, 64)
