"""`make bench-efficacy`: the paper's forgetting protocol in miniature, on ToyWorld.

For 3 and for 6 concepts forgotten at once (mixed colours, shapes, backgrounds): forget rate per
concept (images from prompts naming it that still show it; lower is better), preserve accuracy on
prompts naming none of them, the paper's harmonic overall score, the mean pixel change on those
preserve images against the base model with the same seeds, and the forget rate when each
forgotten word is replaced by its synonym (never used for saliency). Rows: base model, FIA
(reference Eq.1), FIA with the exact Eq.1, plain-union fusion, ConceptPrune-style selection, and
an r2/alpha sweep for 3 concepts. Writes out/bench/efficacy.json and out/bench/efficacy.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import common

common.setup()

import torch  # noqa: E402

from fia_engine import apply_mask  # noqa: E402
from toyworld import forgetting as fg  # noqa: E402
from toyworld.loader import load_toyworld  # noqa: E402

CONCEPT_SETS = {3: ["red", "circle", "striped"], 6: ["red", "blue", "circle", "triangle", "striped", "dotted"]}
CONFIGS = {
    "FIA (reference Eq.1)": {},
    "FIA (exact Eq.1)": {"form": "exact"},
    "plain-union fusion": {"fusion": "union"},
    "ConceptPrune-style selection": {"method": "conceptprune"},
}


class Probes:
    """Fixed prompts and seeds for one concept set, and the base model's images for them."""

    def __init__(self, world, concepts: list[str], per_concept: int, preserve: int):
        self.world, self.concepts = world, concepts
        self.forget = {c: fg.forget_probes(c, per_concept, seed=100 + i) for i, c in enumerate(concepts)}
        self.synonym = {c: fg.forget_probes(c, per_concept, seed=100 + i, synonym=True)
                        for i, c in enumerate(concepts) if c in fg.SYNONYMS}
        self.preserve = fg.preserve_probes(concepts, preserve, seed=300)
        self.base_preserve_images = fg.generate(world, self.preserve)

    def measure(self, patcher=None) -> dict:
        forget = {c: fg.forget_rate(fg.generate(self.world, p, patcher), c) for c, p in self.forget.items()}
        synonym = {c: fg.forget_rate(fg.generate(self.world, p, patcher), c) for c, p in self.synonym.items()}
        images = self.base_preserve_images if patcher is None else fg.generate(self.world, self.preserve, patcher)
        accuracy = fg.attribute_accuracy(images, self.preserve)
        forget_mean = sum(forget.values()) / len(forget)
        return {
            "forget_rate": forget_mean, "forget_rate_per_concept": forget,
            "synonym_forget_rate": sum(synonym.values()) / max(1, len(synonym)),
            "synonym_forget_rate_per_concept": synonym,
            "preserve_accuracy": accuracy["mean"], "preserve_accuracy_per_attribute": accuracy,
            "overall": fg.harmonic_overall(forget_mean, accuracy["mean"]),
            "preserve_pixel_change": float((images - self.base_preserve_images).abs().mean()),
        }


def per_layer_share(masks, concepts) -> dict:
    """Which layers carry which concept: the share of each concept's selected weights per layer."""
    return {c: {layer.module_path: int(masks.selected[c][layer.key].numel()) for layer in masks.layers}
            for c in concepts}


def run_set(world, concepts: list[str], args, sweep: bool, save) -> dict:
    probes = Probes(world, concepts, args.per_concept, args.preserve)
    result = {"concepts": concepts, "base": probes.measure()}
    save(result)
    result["base"]["attribute_accuracy"] = result["base"]["preserve_accuracy_per_attribute"]
    records = {}
    configs = dict(CONFIGS)
    if sweep:
        configs |= {f"FIA r2={r2}": {"r2": r2} for r2 in (0.003, 0.03, 0.1)}
        configs |= {f"FIA alpha={alpha}": {"alpha": alpha} for alpha in (1.0,)}
    for name, overrides in configs.items():
        settings = dataclasses.replace(fg.SETTINGS, num_pairs=args.pairs, **overrides)
        started = time.perf_counter()
        if settings.form not in records:
            records[settings.form] = fg.saliency(world, concepts, settings)
        masks, mask = fg.mask_from(records[settings.form], settings)
        seconds = time.perf_counter() - started
        row = probes.measure(apply_mask(world.patcher, mask))
        row |= {"concepts": concepts, "settings": dataclasses.asdict(settings),
                "pruned_weights": mask.pruned_count, "sparsity": mask.sparsity, "fia_seconds": seconds,
                "selected_per_layer": per_layer_share(masks, concepts)}
        result[name] = row
        save(result)
        print(f"{len(concepts)} concepts | {name}: forget {row['forget_rate']:.3f} synonym "
              f"{row['synonym_forget_rate']:.3f} preserve {row['preserve_accuracy']:.3f} "
              f"(base {result['base']['preserve_accuracy']:.3f}) pixel {row['preserve_pixel_change']:.4f}", flush=True)
    return result


def table(result: dict) -> list[tuple[str, str, str]]:
    rows = []
    for size in ("3", "6"):
        block = result.get(size, {})
        if "base" not in block:
            continue
        base = block["base"]
        for name, row in block.items():
            if not isinstance(row, dict) or "forget_rate" not in row:
                continue
            ratio = row["preserve_accuracy"] / max(base["preserve_accuracy"], 1e-9)
            rows.append((f"{size} concepts: {name}",
                         f"forget {row['forget_rate']:.1%}, synonym {row['synonym_forget_rate']:.1%}, "
                         f"preserve {row['preserve_accuracy']:.1%} ({ratio:.1%} of base), overall "
                         f"{row['overall']:.1%}, pixel change {row['preserve_pixel_change']:.4f}",
                         "forget <= 10%, preserve >= 95% of base, synonym <= 20% (3 concepts, FIA default)"
                         if size == "3" and name == "FIA (reference Eq.1)" else ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-concept", type=int, default=40, help="images per forgotten concept")
    parser.add_argument("--preserve", type=int, default=120, help="images on prompts naming no forgotten concept")
    parser.add_argument("--pairs", type=int, default=30, help="prompt pairs per concept for saliency")
    parser.add_argument("--sets", type=int, nargs="+", default=sorted(CONCEPT_SETS), choices=sorted(CONCEPT_SETS),
                        help="which concept-set sizes to run")
    parser.add_argument("--keep", action="store_true",
                        help="keep the other sets' results already in out/bench/efficacy.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    world = load_toyworld()
    result = {"machine": common.machine(), "protocol": vars(args) | {"generation": fg.GENERATION}}
    previous = common.OUT / "efficacy.json"
    if args.keep and previous.exists():
        kept = json.loads(previous.read_text())
        result |= {size: kept[size] for size in map(str, CONCEPT_SETS) if size in kept and int(size) not in args.sets}
    def save(partial: dict, size: int | None = None) -> Path:
        """Writes what is measured so far, so a long run that is stopped still reports."""
        if size is not None:
            result[str(size)] = partial
        result["base"] = result.get("3", {}).get("base", {})
        return common.write("efficacy", result, table(result), "FIA efficacy on ToyWorld")

    for size in args.sets:
        result[str(size)] = run_set(world, CONCEPT_SETS[size], args, sweep=size == 3,
                                    save=lambda partial, size=size: save(partial, size))
    path = save(result[str(args.sets[-1])], args.sets[-1])
    print(path.read_text())


if __name__ == "__main__":
    main()
