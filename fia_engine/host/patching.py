"""Apply Unlearning Mask: pruning (W <- W * (1 - strength * P)) expressed as ModelPatcher patches.

Two mechanisms, both on a clone, never touching the input model:
- "patch" (default): a weight adapter in the key's patch list. Weights are computed once when the
  model loads: nothing runs per step. It composes in graph order like every patch: LoRAs loaded
  BEFORE the mask are masked too; a LoRA loaded AFTER it adds its delta to the pruned weights.
  The pruned weights are baked into CheckpointSave and carried by merges.
- "wrapper": a weight function that runs at every forward after all patches, so no later LoRA
  can refill pruned weights, at the cost of one masked copy per layer per forward. Not saved in
  checkpoints, not carried by merges.
"""

from __future__ import annotations

import torch
from comfy.weight_adapter.base import WeightAdapterBase

from ..core.architectures import architecture_of, fingerprint
from ..core.errors import FIAInputError
from ..core.masks import (
    UnlearningMask,
    check_architecture,
    check_has_layers,
    check_layers_match,
    warn_if_other_weights,
)
from .layers import layers_of_patcher, original_weights

MODES = ("patch", "wrapper")

def prune(weight: torch.Tensor, indices: torch.Tensor, strength: float) -> torch.Tensor:
    """Scales the listed entries (flat indices) by 1 - strength; strength 1 gives exact zeros."""
    flat = weight.view(-1) if weight.is_contiguous() else weight.contiguous().view(-1)
    indices = indices.to(flat.device, torch.long)
    if strength >= 1.0:
        flat.index_fill_(0, indices, 0.0)
    elif strength > 0.0:
        flat.index_copy_(0, indices, flat.index_select(0, indices) * (1.0 - strength))
    return flat.view(weight.shape)


class PruneMaskAdapter(WeightAdapterBase):
    """A ComfyUI weight adapter whose patch prunes the weights listed in its index tensor.

    A WeightAdapterBase, so calculate_weight dispatches it like a LoRA's; ComfyUI 0.21+ rebuilds
    it as type(v)(v.loaded_keys, weights), which this constructor accepts.
    """

    name = "fia_prune_mask"

    def __init__(self, loaded_keys: set[str], weights: tuple[torch.Tensor]):
        self.loaded_keys = loaded_keys
        self.weights = weights

    def calculate_shape(self, key):
        return None

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        return prune(weight, self.weights[0], float(strength))


def _masking_function(indices: torch.Tensor, strength: float):
    on_device: dict[torch.device, torch.Tensor] = {}  # int64 indices per device: no copy per forward

    def mask_weight(weight: torch.Tensor) -> torch.Tensor:
        if weight.device not in on_device:
            on_device[weight.device] = indices.to(weight.device, torch.long)
        return prune(weight.clone(), on_device[weight.device], strength)

    return mask_weight


def bypass_lora_keys(patcher) -> set[str] | None:
    """Weight keys to which a bypass-mode LoRA (ComfyUI 0.33's LoraLoaderBypass) adds its own path
    at every forward: outside the weights, so no weight patch or wrapper can prune its delta.

    ComfyUI keeps them only in its injection's closure (the BypassInjectionManager's `adapters`, by
    module path); None when such an injection is there but laid out otherwise (unknown keys).
    """
    keys: set[str] = set()
    for injection in getattr(patcher, "injections", {}).get("bypass_lora", []):
        cells = [cell.cell_contents for cell in getattr(injection.inject, "__closure__", None) or ()]
        managers = [c for c in cells if isinstance(getattr(c, "adapters", None), dict)]
        if not managers:
            return None
        for manager in managers:
            keys.update(f"{module}.weight" for module in manager.adapters)
    return keys


def check_no_bypass_lora(patcher, mask: UnlearningMask) -> None:
    """Refuses a model whose bypass LoRA reaches the mask's layers: the pruned weights would not be zero."""
    keys = bypass_lora_keys(patcher)
    masked = {key for key, indices in mask.pruned.items() if indices.numel()}
    hit = masked if keys is None else sorted(masked & keys)
    if hit:
        which = "some of the mask's layers (this ComfyUI keeps its bypass LoRAs in a form FIA does not know)" \
            if keys is None else f"{len(hit)} of the mask's {len(masked)} layers (e.g. {hit[0]})"
        raise FIAInputError(
            f"model: a bypass-mode LoRA (LoraLoaderBypass) runs its own path beside {which} at every step, so "
            "its delta would refill the pruned weights. Load that LoRA with LoraLoader before FIA Apply Unlearning "
            "Mask instead: its weight patches are then pruned with the model's weights.")


def check_strength(strength: float) -> None:
    if not 0.0 <= strength <= 1.0:  # NaN fails this too
        raise FIAInputError(f"strength: {strength} is out of range; use 0 (untouched) to 1 (fully pruned).")


def apply_mask(patcher, mask: UnlearningMask, strength: float = 1.0, *, mode: str = "patch"):
    """A clone of `patcher` with the mask's weights pruned; checks architecture and shapes first."""
    check_strength(strength)
    if mode not in MODES:
        raise FIAInputError(f"mode: '{mode}' is unknown; use one of {', '.join(MODES)}.")
    check_has_layers("mask", mask.layers)
    family = architecture_of(patcher.model.model_config).family
    check_architecture("mask", mask.architecture, family)  # the family first: clearest message
    spec, layers = layers_of_patcher(
        patcher, streams=tuple(sorted({layer.stream for layer in mask.layers})), kind=mask.layers[0].kind
    )
    check_layers_match("mask", mask.architecture, mask.layers, spec.family, layers)
    warn_if_other_weights("mask", mask.fingerprint, fingerprint(original_weights(patcher, mask.layers)))
    if strength > 0.0:
        check_no_bypass_lora(patcher, mask)
    model = patcher.clone()
    if strength == 0.0:
        return model
    if mode == "patch":
        patches = {key: PruneMaskAdapter({key}, (indices,)) for key, indices in mask.pruned.items() if indices.numel()}
        added = model.add_patches(patches, strength_patch=strength)
        if len(added) != len(patches):
            raise FIAInputError("mask: some of its layer keys are not weights of this model.")
    else:
        for key, indices in mask.pruned.items():
            if indices.numel():
                model.add_weight_wrapper(key, _masking_function(indices, strength))
    return model
