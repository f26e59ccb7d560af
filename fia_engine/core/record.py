"""The FIA_SALIENCY object: what recording hands to selection (Eq.2-6 need nothing else)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import prompts as prompt_lib
from .architectures import PrunableLayer
from .sampling import SamplingSettings
from .statistics import Moments


@dataclass(frozen=True)
class RecordingProvenance:
    """How a record was made: what a mask file states so the run can be repeated."""

    sampling: SamplingSettings  # with the width and height actually sampled
    form: str  # Eq.1: reference or exact
    preset: str
    num_pairs: int
    seed: int
    weight_patches: int  # patches (LoRAs, ...) on the analysed layers while recording


@dataclass
class SaliencyRecord:
    """Everything Eq.2-6 need, and what is needed to reproduce the run.

    concept_moments[c][key]: mean over concept c's prompts, [T, C] (reference) or [T, C_out, C]
    base_moments[b][key]:    mean and population std over base set b's prompts
    abs_weights[key]:        |W| of the neuron columns as sampled (patches such as LoRAs applied), model dtype, on the CPU
    """

    architecture: str
    layers: list[PrunableLayer]
    form: str
    preset: str
    concepts: list[str]
    concept_moments: dict[str, dict[str, Moments]]
    base_moments: dict[str, dict[str, Moments]]
    concept_base: dict[str, str]
    abs_weights: dict[str, torch.Tensor]
    prompts: dict[str, list[prompt_lib.PromptPair]]
    provenance: RecordingProvenance
    fingerprint: str
    unet_calls: int = 0
    extra: dict = field(default_factory=dict)
    device: str | None = None  # where the model's weights were: selection runs there (statistics wait on the CPU)
    keep: list[str] = field(default_factory=list)  # the concepts (of `concepts`) recorded to be preserved

    @property
    def forget(self) -> list[str]:
        return [c for c in self.concepts if c not in self.keep]

    @property
    def recorded_steps(self) -> int:
        return self.provenance.sampling.recorded_steps

    def state_bytes_per_concept(self) -> int:
        """Bytes of statistics one concept adds (its concept means; base sets are shared)."""
        first = self.concepts[0]
        return sum(m.nbytes() for m in self.concept_moments[first].values())
