"""Seeded training of the EmojiWorld UNet with the shared loop of toyworld.common.training; the commands
and the measured step times are in toyworld/emoji/README.md.

The UNet is ComfyUI's SD1.5 layout (16 `ff.net.2` GEGLU feed-forward layers, cross-attention on
a 128-wide context) on ToyWorld v3's 48x8x8 space-to-depth latent of the 32x32 image; the
context comes from the frozen causal transformer of `text.py`, whose weights go into the file.
`--concepts N` trains on N concepts drawn from every category (`world.concept_subset`); the
file's metadata lists them.
"""

from __future__ import annotations

import argparse
import json

import torch

from ..common import model as tw_model
from ..common import training as shared
from .data import load_renders
from .text import EmojiTextEncoder
from .world import EmojiWorld, concept_subset

UNET_CONFIG: dict = {**tw_model.UNET_CONFIG_V3, "context_dim": 128}
FORMAT = "emojiworld-unet-v1"


def metadata(world: EmojiWorld, encoder: EmojiTextEncoder, unet_config: dict) -> dict[str, str]:
    return {
        "format": FORMAT,
        "world": "emoji",
        "unet_config": json.dumps(unet_config),
        "text_encoder": json.dumps(encoder.metadata()),
        "concepts": json.dumps([world.concepts[i].code for i in world.trained]),
        "latent": "4x4 space-to-depth of 2*image-1, 48x8x8",
        "prediction": "eps",
        "schedule": "SD1.5 discrete, linear_start 0.00085, linear_end 0.012 (scaled linear)",
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared.add_training_arguments(ap, "out/emojiworld.safetensors", "out/emojiworld_state.safetensors")
    ap.add_argument("--concepts", type=int, default=0, help="train on this many concepts (0: all 1,623)")
    ap.add_argument("--subset-seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.export_checkpoint is not None:
        shared.export_checkpoint(a.state, a.export_checkpoint)
        return
    renders = load_renders()
    full = EmojiWorld(renders)
    subset = concept_subset(full, a.concepts, a.subset_seed) if a.concepts else None
    world = EmojiWorld(renders, subset)
    encoder = EmojiTextEncoder(full.vocabulary)
    extra = {"text_encoder." + k: v for k, v in encoder.state_dict().items()}

    def batch(seed: int, n: int) -> tuple[torch.Tensor, list[str]]:
        images, prompts, _ = world.batch(seed, n)
        return images, prompts

    shared.train(a, UNET_CONFIG, batch, encoder, metadata(world, encoder, UNET_CONFIG), extra_tensors=extra)


if __name__ == "__main__":
    main()
