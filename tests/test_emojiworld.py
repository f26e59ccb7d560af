"""EmojiWorld: provisioning (checksums, refusals), world semantics, readers' floors, the loader
through ComfyUI, and sampling the committed model. Needs `make emoji-data` (make test runs it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from toyworld.emoji import data
from toyworld.emoji.data import PLACED
from toyworld.emoji.world import HARMFUL_CODES, IMAGENETTE, EmojiWorld, Scene, concept_subset, words_of

WEIGHTS = Path(__file__).parents[1] / "toyworld" / "weights"
MODEL = WEIGHTS / "emojiworld.safetensors"
READER = WEIGHTS / "emoji_reader.safetensors"
pytestmark = pytest.mark.toyworld


@pytest.fixture(scope="module")
def renders() -> data.Renders:
    return data.load_renders()


@pytest.fixture(scope="module")
def world(renders) -> EmojiWorld:
    return EmojiWorld(renders)


# --- provisioning ---------------------------------------------------------------------------

def test_fetched_packages_match_their_pinned_checksums() -> None:
    tarballs = data.fetch()  # everything cached: hashes each tarball, fetches nothing
    assert set(tarballs) == set(data.PACKAGES)
    for name, path in tarballs.items():
        assert data._sha256(path) == data.PACKAGES[name].sha256


def test_a_tampered_package_is_refused_and_set_aside(tmp_path: Path) -> None:
    pkgs = tmp_path / "packages"
    pkgs.mkdir()
    for pkg in data.PACKAGES.values():
        shutil.copy(data.CACHE / "packages" / pkg.tarball, pkgs / pkg.tarball)
    victim = pkgs / data.PACKAGES["openmoji"].tarball
    with victim.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(data.EmojiDataMissing, match=r"openmoji-17\.0\.0\.tgz: SHA-256 .* is not the pinned"):
        data.fetch(tmp_path)
    assert not victim.exists() and victim.with_suffix(".tgz.bad").exists()


def test_missing_data_names_the_packages_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(data.EmojiDataMissing) as err:
        data.load_renders(tmp_path)
    message = str(err.value)
    for pkg in data.PACKAGES.values():
        assert pkg.tarball in message
    assert "make emoji-data" in message


def test_renders_cover_every_base_emoji_in_every_style(renders) -> None:
    assert len(renders.concepts) == 1623
    assert renders.objects.shape == (1623, len(data.STYLES), data.SIZE, data.SIZE, 4)
    assert renders.placed.shape == (1623, data.PLACED, data.PLACED, 4)
    per_style = renders.present.sum(0).tolist()
    # Fluent by name (emoji-data.md); OpenMoji's line-art "new button" draws nothing
    assert per_style == [1623, 1623, 1623, 1622, 1543]
    visible = renders.objects[..., 3].flatten(2).amax(-1) > 0  # [N, S]
    assert torch.equal(visible, renders.present)  # no empty drawing counted as present
    categories = {c.category for c in renders.concepts}
    assert "Flags" not in categories and len(categories) == 8


# --- world semantics ------------------------------------------------------------------------

def test_a_base_prompt_image_holds_no_concept(world: EmojiWorld) -> None:
    """The objects preset's base `a {place}` is the scene alone; the concept changes only its own
    window; the art preset's base `a {name}` is the unnamed default look, never a named style."""
    dog, cityscape = world.index[IMAGENETTE["English springer"]], world.places.index(world.index["1F3D9"])
    base = world.draw(Scene(world.places[cityscape]))
    with_dog = world.draw(Scene(dog, 0, cityscape), offset=(4, 10))
    changed = (with_dog - base).abs().amax(-1) > 0
    assert changed.any()
    ys, xs = torch.nonzero(changed, as_tuple=True)
    assert ys.min() >= 4 and ys.max() < 4 + PLACED and xs.min() >= 10 and xs.max() < 10 + PLACED
    assert world.prompt(Scene(world.places[cityscape])) == "a cityscape"
    assert world.prompt(Scene(dog, 0, cityscape)) in world.on_place_prompts(dog, cityscape)
    default = world.draw(Scene(dog))
    assert world.prompt(Scene(dog)) == "a dog" and world.prompt(Scene(dog, 2)) == "a dog in openmoji style"
    for style in range(1, 5):
        assert not torch.allclose(default, world.draw(Scene(dog, style)), atol=0.05)
    blank = torch.ones(32, 32, 3)
    assert (default - blank).abs().amax() > 0.5  # alone: a drawing on white


def test_training_prompts_name_exactly_what_the_image_shows(world: EmojiWorld) -> None:
    images, prompts, scenes = world.batch(11, 400)
    again = world.batch(11, 400)
    assert torch.equal(images, again[0]) and prompts == again[1]
    empty = sum(p == "" for p in prompts)
    assert 20 <= empty <= 70  # 10 % unconditional
    tagged = 0
    for prompt, scene in zip(prompts, scenes):
        if not prompt:
            continue
        assert prompt == world.prompt(scene)
        if scene.word is not None:
            tagged += 1
            assert scene.word in world.tags[scene.concept]
        if scene.style:
            assert prompt.endswith(f"in {data.STYLES[scene.style]} style") and world.has_style(scene.concept, scene.style)
        else:
            assert not any(w in words_of(prompt) for w in data.STYLES)
    assert tagged > 20


def test_tags_are_synonyms_of_one_concept_only(world: EmojiWorld) -> None:
    owners: dict[str, int] = {}
    for concept, tags in world.tags.items():
        for tag in tags:
            assert tag in world.concepts[concept].tags
            assert not set(words_of(tag)) & set(words_of(world.name(concept)))
            assert owners.setdefault(tag, concept) == concept
    vocabulary = set(world.vocabulary)
    for i in range(len(world.concepts)):
        assert set(words_of(world.name(i))) <= vocabulary


def test_concept_subset_keeps_benchmark_concepts_and_every_category(world: EmojiWorld) -> None:
    subset = concept_subset(world, 480, 0)
    assert subset == concept_subset(world, 480, 0) and subset != concept_subset(world, 480, 1)
    assert 470 <= len(subset) <= 490
    for code in (*IMAGENETTE.values(), *HARMFUL_CODES):
        assert world.index[code] in subset
    assert set(world.places) <= set(subset)
    assert {world.concepts[i].category for i in subset} == {c.category for c in world.concepts}


# --- readers --------------------------------------------------------------------------------

def _held_out(world_subset: EmojiWorld, strength: float, n: int):
    from toyworld.emoji.train_readers import HELD_OUT_SEED, labelled_batch

    return labelled_batch(world_subset, HELD_OUT_SEED + 17 + int(strength), n, strength)


@pytest.fixture(scope="module")
def reader():
    from toyworld.emoji.readers import load_reader

    return load_reader(READER)


@pytest.fixture(scope="module")
def reader_world(renders, reader) -> EmojiWorld:
    return EmojiWorld.trained_on(renders, list(reader.concepts))


# The committed reader's held-out figures (reports/readers.json: clean 98.5 % alone, 83.6 % on a scene,
# style 99.2 %; degraded 97.9 %, 72.0 %, 97.0 %), less sampling noise on 400 images (about 100 on
# scenes: 57.9 % of them read right in this test's draw, degraded). Below the
# issue's 97 % for objects on scenes: the reader needs more training or width there.
FLOORS = {0.0: (0.96, 0.75, 0.96), 1.0: (0.95, 0.5, 0.94)}


@pytest.mark.slow
@pytest.mark.parametrize("strength", [0.0, 1.0])
def test_cnn_reader_floor_on_held_out_renders(reader, reader_world, strength: float) -> None:
    images, concept, style, places = _held_out(reader_world, strength, 400)
    c_prob, s_prob = reader.read(images)
    right = c_prob.argmax(1) == concept
    alone = places < 0
    alone_floor, placed_floor, style_floor = FLOORS[strength]
    assert right[alone].float().mean() >= alone_floor
    assert right[~alone].float().mean() >= placed_floor
    assert (s_prob.argmax(1) == style)[alone].float().mean() >= style_floor


def test_template_reader_reads_clean_renders_and_empty_scenes(reader_world: EmojiWorld) -> None:
    from toyworld.emoji.readers import TemplateReader

    template = TemplateReader(reader_world, reader_world.trained)
    images, concept, _, places = _held_out(reader_world, 0.0, 120)
    alone = places < 0
    assert (template.read(images[alone]) == concept[alone]).float().mean() >= 0.97
    assert (template.read(images[~alone], places[~alone]) == concept[~alone]).float().mean() >= 0.75  # 89.9 % on 2,000
    empty = torch.stack([reader_world.draw(Scene(reader_world.places[p])) for p in range(3)])
    assert torch.isinf(template.placed_scores(empty, torch.arange(3))).all()


def test_every_reader_of_both_worlds_is_a_reader(reader, reader_world: EmojiWorld) -> None:
    """common.readers.Reader: each world's two readers read a batch, whatever form a reading takes."""
    from toyworld.common.readers import Reader
    from toyworld.emoji.readers import TemplateReader
    from toyworld.shapes import world as shapes
    from toyworld.shapes.colour_rule import ColourRule
    from toyworld.shapes.evaluator import load_evaluator

    shape_images = shapes.batch(5, 3)[0]
    emoji_images = _held_out(reader_world, 0.0, 3)[0]
    template = TemplateReader(reader_world, reader_world.trained[:8])
    for one, images in ((load_evaluator(), shape_images), (ColourRule(), shape_images),
                        (reader, emoji_images), (template, emoji_images)):
        assert isinstance(one, Reader), one
        reading = one.read(images)
        assert len(reading[0] if isinstance(reading, tuple) else reading) == 3, one


# --- the model through ComfyUI --------------------------------------------------------------

@pytest.fixture(scope="module")
def emoji_model():
    from toyworld.common.loader import load_toyworld

    return load_toyworld(MODEL)


def test_loader_builds_the_sd15_layout_with_its_text_encoder(emoji_model, engine) -> None:
    import comfy.model_patcher

    model = emoji_model.patcher.model
    assert isinstance(emoji_model.patcher, comfy.model_patcher.ModelPatcher)
    spec = engine.architecture_of(model.model_config)
    layers = engine.discover_layers(model.diffusion_model, spec)
    assert spec.family == "SD1.x" and len(layers) == 16
    assert all(layer.module_path.endswith("ff.net.2") for layer in layers)
    meta = json.loads(emoji_model.metadata["text_encoder"])
    context = emoji_model.encoder(["a dog in noto style", "a dog"])
    assert context.shape == (2, 77, meta["dim"])
    assert torch.equal(context[0, :3], context[1, :3])  # causal: <bos> a dog see the same words
    assert not torch.allclose(context[0, 3], context[1, 3])  # "in" after "a dog" against <eos>
    codes = json.loads(emoji_model.metadata["concepts"])
    assert IMAGENETTE["parachute"] in codes and len(codes) >= 400


@pytest.mark.slow
def test_committed_model_samples_deterministically(emoji_model) -> None:
    a = emoji_model.generate(["a parachute in a cityscape", "a dog"], [3, 4], steps=4)
    b = emoji_model.generate(["a parachute in a cityscape", "a dog"], [3, 4], steps=4)
    assert a.shape == (2, 32, 32, 3) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_training_resumes_bit_for_bit(tmp_path: Path) -> None:
    """Two steps, stop, one more from the saved state = three steps in one run (weights, EMA, Adam)."""
    from safetensors.torch import load_file

    from toyworld.emoji import train

    def run(name: str, steps: int, resume: bool = False) -> None:
        train.main(["--concepts", "400", "--batch", "2", "--max-steps", str(steps), "--threads", "1",
                    "--out", str(tmp_path / f"{name}.safetensors"), "--state", str(tmp_path / f"{name}_state.safetensors"),
                    *(["--resume"] if resume else [])])

    run("straight", 3)
    run("stopped", 2)
    run("stopped", 3, resume=True)
    straight, resumed = load_file(str(tmp_path / "straight_state.safetensors")), load_file(str(tmp_path / "stopped_state.safetensors"))
    assert straight.keys() == resumed.keys() and any(k.startswith("opt.exp_avg.") for k in straight)
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    weights = load_file(str(tmp_path / "straight.safetensors"))
    assert any(k.startswith("text_encoder.") for k in weights)


def test_context_memo_gives_the_encoders_own_rows(emoji_model, world: EmojiWorld) -> None:
    """Training reads contexts from a memo: each prompt's row must be the batch encoder's, bit for bit."""
    from toyworld.common.training import ContextMemo

    memo = ContextMemo(emoji_model.encoder, max_prompts=40)
    for seed in range(3):  # later batches repeat prompts (the memo serves them) and outgrow max_prompts
        _, prompts, _ = world.batch(seed, 24)
        prompts += prompts[:4]
        assert torch.equal(memo(prompts), emoji_model.encoder(prompts))
    assert 0 < len(memo.rows) <= 40


# --- the base-quality protocol --------------------------------------------------------------

def test_quality_probes_cover_every_bar_with_fixed_seeds(reader_world: EmojiWorld) -> None:
    from toyworld.emoji import quality

    ps = quality.probes(reader_world)
    assert ps == quality.probes(reader_world) and len(ps) >= 600
    groups = {g: [p for p in ps if p.group == g] for g in dict.fromkeys(p.group for p in ps)}
    assert len(groups["random"]) == 200 and len({p.concept for p in groups["random"]}) == 200
    assert {reader_world.concepts[p.concept].code for p in groups["imagenette"]} == set(IMAGENETTE.values())
    assert {p.style for p in groups["styles"]} == {1, 2, 3, 4}
    assert {p.place for p in groups["scenes"]} == set(range(len(reader_world.places)))
    names, tags = groups["synonym_names"], groups["synonym_tags"]
    assert [(p.concept, p.seed) for p in names] == [(p.concept, p.seed) for p in tags]
    assert all(n.prompt != t.prompt for n, t in zip(names, tags))
    assert len({p.seed for p in ps if p.group != "synonym_tags"}) == len(ps) - len(tags)


def test_scene_reader_finds_the_scene_under_an_object(reader_world: EmojiWorld) -> None:
    from toyworld.emoji.readers import read_place

    gen = torch.Generator().manual_seed(3)
    scenes = [Scene(reader_world.placeable[5 * p], 0, p) for p in range(len(reader_world.places))]
    images = torch.stack([reader_world.draw(s, reader_world.random_offset(gen)) for s in scenes])
    assert read_place(reader_world, images).tolist() == list(range(len(reader_world.places)))


def test_quality_reads_renders_as_meeting_the_bars(reader_world: EmojiWorld, reader) -> None:
    """The protocol's own check: the world's renders in place of samples clear every bar, and a
    set of blank images clears none of the concept bars."""
    from toyworld.emoji import quality
    from toyworld.emoji.readers import TemplateReader

    ps = quality.probes(reader_world)
    gen = torch.Generator().manual_seed(1)
    images = torch.stack([reader_world.draw(Scene(p.concept, p.style, p.place), reader_world.random_offset(gen))
                          for p in ps])
    template = TemplateReader(reader_world, reader_world.trained)
    bars = quality.verdict(quality.read(reader_world, images, ps, reader, template))
    assert all(bar["met"] for bar in bars.values()), bars
    blank = quality.verdict(quality.read(reader_world, torch.ones_like(images), ps, reader, template))
    assert not any(bar["met"] for key, bar in blank.items() if key.startswith("imagenette"))


# --- benchmarks ------------------------------------------------------------------------------

def test_uce_maps_erased_tokens_to_their_targets_and_keeps_the_rest() -> None:
    from toyworld.emoji.baselines import uce_weights

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 16, generator=gen)
    erase, target, keep = (torch.randn(n, 16, generator=gen, dtype=torch.float64) for n in (3, 3, 40))
    edited = uce_weights(weight, erase, target, keep, lamb=0.1, erase_scale=1.0, preserve_scale=0.1).double()
    w = weight.double()
    assert (erase @ edited.T - target @ w.T).norm() < 0.2 * (erase @ w.T - target @ w.T).norm()
    assert (keep @ edited.T - keep @ w.T).norm() < 0.5 * (keep @ w.T).norm()
    unchanged = uce_weights(weight, erase, erase, keep)  # steering a concept to itself edits nothing
    assert torch.allclose(unchanged, weight, atol=1e-5)


@pytest.mark.slow
def test_objects_benchmark_quick_mode_runs_every_method(tmp_path: Path) -> None:
    from toyworld.emoji import benchmarks

    out = tmp_path / "objects.json"
    benchmarks.main(["--quick", "--scale", "--r2-sweep", "--report", str(out), "--threads", "1"])
    report = json.loads(out.read_text())
    methods = report["objects"]["methods"]
    assert set(methods) == {"base", "fia", "fia-exact", "union", "conceptprune", "uce"}
    assert methods["union"]["pruned_weights"] >= methods["fia"]["pruned_weights"] > 0
    assert methods["base"]["image_quality"]["frechet_to_base"] == 0.0  # the base against its own images
    for result in methods.values():
        assert set(result["forgetting_accuracy"]) == set(report["objects"]["concepts"])
        assert 0 <= result["image_quality"]["prompted_probability"] <= 1
        assert all(0 <= v <= 1 for r in result["forgetting_accuracy"].values() for v in r.values())
    assert len(report["objects"]["preserve_concepts"]) == 4
    assert not set(report["objects"]["preserve_concepts"]) & set(report["objects"]["concepts"])
    assert report["objects"]["r2"]["parachute"] == 0.03 and report["objects"]["r2"]["dog"] == 0.007
    assert set(report["scale"]) == {"1", "2"} and report["scale"]["2"]["pruned_weights"] > 0
    sweep = [report["objects"]["r2_sweep"][str(r2)] for r2 in benchmarks.R2_SWEEP[::2]]
    assert all(a["pruned_weights"] < b["pruned_weights"] for a, b in zip(sweep, sweep[1:]))  # more r2, more pruned
    assert all(set(s["forgetting_accuracy"]) == set(report["objects"]["concepts"]) for s in sweep)
    from devkit import doc_tables

    table = doc_tables.emoji_objects_table(report)
    assert all(f"| {method} |" in table for method in methods)
    assert all(f"| {r2} |" in table for r2 in report["objects"]["r2_sweep"])
