"""FIA Mask Inspector: shows what a mask removes, as a chart on the node and a text summary."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..fia_engine import FIAInputError
from ..fia_engine.core.inspection import (
    concept_masks_chart,
    concept_masks_summary,
    fused_mask_chart,
    fused_mask_summary,
)
from .boundary import FIANode
from .chart import render_chart, stack_images, to_comfy_image
from .types import CATEGORY, ConceptMasks, Mask


class FIAMaskInspector(FIANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIAMaskInspector",
            display_name="FIA Mask Inspector",
            category=CATEGORY,
            description="Shows which weights a mask prunes, layer by layer from the UNet's input to its output, "
                        "with the concepts, counts, sparsity and settings it was made with.",
            inputs=[
                Mask.Input("mask", optional=True,
                           tooltip="A fused mask (FIA Fuse Masks, FIA Unlearn or FIA Load Mask): pruned and "
                                   "kept concept-agnostic weights per layer."),
                ConceptMasks.Input("concept_masks", optional=True,
                                   tooltip="Per-concept selections (FIA Select Sensitive Neurons), stacked per "
                                           "layer, before fusion. Connect this, the mask, or both."),
            ],
            outputs=[
                io.Image.Output(display_name="chart",
                                tooltip="The chart as an image (also shown on this node): save or preview it."),
                io.String.Output(display_name="summary",
                                 tooltip="Concepts, counts, sparsity, hyperparameters, source model fingerprint and "
                                         "a per-layer table, as text (e.g. into Preview Any)."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, mask=None, concept_masks=None) -> io.NodeOutput:
        if mask is None and concept_masks is None:
            raise FIAInputError("FIA Mask Inspector: connect a mask (FIA_MASK) or concept_masks (FIA_CONCEPT_MASKS) "
                                "input; there is nothing to inspect.")
        charts, summaries = [], []
        if mask is not None:
            charts.append(fused_mask_chart(mask))
            summaries.append(fused_mask_summary(mask))
        if concept_masks is not None:
            charts.append(concept_masks_chart(concept_masks))
            summaries.append(concept_masks_summary(concept_masks))
        image = to_comfy_image(stack_images([render_chart(chart) for chart in charts]))
        return io.NodeOutput(image, "\n\n".join(summaries), ui=ui.PreviewImage(image, cls=cls))
