"""ToyWorld: a procedural world of one coloured shape on one background.

Images are 32x32 RGB floats in [0, 1]. Everything is rendered from a seed, so training data
needs no files and held-out sets are reproducible.

Two world versions differ only in what a prompt that leaves an attribute out shows. Version 3
(current) follows the paper's base prompts ("a road" against "a parachute in a road"): no
shape word -> no shape, no colour word -> one neutral colour, no background word -> one plain
background, none of them a concept, so a concept's pair contrasts its presence with its
absence. Version 2 (the v2 model's training data) drew a random value instead, so "a red
shape" showed a circle one time in five and the pair's base prompt fired the concept too.
Scenes that name every attribute render identically in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SIZE = 32
SUPERSAMPLE = 4  # anti-aliased edges: render at 4x and average-pool

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.10, 0.10),
    "green": (0.10, 0.80, 0.15),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.65, 0.15, 0.85),
    "orange": (1.00, 0.55, 0.05),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
BACKGROUNDS: tuple[str, ...] = ("black", "gray", "striped", "checkered", "dotted")

# One synonym per colour and per shape, used in training so rewording can be tested later.
COLOUR_SYNONYMS: dict[str, str] = {
    "red": "crimson",
    "green": "emerald",
    "blue": "azure",
    "yellow": "golden",
    "purple": "violet",
    "orange": "amber",
}
SHAPE_SYNONYMS: dict[str, str] = {
    "circle": "disk",
    "square": "box",
    "triangle": "wedge",
    "cross": "plus",
    "ring": "donut",
}
SYNONYMS: dict[str, str] = {**COLOUR_SYNONYMS, **SHAPE_SYNONYMS}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
WORD_KINDS: dict[str, str] = {
    **{w: "colour" for w in (*COLOUR_NAMES, *COLOUR_SYNONYMS.values())},
    **{w: "shape" for w in (*SHAPES, *SHAPE_SYNONYMS.values())},
    **{w: "background" for w in BACKGROUNDS},
}

# What a left-out attribute shows in world version 3. Label values, not words: no prompt names
# them and none is a concept. A scene without a shape has no colour either ("none").
NO_SHAPE = "none"
NEUTRAL_COLOUR = "white"
PLAIN_BACKGROUND = "plain"
ABSENT: dict[str, str] = {"colour": NEUTRAL_COLOUR, "shape": NO_SHAPE, "background": PLAIN_BACKGROUND}
NEUTRAL_RGB = (0.96, 0.96, 0.96)
PLAIN_LEVEL = 0.26  # between black (0.02) and gray (0.50), unpatterned
# Every label value per attribute (what the evaluator reads), concepts first.
VALUES: dict[str, tuple[str, ...]] = {
    "colour": (*COLOUR_NAMES, NEUTRAL_COLOUR, NO_SHAPE),
    "shape": (*SHAPES, NO_SHAPE),
    "background": (*BACKGROUNDS, PLAIN_BACKGROUND),
}
WORLD_VERSION = 3

# Words the toy text encoder knows (anything else maps to the 'unk' embedding).
FILLER_WORDS: tuple[str, ...] = ("a", "on", "background", "shape")
VOCAB: tuple[str, ...] = (
    FILLER_WORDS
    + COLOUR_NAMES
    + tuple(COLOUR_SYNONYMS.values())
    + SHAPES
    + tuple(SHAPE_SYNONYMS.values())
    + BACKGROUNDS
)


@dataclass(frozen=True)
class Label:
    colour: str
    shape: str
    background: str

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.background)


def _named(value: str | None) -> str | None:
    return None if value in (NO_SHAPE, NEUTRAL_COLOUR, PLAIN_BACKGROUND) else value


def prompt_for(
    colour: str | None, shape: str | None, background: str | None, world_version: int = WORLD_VERSION
) -> str:
    """Canonical prompt; an attribute that is None or an absent value is left out, all gives ''.

    Without a shape (and so without a colour) version 3 says only the background: "a striped
    background"; version 2 said "a shape on a striped background". A colour without a shape
    ("a red shape") exists only in version 2's data."""
    colour, shape, background = _named(colour), _named(shape), _named(background)
    if colour is None and shape is None and background is None:
        return ""
    if colour is None and shape is None and world_version >= 3:
        return f"a {background} background"
    noun = shape if shape is not None else "shape"
    words = ["a"] + ([colour] if colour is not None else []) + [noun]
    if background is not None:
        words += ["on", "a", background, "background"]
    return " ".join(words)


def _background(kind: str, gen: torch.Generator, n: int) -> torch.Tensor:
    """Grey-level background [n, n] (patterns are gray so any shape colour stands out)."""
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    s = SUPERSAMPLE
    phase = int(torch.randint(0, 8 * s, (1,), generator=gen))
    if kind == "black":
        return torch.full((n, n), 0.02)
    if kind == "gray":
        return torch.full((n, n), 0.50)
    if kind == PLAIN_BACKGROUND:
        return torch.full((n, n), PLAIN_LEVEL)
    if kind == "striped":  # vertical stripes, period 6 px
        on = ((xx + phase) // (3 * s)) % 2 == 0
    elif kind == "checkered":  # 8 px checker
        on = (((xx + phase) // (4 * s)) + ((yy + phase) // (4 * s))) % 2 == 0
    elif kind == "dotted":  # dots of radius 1.3 px on a 6 px grid
        p = 6 * s
        dx = (xx + phase) % p - p / 2
        dy = (yy + phase) % p - p / 2
        on = dx**2 + dy**2 <= (1.3 * s) ** 2
    else:
        raise ValueError(f"unknown background {kind!r}")
    return torch.where(on, torch.tensor(0.45), torch.tensor(0.12))


def _shape_mask(kind: str, cx: float, cy: float, r: float, n: int) -> torch.Tensor:
    """Boolean mask [n, n] at supersampled resolution; cx, cy, r in supersampled pixels."""
    ys, xs = torch.meshgrid(
        torch.arange(n, dtype=torch.float32) + 0.5,
        torch.arange(n, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    dx, dy = xs - cx, ys - cy
    if kind == NO_SHAPE:
        return torch.zeros(n, n, dtype=torch.bool)
    if kind == "circle":
        return dx**2 + dy**2 <= r**2
    if kind == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if kind == "square":
        h = 0.85 * r
        return (dx.abs() <= h) & (dy.abs() <= h)
    if kind == "cross":
        w = 0.33 * r
        return ((dx.abs() <= w) & (dy.abs() <= r)) | ((dy.abs() <= w) & (dx.abs() <= r))
    if kind == "triangle":  # upward, centroid at (cx, cy)
        top = cy - r
        base = cy + 0.6 * r
        half = (dy - (top - cy)) / (base - top) * (r * 1.05)
        return (ys >= top) & (ys <= base) & (dx.abs() <= half)
    raise ValueError(f"unknown shape {kind!r}")


def render(label: Label, seed: int) -> torch.Tensor:
    """Render one image [32, 32, 3] in [0, 1]; position, size and pattern phase come from seed
    (drawn also for a shapeless scene, so it keeps the phase of the same seed's shaped scenes)."""
    gen = torch.Generator().manual_seed(int(seed))
    n = SIZE * SUPERSAMPLE
    r = float(torch.empty(1).uniform_(7.0, 11.0, generator=gen)) * SUPERSAMPLE
    margin = r + 1.5 * SUPERSAMPLE
    cx = float(torch.empty(1).uniform_(margin, n - margin, generator=gen))
    cy = float(torch.empty(1).uniform_(margin, n - margin, generator=gen))
    bg = _background(label.background, gen, n)
    mask = _shape_mask(label.shape, cx, cy, r, n)
    colour = torch.tensor(NEUTRAL_RGB if label.colour in (NEUTRAL_COLOUR, NO_SHAPE) else COLOURS[label.colour])
    img = torch.where(mask[..., None], colour, bg[..., None].expand(n, n, 3))
    img = img.permute(2, 0, 1)[None]
    img = torch.nn.functional.avg_pool2d(img, SUPERSAMPLE)[0].permute(1, 2, 0)
    return img.clamp(0.0, 1.0).contiguous()


def random_label(gen: torch.Generator) -> Label:
    c = COLOUR_NAMES[int(torch.randint(len(COLOUR_NAMES), (1,), generator=gen))]
    s = SHAPES[int(torch.randint(len(SHAPES), (1,), generator=gen))]
    b = BACKGROUNDS[int(torch.randint(len(BACKGROUNDS), (1,), generator=gen))]
    return Label(c, s, b)


def random_scene(gen: torch.Generator, p_absent: float = 0.15) -> Label:
    """World version 3: each attribute absent with p_absent. A scene without a shape always
    has a background word: with neither, only the empty prompt (CFG's unconditional) is left."""
    label = random_label(gen)
    u = torch.rand(3, generator=gen).tolist()
    if u[1] < p_absent:
        return Label(NO_SHAPE, NO_SHAPE, label.background)
    return Label(
        NEUTRAL_COLOUR if u[0] < p_absent else label.colour,
        label.shape,
        PLAIN_BACKGROUND if u[2] < p_absent else label.background,
    )


def without(label: Label, kind: str) -> Label:
    """The same scene with the attribute `kind` left out (world version 3), as a concept's base
    prompt has it. Leaving out the shape leaves nothing to colour, so the colour goes too:
    "a red circle on a striped background" -> "a striped background" (the paper's objects)."""
    if kind == "shape":
        return Label(NO_SHAPE, NO_SHAPE, label.background)
    if kind == "colour":
        return Label(NEUTRAL_COLOUR if label.shape != NO_SHAPE else NO_SHAPE, label.shape, label.background)
    if kind == "background":
        return Label(label.colour, label.shape, PLAIN_BACKGROUND)
    raise ValueError(f"unknown attribute kind {kind!r}")


def all_labels() -> list[Label]:
    return [Label(c, s, b) for c in COLOUR_NAMES for s in SHAPES for b in BACKGROUNDS]


def all_scenes(world_version: int = WORLD_VERSION) -> list[Label]:
    """Every scene a prompt can ask for: `all_labels` first (in its order, the same in both
    versions), then, from version 3 on, those that leave attributes out: a shape without colour,
    without background, without both, and a background alone (215 in all). The empty prompt, CFG's
    unconditional, is no scene."""
    labels = all_labels()
    if world_version < 3:
        return labels
    return [
        *labels,
        *(Label(NEUTRAL_COLOUR, s, b) for s in SHAPES for b in BACKGROUNDS),
        *(Label(c, s, PLAIN_BACKGROUND) for c in COLOUR_NAMES for s in SHAPES),
        *(Label(NEUTRAL_COLOUR, s, PLAIN_BACKGROUND) for s in SHAPES),
        *(Label(NO_SHAPE, NO_SHAPE, b) for b in BACKGROUNDS),
    ]


def training_prompt(
    label: Label,
    gen: torch.Generator,
    p_drop: float = 0.15,
    p_empty: float = 0.1,
    p_synonym: float = 0.2,
) -> str:
    """World version 2's training prompt: attributes dropped from the prompt while the image
    keeps them, synonyms sometimes used, and some prompts empty (the unconditional score, for
    CFG)."""
    u = torch.rand(6, generator=gen).tolist()
    if u[0] < p_empty:
        return ""
    colour: str | None = label.colour if u[1] >= p_drop else None
    shape: str | None = label.shape if u[2] >= p_drop else None
    background: str | None = label.background if u[3] >= p_drop else None
    if colour is not None and u[4] < p_synonym:
        colour = COLOUR_SYNONYMS[colour]
    if shape is not None and u[5] < p_synonym:
        shape = SHAPE_SYNONYMS[shape]
    return prompt_for(colour, shape, background, world_version=2)


def scene_prompt(label: Label, gen: torch.Generator, p_empty: float = 0.1, p_synonym: float = 0.2) -> str:
    """World version 3's training prompt: the label's exact description (absent values left
    unsaid), synonyms sometimes used, and some prompts empty (CFG's unconditional score)."""
    u = torch.rand(3, generator=gen).tolist()
    if u[0] < p_empty:
        return ""
    colour = COLOUR_SYNONYMS.get(label.colour, label.colour) if u[1] < p_synonym else label.colour
    shape = SHAPE_SYNONYMS.get(label.shape, label.shape) if u[2] < p_synonym else label.shape
    return prompt_for(colour, shape, label.background)


def batch(
    seed: int, n: int, world_version: int = WORLD_VERSION
) -> tuple[torch.Tensor, list[str], list[Label]]:
    """A training batch: images [n, 32, 32, 3], prompts, labels; fully determined by seed."""
    gen = torch.Generator().manual_seed(int(seed))
    if world_version == 2:
        labels = [random_label(gen) for _ in range(n)]
        prompts = [training_prompt(lab, gen) for lab in labels]
    elif world_version == 3:
        labels = [random_scene(gen) for _ in range(n)]
        prompts = [scene_prompt(lab, gen) for lab in labels]
    else:
        raise ValueError(f"world_version must be 2 or 3, got {world_version}")
    seeds = torch.randint(0, 2**31 - 1, (n,), generator=gen).tolist()
    images = torch.stack([render(lab, s) for lab, s in zip(labels, seeds)])
    return images, prompts, labels


def circle_area_fraction(r: float) -> float:
    """Helper for tests: fraction of the image a circle of radius r covers."""
    return math.pi * r * r / (SIZE * SIZE)
