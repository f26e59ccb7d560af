"""Forgetting one concept while keeping its nearest neighbour, with and without `keep`.

    python -m toyworld.experiments.keep_report --probes 40 --out toyworld/experiments/reports/keep.json

For each (forget, keep) pair one saliency run records both concepts (shared base prompts); the
mask is fused once without and once with the neighbour kept, at each r2. The evaluator reads how
often the forgotten concept still shows (lower is better) and how often the kept one does on
prompts naming it (higher is better), against the base model on the same prompts and seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from fia_engine import apply_mask, masks_from

from ..common.forgetting import GENERATION, write_report
from ..common.loader import load_toyworld
from . import forgetting as fg

PAIRS = (("red", "orange"), ("circle", "ring"))
"""A colour and its nearest colour, a shape and the most similar shape."""


def measure(world, forget: str, keep: str, probes: int, ratios: list[float]) -> dict:
    forget_probes = fg.forget_probes(forget, probes, seed=11)
    keep_probes = fg.forget_probes(keep, probes, seed=12)

    def rates(patcher=None) -> dict:
        return {"forget_rate": fg.forget_rate(fg.generate(world, forget_probes, patcher), forget),
                "kept_shown": fg.forget_rate(fg.generate(world, keep_probes, patcher), keep)}

    record = fg.unlearn(world, [forget, keep]).record
    result = {"base": rates(), "runs": []}
    for r2 in ratios:
        settings = dataclasses.replace(fg.SETTINGS, r2=r2)
        for kept in ((), (keep,)):
            mask = masks_from(record, settings, keep=list(kept), forget=[forget]).mask
            result["runs"].append({"r2": r2, "keep": list(kept), "pruned_weights": mask.pruned_count,
                                   "weights_spared": mask.settings.keep.weights_spared if mask.settings.keep else 0,
                                   **rates(apply_mask(world.patcher, mask))})
            print(forget, keep, result["runs"][-1], flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probes", type=int, default=40, help="images per concept")
    parser.add_argument("--r2", type=float, nargs="+", default=[0.01, 0.1], help="r2 values (0.01 = the paper's)")
    parser.add_argument("--out", type=Path, default=Path("out/keep.json"))
    args = parser.parse_args()
    world = load_toyworld()
    start = time.perf_counter()
    report = {"model": world.world_version, "probes": args.probes, "settings": dataclasses.asdict(fg.SETTINGS),
              "generation": GENERATION,
              "pairs": {f"{f} / keep {k}": measure(world, f, k, args.probes, args.r2) for f, k in PAIRS}}
    write_report(args.out, report, start)


if __name__ == "__main__":
    main()
