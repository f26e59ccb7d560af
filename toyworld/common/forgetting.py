"""The forgetting protocol both worlds share: FIA run by the engine's own entry point on a loaded
model with the world's prompt pairs, measured images at the benchmarks' sampling, the paper's
overall score and the report file.

`unlearn` is one call of `fia_engine.unlearning_mask` (saliency, selection, fusion), so every
setting reaches the engine as the nodes pass it; to select again on its record at other values,
call `fia_engine.masks_from(result.record, settings)`. A world brings only what is its own: its
preset and its pairs (`PairsOf`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from fia_engine import MethodResult, MethodSettings, PromptPair, PromptPreset, unlearning_mask
from fia_engine.host.saliency import Progress

from .loader import ToyWorld

GENERATION = dict(steps=25, cfg=7.5, sampler="ddim", scheduler="normal")
"""How every measured image is sampled (the benchmarks' sampling)."""

PairsOf = Callable[[str, int, int], list[PromptPair]]
"""A world's prompt pairs: (concept, number of pairs, seed) -> pairs."""

READER_TOLERANCE = 0.10


def seed_of(preset: PromptPreset, settings: MethodSettings) -> int:
    """The seed the engine shuffles prompts and draws starting latents with, so pairs built
    outside it use the same one."""
    return preset.paper.seed if settings.seed is None else settings.seed


def unlearn(world: ToyWorld, concepts: list[str], preset: PromptPreset, pairs_of: PairsOf,
            settings: MethodSettings, progress: Progress | None = None) -> MethodResult:
    """Saliency -> selection -> fusion in the engine's one call, on the world's pairs; the model
    is not modified (`fia_engine.apply_mask(world.patcher, result.mask)` gives the unlearned one)."""
    seed = seed_of(preset, settings)
    return unlearning_mask(world.patcher, world.encode, concepts, preset, settings=settings, progress=progress,
                           pairs={c: pairs_of(c, settings.num_pairs, seed) for c in concepts})


def reader_disagreements(rates: dict[str, float], other: dict[str, float]) -> list[str]:
    """Concepts whose forget rates by two independent readers differ by more than 10 points:
    rates to check against the images before trusting either (`other` may cover fewer concepts)."""
    return [c for c, rate in other.items() if round(abs(rates[c] - rate), 9) > READER_TOLERANCE]


def harmonic_overall(forget: float, preserve: float) -> float:
    """The paper's Table 2 overall score: harmonic mean of (1 - forget rate) and preserve accuracy."""
    keep = 1.0 - forget
    return 0.0 if keep + preserve == 0 else 2 * keep * preserve / (keep + preserve)


def write_report(out: Path, report: dict, started: float) -> None:
    """A measurement's JSON with its wall time, to `out` (folders made)."""
    report["seconds"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
