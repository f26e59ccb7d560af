"""The training-free method users pick instead of FIA, as a benchmark baseline (not a node): a
closed-form edit of the cross-attention key and value projections in the style of UCE (Gandikota
et al., "Unified Concept Editing in Diffusion Models", WACV 2024).

For every `attn2.to_k` / `attn2.to_v` weight W, the edited W' minimises

    erase_scale * sum_i |W' e_i - W t_i|^2 + preserve_scale * sum_j |W' p_j - W p_j|^2 + lamb * |W' - W|^2

over text-encoder outputs: e_i a token of a prompt naming a concept to erase, t_i the same
position's token of its target prompt (the concept left out), p_j a token of a prompt to keep.
The minimum is W' = (erase_scale * W T^T E + preserve_scale * W P^T P + lamb * W)
(erase_scale * E^T E + preserve_scale * P^T P + lamb * I)^-1. UCE's own values: lamb 0.1, erase
scale 1, preserve scale 0.1. Tokens are every position from the concept's first word on: with a
causal encoder (as CLIP) the words after a concept carry it too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fia_engine import layers_of_patcher

Encoder = Callable[[list[str]], torch.Tensor]  # prompts -> context [B, 77, D]


def tokens_after(encoder: Encoder, prompts: list[str], first: int) -> torch.Tensor:
    """[N * (77 - first), D]: every context token from position `first` on, of every prompt."""
    return encoder(prompts)[:, first:].flatten(0, 1).double()


def uce_weights(weight: torch.Tensor, erase: torch.Tensor, target: torch.Tensor, preserve: torch.Tensor,
                lamb: float = 0.1, erase_scale: float = 1.0, preserve_scale: float = 0.1) -> torch.Tensor:
    """W' of the module docstring for one projection W [out, D] (fp64 inside, W's dtype out)."""
    w = weight.double()
    eye = torch.eye(w.shape[1], dtype=torch.float64)
    lhs = erase_scale * (w @ target.T) @ erase + preserve_scale * (w @ preserve.T) @ preserve + lamb * w
    gram = erase_scale * erase.T @ erase + preserve_scale * preserve.T @ preserve + lamb * eye
    return torch.linalg.solve(gram, lhs.T).T.to(weight.dtype)  # lhs @ gram^-1, gram symmetric


def uce_edit(patcher, encoder: Encoder, erase_prompts: list[str], target_prompts: list[str],
             preserve_prompts: list[str], first_token: int = 2, **scales: float):
    """A clone of `patcher` whose cross-attention k/v weights are edited (as weight patches, so the
    input model is untouched). Prompts pair up: erase_prompts[i] is steered to target_prompts[i]."""
    if len(erase_prompts) != len(target_prompts):
        raise ValueError("one target prompt per erase prompt")
    erase = tokens_after(encoder, erase_prompts, first_token)
    target = tokens_after(encoder, target_prompts, first_token)
    preserve = tokens_after(encoder, preserve_prompts, first_token)
    _, layers = layers_of_patcher(patcher, kind="cross-attn kv")
    weights = patcher.model.state_dict()
    model = patcher.clone()
    patches = {}
    for layer in layers:
        weight = weights[layer.key].float()
        patches[layer.key] = (uce_weights(weight, erase, target, preserve, **scales) - weight,)
    if len(model.add_patches(patches, 1.0)) != len(patches):
        raise RuntimeError("uce_edit: some cross-attention keys are not this model's weights")
    return model
