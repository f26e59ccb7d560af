"""The UI -> API converter on hand-made graphs (no server): the rules the e2e runs depend on."""

import pytest

from .workflow_api import WorkflowError, override, to_api, widget_slots, with_defaults

INFO = {
    "Loader": {"input": {"required": {"name": [["a.safetensors", "b.safetensors"], {}]}},
               "input_order": {"required": ["name"]}},
    "Sampler": {"input": {
        "required": {"model": ["MODEL", {}], "seed": ["INT", {}], "steps": ["INT", {"default": 20}],
                     "noise": ["INT", {"control_after_generate": True}], "mode": ["COMBO", {"options": ["x", "y"]}]},
        "optional": {"text": ["STRING", {}], "extra": ["MODEL", {}], "linked_only": ["INT", {"forceInput": True}]}},
        "input_order": {"required": ["model", "seed", "steps", "noise", "mode"],
                        "optional": ["text", "extra", "linked_only"]}},
}


def node(node_id, type_, widgets=(), inputs=(), mode=0):
    return {"id": node_id, "type": type_, "mode": mode, "widgets_values": list(widgets),
            "inputs": [{"name": name, "link": link} for name, link in inputs], "outputs": []}


def graph(*nodes, links=()):
    return {"nodes": list(nodes), "links": [list(link) for link in links], "version": 0.4}


def test_widget_slots_skip_seed_controls_and_socket_inputs():
    assert widget_slots(INFO["Sampler"]) == ["seed", None, "steps", "noise", None, "mode", "text"]


def test_widgets_links_reroutes_and_notes_convert_like_the_frontend():
    workflow = graph(
        node(1, "Loader", ["b.safetensors"]),
        node(2, "Reroute", inputs=[("", 1)]),
        node(3, "Sampler", [7, "fixed", 20, 3, "randomize", "y", "hi"], inputs=[("model", 2), ("steps", 3)]),
        node(4, "PrimitiveNode", [30]),
        node(5, "Note", ["explains the graph"]),
        links=[(1, 1, 0, 2, 0, "MODEL"), (2, 2, 0, 3, 0, "MODEL"), (3, 4, 0, 3, 2, "INT")],
    )
    prompt = to_api(workflow, INFO)
    assert set(prompt) == {"1", "3"}
    assert prompt["1"]["inputs"] == {"name": "b.safetensors"}
    # the reroute resolves to the loader; the primitive's value is the widget value already stored
    assert prompt["3"]["inputs"] == {"model": ["1", 0], "seed": 7, "steps": 20, "noise": 3, "mode": "y", "text": "hi"}


def test_a_file_missing_the_seed_control_value_is_refused():
    workflow = graph(node(3, "Sampler", [7, 20, 3, "randomize", "y", "hi"]))
    with pytest.raises(WorkflowError, match="widget values"):
        to_api(workflow, INFO)


def test_muted_nodes_are_dropped_and_unknown_types_refused():
    assert to_api(graph(node(1, "Loader", ["a.safetensors"], mode=2)), INFO) == {}
    with pytest.raises(WorkflowError, match="not installed"):
        to_api(graph(node(1, "MissingNode")), INFO)


def test_override_refuses_inputs_the_node_does_not_have():
    prompt = to_api(graph(node(1, "Loader", ["a.safetensors"])), INFO)
    override(prompt, "Loader", name="b.safetensors")
    assert prompt["1"]["inputs"]["name"] == "b.safetensors"
    with pytest.raises(KeyError):
        override(prompt, "Loader", nmae="typo.safetensors")


def test_defaults_fill_only_missing_required_widgets():
    prompt = {"1": {"class_type": "Loader", "inputs": {}},
              "3": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "seed": 5, "noise": 1, "mode": "y"}}}
    with_defaults(prompt, INFO)
    assert prompt["1"]["inputs"] == {"name": "a.safetensors"}  # a combo without default: its first option
    assert prompt["3"]["inputs"] == {"model": ["1", 0], "seed": 5, "noise": 1, "mode": "y", "steps": 20}
