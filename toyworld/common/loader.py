"""Load the trained ToyWorld model as a ComfyUI ModelPatcher, plus prompt conditioning,
latent <-> image conversion and a sampling helper built on `comfy.sample.sample`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import comfy.model_patcher
import comfy.sample
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..shapes.text import ToyTextEncoder
from ..shapes.world import SIZE as world_size
from . import model as tw_model

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
V3_WEIGHTS = WEIGHTS_DIR / "toyworld_v3.safetensors"
# The shapes world's model (world version 3, 48x8x8 latent, width 96); the v2 model's weights are
# no longer shipped (its figures stay in the docs). Each file's metadata says what to build.
DEFAULT_WEIGHTS = V3_WEIGHTS

Conditioning = list[list[Any]]
TEXT_PREFIX = "text_encoder."  # a model file's text-encoder tensors (EmojiWorld's), beside the UNet's


def read_metadata(path: str | Path = DEFAULT_WEIGHTS) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


@dataclass
class ToyWorld:
    """A loaded ToyWorld model: `.patcher` is what ComfyUI nodes receive as MODEL."""

    patcher: comfy.model_patcher.ModelPatcher
    encoder: Callable[[list[str]], torch.Tensor]  # prompts -> context [B, 77, D]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def world_version(self) -> int:
        """The world semantics the model was trained on (files without the key are v2's)."""
        return int(self.metadata.get("world", 2))

    @property
    def latent_format(self) -> tw_model.ToyWorldLatent:
        return self.patcher.model.latent_format

    def encode(self, text: str) -> Conditioning:
        """ComfyUI CONDITIONING for one prompt: [[context [1, 77, D], {}]]."""
        return [[self.encoder([text]), {}]]

    def encode_batch(self, texts: list[str]) -> Conditioning:
        """One conditioning entry whose context has one row per prompt (one per latent)."""
        return [[self.encoder(texts), {}]]

    @staticmethod
    def decode(latent: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Latent (or a ComfyUI LATENT dict) -> IMAGE [B, 32, 32, 3] in [0, 1]."""
        if isinstance(latent, dict):
            latent = latent["samples"]
        return tw_model.latent_to_image(latent)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return tw_model.image_to_latent(images, self.latent_format.patch)

    def empty_latent(self, batch: int = 1) -> torch.Tensor:
        fmt = self.latent_format
        side = world_size // fmt.patch
        return torch.zeros(batch, fmt.latent_channels, side, side)

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        steps: int = 25,
        cfg: float = 7.5,
        sampler: str = "ddim",
        scheduler: str = "normal",
        negative: str = "",
        patcher: comfy.model_patcher.ModelPatcher | None = None,
        chunk: int = 50,
    ) -> torch.Tensor:
        """Sample one image per (prompt, seed) -> IMAGE [N, 32, 32, 3].

        Noise comes from `comfy.sample.prepare_noise` per seed, so an image depends only on
        its own prompt and seed, not on the batch it is sampled in. `patcher` lets callers
        sample an edited clone with the same prompts and seeds.
        """
        if len(prompts) != len(seeds):
            raise ValueError("need one seed per prompt")
        model = patcher or self.patcher
        out = []
        for i in range(0, len(prompts), chunk):
            ps, ss = prompts[i : i + chunk], seeds[i : i + chunk]
            latent = self.empty_latent(len(ps))
            noise = torch.cat([comfy.sample.prepare_noise(latent[:1], int(s)) for s in ss])
            positive = self.encode_batch(ps)
            neg = [[self.encoder([negative]).expand(len(ps), -1, -1).contiguous(), {}]]
            samples = comfy.sample.sample(
                model, noise, steps, cfg, sampler, scheduler, positive, neg, latent,
                disable_pbar=True, seed=int(ss[0]),
            )
            out.append(self.decode(samples))
        return torch.cat(out)


def load_toyworld(
    path: str | Path = DEFAULT_WEIGHTS, device: torch.device | str = "cpu"
) -> ToyWorld:
    """Build the model from the config in the file's metadata (v2's when it has none) and wrap
    it in a ModelPatcher."""
    device = torch.device(device)
    meta = read_metadata(path)
    unet_config = json.loads(meta["unet_config"]) if "unet_config" in meta else None
    cfg = tw_model.ToyWorldConfig(unet_config)
    cfg.set_inference_dtype(torch.float32, None)
    base = cfg.get_model({}, device=torch.device("cpu"))
    tensors = load_file(str(path))
    sd = {k: v.float() for k, v in tensors.items() if not k.startswith(TEXT_PREFIX)}
    base.diffusion_model.load_state_dict(sd, strict=True)
    base.diffusion_model.eval()
    patcher = comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=torch.device("cpu"))
    te = json.loads(meta.get("text_encoder", "{}"))
    if "vocabulary" in te:  # EmojiWorld: a frozen transformer whose weights ship in the file
        from ..emoji.text import EmojiTextEncoder

        encoder = EmojiTextEncoder.from_metadata(te)
        encoder.load_state_dict({k[len(TEXT_PREFIX):]: v for k, v in tensors.items() if k.startswith(TEXT_PREFIX)})
    else:
        encoder = ToyTextEncoder(dim=te.get("dim", tw_model.DIM), seed=te.get("seed", 1234), pieces=te.get("pieces", 0))
    return ToyWorld(patcher=patcher, encoder=encoder, metadata=meta)
