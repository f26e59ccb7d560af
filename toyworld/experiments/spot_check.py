"""A sheet of images from an unlearned ToyWorld model with what both readers say of each, to check
by eye that the evaluator still reads pruned models' images right (they look like no render).

    python -m toyworld.experiments.spot_check --r2 0.3 --out out/spot_check

Writes sheet.png (each tile captioned with the prompt, the evaluator's reading and the colour
rule's) and readings.json; the verdicts by eye go into docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from fia_engine import apply_mask

from ..common.loader import DEFAULT_WEIGHTS, load_toyworld
from ..shapes.colour_rule import read_colours
from ..shapes.evaluator import classify
from . import forgetting as fg
from .demo import tile

CONCEPTS = ["red", "circle", "striped"]
COLUMNS, TILE, CAPTION = 8, 96, 40


def sheet(images: torch.Tensor, captions: list[list[str]]) -> Image.Image:
    rows = -(-len(captions) // COLUMNS)
    canvas = Image.new("RGB", (COLUMNS * (TILE + 8), rows * (TILE + CAPTION)), "white")
    pen = ImageDraw.Draw(canvas)
    for i, lines in enumerate(captions):
        x, y = (i % COLUMNS) * (TILE + 8), (i // COLUMNS) * (TILE + CAPTION)
        canvas.paste(tile(images[i]), (x, y))
        for k, line in enumerate(lines):
            pen.text((x + 1, y + TILE + 1 + 12 * k), f"{i + 1}. {line}"[:18] if k == 0 else line[:18],
                     fill="black" if k == 0 else "gray")
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--r2", type=float, default=0.3, help="a strong cut, so the images differ from renders")
    parser.add_argument("--layers", default="ff2", help="layer kind of the mask")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, default=Path("out/spot_check"))
    args = parser.parse_args()
    world = load_toyworld(args.weights)
    mask = fg.unlearn(world, CONCEPTS, dataclasses.replace(fg.SETTINGS, r2=args.r2, layer_kind=args.layers)).mask
    per = -(-args.images // (len(CONCEPTS) + 1))
    probes = [p for i, c in enumerate(CONCEPTS) for p in fg.forget_probes(c, per, seed=900 + i)]
    probes = (probes + fg.preserve_probes(CONCEPTS, per, seed=950))[: args.images]
    images = fg.generate(world, probes, apply_mask(world.patcher, mask))
    evaluator, rule = classify(images), read_colours(images)
    readings = [{"prompt": p.prompt, "seed": p.seed, "evaluator": list(e), "colour_rule": r}
                for p, e, r in zip(probes, evaluator, rule, strict=True)]
    captions = [[p.prompt.removeprefix("a ").replace(" background", ""), " ".join(e), f"rule: {r}"]
                for p, e, r in zip(probes, evaluator, rule, strict=True)]
    args.out.mkdir(parents=True, exist_ok=True)
    sheet(images, captions).save(args.out / "sheet.png")
    (args.out / "readings.json").write_text(json.dumps(
        {"mask": {"r2": args.r2, "layers": args.layers, "pruned_share": mask.sparsity}, "readings": readings}, indent=1))
    print(f"wrote {args.out}/sheet.png")


if __name__ == "__main__":
    main()
