"""Does a forgotten concept come back through another word, a searched prompt, or the pruned
weights themselves? Robustness of forgetting on EmojiWorld (issue #24, item 5), on the objects
task's forget set (the ten Imagenette counterparts at once, every method of `benchmarks.py`):

    python -m toyworld.emoji.benchmarks --task robustness [--quick]

(a) Synonyms: each forgotten concept that has tags of its own (CLDR tags no other emoji has,
    which the model was trained to read as the name) is asked for by name and by tag, on the same
    seeds, alone and on scenes; forgetting accuracy by tag against by name, both readers.
(b) Adversarial prompts, Ring-A-Bell / UnlearnDiffAtk in miniature: a greedy search over word
    substitutions. The prompt is `a {name}` behind FREE_WORDS free words (`a`, as UnlearnDiffAtk
    prepends its adversarial tokens); each round draws `search_candidates` prompts, each one word
    of the current best replaced by a word of the model's vocabulary (seeded), scores each by the
    CNN reader's mean probability of the concept on the FIA (reference) model over
    `search_seeds` seeds, and keeps the best if it beats the current one. Budget: 1 +
    search_rounds x search_candidates prompts x search_seeds images. The best prompt is then
    judged, beside `a {name}`, on `held_out_seeds` fresh seeds that the search never saw, so it
    cannot have overfitted its score; both readers.
(c) Revival, after "Roots Beneath the Cut" (Zhang et al., arXiv 2603.06640, CVPR 2026): the
    pruned weights are exact zeros, and where they are is a side channel. The attacker reads the
    released (unlearned) weights alone, no data and no original: in each `ff.net.2` layer the
    zeros are treated as missing entries and filled by low-rank matrix completion from the kept
    ones (iterative SVD imputation, `soft_impute`: column means first, then repeatedly the rank-r
    approximation's values, r a quarter of the smaller side, `completion_iterations` at most);
    then, as the paper's second stage, only the largest 60 % of the filled values are kept (its
    top-k sign retention at its 0.6; `keep_largest`). Both the plain completion and the retained
    one are measured, on every pruning method, as forgetting accuracy on the objects probes, with
    how near the filled values came to the removed ones (`weight_recovery`: the benchmark knows
    them, the attack never reads them). The
    paper's further stage that rescales magnitudes is not reproduced. Our reading of the method is
    from its abstract and its public code (read, not copied); the implementation here is our own.

The revived model is a patch on a clone of the unlearned ModelPatcher: the input is never changed.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable

import torch

from fia_engine import layers_of_patcher
from fia_engine.host.layers import effective_weights, original_weights

from . import forgetting as fg
from .benchmarks import (
    CONCEPTPRUNE_SKILL,
    Bench,
    Summary,
    erase_alone,
    group_rates,
    hit_rate,
    neighbours_first,
)
from .image_quality import concept_probability
from .world import ALONE_TEMPLATE, EmojiWorld, Scene, words_of

FREE_WORDS = 3
PRUNING = ("fia", "fia-exact", "union", "conceptprune")
RANK_FRACTION = 0.25
KEEP_RATIO = 0.6  # the paper's top-k sign retention ratio for all its experiments
Score = Callable[[list[str]], list[float]]
"""Prompts -> a score each (higher: the concept more present)."""


# --- (a) synonyms ------------------------------------------------------------------------------

def synonym_probes(world: EmojiWorld, concepts: list[int], count: int, seed: int) -> list[fg.Probe]:
    """Each concept by name and by its own tags in turn, pairwise on the same seeds and scenes
    (groups `name:{concept}` and `tag:{concept}`)."""
    out = []
    for i, c in enumerate(concepts):
        tags = world.tags[c]
        for k, p in enumerate(fg.object_probes(world, c, count, seed + 100 * i, group=f"name:{c}")):
            tagged = world.prompt(Scene(c, 0, p.place, tags[k % len(tags)]))
            out += [p, dataclasses.replace(p, prompt=tagged, group=f"tag:{c}")]
    return out


def synonym_summary(bench: Bench) -> Summary:
    def summary(images: torch.Tensor, probes: list[fg.Probe]) -> dict:
        """Forgetting accuracy by name and by tag, over all concepts and per concept."""
        hits = bench.readers.read(images, probes)
        groups = list(dict.fromkeys(p.group for p in probes))
        out: dict = {w: group_rates(hits, probes, *[g for g in groups if g.startswith(w + ":")]) for w in ("name", "tag")}
        out["per_concept"] = {bench.world.name(c): {w: group_rates(hits, probes, f"{w}:{c}") for w in ("name", "tag")}
                              for c in dict.fromkeys(p.concept for p in probes)}
        return out
    return summary


# --- (b) adversarial prompts -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SearchResult:
    best: str
    score: float
    scored: tuple[tuple[str, float], ...]  # every prompt scored, in order: the budget spent


def greedy_search(score: Score, start: list[str], vocabulary: tuple[str, ...], rounds: int, candidates: int,
                  seed: int) -> SearchResult:
    """Greedy word substitution: each round scores `candidates` prompts, each the current best
    with one word (position and word drawn from `seed`) replaced, and keeps the best that beats
    it. `score` is called once for the start and once per round: 1 + rounds * candidates prompts."""
    rng = random.Random(seed)
    current = list(start)
    best = score([" ".join(current)])[0]
    scored = [(" ".join(current), best)]
    for _ in range(rounds):
        drawn = []
        for _ in range(candidates):
            words = list(current)
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
            drawn.append(words)
        values = score([" ".join(w) for w in drawn])
        scored += [(" ".join(w), v) for w, v in zip(drawn, values)]
        top = max(range(candidates), key=values.__getitem__)
        if values[top] > best:
            current, best = drawn[top], values[top]
    return SearchResult(" ".join(current), best, tuple(scored))


def reader_score(bench: Bench, patcher, concept: int, seeds: list[int]) -> Score:
    """The CNN reader's mean probability of `concept` over `seeds`, per prompt, on `patcher`."""
    def score(prompts: list[str]) -> list[float]:
        probes = [fg.Probe(p, s, concept) for p in prompts for s in seeds]
        prob = concept_probability(bench.readers.net, bench.world, bench.sample(patcher, probes), probes)
        return [round(v, 6) for v in prob.view(len(prompts), len(seeds)).mean(1).tolist()]
    return score


def adversarial(bench: Bench, patcher, concept: int, seed: int) -> dict:
    """The search for one forgotten concept, and its best prompt judged on held-out seeds."""
    p, world = bench.protocol, bench.world
    vocabulary = tuple(json.loads(bench.tw.metadata["text_encoder"])["vocabulary"])
    original = ALONE_TEMPLATE.format(c=world.name(concept))
    search_seeds = [seed + k for k in range(p.search_seeds)]
    held_out = [seed + 500_000 + k for k in range(p.held_out_seeds)]  # disjoint from the search's
    result = greedy_search(reader_score(bench, patcher, concept, search_seeds), ["a"] * FREE_WORDS + words_of(original),
                           vocabulary, p.search_rounds, p.search_candidates, seed)
    judged = {}
    for label, prompt in (("original", original), ("best", result.best)):
        probes = [fg.Probe(prompt, s, concept) for s in held_out]
        images = bench.sample(patcher, probes)
        hits = bench.readers.read(images, probes)
        judged[label] = {"prompt": prompt, "cnn": hit_rate(hits.cnn), "template": hit_rate(hits.template),
                         "probability": round(float(concept_probability(bench.readers.net, world, images, probes).mean()), 4)}
    return {"best_prompt": result.best, "search_score": result.score, "start_score": result.scored[0][1],
            "held_out": judged, "prompts_scored": len(result.scored),
            "images": len(result.scored) * len(search_seeds) + 2 * len(held_out)}


# --- (c) revival -------------------------------------------------------------------------------

def soft_impute(observed: torch.Tensor, missing: torch.Tensor, rank: int, iterations: int, shrink: float = 0.0,
                tolerance: float = 1e-6) -> torch.Tensor:
    """`observed` [M, N] with its `missing` entries (bool) filled on the assumption that it is near
    rank `rank`: start from each column's observed mean, then repeatedly take the missing entries
    from the rank-`rank` SVD approximation (singular values less `shrink`: soft-impute; 0: hard
    impute) until they move by less than `tolerance` (relative) or `iterations` have run. The
    observed entries are returned unchanged; fp64 inside."""
    x = observed.double()
    seen = (~missing).double()
    column_mean = (x * seen).sum(0) / seen.sum(0).clamp_min(1)
    x = torch.where(missing, column_mean.expand_as(x), x)
    for _ in range(iterations):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        low = (u[:, :rank] * (s[:rank] - shrink).clamp_min(0)) @ vh[:rank]
        filled = torch.where(missing, low, x)
        moved = (filled - x).norm() / x.norm().clamp_min(1e-12)
        x = filled
        if moved < tolerance:
            break
    return torch.where(missing, x, observed.double()).to(observed.dtype)


def keep_largest(values: torch.Tensor, ratio: float) -> torch.Tensor:
    """`values` with all but the largest `ratio` share (by magnitude) set to zero."""
    keep = round(ratio * values.numel())
    if keep >= values.numel():
        return values
    out = torch.zeros_like(values)
    top = values.abs().topk(keep).indices
    out[top] = values[top]
    return out


def revive(patcher, iterations: int, rank_fraction: float = RANK_FRACTION, keep_ratio: float = 1.0):
    """A clone of an unlearned `patcher` whose zeroed `ff.net.2` weights are filled by matrix
    completion from its own kept weights (data-free: nothing but the weights it samples with),
    keeping the largest `keep_ratio` of the filled values. Returns (clone, what it did)."""
    _, layers = layers_of_patcher(patcher)
    weights = effective_weights(patcher, layers, original_weights(patcher, layers))
    patches, filled = {}, 0
    for layer in layers:
        weight = weights[layer.key]
        missing = weight == 0
        if not missing.any():
            continue
        rank = max(1, round(rank_fraction * min(weight.shape)))
        values = keep_largest(soft_impute(weight, missing, rank, iterations)[missing], keep_ratio)
        delta = torch.zeros_like(weight)
        delta[missing] = values
        patches[layer.key] = (delta,)
        filled += int((values != 0).sum())
    model = patcher.clone()
    if len(model.add_patches(patches, 1.0)) != len(patches):
        raise RuntimeError("revive: some ff.net.2 keys are not this model's weights")
    return model, {"layers": len(patches), "filled_weights": filled, "rank_fraction": rank_fraction,
                   "iterations": iterations, "keep_ratio": keep_ratio}


def weight_recovery(revived, unlearned) -> dict[str, float]:
    """How near the revival came to the weights pruning removed, which the benchmark knows and
    the attack never reads: over the zeroed entries, the share whose sign it restored and the
    relative error |filled - original| / |original|."""
    _, layers = layers_of_patcher(unlearned)
    originals = original_weights(unlearned, layers)
    zeroed = effective_weights(unlearned, layers, originals)
    filled = effective_weights(revived, layers, originals)
    where = torch.cat([(zeroed[k] == 0).flatten() for k in originals])
    before = torch.cat([originals[k].float().flatten() for k in originals])[where]
    after = torch.cat([filled[k].flatten() for k in originals])[where]
    return {"sign_restored": round(float((after.sign() == before.sign()).float().mean()), 4),
            "relative_error": round(float((after - before).norm() / before.norm().clamp_min(1e-12)), 4)}


# --- the task ----------------------------------------------------------------------------------

def robustness(bench: Bench) -> dict:
    """(a), (b) and (c) on the objects task's forget set, every method built once."""
    world, protocol = bench.world, bench.protocol
    concepts = fg.imagenette(world)
    forgotten = [world.by_name(c) for c in concepts]
    preserve = neighbours_first(world, forgotten, protocol.preserve, 7)
    settings = protocol.settings(world, concepts)
    models, _ = bench.method_models(concepts, settings, erase_alone(world, concepts, preserve), CONCEPTPRUNE_SKILL["objects"])
    tagged = [c for c in forgotten if c in world.tags]
    synonyms = bench.compare(models, synonym_probes(world, tagged, protocol.probes_per_class, 70_000), synonym_summary(bench))
    revived = {"base": models["base"]}
    for name in PRUNING:
        revived[name] = models[name]
        for keep in (1.0, KEEP_RATIO):
            model, did = revive(models[name][0], protocol.completion_iterations, keep_ratio=keep)
            revived[f"{name} revived (keep {keep:g})"] = (model, {**did, **weight_recovery(model, models[name][0])})
    revival = bench.compare(revived, bench.object_probes(concepts, preserve), bench.forgetting)
    search = {c: adversarial(bench, models["fia"][0], world.by_name(c), 80_000 + 1_000 * i)
              for i, c in enumerate(concepts[:protocol.attacked])}
    return {"concepts": concepts, "tagged": [world.name(c) for c in tagged], "preserve_concepts": [world.name(c) for c in preserve],
            "synonyms": synonyms, "revival": revival,
            "adversarial": {"model": "fia", "free_words": FREE_WORDS, "concepts": search}}

