"""Every shipped workflow runs on a real ComfyUI server, around the stock loader, sampler and decoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from .graphs import SIZE
from .runner import WORKFLOW_FILES, WorkflowRun, load_ui
from .workflow_api import nodes_of, to_api

ARTISTS = ["Van Gogh", "Claude Monet", "Pablo Picasso", "Leonardo Da Vinci", "Salvador Dali"]


def fusions(run: WorkflowRun) -> list[tuple[int, int]]:
    """(concepts, pruned weights) of every FIA Fuse Masks output of the run, from its saved mask file."""
    return [(len(json.loads(meta["concepts"])), int(meta["pruned_weights"]))
            for meta in map(mask_metadata, run.fused_masks)]


def only(prompt: dict, class_type: str) -> tuple[str, dict]:
    found = nodes_of(prompt, class_type)
    assert len(found) == 1, f"expected one {class_type}, found {len(found)}"
    return next(iter(found.items()))


def source_class(prompt: dict, node: dict, input_name: str) -> str:
    return prompt[node["inputs"][input_name][0]]["class_type"]


def mask_metadata(path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_workflow_runs_and_saves_its_outputs(name, runner, comfy_server):
    run = runner.run(name)
    saves, mask_saves = run.outputs_of("SaveImage"), nodes_of(run.prompt, "FIASaveMask")
    assert saves or mask_saves, f"{name} has no output node"
    for node_id, files in saves.items():
        assert len(files) == 1, f"SaveImage {node_id} wrote {files}"
        assert files[0].is_file() and pixels(files[0]).shape == (SIZE, SIZE, 3)
    for node in mask_saves.values():
        prefix = node["inputs"]["filename_prefix"]
        [written] = (comfy_server.models_dir / "fia_masks").glob(f"{prefix}_*_.safetensors")
        metadata = mask_metadata(written)
        assert metadata["format"] == "fia-unlearning-mask" and metadata["architecture"] == "SD1.x"
        assert int(metadata["pruned_weights"]) > 0


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_shipped_settings_follow_the_paper(name, object_info):
    prompt = to_api(load_ui(name), object_info)  # as shipped, no test overrides
    for node in nodes_of(prompt, "FIAComputeConceptSaliency").values():
        assert {k: node["inputs"][k] for k in ("seed", "steps", "recorded_steps", "cfg", "prompt_pairs")} == {
            "seed": 1244, "steps": 50, "recorded_steps": 10, "cfg": 7.5, "prompt_pairs": 0}
        assert (node["inputs"]["schedule"], node["inputs"]["noise"]) == ("reference", "shared")
    for node in nodes_of(prompt, "FIASelectSensitiveNeurons").values():
        assert node["inputs"]["r1"] == 0.05 and node["inputs"]["method"] == "fia"
    for node in nodes_of(prompt, "KSampler").values():
        assert (node["inputs"]["seed"], node["inputs"]["steps"], node["inputs"]["cfg"]) == (1244, 50, 7.5)


def test_server_offers_the_workflows_as_templates(comfy_server):
    templates = comfy_server.get("/workflow_templates")
    assert sorted(templates.get("comfyui-forget-it-all", [])) == [n.removesuffix(".json") for n in WORKFLOW_FILES]


def test_artist_workflow_forgets_five_styles_with_the_paper_r2(runner):
    run = runner.run("01_forget_artist_styles.json")
    _, saliency = only(run.prompt, "FIAComputeConceptSaliency")
    assert saliency["inputs"]["preset"] == "art" and saliency["inputs"]["concepts"].splitlines() == ARTISTS
    assert only(run.prompt, "FIASelectSensitiveNeurons")[1]["inputs"]["r2"] == 0  # preset defaults (0.02, 0.03)
    assert only(run.prompt, "FIAFuseMasks")[1]["inputs"]["alpha"] == 0.8
    assert source_class(run.prompt, only(run.prompt, "KSampler")[1], "model") == "FIAApplyUnlearningMask"
    [(concepts, pruned)] = fusions(run)
    assert concepts == 5 and pruned > 0


def test_keep_workflow_forgets_three_artists_and_spares_the_fourth(runner):
    run = runner.run("06_forget_artists_keep_one.json")
    _, fuse = only(run.prompt, "FIAFuseMasks")
    assert fuse["inputs"]["alpha"] == 0 and source_class(run.prompt, fuse, "keep") == "FIASelectSensitiveNeurons"
    kept_saliency = run.prompt[run.prompt[fuse["inputs"]["keep"][0]]["inputs"]["saliency"][0]]
    assert kept_saliency["inputs"]["concepts"] == "Claude Monet" and kept_saliency["inputs"]["preset"] == "art"
    [(concepts, pruned)] = fusions(run)
    assert concepts == 3 and pruned > 0
    keep = json.loads(mask_metadata(run.fused_masks[0])["hyperparameters"])["keep"]
    assert keep["concepts"] == ["Claude Monet"]


def test_object_workflow_compares_base_and_unlearned_with_one_seed(runner):
    run = runner.run("02_forget_objects_before_after.json")
    samplers = list(nodes_of(run.prompt, "KSampler").values())
    assert len(samplers) == 2
    shared = ("seed", "positive", "negative", "latent_image", "steps", "cfg", "sampler_name", "scheduler")
    assert all(samplers[0]["inputs"][k] == samplers[1]["inputs"][k] for k in shared)
    assert sorted(source_class(run.prompt, s, "model") for s in samplers) == [
        "CheckpointLoaderSimple", "FIAApplyUnlearningMask"]
    [(concepts, pruned)] = fusions(run)
    assert concepts == 10 and pruned > 0
    before, after = (pixels(files[0]) for files in run.outputs_of("SaveImage").values())
    assert not np.array_equal(before, after), "pruning did not change the unlearned model's image"


def test_explicit_workflow_prunes_the_whole_single_concept_selection(runner):
    run = runner.run("03_remove_explicit_content.json")
    _, saliency = only(run.prompt, "FIAComputeConceptSaliency")
    assert (saliency["inputs"]["concepts"], saliency["inputs"]["preset"]) == ("naked", "explicit")
    assert only(run.prompt, "FIASelectSensitiveNeurons")[1]["inputs"]["r2"] == 0.01
    [(concepts, pruned)] = fusions(run)
    assert concepts == 1 and pruned > 0, "with C = 1 the selection must be pruned, not kept as agnostic"


def test_saved_mask_is_listed_then_loaded_and_applied_after_the_lora(runner, comfy_server):
    run = runner.run("04b_load_mask_after_lora.json")  # runs 04a first and refreshes the mask list
    _, load = only(run.prompt, "FIALoadMask")
    mask_file = comfy_server.models_dir / "fia_masks" / load["inputs"]["mask_name"]
    assert mask_file.is_file(), f"the shipped mask_name does not match what 04a saved: {mask_file}"
    metadata = mask_metadata(mask_file)
    assert metadata["format"] == "fia-unlearning-mask" and metadata["architecture"] == "SD1.x"
    assert json.loads(metadata["concepts"]) == ARTISTS
    _, apply_node = only(run.prompt, "FIAApplyUnlearningMask")
    assert source_class(run.prompt, apply_node, "model") in {"LoraLoader", "LoraLoaderModelOnly"}
    assert source_class(run.prompt, only(run.prompt, "KSampler")[1], "model") == "FIAApplyUnlearningMask"
    assert "lora key not loaded" not in run.log, "the test LoRA did not reach the model"
    # the mask matches the checkpoint under the LoRA: its fingerprint is of the unpatched weights
    assert "was computed on other weights" not in run.log


def test_fuse_workflow_merges_two_saliency_runs(runner):
    run = runner.run("05_fuse_objects_and_artists.json")
    _, fuse = only(run.prompt, "FIAFuseMasks")
    selects = [run.prompt[fuse["inputs"][k][0]] for k in ("concept_masks", "concept_masks_2")]
    presets = {run.prompt[s["inputs"]["saliency"][0]]["inputs"]["preset"] for s in selects}
    assert presets == {"objects", "art"}
    [(concepts, pruned)] = fusions(run)
    assert concepts == 5 and pruned > 0
