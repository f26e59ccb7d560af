"""Base-model quality: sample a fixed prompt set with fixed seeds, read each image with the
evaluator and report how often colour, shape and background match the prompt, per attribute and
per value.

    python -m toyworld.experiments.report --weights PATH --out toyworld/experiments/reports/base_quality.json

The prompt set is every scene of the model's world (`world.all_scenes`) in canonical wording,
`--seeds` seeds each (seed = 1000 * k + index), plus a synonym-worded pass: the 150 combinations of
colour, shape and background, and for a world-version-3 model also the 65 prompts that leave
attributes out, whose expected value is the absent one the world draws (no shape, the neutral
white, the plain background): 215 prompts, 430 images at the default 2 seeds (v2: 300).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..common.loader import DEFAULT_WEIGHTS, ToyWorld, load_toyworld
from ..shapes import world
from ..shapes.colour_rule import read_colours
from ..shapes.evaluator import DEFAULT_WEIGHTS as EVAL_WEIGHTS
from ..shapes.evaluator import HEADS, accuracy, accuracy_per_value, classify, load_evaluator


@dataclass(frozen=True)
class PromptSet:
    """Prompts with fixed seeds and the (colour, shape, background) each image should show."""

    prompts: list[str]
    seeds: list[int]
    truth: list[tuple[str, str, str]]
    seeds_per_prompt: int
    wording: str


def prompt_set(seeds_per_prompt: int, synonyms: bool = False, world_version: int = world.WORLD_VERSION) -> PromptSet:
    """`world.all_scenes` of `world_version`, each with seeds 1000 * k + its index, so a scene
    naming all three attributes keeps its seeds in both versions."""
    prompts, seeds, truth = [], [], []
    for k in range(seeds_per_prompt):
        for i, lab in enumerate(world.all_scenes(world_version)):
            words = [world.SYNONYMS.get(v, v) if synonyms else v for v in lab.as_tuple()]
            prompts.append(world.prompt_for(*words, world_version=world_version))
            seeds.append(1000 * k + i)
            truth.append(lab.as_tuple())
    return PromptSet(prompts, seeds, truth, seeds_per_prompt, "synonyms" if synonyms else "canonical")


def images_per_value(truth: list[tuple[str, str, str]]) -> dict[str, dict[str, int]]:
    """How many images each per-value rate rests on."""
    return {kind: {v: n for v in values if (n := sum(t[i] == v for t in truth))}
            for i, (kind, values) in enumerate(HEADS.items())}


def evaluate(tw: ToyWorld, ps: PromptSet, steps: int, cfg: float, sampler: str,
             scheduler: str) -> tuple[dict, torch.Tensor]:
    """Sample the set and read it; `colour_rule_match` is the colour match as the training-free
    `colour_rule` reads it, a check on the evaluator's."""
    t0 = time.time()
    images = tw.generate(ps.prompts, ps.seeds, steps=steps, cfg=cfg, sampler=sampler, scheduler=scheduler)
    pred = classify(images)
    rule = read_colours(images)
    res = {
        "settings": {"steps": steps, "cfg": cfg, "sampler": sampler, "scheduler": scheduler,
                     "images": len(ps.prompts), "seeds_per_prompt": ps.seeds_per_prompt, "wording": ps.wording,
                     "world_version": tw.world_version},
        "match": {k: round(v, 4) for k, v in accuracy(pred, ps.truth).items()},
        "attribute_accuracy_per_value": {kind: {v: round(r, 4) for v, r in rates.items()}
                                         for kind, rates in accuracy_per_value(pred, ps.truth).items()},
        "images_per_value": images_per_value(ps.truth),
        "colour_rule_match": round(sum(r == t[0] for r, t in zip(rule, ps.truth)) / len(ps.truth), 4),
        "seconds": round(time.time() - t0, 1),
    }
    return res, images


def save_grid(images: torch.Tensor, path: Path, cols: int = 25) -> None:
    """Contact sheet (3x nearest upscale) for eyeballing samples."""
    from PIL import Image

    n = images.shape[0] - images.shape[0] % cols
    rows = images[:n].reshape(n // cols, cols, 32, 32, 3)
    grid = rows.permute(0, 2, 1, 3, 4).reshape(n // cols * 32, cols * 32, 3)
    img = Image.fromarray((grid.numpy() * 255).round().astype("uint8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.resize((img.width * 3, img.height * 3), Image.NEAREST).save(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--scheduler", default="normal")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per prompt (150 prompts, 215 for a v3 model)")
    ap.add_argument("--sweep", default="", help="extra settings 'sampler:steps:cfg,...' (1 seed each)")
    ap.add_argument("--sweep-only", action="store_true", help="skip the main and synonym passes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", type=Path, default=None, help="write a PNG contact sheet")
    ap.add_argument("--out", type=Path, default=Path("toyworld/experiments/reports/base_quality.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    tw = load_toyworld(a.weights)
    ev_meta = load_evaluator_meta()
    main_res: dict | None = None
    syn_res: dict | None = None
    if not a.sweep_only:
        main_res, images = evaluate(tw, prompt_set(a.seeds, world_version=tw.world_version),
                                    a.steps, a.cfg, a.sampler, a.scheduler)
        print(json.dumps(main_res["match"]), main_res["settings"], flush=True)
        if a.grid:
            save_grid(images, a.grid)
        syn_res, _ = evaluate(tw, prompt_set(1, synonyms=True, world_version=tw.world_version),
                              a.steps, a.cfg, a.sampler, a.scheduler)
        print("synonyms", json.dumps(syn_res["match"]), flush=True)
    sweep = []
    for item in filter(None, a.sweep.split(",")):
        sampler, steps, cfg = item.split(":")
        res, _ = evaluate(tw, prompt_set(1, world_version=tw.world_version), int(steps), float(cfg), sampler,
                          a.scheduler)
        print(json.dumps(res["match"]), res["settings"], flush=True)
        sweep.append(res)
    report = {
        "model": {k: tw.metadata.get(k) for k in ("step", "minutes", "training", "ema")},
        "weights": str(a.weights),
        "evaluator": ev_meta,
        "base_quality": main_res,
        "synonym_prompts": syn_res,
        "sweep": sweep,
        "target_per_attribute": 0.9,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print("wrote", a.out)


def load_evaluator_meta(path: Path = EVAL_WEIGHTS) -> dict[str, object]:
    from safetensors import safe_open

    load_evaluator(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return {k: json.loads(v) if k.startswith("held_out_") else v for k, v in meta.items()}


if __name__ == "__main__":
    main()
