"""Can a ToyWorld model predict the latent channel means (global colour, background level)?

    python -m toyworld.experiments.channel_means toyworld/weights/toyworld.safetensors out/toyworld_v3.safetensors

For 64 renders of its world, noised at high timesteps, compares the RMS error of the channel
means of the model's x0 estimate with that of a model blind to them (one that predicts
noise with zero mean: x0 estimate = x_t / sqrt(alpha_bar)). A ratio near 1 means the UNet
cannot see the means (v2: one channel per GroupNorm group).
"""

from __future__ import annotations

import argparse

import torch

from ..common.loader import ToyWorld, load_toyworld
from ..shapes import world

TIMESTEPS = (999, 900, 700, 500)


@torch.no_grad()
def mean_error_ratios(tw: ToyWorld, n: int = 64, seed: int = 55_555) -> dict[int, float]:
    """Timestep -> (model's channel-mean RMS error) / (blind predictor's)."""
    unet = tw.patcher.model.diffusion_model
    alpha_bar = 1.0 / (1.0 + tw.patcher.model.model_sampling.sigmas.float() ** 2)
    images, _, labels = world.batch(seed, n, world_version=tw.world_version)
    x0 = tw.encode_image(images)
    context = tw.encoder([world.prompt_for(*lab.as_tuple(), world_version=tw.world_version) for lab in labels])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for t in TIMESTEPS:
        a = alpha_bar[t]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        pred = unet(xt, torch.full((n,), float(t)), context=context)
        x0_model = (xt - (1 - a).sqrt() * pred) / a.sqrt()
        x0_blind = xt / a.sqrt()

        def rms(est: torch.Tensor) -> float:
            return float((est.mean(dim=(2, 3)) - x0.mean(dim=(2, 3))).pow(2).mean().sqrt())

        out[t] = round(rms(x0_model) / rms(x0_blind), 3)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    for path in a.weights:
        tw = load_toyworld(path)
        print(path, "step", tw.metadata.get("step"), "error ratio by timestep", mean_error_ratios(tw), flush=True)


if __name__ == "__main__":
    main()
