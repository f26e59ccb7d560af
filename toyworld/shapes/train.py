"""Seeded training of the ToyWorld UNet (epsilon prediction, SD's noise schedule); the v3
command is in toyworld/README.md.

Data are rendered on the fly from (seed, step), as are timesteps and noise, so the weights
after step k depend only on the seed and k (on a given torch build, device and thread count):
`--minutes` just decides where the run stops, and `--resume` continues bit for bit. EMA
weights are written (float16) every `--save-every` minutes, so a partial run is usable; a
resume state (weights, EMA, Adam moments, float32) goes to `--state`.

`--version 3` (default): world version 3 and the v3 UNet (48x8x8 latent, width 96).
`--version 2`: the shipped v2 model's world and UNet, to reproduce its history.
"""

from __future__ import annotations

import argparse
import json

import torch

from ..common import model as tw_model
from ..common.training import add_training_arguments, export_checkpoint, train
from . import text, world


def model_metadata(version: int, unet_config: dict, encoder: text.ToyTextEncoder) -> dict[str, str]:
    """What `common.loader.load_toyworld` rebuilds the model from: world, UNet, text encoder, latent."""
    patch = tw_model.latent_format_for(unet_config).patch
    side = unet_config["image_size"]
    return {
        "format": "toyworld-unet-v1",
        "world": str(version),
        "unet_config": json.dumps(unet_config),
        "text_encoder": json.dumps(encoder.config()),
        "latent": f"{patch}x{patch} space-to-depth of 2*image-1, {unet_config['in_channels']}x{side}x{side}",
        "prediction": "eps",
        "schedule": "SD1.5 discrete, linear_start 0.00085, linear_end 0.012 (scaled linear)",
    }



def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(ap, "out/toyworld_v3.safetensors", "out/toyworld_v3_state.safetensors")
    ap.add_argument("--pieces", type=int, default=0, choices=(0, 2),
                    help="text tokens per attribute word (see toyworld/shapes/text.py)")
    ap.add_argument("--version", type=int, default=3, choices=(2, 3),
                    help="world semantics and UNet (see toyworld/shapes/world.py and toyworld/common/model.py)")
    a = ap.parse_args(argv)
    if a.export_checkpoint is not None:
        export_checkpoint(a.state, a.export_checkpoint)
        return
    unet_config = tw_model.UNET_CONFIG_V3 if a.version == 3 else tw_model.UNET_CONFIG
    encoder = text.ToyTextEncoder(pieces=a.pieces)

    def batch(seed: int, n: int) -> tuple[torch.Tensor, list[str]]:
        images, prompts, _ = world.batch(seed, n, world_version=a.version)
        return images, prompts

    train(a, unet_config, batch, encoder, model_metadata(a.version, unet_config, encoder))


if __name__ == "__main__":
    main()
