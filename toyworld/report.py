"""Base-model quality: sample a fixed prompt set with fixed seeds, read each image with the
evaluator and report how often colour, shape and background match the prompt.

    python -m toyworld.report --out toyworld/reports/base_quality.json

The prompt set is every (colour, shape, background) combination in canonical wording,
`--seeds` seeds each (seed = 1000 * k + index), plus a synonym-worded pass.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from devkit.comfy_env import setup_comfy

setup_comfy(pytorch_attention=True)

from . import world  # noqa: E402
from .evaluator import DEFAULT_WEIGHTS as EVAL_WEIGHTS  # noqa: E402
from .evaluator import accuracy, classify, load_evaluator  # noqa: E402
from .loader import DEFAULT_WEIGHTS, ToyWorld, load_toyworld  # noqa: E402


def prompt_set(seeds_per_prompt: int, synonyms: bool = False) -> tuple[list[str], list[int], list[tuple[str, str, str]]]:
    prompts, seeds, truth = [], [], []
    for k in range(seeds_per_prompt):
        for i, lab in enumerate(world.all_labels()):
            colour = world.COLOUR_SYNONYMS[lab.colour] if synonyms else lab.colour
            shape = world.SHAPE_SYNONYMS[lab.shape] if synonyms else lab.shape
            prompts.append(world.prompt_for(colour, shape, lab.background))
            seeds.append(1000 * k + i)
            truth.append(lab.as_tuple())
    return prompts, seeds, truth


def breakdown(pred: list[tuple[str, str, str]], truth: list[tuple[str, str, str]]) -> dict[str, dict[str, float]]:
    """Match rate of each attribute value (e.g. how often 'ring' prompts give rings)."""
    out: dict[str, dict[str, float]] = {}
    for i, attr in enumerate(("colour", "shape", "background")):
        values = sorted({t[i] for t in truth})
        out[attr] = {
            v: round(sum(p[i] == t[i] for p, t in zip(pred, truth) if t[i] == v)
                     / max(1, sum(t[i] == v for t in truth)), 4)
            for v in values
        }
    return out


def evaluate(tw: ToyWorld, steps: int, cfg: float, sampler: str, scheduler: str,
             seeds_per_prompt: int, synonyms: bool = False) -> tuple[dict, torch.Tensor]:
    prompts, seeds, truth = prompt_set(seeds_per_prompt, synonyms)
    t0 = time.time()
    images = tw.generate(prompts, seeds, steps=steps, cfg=cfg, sampler=sampler, scheduler=scheduler)
    pred = classify(images)
    res = {
        "settings": {"steps": steps, "cfg": cfg, "sampler": sampler, "scheduler": scheduler,
                     "images": len(prompts), "seeds_per_prompt": seeds_per_prompt,
                     "wording": "synonyms" if synonyms else "canonical"},
        "match": {k: round(v, 4) for k, v in accuracy(pred, truth).items()},
        "per_value": breakdown(pred, truth),
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
    ap.add_argument("--seeds", type=int, default=2, help="seeds per prompt (150 prompts)")
    ap.add_argument("--sweep", default="", help="extra settings 'sampler:steps:cfg,...' (1 seed each)")
    ap.add_argument("--sweep-only", action="store_true", help="skip the main and synonym passes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grid", type=Path, default=None, help="write a PNG contact sheet")
    ap.add_argument("--out", type=Path, default=Path("toyworld/reports/base_quality.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    tw = load_toyworld(a.weights)
    ev_meta = load_evaluator_meta()
    main_res: dict | None = None
    syn_res: dict | None = None
    if not a.sweep_only:
        main_res, images = evaluate(tw, a.steps, a.cfg, a.sampler, a.scheduler, a.seeds)
        print(json.dumps(main_res["match"]), main_res["settings"], flush=True)
        if a.grid:
            save_grid(images, a.grid)
        syn_res, _ = evaluate(tw, a.steps, a.cfg, a.sampler, a.scheduler, 1, synonyms=True)
        print("synonyms", json.dumps(syn_res["match"]), flush=True)
    sweep = []
    for item in filter(None, a.sweep.split(",")):
        sampler, steps, cfg = item.split(":")
        res, _ = evaluate(tw, int(steps), float(cfg), sampler, a.scheduler, 1)
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
