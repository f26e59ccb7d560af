"""Socket types of the pack; the server refuses links between mismatched types."""

from comfy_api.latest import io

Saliency = io.Custom("FIA_SALIENCY")
ConceptMasks = io.Custom("FIA_CONCEPT_MASKS")
Mask = io.Custom("FIA_MASK")

CATEGORY = "FIA"
