"""What a reader is, in either world: it reads a batch of images (IMAGE [B, 32, 32, 3] in [0, 1],
renders or samples) and says what each one shows.

Every forget rate rests on a reader, so each world has two of different kinds that share no
weights: the shapes world's evaluator CNN and colour rule, EmojiWorld's CNN and template match;
where two disagree, a person looks at the images. Code that takes any world's reader names this
type; the form of a reading (labels, indices, probabilities) stays the world's own.
"""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

import torch

Reading = TypeVar("Reading", covariant=True)


@runtime_checkable
class Reader(Protocol[Reading]):
    def read(self, images: torch.Tensor) -> Reading:
        """What each image shows, in batch order (a list, or tensors with one row per image)."""
        ...
