"""A small, seeded, real-format SD1.5 checkpoint and LoRA for the end-to-end tests.

The server must load it with the stock CheckpointLoaderSimple, so the file has the layout of a
real SD1.5 single-file checkpoint: `model.diffusion_model.*` (a one-level UNet with
model_channels 320 and context_dim 768, which ComfyUI detects as SD15), the full CLIP-L text
encoder (`cond_stage_model.transformer.text_model.*`, 12 layers, 768 wide) and the full SD VAE
(`first_stage_model.*`). Keys are produced by ComfyUI's own `state_dict_for_saving` (what
CheckpointSave writes), so they follow the host's naming rather than our guess of it.
Weights are random but fan-in scaled, so activations stay O(1) and images are not saturated.
Stored as fp16 (about 430 MB) and built once per cache folder.

Run directly: `PYTHONPATH=tests .venv/bin/python -m e2e.make_checkpoint [cache_dir]`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

VERSION = 1
CHECKPOINT_NAME = f"fia-e2e-sd15-layout-v{VERSION}.safetensors"
LORA_NAME = f"fia-e2e-lora-v{VERSION}.safetensors"
SEED = 1244

UNET_CONFIG = dict(
    use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=320,
    num_res_blocks=[1], channel_mult=[1], transformer_depth=[1], transformer_depth_middle=1,
    transformer_depth_output=[1, 1], use_linear_in_transformer=False, context_dim=768,
    num_heads=8, num_head_channels=-1, use_spatial_transformer=True, legacy=False, adm_in_channels=None,
    use_temporal_attention=False, use_temporal_resblock=False,
)
# The SD1.x VAE as ComfyUI builds it for any SD1.x checkpoint (comfy/sd.py, class VAE).
VAE_CONFIG = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
                  ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)


def fill_fan_in_scaled(module: torch.nn.Module, seed: int) -> None:
    """ComfyUI ops skip initialisation; give weights N(0, 1/fan_in), norms 1, biases small."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            if param.ndim >= 2:
                values = torch.randn(param.shape, generator=generator) / param[0].numel() ** 0.5
            elif name.endswith(".weight"):  # 1-D weights are norm scales
                values = torch.ones(param.shape)
            else:
                values = torch.randn(param.shape, generator=generator) * 0.01
            param.copy_(values.to(param.dtype))


def build_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, keyed as CheckpointSave would key an SD1.5 model."""
    import comfy.ldm.models.autoencoder
    import comfy.sd1_clip
    import comfy.supported_models

    config = comfy.supported_models.SD15(dict(UNET_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device=torch.device("cpu"))
    fill_fan_in_scaled(model.diffusion_model, seed)
    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float32)
    fill_fan_in_scaled(clip, seed + 1)
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=dict(VAE_CONFIG), embed_dim=4)
    fill_fan_in_scaled(vae, seed + 2)
    state = model.state_dict_for_saving(clip.state_dict(), vae.state_dict())
    return {key: value.to(torch.float16).contiguous() for key, value in state.items()}


def build_lora(checkpoint_state: dict[str, torch.Tensor], rank: int = 4, seed: int = SEED,
               layer: str = ".ff.net.2.weight") -> dict[str, torch.Tensor]:
    """A kohya-style LoRA (ComfyUI key names) on every `layer`: by default the FF output layers FIA prunes."""
    generator = torch.Generator().manual_seed(seed)
    prefix = "model.diffusion_model."
    lora = {}
    for key, weight in sorted(checkpoint_state.items()):
        if not (key.startswith(prefix) and key.endswith(layer)):
            continue
        name = "lora_unet_" + key[len(prefix):-len(".weight")].replace(".", "_")
        out_features, in_features = weight.shape
        lora[f"{name}.lora_down.weight"] = torch.randn(rank, in_features, generator=generator).half() * 0.05
        lora[f"{name}.lora_up.weight"] = torch.randn(out_features, rank, generator=generator).half() * 0.05
        lora[f"{name}.alpha"] = torch.tensor(float(rank), dtype=torch.float16)
    return lora


def _save_atomically(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Other sessions may build the same file at the same time: write aside, then rename."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"fia_e2e": f"v{VERSION}", "seed": str(SEED)})
    tmp.replace(path)


def ensure_models(cache_dir: Path) -> tuple[Path, Path]:
    """Paths of the cached checkpoint and LoRA, building them on first use."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    checkpoint, lora = cache_dir / CHECKPOINT_NAME, cache_dir / LORA_NAME
    if not (checkpoint.is_file() and lora.is_file()):
        state = build_state_dict()
        _save_atomically(build_lora(state), lora)
        _save_atomically(state, checkpoint)
    return checkpoint, lora


if __name__ == "__main__":
    from devkit.comfy_env import REPO, setup_comfyui

    setup_comfyui()
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / ".cache" / "e2e"
    for built in ensure_models(target):
        print(built, f"{built.stat().st_size / 2**20:.1f} MiB")
