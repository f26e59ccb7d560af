"""FIA Apply Unlearning Mask: prunes the masked weights on a clone of the model, as patches."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..fia_engine import apply_mask
from ..fia_engine.core.checks import empty_mask_warning
from ..fia_engine.host.patching import MODES
from .boundary import FIANode
from .types import CATEGORY, Mask


class FIAApplyUnlearningMask(FIANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIAApplyUnlearningMask",
            display_name="FIA Apply Unlearning Mask",
            category=CATEGORY,
            description="Returns the model with the mask's weights pruned. The input model is untouched; the "
                        "result chains with LoRA loaders, merges and samplers like any patched model.",
            inputs=[
                io.Model.Input("model", tooltip="The model to unlearn from (same architecture as the mask)."),
                Mask.Input("mask", tooltip="From FIA Fuse Masks or FIA Load Mask."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.05, round=0.01,
                               tooltip="1 = masked weights set to zero (the paper), 0 = untouched; between "
                                       "scales them by 1 - strength."),
                io.Combo.Input("mode", options=list(MODES), default="patch",
                               tooltip="patch: computed once at load, saved by CheckpointSave; place this node "
                                       "AFTER your LoRA loaders (a LoRA applied later refills pruned weights). "
                                       "wrapper: masks at every forward after all patches, so order does not "
                                       "matter; slightly slower, not saved in checkpoints."),
            ],
            outputs=[io.Model.Output(tooltip="The unlearned model.")],
        )

    @classmethod
    def execute(cls, model, mask, strength, mode) -> io.NodeOutput:
        warning = empty_mask_warning(mask)
        return io.NodeOutput(apply_mask(model, mask, strength, mode=mode), ui=ui.PreviewText(warning) if warning else None)
