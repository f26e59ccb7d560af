"""The FF layers of a ComfyUI model and the weights sampling uses (LoRAs and other patches applied)."""

from __future__ import annotations

import comfy.lora  # the host's own patch arithmetic, so LoRAs etc. are applied exactly as it does
import torch

from ..core.architectures import (
    DIFFUSION_PREFIX,
    ArchitectureSpec,
    PrunableLayer,
    architecture_of,
    discover_layers,
    layers_named,
    supported_families,
)
from ..core.errors import FIAInputError


def layers_of_patcher(
    patcher, streams: tuple[str, ...] | None = None, kind: str = "ff2"
) -> tuple[ArchitectureSpec, list[PrunableLayer]]:
    """Architecture and layers of `kind` (FF output by default) of a ComfyUI ModelPatcher; refuses models without any."""
    spec = architecture_of(patcher.model.model_config)
    if spec.unsupported:
        raise FIAInputError(
            f"model: {spec.family} models are not supported yet ({spec.unsupported}). FIA supports "
            f"{', '.join(supported_families())}."
        )
    spec = spec.with_layers(kind)
    layers = discover_layers(patcher.model.diffusion_model, spec, streams)
    if not layers:
        raise FIAInputError(
            f"model: this {spec.family} model has no supported {layers_named(spec.layers)} "
            f"(looked for: {spec.notes.get('layers', 'ff output layers')}). FIA supports "
            f"{', '.join(supported_families())}; connect one of those."
        )
    return spec, layers


def modules_by_path(diffusion_model: torch.nn.Module, layers: list[PrunableLayer]) -> dict[str, torch.nn.Module]:
    named = dict(diffusion_model.named_modules())
    return {layer.module_path: named[layer.module_path] for layer in layers}


def original_weights(patcher, layers: list[PrunableLayer]) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, before any patch (LoRA, mask) of this or an upstream node."""
    key_patches = patcher.get_key_patches(DIFFUSION_PREFIX)
    weights = {}
    for layer in layers:
        weight, convert = key_patches[layer.key][0]
        weights[layer.key] = convert(weight) if convert is not None else weight
    return weights


def effective_weights(patcher, layers: list[PrunableLayer], originals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights sampling uses: `original_weights` with this patcher's weight patches applied (CPU, fp32)."""
    weights = {}
    for layer in layers:
        weight = originals[layer.key].detach().to("cpu", torch.float32, copy=True)
        patches = patcher.patches.get(layer.key, [])
        if patches:
            weight = comfy.lora.calculate_weight(patches, weight, layer.key)
        weights[layer.key] = weight
    return weights
