"""Two independent concept readers and a style reader for EmojiWorld images.

- `NetReader`: a small residual CNN with two heads (concept, style), trained on renders degraded
  the way generated samples are (`degrade`: blur, noise, colour shift, scale and position).
- `TemplateReader`: no training at all. It compares an image with every concept's renderings in
  every style (alone, whole tile) and, for objects on a scene, with the placed drawing at every
  position on its own pixels only, both after the same blur; the best match wins. Different
  kind, different failure modes: where the two disagree by more than 10 points, reports say so.

Both read a fixed list of concepts (the model's), stored with the CNN's weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import PLACED, SIZE, STYLES
from .world import EmojiWorld, Scene

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "emoji_reader.safetensors"


def degrade(images: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Imitate a sampler's flaws on IMAGE [B, H, W, 3]: scale and shift (white fill), blur,
    per-channel gain and offset, gaussian noise. `strength` 0 returns the images unchanged."""
    b = images.shape[0]
    x = images.movedim(-1, 1)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen) * 2 - 1

    scale = 1 + strength * 0.12 * uniform(b)
    shift = strength * 0.15 * uniform(b, 2)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = 1 - F.grid_sample(1 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sigma = strength * 1.2 * torch.rand(b, generator=gen)
    x = torch.stack([_blur(xi[None], float(s))[0] for xi, s in zip(x, sigma)])
    x = x * (1 + strength * 0.15 * uniform(b, 3, 1, 1)) + strength * 0.08 * uniform(b, 3, 1, 1)
    x = x + strength * 0.08 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1).movedim(1, -1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of [B, C, H, W] (replicate edges); sigma < 0.2 is left alone."""
    if sigma < 0.2:
        return x
    radius = max(1, int(2.5 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Identity() if cin == cout and stride == 1 else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class NetReader(nn.Module):
    """Residual CNN (a stem at 32x32, then 16 -> 8 -> 4) with a concept head and a style head;
    small enough to train on one CPU thread in well under an hour."""

    def __init__(self, concepts: tuple[str, ...], width: int = 32) -> None:
        super().__init__()
        self.concepts = concepts  # concept codes, in head order
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            _Residual(w, 2 * w, 2), _Residual(2 * w, 4 * w, 2), _Residual(4 * w, 8 * w, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.concept_head = nn.Linear(8 * w, len(concepts))
        self.style_head = nn.Linear(8 * w, len(STYLES))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """IMAGE [B, 32, 32, 3] in [0, 1] -> (concept logits, style logits)."""
        f = self.features(images.movedim(-1, 1) * 2 - 1)
        return self.concept_head(f), self.style_head(f)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """The penultimate layer, [B, 8 * width]: the space both heads read, so distances in it
        are what this reader can tell apart (the Fréchet distance of `image_quality`)."""
        self.eval()
        return torch.cat([self.features(images[i:i + chunk].float().clamp(0, 1).movedim(-1, 1) * 2 - 1)
                          for i in range(0, len(images), chunk)])

    @torch.no_grad()
    def read(self, images: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Concept and style probabilities, [B, len(concepts)] and [B, len(STYLES)]."""
        f = self.embed(images, chunk)
        return self.concept_head(f).softmax(-1), self.style_head(f).softmax(-1)

    def save(self, path: Path, metadata: dict[str, str]) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
                   for k, v in self.state_dict().items()}
        save_file(tensors, str(path), {**metadata, "concepts": json.dumps(self.concepts),
                                       "styles": json.dumps(STYLES), "width": str(self.concept_head.in_features // 8)})


def load_reader(path: Path = WEIGHTS) -> NetReader:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if json.loads(meta.get("styles", "null")) != list(STYLES):
        raise ValueError(f"{path} reads other styles than {STYLES}: retrain it (python -m toyworld.emoji.train_readers)")
    net = NetReader(tuple(json.loads(meta["concepts"])), int(meta["width"]))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()})
    return net.eval()


class TemplateReader:
    """Best match against every concept's renderings: whole-tile for a concept alone (each
    style), masked to the drawing's own pixels at every position for an object on a scene."""

    def __init__(self, world: EmojiWorld, concepts: tuple[int, ...], sigma: float = 1.0, shift: int = 2) -> None:
        self.world = world
        self.concepts = concepts
        self.sigma = sigma
        self.shift = shift
        tiles, owner = [], []
        for k, c in enumerate(concepts):
            for s in range(len(STYLES)):
                if world.has_style(c, s):
                    tiles.append(world.draw(Scene(c, s)))
                    owner.append(k)
        self.tiles = self._prepare(torch.stack(tiles))  # [M, 3*SIZE*SIZE], blurred, centred, unit norm
        self.owner = torch.tensor(owner)
        small = world.placed_drawings[list(concepts)]  # [K, PLACED, PLACED, 4]
        alpha = small[..., 3:].movedim(-1, 1)  # [K, 1, P, P]
        # blurred premultiplied colour and blurred coverage: compositing then blurring, to first order
        self.placed_paint = _blur(alpha * small[..., :3].movedim(-1, 1), sigma)
        self.placed_cover = _blur(alpha, sigma).expand(-1, 3, -1, -1)
        visible = alpha[:, 0] > 0.2  # each drawing's top-left visible pixel in its tile
        self.placed_corner = torch.stack([
            torch.stack([torch.nonzero(v.any(1))[0, 0], torch.nonzero(v.any(0))[0, 0]]) for v in visible])

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = _blur(images.movedim(-1, 1).float(), self.sigma).flatten(1)
        x = x - x.mean(1, keepdim=True)
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)

    @torch.no_grad()
    def alone_scores(self, images: torch.Tensor) -> torch.Tensor:
        """[B, K] best correlation of each image, shifted by up to `shift` pixels (white fill),
        with any style's drawing of each concept."""
        r = self.shift
        padded = F.pad(images.movedim(-1, 1).float(), (r, r, r, r), value=1.0)
        sim = torch.stack([
            self._prepare(padded[:, :, dy:dy + SIZE, dx:dx + SIZE].movedim(1, -1)) @ self.tiles.T
            for dy in range(2 * r + 1) for dx in range(2 * r + 1)]).amax(0)  # [B, M]
        out = torch.full((len(images), len(self.concepts)), -2.0)
        return out.scatter_reduce(1, self.owner.expand(len(images), -1), sim, reduce="amax")

    @torch.no_grad()
    def placed_scores(self, images: torch.Tensor, places: torch.Tensor) -> torch.Tensor:
        """[B, K] for objects on a known scene: where the image departs from its scene gives the
        object's box; each concept's drawing is composited there (and one pixel around) over the
        scene, and minus the least mean squared error in its window, after the same blur, is its
        score. An image showing its scene alone scores -inf everywhere: no concept there."""
        x = _blur(images.movedim(-1, 1).float(), self.sigma)
        scenes = torch.stack([self.world.draw(Scene(self.world.places[int(p)])) for p in places])
        ground = _blur(scenes.movedim(-1, 1), self.sigma)
        side = SIZE - PLACED + 1
        x_windows = F.unfold(x, PLACED)  # [B, 3*P*P, side*side]
        g_windows = F.unfold(ground, PLACED)
        paint, cover = self.placed_paint.flatten(1), self.placed_cover.flatten(1)  # [K, 3*P*P]
        out = torch.full((len(images), len(self.concepts)), float("-inf"))
        changed = (x - ground).abs().amax(1) > 0.2  # [B, H, W]
        for b in range(len(images)):
            ys, xs = torch.nonzero(changed[b], as_tuple=True)
            if len(ys) == 0:
                continue
            corner = torch.stack([ys.min(), xs.min()])
            best = torch.full((len(self.concepts),), float("inf"))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    at = (corner[None] - self.placed_corner + torch.tensor([dy, dx])).clamp(0, side - 1)
                    column = at[:, 0] * side + at[:, 1]  # [K]
                    xw, gw = x_windows[b][:, column].T, g_windows[b][:, column].T  # [K, 3*P*P]
                    err = (paint + gw * (1 - cover) - xw).pow(2).mean(1)
                    best = torch.minimum(best, err)
            out[b] = -best
        return out

    def read(self, images: torch.Tensor, places: torch.Tensor | None = None, chunk: int = 128) -> torch.Tensor:
        """Index into `concepts` of the best match per image ([B] long); `places` (index into
        world.places per image) when the objects were asked on a scene, None when alone."""
        if places is None:
            return torch.cat([self.alone_scores(images[i:i + chunk]).argmax(1) for i in range(0, len(images), chunk)])
        return self.placed_scores(images, places).argmax(1)


@torch.no_grad()
def read_place(world: EmojiWorld, images: torch.Tensor) -> torch.Tensor:
    """The scene an image shows ([B] index into world.places): the nearest of the twelve by the
    median pixel difference, which an object covering a quarter of the tile does not move."""
    scenes = torch.stack([world.draw(Scene(p)) for p in world.places])  # [P, H, W, 3]
    diff = (images[:, None].float() - scenes[None]).abs().mean(-1).flatten(2)  # [B, P, H*W]
    return diff.median(-1).values.argmin(1)
