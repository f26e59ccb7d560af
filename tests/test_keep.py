"""Concepts to keep (no weight selected for them is pruned) and the paper's alpha per concept set."""

from __future__ import annotations

import pytest
from chain import fuse_node, saliency_node, select_node


@pytest.fixture(scope="module")
def selections(pack, tiny_clip):
    """cat, dog and bird forgotten, horse kept: one saliency run, so they share base prompts."""
    from devkit import tiny

    record = saliency_node(pack, tiny.tiny_sd15_patcher(seed=0), tiny_clip, concepts="cat\ndog\nbird\nhorse")
    return select_node(pack, record, r2=0.1)


def test_kept_concepts_lose_none_of_their_weights(pack, selections, tmp_path):
    forget, keep = selections.only(["cat", "dog", "bird"]), selections.only(["horse"])
    without = fuse_node(pack, forget)
    with_keep = pack.nodes.FIAFuseMasks.execute(concept_masks=forget, alpha=0.0, fusion="concept-agnostic",
                                                keep=keep)[0]
    spared = 0
    for key, pruned in with_keep.pruned.items():
        horse = set(keep.selected["horse"][key].tolist())
        assert not horse & set(pruned.tolist())
        assert set(pruned.tolist()) == set(without.pruned[key].tolist()) - horse
        spared += len(set(without.pruned[key].tolist()) & horse)
    assert spared > 0  # on this model horse shares weights with the forgotten concepts
    assert with_keep.settings.keep == pack.fia_engine.masks.KeptConcepts(("horse",), spared)
    path = tmp_path / "kept.safetensors"
    pack.fia_engine.save_mask(with_keep, str(path))
    loaded = pack.fia_engine.load_mask(str(path))
    assert loaded.settings.stated["keep"] == {"concepts": ["horse"], "weights_spared": spared}
    summary = pack.nodes.FIAMaskInspector.execute(mask=loaded).args[1]
    assert f"Kept concepts (1): horse; keeping them spared {spared:,} weights" in summary


def test_a_concept_cannot_be_forgotten_and_kept(pack, engine, selections):
    with pytest.raises(engine.FIAInputError, match="keep: cat is both forgotten and kept"):
        engine.fuse_masks([selections.only(["cat", "dog"])], keep=[selections.only(["cat"])])


def test_alpha_zero_is_the_papers_per_concept_set(pack, engine, tiny_model, tiny_clip):
    objects = select_node(pack, saliency_node(pack, tiny_model, tiny_clip, concepts="cat\ndog\nbird", recorded_steps=1))
    art = select_node(pack, saliency_node(pack, tiny_model, tiny_clip, concepts="Monet\nDali", preset="art",
                                          recorded_steps=1))
    assert fuse_node(pack, objects, alpha=0.0).settings.alpha == 0.6
    art_only = fuse_node(pack, art, alpha=0.0).settings
    assert (art_only.alpha, art_only.alpha_source) == (0.8, "paper: art 0.8 x 2")
    mixed = fuse_node(pack, objects, art, alpha=0.0)
    assert mixed.settings.alpha == pytest.approx((3 * 0.6 + 2 * 0.8) / 5)
    assert mixed.settings.agnostic_threshold == 4  # ceil(0.68 * 5)
    assert fuse_node(pack, objects, art, alpha=0.6).settings.alpha_source is None


def test_unlearn_node_keeps_what_it_is_told(pack, tiny_model, tiny_clip):
    import dataclasses

    from fia_pack.nodes import unlearn

    small = dataclasses.replace(unlearn.PAPER_SAMPLING, steps=10, width=32, height=32, prompts_per_batch=2)
    knobs = dict(model=tiny_model, clip=tiny_clip, concepts="cat\ndog", preset="objects", prompt_pairs=2, seed=7,
                 recorded_steps=2, r2=0.2, alpha=0.0, strength=1.0, sampling=small)
    _, mask = pack.nodes.FIAUnlearn.execute(**knobs, keep="bird").args
    assert mask.concepts == ["cat", "dog"] and mask.settings.keep.concepts == ("bird",)
    _, plain = pack.nodes.FIAUnlearn.execute(**knobs).args
    assert mask.settings.keep.weights_spared > 0
    assert mask.pruned_count == plain.pruned_count - mask.settings.keep.weights_spared
    with pytest.raises(pack.fia_engine.FIAInputError, match="both forgotten and kept"):
        pack.nodes.FIAUnlearn.execute(**knobs, keep="Dog")
