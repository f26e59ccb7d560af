"""Deterministic toy text encoder: fixed seeded token embeddings plus sinusoidal positions.

It has no trainable weights, so a prompt's context is identical on every machine and the
UNet alone learns what the words mean (which is where FIA edits the model).

Two tokenisations exist. `pieces=0` (the first ToyWorld run): one token per word, so a
concept is one near-orthogonal vector that cross-attention can copy straight into the image;
knock-outs showed that model never needed its feed-forward layers for concepts. `pieces=2`:
each attribute word is two sub-word tokens from a small shared pool (as BPE splits rare
words), every piece is reused by several words of different kinds, and a synonym shares one
piece with its word. No single token names a concept, so the UNet has to decode the
conjunction non-linearly after cross-attention -- the job SD's feed-forward layers do.
"""

from __future__ import annotations

import math
import re
from itertools import combinations

import torch

from .world import FILLER_WORDS, SYNONYMS, VOCAB, WORD_KINDS

MAX_TOKENS = 77
DIM = 64
SEED = 1234
SPECIAL = ("<bos>", "<eos>", "<pad>", "<unk>")
PIECE_POOL = 9


def _unit_rms(table: torch.Tensor) -> torch.Tensor:
    # Every token carries the same energy, so none dominates attention.
    return table / table.pow(2).mean(dim=1, keepdim=True).sqrt()


def piece_assignment(seed: int = SEED, pool: int = PIECE_POOL) -> dict[str, tuple[int, int]]:
    """Seeded map word -> two piece ids: all pairs distinct, each synonym shares exactly one
    piece with its canonical word, and no piece is used by only one kind of word."""
    attribute_words = [w for w in VOCAB if w not in FILLER_WORDS]
    gen = torch.Generator().manual_seed(seed + 1)
    pairs = list(combinations(range(pool), 2))
    for _ in range(10_000):
        order = torch.randperm(len(pairs), generator=gen).tolist()
        free = [pairs[i] for i in order]
        out: dict[str, tuple[int, int]] = {}
        ok = True
        for word in attribute_words:
            if word in out:
                continue
            pair = free.pop()
            out[word] = pair
            syn = SYNONYMS.get(word)
            if syn is not None:
                match = [p for p in free if len(set(p) & set(pair)) == 1]
                if not match:
                    ok = False
                    break
                free.remove(match[0])
                out[syn] = match[0]
        if ok and _pieces_span_kinds(out):
            return out
    raise RuntimeError("no valid piece assignment")  # pragma: no cover


def _pieces_span_kinds(assign: dict[str, tuple[int, int]]) -> bool:
    kinds: dict[int, set[str]] = {}
    for word, pair in assign.items():
        for p in pair:
            kinds.setdefault(p, set()).add(WORD_KINDS[word])
    return all(len(k) >= 2 for k in kinds.values())


def _positions(dim: int) -> torch.Tensor:
    pos = torch.arange(MAX_TOKENS, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(1000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(MAX_TOKENS, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return 0.5 * pe


class ToyTextEncoder:
    """Lowercase word tokeniser + fixed embedding table -> context [B, 77, DIM]."""

    def __init__(self, dim: int = DIM, seed: int = SEED, pieces: int = 0) -> None:
        if pieces not in (0, 2):
            raise ValueError(f"pieces must be 0 (word tokens) or 2 (two sub-word pieces), got {pieces}")
        self.dim = dim
        self.pieces = pieces
        words = SPECIAL + tuple(VOCAB)
        word_table = _unit_rms(torch.randn(len(words), dim, generator=torch.Generator().manual_seed(seed)))
        if pieces == 0:
            self.tokens: tuple[str, ...] = words
            self.table = word_table
            self.spelling = {w: (i,) for i, w in enumerate(words)}
        else:
            kept = SPECIAL + FILLER_WORDS
            piece_names = tuple(f"<piece{i}>" for i in range(PIECE_POOL))
            self.tokens = kept + piece_names
            piece_rows = torch.randn(PIECE_POOL, dim, generator=torch.Generator().manual_seed(seed + 2))
            self.table = torch.cat([word_table[: len(kept)], _unit_rms(piece_rows)])
            self.spelling = {w: (i,) for i, w in enumerate(kept)}
            for word, pair in piece_assignment(seed).items():
                self.spelling[word] = tuple(len(kept) + p for p in pair)
        self.positions = _positions(dim)

    def tokenize(self, text: str) -> list[int]:
        """Token ids: <bos>, each word's tokens (unknown -> <unk>), <eos>, <pad> up to 77."""
        unk = self.spelling["<unk>"]
        ids = [self.spelling["<bos>"][0]]
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            ids.extend(self.spelling.get(word, unk))
        ids = ids[: MAX_TOKENS - 1] + [self.spelling["<eos>"][0]]
        return ids + [self.spelling["<pad>"][0]] * (MAX_TOKENS - len(ids))

    def config(self) -> dict[str, int]:
        """What a weights file records so the loader rebuilds the same encoder."""
        return {"dim": self.dim, "seed": SEED, "max_tokens": MAX_TOKENS, "pieces": self.pieces}

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.tensor([self.tokenize(t) for t in texts], dtype=torch.long)
        return self.table[ids] + self.positions[None]
