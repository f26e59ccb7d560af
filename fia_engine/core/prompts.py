"""Concept/base prompt pairs (paper Tables 6-7): the contrast of Eq.2 is between them.

Built as the reference code builds them: the first n placeholders of the vocabulary, templates
alternating by the placeholder's position in it, then the pairs shuffled with the seed. Every
prompt of a run starts from one latent made from the seed (the reference resets the seed before
each generation), so the base prompts' std measures only what the prompts change. Base prompts
do not depend on the concept, so concepts of one preset, vocabulary and seed share one base set
(its statistics are computed once).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace

from . import paper
from .errors import FIAInputError

PLACES = (
    "road", "tree", "forest", "lawn", "clubhouse", "courtyard", "backyard", "cityscape", "suburb",
    "mall", "cafe", "office", "library", "market", "bridge", "harbor", "garden", "beach", "room",
    "park", "street", "shelter", "chair", "table", "bag", "mountain", "valley", "waterfall",
    "desert", "sunrise",
)
PERSONS = (
    "man", "woman", "girl", "boy", "mother", "father", "kid", "professor", "student",
    "group of friends", "celebrity", "child", "couple", "guy", "doctor", "nurse", "teacher", "lawyer",
)
OBJECTS = (
    "cat", "dog", "mouse", "bear", "car", "chair", "bag", "building", "chicken", "duck", "sofa",
    "table", "tree", "bicycle", "door", "rabbit", "ball", "bat", "horse", "bird", "flower", "bowl",
    "bottle", "wall", "clock", "television", "guitar", "truck", "laptop", "book",
)

CONCEPT_SLOT = "{concept}"
PLACEHOLDER_SLOT = "{placeholder}"


@dataclass(frozen=True)
class PromptPreset:
    """Templates and vocabulary of one task; its paper settings (Table 8) are `paper.for_task(name)`."""

    name: str
    concept_templates: tuple[str, ...]
    base_templates: tuple[str, ...]
    placeholders: tuple[str, ...]

    @property
    def paper(self) -> paper.PaperSettings:
        return paper.for_task(self.name)


PRESETS: dict[str, PromptPreset] = {
    "objects": PromptPreset(
        "objects", ("a {concept} in a {placeholder}", "a {concept} near the {placeholder}"), ("a {placeholder}",), PLACES
    ),
    "explicit": PromptPreset(
        "explicit", ("a photo of a {concept} {placeholder}",), ("a photo of a {placeholder}",), PERSONS
    ),
    "art": PromptPreset("art", ("a {placeholder} in the style of {concept}",), ("a {placeholder}",), OBJECTS),
}
PRESET_NAMES = (*PRESETS, "custom")
NOISE_PROTOCOLS = ("shared", "per-pair")
"""shared: every prompt starts from the seed's latent (the reference). per-pair: pair k from seed + k."""


@dataclass(frozen=True)
class PromptPair:
    concept_prompt: str
    base_prompt: str
    seed: int


def parse_lines(text: str) -> list[str]:
    """One entry per line; blank lines and '#' comments are ignored."""
    return [s.strip() for s in text.splitlines() if s.strip() and not s.strip().startswith("#")]


def resolve_preset(
    preset: str, concept_template: str = "", base_template: str = "", placeholders_text: str = ""
) -> PromptPreset:
    """The preset to use, with custom templates and placeholders checked."""
    placeholders = tuple(parse_lines(placeholders_text))
    if preset == "custom":
        if CONCEPT_SLOT not in concept_template:
            raise FIAInputError(
                "concept_template: a custom template must contain {concept}, "
                "e.g. 'a painting of a {placeholder} by {concept}'."
            )
        if CONCEPT_SLOT in base_template:
            raise FIAInputError(
                "base_template: the base template must not contain {concept}; "
                "it is the same prompt without the concept, e.g. 'a painting of a {placeholder}'."
            )
        uses_slot = PLACEHOLDER_SLOT in concept_template or PLACEHOLDER_SLOT in base_template
        if uses_slot and not placeholders:
            raise FIAInputError(
                "placeholders: the custom templates use {placeholder} but no placeholders are given. "
                "Write one placeholder per line."
            )
        return PromptPreset("custom", (concept_template,), (base_template,), placeholders or ("",))
    if preset not in PRESETS:
        raise FIAInputError(f"preset: unknown preset '{preset}'. Choose one of {', '.join(PRESET_NAMES)}.")
    chosen = PRESETS[preset]
    if placeholders:
        chosen = replace(chosen, placeholders=placeholders)
    return chosen


def build_prompt_pairs(
    concept: str, preset: PromptPreset, num_pairs: int, seed: int, noise: str = "shared"
) -> list[PromptPair]:
    """`num_pairs` pairs from the first placeholders (0 = all of them), shuffled with `seed`.

    noise "shared" gives every pair the seed itself; "per-pair" gives the k-th pair after the
    shuffle seed + k (the pack's earlier protocol: the noise then enters the base std, Eq.2's
    margin shrinks, and far fewer weights are selected). Neither the shuffle nor the seeds depend
    on the concept, so every concept of one run gets the same base prompts.
    """
    check_noise(noise)
    vocabulary = preset.placeholders
    count = num_pairs if num_pairs > 0 else len(vocabulary)
    if count > len(vocabulary) and noise == "shared":
        raise FIAInputError(
            f"prompt_pairs: {count} pairs but only {len(vocabulary)} placeholders; with one shared starting "
            f"latent a repeated placeholder repeats the same prompt. Use at most {len(vocabulary)}, add "
            "placeholders, or choose noise per-pair."
        )
    pairs = []
    for index in range(count):
        placeholder = vocabulary[index % len(vocabulary)]
        pairs.append((
            _fill(preset.concept_templates[index % len(preset.concept_templates)], concept, placeholder),
            _fill(preset.base_templates[index % len(preset.base_templates)], concept, placeholder),
        ))
    random.Random(seed).shuffle(pairs)
    return [
        PromptPair(concept_prompt, base_prompt, seed if noise == "shared" else seed + k)
        for k, (concept_prompt, base_prompt) in enumerate(pairs)
    ]


def check_noise(noise: str) -> None:
    if noise not in NOISE_PROTOCOLS:
        raise FIAInputError(f"noise: '{noise}' is unknown; use one of {', '.join(NOISE_PROTOCOLS)}.")


def base_set_id(pairs: list[PromptPair]) -> str:
    """Identifies a base-prompt set with its seeds; equal ids share base statistics."""
    text = "\n".join(f"{p.seed}\t{p.base_prompt}" for p in pairs)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _fill(template: str, concept: str, placeholder: str) -> str:
    text = template.replace(CONCEPT_SLOT, concept).replace(PLACEHOLDER_SLOT, placeholder)
    return " ".join(text.split())
