"""The whole method in one call: saliency (Eq.1-2) -> selection (Eq.3-6) -> fusion (Eq.7-8).

FIA Unlearn, ToyWorld and the benchmarks all run the method through `unlearning_mask`, so the
one-node path and every measured figure take the same steps with the same defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core import paper
from ..core.fusion import fuse_masks
from ..core.masks import ConceptMasks, UnlearningMask
from ..core.prompts import PromptPair, PromptPreset
from ..core.record import SaliencyRecord
from ..core.selection import select_sensitive_neurons
from .recording import SamplingSettings
from .saliency import Encoder, Progress, compute_saliency


@dataclass(frozen=True)
class MethodSettings:
    """Every choice after the concepts and their prompts; None or 0 = the task's paper value."""

    r1: float | None = None  # Eq.3 top fraction (paper 0.05)
    r2: float = 0.0  # Eq.4-5 fraction; 0 = the paper's per task and concept
    r2_overrides: dict[str, float] = field(default_factory=dict)  # concept -> r2
    alpha: float | None = None  # Eq.8 concept-agnostic ratio
    num_pairs: int = 0  # prompt pairs per concept; 0 = one per placeholder
    seed: int | None = None  # prompt shuffle and starting latent (paper 1244)
    form: str = "reference"  # Eq.1: reference (Wanda) or exact (with the cosine)
    method: str = "fia"  # or "conceptprune", for comparison
    fusion: str = "concept-agnostic"  # or "union"
    compatibility: str = "fixed"  # or "reference": the reference code's masks bit for bit
    layer_kind: str = "ff2"  # the paper's choice; ff1, cross-attn kv, self-attn kv for its ablation
    sampling: SamplingSettings = field(default_factory=SamplingSettings)


@dataclass(frozen=True)
class MethodResult:
    """Each stage's output, for callers that show or reuse them."""

    record: SaliencyRecord
    concept_masks: ConceptMasks
    mask: UnlearningMask


def unlearning_mask(
    patcher,
    encode: Encoder,
    concepts: list[str],
    preset: PromptPreset,
    *,
    settings: MethodSettings | None = None,
    progress: Progress | None = None,
    streams: tuple[str, ...] | None = None,
    pairs: dict[str, list[PromptPair]] | None = None,
    keep: list[str] = (),
) -> MethodResult:
    """Records, selects and fuses; the patcher is never modified (apply the mask with apply_mask).

    `keep`: concepts to preserve, recorded and selected exactly as the forgotten ones (one run,
    shared base prompts); no weight selected for them is pruned.
    """
    settings = settings or MethodSettings()
    seed = preset.paper.seed if settings.seed is None else settings.seed
    record = compute_saliency(
        patcher, encode, concepts, preset, keep=keep, num_pairs=settings.num_pairs, seed=seed,
        settings=settings.sampling, form=settings.form, progress=progress, streams=streams, pairs=pairs,
        layer_kind=settings.layer_kind,
    )
    return masks_from(record, settings)


def masks_from(
    record: SaliencyRecord, settings: MethodSettings, keep: list[str] | None = None, forget: list[str] | None = None
) -> MethodResult:
    """Selection and fusion on a finished recording (benchmarks compare several on one record):
    `keep` (default: the record's own) is preserved, `forget` (default: all the others) forgotten."""
    keep = record.keep if keep is None else keep
    task = paper.for_task(record.preset)
    r1 = task.r1 if settings.r1 is None else settings.r1
    selected = select_sensitive_neurons(
        record, r1=r1, r2=settings.r2, r2_overrides=dict(settings.r2_overrides), method=settings.method,
        compatibility=settings.compatibility,
    )
    forget = [c for c in record.concepts if c not in keep] if forget is None else list(forget)
    concept_masks = selected.only(forget)
    mask = fuse_masks([concept_masks], alpha=settings.alpha or 0.0, mode=settings.fusion,
                      compatibility=settings.compatibility, keep=[selected.only(list(keep))] if keep else None)
    return MethodResult(record, concept_masks, mask)

