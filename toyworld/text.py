"""Deterministic toy text encoder: fixed seeded word embeddings plus sinusoidal positions.

It has no trainable weights, so a prompt's context is identical on every machine and the
UNet alone learns what the words mean (which is where FIA edits the model).
"""

from __future__ import annotations

import math
import re

import torch

from .world import VOCAB

MAX_TOKENS = 77
DIM = 64
SEED = 1234
SPECIAL = ("<bos>", "<eos>", "<pad>", "<unk>")


class ToyTextEncoder:
    """Lowercase word tokeniser + fixed embedding table -> context [B, 77, DIM]."""

    def __init__(self, dim: int = DIM, seed: int = SEED, vocab: tuple[str, ...] = VOCAB) -> None:
        self.dim = dim
        self.words = SPECIAL + tuple(vocab)
        self.index = {w: i for i, w in enumerate(self.words)}
        gen = torch.Generator().manual_seed(seed)
        table = torch.randn(len(self.words), dim, generator=gen)
        # Unit-RMS rows: every word carries the same energy, so none dominates attention.
        self.table = table / table.pow(2).mean(dim=1, keepdim=True).sqrt()
        pos = torch.arange(MAX_TOKENS, dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(1000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        pe = torch.zeros(MAX_TOKENS, dim)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        self.positions = 0.5 * pe

    def tokenize(self, text: str) -> list[int]:
        """Token ids: <bos>, words (unknown -> <unk>), <eos>, then <pad> up to 77."""
        words = re.findall(r"[a-z0-9]+", text.lower())[: MAX_TOKENS - 2]
        unk = self.index["<unk>"]
        ids = [self.index["<bos>"]] + [self.index.get(w, unk) for w in words]
        ids.append(self.index["<eos>"])
        return ids + [self.index["<pad>"]] * (MAX_TOKENS - len(ids))

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.tensor([self.tokenize(t) for t in texts], dtype=torch.long)
        return self.table[ids] + self.positions[None]


_DEFAULT: ToyTextEncoder | None = None


def encode(texts: str | list[str]) -> torch.Tensor:
    """Encode with the default (shared) encoder."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ToyTextEncoder()
    return _DEFAULT(texts)
