"""The paper's layer ablation on ToyWorld: FIA on ff2 (its choice), ff1, cross-attention k/v and
self-attention k/v, one colour, one shape and one background forgotten at once.

    python -m toyworld.experiments.layer_ablation --out toyworld/experiments/reports/layer_ablation.json

Every kind gets the same saliency, selection and fusion at the paper's defaults (`forgetting.SETTINGS`),
recorded on its own layers' inputs. Per kind: forget rate per concept (the evaluator's reading of
images from prompts naming it; lower is better), preserve accuracy on prompts naming none of them,
the paper's harmonic overall score, and the pruned share of that kind's weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from fia_engine import apply_mask
from fia_engine.core.architectures import LAYER_KINDS

from ..common.forgetting import GENERATION, harmonic_overall, write_report
from ..common.loader import DEFAULT_WEIGHTS, load_toyworld
from . import forgetting as fg

CONCEPTS = ["red", "circle", "striped"]


def measure(world, probes: dict[str, list[fg.Probe]], preserve: list[fg.Probe], patcher=None) -> dict:
    forget = {c: fg.forget_rate(fg.generate(world, p, patcher), c) for c, p in probes.items()}
    accuracy = fg.attribute_accuracy(fg.generate(world, preserve, patcher), preserve)
    mean = sum(forget.values()) / len(forget)
    return {"forget_rate": mean, "forget_rate_per_concept": forget, "preserve_accuracy": accuracy["mean"],
            "preserve_accuracy_per_attribute": accuracy, "overall": harmonic_overall(mean, accuracy["mean"])}


def ablation(world, concepts: list[str], per_concept: int, preserve_count: int, kinds: tuple[str, ...]) -> dict:
    probes = {c: fg.forget_probes(c, per_concept, seed=100 + i) for i, c in enumerate(concepts)}
    preserve = fg.preserve_probes(concepts, preserve_count, seed=300)
    rows = {"base": measure(world, probes, preserve)}
    for kind in kinds:
        start = time.perf_counter()
        mask = fg.unlearn(world, concepts, dataclasses.replace(fg.SETTINGS, layer_kind=kind)).mask
        seconds = time.perf_counter() - start
        rows[kind] = measure(world, probes, preserve, apply_mask(world.patcher, mask)) | {
            "layers": len(mask.layers), "pruned_weights": mask.pruned_count, "weights": mask.total_weights,
            "pruned_share": mask.sparsity, "fia_seconds": round(seconds, 1),
        }
        print(kind, json.dumps(rows[kind]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-concept", type=int, default=40, help="images per forgotten concept")
    parser.add_argument("--preserve", type=int, default=120, help="images naming none of the concepts")
    parser.add_argument("--kinds", nargs="+", default=list(LAYER_KINDS), choices=LAYER_KINDS)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="the ToyWorld model")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("out/layer_ablation.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = load_toyworld(args.weights)
    start = time.perf_counter()
    report = {
        "model": {"file": args.weights.name, "world_version": world.world_version},
        "concepts": CONCEPTS, "per_concept": args.per_concept, "preserve": args.preserve,
        "settings": dataclasses.asdict(fg.SETTINGS), "generation": GENERATION,
        "rows": ablation(world, CONCEPTS, args.per_concept, args.preserve, tuple(args.kinds)),
    }
    write_report(args.out, report, start)


if __name__ == "__main__":
    main()
