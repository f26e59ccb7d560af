"""Input checks the nodes run before any heavy work, where the input alone decides the outcome,
and the warnings for results that would change nothing (no silent no-ops)."""

from __future__ import annotations

import logging
import math

from .errors import FIAInputError
from .masks import ConceptMasks, UnlearningMask

log = logging.getLogger("FIA")


def check_finite(name: str, value: float) -> None:
    """NaN compares False with everything, so it slips through checks written as `x < low or x > high`
    and turns the results into nothing; refused here, by name."""
    if not math.isfinite(value):
        raise FIAInputError(f"{name}: {value} is not a number. Enter a finite value (the default is a good start).")


def empty_selection_warning(masks: ConceptMasks) -> str:
    """'' when every concept selected weights; else a warning (also logged) naming those that did not."""
    empty = [concept for concept in masks.concepts if masks.count(concept) == 0]
    if not empty:
        return ""
    text = (f"FIA: {len(empty)} concept(s) selected no weights ({', '.join(c[:40] for c in empty[:10])}): their "
            "saliency shows no response above the base prompts. Check the saliency settings (cfg, steps, size) "
            "and the concept spelling, or raise r2.")
    log.warning(text)
    return text


def empty_mask_warning(mask: UnlearningMask) -> str:
    """'' when the mask prunes something; else a warning (also logged): applying it changes nothing."""
    if mask.pruned_count:
        return ""
    text = ("FIA: the mask prunes no weights, so the model is unchanged (every selected weight was kept as "
            "concept-agnostic, or nothing was selected). Lower alpha, use fusion 'union', or raise r2.")
    log.warning(text)
    return text
