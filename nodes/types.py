"""Socket types of the pack, and what a value arriving at each socket must be.

The server refuses links between mismatched types, but an API prompt may put a literal (or null)
where a link belongs; the node boundary (nodes/boundary.py) checks the value against SOCKETS.
"""

from typing import Protocol, runtime_checkable

from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io

from ..fia_engine import ConceptMasks as ConceptMasksValue
from ..fia_engine import SaliencyRecord, UnlearningMask

Saliency = io.Custom("FIA_SALIENCY")
ConceptMasks = io.Custom("FIA_CONCEPT_MASKS")
Mask = io.Custom("FIA_MASK")


@runtime_checkable
class TextEncoder(Protocol):
    """A CLIP input as the pack uses it (nodes/saliency.py's clip_encoder): ComfyUI's CLIP, or any
    object with its two calls."""

    def tokenize(self, text: str): ...

    def encode_from_tokens_scheduled(self, tokens): ...


# socket type -> (the Python type its value has, where such a value comes from: the refusal's fix)
SOCKETS: dict[str, tuple[type, str]] = {
    io.Model.io_type: (ModelPatcher, "a MODEL output (Load Checkpoint, a LoRA loader)"),
    io.Clip.io_type: (TextEncoder, "a CLIP output (Load Checkpoint)"),
    Saliency.io_type: (SaliencyRecord, "the output of FIA Compute Concept Saliency"),
    ConceptMasks.io_type: (ConceptMasksValue, "the output of FIA Select Sensitive Neurons"),
    Mask.io_type: (UnlearningMask, "the mask output of FIA Fuse Masks, FIA Unlearn or FIA Load Mask"),
}

CATEGORY = "FIA"
