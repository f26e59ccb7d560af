"""Tiny seeded SD2.x, SDXL, SD3 and Flux models built with ComfyUI's own classes, their full-size
configs (for key enumeration on the meta device), and a text encoder that needs no weights."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from devkit.tiny import fill_seeded

CONTEXT = 64  # width of the tiny text embeddings
POOLED = 32  # width of the tiny pooled text embedding
TOKENS = 8  # text tokens per prompt

_UNET_COMMON = dict(
    use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True, legacy=False,
    use_linear_in_transformer=True, context_dim=CONTEXT, num_res_blocks=[1, 1], channel_mult=[1, 2],
    model_channels=64, use_temporal_attention=False, use_temporal_resblock=False,  # 64: SD2/SDXL heads are 64 wide
)


@dataclass(frozen=True)
class TinyArch:
    family: str
    config_class: str
    unet_config: dict
    pooled: int  # 0: the model takes no pooled text embedding


TINY = {
    "SD2.x": TinyArch("SD2.x", "SD20", _UNET_COMMON | dict(
        transformer_depth=[1, 1], transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1],
        adm_in_channels=None), 0),
    # 11 blocks in the middle: name order would put transformer_blocks.10 before .2
    "SDXL": TinyArch("SDXL", "SDXL", _UNET_COMMON | dict(
        transformer_depth=[1, 2], transformer_depth_middle=11, transformer_depth_output=[1, 1, 2, 2],
        num_classes="sequential", adm_in_channels=POOLED + 6 * 256), POOLED),  # pooled + 6 size embeddings
    # depth 3: hidden 192, 3 heads; the last block's context stream has no MLP
    "SD3": TinyArch("SD3", "SD3", dict(
        in_channels=16, out_channels=16, patch_size=2, depth=3, input_size=None, adm_in_channels=POOLED,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": CONTEXT, "out_features": 192}},
        num_patches=None, pos_embed_max_size=None, pos_embed_scaling_factor=None, x_block_self_attn_layers=[]), POOLED),
    # mlp_ratio 3 (Flux.1 has 4): single-block neuron columns must follow the config, not a constant
    "Flux": TinyArch("Flux", "Flux", dict(
        image_model="flux", in_channels=16, out_channels=16, patch_size=2, vec_in_dim=POOLED, context_in_dim=CONTEXT,
        hidden_size=64, mlp_ratio=3.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[8, 12, 12],
        theta=10000, qkv_bias=True, guidance_embed=True), POOLED),
}

_SD_FULL = dict(
    use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True, legacy=False,
    model_channels=320, use_temporal_attention=False, use_temporal_resblock=False, use_linear_in_transformer=True,
)


def _mmdit_full(depth: int, **extra) -> dict:
    hidden = 64 * depth
    return dict(
        in_channels=16, out_channels=16, patch_size=2, depth=depth, input_size=None, adm_in_channels=2048,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": hidden}},
        num_patches=36864, pos_embed_max_size=192, pos_embed_scaling_factor=None, x_block_self_attn_layers=[],
    ) | extra


_FLUX1 = dict(
    image_model="flux", in_channels=16, out_channels=16, patch_size=2, vec_in_dim=768, context_in_dim=4096,
    hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
    theta=10000, qkv_bias=True,
)

# The configs ComfyUI 0.3.75's model detection produces for the released checkpoints.
FULL = {
    "SD2.x": ("SD20", _SD_FULL | dict(
        num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
        transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        context_dim=1024, adm_in_channels=None)),
    "SDXL": ("SDXL", _SD_FULL | dict(
        num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10],
        transformer_depth_middle=10, transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
        context_dim=2048, num_classes="sequential", adm_in_channels=2816)),
    "SD3 medium": ("SD3", _mmdit_full(24)),
    "SD3.5 medium": ("SD3", _mmdit_full(24, qk_norm="rms", x_block_self_attn_layers=list(range(13)))),
    "SD3.5 large": ("SD3", _mmdit_full(38, qk_norm="rms")),
    "Flux dev": ("Flux", _FLUX1 | dict(guidance_embed=True)),
    "Flux schnell": ("FluxSchnell", _FLUX1 | dict(guidance_embed=False)),
}


def flux_detected_fields(unet_config: dict) -> dict:
    """`unet_config` plus what model detection adds for Flux.1 in the running ComfyUI: 0.33 requires
    `txt_ids_dims` (Flux.1: none), which 0.3.75's FluxParams would refuse as unknown."""
    import dataclasses

    from comfy.ldm.flux.model import FluxParams

    if unet_config.get("image_model") != "flux":
        return unet_config
    fields = {field.name for field in dataclasses.fields(FluxParams)}
    return unet_config | ({"txt_ids_dims": []} if "txt_ids_dims" in fields else {})


def model_config(class_name: str, unet_config: dict):
    import comfy.supported_models

    cfg = getattr(comfy.supported_models, class_name)(flux_detected_fields(dict(unet_config)))
    cfg.set_inference_dtype(torch.float32, None)
    return cfg


def tiny_patcher(family: str, seed: int = 0):
    """A ModelPatcher around a tiny seeded model of `family` (real ComfyUI config and model classes)."""
    import comfy.model_patcher

    arch = TINY[family]
    model = model_config(arch.config_class, arch.unet_config).get_model({}, device=torch.device("cpu"))
    fill_seeded(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def full_size_model(name: str):
    """(config, model) of a full-size architecture on the meta device: keys and shapes, no memory."""
    class_name, unet_config = FULL[name]
    cfg = model_config(class_name, unet_config)
    return cfg, cfg.get_model({}, device=torch.device("meta"))


def hash_encoder(family: str):
    """`encode(text)` -> ComfyUI conditioning: a random context (and pooled output) seeded by the text."""
    pooled = TINY[family].pooled

    def encode(text: str) -> list:
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1
        generator = torch.Generator().manual_seed(seed)
        context = torch.randn(1, TOKENS, CONTEXT, generator=generator)
        extras = {"pooled_output": torch.randn(1, pooled, generator=generator)} if pooled else {}
        return [[context, extras]]

    return encode


class HashClip:
    """Stands in for the CLIP input of the saliency node: the two calls it makes, without a text model."""

    def __init__(self, family: str):
        self.encode = hash_encoder(family)

    def tokenize(self, text: str) -> str:
        return text

    def encode_from_tokens_scheduled(self, tokens: str) -> list:
        return self.encode(tokens)
