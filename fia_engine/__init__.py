"""Forget-It-All (FIA) multi-concept unlearning for ComfyUI models: the engine.

Equations of the paper and where they live (core/ is plain torch, host/ talks to ComfyUI):
  Eq.1-2  core/statistics.py  per-prompt saliency, concept-vs-base contrast, the saliency forms
  Eq.3-6  core/selection.py   time-integrated sensitivity, row-and-layer top-k, per concept
  Eq.7-8  core/fusion.py      concept counts, concept-agnostic threshold, fused mask
The paper's values: core/paper.py. Mask files: core/mask_io.py (format), core/mask_schema.py
(what a file may claim). Recording: host/recording.py and host/plms.py (the reference schedule),
run by host/saliency.py. Masks as patches: host/patching.py. The whole method: host/method.py.
"""

from .core import (
    architectures,
    checks,
    errors,
    factorised,
    fusion,
    index_codec,
    inspection,
    mask_io,
    mask_schema,
    masks,
    memory,
    paper,
    prompts,
    record,
    request,
    sampling,
    selection,
    statistics,
)
from .core.architectures import ARCHITECTURES, PrunableLayer, architecture_of, discover_layers
from .core.errors import FIAInputError
from .core.fusion import fuse_masks, merge_concept_masks
from .core.mask_io import load_mask, read_metadata, save_mask
from .core.masks import ConceptMasks, UnlearningMask
from .core.prompts import (
    PRESET_NAMES,
    PRESETS,
    PromptPair,
    PromptPreset,
    build_prompt_pairs,
    parse_lines,
    resolve_preset,
)
from .core.record import SaliencyRecord
from .core.request import ConceptRequest, parse_concepts, parse_r2_overrides, resolve_concepts
from .core.sampling import SamplingSettings
from .core.selection import select_sensitive_neurons
from .host import layers, method, patching, plms, recording, saliency
from .host.layers import layers_of_patcher
from .host.method import MethodResult, MethodSettings, masks_from, unlearning_mask
from .host.patching import apply_mask
from .host.saliency import compute_saliency

__all__ = [
    "ARCHITECTURES", "ConceptMasks", "ConceptRequest", "PrunableLayer", "FIAInputError", "MethodResult", "MethodSettings", "PRESETS",
    "PRESET_NAMES", "PromptPair", "PromptPreset", "SaliencyRecord", "SamplingSettings", "UnlearningMask",
    "apply_mask", "architecture_of", "architectures", "build_prompt_pairs", "checks", "compute_saliency",
    "discover_layers", "errors", "factorised", "fuse_masks", "fusion", "index_codec", "inspection", "layers",
    "layers_of_patcher", "load_mask", "mask_io", "mask_schema", "masks", "masks_from", "memory",
    "merge_concept_masks", "method", "paper", "parse_concepts", "parse_lines", "parse_r2_overrides", "patching", "plms",
    "prompts", "read_metadata", "record", "recording", "request", "resolve_concepts", "resolve_preset", "saliency", "sampling", "save_mask",
    "select_sensitive_neurons", "selection", "statistics", "unlearning_mask",
]
