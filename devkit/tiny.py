"""Tiny, seeded models built with ComfyUI's own classes (no weights files needed)."""

from __future__ import annotations

import functools

import torch

TINY_CONTEXT = 64

TINY_CLIP_CONFIG = {
    "hidden_act": "quick_gelu", "hidden_size": TINY_CONTEXT, "intermediate_size": 128,
    "num_attention_heads": 2, "num_hidden_layers": 2, "vocab_size": 49408, "max_position_embeddings": 77,
    "layer_norm_eps": 1e-5, "projection_dim": TINY_CONTEXT, "bos_token_id": 0, "eos_token_id": 49407,
    "pad_token_id": 1,
}

TINY_SD15_UNET = dict(
    use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=32,
    num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[1, 1], transformer_depth_middle=1,
    transformer_depth_output=[1, 1, 1, 1], use_linear_in_transformer=False, context_dim=TINY_CONTEXT,
    num_heads=4, num_head_channels=-1, use_spatial_transformer=True, legacy=False, adm_in_channels=None,
    use_temporal_attention=False, use_temporal_resblock=False,
)

SD15_FULL_UNET = dict(
    use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=320,
    num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    use_linear_in_transformer=False, context_dim=768, num_heads=8, num_head_channels=-1,
    use_spatial_transformer=True, legacy=False, adm_in_channels=None,
    use_temporal_attention=False, use_temporal_resblock=False,
)
"""SD1.5's real UNet layout (860M parameters); build it on the meta device to enumerate layers."""


def fill_seeded(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """ComfyUI ops skip initialisation: give every parameter seeded values (norms near 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            values = torch.randn(param.shape, generator=generator) * scale
            if "norm" in name and name.endswith("weight"):
                values += 1.0
            param.copy_(values.to(param.dtype))


def tiny_sd15_patcher(seed: int = 0, unet_config: dict | None = None, dtype: torch.dtype = torch.float32):
    """A ModelPatcher around a tiny SD1.5-layout UNet (SD15 config class, real ComfyUI model);
    weights stored in `dtype` (fp8: computed in fp32, as ComfyUI runs fp8 checkpoints)."""
    import comfy.model_patcher
    import comfy.supported_models

    cfg = comfy.supported_models.SD15(dict(unet_config or TINY_SD15_UNET))
    cfg.set_inference_dtype(dtype, None if dtype == torch.float32 else torch.float32)
    model = cfg.get_model({}, device=torch.device("cpu"))
    fill_seeded(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def tiny_clip(seed: int = 1):
    """A real comfy.sd.CLIP with the real CLIP-L tokenizer and a 2-layer, 64-wide text model."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    class TinyClipModel(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 - ComfyUI's signature
            super().__init__(device=device, dtype=dtype, model_options=model_options,
                             textmodel_json_config=dict(TINY_CLIP_CONFIG), return_projected_pooled=False)

    target = comfy.supported_models_base.ClipTarget(
        comfy.sd1_clip.SD1Tokenizer, functools.partial(comfy.sd1_clip.SD1ClipModel, clip_model=TinyClipModel)
    )
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32})
    fill_seeded(clip.cond_stage_model, seed, scale=0.2)
    return clip


def hashed_encoder(width: int, tokens: int = 77):
    """A stand-in text encoder for full-width models: a fixed random context per prompt text."""
    import zlib

    def encode(text: str) -> list:
        generator = torch.Generator().manual_seed(zlib.crc32(text.encode()))
        return [[torch.randn(1, tokens, width, generator=generator), {}]]

    return encode


def clip_encoder(clip):
    """CLIPTextEncode's computation, as the engine's `encode(text)`."""

    def encode(text: str) -> list:
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))

    return encode


def seeded_mask(engine, patcher, share: float, seed: int = 0):
    """An UnlearningMask pruning a seeded `share` of every FF layer's weights (int32 indices, as files
    store them): for checks of where the mask ends up, independent of saliency."""
    spec, layers = engine.layers_of_patcher(patcher)
    generator = torch.Generator().manual_seed(seed)
    pruned = {}
    for layer in layers:
        total = layer.out_features * layer.in_features
        pruned[layer.key] = torch.randperm(total, generator=generator)[: int(total * share)].sort().values.int()
    return engine.UnlearningMask(spec.family, layers, pruned, {k: v[:0] for k, v in pruned.items()}, ["seeded"], engine.masks.StatedSettings({}), "")
