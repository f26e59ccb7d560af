"""Train EmojiWorld's CNN reader (concept and style heads) and measure both concept readers on
held-out renders, clean and degraded (a seed stream disjoint from training's).

    python -m toyworld.emoji.train_readers --model out/emojiworld.safetensors

The reader reads the concepts the model was trained on (the model file's metadata lists them).
The held-out figures go into the weights' metadata and `--report`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import STYLES, load_renders
from .readers import WEIGHTS, NetReader, TemplateReader, degrade, load_reader
from .world import EmojiWorld

log = logging.getLogger("toyworld.emoji.train_readers")
HELD_OUT_SEED = 424_242_424


def model_concepts(model: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(model), "pt") as f:
        return json.loads((f.metadata() or {})["concepts"])


def labelled_batch(world: EmojiWorld, seed: int, n: int, strength: float | None = None,
                   p_place: float = 0.25) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Degraded renders of the world's concepts: images, concept index (into world.trained),
    style index, and the scene an object sits on (index into world.places; -1: alone).
    `strength` None draws it per image."""
    gen = torch.Generator().manual_seed(seed)
    position = {c: k for k, c in enumerate(world.trained)}
    scenes = [world.sample_scene(gen, p_place=p_place, p_default=1 / len(STYLES), p_tag=0.0) for _ in range(n)]
    images = torch.stack([world.draw(s, world.random_offset(gen)) for s in scenes])
    places = torch.tensor([-1 if s.place is None else s.place for s in scenes])
    if strength is None:
        keep = torch.rand(n, 1, 1, 1, generator=gen) < 0.15
        images = torch.where(keep, images, degrade(images, gen, 1.0))
    elif strength > 0:
        images = degrade(images, gen, strength)
    concept = torch.tensor([position[s.concept] for s in scenes])
    style = torch.tensor([s.style for s in scenes])
    return images, concept, style, places


def held_out(world: EmojiWorld, reader: NetReader, template: TemplateReader, n: int) -> dict[str, dict[str, float]]:
    """Top-1 of both concept readers and the style reader, clean and degraded, alone and placed."""
    out = {}
    for name, strength in (("clean", 0.0), ("degraded", 1.0)):
        images, concept, style, places = labelled_batch(world, HELD_OUT_SEED + int(strength), n, strength)
        placed = places >= 0
        c_prob, s_prob = reader.read(images)
        t_alone = template.read(images[~placed])
        t_placed = template.read(images[placed], places[placed])
        alone = ~placed
        out[name] = {
            "images": n,
            "concept_cnn": float((c_prob.argmax(1) == concept).float().mean()),
            "concept_cnn_alone": float((c_prob.argmax(1) == concept)[alone].float().mean()),
            "concept_cnn_placed": float((c_prob.argmax(1) == concept)[placed].float().mean()),
            "concept_template": float(torch.cat([t_alone == concept[alone], t_placed == concept[placed]]).float().mean()),
            "concept_template_alone": float((t_alone == concept[alone]).float().mean()),
            "concept_template_placed": float((t_placed == concept[placed]).float().mean()),
            "style_cnn_alone": float((s_prob.argmax(1) == style)[alone].float().mean()),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the EmojiWorld model whose concepts to read")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--held-out", type=int, default=2000)
    ap.add_argument("--p-place", type=float, default=0.25, help="share of training images placed on a scene")
    ap.add_argument("--init", type=Path, default=None, help="continue from these reader weights (same concepts)")
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--report", type=Path, default=Path(__file__).parent / "reports" / "readers.json")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    world = EmojiWorld.trained_on(load_renders(), model_concepts(a.model))
    reader = NetReader(tuple(world.concepts[i].code for i in world.trained), a.width)
    if a.init is not None:
        start_from = load_reader(a.init)
        if start_from.concepts != reader.concepts:
            raise SystemExit(f"--init {a.init} reads other concepts than {a.model}'s")
        reader.load_state_dict(start_from.state_dict())
    opt = torch.optim.AdamW(reader.parameters(), lr=a.lr, weight_decay=1e-4)
    start = time.time()
    for step in range(a.steps):
        images, concept, style, places = labelled_batch(world, a.seed * 1_000_003 + step, a.batch, p_place=a.p_place)
        placed = places >= 0
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        reader.train()
        c_logits, s_logits = reader(images)
        # placed objects are always in the default look: no style to learn from them
        loss = F.cross_entropy(c_logits, concept) + 0.5 * F.cross_entropy(s_logits[~placed], style[~placed])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            log.info("step %d loss %.4f %.1f min", step + 1, loss.item(), (time.time() - start) / 60)
    template = TemplateReader(world, world.trained)
    result = held_out(world, reader, template, a.held_out)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
    reader.save(a.out, {"held_out": json.dumps(result), "training": json.dumps(settings),
                        "minutes": f"{(time.time() - start) / 60:.1f}"})
    a.report.parent.mkdir(parents=True, exist_ok=True)
    a.report.write_text(json.dumps({"settings": settings, "concepts": len(world.trained), "held_out": result,
                                    "minutes": round((time.time() - start) / 60, 1)}, indent=1) + "\n")
    log.info("held out: %s", json.dumps(result))


if __name__ == "__main__":
    main()
