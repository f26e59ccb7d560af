"""Prompt pairs: templates, shared seeds, shared base sets, and input checks."""

import pytest


def test_pairs_are_built_like_the_reference(engine):
    p = engine.prompts
    pairs = p.build_prompt_pairs("golf ball", p.PRESETS["objects"], 4, seed=1244)
    assert {pair.base_prompt for pair in pairs} == {f"a {place}" for place in p.PLACES[:4]}
    for pair in pairs:
        assert pair.seed == 1244  # one starting latent for every prompt of the run
        place = pair.base_prompt.removeprefix("a ")
        template = "a golf ball in a " if p.PLACES.index(place) % 2 == 0 else "a golf ball near the "
        assert pair.concept_prompt == template + place
    assert [x.base_prompt for x in pairs] != [f"a {place}" for place in p.PLACES[:4]]  # shuffled
    per_pair = p.build_prompt_pairs("golf ball", p.PRESETS["objects"], 4, seed=1244, noise="per-pair")
    assert [x.seed for x in per_pair] == [1244, 1245, 1246, 1247]
    assert [x.concept_prompt for x in per_pair] == [x.concept_prompt for x in pairs]


def test_shared_noise_refuses_repeated_placeholders(engine):
    p = engine.prompts
    with pytest.raises(engine.FIAInputError, match="prompt_pairs: 31 pairs but only 30 placeholders"):
        p.build_prompt_pairs("cat", p.PRESETS["objects"], 31, seed=0)
    assert len(p.build_prompt_pairs("cat", p.PRESETS["objects"], 31, seed=0, noise="per-pair")) == 31
    with pytest.raises(engine.FIAInputError, match="noise: 'fresh' is unknown"):
        p.build_prompt_pairs("cat", p.PRESETS["objects"], 3, seed=0, noise="fresh")


def test_concepts_share_base_sets(engine):
    p = engine.prompts
    a = p.build_prompt_pairs("cat", p.PRESETS["art"], 0, seed=7)
    b = p.build_prompt_pairs("Monet", p.PRESETS["art"], 0, seed=7)
    assert len(a) == len(p.OBJECTS)
    assert p.base_set_id(a) == p.base_set_id(b)
    assert p.base_set_id(a) != p.base_set_id(p.build_prompt_pairs("cat", p.PRESETS["art"], 0, seed=8))


def test_custom_templates_are_checked(engine):
    p = engine.prompts
    with pytest.raises(engine.FIAInputError, match=r"concept_template.*\{concept\}"):
        p.resolve_preset("custom", "a painting of a {placeholder}", "a {placeholder}", "dog")
    with pytest.raises(engine.FIAInputError, match="base_template"):
        p.resolve_preset("custom", "{concept} {placeholder}", "{concept}", "dog")
    with pytest.raises(engine.FIAInputError, match="placeholders"):
        p.resolve_preset("custom", "{concept} {placeholder}", "{placeholder}", "")
    preset = p.resolve_preset("custom", "a {placeholder} by {concept}", "a {placeholder}", "dog\ncat")
    assert [x.concept_prompt for x in p.build_prompt_pairs("Dali", preset, 2, 0)] in (
        ["a dog by Dali", "a cat by Dali"], ["a cat by Dali", "a dog by Dali"])


def test_concept_list_parsing(engine):
    p = engine.request
    assert p.parse_concepts("Van Gogh\n\n# comment\n Monet ") == ["Van Gogh", "Monet"]
    with pytest.raises(engine.FIAInputError, match="concepts: the list is empty"):
        p.parse_concepts(" \n# only a comment\n")
    with pytest.raises(engine.FIAInputError, match="concepts: 'Cat' is listed twice"):
        p.parse_concepts("cat\nCat")


def test_one_resolution_checks_both_lists(engine):
    resolve = engine.request.resolve_concepts
    assert resolve(["cat", "dog"], ["bird"]).recorded == ["cat", "dog", "bird"]
    with pytest.raises(engine.FIAInputError, match="keep: 'Bird' is listed twice"):
        resolve(["cat"], ["bird", "Bird"])
    with pytest.raises(engine.FIAInputError, match="keep: dog is both forgotten and kept"):
        resolve(["cat", "Dog"], ["dog"])
    with pytest.raises(engine.FIAInputError, match="template slot"):
        resolve(["cat"], ["{placeholder}"])


def test_r2_overrides_and_paper_defaults(engine):
    p = engine.request
    overrides = p.parse_r2_overrides("Van Gogh: 0.03\n", ["Van Gogh", "Monet"])
    assert overrides == {"van gogh": 0.03}
    assert p.resolve_r2("Van Gogh", "art", 0.0, {}) == 0.03
    assert p.resolve_r2("Monet", "art", 0.0, {}) == 0.02
    assert p.resolve_r2("parachute", "objects", 0.0, {}) == 0.03
    assert p.resolve_r2("church", "objects", 0.0, {}) == 0.007
    assert p.resolve_r2("church", "objects", 0.05, {}) == 0.05
    assert p.resolve_r2("Monet", "art", 0.05, {"monet": 0.01}) == 0.01
    with pytest.raises(engine.FIAInputError, match="not one of the concepts"):
        p.parse_r2_overrides("Picasso: 0.1", ["Monet"])
    with pytest.raises(engine.FIAInputError, match="cannot read"):
        p.parse_r2_overrides("Monet 0.1", ["Monet"])
    with pytest.raises(engine.FIAInputError, match="cannot read"):
        p.parse_r2_overrides("Monet: 2", ["Monet"])
