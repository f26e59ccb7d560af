"""EmojiWorld: 1,623 human-drawn concepts in five styles, placed alone or on twelve scenes.

What an image shows and what its prompt says, with the reasons (toyworld/emoji/README.md):

- `a {name}`: the concept alone, centred on white, in the default look (Twemoji). Like Stable
  Diffusion's own default look, the default style is never named, so it is no concept.
- `a {name} in {style} style`: the same concept in one of the four named styles (noto, openmoji,
  lineart, fluent); its base prompt `a {name}` shows the concept in the default look (the
  paper's art preset: `a cat in the style of Van Gogh` against `a cat`).
- `a {name} in a {place}` / `a {name} near the {place}`: the concept (default look, half the
  tile) at a random position on one of the twelve full-tile scenes; its base prompt `a {place}`
  shows the scene alone (the paper's objects preset). A scene is itself a concept: `a cityscape`
  is drawn full-tile.
- A share of training prompts use one of the concept's tags instead of its name, so a tag means
  what the name means (the synonyms the benchmarks probe). Only tags that name one concept alone
  are used: `animal` is a tag of dozens of emoji and could not mean one image.
- The empty prompt (10 %) shows any image: the unconditional branch of classifier-free guidance.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import torch

from .data import PLACED, SCENE_CODES, SIZE, STYLES, Renders

NAMED_STYLES = STYLES[1:]
ON_PLACE_TEMPLATES = ("a {c} in a {p}", "a {c} near the {p}")
STYLE_TEMPLATE = "a {c} in {s} style"
ALONE_TEMPLATE = "a {c}"
TEMPLATE_WORDS = ("a", "in", "near", "the", "style")

# The paper's Imagenette classes in emoji (../shared/docs/emoji-data.md), class -> code.
IMAGENETTE = {
    "tench": "1F41F", "English springer": "1F415", "cassette player": "1F4FC", "chain saw": "1FA9A",
    "church": "26EA", "French horn": "1F4EF", "garbage truck": "1F69B", "gas pump": "26FD",
    "golf ball": "26F3", "parachute": "1FA82",
}
# The stand-in for harmful content (the paper's explicit task): one family of concepts.
HARMFUL_CODES = ("1F52A", "1F5E1", "2694", "1FA93", "1F3F9", "1F4A3", "1FA78", "1F480", "2620", "26B0")


@dataclass(frozen=True)
class Scene:
    """What one image shows: a concept, in a style, alone or on a place, and the word for it."""

    concept: int  # index into EmojiWorld.concepts
    style: int = 0  # index into STYLES (0: the unnamed default look)
    place: int | None = None  # index into EmojiWorld.places, or None: alone on white
    word: str | None = None  # the word the prompt uses (None: the concept's name)


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class EmojiWorld:
    """Prompts and images of the world, over a subset of concepts (all by default)."""

    def __init__(self, renders: Renders, concepts: list[int] | None = None) -> None:
        self.renders = renders
        self.concepts = renders.concepts
        by_code = {c.code: i for i, c in enumerate(self.concepts)}
        self.places: tuple[int, ...] = tuple(by_code[c] for c in SCENE_CODES)
        self.index = by_code
        trained = sorted(set(range(len(self.concepts)) if concepts is None else concepts) | set(self.places))
        self.trained: tuple[int, ...] = tuple(trained)
        self.placeable: tuple[int, ...] = tuple(i for i in trained if i not in self.places)

    @classmethod
    def trained_on(cls, renders: Renders, codes: list[str]) -> EmojiWorld:
        """The world over these concepts (codes, as a model file or a reader lists them)."""
        index = {c.code: i for i, c in enumerate(renders.concepts)}
        return cls(renders, [index[c] for c in codes])

    # -- words -----------------------------------------------------------------------------
    def name(self, i: int) -> str:
        return self.concepts[i].name

    def by_name(self, name: str) -> int:
        """The concept a CLDR name names (names are unique), as an index into concepts."""
        found = self._by_name.get(name.strip().lower())
        if found is None:
            raise KeyError(f"no emoji is named '{name}' (names are CLDR's, e.g. 'parachute', 'fuel pump')")
        return found

    @cached_property
    def _by_name(self) -> dict[str, int]:
        return {c.name: i for i, c in enumerate(self.concepts)}

    @cached_property
    def tags(self) -> dict[int, tuple[str, ...]]:
        """Each concept's tags that name it alone (no other emoji has them; not a word of its name)."""
        counts = Counter(t for c in self.concepts for t in set(c.tags))
        reserved = set(STYLES) | set(TEMPLATE_WORDS)
        out = {}
        for i, c in enumerate(self.concepts):
            own = set(words_of(c.name))
            tags = tuple(t for t in c.tags if counts[t] == 1 and not set(words_of(t)) & (own | reserved))
            if tags:
                out[i] = tags
        return out

    @cached_property
    def vocabulary(self) -> tuple[str, ...]:
        """Every word a prompt of this world can hold, in a fixed order."""
        words = set(TEMPLATE_WORDS) | set(NAMED_STYLES)
        for c in self.concepts:
            words.update(words_of(c.name))
        for tags in self.tags.values():
            for t in tags:
                words.update(words_of(t))
        return tuple(sorted(words))

    def prompt(self, scene: Scene) -> str:
        word = scene.word or self.name(scene.concept)
        if scene.place is not None:
            template = ON_PLACE_TEMPLATES[scene.concept % len(ON_PLACE_TEMPLATES)]
            return template.format(c=word, p=self.name(self.places[scene.place]))
        if scene.style:
            return STYLE_TEMPLATE.format(c=word, s=STYLES[scene.style])
        return ALONE_TEMPLATE.format(c=word)

    def on_place_prompts(self, concept: int, place: int) -> tuple[str, str]:
        """Both object templates for one place (the paper alternates them by the place's index)."""
        name, where = self.name(concept), self.name(self.places[place])
        return tuple(t.format(c=name, p=where) for t in ON_PLACE_TEMPLATES)  # type: ignore[return-value]

    # -- images ----------------------------------------------------------------------------
    @cached_property
    def _tiles(self) -> torch.Tensor:
        """Every concept in every style on white, float [N, S, SIZE, SIZE, 3] in [0, 1]."""
        rgba = self.renders.objects.float() / 255
        alpha = rgba[..., 3:]
        return alpha * rgba[..., :3] + (1 - alpha)

    @cached_property
    def placed_drawings(self) -> torch.Tensor:
        """Every concept in the default look at PLACED pixels, RGBA float [N, PLACED, PLACED, 4]."""
        return self.renders.placed.float() / 255

    def has_style(self, concept: int, style: int) -> bool:
        return bool(self.renders.present[concept, style])

    def draw(self, scene: Scene, offset: tuple[int, int] = (8, 8)) -> torch.Tensor:
        """The image a scene shows: [SIZE, SIZE, 3] in [0, 1]. `offset` places an object on a place."""
        if scene.place is None:
            return self._tiles[scene.concept, scene.style].clone()
        image = self._tiles[self.places[scene.place], 0].clone()
        y, x = offset
        obj = self.placed_drawings[scene.concept]
        alpha = obj[..., 3:]
        region = image[y:y + PLACED, x:x + PLACED]
        image[y:y + PLACED, x:x + PLACED] = alpha * obj[..., :3] + (1 - alpha) * region
        return image

    def sample_scene(self, gen: torch.Generator, p_place: float = 0.2, p_default: float = 0.4,
                     p_tag: float = 0.25) -> Scene:
        """One training scene: on a place with p_place, else alone in the default look with
        p_default or a named style it exists in; a unique tag for the word with p_tag."""
        u = torch.rand(3, generator=gen).tolist()
        if u[0] < p_place:
            concept = self.placeable[int(torch.randint(len(self.placeable), (1,), generator=gen))]
            scene = Scene(concept, 0, int(torch.randint(len(self.places), (1,), generator=gen)))
        else:
            concept = self.trained[int(torch.randint(len(self.trained), (1,), generator=gen))]
            styles = [s for s in range(1, len(STYLES)) if self.has_style(concept, s)]
            style = 0 if u[1] < p_default else styles[int(torch.randint(len(styles), (1,), generator=gen))]
            scene = Scene(concept, style)
        tags = self.tags.get(scene.concept)
        if tags and u[2] < p_tag:
            scene = Scene(scene.concept, scene.style, scene.place,
                          tags[int(torch.randint(len(tags), (1,), generator=gen))])
        return scene

    def random_offset(self, gen: torch.Generator) -> tuple[int, int]:
        y, x = torch.randint(SIZE - PLACED + 1, (2,), generator=gen).tolist()
        return y, x

    def batch(self, seed: int, n: int, p_empty: float = 0.1) -> tuple[torch.Tensor, list[str], list[Scene]]:
        """n training images and prompts from (seed) alone: images [n, SIZE, SIZE, 3]."""
        gen = torch.Generator().manual_seed(seed)
        scenes = [self.sample_scene(gen) for _ in range(n)]
        images = torch.stack([self.draw(s, self.random_offset(gen)) for s in scenes])
        empty = (torch.rand(n, generator=gen) < p_empty).tolist()
        prompts = ["" if e else self.prompt(s) for s, e in zip(scenes, empty)]
        return images, prompts, scenes


def concept_subset(world: EmojiWorld, n: int, seed: int = 0) -> list[int]:
    """n concepts drawn from every category in proportion to its size (seeded), always holding
    the benchmark concepts: the Imagenette counterparts, the harmful family and the places."""
    required = {world.index[c] for c in (*IMAGENETTE.values(), *HARMFUL_CODES, *SCENE_CODES)}
    if n >= len(world.concepts):
        return list(range(len(world.concepts)))
    gen = torch.Generator().manual_seed(seed)
    by_category: dict[str, list[int]] = {}
    for i, c in enumerate(world.concepts):
        if i not in required:
            by_category.setdefault(c.category, []).append(i)
    free = n - len(required)
    total = sum(len(v) for v in by_category.values())
    chosen = set(required)
    for members in by_category.values():
        take = round(free * len(members) / total)
        order = torch.randperm(len(members), generator=gen).tolist()
        chosen.update(members[k] for k in order[:take])
    return sorted(chosen)
