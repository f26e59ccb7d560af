"""The paper's values, in one place: Table 8 and the reference code's configs, per task.

Nodes take their defaults and tooltips from here, the engine its fallbacks; nothing restates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaperSettings:
    """How the paper runs one task."""

    r1: float = 0.05  # Eq.3: top fraction of S[t] counted as sensitive at each step
    r2: float = 0.01  # Eq.4-5: fraction selected per output row and per layer
    r2_per_concept: dict[str, float] = field(default_factory=dict)  # hard concepts
    alpha: float = 0.6  # Eq.8: a weight in >= ceil(alpha * C) concept masks is concept-agnostic
    steps: int = 50  # the sampling schedule the recorded calls come from
    recorded_steps: int = 10  # T: early UNet calls recorded
    cfg: float = 7.5  # guidance while recording (SD1.x, the reference's pipeline default)
    seed: int = 1244  # the prompt shuffle and the one starting latent

    def r2_for(self, key: str) -> float:
        """The paper's r2 for a concept, by its request.concept_key (r2_per_concept is keyed so)."""
        return self.r2_per_concept.get(key, self.r2)


GENERAL = PaperSettings()
"""What a task without its own row (a custom preset) uses."""

TASKS: dict[str, PaperSettings] = {
    "objects": PaperSettings(
        r2=0.007, r2_per_concept={"parachute": 0.03, "golf ball": 0.03, "gas pump": 0.03}
    ),
    "explicit": PaperSettings(r2=0.01),
    "art": PaperSettings(r2=0.02, alpha=0.8, r2_per_concept={"van gogh": 0.03}),
}


def for_task(name: str) -> PaperSettings:
    return TASKS.get(name, GENERAL)


def describe(value: str) -> str:
    """'objects 0.007 (0.03 for parachute, golf ball, gas pump), explicit 0.01, art 0.02 (...)' for tooltips."""
    parts = []
    for name, task in TASKS.items():
        text = f"{name} {getattr(task, value)}"
        if value == "r2" and task.r2_per_concept:
            ratios = sorted(set(task.r2_per_concept.values()))
            text += " (" + "; ".join(
                f"{r} for {', '.join(c for c, v in task.r2_per_concept.items() if v == r)}" for r in ratios
            ) + ")"
        parts.append(text)
    return ", ".join(parts)
