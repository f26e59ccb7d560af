"""EmojiWorld's benchmark tasks (issue #24 items 2-5): styles, harmful content, image quality and
robustness, in quick mode on the committed model, and the pieces each rests on."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from toyworld.emoji import data
from toyworld.emoji.world import HARMFUL_CODES, EmojiWorld, words_of

MODEL = Path(__file__).parents[1] / "toyworld" / "weights" / "emojiworld.safetensors"
METHODS = {"base", "fia", "fia-exact", "union", "conceptprune", "uce"}
pytestmark = pytest.mark.toyworld


@pytest.fixture(scope="module")
def world() -> EmojiWorld:
    return EmojiWorld(data.load_renders())


def quick_report(tmp_path: Path, task: str) -> dict:
    """The task's quick run: its report's settings, and its table in docs/evaluation.md's form."""
    from devkit import doc_tables
    from toyworld.emoji import benchmarks

    out = tmp_path / f"{task}.json"
    benchmarks.main(["--task", task, "--quick", "--report", str(out), "--threads", "1"])
    report = json.loads(out.read_text())
    assert report["task"] == task and report["quick"] and report["seconds"] > 0
    assert report["protocol"] == benchmarks.dataclasses.asdict(benchmarks.QUICK)
    table = doc_tables.EMOJI_BENCHMARKS[task](report)
    assert all(f"| {method} |" in table for method in METHODS), table
    return report[task]


def assert_base_quality_is_its_own(methods: dict) -> None:
    """The base model against itself: the same images, so distance 0; every other method is measured."""
    assert methods["base"]["image_quality"]["frechet_to_base"] == 0.0
    for result in methods.values():
        assert 0.0 <= result["image_quality"]["prompted_probability"] <= 1.0
        assert result["image_quality"]["frechet_to_base"] >= 0.0


# --- image quality ---------------------------------------------------------------------------

def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift() -> None:
    from toyworld.emoji.image_quality import frechet_distance

    a = torch.randn(400, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a) < 1e-6
    assert frechet_distance(a, a + 0.5) == pytest.approx(8 * 0.25, rel=1e-6)  # same covariance: the mean term alone
    assert frechet_distance(a, a + 1.0) > frechet_distance(a, a + 0.5)
    b = 2 * a  # covariance x4: tr(C + 4C - 2 * 2C) = tr(C)
    assert frechet_distance(a, b) == pytest.approx(float(torch.cov(a.T).trace()) + float(a.mean(0).pow(2).sum()), rel=1e-4)


# --- harmful content: the prompt sets --------------------------------------------------------

def test_harmful_prompts_name_no_member_indirectly_and_tag_with_their_own_tags(world: EmojiWorld) -> None:
    from toyworld.emoji.benchmarks import HARMFUL_INDIRECT, harmful_probes

    members = [world.index[c] for c in HARMFUL_CODES]
    banned = {w for m in members for text in (world.name(m), *world.concepts[m].tags) for w in words_of(text)}
    vocabulary = set(world.vocabulary)
    for prompt in HARMFUL_INDIRECT:
        assert not set(words_of(prompt)) & banned, prompt
        assert set(words_of(prompt)) <= vocabulary, prompt  # read by the encoder, not <unk>
    probes = harmful_probes(world, 2)
    assert probes == harmful_probes(world, 2)
    full = harmful_probes(world, 16)
    assert len({p.seed for p in full}) == len(full)  # at the full protocol's count too
    assert len({p.seed for p in probes}) == len(probes)
    owners = Counter(t for c in world.concepts for t in set(c.tags))
    groups = {g: [p for p in probes if p.group == g] for g in ("name", "tag", "indirect")}
    assert {p.concept for p in groups["name"]} == set(members)
    assert all(world.name(p.concept) in p.prompt for p in groups["name"])
    assert len(groups["tag"]) == 2 * sum(len(world.tags.get(m, ())) for m in members) > 0
    for p in groups["tag"]:  # `a {tag}`, alone or on a scene, the tag one no other emoji has
        said = words_of(p.prompt)
        tag = next(t for t in world.tags[p.concept] if said[1:1 + len(words_of(t))] == words_of(t))
        assert owners[tag] == 1 and tag in world.concepts[p.concept].tags and p.concept in members
    assert [p.prompt for p in groups["indirect"]] == [q for q in HARMFUL_INDIRECT for _ in range(2)]
    assert all(p.concept == -1 and p.place is None for p in groups["indirect"])


# --- robustness: the search and the revival, on their own ------------------------------------

def test_greedy_search_spends_its_budget_exactly_and_is_deterministic() -> None:
    from toyworld.emoji.robustness import greedy_search

    vocabulary = ("axe", "fish", "dog", "church", "parachute", "bomb", "a", "in")
    calls: list[int] = []

    def score(prompts: list[str]) -> list[float]:  # a real, deterministic score: share of the letter a
        calls.append(len(prompts))
        return [p.count("a") / len(p) for p in prompts]

    start = ["a", "a", "dog"]
    first = greedy_search(score, start, vocabulary, rounds=3, candidates=4, seed=5)
    assert calls == [1, 4, 4, 4] and len(first.scored) == 13
    assert first.scored[0] == ("a a dog", score(["a a dog"])[0])
    assert all(len(p.split()) == len(start) and set(p.split()) <= set(vocabulary) for p, _ in first.scored)
    assert first.score == max(s for _, s in first.scored) >= first.scored[0][1]
    assert (first.best, first.score) in first.scored
    random.seed(1)  # its own seeded generator: the global one changes nothing
    assert greedy_search(score, start, vocabulary, 3, 4, seed=5) == first
    assert greedy_search(score, start, vocabulary, 3, 4, seed=6).scored != first.scored


def test_soft_impute_recovers_a_low_rank_matrix_from_its_kept_entries() -> None:
    from toyworld.emoji.robustness import keep_largest, soft_impute

    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(60, 3, generator=gen) @ torch.randn(3, 40, generator=gen)  # rank 3
    missing = torch.rand(60, 40, generator=gen) < 0.25
    pruned = truth.masked_fill(missing, 0.0)
    filled = soft_impute(pruned, missing, rank=3, iterations=500)
    assert torch.equal(filled[~missing], pruned[~missing])
    error = (filled[missing] - truth[missing]).norm() / truth[missing].norm()
    assert error < 1e-3
    wrong_rank = soft_impute(pruned, missing, rank=1, iterations=500)
    assert (wrong_rank[missing] - truth[missing]).norm() / truth[missing].norm() > 10 * error
    values = torch.tensor([0.1, -3.0, 0.5, 2.0, -0.2])
    assert keep_largest(values, 0.6).tolist() == [0.0, -3.0, 0.5, 2.0, 0.0]
    assert torch.equal(keep_largest(values, 1.0), values)


def test_revival_fills_only_the_zeroed_weights_on_a_clone(engine) -> None:
    """A seeded random mask on the committed model: the revived model differs from the unlearned
    one only where it was zeroed, by the completion of the zeroed matrix alone; neither input
    patcher is changed."""
    from fia_engine.host.layers import effective_weights, original_weights
    from toyworld.common.loader import load_toyworld
    from toyworld.emoji.robustness import revive, soft_impute

    tw = load_toyworld(MODEL)
    spec, layers = engine.layers_of_patcher(tw.patcher)
    gen = torch.Generator().manual_seed(3)
    pruned = {layer.key: torch.randperm(layer.out_features * layer.in_features, generator=gen)[:500 if i < 3 else 0]
              .sort().values for i, layer in enumerate(layers)}
    mask = engine.UnlearningMask(spec.family, layers, pruned, {k: v[:0] for k, v in pruned.items()}, ["x"],
                                 engine.masks.StatedSettings({}), "")
    unlearned = engine.apply_mask(tw.patcher, mask)
    patches_before = {k: list(v) for k, v in unlearned.patches.items()}
    base_before = {k: list(v) for k, v in tw.patcher.patches.items()}
    revived, did = revive(unlearned, iterations=4)
    assert {k: list(v) for k, v in unlearned.patches.items()} == patches_before
    assert {k: list(v) for k, v in tw.patcher.patches.items()} == base_before
    assert did["layers"] == 3 and did["filled_weights"] == 1500
    originals = original_weights(tw.patcher, layers[:3])
    zeroed = effective_weights(unlearned, layers[:3], originals)
    after = effective_weights(revived, layers[:3], originals)
    for layer in layers[:3]:
        missing = zeroed[layer.key] == 0
        assert int(missing.sum()) == 500
        rank = round(0.25 * min(layer.out_features, layer.in_features))
        expected = soft_impute(zeroed[layer.key], missing, rank, 4)
        assert torch.equal(after[layer.key][~missing], originals[layer.key].float()[~missing])
        assert torch.allclose(after[layer.key][missing], expected[missing], atol=1e-6)
        assert (after[layer.key][missing] != 0).all()


# --- the tasks in quick mode ------------------------------------------------------------------

@pytest.mark.slow
def test_styles_task_quick_run_reports_every_method_and_run(tmp_path: Path) -> None:
    from toyworld.emoji.world import NAMED_STYLES

    report = quick_report(tmp_path, "styles")
    assert set(report["runs"]) == {"lineart", "lineart + noto"}
    assert len(report["preserve_concepts"]) == 4
    for run in report["runs"].values():
        methods = run["methods"]
        assert set(methods) == METHODS and run["alpha"] == 0.8
        assert run["r2"] == {s: 0.02 for s in run["forgotten"]}
        assert methods["conceptprune"]["skill_ratio"] == 0.02
        assert methods["uce"]["erased_prompts"] == 30 * len(run["forgotten"])
        for result in methods.values():
            assert set(result["style_accuracy"]) == set(NAMED_STYLES)
            for key in ("forgetting_accuracy", "kept_style_accuracy", "default_look_kept", "overall"):
                assert 0.0 <= result[key] <= 1.0, key
            assert set(result["concept_drawn"]) == set(result["preserve_accuracy"]) == {"cnn", "template"}
        assert_base_quality_is_its_own(methods)
    one, two = (report["runs"][k]["methods"]["union"]["pruned_weights"] for k in ("lineart", "lineart + noto"))
    assert two > one > 0  # union of lineart and noto holds lineart's selection


@pytest.mark.slow
def test_harmful_task_quick_run_counts_members_per_prompt_set_and_reader(tmp_path: Path) -> None:
    report = quick_report(tmp_path, "harmful")
    assert len(report["members"]) == 10 and set(report["methods"]) == METHODS
    assert report["prompts"]["name"] == 20 and report["prompts"]["indirect"] == 24 and report["prompts"]["tag"] > 0
    assert not set(report["preserve_concepts"]) & set(report["members"])
    assert report["methods"]["conceptprune"]["skill_ratio"] == 0.01
    assert report["methods"]["fia"]["pruned_weights"] > 0
    for result in report["methods"].values():
        shown = result["shows_a_member"]
        assert set(shown) == {"name", "tag", "indirect", "all"}
        assert all(set(v) == {"cnn", "template"} and all(0 <= x <= 1 for x in v.values()) for v in shown.values())
    assert_base_quality_is_its_own(report["methods"])


@pytest.mark.slow
def test_robustness_task_quick_run_reports_synonyms_search_and_revival(tmp_path: Path) -> None:
    from toyworld.emoji.benchmarks import QUICK
    from toyworld.emoji.robustness import PRUNING

    report = quick_report(tmp_path, "robustness")
    assert report["tagged"] and set(report["tagged"]) <= set(report["concepts"])
    for result in report["synonyms"].values():
        assert set(result["per_concept"]) == set(report["tagged"])
        assert set(result["name"]) == set(result["tag"]) == {"cnn", "template"}
    revival = report["revival"]
    for name in PRUNING:
        full, kept = revival[f"{name} revived (keep 1)"], revival[f"{name} revived (keep 0.6)"]
        assert full["filled_weights"] == revival[name]["pruned_weights"]
        assert kept["filled_weights"] == pytest.approx(0.6 * full["filled_weights"], abs=16)  # rounded per layer
        assert 0 <= full["sign_restored"] <= 1 and full["relative_error"] > 0
    assert_base_quality_is_its_own(revival)
    search = report["adversarial"]["concepts"]
    assert list(search) == report["concepts"][:QUICK.attacked]
    for concept, result in search.items():
        assert result["prompts_scored"] == 1 + QUICK.search_rounds * QUICK.search_candidates
        assert result["images"] == result["prompts_scored"] * QUICK.search_seeds + 2 * QUICK.held_out_seeds
        assert result["held_out"]["original"]["prompt"] == f"a {concept}"
        assert len(words_of(result["best_prompt"])) == 3 + len(words_of(f"a {concept}"))
        assert result["search_score"] >= result["start_score"]


# --- the demo (`make demo`) -------------------------------------------------------------------

def test_demo_refuses_an_object_the_model_never_learnt(tmp_path: Path) -> None:
    from toyworld.emoji import demo

    with pytest.raises(SystemExit, match="--objects: the model was not trained on 'cityscape'"):
        demo.main(["--objects", "cityscape", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # refused before anything was sampled or written


def test_demo_verdict_judges_only_what_the_base_model_draws() -> None:
    from toyworld.emoji.demo import verdict

    def rates(before: float, after: float) -> dict:
        return {"before": {"cnn": before, "template": before / 2}, "after": {"cnn": after, "template": after}}

    measured = {"dog": rates(0.9, 0.05), "church": rates(0.8, 0.6), "other concepts": rates(0.7, 0.68)}
    said = verdict(measured, ["dog", "church"])
    assert said.startswith("Forgotten: dog.") and "Still drawn: church." in said
    assert "Kept (at least 90% of the base model's rate): other concepts." in said
    measured["church"] = rates(0.3, 0.0)
    assert verdict(measured, ["dog", "church"]).startswith("Cannot judge: the base model draws church in 30%")


@pytest.mark.slow
def test_demo_quick_run_writes_grid_mask_and_report(tmp_path: Path) -> None:
    from PIL import Image

    from fia_engine import load_mask
    from toyworld.emoji import demo

    demo.main(["--quick", "--objects", "dog", "fish", "--styles", "noto", "--out", str(tmp_path), "--threads", "1"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["forgotten"] == ["dog", "fish", "noto"] and report["pruned_weights"] > 0
    assert set(report["rates"]) >= {"dog", "fish", "noto", "other concepts", "lineart style"}
    assert report["verdict"] and report["verdict"] in (tmp_path / "report.md").read_text()
    assert load_mask(tmp_path / "mask.safetensors").pruned_count == report["pruned_weights"]
    grid = Image.open(tmp_path / "grid.png")
    assert grid.width > 2 * 2 * demo.TILE and grid.height > len(report["rates"]) * demo.TILE
