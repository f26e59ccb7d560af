"""The pack's ComfyUI nodes: thin V3 classes that validate inputs and call fia_engine."""

from .apply import FIAApplyUnlearningMask
from .fusion import FIAFuseMasks
from .mask_files import FIALoadMask, FIASaveMask
from .saliency import FIAComputeConceptSaliency
from .selection import FIASelectSensitiveNeurons

NODES = [
    FIAComputeConceptSaliency,
    FIASelectSensitiveNeurons,
    FIAFuseMasks,
    FIAApplyUnlearningMask,
    FIASaveMask,
    FIALoadMask,
]
