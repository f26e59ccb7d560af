"""UI-format workflow JSON (what the graph editor saves) -> API-format prompt (what POST /prompt takes).

The server has no such converter; the frontend builds the API prompt itself. This mirrors its
rules so the shipped files are tested as users load them:
- `widgets_values` is positional, in the order of the node definition's widget inputs
  (required, then optional) as `/object_info` lists them; a linked widget input keeps its slot.
- An INT input with `control_after_generate` set, or (when unset) named `seed`/`noise_seed`,
  gets an extra control widget ("fixed", "randomize", ...) right after it; its value is skipped.
- Links `[id, origin_id, origin_slot, target_id, target_slot, type]` become `[origin_id, slot]`;
  Reroutes are followed back to their source; a PrimitiveNode's value is already in the
  target's widgets_values, so its link is dropped.
- Notes and other frontend-only nodes, and muted nodes (mode 2), are left out.
"""

from __future__ import annotations

from typing import Any

FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODE_ALWAYS, MODE_NEVER = 0, 2


class WorkflowError(ValueError):
    """The UI workflow does not match the node definitions the server reports."""


def is_widget(spec: list) -> bool:
    options = spec[1] if len(spec) > 1 else {}
    return (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES) and not options.get("forceInput")


def has_control_widget(name: str, spec: list) -> bool:
    """The frontend's rule for the 'control after generate' combo that follows a seed widget."""
    if spec[0] != "INT":
        return False
    flag = (spec[1] if len(spec) > 1 else {}).get("control_after_generate")
    return bool(flag) if flag is not None else name in ("seed", "noise_seed")


def widget_slots(node_info: dict) -> list[str | None]:
    """Names for the positions of `widgets_values`; None marks a control value to skip."""
    slots: list[str | None] = []
    for group in ("required", "optional"):
        for name in node_info.get("input_order", {}).get(group, []):
            spec = node_info["input"][group][name]
            if is_widget(spec):
                slots.append(name)
                if has_control_widget(name, spec):
                    slots.append(None)
    return slots


def _widget_inputs(node: dict, node_info: dict) -> dict[str, Any]:
    values = node.get("widgets_values") or []
    if isinstance(values, dict):  # some custom nodes save widgets by name
        return dict(values)
    slots = widget_slots(node_info)
    if len(values) != len(slots):
        raise WorkflowError(
            f"node {node['id']} ({node['type']}): {len(values)} widget values for {len(slots)} widget slots "
            f"{slots}; the file does not match this server's node definition"
        )
    return {name: value for name, value in zip(slots, values) if name is not None}


def to_api(workflow: dict, object_info: dict) -> dict[str, dict]:
    """The API prompt for a UI workflow, validated against the server's `/object_info`."""
    if workflow.get("definitions", {}).get("subgraphs"):
        raise WorkflowError("subgraphs are not supported by this converter")
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow.get("links", [])}

    def source(link_id: int) -> tuple[int, int] | None:
        """The real node output behind a link, or None for a PrimitiveNode's value."""
        _, origin, slot, *_ = links[link_id]
        origin_node = nodes[origin]
        if origin_node["type"] == "Reroute":
            upstream = origin_node["inputs"][0].get("link")
            return None if upstream is None else source(upstream)
        if origin_node["type"] == "PrimitiveNode":
            return None
        return origin, slot

    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", MODE_ALWAYS) == MODE_NEVER:
            continue
        if node.get("mode", MODE_ALWAYS) != MODE_ALWAYS:
            raise WorkflowError(f"node {node['id']} ({node['type']}): mode {node['mode']} (bypass) is not supported")
        info = object_info.get(node["type"])
        if info is None:
            raise WorkflowError(f"node {node['id']}: type '{node['type']}' is not installed on the server")
        inputs = _widget_inputs(node, info)
        for slot in node.get("inputs", []):
            link_id = slot.get("link")
            if link_id is None:
                continue
            if links.get(link_id, [None] * 4)[3] != node["id"]:
                raise WorkflowError(f"node {node['id']} input '{slot['name']}': link {link_id} does not end here")
            origin = source(link_id)
            if origin is not None:
                inputs[slot["name"]] = [str(origin[0]), origin[1]]
        prompt[str(node["id"])] = {
            "class_type": node["type"], "inputs": inputs, "_meta": {"title": node.get("title") or node["type"]},
        }
    return prompt


def nodes_of(prompt: dict[str, dict], class_type: str) -> dict[str, dict]:
    return {node_id: node for node_id, node in prompt.items() if node["class_type"] == class_type}


def override(prompt: dict[str, dict], class_type: str, **values: Any) -> None:
    """Sets inputs on every node of a class; refuses names the node does not have, so a typo
    or a renamed input cannot silently leave the shipped value in place."""
    targets = nodes_of(prompt, class_type)
    if not targets:
        raise KeyError(f"no {class_type} node in the prompt")
    for node_id, node in targets.items():
        unknown = set(values) - set(node["inputs"])
        if unknown:
            raise KeyError(f"{class_type} node {node_id} has no input(s) {sorted(unknown)}")
        node["inputs"].update(values)


def with_defaults(prompt: dict[str, dict], object_info: dict) -> dict[str, dict]:
    """Fills required widget inputs a hand-built prompt leaves out with the node's defaults, as the
    editor does for a freshly added node; lets test graphs survive new inputs with safe defaults."""
    for node in prompt.values():
        info = object_info[node["class_type"]]
        for name in info.get("input_order", {}).get("required", []):
            spec = info["input"]["required"][name]
            if name in node["inputs"] or not is_widget(spec):
                continue
            options = spec[1] if len(spec) > 1 else {}
            choices = spec[0] if isinstance(spec[0], list) else options.get("options")
            node["inputs"][name] = options["default"] if "default" in options else choices[0]
    return prompt
