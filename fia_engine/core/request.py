"""What a user asks for, resolved in one place: the concept lists and the per-concept paper values.

FIA Unlearn and the five-node chain reach the engine through the same entries (compute_saliency,
select_sensitive_neurons, fuse_masks), and those resolve a request here: the concept lists checked
once (not empty, none twice, none both forgotten and kept, no template slot), a concept's case
folded by `concept_key` alone, and r2 = 0 turned into the paper's value by `resolve_r2` alone.
The other "0 = the paper's value" settings resolve where their input first meets the data they
depend on: alpha in fusion.paper_alpha (the concepts' tasks), cfg in the recording (the model family).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from . import paper
from .errors import FIAInputError
from .prompts import CONCEPT_SLOT, PLACEHOLDER_SLOT, parse_lines


def concept_key(concept: str) -> str:
    """Concepts compare without case: 'Van Gogh' and 'van gogh' are one concept, and the paper's
    per-concept values and r2 overrides are looked up by this key."""
    return concept.lower()


@dataclass(frozen=True)
class ConceptRequest:
    """The concepts to forget and those to keep, checked (resolve_concepts)."""

    forget: tuple[str, ...]
    keep: tuple[str, ...] = ()

    @property
    def recorded(self) -> list[str]:
        """Every concept a saliency run records: the forgotten ones, then the kept ones."""
        return [*self.forget, *self.keep]


def resolve_concepts(forget: Sequence[str], keep: Sequence[str] = ()) -> ConceptRequest:
    """Every check on the concept lists, each once, before any model runs."""
    if not forget:
        raise FIAInputError("concepts: the list is empty. Write the concepts to forget, one per line.")
    _check_unique("concepts", forget)
    _check_unique("keep", keep)
    check_concept_names([*forget, *keep])
    check_forgotten_not_kept(forget, keep)
    return ConceptRequest(tuple(forget), tuple(keep))


def parse_concepts(text: str) -> list[str]:
    """A node's concepts text (one per line, '#' comments) as a checked list."""
    return list(resolve_concepts(parse_lines(text)).forget)


def _check_unique(what: str, concepts: Iterable[str]) -> None:
    seen: set[str] = set()
    for concept in concepts:
        if concept_key(concept) in seen:
            raise FIAInputError(f"{what}: '{concept}' is listed twice. Keep each concept once.")
        seen.add(concept_key(concept))


def check_concept_names(concepts: Iterable[str]) -> None:
    """A concept containing a template slot would be filled in like one: '{placeholder}' becomes
    a place or an object in every prompt, silently."""
    for concept in concepts:
        for slot in (CONCEPT_SLOT, PLACEHOLDER_SLOT):
            if slot in concept:
                raise FIAInputError(
                    f"concepts: '{concept[:80]}' contains the template slot {slot}, which would be replaced in "
                    "every prompt. Write the concept without curly braces."
                )


def check_forgotten_not_kept(forget: Iterable[str], keep: Iterable[str]) -> None:
    both = {concept_key(c) for c in forget} & {concept_key(c) for c in keep}
    if both:
        raise FIAInputError(
            f"keep: {', '.join(sorted(both))} is both forgotten and kept. Remove it from one of the two lists."
        )


def resolve_r2(concept: str, task: str, r2: float, overrides: Mapping[str, float]) -> float:
    """Per-concept r2: its override, else the given r2, else (r2 == 0) the paper's value for the task
    and concept. `overrides` are keyed by concept_key."""
    key = concept_key(concept)
    if key in overrides:
        return overrides[key]
    return r2 if r2 > 0 else paper.for_task(task).r2_for(key)


def parse_r2_overrides(text: str, concepts: list[str]) -> dict[str, float]:
    """Lines like 'Van Gogh: 0.03' -> {'van gogh': 0.03}; unknown concepts are an error."""
    known = {concept_key(c) for c in concepts}
    overrides: dict[str, float] = {}
    for line in parse_lines(text):
        name, sep, value = line.rpartition(":")
        name = name.strip()
        try:
            ratio = float(value)
        except ValueError:
            ratio = -1.0
        if not sep or not name or not 0.0 < ratio <= 1.0:
            raise FIAInputError(
                f"r2_overrides: cannot read '{line}'. Write one 'concept: ratio' per line with "
                "0 < ratio <= 1, e.g. 'Van Gogh: 0.03'."
            )
        if concept_key(name) not in known:
            raise FIAInputError(
                f"r2_overrides: '{name}' is not one of the concepts of this saliency run "
                f"({', '.join(concepts)})."
            )
        overrides[concept_key(name)] = ratio
    return overrides
