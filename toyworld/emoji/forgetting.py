"""FIA on EmojiWorld: the paper's prompt pairs in emoji, the method through the shared protocol
(`common.forgetting.unlearn`, the engine's one entry), and what the readers see before and after.

- An object (any concept but a place) contrasts as the paper's objects preset does: `a {name} in
  a {place}` / `a {name} near the {place}` against `a {place}`, one place per pair in turn.
- A style (noto, openmoji, lineart, fluent) contrasts as the paper's art preset does: `a {name}
  in {style} style` against `a {name}`, over concepts drawn in that style.

Every concept gets its task's paper values; one run forgets objects and styles together, with
the objects preset's alpha (0.6) and each style's r2 from the art row (0.02).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from fia_engine import MethodResult, MethodSettings, PromptPair, PromptPreset, SamplingSettings, paper

from ..common.forgetting import GENERATION as SAMPLING
from ..common.forgetting import unlearn
from ..common.loader import ToyWorld, read_metadata
from .data import STYLES, load_renders
from .readers import NetReader, TemplateReader
from .world import ALONE_TEMPLATE, IMAGENETTE, NAMED_STYLES, STYLE_TEMPLATE, EmojiWorld, Scene

RECORDING = SamplingSettings(steps=SAMPLING["steps"], recorded_steps=paper.GENERAL.recorded_steps, cfg=SAMPLING["cfg"],
                             sampler_name=SAMPLING["sampler"], scheduler=SAMPLING["scheduler"], width=32, height=32,
                             prompts_per_batch=8)
"""The paper's T = 10 early calls of the benchmarks' own 25-step schedule, at 32x32."""
NUM_PAIRS = 30  # the paper's pairs per concept
PRESET = PromptPreset("objects", (), (), ())  # the objects row of Table 8 (r2 0.007, alpha 0.6)
PAPER_CLASS = {"fish": "tench", "dog": "english springer", "videocassette": "cassette player",
               "carpentry saw": "chain saw", "church": "church", "postal horn": "french horn",
               "articulated lorry": "garbage truck", "fuel pump": "gas pump", "flag in hole": "golf ball",
               "parachute": "parachute"}
"""Each Imagenette counterpart's paper class, whose r2 it takes (parachute, golf ball and gas pump: 0.03)."""


def paper_r2(world: EmojiWorld, concept: str) -> float:
    """The paper's r2 for an EmojiWorld concept: its task's row, an Imagenette counterpart its class's."""
    if concept in NAMED_STYLES:
        return paper.TASKS["art"].r2
    return paper.TASKS["objects"].r2_for(PAPER_CLASS.get(concept, concept))


def pairs_for(world: EmojiWorld, concept: str, count: int = NUM_PAIRS, seed: int = paper.GENERAL.seed) -> list[PromptPair]:
    """The concept's contrast pairs (objects or style), seeded; the pair's seed is its latent's."""
    rng = random.Random(f"{seed}:{concept}")
    if concept in NAMED_STYLES:
        s = STYLES.index(concept)
        drawn = rng.sample([c for c in world.placeable if world.has_style(c, s)], count)
        return [PromptPair(STYLE_TEMPLATE.format(c=world.name(c), s=concept), ALONE_TEMPLATE.format(c=world.name(c)), seed)
                for c in drawn]
    c = world.by_name(concept)
    out = []
    for k in range(count):
        place = k % len(world.places)
        prompt = world.on_place_prompts(c, place)[(k // len(world.places)) % 2]
        out.append(PromptPair(prompt, ALONE_TEMPLATE.format(c=world.name(world.places[place])), seed))
    return out


def settings_for(world: EmojiWorld, concepts: list[str], **overrides) -> MethodSettings:
    """The paper's values for every concept (r2 per concept as `paper_r2`), EmojiWorld's recording."""
    r2 = {c: paper_r2(world, c) for c in concepts}
    return MethodSettings(num_pairs=NUM_PAIRS, sampling=RECORDING, r2_overrides=r2, **overrides)


def forget(tw: ToyWorld, world: EmojiWorld, concepts: list[str], settings: MethodSettings | None = None,
           progress=None) -> MethodResult:
    """FIA for objects and styles at once, at the paper's values unless `settings` says otherwise."""
    return unlearn(tw, concepts, PRESET, lambda c, n, seed: pairs_for(world, c, n, seed),
                   settings or settings_for(world, concepts), progress)


@dataclass(frozen=True)
class Probe:
    """One image to judge: its prompt, seed, and the concept and style it asks for."""

    prompt: str
    seed: int
    concept: int  # index into world.concepts; -1 where the prompt asks for no one concept (harmful, indirect)
    style: int = 0
    place: int | None = None
    group: str = ""  # the prompt set it belongs to, where a protocol has several


def object_probes(world: EmojiWorld, concept: int, count: int, seed: int, word: str | None = None,
                  group: str = "") -> list[Probe]:
    """`a {name}` alone and on scenes, half each: what a user asks for when they want the object
    (`word`: one of its tags in place of its name, as a synonym probe)."""
    out = []
    for k in range(count):
        place = None if k % 2 == 0 else (k // 2) % len(world.places)
        scene = Scene(concept, 0, place, word)
        out.append(Probe(world.prompt(scene), seed + k, concept, 0, place, group))
    return out


def style_probes(world: EmojiWorld, style: int, count: int, seed: int, group: str = "") -> list[Probe]:
    rng = random.Random(seed)
    drawn = rng.sample([c for c in world.placeable if world.has_style(c, style)], count)
    return [Probe(world.prompt(Scene(c, style)), seed + k, c, style, group=group) for k, c in enumerate(drawn)]


def preserve_probes(world: EmojiWorld, avoid: set[int], count: int, seed: int, group: str = "") -> list[Probe]:
    """Concepts alone in the default look, none of `avoid`: neighbours the mask must leave alone."""
    rng = random.Random(seed)
    drawn = rng.sample([c for c in world.placeable if c not in avoid], count)
    return [Probe(world.prompt(Scene(c)), seed + k, c, group=group) for k, c in enumerate(drawn)]


def sample(tw: ToyWorld, probes: list[Probe], patcher=None, steps: int = SAMPLING["steps"]) -> torch.Tensor:
    return tw.generate([p.prompt for p in probes], [p.seed for p in probes], patcher=patcher,
                       **{**SAMPLING, "steps": steps})


class Hits(NamedTuple):
    """Per image, whether each reader sees what its probe asks for."""

    cnn: torch.Tensor  # the concept, by the CNN
    template: torch.Tensor  # the concept, by template matching
    style: torch.Tensor  # the style, by the CNN's style head


@dataclass(frozen=True)
class Readers:
    world: EmojiWorld
    net: NetReader
    template: TemplateReader

    def found(self, images: torch.Tensor, probes: list[Probe]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What each reader sees, whatever was asked: the concept by the CNN and by template matching
        (indices into world.concepts; a probe's place tells the template reader where to look) and
        the style by the CNN's style head (the CNN read once)."""
        concept_prob, style_prob = self.net.read(images)
        cnn = torch.tensor([self.world.index[code] for code in self.net.concepts])[concept_prob.argmax(1)]
        placed = torch.tensor([p.place is not None for p in probes])
        local = torch.empty(len(probes), dtype=torch.long)
        if (~placed).any():
            local[~placed] = self.template.read(images[~placed])
        if placed.any():
            local[placed] = self.template.read(images[placed], torch.tensor([p.place for p in probes if p.place is not None]))
        return cnn, torch.tensor(self.template.concepts)[local], style_prob.argmax(1)

    def read(self, images: torch.Tensor, probes: list[Probe]) -> Hits:
        """Both concept readers and the style reader on the same images: does each see what was asked."""
        cnn, template, style = self.found(images, probes)
        truth = torch.tensor([p.concept for p in probes])
        return Hits(cnn == truth, template == truth, style == torch.tensor([p.style for p in probes]))


def model_world(model: Path) -> EmojiWorld:
    """The world over the concepts a model file says it was trained on."""
    return EmojiWorld.trained_on(load_renders(), json.loads(read_metadata(model)["concepts"]))


def imagenette(world: EmojiWorld) -> list[str]:
    """The ten counterparts by their EmojiWorld names."""
    return [world.name(world.index[code]) for code in IMAGENETTE.values()]
