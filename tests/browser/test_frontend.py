"""The pack as a user meets it: the real ComfyUI frontend in Chromium loads every shipped workflow
without missing nodes or widget errors, runs one from the Run button with progress arriving over
the websocket, shows the FIA nodes with their tooltips, and lists the workflows as templates with their
pictures. Screenshots go to out/screenshots/. Complaints are read by structure and role, never by a
message's wording, which changes between frontend releases.
"""

from __future__ import annotations

import copy
import json
import math
import time
import urllib.parse

import pytest
from e2e.runner import WORKFLOW_FILES, WORKFLOWS_DIR, fast_overrides, load_ui
from e2e.server import PACK_FOLDER
from e2e.workflow_api import WorkflowError, to_api
from PIL import Image

from browser.conftest import frontend_version

QUEUED_WORKFLOW = "01_forget_artist_styles.json"  # five concepts: a chart with something kept
FILE_INPUTS = {"ckpt_name", "lora_name", "mask_name"}  # the user picks their own file: not a widget error
RUN_TIMEOUT_S = 240

# Complaints a user sees: frontend 1.32 opens a dialog, 1.49 and later an error overlay whose details list
# one section per kind of issue. 1.49 also flags nodes whose model file the server lacks; that file is the
# user's to pick, so `missing_files` lists them.
STATE_JS = """(fileInputs) => {
    const registered = LiteGraph.registered_node_types;
    const visible = (el) => el.getClientRects().length > 0;
    const missingFiles = (n) => (n.widgets ?? []).filter((w) => fileInputs.includes(w.name)
        && !(w.options?.values ?? []).includes(w.value)).map((w) => w.value);
    return {
        nodes: app.graph.nodes.length,
        unknown: app.graph.nodes.filter((n) => !(n.type in registered)).map((n) => n.type),
        errors: app.graph.nodes.filter((n) => n.has_errors && !missingFiles(n).length).map((n) => `${n.id} ${n.type}`),
        missing_files: app.graph.nodes.flatMap(missingFiles),
        dialogs: Array.from(document.querySelectorAll('[role="dialog"]')).filter(visible)
            .map((d) => d.innerText.slice(0, 400)),
        overlay: Array.from(document.querySelectorAll('[data-testid="error-overlay"]')).some(visible),
    };
}"""
ISSUE_SECTIONS = 'section[data-testid^="error-group-"]'
# Per section of the overlay's details: its kind, the names it lists (an element titled with its own
# text: a file or node name, not an icon button's label) and its text.
ISSUES_JS = """(selector) => Array.from(document.querySelectorAll(selector)).map((section) => ({
    kind: section.dataset.testid,
    names: Array.from(section.querySelectorAll('[title]')).filter((el) => el.title === el.textContent.trim())
        .map((el) => el.title),
    text: section.innerText.slice(0, 400),
}))"""
# The template browser's decoded pictures (it fetches each and shows it as a blob), by their sizes.
LOADED_IMAGES_JS = """Array.from(document.querySelectorAll('[role="dialog"] img'))
    .filter((img) => img.complete && img.naturalWidth > 0).map((img) => [img.naturalWidth, img.naturalHeight])"""
CLOSE_DETAILS_JS = "() => app.extensionManager.setting.set('Comfy.RightSidePanel.IsOpen', false)"

FIT_VIEW_JS = """(nodeId) => {
    app.canvas.deselectAll();
    if (nodeId !== null) app.canvas.selectNode(app.graph.getNodeById(nodeId));
    app.canvas.fitViewToSelectionAnimated({duration: 1});
    app.canvas.deselectAll();
    app.canvas.setDirty(true, true);
}"""


def load_workflow(editor, workflow: dict, name: str) -> dict:
    """Loads a UI workflow as the editor's Open does and reports what a user would see as broken."""
    errors_before = len(editor.page_errors)
    editor.page.keyboard.press("Escape")
    editor.page.evaluate("async ([w, n]) => { await app.loadGraphData(w, true, true, n); }", [workflow, name])
    editor.page.wait_for_timeout(500)  # dialogs open asynchronously after loading
    state = editor.page.evaluate(STATE_JS, sorted(FILE_INPUTS))
    state["page_errors"] = editor.page_errors[errors_before:]
    if state.pop("overlay"):
        state["dialogs"] += overlay_issues(editor, state["missing_files"])
    return state


def overlay_issues(editor, missing: list[str]) -> list[str]:
    """The issues behind frontend 1.49+'s error overlay, read from its details by structure, not by its
    summary's wording ("3 errors found" in 1.49, "3 issues found" in 1.58): every section but the
    missing-model one that names only files the user has yet to pick (`missing`)."""
    page = editor.page
    page.locator('[data-testid="error-overlay"] [data-testid="error-overlay-see-errors"]').click()
    try:
        page.locator(ISSUE_SECTIONS).first.wait_for(timeout=10_000)
        sections = page.evaluate(ISSUES_JS, ISSUE_SECTIONS)
    finally:
        page.evaluate(CLOSE_DETAILS_JS)  # an open details panel would keep the next graph's overlay shut
    return [s["text"] for s in sections if not (
        s["kind"] == "error-group-missing-model" and s["names"] and set(s["names"]) <= set(missing))]


def fit_view(editor, node_id: int | None = None) -> None:
    editor.page.evaluate(FIT_VIEW_JS, node_id)
    editor.page.wait_for_timeout(300)


def combo_options(spec: list) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    return spec[1].get("options") if spec[0] == "COMBO" and len(spec) > 1 else None


def widget_errors(prompt: dict, object_info: dict) -> list[str]:
    """Widget values the server's validation would refuse: combos outside their options, numbers out of range."""
    problems = []
    for node_id, node in prompt.items():
        info = object_info[node["class_type"]]["input"]
        specs = info.get("required", {}) | info.get("optional", {})
        for name, value in node["inputs"].items():
            spec = specs.get(name)
            if spec is None:
                problems.append(f"{node_id} {node['class_type']}.{name}: not an input of this node")
                continue
            if isinstance(value, list) or name in FILE_INPUTS:  # a link, or a file the user chooses
                continue
            options = combo_options(spec)
            limits = spec[1] if len(spec) > 1 else {}
            if options is not None and value not in options:
                problems.append(f"{node_id} {node['class_type']}.{name}: {value!r} not in {options[:8]}")
            elif spec[0] in ("INT", "FLOAT") and not limits.get("min", -math.inf) <= value <= limits.get("max", math.inf):
                problems.append(f"{node_id} {node['class_type']}.{name}: {value} outside [{limits.get('min')}, "
                                f"{limits.get('max')}]")
    return problems


def frontend_prompt(editor) -> dict:
    """The API prompt the frontend itself builds from the loaded graph (what Run would send)."""
    output = editor.page.evaluate("async () => (await app.graphToPrompt()).output")
    return {node_id: {"class_type": n["class_type"], "inputs": n["inputs"]} for node_id, n in output.items()}


@pytest.fixture(scope="module")
def object_info(frontend_server) -> dict:
    return frontend_server.get("/object_info")


def test_the_page_runs_the_frontend_under_test(editor):
    """The summary of `make test` names a frontend version: the page must run that one, not the tree's own."""
    assert editor.page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__") == frontend_version()


def test_the_missing_node_check_can_fail(editor):
    """A workflow naming a node type nobody installed is flagged: the checks below are not vacuous."""
    broken = copy.deepcopy(load_ui(WORKFLOW_FILES[0]))
    broken["nodes"][1]["type"] = "FIANodeThatDoesNotExist"
    state = load_workflow(editor, broken, "broken.json")
    assert "FIANodeThatDoesNotExist" in state["unknown"]
    assert any("FIANodeThatDoesNotExist" in dialog for dialog in state["dialogs"]), state


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_workflow_loads_with_no_missing_nodes_or_widget_errors(editor, object_info, name):
    workflow = load_ui(name)
    state = load_workflow(editor, workflow, name)
    assert state["nodes"] == len(workflow["nodes"])
    assert not state["unknown"], f"missing node types: {state['unknown']}"
    assert not state["errors"] and not state["dialogs"], f"the editor complained: {state}"
    assert not state["page_errors"], f"the page raised while loading: {state['page_errors']}"
    prompt = frontend_prompt(editor)
    assert not widget_errors(prompt, object_info), widget_errors(prompt, object_info)
    try:  # the e2e suite's own converter must read the file as the frontend does
        expected = {i: {"class_type": n["class_type"], "inputs": n["inputs"]} for i, n in
                    to_api(workflow, object_info).items()}
    except WorkflowError as error:
        pytest.fail(f"tests/e2e/workflow_api.py cannot convert {name}: {error}")
    assert prompt == expected
    fit_view(editor)
    editor.screenshot(name.removesuffix(".json"))


def expected_saliency_calls(inputs: dict) -> int:
    """Progress total of one saliency run: (concepts + the shared base set) x batches x recorded steps."""
    concepts = len([line for line in inputs["concepts"].splitlines() if line.strip() and not line.startswith("#")])
    batches = math.ceil(inputs["prompt_pairs"] / inputs["prompts_per_batch"])
    return (concepts + 1) * batches * inputs["recorded_steps"]


SET_WIDGETS_JS = """([classType, values]) => {
    for (const node of app.graph.nodes.filter((n) => n.type === classType)) {
        for (const [name, value] of Object.entries(values)) {
            const widget = node.widgets?.find((w) => w.name === name);
            if (widget) { widget.value = value; widget.callback?.(value); }
        }
    }
}"""

ADD_INSPECTOR_JS = """() => {
    const fuse = app.graph.nodes.find((n) => n.type === 'FIAFuseMasks');
    const select = app.graph.nodes.find((n) => n.type === 'FIASelectSensitiveNeurons');
    const inspector = LiteGraph.createNode('FIAMaskInspector');
    const bottom = Math.max(...app.graph.nodes.map((n) => n.pos[1] + n.size[1]));
    inspector.pos = [fuse.pos[0], bottom + 80];
    app.graph.add(inspector);
    inspector.size = [760, 620];
    fuse.connect(0, inspector, 0);
    select.connect(0, inspector, 1);
    return inspector.id;
}"""


def wait_for_run(editor, timeout_s: float) -> dict:
    """The websocket message that ends the run the Run button queued."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for message in editor.messages:
            if message.get("type") in ("execution_success", "execution_error", "execution_interrupted"):
                return message
        editor.server.assert_alive()
        editor.page.wait_for_timeout(250)
    raise TimeoutError(f"no end of run within {timeout_s} s; last messages: {editor.messages[-5:]}")


def test_run_button_executes_a_workflow_with_progress_over_the_websocket(editor, object_info, frontend_server):
    checkpoint = object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    checkpoint_name = combo_options(checkpoint)[0]
    load_workflow(editor, load_ui(QUEUED_WORKFLOW), QUEUED_WORKFLOW)
    for class_type, values in fast_overrides(checkpoint_name, "").items():
        editor.page.evaluate(SET_WIDGETS_JS, [class_type, values])
    inspector_id = editor.page.evaluate(ADD_INSPECTOR_JS)
    prompt = frontend_prompt(editor)
    saliency_id, saliency = next((i, n) for i, n in prompt.items() if n["class_type"] == "FIAComputeConceptSaliency")
    assert saliency["inputs"]["width"] == 64 and prompt[str(inspector_id)]["inputs"]["mask"][1] == 0

    editor.messages.clear()
    # the Run button, not the menu beside it that frontend 1.49 also names "Run" (it picks how to run)
    page = editor.page
    page.get_by_role("button", name="Run", exact=True).and_(page.locator(":not([aria-haspopup])")).click()
    end = wait_for_run(editor, RUN_TIMEOUT_S)
    assert end["type"] == "execution_success", json.dumps(end)[:3000]

    progress = [m["data"] for m in editor.messages if m["type"] == "progress" and m["data"]["node"] == saliency_id]
    total = expected_saliency_calls(saliency["inputs"])
    values = [p["value"] for p in progress]
    # ComfyUI 0.33 throttles the updates between the first and the last (0.3.75 sends every call)
    assert values[0] == 1 and values[-1] == total and values == sorted(set(values)), values
    assert all(p["max"] == total for p in progress)
    executed = {m["data"]["node"]: m["data"]["output"] for m in editor.messages if m["type"] == "executed"}
    chart = executed[str(inspector_id)]["images"][0]
    assert chart["type"] == "temp" and chart["filename"].endswith(".png")
    saved = next(out for node_id, out in executed.items() if prompt[node_id]["class_type"] == "SaveImage")
    assert (frontend_server.output_dir / saved["images"][0]["subfolder"] / saved["images"][0]["filename"]).is_file()

    editor.page.wait_for_function(f"() => app.graph.getNodeById({inspector_id}).imgs?.length > 0")
    fit_view(editor)
    editor.screenshot("run_" + QUEUED_WORKFLOW.removesuffix(".json"))
    fit_view(editor, inspector_id)
    editor.screenshot("mask_inspector_on_the_node", [inspector_id])


ONE_NODE_JS = """async () => {
    await app.extensionManager.command.execute('Comfy.NewBlankWorkflow');
    const loader = LiteGraph.createNode('CheckpointLoaderSimple');
    const unlearn = LiteGraph.createNode('FIAUnlearn');
    const inspector = LiteGraph.createNode('FIAMaskInspector');
    for (const node of [loader, unlearn, inspector]) app.graph.add(node);
    loader.pos = [40, 120];
    unlearn.pos = [loader.pos[0] + loader.size[0] + 60, 120];
    inspector.pos = [unlearn.pos[0] + unlearn.size[0] + 60, 120];
    unlearn.widgets.find((w) => w.name === 'concepts').value = 'Van Gogh\\nClaude Monet';
    unlearn.widgets.find((w) => w.name === 'preset').value = 'art';
    loader.connect(0, unlearn, 0);
    loader.connect(1, unlearn, 1);
    unlearn.connect(1, inspector, 0);
    const defs = Object.values(LiteGraph.registered_node_types).map((t) => t.nodeData).filter((d) => d?.category === 'FIA');
    return {
        ids: [loader.id, unlearn.id, inspector.id],
        widgets: unlearn.widgets.map((w) => w.name),
        inputs: unlearn.inputs.map((i) => i.name),
        untipped: defs.flatMap((d) => Object.entries({...d.input.required, ...(d.input.optional ?? {})})
            .filter(([, spec]) => !spec[1]?.tooltip).map(([name]) => `${d.name}.${name}`)),
        fiaNodes: defs.map((d) => d.name).sort(),
    };
}"""


def test_one_node_path_and_tooltips_in_the_editor(editor):
    state = editor.page.evaluate(ONE_NODE_JS)
    assert state["inputs"][:2] == ["model", "clip"]
    # no 'control after generate' on the seed: a randomised seed would recompute the mask on every run
    assert state["widgets"] == ["concepts", "preset", "prompt_pairs", "seed", "recorded_steps", "r2", "alpha",
                                "strength", "keep", "layers"]
    assert {"FIAUnlearn", "FIAMaskInspector", "FIAComputeConceptSaliency"} <= set(state["fiaNodes"])
    assert not state["untipped"], f"inputs without a tooltip in the editor: {state['untipped']}"
    fit_view(editor)
    editor.screenshot("fia_unlearn_one_node", state["ids"])


def test_template_browser_shows_every_workflow_with_its_thumbnail(editor):
    """A user picks a template by its picture: the pack's entry in the template browser fetches each
    workflow's `<name>.jpg` and shows it decoded, not a grey placeholder (frontends 1.32 to 1.58)."""
    page = editor.page
    fetched = {}
    prefix = f"/workflow_templates/{PACK_FOLDER}/"

    def record(response) -> None:
        path = urllib.parse.urlparse(response.url).path
        if prefix in path and path.endswith(".jpg"):
            fetched[urllib.parse.unquote(path.rsplit("/", 1)[1])] = response.status

    page.on("response", record)
    try:
        page.keyboard.press("Escape")
        page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        browser = page.get_by_role("dialog")
        browser.get_by_text(PACK_FOLDER, exact=True).click()  # the pack's entry, named by its folder
        page.wait_for_function(LOADED_IMAGES_JS + f".length >= {len(WORKFLOW_FILES)}", timeout=30_000)
        sizes = page.evaluate(LOADED_IMAGES_JS)
        editor.screenshot("template_browser")
    finally:
        page.remove_listener("response", record)
        editor.open()  # a fresh page: Escape closes the browser from 1.49 on, not in 1.32
    assert fetched == {name.replace(".json", ".jpg"): 200 for name in WORKFLOW_FILES}
    thumbnails = [list(Image.open(WORKFLOWS_DIR / name.replace(".json", ".jpg")).size) for name in WORKFLOW_FILES]
    assert len([size for size in sizes if size in thumbnails]) == len(thumbnails), (sizes, thumbnails)
