"""FIA Fuse Masks: Eq.7-8 over the concepts of up to four selection runs."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..fia_engine import fuse_masks, paper
from ..fia_engine.core.checks import empty_mask_warning
from ..fia_engine.core.fusion import FUSION_MODES
from ..fia_engine.core.selection import COMPATIBILITY
from .boundary import FIANode
from .types import CATEGORY, ConceptMasks, Mask

EXTRA_INPUTS = 3


class FIAFuseMasks(FIANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        extra = [
            ConceptMasks.Input(f"concept_masks_{n}", optional=True,
                               tooltip="More concept masks, e.g. from a separate saliency run with another preset.")
            for n in range(2, 2 + EXTRA_INPUTS)
        ]
        return io.Schema(
            node_id="FIAFuseMasks",
            display_name="FIA Fuse Masks",
            category=CATEGORY,
            description="Combines the concept masks into one pruning mask. Weights selected for many concepts "
                        "are concept-agnostic (needed by everything) and kept; the rest are pruned (Eq.7-8).",
            inputs=[
                ConceptMasks.Input("concept_masks", tooltip="Output of FIA Select Sensitive Neurons."),
                *extra,
                io.Float.Input("alpha", default=0.0, min=0.0, max=1.0, step=0.05, round=0.01,
                               tooltip="A weight in at least ceil(alpha * concepts) masks (and at least 2) is "
                                       "concept-agnostic and kept. 0 = the paper's value for the concepts' preset "
                                       f"({paper.describe('alpha')}; concepts of several presets: their mean, "
                                       "weighted by concepts), stated in the mask."),
                io.Combo.Input("fusion", options=list(FUSION_MODES), default="concept-agnostic",
                               tooltip="concept-agnostic: the paper's fusion. union: prune every selected weight "
                                       "(forgets a bit more, costs image quality)."),
                io.Combo.Input("compatibility", options=list(COMPATIBILITY), default="fixed", optional=True,
                               tooltip="fixed: a weight of one concept is never concept-agnostic, so one concept "
                                       "alone is pruned. reference: the reference code's rule ceil(alpha * C), "
                                       "which prunes nothing for one concept."),
                ConceptMasks.Input("keep", optional=True,
                                   tooltip="Concepts to keep: Select Sensitive Neurons' output for them (same model "
                                           "and preset). No weight selected for a kept concept is pruned."),
            ],
            outputs=[Mask.Output(display_name="mask", tooltip="The weights to prune; apply, save or inspect it.")],
        )

    @classmethod
    def execute(cls, concept_masks, alpha, fusion, compatibility="fixed", keep=None, **more) -> io.NodeOutput:
        inputs = [concept_masks] + [more[k] for k in sorted(more) if more[k] is not None]
        mask = fuse_masks(inputs, alpha=alpha, mode=fusion, compatibility=compatibility,
                          keep=[keep] if keep is not None else None)
        warning = empty_mask_warning(mask)
        return io.NodeOutput(mask, ui=ui.PreviewText(warning) if warning else None)
