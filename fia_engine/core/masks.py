"""The mask objects that travel between nodes (FIA_CONCEPT_MASKS, FIA_MASK) and their checks.

Masks are sorted flat indices into the full weight matrix: FIA prunes well under 1% of the FF
weights, so indices are far smaller than dense bools and exact. They are int32 (int64 only for a
layer of more than 2^31 weights): half the memory while many concepts wait to be fused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .architectures import PrunableLayer
from .errors import FIAInputError
from .record import RecordingProvenance

log = logging.getLogger("FIA")


def compact_indices(flat: torch.Tensor, numel: int) -> torch.Tensor:
    """Flat indices as int32 when the layer is small enough (every known layer is), else int64."""
    return flat.to(torch.int32 if numel <= torch.iinfo(torch.int32).max else torch.int64)


@dataclass(frozen=True)
class SelectionSettings:
    """How one concept's weights were selected (Eq.3-6)."""

    r1: float
    r2: float
    method: str  # fia or conceptprune
    form: str  # the record's Eq.1 form
    preset: str
    compatibility: str | dict  # a setting's name, or the rules' switches


@dataclass(frozen=True)
class KeptConcepts:
    """The concepts a fused mask preserves, and how many pruned weights keeping them spared."""

    concepts: tuple[str, ...]
    weights_spared: int


@dataclass(frozen=True)
class MaskSettings:
    """What a fused mask was made with (Eq.7-8 and, per concept, Eq.3-6 and the recording).

    Built by fusion and read by attribute; only the mask file code (mask_io.settings_json) turns it
    into the JSON a file states, so the algorithm does not depend on the file format.
    """

    alpha: float
    fusion: str
    agnostic_threshold: int | None  # None: union fusion
    compatibility: str | dict  # a setting's name, or the rules' switches
    per_concept: Mapping[str, SelectionSettings]
    recording: RecordingProvenance | None
    alpha_source: str | None = None  # where an automatic alpha came from; None when it was given
    keep: KeptConcepts | None = None


@dataclass(frozen=True)
class StatedSettings:
    """The settings a loaded mask file states: JSON that mask_schema bounded, kept as the file has it
    (a stranger's file, or one from another version, need not match MaskSettings), so saving the mask
    again writes the same bytes. Shown by the Inspector, never used by the method."""

    stated: Mapping


@dataclass
class ConceptMasks:
    """Eq.4-6 output: for every concept, the selected weights of every layer."""

    architecture: str
    layers: list[PrunableLayer]
    selected: dict[str, dict[str, torch.Tensor]]
    settings: dict[str, SelectionSettings]
    fingerprint: str
    recording: RecordingProvenance | None = None

    @property
    def concepts(self) -> list[str]:
        return list(self.selected)

    def count(self, concept: str) -> int:
        return sum(int(idx.numel()) for idx in self.selected[concept].values())

    def only(self, concepts: list[str]) -> ConceptMasks:
        """The same masks restricted to `concepts` (shares the index tensors)."""
        return ConceptMasks(self.architecture, self.layers, {c: self.selected[c] for c in concepts},
                            {c: self.settings[c] for c in concepts}, self.fingerprint, self.recording)


@dataclass
class UnlearningMask:
    """Eq.8 output: the weights to prune, plus the concept-agnostic ones that were kept."""

    architecture: str
    layers: list[PrunableLayer]
    pruned: dict[str, torch.Tensor]
    kept_agnostic: dict[str, torch.Tensor]
    concepts: list[str]
    settings: MaskSettings | StatedSettings
    fingerprint: str

    @property
    def pruned_count(self) -> int:
        return sum(int(idx.numel()) for idx in self.pruned.values())

    @property
    def total_weights(self) -> int:
        return sum(layer.out_features * layer.in_features for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return self.pruned_count / max(1, self.total_weights)

    def dense(self, key: str) -> torch.Tensor:
        """The pruned set of one layer as a bool matrix of the weight's shape."""
        layer = next(layer for layer in self.layers if layer.key == key)
        flat = torch.zeros(layer.out_features * layer.in_features, dtype=torch.bool)
        flat[self.pruned[key].long()] = True
        return flat.view(layer.shape)


def check_has_layers(what: str, layers: list[PrunableLayer]) -> None:
    """A mask with no layers names no layer kind and changes nothing. Loading refuses such a file,
    but the Python API can build one: refused by name, not with an IndexError."""
    if not layers:
        raise FIAInputError(f"{what}: it lists no layers, so it would change nothing. Use a mask computed on a "
                            "model (FIA Fuse Masks, FIA Unlearn or FIA Load Mask).")


def check_architecture(what: str, architecture: str, target_architecture: str, target_name: str = "model") -> None:
    if architecture != target_architecture:
        raise FIAInputError(
            f"{what}: it was computed for a {architecture} model but the {target_name} is {target_architecture}. "
            f"Compute a mask on a {target_architecture} model, or connect a {architecture} model."
        )


def check_layers_match(
    what: str, architecture: str, layers: list[PrunableLayer], target_architecture: str, target_layers: list[PrunableLayer],
    target_name: str = "model",
) -> None:
    """Refuses masks for another architecture or other layer shapes, with a message that says why."""
    check_architecture(what, architecture, target_architecture, target_name)
    target = {layer.key: layer.shape for layer in target_layers}
    missing = [layer.key for layer in layers if layer.key not in target]
    if missing:
        raise FIAInputError(
            f"{what}: {len(missing)} of its layers do not exist in the {target_name} (first: {missing[0]}). "
            "The mask was computed on a model with another block layout; recompute it on this model."
        )
    wrong = [(layer.key, layer.shape, target[layer.key]) for layer in layers if target[layer.key] != layer.shape]
    if wrong:
        key, have, want = wrong[0]
        raise FIAInputError(
            f"{what}: layer shapes differ from the {target_name}'s ({len(wrong)} layers; first {key}: "
            f"mask {list(have)} vs {target_name} {list(want)}). Recompute the mask on this model."
        )


def warn_if_other_weights(what: str, fingerprint: str, target_fingerprint: str) -> None:
    if fingerprint and target_fingerprint and fingerprint != target_fingerprint:
        log.warning(
            "FIA: %s was computed on other weights (fingerprint %s, this model %s): same architecture, "
            "probably another fine-tune. It applies, but may forget less or harm more.",
            what, fingerprint, target_fingerprint,
        )
