"""How prompts are sampled while recording: plain settings, shared by the recording and the records."""

from __future__ import annotations

from dataclasses import dataclass

from . import paper

COND, UNCOND = 0, 1


SCHEDULES = ("reference", "sampler")
"""reference: the reference code's PNDM calls (SD1.x/SD2.x; other families fall back to the sampler).
sampler: sampler_name and scheduler."""
REFERENCE_SCHEDULE_FAMILIES = ("SD1.x", "SD2.x")


@dataclass(frozen=True)
class SamplingSettings:
    """How prompts are sampled while recording; defaults follow the paper (50 steps, T = 10, cfg 7.5)."""

    steps: int = paper.GENERAL.steps
    recorded_steps: int = paper.GENERAL.recorded_steps
    cfg: float = paper.GENERAL.cfg
    sampler_name: str = "euler"
    scheduler: str = "normal"
    width: int = 0
    height: int = 0
    prompts_per_batch: int = 4
    pool_uncond: bool = True
    schedule: str = "reference"
    noise: str = "shared"

    def chunks_per_evaluation(self) -> frozenset[int]:
        """ComfyUI skips the uncond pass when cfg == 1."""
        return frozenset({COND}) if abs(self.cfg - 1.0) < 1e-9 else frozenset({COND, UNCOND})
