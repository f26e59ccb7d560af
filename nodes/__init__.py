"""The pack's ComfyUI nodes: thin V3 classes that validate inputs and call fia_engine."""

from .apply import FIAApplyUnlearningMask
from .fusion import FIAFuseMasks
from .inspector import FIAMaskInspector
from .mask_files import FIALoadMask, FIASaveMask
from .saliency import FIAComputeConceptSaliency
from .selection import FIASelectSensitiveNeurons
from .unlearn import FIAUnlearn

NODES = [
    FIAComputeConceptSaliency,
    FIASelectSensitiveNeurons,
    FIAFuseMasks,
    FIAApplyUnlearningMask,
    FIASaveMask,
    FIALoadMask,
    FIAUnlearn,
    FIAMaskInspector,
]
