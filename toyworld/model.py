"""ToyWorld's ComfyUI model: a narrow SD1.x-layout UNet on a 12-channel 16x16 latent.

The latent is a fixed 2x2 space-to-depth of the 32x32 image (no VAE), so attention runs
over 16x16 tokens, which is what makes CPU training feasible. Everything else (block layout,
`ff.net.2` feed-forward layers, epsilon prediction, SD's beta schedule) is stock SD1.5, so
ComfyUI's samplers, ModelPatcher and the FIA nodes run on it unchanged. One departure: sampling
starts from noise with each latent channel's spatial mean removed (`CentredNoiseSampling`).
"""

from __future__ import annotations

from typing import Any

import torch

from .comfy_env import setup_comfy

setup_comfy()

import comfy.latent_formats  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.model_sampling  # noqa: E402
import comfy.supported_models  # noqa: E402

from .text import DIM  # noqa: E402

LATENT_CHANNELS = 12
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


class ToyWorldLatent(comfy.latent_formats.LatentFormat):
    """2x2 space-to-depth of a [-1, 1] image: channel 4*c + 2*dy + dx holds colour c."""

    scale_factor = 1.0
    latent_channels = LATENT_CHANNELS
    latent_dimensions = 2
    spacial_downscale_ratio = 2

    def __init__(self) -> None:
        self.latent_rgb_factors = [
            [0.25 if k // 4 == c else 0.0 for c in range(3)] for k in range(LATENT_CHANNELS)
        ]
        self.latent_rgb_factors_bias = [0.0, 0.0, 0.0]


class CentredNoiseSampling(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
    """SD's discrete eps schedule, sampling from noise whose per-channel spatial mean is removed.

    GroupNorm with one channel per group (width 32, 32 groups) makes the UNet blind to a latent
    channel's spatial mean, so its eps prediction never contains the starting noise's mean and
    the sampler reads that mean as signal: at t = 999 it reaches the image amplified about 14x
    (measured), and because every channel is one sub-pixel of one colour, as saturated 2x2 colour
    mosaics. A model that cannot see the mean should not be handed a random one: the channel means
    are left for the prompt to set. This hooks the one place ComfyUI scales the starting noise.
    """

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        centred = noise - noise.mean(dim=(-2, -1), keepdim=True)
        return super().noise_scaling(sigma, centred, latent_image, max_denoise)


class ToyWorldConfig(comfy.supported_models.SD15):
    """SD1.5 model config with narrow widths, 12 latent channels and the toy latent format."""

    unet_config = dict(UNET_CONFIG)
    unet_extra_config = {"num_heads": -1, "num_head_channels": 16}
    latent_format = ToyWorldLatent
    memory_usage_factor = 0.1

    def __init__(self, unet_config: dict[str, Any] | None = None) -> None:
        super().__init__(dict(UNET_CONFIG if unet_config is None else unet_config))

    def get_model(self, state_dict, prefix="", device=None):
        model = super().get_model(state_dict, prefix, device)
        model.model_sampling = CentredNoiseSampling(self)
        return model

    def inpaint_model(self) -> bool:
        # BASE treats in_channels > 4 as an inpaint model and would concat a mask input.
        return False

    def clip_target(self, state_dict: dict | None = None) -> None:
        return None


def image_to_latent(images: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, 32, 32, 3] in [0, 1] -> latent [B, 12, 16, 16] in [-1, 1]."""
    x = images.movedim(-1, 1) * 2.0 - 1.0
    return torch.nn.functional.pixel_unshuffle(x, 2)


def latent_to_image(latent: torch.Tensor) -> torch.Tensor:
    """Latent [B, 12, 16, 16] -> IMAGE [B, 32, 32, 3] in [0, 1]."""
    x = torch.nn.functional.pixel_shuffle(latent.float(), 2)
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).contiguous()


def build_model(
    device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> comfy.model_base.BaseModel:
    """ComfyUI BaseModel for ToyWorld (parameters uninitialised: load or init_weights)."""
    cfg = ToyWorldConfig()
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
