"""The shipped files are what the graph editor saves and loads: checked without a server."""

import pytest

from .runner import WORKFLOW_FILES, load_ui

NODE_KEYS = {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties", "widgets_values"}
EXPECTED = {
    "01_forget_artist_styles.json", "02_forget_objects_before_after.json", "03_remove_explicit_content.json",
    "04a_compute_and_save_mask.json", "04b_load_mask_after_lora.json", "05_fuse_objects_and_artists.json",
    "06_forget_artists_keep_one.json",
}


def test_every_workflow_of_the_issue_is_shipped():
    assert set(WORKFLOW_FILES) >= EXPECTED


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_file_is_ui_format_with_consistent_links(name):
    workflow = load_ui(name)
    assert workflow["version"] == 0.4
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]) and workflow["last_node_id"] >= max(nodes)
    for node in nodes.values():
        assert set(node) >= NODE_KEYS, f"node {node['id']} lacks {NODE_KEYS - set(node)}"
    for link_id, origin, origin_slot, target, target_slot, link_type in workflow["links"]:
        output = nodes[origin]["outputs"][origin_slot]
        target_input = nodes[target]["inputs"][target_slot]
        assert link_id in output["links"] and target_input["link"] == link_id, f"{name}: link {link_id} is torn"
        assert output["type"] == target_input["type"] == link_type, f"{name}: link {link_id} joins other types"
    linked = {i["link"] for n in nodes.values() for i in n["inputs"] if i.get("link") is not None}
    assert linked == {link[0] for link in workflow["links"]}


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_file_explains_itself_in_a_note_and_uses_the_standard_checkpoint(name):
    workflow = load_ui(name)
    notes = [n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "Note"]
    assert notes and len(notes[0]) > 200, f"{name}: no explanatory Note node"
    loaders = [n for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple"]
    assert [n["widgets_values"][0] for n in loaders] == ["v1-5-pruned-emaonly.safetensors"]
