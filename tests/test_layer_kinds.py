"""The paper's layer ablation: ff2 (default), ff1, cross-attention k/v and self-attention k/v, with the
same saliency, selection and fusion, recorded on those layers' inputs, through the nodes and mask files."""

import json

import comfy.patcher_extension
import pytest
import torch
from chain import apply_node, fuse_node, loaded_state, saliency_node, select_node

from devkit import tiny, tiny_archs

SUFFIXES = {
    "ff2": (".ff.net.2",), "ff1": (".ff.net.0.proj",),
    "cross-attn kv": (".attn2.to_k", ".attn2.to_v"), "self-attn kv": (".attn1.to_k", ".attn1.to_v"),
}


@pytest.fixture(scope="module")
def sd15():
    return tiny.tiny_sd15_patcher(seed=0)


@pytest.fixture(scope="module")
def clip():
    return tiny.tiny_clip()


def linears(patcher, suffixes):
    return [path for path, module in patcher.model.diffusion_model.named_modules()
            if isinstance(module, torch.nn.Linear) and path.endswith(suffixes)]


@pytest.mark.parametrize("kind", list(SUFFIXES))
def test_each_kind_finds_its_linears_in_execution_order(engine, sd15, kind):
    spec, layers = engine.layers_of_patcher(sd15, kind=kind)
    assert spec.layers == kind and {layer.kind for layer in layers} == {kind}
    assert [layer.module_path for layer in layers] == linears(sd15, SUFFIXES[kind])
    assert len(layers) == len(engine.layers_of_patcher(sd15)[1]) * len(SUFFIXES[kind]) <= spec.max_layers
    named = dict(sd15.model.diffusion_model.named_modules())
    assert all(layer.shape == tuple(named[layer.module_path].weight.shape) for layer in layers)


@pytest.mark.parametrize(("name", "kind", "count"), [
    ("SDXL", "self-attn kv", 140), ("SDXL", "ff1", 70), ("SD2.x", "cross-attn kv", 32),
    ("SD3.5 large", "ff1", 38), ("Flux dev", "ff1", 19),
])
def test_full_size_counts_fit_the_file_bound(engine, name, kind, count):
    cfg, model = tiny_archs.full_size_model(name)
    spec = engine.architecture_of(cfg).with_layers(kind)
    layers = engine.discover_layers(model.diffusion_model, spec, ("all",) if "SD3" not in name else None)
    default = engine.discover_layers(model.diffusion_model, spec)
    assert len(default) == count and len(layers) <= spec.max_layers


@pytest.mark.parametrize("family", ["SD3", "Flux"])
@pytest.mark.parametrize("kind", ["cross-attn kv", "self-attn kv"])
def test_joint_attention_families_refuse_key_value_kinds(engine, family, kind):
    patcher = tiny_archs.tiny_patcher(family)
    with pytest.raises(engine.FIAInputError, match=rf"layers: {family} models cannot use '{kind}' \(joint "
                                                   r"attention .*\); use ff2, ff1\."):
        engine.layers_of_patcher(patcher, kind=kind)


def test_unknown_kind_is_refused(engine, sd15):
    with pytest.raises(engine.FIAInputError, match="layers: 'attn' is unknown; use one of ff2, ff1, cross-attn kv"):
        engine.layers_of_patcher(sd15, kind="attn")


def test_flux_ff1_is_the_double_blocks_mlp_input(engine):
    patcher = tiny_archs.tiny_patcher("Flux")
    _, layers = engine.layers_of_patcher(patcher, ("all",), kind="ff1")
    assert layers and all(layer.module_path.endswith(("img_mlp.0", "txt_mlp.0")) for layer in layers)
    assert {layer.stream for layer in layers} == {"img", "txt"}
    assert {layer.stream for layer in engine.layers_of_patcher(patcher, kind="ff1")[1]} == {"img"}
    with pytest.raises(engine.FIAInputError, match="no 'single' stream"):
        engine.layers_of_patcher(patcher, ("single",), kind="ff1")


def test_spec_variants_go_back_and_forth(engine, sd15):
    spec = engine.architecture_of(sd15.model.model_config)
    there = spec.with_layers("cross-attn kv").with_layers("ff1")
    back = there.with_layers("ff2")
    probe = torch.nn.Linear(1, 1, device="meta")
    assert there.layers == "ff1" and there.is_prunable("a.transformer_blocks.0.ff.net.0.proj", probe)
    assert back.layers == "ff2" and back.max_layers == spec.max_layers
    assert back.is_prunable("a.transformer_blocks.0.ff.net.2", probe)
    assert not back.is_prunable("a.transformer_blocks.0.attn2.to_k", probe)


def record(engine, patcher, clip, kind, concepts=("cat", "dog")):
    sampling = engine.SamplingSettings(steps=10, recorded_steps=2, width=64, height=64, prompts_per_batch=3)
    return engine.compute_saliency(patcher, tiny.clip_encoder(clip), list(concepts), engine.resolve_preset("objects"),
                                   num_pairs=3, settings=sampling, layer_kind=kind)


def test_cross_attention_records_the_text_once_for_key_and_value(engine, sd15, clip):
    """to_k and to_v of one block read the same context, so their recorded statistics are equal;
    self-attention's read the image features, which differ from block to block."""
    saliency = record(engine, sd15, clip, "cross-attn kv")
    means = saliency.concept_moments["cat"]
    keys = [layer.key for layer in saliency.layers]
    for k, v in zip(keys[::2], keys[1::2], strict=True):
        assert k.endswith("to_k.weight") and v.endswith("to_v.weight")
        assert torch.equal(means[k].mean, means[v].mean)
    first = means[keys[0]].mean
    assert all(torch.equal(first, means[k].mean) for k in keys[::2])  # every block reads the same text
    assert not torch.equal(first, saliency.concept_moments["dog"][keys[0]].mean)
    self_attn = record(engine, sd15, clip, "self-attn kv", concepts=("cat",)).concept_moments["cat"]
    keys = list(self_attn)
    assert not torch.equal(self_attn[keys[0]].mean, self_attn[keys[2]].mean)


@pytest.mark.parametrize("kind", ["ff1", "cross-attn kv", "self-attn kv"])
def test_nodes_prune_exactly_the_kinds_weights_and_the_file_keeps_the_kind(pack, engine, sd15, clip, tmp_path, kind):
    before = loaded_state(sd15)
    saliency = saliency_node(pack, sd15, clip, layers=kind)
    mask = fuse_node(pack, select_node(pack, saliency, r2=0.1))
    assert mask.pruned_count > 0 and {layer.kind for layer in mask.layers} == {kind}
    after = loaded_state(apply_node(pack, sd15, mask))
    pruned_names = set()
    for layer in mask.layers:
        name = layer.key.removeprefix("diffusion_model.")
        expected = before[name].clone()
        expected.view(-1)[mask.pruned[layer.key].long()] = 0.0
        assert torch.equal(after[name], expected), name
        pruned_names.add(name)
    assert all(torch.equal(after[n], w) for n, w in before.items() if n not in pruned_names)
    path = engine.save_mask(mask, tmp_path / f"{kind}.safetensors")
    loaded = engine.load_mask(path)
    assert loaded.layers == mask.layers and all(torch.equal(loaded.pruned[k], mask.pruned[k].long()) or
                                                torch.equal(loaded.pruned[k], mask.pruned[k]) for k in mask.pruned)
    assert f"{len(mask.layers)} " in engine.inspection.fused_mask_summary(loaded)
    assert "layers" in engine.inspection.fused_mask_summary(loaded).split("\n")[0]
    assert torch.equal(loaded_state(apply_node(pack, sd15, loaded))[mask.layers[0].key.removeprefix("diffusion_model.")],
                       after[mask.layers[0].key.removeprefix("diffusion_model.")])


def test_ff2_files_do_not_name_a_kind(engine, sd15, tmp_path):
    mask = tiny.seeded_mask(engine, sd15, 0.01)
    path = engine.save_mask(mask, tmp_path / "ff2.safetensors")
    layers = json.loads(engine.read_metadata(path)["layers"])
    assert all("kind" not in layer for layer in layers)
    assert {layer.kind for layer in engine.load_mask(path).layers} == {"ff2"}


def rewritten(engine, path, tmp_path, edit):
    """A copy of a mask file whose layer list went through `edit`."""
    from safetensors.torch import load_file, save_file

    metadata = engine.read_metadata(path)
    layers = json.loads(metadata["layers"])
    edit(layers)
    out = tmp_path / "edited.safetensors"
    save_file(load_file(path), out, metadata=metadata | {"layers": json.dumps(layers)})
    return out


def test_files_claiming_a_wrong_or_mixed_kind_are_refused(pack, engine, sd15, clip, tmp_path):
    mask = fuse_node(pack, select_node(pack, saliency_node(pack, sd15, clip, layers="cross-attn kv"), r2=0.1))
    path = engine.save_mask(mask, tmp_path / "kv.safetensors")

    def mixed(layers):
        del layers[1]["kind"]

    def relabelled(layers):
        for layer in layers:
            layer["kind"] = "self-attn kv"

    def unknown(layers):
        layers[0]["kind"] = ["ff2"]

    for edit, message in [(mixed, "layers are of more than one kind"),
                          (relabelled, r"attn2.to_k' is not a self-attention key/value layer of SD1.x"),
                          (unknown, r"layers\[0\].kind: \"\['ff2'\]\" is not one of ff2, ff1")]:
        with pytest.raises(engine.FIAInputError, match=message):
            engine.load_mask(rewritten(engine, path, tmp_path, edit))


def test_masks_of_two_kinds_are_not_fused(pack, engine, sd15, clip):
    ff1 = select_node(pack, saliency_node(pack, sd15, clip, layers="ff1", concepts="cat"), r2=0.1)
    ff2 = select_node(pack, saliency_node(pack, sd15, clip, concepts="dog"), r2=0.1)
    with pytest.raises(engine.FIAInputError, match="its layers are ff2, those of .* ff1; compute both with the same"):
        fuse_node(pack, ff1, ff2)


def test_unlearn_node_refuses_a_missing_kind_before_sampling(pack, engine):
    patcher = tiny_archs.tiny_patcher("SD3")
    calls = []
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "count",
                                 lambda executor, *a, **k: calls.append(1) or executor(*a, **k))
    with pytest.raises(engine.FIAInputError, match="SD3 models cannot use 'self-attn kv'"):
        pack.nodes.FIAUnlearn.execute(model=patcher, clip=tiny_archs.HashClip("SD3"), concepts="cat", preset="objects",
                                      prompt_pairs=2, seed=1, recorded_steps=1, r2=0.0, alpha=0.0, strength=1.0,
                                      layers="self-attn kv")
    assert calls == []
