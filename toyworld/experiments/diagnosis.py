"""Why FIA at the paper's settings does or does not forget a ToyWorld concept: what Eq.2's
contrast sees in each layer, and what removing it does.

    python -m toyworld.experiments.diagnosis --out toyworld/experiments/reports/diagnosis.json

For each concept, from one saliency run at the paper's settings (`forgetting.SETTINGS`), per
`ff.net.2` layer: how many neurons (input columns) have a positive contrast
`mean_c - mean_b - std_b` (Eq.2 before |W|) at a majority of the recorded steps, how large it
is against the base mean, and how many weights FIA selects there. Then, causally, the concept's
rate on prompts naming it (evaluator) when the model loses:
  - FIA's own single-concept mask at r2 0.01 (the paper's) and larger r2;
  - every weight of its contrast-positive neurons (whole columns, all layers): the most that any
    selection built on Eq.2 could remove from these layers; and of the neurons whose mean moves
    by more than the base std in either direction (Eq.2 ignores neurons a concept silences);
  - every `ff.net.2` weight (what the layers carry at all).
Other attributes' accuracy on the same images says what each cut costs.

`--pattern LAYER CONCEPT` asks whether a layer carries a concept in *where* its neurons fire rather
than *how much*: over the concept's prompt pairs (one shared starting latent each) it records the
layer's input at the first T UNet calls and ranks neurons by the change of their token-pooled norm
(what Eq.1 sees) and by the change of their per-token pattern, then zeroes the top neurons of
each ranking in that layer alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from fia_engine import apply_mask, masks_from
from fia_engine.core.masks import StatedSettings, UnlearningMask

from ..common.forgetting import GENERATION, seed_of, write_report
from ..common.loader import DEFAULT_WEIGHTS, load_toyworld
from . import forgetting as fg
from .attribution import readout, zeroed

CONCEPTS = ["red", "circle", "striped"]


def contrast(record, concept: str, key: str, either_sign: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq.2's per-neuron contrast [T, C] (`either_sign`: how far the mean moves up or down, less the
    base std, which Eq.2 cannot see) and the base mean it is measured against."""
    base = record.base_moments[record.concept_base[concept]][key]
    shift = record.concept_moments[concept][key].mean.float() - base.mean.float()
    return (shift.abs() if either_sign else shift) - base.std.float(), base.mean.float()


def positive_at_most_steps(c: torch.Tensor) -> torch.Tensor:
    """Per neuron, whether its contrast [T, C] is positive at a majority of the recorded steps."""
    return (c > 0).float().mean(dim=0) > 0.5


def positive_neurons(record, concept: str, either_sign: bool = False) -> dict[str, torch.Tensor]:
    """Per layer, the columns whose contrast (`contrast`) is positive at a majority of the steps."""
    return {layer.key: positive_at_most_steps(contrast(record, concept, layer.key, either_sign)[0]).nonzero().flatten()
            for layer in record.layers}


def layer_table(record, concept: str, selected: dict[str, torch.Tensor]) -> list[dict]:
    rows = []
    for layer in record.layers:
        c, base_mean = contrast(record, concept, layer.key)
        positive = positive_at_most_steps(c)
        rel = (c.clamp_min(0) / base_mean.clamp_min(1e-6)).max().item()
        rows.append({
            "layer": layer.module_path.removesuffix(".transformer_blocks.0.ff.net.2"),
            "neurons": int(c.shape[1]), "contrast_positive_neurons": int(positive.sum()),
            "largest_contrast_over_base_mean": round(rel, 3),
            "fia_selected_weights": int(selected[layer.key].numel()),
            "fia_selected_neurons": int(torch.unique(selected[layer.key].long() % layer.in_features).numel()),
        })
    return rows


def column_mask(record, columns: dict[str, torch.Tensor], concept: str) -> UnlearningMask:
    """Every weight of the given input columns."""
    pruned, kept = {}, {}
    for layer in record.layers:
        cols = columns[layer.key]
        rows = torch.arange(layer.out_features).unsqueeze(1)
        pruned[layer.key] = (rows * layer.in_features + cols.unsqueeze(0)).flatten().sort().values
        kept[layer.key] = pruned[layer.key][:0]
    made = StatedSettings({"made_by": "toyworld.experiments.diagnosis.column_mask", "cut": "whole input columns"})
    return UnlearningMask(record.architecture, record.layers, pruned, kept, [concept], made, record.fingerprint)


def diagnose(world, concept: str, probes_count: int, ratios: list[float], seed: int) -> dict:
    result = fg.unlearn(world, [concept])
    record, masks = result.record, result.concept_masks
    probes = fg.forget_probes(concept, probes_count, seed=seed)
    neurons = positive_neurons(record, concept)
    cuts = {"none (base model)": world.patcher}
    pruned = {}
    for r2 in ratios:
        mask = masks_from(record, dataclasses.replace(fg.SETTINGS, r2=r2)).mask
        name = f"FIA r2={r2}"
        cuts[name], pruned[name] = apply_mask(world.patcher, mask), mask.sparsity
    for name, chosen in (("all contrast-positive neurons", neurons),
                         ("all neurons moved up or down", positive_neurons(record, concept, either_sign=True))):
        columns = column_mask(record, chosen, concept)
        cuts[name], pruned[name] = apply_mask(world.patcher, columns), columns.sparsity
    cuts["all ff.net.2"] = zeroed(world.patcher, [layer.key for layer in record.layers])
    pruned["all ff.net.2"] = 1.0
    readouts = {}
    for name, patcher in cuts.items():
        readouts[name] = readout(fg.generate(world, probes, patcher), probes, concept) | {
            "pruned_share": pruned.get(name, 0.0)}
        print(f"{concept:9s} {name:32s} {readouts[name]}", flush=True)
    return {"layers": layer_table(record, concept, masks.selected[concept]), "cuts": readouts}


def layer_inputs(world, module_path: str, prompts: list[str], seeds: list[int], calls: int) -> torch.Tensor:
    """The layer's input [calls, batch, tokens, neurons] over the first `calls` UNet calls of sampling."""
    module = dict(world.patcher.model.diffusion_model.named_modules())[module_path]
    seen: list[torch.Tensor] = []

    def hook(_module, args):
        if len(seen) < calls:
            seen.append(args[0].detach().float().clone())

    handle = module.register_forward_pre_hook(hook)
    try:
        world.generate(prompts, seeds, patcher=world.patcher, **GENERATION)
    finally:
        handle.remove()
    return torch.stack(seen)


def pattern_probe(world, module_path: str, concept: str, probes_count: int, tops: list[int]) -> dict:
    pairs = fg.pairs_of(world)(concept, fg.SETTINGS.num_pairs, seed_of(fg.PRESET, fg.SETTINGS))
    seeds = [pair.seed for pair in pairs]
    steps = fg.SETTINGS.sampling.recorded_steps
    concept_x = layer_inputs(world, module_path, [p.concept_prompt for p in pairs], seeds, steps)
    base_x = layer_inputs(world, module_path, [p.base_prompt for p in pairs], seeds, steps)
    amount = (concept_x.norm(dim=2) - base_x.norm(dim=2)).abs().mean(dim=(0, 1))
    pattern = (concept_x - base_x).norm(dim=2).mean(dim=(0, 1))
    key = f"diffusion_model.{module_path}.weight"
    probes = fg.forget_probes(concept, probes_count, seed=800)
    rows = {"none (base model)": readout(fg.generate(world, probes), probes, concept)}
    for top in tops:
        for name, score in (("amount (token-pooled norm)", amount), ("pattern (per token)", pattern)):
            columns = torch.topk(score, top).indices

            def zero_columns(weight, columns=columns):
                weight = weight.clone()
                weight[:, columns] = 0
                return weight

            model = world.patcher.clone()
            model.add_weight_wrapper(key, zero_columns)
            rows[f"top {top} neurons by {name}"] = readout(fg.generate(world, probes, model), probes, concept)
            print(concept, top, name, rows[f"top {top} neurons by {name}"], flush=True)
    overlap = {top: len(set(torch.topk(amount, top).indices.tolist()) & set(torch.topk(pattern, top).indices.tolist()))
               for top in tops}
    return {"layer": module_path, "concept": concept, "pairs": len(pairs), "calls": steps,
            "ratio_pattern_to_amount": round(float(pattern.sum() / amount.sum().clamp_min(1e-12)), 2),
            "top_overlap": overlap, "cuts": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=CONCEPTS)
    parser.add_argument("--probes", type=int, default=24, help="images per concept and cut")
    parser.add_argument("--r2", type=float, nargs="+", default=[0.01, 0.1, 0.3])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pattern", nargs=2, metavar=("LAYER", "CONCEPT"), default=None,
                        help="only the pattern-vs-amount probe of one layer's input (module path) for one concept")
    parser.add_argument("--top", type=int, nargs="+", default=[26, 64], help="neurons cut by each ranking")
    parser.add_argument("--out", type=Path, default=Path("out/diagnosis.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = load_toyworld(args.weights)
    start = time.perf_counter()
    if args.pattern:
        report = {"model": {"file": args.weights.name, "world_version": world.world_version},
                  "generation": GENERATION, "probes": args.probes,
                  **pattern_probe(world, args.pattern[0], args.pattern[1], args.probes, args.top)}
        write_report(args.out, report, start)
        return
    report = {"model": {"file": args.weights.name, "world_version": world.world_version},
              "settings": dataclasses.asdict(fg.SETTINGS), "generation": GENERATION, "probes": args.probes,
              "concepts": {c: diagnose(world, c, args.probes, args.r2, 700 + i) for i, c in enumerate(args.concepts)}}
    write_report(args.out, report, start)


if __name__ == "__main__":
    main()
