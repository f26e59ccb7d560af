"""ToyWorld's ComfyUI model: a narrow SD1.x-layout UNet on a space-to-depth latent.

The latent is a fixed space-to-depth of the 32x32 image (no VAE), so attention runs over few
tokens, which is what makes CPU training feasible. Everything else (block layout, 16
`ff.net.2` feed-forward layers, epsilon prediction, SD's beta schedule) is stock SD1.5, so
ComfyUI's samplers, ModelPatcher and the FIA nodes run on it unchanged. One departure: sampling
starts from noise with each latent channel's spatial mean removed (`CentredNoiseSampling`).

Two architectures. v2 (`UNET_CONFIG`): 2x2 patches, 12x16x16 latent, width 32; GroupNorm's 32
groups then hold one channel each, which hides every channel's spatial mean from the network.
v3 (`UNET_CONFIG_V3`): 4x4 patches, 48x8x8 latent, width 96 at every level (three channels per
group, so the means are visible; twice the 48 numbers of a patch at the finest level, where
width 64 learnt the pixel detail slowly); 9.6 M parameters, a training step a little cheaper than v2's
(toyworld/README.md).
"""

from __future__ import annotations

from typing import Any

import comfy.latent_formats
import comfy.model_base
import comfy.model_sampling
import comfy.supported_models
import torch

from ..shapes.text import DIM

LATENT_CHANNELS = 12  # v2
LATENT_SIZE = 16

UNET_CONFIG: dict[str, Any] = {
    "use_checkpoint": False,
    "image_size": LATENT_SIZE,
    "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    "model_channels": 32,
    "num_res_blocks": [2, 2, 2, 2],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_linear_in_transformer": False,
    "context_dim": DIM,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


UNET_CONFIG_V3: dict[str, Any] = {
    **UNET_CONFIG,
    "image_size": 8,
    "in_channels": 48,
    "out_channels": 48,
    "model_channels": 96,
    "channel_mult": [1, 1, 1, 1],
}


class ToyWorldLatent(comfy.latent_formats.LatentFormat):
    """2x2 space-to-depth of a [-1, 1] image: channel 4*c + 2*dy + dx holds colour c."""

    scale_factor = 1.0
    patch = 2
    latent_channels = 3 * patch * patch
    latent_dimensions = 2
    spacial_downscale_ratio = patch

    def __init__(self) -> None:
        per_colour = self.patch * self.patch
        self.latent_rgb_factors = [
            [1 / per_colour if k // per_colour == c else 0.0 for c in range(3)]
            for k in range(self.latent_channels)
        ]
        self.latent_rgb_factors_bias = [0.0, 0.0, 0.0]


class ToyWorldLatent4(ToyWorldLatent):
    """4x4 space-to-depth (v3): channel 16*c + 4*dy + dx holds colour c."""

    patch = 4
    latent_channels = 3 * patch * patch
    spacial_downscale_ratio = patch


def latent_format_for(unet_config: dict[str, Any]) -> type[ToyWorldLatent]:
    return {12: ToyWorldLatent, 48: ToyWorldLatent4}[unet_config["in_channels"]]


class CentredNoiseSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """SD's discrete eps schedule, sampling from noise whose per-channel spatial mean is removed.

    GroupNorm with one channel per group (v2: width 32, 32 groups) makes the UNet blind to a
    latent channel's spatial mean, so its eps prediction never contains the starting noise's mean
    and the sampler reads that mean as signal: at t = 999 it reaches the image amplified about 14x
    (measured), and because every channel is one sub-pixel of one colour, as saturated 2x2 colour
    mosaics. A model that cannot see the mean should not be handed a random one: the channel means
    are left for the prompt to set. This hooks the one place ComfyUI scales the starting noise.
    v3 sees the means; it keeps the centring, so a global colour still comes from the prompt
    rather than from a random draw (zero is the likeliest draw of a mean, so nothing it was
    trained on is missing).
    """

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        centred = noise - noise.mean(dim=(-2, -1), keepdim=True)
        return super().noise_scaling(sigma, centred, latent_image, max_denoise)


class ToyWorldConfig(comfy.supported_models.SD15):
    """SD1.5 model config with narrow widths and the toy latent format its channels imply
    (v2's `UNET_CONFIG` when none is given)."""

    unet_config = dict(UNET_CONFIG)
    unet_extra_config = {"num_heads": -1, "num_head_channels": 16}
    latent_format = ToyWorldLatent
    memory_usage_factor = 0.1

    def __init__(self, unet_config: dict[str, Any] | None = None) -> None:
        config = dict(UNET_CONFIG if unet_config is None else unet_config)
        self.latent_format = latent_format_for(config)  # BASE.__init__ instantiates it
        super().__init__(config)

    def get_model(self, state_dict, prefix="", device=None):
        model = super().get_model(state_dict, prefix, device)
        model.model_sampling = CentredNoiseSampling(self)
        return model

    def inpaint_model(self) -> bool:
        # BASE treats in_channels > 4 as an inpaint model and would concat a mask input.
        return False

    def clip_target(self, state_dict: dict | None = None) -> None:
        return None


def image_to_latent(images: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """IMAGE [B, 32, 32, 3] in [0, 1] -> latent [B, 3p^2, 32/p, 32/p] in [-1, 1]."""
    x = images.movedim(-1, 1) * 2.0 - 1.0
    return torch.nn.functional.pixel_unshuffle(x, patch)


def latent_to_image(latent: torch.Tensor) -> torch.Tensor:
    """Latent [B, 3p^2, 32/p, 32/p] (p from the channel count) -> IMAGE [B, 32, 32, 3] in [0, 1]."""
    patch = {12: 2, 48: 4}[latent.shape[1]]
    x = torch.nn.functional.pixel_shuffle(latent.float(), patch)
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).contiguous()


def build_model(
    device: torch.device | None = None, dtype: torch.dtype = torch.float32,
    unet_config: dict[str, Any] | None = None,
) -> comfy.model_base.BaseModel:
    """ComfyUI BaseModel for ToyWorld (parameters uninitialised: load or init_weights)."""
    cfg = ToyWorldConfig(unet_config)
    cfg.set_inference_dtype(dtype, None)
    return cfg.get_model({}, device=device or torch.device("cpu"))


def init_weights(unet: torch.nn.Module, seed: int) -> None:
    """Seeded init (ComfyUI ops skip init); output projections start at zero as in SD."""
    torch.manual_seed(seed)
    for name, m in unet.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm)):
            _reset(m)
        if name == "out.2" or name.endswith("out_layers.3") or name.endswith(".proj_out"):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.zeros_(m.bias)


def _reset(m: torch.nn.Module) -> None:
    for base in (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm):
        if isinstance(m, base):
            base.reset_parameters(m)  # type: ignore[arg-type]
            return


def parameter_count(unet: torch.nn.Module) -> int:
    return sum(p.numel() for p in unet.parameters())
