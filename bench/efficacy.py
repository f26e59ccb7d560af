"""`make bench-efficacy`: the paper's forgetting protocol in miniature, on ToyWorld.

For 3 and for 6 concepts forgotten at once (mixed colours, shapes, backgrounds): forget rate per
concept (images from prompts naming it that still show it; lower is better), preserve accuracy on
prompts naming none of them, the paper's harmonic overall score, the mean pixel change on those
preserve images against the base model with the same seeds, and the forget rate when each
forgotten word is replaced by its synonym (never used for saliency). Rows: base model, FIA
(reference Eq.1), FIA with the exact Eq.1, plain-union fusion, ConceptPrune-style selection, and
an r2/alpha sweep for 3 concepts. Every forget rate of a colour is read twice, by the evaluator
and by the training-free colour rule (`toyworld.shapes.colour_rule`, `*_rule`), and `reader_disagreements`
names the colours where the two differ by more than 10 points; the base row adds the evaluator's
accuracy per value. Writes out/bench/efficacy.json and out/bench/efficacy.md.
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

from fia_engine import apply_mask, masks_from  # noqa: E402
from toyworld.common.forgetting import GENERATION, harmonic_overall  # noqa: E402
from toyworld.common.loader import DEFAULT_WEIGHTS, load_toyworld  # noqa: E402
from toyworld.experiments import forgetting as fg  # noqa: E402

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
        self.base_forget_images = self.images(self.forget)
        self.base_preserve_images = fg.generate(world, self.preserve)

    def images(self, groups: dict[str, list[fg.Probe]], patcher=None) -> dict[str, torch.Tensor]:
        return {c: fg.generate(self.world, p, patcher) for c, p in groups.items()}

    def measure(self, patcher=None) -> dict:
        """One configuration's row; every forget rate of a colour is also read by the colour rule."""
        base = patcher is None
        forget = fg.read_forget_rates(self.base_forget_images if base else self.images(self.forget, patcher))
        synonym = fg.read_forget_rates(self.images(self.synonym, patcher))
        images = self.base_preserve_images if base else fg.generate(self.world, self.preserve, patcher)
        accuracy = fg.attribute_accuracy(images, self.preserve)
        forget_mean = mean(forget["forget_rate_per_concept"])
        return {
            "forget_rate": forget_mean, **forget,
            "synonym_forget_rate": mean(synonym["forget_rate_per_concept"]),
            "synonym_forget_rate_per_concept": synonym["forget_rate_per_concept"],
            "synonym_forget_rate_per_concept_rule": synonym["forget_rate_per_concept_rule"],
            "synonym_reader_disagreements": synonym["reader_disagreements"],
            "preserve_accuracy": accuracy["mean"], "preserve_accuracy_per_attribute": accuracy,
            "overall": harmonic_overall(forget_mean, accuracy["mean"]),
            "preserve_pixel_change": float((images - self.base_preserve_images).abs().mean()),
        }

    def base_accuracy_per_value(self) -> dict[str, dict[str, float]]:
        """The base model's accuracy per value over all its images (forget and preserve probes),
        so the forgotten concepts, which no preserve prompt names, have a rate too."""
        probes = [p for group in self.forget.values() for p in group] + self.preserve
        images = torch.cat([*self.base_forget_images.values(), self.base_preserve_images])
        return fg.attribute_accuracy_per_value(images, probes)


def mean(rates: dict[str, float]) -> float:
    return sum(rates.values()) / max(1, len(rates))


def per_layer_share(masks, concepts) -> dict:
    """Which layers carry which concept: the share of each concept's selected weights per layer."""
    return {c: {layer.module_path: int(masks.selected[c][layer.key].numel()) for layer in masks.layers}
            for c in concepts}


def configs_for(size: int) -> dict[str, dict]:
    """CONFIGS, and for 3 concepts an r2/alpha sweep."""
    configs = dict(CONFIGS)
    if size == 3:
        configs |= {f"FIA r2={r2}": {"r2": r2} for r2 in (0.003, 0.03, 0.1)}
        configs |= {f"FIA alpha={alpha}": {"alpha": alpha} for alpha in (1.0,)}
    return configs


def run_set(world, concepts: list[str], args, configs: dict[str, dict], save) -> dict:
    probes = Probes(world, concepts, args.per_concept, args.preserve)
    result = {"concepts": concepts, "base": probes.measure()}
    result["base"]["attribute_accuracy"] = result["base"]["preserve_accuracy_per_attribute"]
    result["base"]["attribute_accuracy_per_value"] = probes.base_accuracy_per_value()
    save(result)
    records = {}
    for name, overrides in configs.items():
        settings = dataclasses.replace(fg.SETTINGS, num_pairs=args.pairs, **overrides)
        started = time.perf_counter()
        if settings.form not in records:
            records[settings.form] = fg.unlearn(world, concepts, settings).record
        selected = masks_from(records[settings.form], settings)
        masks, mask = selected.concept_masks, selected.mask
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
                         f"{row['overall']:.1%}, pixel change {row['preserve_pixel_change']:.4f}"
                         + "".join(f", readers differ on {c}" for c in row.get("reader_disagreements", [])),
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
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="ToyWorld model (the loader's default)")
    parser.add_argument("--quick", action="store_true",
                        help="3 concepts, the default FIA row, 2 images each, 2 pairs: checks the bench itself")
    args = parser.parse_args()
    if args.quick:
        args.per_concept, args.preserve, args.pairs, args.sets = 2, 2, 2, [3]
    torch.manual_seed(0)
    world = load_toyworld(args.weights)
    result = {"machine": common.machine(), "protocol": vars(args) | {"generation": GENERATION}}
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
        configs = {"FIA (reference Eq.1)": {}} if args.quick else configs_for(size)
        result[str(size)] = run_set(world, CONCEPT_SETS[size], args, configs,
                                    save=lambda partial, size=size: save(partial, size))
    path = save(result[str(args.sets[-1])], args.sets[-1])
    print(path.read_text())


if __name__ == "__main__":
    main()
