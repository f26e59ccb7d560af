"""FIA Unlearn: the whole method in one node, at the paper's settings, for users who want no five-node graph."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io, ui

from ..fia_engine import (
    PRESETS,
    MethodSettings,
    SamplingSettings,
    apply_mask,
    paper,
    parse_lines,
    resolve_preset,
    unlearning_mask,
)
from ..fia_engine.core.checks import empty_mask_warning, empty_selection_warning
from .boundary import FIANode
from .saliency import LAYERS_INPUT, clip_encoder, comfy_progress
from .types import CATEGORY, Mask

# What this node does not expose, at the paper's values: the reference code's 50-step PNDM calls for
# SD1.x/SD2.x (euler/normal for other families), one starting latent for every prompt, the model's
# native size, 4 prompts per batch, and cfg 0 = the family's recording cfg (7.5 for SD1.x, the paper's).
# Tests pass a smaller one as `sampling` (not an input of the node).
PAPER_SAMPLING = SamplingSettings(paper.GENERAL.steps, paper.GENERAL.recorded_steps, cfg=0.0)
# "custom" needs templates and placeholders: that path is the five-node graph.
ONE_NODE_PRESETS = [name for name in PRESETS if name != "custom"]


class FIAUnlearn(FIANode):
    INPUT_FIXES = {"preset": "For your own prompt templates use FIA Compute Concept Saliency (preset custom) and "
                             "the nodes after it"}

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIAUnlearn",
            display_name="FIA Unlearn",
            category=CATEGORY,
            description=(
                "Forgets the listed concepts in one step: measures which feed-forward weights respond to them, "
                "selects, fuses and prunes them, at the paper's settings. Use the separate FIA nodes for "
                "custom prompt templates or to tune every step."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to unlearn from. It is not modified; a pruned copy "
                                                "is returned. Put this node after your LoRA loaders."),
                io.Clip.Input("clip", tooltip="The text encoder that belongs to the model."),
                io.String.Input("concepts", multiline=True, default="", placeholder="Van Gogh\nClaude Monet",
                                tooltip="The concepts to forget, one per line. Lines starting with # are ignored."),
                io.Combo.Input("preset", options=ONE_NODE_PRESETS, default="objects",
                               tooltip="What kind of concepts they are, with the paper's prompt templates: "
                                       "objects 'a {concept} in a {place}'; explicit 'a photo of a {concept} "
                                       "{person}'; art 'a {object} in the style of {concept}'."),
                io.Int.Input("prompt_pairs", default=0, min=0, max=1000,
                             tooltip="Concept/base prompt pairs per concept. 0 = one per placeholder (30 for "
                                     "objects and art, 18 for explicit). Fewer is faster and rougher; the paper "
                                     "says 5 well-chosen ones suffice."),
                io.Int.Input("seed", default=paper.GENERAL.seed, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the prompt shuffle and of the starting latent all prompts share "
                                     f"(paper: {paper.GENERAL.seed}). "
                                     "It stays fixed between runs, so a rerun reuses the mask instead of "
                                     "recomputing it."),
                io.Int.Input("recorded_steps", default=PAPER_SAMPLING.recorded_steps, min=1,
                             max=PAPER_SAMPLING.steps,
                             tooltip="T: how many early denoising steps of a 50-step schedule are measured "
                                     "(paper: 10). Cost is prompt pairs x (concepts + 1) x T UNet calls."),
                io.Float.Input("r2", default=0.0, min=0.0, max=1.0, step=0.001, round=0.0001,
                               tooltip="Fraction of each layer selected per concept. 0 = the paper's value for "
                                       f"the preset: {paper.describe('r2')}."),
                io.Float.Input("alpha", default=0.0, min=0.0, max=1.0, step=0.05, round=0.01,
                               tooltip="Weights selected for at least ceil(alpha x concepts) concepts (and at "
                                       "least 2) are shared by everything and kept. 0 = the paper's value: "
                                       f"{paper.describe('alpha')}."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.05, round=0.01,
                               tooltip="1 = selected weights set to zero (the paper), 0 = untouched."),
                io.String.Input("keep", multiline=True, default="", optional=True, placeholder="Claude Monet",
                                tooltip="Concepts to keep, one per line, same preset: measured and selected like the "
                                        "concepts to forget, and none of their weights is pruned. Costs one more "
                                        "prompt set per concept."),
                LAYERS_INPUT,
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model with the concepts' weights pruned."),
                Mask.Output(display_name="mask", tooltip="The pruning mask: save it with FIA Save Mask to reuse "
                                                         "it without recomputing, or look at it with FIA Mask "
                                                         "Inspector."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, concepts, preset, prompt_pairs, seed, recorded_steps, r2, alpha,
                strength, keep="", layers="ff2", *, sampling: SamplingSettings = PAPER_SAMPLING) -> io.NodeOutput:
        chosen = resolve_preset(preset)
        sampling = dataclasses.replace(sampling, recorded_steps=recorded_steps)
        settings = MethodSettings(r2=r2, alpha=alpha, num_pairs=prompt_pairs, seed=seed, sampling=sampling,
                                  layer_kind=layers)
        result = unlearning_mask(model, clip_encoder(clip), parse_lines(concepts), chosen, settings=settings,
                                 progress=comfy_progress(), keep=parse_lines(keep))
        masks, mask = result.concept_masks, result.mask
        warnings = "\n".join(filter(None, (empty_selection_warning(masks), empty_mask_warning(mask))))
        return io.NodeOutput(apply_mask(model, mask, strength), mask, ui=ui.PreviewText(warnings) if warnings else None)
