"""Values only the HTTP API can send, and hostile save prefixes, through a real server: each is
refused at run time with the pack's FIAInputError naming the input, leaves nothing behind, and the
server goes on working."""

from __future__ import annotations

import os

import pytest

from .graphs import LOADER, fia_chain, loader, save_mask
from .server import PromptRejected
from .workflow_api import with_defaults

INSPECT = {"class_type": "FIAMaskInspector", "inputs": {}}
SOCKET = {"mask": "FIA_MASK", "saliency": "FIA_SALIENCY", "concept_masks": "FIA_CONCEPT_MASKS"}


def refusal(server, prompt: dict) -> dict:
    """The execution_error of a prompt that passed ComfyUI's validation and failed in a node."""
    entry = server.wait(server.queue(prompt))
    assert entry["status"]["status_str"] == "error"
    [error] = [data for name, data in entry["status"]["messages"] if name == "execution_error"]
    return error


def tree(root) -> dict[str, int]:
    return {os.path.relpath(os.path.join(d, n), root): (-1 if n in dirs else os.path.getsize(os.path.join(d, n)))
            for d, dirs, files in os.walk(root) for n in dirs + files}


# (prompt without the checkpoint loader, node id and type that must refuse, input it must name)
API_ONLY = {
    "combo number": ({"1a": {"class_type": "FIALoadMask", "inputs": {"mask_name": 5}},
                      "2": INSPECT | {"inputs": {"mask": ["1a", 0]}}}, "FIALoadMask", "mask_name"),
    "combo null": ({"1a": {"class_type": "FIALoadMask", "inputs": {"mask_name": None}},
                    "2": INSPECT | {"inputs": {"mask": ["1a", 0]}}}, "FIALoadMask", "mask_name"),
    "save": ({"2": {"class_type": "FIASaveMask", "inputs": {"mask": "not a mask", "filename_prefix": "z"}}},
             "FIASaveMask", "mask"),
    "apply": ({"2": {"class_type": "FIAApplyUnlearningMask",
                     "inputs": {"model": [LOADER, 0], "mask": "not a mask", "strength": 1.0, "mode": "patch"}},
               "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}, "FIAApplyUnlearningMask", "mask"),
    "inspector": ({"2": INSPECT | {"inputs": {"mask": "not a mask"}}}, "FIAMaskInspector", "mask"),
    "select": ({"2": {"class_type": "FIASelectSensitiveNeurons",
                      "inputs": {"saliency": "not saliency", "r1": 0.05, "r2": 0.0, "r2_overrides": "", "method": "fia"}},
                "3": INSPECT | {"inputs": {"concept_masks": ["2", 0]}}}, "FIASelectSensitiveNeurons", "saliency"),
    "fuse": ({"2": {"class_type": "FIAFuseMasks",
                    "inputs": {"concept_masks": {"a": 1}, "alpha": 0.0, "fusion": "union"}},
              "3": INSPECT | {"inputs": {"mask": ["2", 0]}}}, "FIAFuseMasks", "concept_masks"),
}


@pytest.mark.parametrize("case", sorted(API_ONLY))
def test_values_only_the_api_can_send_are_refused_by_name(comfy_server, checkpoint_name, case):
    """ComfyUI 0.3.75 checks neither a V3 combo's value against its list nor that a socket input
    holds a link; the node boundary refuses both before the node's own code runs."""
    graph, node_type, name = API_ONLY[case]
    masks = comfy_server.models_dir / "fia_masks"
    before = tree(masks) if masks.exists() else {}
    try:
        error = refusal(comfy_server, loader(checkpoint_name) | graph)
    except PromptRejected as rejected:  # newer ComfyUI (0.33) checks a combo's list itself, by name
        [(node_id, errors)] = rejected.body["node_errors"].items()
        assert name == "mask_name" and graph[node_id]["class_type"] == node_type
        assert [(e["type"], e["extra_info"]["input_name"]) for e in errors["errors"]] == [("value_not_in_list", name)]
        return
    assert error["node_type"] == node_type and error["exception_type"].endswith("FIAInputError")
    assert error["exception_message"].startswith(f"{name}: "), error["exception_message"]
    fix = "Save a mask with FIA Save Mask first" if name == "mask_name" else f"is not a {SOCKET[name]}. Connect "
    assert fix in error["exception_message"], error["exception_message"]
    assert (tree(masks) if masks.exists() else {}) == before


def test_unwritable_save_prefixes_are_refused_and_leave_nothing(comfy_server, checkpoint_name, object_info):
    """The prefixes of issue #28, on the server's real mask folder; then a plain prefix saves."""
    def graph(prefix: str) -> dict:
        return with_defaults(save_mask(fia_chain(checkpoint_name, concepts="Titian\nEl Greco"), prefix), object_info)

    comfy_server.run(graph("e2e/prefix"))
    models = comfy_server.models_dir
    before = tree(models)
    for prefix, problem in [("x" * 250, "this file system allows 255"),
                            (("d" * 200 + "/") * 30 + "deep", "whole path"),
                            ("nul\u0000byte", "NUL character"), ("../evil_up", "outside the mask folder")]:
        error = refusal(comfy_server, graph(prefix))
        assert error["node_type"] == "FIASaveMask" and error["exception_type"].endswith("FIAInputError")
        assert error["exception_message"].startswith("filename_prefix: ") and problem in error["exception_message"]
        assert tree(models) == before, prefix
    comfy_server.run(graph("e2e/prefix_after"))  # a new prefix: 0.33 may answer a repeated one from its cache
    [new] = set(tree(models)) - set(before)
    assert new == os.path.join("fia_masks", "e2e", "prefix_after_00001_.safetensors")
