"""The EmojiWorld demo: forget three objects and one style at once with FIA, and show it.

    python -m toyworld.emoji.demo [--objects dog church parachute] [--styles lineart]

`make demo`. Writes to out/demo/ (or --out): grid.png (the same prompts and seeds before | after, the
prompt under each tile; forgotten rows first, then kept ones), mask.safetensors, report.json and
report.md with the rates both concept readers measure and a verdict computed from them.
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from fia_engine import apply_mask, save_mask

from ..common.loader import load_toyworld
from . import forgetting as fg
from .benchmarks import QUICK, Protocol
from .data import STYLES
from .readers import TemplateReader, load_reader
from .world import NAMED_STYLES

MODEL = Path(__file__).resolve().parents[1] / "weights" / "emojiworld.safetensors"
OBJECTS = ["dog", "church", "parachute"]
STYLE_NAMES = ["lineart"]
TILE, CAPTION = 96, 30
JUDGEABLE = 0.5  # the base model must draw a concept at least this often for its forgetting to be judged


def draw_grid(rows: list[tuple[str, list[fg.Probe]]], before: torch.Tensor, after: torch.Tensor, title: str) -> Image.Image:
    """One row per group, before on the left and after on the right, each tile over its prompt."""
    per_row = max(len(p) for _, p in rows)
    label_w, gap, top = 140, 24, 36
    canvas = Image.new("RGB", (label_w + 2 * per_row * TILE + gap, top + len(rows) * (TILE + CAPTION)), "white")
    pen = ImageDraw.Draw(canvas)
    pen.text((label_w, 10), "before", fill="black")
    pen.text((label_w + per_row * TILE + gap, 10), title, fill="black")
    index = 0
    for r, (label, probes) in enumerate(rows):
        y = top + r * (TILE + CAPTION)
        for k, line in enumerate(textwrap.wrap(label, 20)[:3]):
            pen.text((6, y + TILE // 2 - 12 + 12 * k), line, fill="black")
        for c, probe in enumerate(probes):
            for half, images in enumerate((before, after)):
                x = label_w + half * (per_row * TILE + gap) + c * TILE
                pixels = (images[index].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
                canvas.paste(Image.fromarray(pixels).resize((TILE, TILE), Image.NEAREST), (x, y))
                for k, line in enumerate(textwrap.wrap(probe.prompt.removeprefix("a "), 17)[:2]):
                    pen.text((x + 2, y + TILE + 2 + 12 * k), line, fill="black" if k == 0 else "gray")
            index += 1
    return canvas


def measure(tw, readers: fg.Readers, groups: dict[str, tuple[str, list[fg.Probe]]],
            unlearned, steps: int = fg.SAMPLING["steps"]) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """Per group, before and after: how often the readers see what the prompt asks (the concept,
    by the CNN and by templates; for a style, the style), and the images they read."""
    out, images = {}, {}
    for name, (kind, probes) in groups.items():
        row = {"kind": kind, "images": len(probes)}
        images[name] = {}
        for when, patcher in (("before", None), ("after", unlearned)):
            images[name][when] = sampled = fg.sample(tw, probes, patcher, steps=steps)
            hits = readers.read(sampled, probes)
            rates = {"style": hits.style} if kind == "style" else {"cnn": hits.cnn, "template": hits.template}
            row[when] = {k: round(float(v.float().mean()), 4) for k, v in rates.items()}
        out[name] = row
    return out, images


def shown(rates: dict) -> float:
    """The share of images showing what was asked, the larger of the readers' (a forgotten concept
    must be gone by both)."""
    return max(rates.values())


def verdict(measured: dict, forgotten: list[str]) -> str:
    """One plain paragraph from the rates: what went, what stayed, what cannot be judged."""
    unjudged = [c for c in forgotten if shown(measured[c]["before"]) < JUDGEABLE]
    if unjudged:
        return ("Cannot judge: the base model draws " + ", ".join(
            f"{c} in {shown(measured[c]['before']):.0%}" for c in unjudged) + " of the images asking for it "
            f"(below {JUDGEABLE:.0%}), so an absence after FIA says nothing. The model needs more training "
            "(toyworld/emoji/README.md).")
    gone = [c for c in forgotten if shown(measured[c]["after"]) <= 0.1]
    kept = [k for k, r in measured.items() if k not in forgotten]
    held = [k for k in kept if shown(measured[k]["after"]) >= 0.9 * shown(measured[k]["before"])]
    parts = [f"Forgotten: {', '.join(gone)}." if gone else "Nothing forgotten.",
             *([f"Still drawn: {', '.join(c for c in forgotten if c not in gone)}."] if len(gone) < len(forgotten) else []),
             f"Kept (at least 90% of the base model's rate): {', '.join(held) or 'none'}."]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", nargs="*", default=OBJECTS, help="concepts to forget, by CLDR name")
    ap.add_argument("--styles", nargs="*", default=STYLE_NAMES, choices=NAMED_STYLES, help="styles to forget")
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--probes", type=int, default=12, help="images per group for the rates")
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 pairs, T = 1, 2 sampling steps, 2 images a group: "
                    "checks the code, shows nothing")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    trained = fg.model_world(a.model)
    for name in a.objects:  # refused before any sampling: a name the model never learnt
        if trained.by_name(name) not in trained.placeable:
            raise SystemExit(f"--objects: the model was not trained on '{name}' (or it is a place); "
                             "pick a concept its metadata lists")
    forgotten = [*a.objects, *a.styles]
    tw = load_toyworld(a.model)
    readers = fg.Readers(trained, load_reader(), TemplateReader(trained, trained.trained))
    started = time.perf_counter()
    protocol = QUICK if a.quick else Protocol()
    probes_per_group = 2 if a.quick else a.probes
    mask = fg.forget(tw, trained, forgotten, protocol.settings(trained, forgotten)).mask
    fia_seconds = time.perf_counter() - started
    unlearned = apply_mask(tw.patcher, mask)
    a.out.mkdir(parents=True, exist_ok=True)
    save_mask(mask, a.out / "mask.safetensors")

    avoid = {trained.by_name(c) for c in a.objects}
    groups: dict[str, tuple[str, list[fg.Probe]]] = {}
    for i, name in enumerate(a.objects):
        groups[name] = ("object", fg.object_probes(trained, trained.by_name(name), probes_per_group, 1000 * (i + 1)))
    for i, style in enumerate(a.styles):
        groups[style] = ("style", fg.style_probes(trained, STYLES.index(style), probes_per_group, 5000 + 100 * i))
    groups["other concepts"] = ("object", fg.preserve_probes(trained, avoid, 2 * probes_per_group, 7000))
    for i, style in enumerate(s for s in NAMED_STYLES if s not in a.styles):
        groups[f"{style} style"] = ("style", fg.style_probes(trained, STYLES.index(style), probes_per_group, 8000 + 100 * i))
    measured, images = measure(tw, readers, groups, unlearned, protocol.sampling_steps)

    shown_rows = [(f"forget {n}" if n in forgotten else f"keep: {n}", probes[:6]) for n, (_, probes) in groups.items()]
    before, after = (torch.cat([images[n][when][:6] for n in groups]) for when in ("before", "after"))
    draw_grid(shown_rows, before, after, f"after FIA: forget {', '.join(forgotten)}").save(a.out / "grid.png")
    settings = mask.settings
    report = {"forgotten": forgotten, "model": a.model.name, "model_step": int(tw.metadata.get("step", 0)),
              "fia_seconds": round(fia_seconds, 1), "pruned_weights": mask.pruned_count, "sparsity": mask.sparsity,
              "r2": {c: settings.per_concept[c].r2 for c in forgotten}, "alpha": settings.alpha,
              "probes_per_group": probes_per_group, "rates": measured, "verdict": verdict(measured, forgotten),
              "seconds": round(time.perf_counter() - started, 1)}
    (a.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# FIA on EmojiWorld: forget {', '.join(forgotten)} at once", "",
             f"FIA at the paper's values (r1 0.05, alpha {settings.alpha}, {protocol.num_pairs} pairs, T = {protocol.recorded_steps}; r2 "
             + ", ".join(f"{c} {r}" for c, r in report["r2"].items()) + f") took {fia_seconds:.0f} s and pruned "
             f"{mask.pruned_count:,} weights ({100 * mask.sparsity:.2f}% of the sixteen ff.net.2 layers).", "",
             report["verdict"], "",
             "| prompts asking for | read as asked, before | after |", "|---|---|---|",
             *[f"| {n} ({r['kind']}) | {fmt(r['before'])} | {fmt(r['after'])} |" for n, r in measured.items()], "",
             f"{probes_per_group} images per group ({2 * probes_per_group} for other concepts), same seeds before and after; a concept "
             "read by the CNN and by template matching, a style by the CNN's style head. Grid: grid.png."]
    (a.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def fmt(rates: dict) -> str:
    return " / ".join(f"{k} {v:.0%}" for k, v in rates.items())


if __name__ == "__main__":
    main()
