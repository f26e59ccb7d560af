"""A second colour reader for ToyWorld images that needs no training: a fixed rule on the pixels.

Why: every forget rate comes from one trained CNN (`evaluator.py`), so a colour it misreads on
generated images (pale, pinkish or tinted shapes it never saw) would move a forget rate with
nothing to catch it. This rule shares no weights and no training data with it; where the two
disagree on a colour's forget rate, a person has to look at the images.

The rule, in the order it runs:
1. a 3x3 median filter per channel (removes impulse noise);
2. white balance: every background is gray, so the median chroma (RGB minus its mean) of the
   frame's pixels is a cast and is subtracted (a shape never touches the frame: its centre keeps
   1.5 px clear of it); the chroma, not the colour, because patterned frames mix two gray levels
   and a per-channel median of those could mix pixels into a false tint;
3. pixels whose saturation (max - min channel) exceeds `SATURATION` are the shape; the hue of
   their mean colour goes to the palette colour with the nearest hue;
4. with fewer than `MIN_PIXELS` of them, the neutral colour (`white`) when as many pixels are
   brighter than `BRIGHT` in every channel, else no shape (`none`), the evaluator's labels.

Measured with these constants, every colour value including `white` and `none` (world version 3
renders; degraded by `train_evaluator.augment`: noise, impulses, blur, gain, brightness, casts
+-0.05; "harder": always blurred, casts +-0.10, gaussian noise sigma 0.08, beyond the evaluator's
training): 2000 renders of `world.batch(27_182_818)`, clean 100 %, augment (seed 1) 100 %,
harder 100 %; the evaluator tests' 600 renders (`world.batch(31_415_926)`), clean 100 %, augment
(seed 7) 100 %, harder 99.8 % (one yellow read as orange). Without the median filter augment fell
to 84.5 % / 82.2 % (impulses read as saturated shape pixels); without the white balance harder
fell to 98.8 % / 99.2 % (casts turned yellow into orange). On generated images (ddim 25, cfg 7.5,
one seed per prompt): the v2 model's 150 prompts naming all three attributes, agreement with the
evaluator 92.7 % (the rule matches the prompt in 77.3 %, the evaluator in 74.7 %; the evaluator
read pale yellow shapes on blue-tinted backgrounds as white); a v3 training snapshot (step 3753)
on 240 prompts, 90 of them leaving attributes out, agreement 95.4 % (prompt 92.9 % against
89.2 %; the evaluator read pinkish red as orange or white).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .world import COLOUR_NAMES, COLOURS, NEUTRAL_COLOUR, NO_SHAPE

SATURATION = 0.4  # a palette colour's is 0.70-0.95, a gray background's 0
BRIGHT = 0.7  # darkest channel of the neutral white is 0.96; the brightest background is gray 0.50
MIN_PIXELS = 20  # the smallest shape (a triangle of radius 7 px) covers about 80 pixels


def hue(rgb: torch.Tensor) -> torch.Tensor:
    """Hue in degrees [0, 360) of RGB triples [..., 3]."""
    r, g, b = rgb.unbind(-1)
    top, bottom = rgb.max(-1).values, rgb.min(-1).values
    span = (top - bottom).clamp_min(1e-6)
    sector = torch.where(top == r, ((g - b) / span) % 6,
                         torch.where(top == g, (b - r) / span + 2, (r - g) / span + 4))
    return sector * 60


PALETTE_HUES = hue(torch.tensor([COLOURS[c] for c in COLOUR_NAMES]))


def _median3(images: torch.Tensor) -> torch.Tensor:
    """3x3 median per channel, edges replicated: IMAGE [B, H, W, 3] -> same."""
    b, h, w, c = images.shape
    planes = images.movedim(-1, 1).reshape(b * c, 1, h, w)
    windows = F.unfold(F.pad(planes, (1, 1, 1, 1), mode="replicate"), 3)  # [B*C, 9, H*W]
    return windows.median(dim=1).values.reshape(b, c, h, w).movedim(1, -1)


def _white_balanced(images: torch.Tensor) -> torch.Tensor:
    frame = torch.cat([images[:, 0], images[:, -1], images[:, 1:-1, 0], images[:, 1:-1, -1]], dim=1)
    cast = (frame - frame.mean(-1, keepdim=True)).median(dim=1).values  # [B, 3]
    return images - cast[:, None, None]


@torch.no_grad()
def read_colours(images: torch.Tensor) -> list[str]:
    """IMAGE [B, 32, 32, 3] in [0, 1] -> one of `world.VALUES['colour']` per image."""
    x = _white_balanced(_median3(images.float().clamp(0, 1)))
    saturated = (x.max(-1).values - x.min(-1).values) > SATURATION
    count = saturated.sum(dim=(1, 2))
    mean = (x * saturated[..., None]).sum(dim=(1, 2)) / count.clamp_min(1)[:, None]
    gap = (hue(mean)[:, None] - PALETTE_HUES).abs()
    nearest = torch.minimum(gap, 360 - gap).argmin(dim=1).tolist()
    bright = (x.min(-1).values > BRIGHT).sum(dim=(1, 2)).tolist()
    return [COLOUR_NAMES[k] if n >= MIN_PIXELS else NEUTRAL_COLOUR if lit >= MIN_PIXELS else NO_SHAPE
            for k, n, lit in zip(nearest, count.tolist(), bright)]


class ColourRule:
    """The rule as a `common.readers.Reader`; it holds nothing (the constants above are the rule)."""

    def read(self, images: torch.Tensor) -> list[str]:
        return read_colours(images)
