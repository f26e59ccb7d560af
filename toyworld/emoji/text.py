"""EmojiWorld's text encoder: a small frozen causal transformer over word tokens.

As in CLIP, attention is causal, so a word reaches the tokens after it ("carpentry" colours
"saw", a style word follows the concept it restyles) and the context the UNet sees is not a bag
of independent word vectors. Its weights are drawn from a seed and never trained (Stable
Diffusion's CLIP is frozen too): whatever the model knows about a concept is learnt by the UNet,
where FIA edits it. The weights ship inside the model file, so loading never depends on how a
torch build draws random numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .world import words_of

SPECIAL = ("<bos>", "<eos>", "<pad>", "<unk>")


@dataclass(frozen=True)
class TextConfig:
    dim: int = 128  # the UNet's context_dim
    layers: int = 2  # enough for words to mix; the UNet does the rest
    heads: int = 4
    max_tokens: int = 77  # CLIP's length, so ComfyUI's conditioning code sees familiar shapes
    seed: int = 1234


class EmojiTextEncoder(nn.Module):
    """Word tokens -> context [B, max_tokens, dim]; frozen, deterministic."""

    def __init__(self, vocabulary: tuple[str, ...], config: TextConfig = TextConfig()) -> None:
        super().__init__()
        self.config = config
        self.tokens = SPECIAL + tuple(vocabulary)
        self.ids = {w: i for i, w in enumerate(self.tokens)}
        gen = torch.Generator().manual_seed(config.seed)
        d = config.dim
        self.embedding = nn.Parameter(torch.randn(len(self.tokens), d, generator=gen), requires_grad=False)
        self.position = nn.Parameter(_sinusoid(config.max_tokens, d) * 0.5, requires_grad=False)
        self.blocks = nn.ModuleList(_Block(d, config.heads, gen) for _ in range(config.layers))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False)
        mask = torch.full((config.max_tokens, config.max_tokens), float("-inf")).triu(1)
        self.register_buffer("causal", mask, persistent=False)
        self.requires_grad_(False)

    def tokenize(self, text: str) -> list[int]:
        unk, pad = self.ids["<unk>"], self.ids["<pad>"]
        ids = [self.ids["<bos>"]] + [self.ids.get(w, unk) for w in words_of(text)]
        ids = ids[: self.config.max_tokens - 1] + [self.ids["<eos>"]]
        return ids + [pad] * (self.config.max_tokens - len(ids))

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in words_of(text) if w not in self.ids]

    @torch.no_grad()
    def forward(self, texts: str | list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.tensor([self.tokenize(t) for t in texts], dtype=torch.long)
        x = self.embedding[ids] + self.position
        for block in self.blocks:
            x = block(x, self.causal)
        return self.final_norm(x)

    def metadata(self) -> dict[str, object]:
        return {**asdict(self.config), "vocabulary": list(self.tokens[len(SPECIAL):])}

    @classmethod
    def from_metadata(cls, meta: dict) -> EmojiTextEncoder:
        fields = {k: meta[k] for k in TextConfig.__dataclass_fields__ if k in meta}
        return cls(tuple(meta["vocabulary"]), TextConfig(**fields))


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, gen: torch.Generator) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.up = nn.Linear(d, 4 * d, bias=False)
        self.down = nn.Linear(4 * d, d, bias=False)
        for lin in (self.qkv, self.out, self.up, self.down):
            lin.weight.data = torch.randn(lin.weight.shape, generator=gen) / math.sqrt(lin.in_features)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(att.transpose(1, 2).reshape(b, n, d))
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm2(x))))


def _sinusoid(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(1000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe
