"""FIA Select Sensitive Neurons: Eq.3-6, one mask per concept."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..fia_engine import paper, parse_r2_overrides, select_sensitive_neurons
from ..fia_engine.core.checks import empty_selection_warning
from ..fia_engine.core.selection import COMPATIBILITY, SELECTION_METHODS
from .boundary import FIANode
from .types import CATEGORY, ConceptMasks, Saliency


class FIASelectSensitiveNeurons(FIANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIASelectSensitiveNeurons",
            display_name="FIA Select Sensitive Neurons",
            category=CATEGORY,
            description="Picks, per concept, the weights that respond to it consistently over the early steps "
                        "(time-integrated sensitivity, Eq.3) and stand out in their row and layer (Eq.4-6).",
            inputs=[
                Saliency.Input("saliency", tooltip="Output of FIA Compute Concept Saliency."),
                io.Float.Input("r1", default=paper.GENERAL.r1, min=0.0001, max=1.0, step=0.001, round=0.0001,
                               tooltip="Top fraction of weights counted as sensitive at each step "
                                       f"(Eq.3; paper: {paper.GENERAL.r1})."),
                io.Float.Input("r2", default=0.0, min=0.0, max=1.0, step=0.001, round=0.0001,
                               tooltip="Fraction selected per row and per layer (Eq.4-6). 0 = the paper's value "
                                       f"for the preset: {paper.describe('r2')}."),
                io.String.Input("r2_overrides", multiline=True, default="", placeholder="Van Gogh: 0.03",
                                tooltip="Per-concept r2, one 'concept: ratio' per line; wins over r2."),
                io.Combo.Input("method", options=list(SELECTION_METHODS), default="fia",
                               tooltip="fia: the paper's selection. conceptprune: the earlier ConceptPrune rule "
                                       "(row top-k per step, union over steps), for comparison."),
                io.Combo.Input("compatibility", options=list(COMPATIBILITY), default="fixed", optional=True,
                               tooltip="fixed: the reference code's arithmetic with its pitfalls fixed (never "
                                       "selects zero-saliency weights; ties all kept). reference: the reference "
                                       "code's masks bit for bit, pitfalls included, to match published numbers."),
            ],
            outputs=[ConceptMasks.Output(display_name="concept_masks",
                                         tooltip="One selection per concept, to fuse with FIA Fuse Masks.")],
        )

    @classmethod
    def execute(cls, saliency, r1, r2, r2_overrides, method, compatibility="fixed") -> io.NodeOutput:
        overrides = parse_r2_overrides(r2_overrides, saliency.concepts)
        masks = select_sensitive_neurons(saliency, r1=r1, r2=r2, r2_overrides=overrides, method=method,
                                         compatibility=compatibility)
        warning = empty_selection_warning(masks)
        return io.NodeOutput(masks, ui=ui.PreviewText(warning) if warning else None)
