"""The paper's objects benchmark (Table 1) on EmojiWorld, FIA beside the methods users would pick
instead, and the scale the paper only claims (issue #24, items 1 and 6).

    python -m toyworld.emoji.benchmarks [--scale] [--quick]

Methods, each at its own paper's values: the base model; FIA with the reference Eq.1 (the
paper's code) and the exact Eq.1; FIA's selection with plain-union fusion; ConceptPrune's
selection (Wanda score, skill ratio 0.01) with union fusion, as its paper prunes; a UCE-style
closed-form edit of the cross-attention k/v (`baselines.py`). All forget the ten Imagenette
counterparts at once. Read by both concept readers on the same images:

- forgetting accuracy per class: images asking for a forgotten concept (alone and on scenes,
  half each) that still show it;
- preserve accuracy: images of concepts not forgotten (their neighbours in the same emoji
  subcategory first: other vehicles, animals, buildings) that show their concept;
- the forget-5/keep-5 overall score: FIA forgets five, keeps five; the harmonic mean of
  (1 - forgetting accuracy) on the five and preserve accuracy on the other five.

`--scale` adds forgetting and preservation against the number forgotten at once (1, 10, 30, 100).
The report (JSON, with every setting) goes to reports/objects.json; nothing here is tuned on
FIA's results: the protocol was fixed before its first measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from pathlib import Path

import torch

from fia_engine import MethodSettings, SaliencyRecord, apply_mask, masks_from

from ..common.forgetting import harmonic_overall, write_report
from ..common.loader import load_toyworld
from . import baselines
from . import forgetting as fg
from .readers import TemplateReader, load_reader
from .world import ALONE_TEMPLATE, EmojiWorld, Scene

REPORTS = Path(__file__).parent / "reports"
CONCEPTPRUNE_SKILL = 0.01  # ConceptPrune's skill ratio for objects
SCALE = (1, 10, 30, 100)


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How much is sampled: the paper-sized run, or a quick one that checks the code."""

    probes_per_class: int = 16
    preserve: int = 60
    num_pairs: int = fg.NUM_PAIRS
    recorded_steps: int = 10
    sampling_steps: int = 25

    def settings(self, world: EmojiWorld, concepts: list[str], **overrides) -> MethodSettings:
        base = fg.settings_for(world, concepts, **overrides)
        recording = dataclasses.replace(base.sampling, steps=self.sampling_steps, recorded_steps=self.recorded_steps)
        return dataclasses.replace(base, num_pairs=self.num_pairs, sampling=recording)


QUICK = Protocol(probes_per_class=2, preserve=4, num_pairs=2, recorded_steps=1, sampling_steps=2)


def neighbours_first(world: EmojiWorld, forgotten: list[int], count: int, seed: int) -> list[int]:
    """Concepts not forgotten: up to three from each forgotten concept's subcategory, then others."""
    rng = random.Random(seed)
    chosen: list[int] = []
    for c in forgotten:
        same = [k for k in world.placeable if world.concepts[k].subcategory == world.concepts[c].subcategory
                and k not in forgotten and k not in chosen]
        chosen += rng.sample(same, min(3, len(same)))
    rest = [k for k in world.placeable if k not in forgotten and k not in chosen]
    return (chosen + rng.sample(rest, max(0, count - len(chosen))))[:count]


class Bench:
    """One model, its readers and one protocol: samples a method's model and reads it."""

    def __init__(self, model: Path, protocol: Protocol) -> None:
        self.world = fg.model_world(model)
        self.tw = load_toyworld(model)
        self.readers = fg.Readers(self.world, load_reader(), TemplateReader(self.world, self.world.trained))
        self.protocol = protocol

    def probes(self, concepts: list[str], preserve: list[int]) -> tuple[dict[str, list[fg.Probe]], list[fg.Probe]]:
        n = self.protocol.probes_per_class
        forget = {c: fg.object_probes(self.world, self.world.by_name(c), n, 10_000 + 100 * i) for i, c in enumerate(concepts)}
        keep = [fg.Probe(self.world.prompt(Scene(c)), 20_000 + k, c) for k, c in enumerate(preserve)]
        return forget, keep

    def read(self, patcher, forget: dict[str, list[fg.Probe]], keep: list[fg.Probe]) -> dict:
        """Forgetting accuracy per class and preserve accuracy, by both readers."""
        every = [p for group in forget.values() for p in group] + keep
        images = fg.sample(self.tw, every, patcher, steps=self.protocol.sampling_steps)
        cnn, template, _ = self.readers.read(images, every)
        out: dict = {"forgetting_accuracy": {}, "images": len(every)}
        start = 0
        for concept, group in forget.items():
            part = slice(start, start + len(group))
            out["forgetting_accuracy"][concept] = {"cnn": _mean(cnn[part]), "template": _mean(template[part])}
            start += len(group)
        out["forgetting_accuracy_mean"] = {r: _mean(torch.tensor([v[r] for v in out["forgetting_accuracy"].values()]))
                                           for r in ("cnn", "template")}
        out["preserve_accuracy"] = {"cnn": _mean(cnn[start:]), "template": _mean(template[start:])}
        return out

    def method_models(self, concepts: list[str], preserve: list[int],
                      settings: MethodSettings) -> tuple[dict[str, tuple[object, dict]], SaliencyRecord]:
        """Every method's model (a patcher clone) with what it did, and the one reference recording
        FIA, union and ConceptPrune select from."""
        world = self.world
        fia = fg.forget(self.tw, world, concepts, settings)
        exact = fg.forget(self.tw, world, concepts, dataclasses.replace(settings, form="exact"))
        union = masks_from(fia.record, dataclasses.replace(settings, fusion="union"))
        prune = masks_from(fia.record, dataclasses.replace(settings, method="conceptprune", fusion="union",
                                                           r2=CONCEPTPRUNE_SKILL, r2_overrides={}))
        others = [world.name(c) for c in world.placeable if c not in preserve
                  and world.name(c) not in concepts][:200]  # UCE's keep set: disjoint from the measured one
        uce = baselines.uce_edit(self.tw.patcher, self.tw.encoder, [ALONE_TEMPLATE.format(c=c) for c in concepts],
                                 ["a"] * len(concepts), [ALONE_TEMPLATE.format(c=c) for c in others])
        models = {"base": (self.tw.patcher, {})}
        for name, result in (("fia", fia), ("fia-exact", exact), ("union", union), ("conceptprune", prune)):
            models[name] = (apply_mask(self.tw.patcher, result.mask), {"pruned_weights": result.mask.pruned_count,
                                                                       "sparsity": round(result.mask.sparsity, 5)})
        models["uce"] = (uce, {"edited": "attn2.to_k, attn2.to_v", "lamb": 0.1, "erase_scale": 1.0,
                               "preserve_scale": 0.1, "preserved_prompts": len(others)})
        return models, fia.record


def _mean(hits: torch.Tensor) -> float:
    return round(float(hits.float().mean()), 4) if hits.numel() else float("nan")


def objects(bench: Bench) -> dict:
    """Table 1 in EmojiWorld: ten counterparts at once, every method, and forget-5/keep-5."""
    world = bench.world
    concepts = fg.imagenette(world)
    preserve = neighbours_first(world, [world.by_name(c) for c in concepts], bench.protocol.preserve, 7)
    forget, keep = bench.probes(concepts, preserve)
    settings = bench.protocol.settings(world, concepts)
    models, record = bench.method_models(concepts, preserve, settings)
    results = {name: {**did, **bench.read(patcher, forget, keep)} for name, (patcher, did) in models.items()}
    first, second = concepts[:5], concepts[5:]
    half = masks_from(record, settings, keep=[], forget=first)
    five = bench.read(apply_mask(bench.tw.patcher, half.mask), {c: forget[c] for c in first},
                      [p for c in second for p in forget[c]])
    overall = {r: round(harmonic_overall(five["forgetting_accuracy_mean"][r], five["preserve_accuracy"][r]), 4)
               for r in ("cnn", "template")}
    return {"concepts": concepts, "r2": settings.r2_overrides, "preserve_concepts": [world.name(c) for c in preserve],
            "methods": results, "forget5_keep5": {"forgotten": first, "kept": second, **five, "overall": overall}}


def scale(bench: Bench, counts: tuple[int, ...] = SCALE) -> dict:
    """FIA at the paper's values forgetting 1, 10, 30, 100 concepts at once (Imagenette first,
    then concepts drawn from the model's), forgetting and preservation against the number."""
    world = bench.world
    rng = random.Random(11)
    extra = [world.name(c) for c in rng.sample(world.placeable, len(world.placeable))
             if world.name(c) not in fg.imagenette(world)]
    order = fg.imagenette(world) + extra
    out = {}
    for n in counts:
        concepts = order[:n]
        preserve = neighbours_first(world, [world.by_name(c) for c in concepts], bench.protocol.preserve, 7)
        measured, keep = bench.probes(concepts[:10], preserve)  # read on ten of them at most
        started = time.perf_counter()
        result = fg.forget(bench.tw, world, concepts, bench.protocol.settings(world, concepts))
        seconds = time.perf_counter() - started
        out[str(n)] = {"fia_seconds": round(seconds, 1), "pruned_weights": result.mask.pruned_count,
                       **bench.read(apply_mask(bench.tw.patcher, result.mask), measured, keep)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[1] / "weights" / "emojiworld.safetensors")
    ap.add_argument("--scale", action="store_true", help="also forget 1, 10, 30 and 100 concepts at once")
    ap.add_argument("--quick", action="store_true", help="a few images and pairs: checks the code, measures nothing")
    ap.add_argument("--report", type=Path, default=REPORTS / "objects.json")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    started = time.perf_counter()
    protocol = QUICK if a.quick else Protocol()
    bench = Bench(a.model, protocol)
    report = {"model": a.model.name, "model_step": int(bench.tw.metadata.get("step", 0)),
              "protocol": dataclasses.asdict(protocol), "sampling": fg.SAMPLING, "quick": a.quick,
              "date": time.strftime("%Y-%m-%d"), "objects": objects(bench)}
    if a.scale:
        report["scale"] = scale(bench, (1, 2) if a.quick else SCALE)
    write_report(a.report, report, started)


if __name__ == "__main__":
    main()
