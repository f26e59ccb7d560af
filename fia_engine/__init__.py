"""Forget-It-All (FIA) multi-concept unlearning for ComfyUI models: the engine.

Equations of the paper and where they live:
  Eq.1-2  statistics.py  per-prompt saliency, concept-vs-base contrast
  Eq.3-6  selection.py   time-integrated sensitivity, row-and-layer top-k
  Eq.7-8  fusion.py      concept counts, concept-agnostic threshold
The whole method in one call: method.py (`unlearning_mask`). The paper's values: paper.py.
The ComfyUI side: recording.py (activations during sampling), patching.py (masks as patches).
"""

from . import index_codec, paper
from .errors import FIAInputError
from .layers import ARCHITECTURES, FFLayer, architecture_of, discover_ff_layers, layers_of_patcher
from .mask_io import load_mask, read_metadata, save_mask
from .masks import ConceptMasks, UnlearningMask
from .method import MethodResult, MethodSettings, masks_from, unlearning_mask
from .patching import apply_mask
from .pipeline import fuse_masks, merge_concept_masks, select_sensitive_neurons
from .prompts import (
    PRESET_NAMES,
    PRESETS,
    PromptPair,
    PromptPreset,
    build_prompt_pairs,
    parse_concepts,
    parse_r2_overrides,
    resolve_preset,
)
from .recording import SamplingSettings
from .saliency import SaliencyRecord, compute_saliency

__all__ = [
    "ARCHITECTURES", "index_codec", "paper", "ConceptMasks", "FFLayer", "FIAInputError", "PRESETS", "PRESET_NAMES", "PromptPair",
    "PromptPreset", "SaliencyRecord",
    "SamplingSettings", "UnlearningMask", "apply_mask", "architecture_of", "build_prompt_pairs",
    "compute_saliency", "discover_ff_layers", "fuse_masks", "layers_of_patcher", "load_mask",
    "merge_concept_masks", "parse_concepts", "parse_r2_overrides", "read_metadata", "resolve_preset",
    "save_mask", "select_sensitive_neurons", "MethodResult", "MethodSettings", "masks_from", "unlearning_mask",
]
