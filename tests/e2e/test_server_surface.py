"""What the server shows and enforces for the pack: node definitions, validation, errors, interrupts."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from .graphs import fia_chain, plain_generation, save_mask
from .server import PACK_FOLDER, PromptRejected
from .workflow_api import with_defaults

# node id -> (socket inputs by name, output types)
SOCKETS = {
    "FIAComputeConceptSaliency": ({"model": "MODEL", "clip": "CLIP"}, ["FIA_SALIENCY"]),
    "FIASelectSensitiveNeurons": ({"saliency": "FIA_SALIENCY"}, ["FIA_CONCEPT_MASKS"]),
    "FIAFuseMasks": ({f"{n}{s}": "FIA_CONCEPT_MASKS" for n, s in (("concept_masks", ""), ("concept_masks", "_2"),
                      ("concept_masks", "_3"), ("concept_masks", "_4"), ("keep", ""))}, ["FIA_MASK"]),
    "FIAApplyUnlearningMask": ({"model": "MODEL", "mask": "FIA_MASK"}, ["MODEL"]),
    "FIASaveMask": ({"mask": "FIA_MASK"}, ["STRING"]),
    "FIALoadMask": ({}, ["FIA_MASK"]),
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def images(entry: dict, server) -> list[np.ndarray]:
    files = [server.output_dir / i["subfolder"] / i["filename"] for o in entry["outputs"].values() for i in o["images"]]
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def messages(entry: dict, kind: str) -> list[dict]:
    return [data for name, data in entry["status"]["messages"] if name == kind]


def inputs_of(info: dict) -> dict[str, list]:
    return {**info["input"]["required"], **info["input"].get("optional", {})}


@pytest.mark.parametrize("node_id", sorted(SOCKETS))
def test_core_node_is_registered_with_typed_sockets(node_id, object_info):
    info = object_info[node_id]
    sockets = {name: spec[0] for name, spec in inputs_of(info).items() if spec[0] not in WIDGET_TYPES}
    assert (sockets, info["output"]) == SOCKETS[node_id]


def test_every_pack_node_has_tooltips_on_every_input_and_output(object_info):
    pack_nodes = {k: v for k, v in object_info.items() if v["python_module"].endswith(PACK_FOLDER)}
    assert set(SOCKETS) <= set(pack_nodes)
    for node_id, info in pack_nodes.items():
        assert info["category"] == "FIA" and info["description"], node_id
        assert all(spec[1].get("tooltip") for spec in inputs_of(info).values()), f"{node_id}: an input lacks a tooltip"
        assert len(info["output_tooltips"]) == len(info["output"]) and all(info["output_tooltips"]), node_id


def test_mask_wired_into_a_model_input_is_rejected(comfy_server, checkpoint_name, object_info):
    prompt = fia_chain(checkpoint_name) | plain_generation(checkpoint_name, 1, "never", model=["22", 0])
    with_defaults(prompt, object_info)
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.queue(prompt)
    errors = rejected.value.body["node_errors"]["13"]["errors"]  # the KSampler
    assert rejected.value.status == 400 and errors[0]["type"] == "return_type_mismatch"
    assert "FIA_MASK" in errors[0]["details"] and "MODEL" in errors[0]["details"]


def test_invalid_values_are_node_errors_and_the_server_keeps_working(comfy_server, checkpoint_name, object_info):
    prompt = with_defaults(save_mask(fia_chain(checkpoint_name), "e2e/errors"), object_info)
    prompt["21"]["inputs"]["r2"] = 2
    with pytest.raises(PromptRejected) as rejected:
        comfy_server.queue(prompt)
    [error] = rejected.value.body["node_errors"]["21"]["errors"]
    assert error["type"] == "value_bigger_than_max" and error["extra_info"]["input_name"] == "r2"

    # a value only the node can judge fails at run time: reported for that node, not a crash
    prompt["21"]["inputs"].update(r2=0.0, r2_overrides="Van Gogh: 2")
    entry = comfy_server.wait(comfy_server.queue(prompt))
    [failure] = messages(entry, "execution_error")
    assert entry["status"]["status_str"] == "error" and failure["node_type"] == "FIASelectSensitiveNeurons"
    assert failure["exception_type"].endswith("FIAInputError") and "r2_overrides" in failure["exception_message"]

    prompt["21"]["inputs"]["r2_overrides"] = "Van Gogh: 0.03"
    comfy_server.run(prompt)
    assert list((comfy_server.models_dir / "fia_masks" / "e2e").glob("errors_*.safetensors"))


def test_interrupted_saliency_leaves_server_usable_and_model_unpatched(comfy_server, checkpoint_name, object_info):
    reference = comfy_server.run(plain_generation(checkpoint_name, 99, "e2e/interrupt"))

    # per-pair noise: 1000 pairs from 30 placeholders (shared noise refuses repeats)
    long_run = fia_chain(checkpoint_name, prompt_pairs=1000, steps=1000, recorded_steps=1000, noise="per-pair")
    long_run = with_defaults(save_mask(long_run, "e2e/never"), object_info)
    prompt_id = comfy_server.queue(long_run)
    deadline = time.monotonic() + 60
    while not any(item[1] == prompt_id for item in comfy_server.get("/queue")["queue_running"]):
        assert time.monotonic() < deadline, "the long saliency run never started"
        time.sleep(0.2)
    time.sleep(3)  # the loader is cached, so the saliency node is what runs now
    comfy_server.request("POST", "/interrupt", {"prompt_id": prompt_id})
    entry = comfy_server.wait(prompt_id, timeout=120)
    [interrupted] = messages(entry, "execution_interrupted")
    assert interrupted["node_type"] == "FIAComputeConceptSaliency"
    assert comfy_server.get("/queue")["queue_running"] == []

    # ComfyUI 0.33 keeps outputs across prompts (RAM-pressure cache): the same graph again might run
    # nothing. KSamplerAdvanced samples the same image in a node that has to run.
    again = comfy_server.run(plain_generation(checkpoint_name, 99, "e2e/interrupt", advanced=True))
    cached = {node for m in messages(again, "execution_cached") for node in m["nodes"]}
    assert "1" in cached and "13" not in cached, "the sampler must rerun on the same loaded model"
    [before], [after] = images(reference, comfy_server), images(again, comfy_server)
    assert np.array_equal(before, after), "the interrupted run left the shared model changed"


def test_saliency_is_reused_while_its_inputs_stay_and_recomputed_when_one_changes(
        comfy_server, checkpoint_name, object_info):
    """Both output caches (0.3.75's last-prompt cache, 0.33's RAM-pressure cache that keeps outputs
    across prompts) key on the node's inputs: the expensive saliency run must follow them."""

    def graph(seed: int, r1: float, text: str) -> dict:
        prompt = save_mask(fia_chain(checkpoint_name, concepts="Rembrandt\nPaul Cezanne", seed=seed), "e2e/cache")
        prompt["21"]["inputs"]["r1"] = r1
        prompt |= plain_generation(checkpoint_name, 5, "e2e/cache", model=["24", 0])
        prompt["10"]["inputs"]["text"] = text
        prompt["24"] = {"class_type": "FIAApplyUnlearningMask",
                        "inputs": {"model": ["1", 0], "mask": ["22", 0], "strength": 1.0, "mode": "patch"}}
        return with_defaults(prompt, object_info)

    def ran(entry: dict) -> set[str]:
        cached = {node for m in messages(entry, "execution_cached") for node in m["nodes"]}
        return {"20", "21", "13"} - cached

    def saved() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (comfy_server.models_dir / "fia_masks" / "e2e").glob("cache_*")}

    assert ran(comfy_server.run(graph(1244, 0.05, "a mill by a river"))) == {"20", "21", "13"}
    # only the sampler's prompt and the selection ratio changed: the saliency record is reused
    assert ran(comfy_server.run(graph(1244, 0.06, "a barn in the snow"))) == {"21", "13"}
    before = saved()
    # the saliency seed changed: recorded again, and the mask it gives is new (equal masks save equal bytes)
    assert ran(comfy_server.run(graph(1245, 0.06, "a barn in the snow"))) == {"20", "21", "13"}
    [new] = set(saved().values()) - set(before.values())
    assert len(saved()) == len(before) + 1
