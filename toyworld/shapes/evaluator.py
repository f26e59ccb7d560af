"""Read colour, shape and background off a 32x32 image with a small CNN.

Trained only on rendered images with heavy noise/blur/colour-cast augmentation, so that it
also reads generated samples, whose typical flaws are per-pixel colour noise, soft edges and
tinted backgrounds. It reads world version 3's absent values too (no shape, the neutral colour,
the plain background); scenes naming every attribute render alike in versions 2 and 3, so it
reads the v2 model's images as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .world import VALUES

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "evaluator.safetensors"
HEADS = VALUES


class Evaluator(nn.Module):
    """Conv stack -> global pool -> one linear head per attribute."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(
            block(3, w), block(w, w), nn.MaxPool2d(2),  # 16x16
            block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8x8
            block(2 * w, 4 * w), nn.MaxPool2d(2),  # 4x4
            block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(4 * w, len(v)) for k, v in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: IMAGE layout [B, 32, 32, 3] in [0, 1] -> logits per attribute."""
        x = images.movedim(-1, 1) * 2.0 - 1.0
        f = self.features(x)
        return {k: head(f) for k, head in self.heads.items()}

    def read(self, images: torch.Tensor) -> list[tuple[str, str, str]]:
        """(colour, shape, background) per image: `classify` with this network, so the evaluator is a
        `common.readers.Reader` like the other readers."""
        return classify(images, self)


def label_indices(labels: list[tuple[str, str, str]]) -> dict[str, torch.Tensor]:
    return {
        k: torch.tensor([names.index(lab[i]) for lab in labels])
        for i, (k, names) in enumerate(HEADS.items())
    }


_CACHE: dict[str, Evaluator] = {}


def load_evaluator(path: str | Path = DEFAULT_WEIGHTS) -> Evaluator:
    from safetensors import safe_open
    from safetensors.torch import load_file

    key = str(path)
    if key not in _CACHE:
        with safe_open(key, "pt") as f:
            heads = json.loads((f.metadata() or {}).get("heads", "null"))
        if heads != {k: list(v) for k, v in HEADS.items()}:
            raise ValueError(f"{key} reads other values than world.VALUES: {heads}; retrain it")
        net = Evaluator()
        missing, unexpected = net.load_state_dict(
            {k: v.float() for k, v in load_file(key).items()}, strict=False
        )
        if unexpected or any(not m.endswith("num_batches_tracked") for m in missing):
            raise ValueError(f"evaluator weights mismatch: {missing} {unexpected}")
        _CACHE[key] = net.eval()
    return _CACHE[key]


@torch.no_grad()
def classify(images: torch.Tensor, net: Evaluator | None = None) -> list[tuple[str, str, str]]:
    """IMAGE [B, 32, 32, 3] in [0, 1] -> [(colour, shape, background), ...]."""
    net = net or load_evaluator()
    out = []
    for i in range(0, images.shape[0], 256):
        logits = net(images[i : i + 256].float().clamp(0, 1))
        idx = {k: v.argmax(dim=1).tolist() for k, v in logits.items()}
        out += [
            (HEADS["colour"][c], HEADS["shape"][s], HEADS["background"][b])
            for c, s, b in zip(idx["colour"], idx["shape"], idx["background"])
        ]
    return out


def accuracy(predicted: list[tuple[str, str, str]], truth: list[tuple[str, str, str]]) -> dict[str, float]:
    """Per-attribute and all-three match rates."""
    n = max(len(truth), 1)
    res = {k: sum(p[i] == t[i] for p, t in zip(predicted, truth)) / n for i, k in enumerate(HEADS)}
    res["all"] = sum(p == t for p, t in zip(predicted, truth)) / n
    return res


def accuracy_per_value(predicted: list[tuple[str, str, str]],
                       truth: list[tuple[str, str, str]]) -> dict[str, dict[str, float]]:
    """Match rate of each value an image should show (e.g. how often 'ring' prompts give rings,
    how often prompts without a colour give the neutral white), per attribute, in `HEADS` order;
    values no image should show are left out."""
    out: dict[str, dict[str, float]] = {}
    for i, (kind, values) in enumerate(HEADS.items()):
        out[kind] = {}
        for value in values:
            hits = [p[i] == value for p, t in zip(predicted, truth) if t[i] == value]
            if hits:
                out[kind][value] = sum(hits) / len(hits)
    return out
