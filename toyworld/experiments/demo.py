"""`make shapes-demo`: forget a colour, a shape and a background from ToyWorld at once, and show it.

Writes to out/shapes_demo/: grid.png (same prompts and seeds before and after), mask.safetensors,
report.md and report.json (forget and preserve rates read by the evaluator, a colour's forget rate
also by the training-free colour rule).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from fia_engine import apply_mask, save_mask
from fia_engine.core.architectures import LAYER_KINDS

from ..common.loader import DEFAULT_WEIGHTS, load_toyworld
from . import forgetting as fg

CONCEPTS = ["red", "circle", "striped"]
TILE = 96


def tile(image: torch.Tensor) -> Image.Image:
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels).resize((TILE, TILE), Image.NEAREST)


def draw_grid(rows: list[tuple[str, list[fg.Probe]]], before: torch.Tensor, after: torch.Tensor) -> Image.Image:
    """One row per group; left half before, right half after, each tile captioned with its prompt."""
    per_row = len(rows[0][1])
    label_w, caption_h, gap = 150, 28, 24
    width = label_w + 2 * per_row * TILE + gap
    height = 40 + len(rows) * (TILE + caption_h)
    canvas = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(canvas)
    pen.text((label_w, 10), "before (ToyWorld)", fill="black")
    pen.text((label_w + per_row * TILE + gap, 10), f"after FIA: forget {', '.join(CONCEPTS)}", fill="black")
    index = 0
    for r, (title, probes) in enumerate(rows):
        y = 40 + r * (TILE + caption_h)
        pen.text((6, y + TILE // 2 - 6), title, fill="black")
        for c, probe in enumerate(probes):
            for half, images in enumerate((before, after)):
                x = label_w + half * (per_row * TILE + gap) + c * TILE
                canvas.paste(tile(images[index]), (x, y))
                words = probe.prompt.removeprefix("a ").replace(" background", "").split(" on a ")
                pen.text((x + 2, y + TILE + 2), words[0][:16], fill="black")
                pen.text((x + 2, y + TILE + 13), ("on " + words[1])[:16] if len(words) > 1 else "", fill="gray")
            index += 1
    return canvas


def rates(world, unlearned, concepts: list[str], per_concept: int) -> dict:
    """report.json's rates, before (base model) and after (`unlearned`): forget rate per concept by
    the evaluator and, for a colour, by the colour rule (`colour_rule`) with the colours where the
    two differ by more than 10 points; preserve accuracy on `2 * per_concept` prompts naming none
    of them; and the base model's attribute accuracy, per attribute (preserve prompts) and per
    value (all its images, so the forgotten concepts have a rate too)."""
    forget = {c: fg.forget_probes(c, per_concept, seed=100 + i) for i, c in enumerate(concepts)}
    keep = fg.preserve_probes(concepts, 2 * per_concept, seed=200)
    read, accuracy, base_images = {}, {}, []
    for when, patcher in (("before", None), ("after", unlearned)):
        forget_images = {c: fg.generate(world, p, patcher) for c, p in forget.items()}
        keep_images = fg.generate(world, keep, patcher)
        read[when] = fg.read_forget_rates(forget_images)
        accuracy[when] = fg.attribute_accuracy(keep_images, keep)
        base_images = base_images or [*forget_images.values(), keep_images]
    every_probe = [p for group in forget.values() for p in group] + keep
    return {
        "forget_rate": {c: {w: read[w]["forget_rate_per_concept"][c] for w in read} for c in concepts},
        "forget_rate_per_concept_rule": {w: read[w]["forget_rate_per_concept_rule"] for w in read},
        "reader_disagreements": {w: read[w]["reader_disagreements"] for w in read},
        "preserve_accuracy": {w: accuracy[w]["mean"] for w in read},
        "base": {"attribute_accuracy": accuracy["before"],
                 "attribute_accuracy_per_value": fg.attribute_accuracy_per_value(torch.cat(base_images), every_probe)},
    }


def verdict(forget_rate: dict[str, dict[str, float]]) -> str:
    """One plain sentence on what the mask did, from the measured rates."""
    gone = [c for c, r in forget_rate.items() if r["after"] <= 0.1]
    kept = [c for c, r in forget_rate.items() if r["after"] >= r["before"] - 0.2]
    if len(gone) == len(forget_rate):
        return f"Forgotten: {', '.join(gone)} show in at most 10% of the images prompted for them."
    if len(kept) == len(forget_rate):
        return ("Not forgotten: every concept shows nearly as often as before. On ToyWorld, FIA at these settings "
                "does not forget; docs/evaluation.md ('Why') shows what the pruned layers carry.")
    return ("Partly forgotten: " + ", ".join(f"{c} {r['before']:.0%} -> {r['after']:.0%}" for c, r in forget_rate.items())
            + " (see docs/evaluation.md).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out/shapes_demo")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="ToyWorld model (the loader's default)")
    parser.add_argument("--probes", type=int, default=40, help="images per concept for the rates")
    parser.add_argument("--r2", type=float, default=0.0, help="Eq.4-5 fraction; 0 = the paper's (0.01)")
    parser.add_argument("--layers", default="ff2", choices=LAYER_KINDS,
                        help="layer kind (the paper's ablation); ff2 is the paper's choice")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    world = load_toyworld(args.weights)
    started = time.perf_counter()
    settings = dataclasses.replace(fg.SETTINGS, r2=args.r2, layer_kind=args.layers)
    mask = fg.unlearn(world, CONCEPTS, settings).mask
    made = mask.settings
    r2 = made.per_concept[CONCEPTS[0]].r2
    seconds = time.perf_counter() - started
    unlearned = apply_mask(world.patcher, mask)
    save_mask(mask, out / "mask.safetensors")

    grid_rows = [(f"names '{c}'", fg.forget_probes(c, 6, seed=7 + i)) for i, c in enumerate(CONCEPTS)]
    grid_rows.append(("names none", fg.preserve_probes(CONCEPTS, 6, seed=11)))
    probes = [p for _, group in grid_rows for p in group]
    draw_grid(grid_rows, fg.generate(world, probes), fg.generate(world, probes, unlearned)).save(out / "grid.png")

    measured = rates(world, unlearned, CONCEPTS, args.probes)
    report = {"concepts": CONCEPTS, "weights": args.weights, "r2": r2, "layers": args.layers,
              "fia_seconds": round(seconds, 1),
              "pruned_weights": mask.pruned_count, "sparsity": mask.sparsity, **measured,
              "probes_per_concept": args.probes}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    rule, preserve = measured["forget_rate_per_concept_rule"], measured["preserve_accuracy"]

    def by_rule(concept: str) -> str:
        return f"{rule['before'][concept]:.0%} / {rule['after'][concept]:.0%}" if concept in rule["before"] else "-"

    lines = [
        f"# FIA demo: forget {', '.join(CONCEPTS)} from ToyWorld at once", "",
        f"FIA ({args.layers} layers, r2 {r2}{' (the paper)' if args.r2 == 0 else ''}, otherwise the paper's "
        f"values: r1 {made.per_concept[CONCEPTS[0]].r1}, alpha {made.alpha}, {made.recording.num_pairs} pairs, "
        f"T = {made.recording.sampling.recorded_steps}) took {seconds:.1f} s on this machine and pruned "
        f"{mask.pruned_count} weights ({100 * mask.sparsity:.2f}% of those layers' weights).", "",
        verdict(measured["forget_rate"]), "",
        "| prompts naming | shows it before | shows it after | colour rule before / after |", "|---|---|---|---|",
        *[f"| {c} | {r['before']:.0%} | {r['after']:.0%} | {by_rule(c)} |" for c, r in measured["forget_rate"].items()],
        f"| none of them (attributes right) | {preserve['before']:.0%} | {preserve['after']:.0%} | |", "",
        f"{args.probes} images per concept, {2 * args.probes} preserve images, same seeds before and after; "
        "read by the ToyWorld evaluator, a colour also by the training-free colour rule "
        "(toyworld/shapes/colour_rule.py). Grid: grid.png. Mask: mask.safetensors.",
        *[f"The two readers differ by more than 10 points {when} on: {', '.join(names)}."
          for when, names in measured["reader_disagreements"].items() if names],
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
