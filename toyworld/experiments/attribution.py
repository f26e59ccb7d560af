"""Which layers carry which ToyWorld concept: knock layers out and read the images.

    python -m toyworld.experiments.attribution --concepts red circle striped --probes 16

For each concept, prompts naming it are sampled with the base model, with one layer group
zeroed at a time (every `ff.net.2` alone, all of them, every cross-attention value projection
`attn2.to_v`) and with FIA's single-concept mask at a few r2 values; the evaluator reads how
often the concept still shows and how often the prompt's other two attributes still match.
FIA can only forget what its layers carry: a concept that survives zeroing every `ff.net.2`
cannot be forgotten by pruning a few of their weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from fia_engine import apply_mask, layers_of_patcher, masks_from

from ..common.forgetting import GENERATION
from ..common.loader import load_toyworld
from ..shapes.evaluator import classify
from . import forgetting as fg


def zeroed(patcher, keys: list[str]):
    """A clone whose listed weights read as zeros (weight wrappers: the shared model is untouched)."""
    model = patcher.clone()
    for key in keys:
        model.add_weight_wrapper(key, torch.zeros_like)
    return model


def knockouts(patcher, single_layers: bool = True) -> dict[str, list[str]]:
    _, ff_layers = layers_of_patcher(patcher)
    ff_keys = [layer.key for layer in ff_layers]
    value_keys = [key.replace("ff.net.2", "attn2.to_v") for key in ff_keys]
    groups = {"none (base model)": [], "all ff.net.2": ff_keys, "all attn2.to_v": value_keys}
    if not single_layers:
        return groups
    groups |= {key.removeprefix("diffusion_model.").removesuffix(".weight"): [key] for key in ff_keys}
    return groups


def readout(images: torch.Tensor, probes: list[fg.Probe], concept: str) -> dict[str, float]:
    """Concept still shown (lower = forgotten) and the other two attributes still right."""
    slot = fg.ATTRIBUTE_INDEX[fg.kind_of(concept)]
    predicted = classify(images)
    others = [i for i in range(3) if i != slot]
    return {
        "concept_rate": sum(p[slot] == concept for p in predicted) / len(probes),
        "other_attributes": sum(p[i] == probe.label[i] for p, probe in zip(predicted, probes) for i in others)
        / (2 * len(probes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["red", "circle", "striped"])
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--out", type=Path, default=Path("out/attribution.json"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-single-layers", action="store_true", help="only the base and the all-layer knock-outs")
    parser.add_argument("--r2", type=float, nargs="*", default=[0.01, 0.03, 0.1], help="FIA rows (single concept)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = load_toyworld(args.weights) if args.weights else load_toyworld()
    groups = knockouts(world.patcher, single_layers=not args.no_single_layers)
    result = {"settings": {"probes": args.probes, **GENERATION}, "concepts": {}}
    for i, concept in enumerate(args.concepts):
        probes = fg.forget_probes(concept, args.probes, seed=500 + i)
        rows = {}
        candidates = {name: zeroed(world.patcher, keys) for name, keys in groups.items()}
        if args.r2:
            record = fg.unlearn(world, [concept]).record
            for r2 in args.r2:
                mask = masks_from(record, dataclasses.replace(fg.SETTINGS, r2=r2)).mask
                candidates[f"FIA r2={r2} ({mask.sparsity:.2%} pruned)"] = apply_mask(world.patcher, mask)
        for name, patcher in candidates.items():
            rows[name] = readout(fg.generate(world, probes, patcher), probes, concept)
            print(f"{concept:10s} {name:45s} {rows[name]['concept_rate']:.3f} {rows[name]['other_attributes']:.3f}",
                  flush=True)
        result["concepts"][concept] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
