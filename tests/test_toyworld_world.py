"""ToyWorld world version 3: what a prompt that leaves an attribute out shows, the concept pairs
built on it, and the evaluator's floors on held-out and degraded renders (fast, CPU)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from devkit.comfy_env import setup_comfy

setup_comfy(os.environ.get("COMFYUI_PATH") or Path(__file__).parents[1] / ".comfyui/ComfyUI")

from toyworld.shapes import world  # noqa: E402
from toyworld.shapes.world import NEUTRAL_COLOUR, NO_SHAPE, PLAIN_BACKGROUND, Label  # noqa: E402

pytestmark = pytest.mark.toyworld


def _outside(shape_of: Label, seed: int) -> torch.Tensor:
    """Pixels the shape of `shape_of` (rendered with `seed`) does not touch: saturated pixels
    grown by one, for the anti-aliased rim."""
    img = world.render(shape_of, seed)
    shape = ((img.max(dim=-1).values - img.min(dim=-1).values) > 0.3).float()
    return torch.nn.functional.max_pool2d(shape[None, None], 3, 1, 1)[0, 0] == 0


def test_absent_values_are_no_concept_and_no_word() -> None:
    assert world.ABSENT == {"colour": NEUTRAL_COLOUR, "shape": NO_SHAPE, "background": PLAIN_BACKGROUND}
    for kind, concepts in (("colour", world.COLOUR_NAMES), ("shape", world.SHAPES), ("background", world.BACKGROUNDS)):
        assert world.VALUES[kind][: len(concepts)] == concepts
        assert world.ABSENT[kind] in world.VALUES[kind] and world.ABSENT[kind] not in concepts
        assert world.ABSENT[kind] not in world.WORD_KINDS and world.ABSENT[kind] not in world.VOCAB
    assert world.VALUES["colour"][-1] == NO_SHAPE  # a scene without a shape has no colour


def test_no_shape_renders_the_background_alone_with_the_same_phase() -> None:
    for bg in world.BACKGROUNDS:
        empty = world.render(Label(NO_SHAPE, NO_SHAPE, bg), 11)
        shaped = world.render(Label("red", "circle", bg), 11)
        assert float((empty.max(dim=-1).values - empty.min(dim=-1).values).max()) < 1e-6  # all gray
        keep = _outside(Label("red", "circle", bg), 11)
        assert torch.equal(empty[keep], shaped[keep])


def test_neutral_colour_is_white_and_plain_background_is_none_of_the_five() -> None:
    img = world.render(Label(NEUTRAL_COLOUR, "square", "black"), 3)
    bright = img.min(dim=-1).values > 0.5
    assert int(bright.sum()) > 50
    assert torch.allclose(img[bright].median(dim=0).values, torch.tensor(world.NEUTRAL_RGB), atol=0.02)
    plain = world.render(Label("blue", "ring", PLAIN_BACKGROUND), 3)
    flat = plain[_outside(Label("blue", "ring", PLAIN_BACKGROUND), 3)]
    assert torch.allclose(flat, torch.full_like(flat, world.PLAIN_LEVEL))  # unpatterned
    bare = {bg: world.render(Label(NO_SHAPE, NO_SHAPE, bg), 3)[..., 0] for bg in world.BACKGROUNDS}
    assert float(bare["black"].max()) < world.PLAIN_LEVEL - 0.2 < world.PLAIN_LEVEL + 0.2 < float(bare["gray"].min())
    assert all(float(bare[bg].std()) > 0.05 for bg in ("striped", "checkered", "dotted"))  # patterned


def test_prompts_name_exactly_what_the_scene_shows() -> None:
    assert world.prompt_for("red", "circle", "striped") == "a red circle on a striped background"
    assert world.prompt_for(NEUTRAL_COLOUR, "circle", "striped") == "a circle on a striped background"
    assert world.prompt_for("red", "circle", PLAIN_BACKGROUND) == "a red circle"
    assert world.prompt_for(NO_SHAPE, NO_SHAPE, "striped") == "a striped background"
    assert world.prompt_for(None, None, "striped", world_version=2) == "a shape on a striped background"
    images, prompts, labels = world.batch(5, 600)
    assert torch.equal(images, world.batch(5, 600)[0])
    synonyms = {v: k for k, v in world.SYNONYMS.items()}
    for prompt, label in zip(prompts, labels):
        assert not (label.shape == NO_SHAPE and label.background == PLAIN_BACKGROUND)  # no prompt says that
        if prompt == "":
            continue
        named = {world.WORD_KINDS[w]: synonyms.get(w, w) for w in re.findall(r"[a-z]+", prompt) if w in world.WORD_KINDS}
        for kind, value in zip(("colour", "shape", "background"), label.as_tuple()):
            # a left-out attribute shows its absent value; without a shape there is no colour
            assert named.get(kind, world.ABSENT[kind] if label.shape != NO_SHAPE else NO_SHAPE) == value, prompt
        assert "shape" not in prompt.split()
    share = {v: sum(lab.as_tuple()[i] == v for lab in labels) / len(labels)
             for i, v in ((0, NEUTRAL_COLOUR), (1, NO_SHAPE), (2, PLAIN_BACKGROUND))}
    assert all(0.08 < s < 0.22 for s in share.values()), share
    assert 0.06 < prompts.count("") / len(prompts) < 0.14


def test_version_2_batches_keep_their_random_values() -> None:
    _, prompts, labels = world.batch(5, 300, world_version=2)
    assert all(lab.colour in world.COLOURS and lab.shape in world.SHAPES and lab.background in world.BACKGROUNDS
               for lab in labels)
    assert any(" shape" in p for p in prompts)  # "a red shape ...": the word left out, a shape drawn
    with pytest.raises(ValueError, match="world_version"):
        world.batch(5, 2, world_version=4)


def test_concept_pairs_contrast_presence_with_absence() -> None:
    from toyworld.experiments import forgetting as fg

    for concept, base_of in (("red", lambda c, s, b: f"a {s} on a {b} background"),
                             ("circle", lambda c, s, b: f"a {b} background"),
                             ("striped", lambda c, s, b: f"a {c} {s}")):
        pairs = fg.concept_pairs(concept, 30)
        assert len({p.concept_prompt for p in pairs}) >= 25 and all(concept in p.concept_prompt.split() for p in pairs)
        for p in pairs:
            c, s, b = re.fullmatch(r"a (\w+) (\w+) on a (\w+) background", p.concept_prompt).groups()
            assert p.base_prompt == base_of(c, s, b)
    for p in fg.concept_pairs("circle", 30, world_version=2):  # version 2: only the word goes
        c, _, b = re.fullmatch(r"a (\w+) (\w+) on a (\w+) background", p.concept_prompt).groups()
        assert p.base_prompt == f"a {c} shape on a {b} background"
    assert world.without(Label("red", "circle", "striped"), "shape") == Label(NO_SHAPE, NO_SHAPE, "striped")
    assert world.without(Label(NO_SHAPE, NO_SHAPE, "gray"), "colour") == Label(NO_SHAPE, NO_SHAPE, "gray")
    with pytest.raises(ValueError, match="unknown attribute"):
        world.without(Label("red", "circle", "striped"), "size")


# --- evaluator ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def held_out():
    """600 renders from a seed stream no training or held-out set used, with every value."""
    from toyworld.shapes.evaluator import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.exists():
        pytest.skip("evaluator weights not trained yet")
    images, _, labels = world.batch(31_415_926, 600)
    return images, [lab.as_tuple() for lab in labels]


def _floors(images: torch.Tensor, truth: list[tuple[str, str, str]]) -> dict[str, float]:
    from toyworld.shapes.evaluator import accuracy, classify

    predicted = classify(images)
    acc = accuracy(predicted, truth)
    for i, kind in enumerate(("colour", "shape", "background")):
        absent = [(p, t) for p, t in zip(predicted, truth) if t[i] == world.ABSENT[kind]]
        assert len(absent) > 40
        acc[f"{kind} absent"] = sum(p[i] == t[i] for p, t in absent) / len(absent)
    return acc


def test_evaluator_reads_held_out_renders(held_out) -> None:
    acc = _floors(*held_out)
    assert min(acc.values()) >= 0.99, acc


def test_evaluator_reads_degraded_renders(held_out) -> None:
    """Noise, impulse noise, blur, gain and colour casts, as generated samples have them."""
    from toyworld.shapes.train_evaluator import augment

    images, truth = held_out
    acc = _floors(augment(images, torch.Generator().manual_seed(7)), truth)
    assert min(acc.values()) >= 0.99, acc
