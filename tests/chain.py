"""Runs the four core nodes through their `execute`, as the server would."""

from __future__ import annotations

SALIENCY_DEFAULTS = dict(
    concepts="cat\ndog\nbird", preset="objects", concept_template="{concept} {placeholder}",
    base_template="{placeholder}", placeholders="", prompt_pairs=2, seed=1244, steps=10, recorded_steps=2,
    cfg=7.5, sampler_name="euler", scheduler="normal", width=64, height=64, prompts_per_batch=2,
    streams="default", saliency_form="reference",
)


def saliency_node(pack, model, clip, **overrides):
    node = pack.nodes.FIAComputeConceptSaliency
    return node.execute(model=model, clip=clip, **(SALIENCY_DEFAULTS | overrides))[0]


def select_node(pack, saliency, r1=0.05, r2=0.05, r2_overrides="", method="fia"):
    return pack.nodes.FIASelectSensitiveNeurons.execute(
        saliency=saliency, r1=r1, r2=r2, r2_overrides=r2_overrides, method=method)[0]


def fuse_node(pack, *concept_masks, alpha=0.6, fusion="concept-agnostic"):
    extra = {f"concept_masks_{n}": m for n, m in enumerate(concept_masks[1:], start=2)}
    return pack.nodes.FIAFuseMasks.execute(concept_masks=concept_masks[0], alpha=alpha, fusion=fusion, **extra)[0]


def apply_node(pack, model, mask, strength=1.0, mode="patch"):
    return pack.nodes.FIAApplyUnlearningMask.execute(model=model, mask=mask, strength=strength, mode=mode)[0]


def loaded_state(patcher) -> dict:
    """The weights ComfyUI actually runs with: load (patch) the model, copy, unload (restore)."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([patcher])
    try:
        return {k: v.detach().clone() for k, v in patcher.model.diffusion_model.state_dict().items()}
    finally:
        comfy.model_management.unload_all_models()
