"""Image quality of an unlearned EmojiWorld model against its base: this world's FID and CLIP
score (issue #24, item 4).

- Fréchet distance: between the Gaussians fitted to the CNN reader's penultimate features
  (`NetReader.embed`) of the base model's images and the method's, on the same preserve prompts
  and seeds. FID does this with Inception features of natural images; here the reader trained
  on this world's drawings is the network that knows what they look like. With few images the
  covariances are rank-deficient; the distance is still defined (the matrix square root is taken
  of a positive semi-definite product) and comparable between methods at the same image count,
  not across counts.
- Prompted probability: the reader's mean probability of the concept each prompt asks for, the
  counterpart of the CLIP score (how much an image agrees with its prompt), on the same images.
"""

from __future__ import annotations

import torch

from .forgetting import Probe
from .readers import NetReader
from .world import EmojiWorld


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2) of two feature sets [N, D]
    (fp64; the symmetric form's eigenvalues, clipped at 0, so no complex square root is needed)."""
    a, b = a.double(), b.double()
    mean = (a.mean(0) - b.mean(0)).pow(2).sum()
    ca, cb = _covariance(a), _covariance(b)
    values, vectors = torch.linalg.eigh(ca)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cb @ root_a).clamp_min(0).sqrt().sum()
    return max(0.0, float(mean + ca.trace() + cb.trace() - 2 * cross))


def _covariance(x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(0)
    return centred.T @ centred / max(1, len(x) - 1)


def concept_probability(net: NetReader, world: EmojiWorld, images: torch.Tensor, probes: list[Probe]) -> torch.Tensor:
    """[B]: the probability the CNN reader gives each image's prompted concept."""
    position = {code: k for k, code in enumerate(net.concepts)}
    column = torch.tensor([position[world.concepts[p.concept].code] for p in probes])
    prob, _ = net.read(images)
    return prob.gather(1, column[:, None])[:, 0]


def prompted_probability(net: NetReader, world: EmojiWorld, images: torch.Tensor, probes: list[Probe]) -> float:
    """Mean probability the CNN reader gives each image's prompted concept."""
    return float(concept_probability(net, world, images, probes).mean())


def image_quality(net: NetReader, world: EmojiWorld, images: torch.Tensor, probes: list[Probe],
                  base_images: torch.Tensor) -> dict[str, float | int]:
    """Both figures of one method's images against the base model's on the same probes."""
    return {"frechet_to_base": round(frechet_distance(net.embed(base_images), net.embed(images)), 4),
            "prompted_probability": round(prompted_probability(net, world, images, probes), 4),
            "images": len(images)}
