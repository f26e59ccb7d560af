"""ToyWorld's readers and reports: the training-free colour rule's floors, accuracy per value
including world version 3's absent values, and the new report fields on tiny runs (CPU)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from devkit.comfy_env import setup_comfy

setup_comfy(os.environ.get("COMFYUI_PATH") or Path(__file__).parents[1] / ".comfyui/ComfyUI")

from toyworld.shapes import world  # noqa: E402
from toyworld.shapes.world import NEUTRAL_COLOUR, NO_SHAPE, PLAIN_BACKGROUND  # noqa: E402

REPO = Path(__file__).parents[1]
pytestmark = pytest.mark.toyworld


# --- colour rule ----------------------------------------------------------------------------

def _rule_rates(images: torch.Tensor, colours: list[str]) -> dict[str, float]:
    from toyworld.shapes.colour_rule import read_colours

    read = read_colours(images)
    rates = {"all": sum(r == c for r, c in zip(read, colours)) / len(colours)}
    for value in world.VALUES["colour"]:
        hits = [r == c for r, c in zip(read, colours) if c == value]
        assert len(hits) > 40, value  # every value, the neutral white and no shape included
        rates[value] = sum(hits) / len(hits)
    return rates


def test_colour_rule_reads_clean_and_degraded_renders() -> None:
    """Measured on these 600 renders (the evaluator tests' seed stream): 100 % clean and 100 %
    degraded by `augment` (seed 7), every value; the floors leave a margin."""
    from toyworld.shapes.train_evaluator import augment

    images, _, labels = world.batch(31_415_926, 600)
    colours = [lab.colour for lab in labels]
    for name, seen in (("clean", images), ("augment", augment(images, torch.Generator().manual_seed(7)))):
        rates = _rule_rates(seen, colours)
        assert rates["all"] >= 0.98 and min(rates.values()) >= 0.95, (name, rates)


def test_colour_rule_ignores_a_background_cast() -> None:
    """A tint over the whole image (the v2 model's blue-tinted backgrounds) is white-balanced away:
    a white shape stays white, a yellow one yellow, a shapeless scene has no colour."""
    from toyworld.shapes.colour_rule import read_colours

    scenes = [world.Label(NEUTRAL_COLOUR, "square", "gray"), world.Label("yellow", "ring", "checkered"),
              world.Label(NO_SHAPE, NO_SHAPE, "striped")]
    images = torch.stack([world.render(lab, 4) for lab in scenes])
    tinted = (images + torch.tensor([-0.10, -0.05, 0.12])).clamp(0, 1)
    assert read_colours(tinted) == [NEUTRAL_COLOUR, "yellow", NO_SHAPE]


# --- accuracy per value and the base-quality prompt set -------------------------------------

def test_accuracy_per_value_covers_absent_values() -> None:
    from toyworld.shapes.evaluator import accuracy_per_value, classify

    truth = [lab.as_tuple() for lab in world.all_scenes()]
    read = accuracy_per_value(classify(torch.stack([world.render(world.Label(*t), i) for i, t in enumerate(truth)])),
                              truth)
    assert {kind: list(rates) for kind, rates in read.items()} == {k: list(v) for k, v in world.VALUES.items()}
    assert min(r for rates in read.values() for r in rates.values()) >= 0.8, read
    wrong = list(truth)
    first_white = next(i for i, t in enumerate(truth) if t[0] == NEUTRAL_COLOUR)
    wrong[first_white] = ("red", *truth[first_white][1:])
    rates = accuracy_per_value(wrong, truth)
    assert rates["colour"][NEUTRAL_COLOUR] == 1 - 1 / sum(t[0] == NEUTRAL_COLOUR for t in truth)
    assert rates["colour"]["red"] == 1.0 and "white" not in accuracy_per_value(truth[:150], truth[:150])["colour"]


def test_base_quality_prompt_set_covers_left_out_attributes() -> None:
    from toyworld.experiments.report import prompt_set

    v3, v2 = prompt_set(2), prompt_set(2, world_version=2)
    assert len(v3.prompts) == 430 and len(v2.prompts) == 300
    assert len(set(zip(v3.prompts, v3.seeds))) == 430 and prompt_set(2) == v3
    for kind, values in world.VALUES.items():
        i = list(world.VALUES).index(kind)
        assert {t[i] for t in v3.truth} == set(values)  # every value, absent ones included
        assert {t[i] for t in v2.truth} == set(values) - {world.ABSENT[kind], NO_SHAPE}
    expected = dict(zip(v3.prompts, v3.truth))
    assert expected["a circle on a striped background"] == (NEUTRAL_COLOUR, "circle", "striped")
    assert expected["a red circle"] == ("red", "circle", PLAIN_BACKGROUND)
    assert expected["a circle"] == (NEUTRAL_COLOUR, "circle", PLAIN_BACKGROUND)
    assert expected["a striped background"] == (NO_SHAPE, NO_SHAPE, "striped")
    # a scene naming all three attributes keeps its prompt and seeds in both versions
    named = [(p, s) for p, s, t in zip(v3.prompts, v3.seeds, v3.truth) if not set(t) & set(world.ABSENT.values())]
    assert named == list(zip(v2.prompts, v2.seeds))
    synonyms = prompt_set(1, synonyms=True)
    assert "a crimson disk" in synonyms.prompts and "a striped background" in synonyms.prompts


@pytest.fixture(scope="module")
def v3_model():
    """The committed v3 model."""
    from toyworld.common.loader import V3_WEIGHTS, load_toyworld

    return load_toyworld(V3_WEIGHTS)


def test_base_quality_reports_every_value_of_a_v3_model(v3_model) -> None:
    from toyworld.experiments.report import evaluate, prompt_set

    full = prompt_set(1)
    # one scene per kind of prompt: all three named, no colour, no background, neither, no shape
    picks = [0, 150, 175, 205, 210]
    small = dataclasses.replace(full, prompts=[full.prompts[i] for i in picks], seeds=[full.seeds[i] for i in picks],
                                truth=[full.truth[i] for i in picks])
    assert small.prompts == ["a red circle on a black background", "a circle on a black background", "a red circle",
                             "a circle", "a black background"]
    res, images = evaluate(v3_model, small, steps=8, cfg=7.5, sampler="ddim", scheduler="normal")
    assert images.shape == (5, 32, 32, 3) and res["settings"]["world_version"] == 3
    assert set(res["match"]) == {"colour", "shape", "background", "all"}
    per_value = res["attribute_accuracy_per_value"]
    assert list(per_value["colour"]) == ["red", NEUTRAL_COLOUR, NO_SHAPE]
    assert list(per_value["shape"]) == ["circle", NO_SHAPE] and list(per_value["background"]) == ["black", PLAIN_BACKGROUND]
    assert res["images_per_value"]["colour"] == {"red": 2, NEUTRAL_COLOUR: 2, NO_SHAPE: 1}
    assert all(0 <= r <= 1 for rates in per_value.values() for r in rates.values())
    assert 0 <= res["colour_rule_match"] <= 1
    json.dumps(res)


# --- forget-rate reports ----------------------------------------------------------------------

def test_reader_disagreements_need_more_than_ten_points() -> None:
    from toyworld.common.forgetting import reader_disagreements
    from toyworld.experiments import forgetting as fg

    rates = {"red": 0.45, "blue": 0.5, "circle": 0.9}
    assert reader_disagreements(rates, {"red": 0.35, "blue": 0.375}) == ["blue"]
    with pytest.raises(ValueError, match="colours only"):
        fg.rule_forget_rate(torch.zeros(1, 32, 32, 3), "circle")


REPORT_FIELDS = {"forget_rate", "forget_rate_per_concept", "forget_rate_per_concept_rule", "reader_disagreements",
                 "preserve_accuracy", "overall", "preserve_pixel_change", "synonym_forget_rate"}


def _check_rule_fields(row: dict, colours: list[str]) -> None:
    """The rule's rates are those of the colours alone, and the disagreements are what
    reader_disagreements (tested above on known rates) finds in them."""
    from toyworld.common.forgetting import reader_disagreements

    rule, rates = row["forget_rate_per_concept_rule"], row["forget_rate_per_concept"]
    assert list(rule) == colours
    assert row["reader_disagreements"] == reader_disagreements(rates, rule)


@pytest.fixture(scope="module")
def toy():
    from toyworld.common.loader import load_toyworld

    return load_toyworld()


def test_efficacy_rows_read_colours_twice(toy, monkeypatch) -> None:
    """bench/efficacy.py on 2 concepts, 2 images each, one configuration (2 saliency pairs)."""
    def module(name: str, path: Path):
        spec = importlib.util.spec_from_file_location(name, path)
        loaded = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, loaded)
        spec.loader.exec_module(loaded)
        return loaded

    module("common", REPO / "bench" / "common.py")  # efficacy imports it by that name, as a script does
    efficacy = module("bench_efficacy", REPO / "bench" / "efficacy.py")
    args = Namespace(per_concept=2, preserve=2, pairs=2)
    saved = []
    result = efficacy.run_set(toy, ["red", "circle"], args, {"FIA r2=0.1": {"r2": 0.1}}, saved.append)
    assert len(saved) == 2
    base, row = result["base"], result["FIA r2=0.1"]
    assert set(base["attribute_accuracy"]) == {"colour", "shape", "background", "mean"}
    per_value = base["attribute_accuracy_per_value"]
    assert "red" in per_value["colour"] and "circle" in per_value["shape"]  # the forgotten concepts too
    for r in (base, row):
        assert set(r) >= REPORT_FIELDS and list(r["forget_rate_per_concept"]) == ["red", "circle"]
        _check_rule_fields(r, ["red"])
        assert list(r["synonym_forget_rate_per_concept_rule"]) == ["red"]
    assert row["concepts"] == ["red", "circle"] and row["settings"]["r2"] == 0.1
    assert base["forget_rate_per_concept_rule"]["red"] == efficacy.fg.rule_forget_rate(
        efficacy.fg.generate(toy, efficacy.fg.forget_probes("red", 2, seed=100)), "red")
    json.dumps(result)


def test_demo_rates_read_colours_twice(toy) -> None:
    """toyworld.experiments.demo's rates with every feed-forward output zeroed as the 'unlearned' model."""
    from toyworld.experiments import attribution, demo

    knocked = attribution.zeroed(toy.patcher, attribution.knockouts(toy.patcher)["all ff.net.2"])
    rates = demo.rates(toy, knocked, ["red", "striped"], per_concept=2)
    assert set(rates["forget_rate"]) == {"red", "striped"}
    for when in ("before", "after"):
        _check_rule_fields({"forget_rate_per_concept": {c: r[when] for c, r in rates["forget_rate"].items()},
                            "forget_rate_per_concept_rule": rates["forget_rate_per_concept_rule"][when],
                            "reader_disagreements": rates["reader_disagreements"][when]}, ["red"])
    assert rates["base"]["attribute_accuracy"]["mean"] == rates["preserve_accuracy"]["before"]
    from toyworld.experiments import forgetting as fg

    keep = fg.preserve_probes(["red", "striped"], 4, seed=200)  # demo.rates' preserve prompts
    assert rates["preserve_accuracy"]["after"] == fg.attribute_accuracy(fg.generate(toy, keep, knocked), keep)["mean"]
    assert "red" in rates["base"]["attribute_accuracy_per_value"]["colour"]
    json.dumps(rates)
