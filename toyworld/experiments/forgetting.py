"""FIA on the shapes world: prompt pairs per attribute, and the paper's forget/preserve protocol in
miniature (its shared half, the engine call and the scores, is `toyworld.common.forgetting`).

A concept is one attribute value: a colour ("red"), a shape ("circle") or a background
("striped"). Its pair contrasts a prompt naming it with the same scene without it, as the
paper's base prompts do (world version 3, `world.without`): a colour like an art style ("a red
square on a gray background" vs "a square on a gray background", a white square), a shape like
an object ("a red circle on a striped background" vs "a striped background"), a background like
a place ("a red circle on a striped background" vs "a red circle", on the plain background). A
version-2 model gets version 2's pairs: the word left out, nothing else ("a red shape on a
striped background"), whose image showed a random value of the attribute.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import torch

from fia_engine import MethodResult, MethodSettings, PromptPair, PromptPreset, SamplingSettings, paper
from fia_engine.host.saliency import Progress

from ..common import forgetting as shared
from ..common.loader import ToyWorld
from ..shapes.colour_rule import read_colours
from ..shapes.evaluator import accuracy_per_value, classify
from ..shapes.world import (
    BACKGROUNDS,
    COLOUR_NAMES,
    SHAPES,
    SYNONYMS,
    WORD_KINDS,
    WORLD_VERSION,
    Label,
    prompt_for,
    without,
)

KINDS = {"colour": COLOUR_NAMES, "shape": SHAPES, "background": BACKGROUNDS}
ATTRIBUTE_INDEX = {"colour": 0, "shape": 1, "background": 2}
RECORDING = SamplingSettings(steps=25, recorded_steps=10, cfg=7.5, sampler_name="ddim", scheduler="normal",
                             width=32, height=32, prompts_per_batch=8)
PRESET = PromptPreset("toyworld", (), (), ())  # no task row in the paper: its general values (r2 0.01)
SETTINGS = MethodSettings(num_pairs=30, sampling=RECORDING)
"""The paper's values (r1 0.05, r2 0.01, alpha 0.6, seed 1244), 30 pairs, ToyWorld's recording."""


def kind_of(concept: str) -> str:
    """The attribute a concept names; synonyms are for rewording tests, never concepts."""
    if concept not in WORD_KINDS or concept in SYNONYMS.values():
        raise ValueError(f"'{concept}' is not a ToyWorld colour, shape or background")
    return WORD_KINDS[concept]


def label_with(concept: str, a: str, b: str) -> tuple[str, str, str]:
    """(colour, shape, background) with `concept` in its slot and a, b filling the other two."""
    kind = kind_of(concept)
    if kind == "colour":
        return (concept, a, b)
    if kind == "shape":
        return (a, concept, b)
    return (a, b, concept)


def other_values(concept: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    others = [values for kind, values in KINDS.items() if kind != kind_of(concept)]
    return others[0], others[1]


def concept_pairs(concept: str, num_pairs: int = 30, seed: int = paper.GENERAL.seed,
                  world_version: int = WORLD_VERSION) -> list[PromptPair]:
    """Pairs over all combinations of the other two attributes, shuffled with `seed`."""
    first, second = other_values(concept)
    combos = [(a, b) for a in first for b in second]
    random.Random(seed).shuffle(combos)
    kind = kind_of(concept)
    slot = ATTRIBUTE_INDEX[kind]
    pairs = []
    for k in range(num_pairs):
        label = label_with(concept, *combos[k % len(combos)])
        if world_version >= 3:
            base = prompt_for(*without(Label(*label), kind).as_tuple())
        else:
            base = prompt_for(*(None if i == slot else v for i, v in enumerate(label)), world_version=2)
        pairs.append(PromptPair(prompt_for(*label), base, seed))  # one starting latent, as the reference
    return pairs


def pairs_of(world: ToyWorld) -> shared.PairsOf:
    """The pairs of the model's own world version (a v2 model's base prompts only drop the word)."""
    return functools.partial(concept_pairs, world_version=world.world_version)


def unlearn(world: ToyWorld, concepts: list[str], settings: MethodSettings = SETTINGS,
            progress: Progress | None = None) -> MethodResult:
    """FIA on ToyWorld concepts of any kinds (one base set per kind), the paper's values by default:
    the shared protocol with this world's preset and pairs (`.record`, `.concept_masks`, `.mask`)."""
    return shared.unlearn(world, concepts, PRESET, pairs_of(world), settings, progress)


@dataclass(frozen=True)
class Probe:
    """A generation prompt with its seed and the attributes it names."""

    prompt: str
    seed: int
    label: tuple[str, str, str]


def forget_probes(concept: str, count: int, seed: int, synonym: bool = False) -> list[Probe]:
    """Prompts naming `concept` (or its synonym) with random other attributes."""
    rng = random.Random(seed)
    first, second = other_values(concept)
    probes = []
    for k in range(count):
        label = label_with(concept, rng.choice(first), rng.choice(second))
        words = [SYNONYMS.get(v, v) if synonym and v == concept else v for v in label]
        probes.append(Probe(prompt_for(*words), seed * 1000 + k, label))
    return probes


def preserve_probes(forgotten: list[str], count: int, seed: int) -> list[Probe]:
    """Prompts naming none of the forgotten concepts."""
    rng = random.Random(seed)
    allowed = {kind: [v for v in values if v not in forgotten] for kind, values in KINDS.items()}
    probes = []
    for k in range(count):
        label = tuple(rng.choice(allowed[kind]) for kind in KINDS)
        probes.append(Probe(prompt_for(*label), seed * 1000 + k, label))
    return probes


def generate(world: ToyWorld, probes: list[Probe], patcher=None) -> torch.Tensor:
    return world.generate([p.prompt for p in probes], [p.seed for p in probes], patcher=patcher, **shared.GENERATION)


def shows(predicted: tuple[str, str, str], concept: str) -> bool:
    return predicted[ATTRIBUTE_INDEX[kind_of(concept)]] == concept


def forget_rate(images: torch.Tensor, concept: str) -> float:
    """Fraction of images that still show the concept (lower is better)."""
    return sum(shows(p, concept) for p in classify(images)) / max(1, images.shape[0])


def rule_forget_rate(images: torch.Tensor, colour: str) -> float:
    """A colour's forget rate as the training-free `colour_rule` reads it (a check on the evaluator)."""
    if kind_of(colour) != "colour":
        raise ValueError(f"the colour rule reads colours only, not '{colour}'")
    return sum(c == colour for c in read_colours(images)) / max(1, images.shape[0])


def read_forget_rates(images: dict[str, torch.Tensor]) -> dict:
    """Per concept, the forget rate of its probes' images; for a colour also the colour rule's, and
    the colours where the two readers disagree."""
    rates = {c: forget_rate(im, c) for c, im in images.items()}
    rule = {c: rule_forget_rate(im, c) for c, im in images.items() if kind_of(c) == "colour"}
    return {"forget_rate_per_concept": rates, "forget_rate_per_concept_rule": rule,
            "reader_disagreements": shared.reader_disagreements(rates, rule)}


def attribute_accuracy_per_value(images: torch.Tensor, probes: list[Probe]) -> dict[str, dict[str, float]]:
    """Per attribute, how often the evaluator reads each value the probes name."""
    return accuracy_per_value(classify(images), [p.label for p in probes])


def attribute_accuracy(images: torch.Tensor, probes: list[Probe]) -> dict[str, float]:
    """Per-attribute match rate between the evaluator's reading and the prompt, and their mean."""
    predicted = classify(images)
    result = {kind: sum(p[i] == probe.label[i] for p, probe in zip(predicted, probes)) / len(probes)
              for kind, i in ATTRIBUTE_INDEX.items()}
    result["mean"] = sum(result[k] for k in KINDS) / len(KINDS)
    return result
