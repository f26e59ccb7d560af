"""Draws each example workflow's thumbnail, workflows/<name>.jpg: the picture the template browser shows
for it (frontends 1.49 and later ask for `<name>.jpg` beside the JSON and show a grey placeholder without
one). The picture is the graph as the real frontend draws it, in headless Chromium on a ComfyUI server with
the pack installed: the newest frontend and tree the tests have (`make thumbnails` picks them), its FIA
nodes centred in an 800-pixel square at zoom 1 or less with what fits around them, as a JPEG of at most 80 kB.

The server lists empty files under the model names the workflows use, so the picture shows the graph a
user with those files sees (no missing-model warning); nothing is run. Re-run after changing a workflow;
tests/test_workflow_thumbnails.py checks that every workflow has its thumbnail.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from browser.conftest import chromium_page, frontend_version, start_frontend_server  # noqa: E402
from browser.test_frontend import load_workflow  # noqa: E402
from e2e.runner import WORKFLOW_FILES, WORKFLOWS_DIR, load_ui  # noqa: E402
from PIL import Image  # noqa: E402

SIZE = 800  # pixels a side, drawn at zoom <= 1 so node titles and widgets stay readable in the file
MARGIN = 160  # the editor's window is larger by this on each side: its toolbars in the corners stay outside
BUDGET = 80_000  # bytes a file, with room under the 100 kB tests/test_workflow_thumbnails.py allows
# Where a loader's file widget (its first widget value) is listed by the server.
FILE_FOLDERS = {"CheckpointLoaderSimple": "checkpoints", "LoraLoader": "loras", "LoraLoaderModelOnly": "loras",
                "FIALoadMask": "fia_masks"}
# The picture is the graph alone: no menus, minimap or warnings around it.
SETTINGS = {"Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}
# Centres the FIA nodes (what each workflow does differently) in the square, as large as fits up to zoom 1.
FIT_JS = """([x, y, size]) => {
    const nodes = app.graph.nodes.filter((n) => n.type.startsWith('FIA'));
    const rects = nodes.map((n) => n.boundingRect), pad = 24;
    const left = Math.min(...rects.map((r) => r[0])) - pad, top = Math.min(...rects.map((r) => r[1])) - pad;
    const right = Math.max(...rects.map((r) => r[0] + r[2])) + pad;
    const bottom = Math.max(...rects.map((r) => r[1] + r[3])) + pad;
    const canvas = app.canvas.canvas.getBoundingClientRect(), ds = app.canvas.ds;
    ds.scale = Math.min(1, size / (right - left), size / (bottom - top));
    ds.offset[0] = (x + size / 2 - canvas.left) / ds.scale - (left + right) / 2;
    ds.offset[1] = (y + size / 2 - canvas.top) / ds.scale - (top + bottom) / 2;
    app.canvas.setDirty(true, true);
    return ds.scale;
}"""


def model_files() -> set[str]:
    """Every "<models subfolder>/<name>" a shipped workflow's loaders name."""
    names = set()
    for name in WORKFLOW_FILES:
        for node in load_ui(name)["nodes"]:
            if node["type"] in FILE_FOLDERS:
                names.add(f"{FILE_FOLDERS[node['type']]}/{node['widgets_values'][0]}")
    return names


def as_jpeg(png: bytes) -> bytes:
    """The screenshot at the best JPEG quality, up to 85, that fits BUDGET."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    for quality in range(85, 40, -5):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True, progressive=True)
        if buffer.tell() <= BUDGET:
            return buffer.getvalue()
    raise RuntimeError(f"no JPEG quality fits {BUDGET} bytes")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fia-thumbnails-") as temp:
        temp = Path(temp)
        (temp / "empty").touch()
        server = start_frontend_server(temp / "comfyui", {name: temp / "empty" for name in model_files()})
        try:
            for setting, value in SETTINGS.items():
                status, _ = server.request("POST", f"/settings/{setting}", value)
                assert status == 200, f"could not store setting {setting}"
            window = SIZE + 2 * MARGIN
            with chromium_page(server, {"width": window, "height": window}) as editor:
                editor.page.evaluate("() => app.extensionManager.command.execute('Workspace.ToggleFocusMode')")
                for name in WORKFLOW_FILES:
                    state = load_workflow(editor, load_ui(name), name)
                    problems = {k: v for k, v in state.items() if k not in ("nodes", "missing_files") and v}
                    assert not problems and not state["missing_files"], f"{name}: {json.dumps(state)}"
                    editor.page.evaluate(FIT_JS, [MARGIN, MARGIN, SIZE])
                    editor.page.wait_for_timeout(500)
                    clip = {"x": MARGIN, "y": MARGIN, "width": SIZE, "height": SIZE}
                    jpeg = as_jpeg(editor.page.screenshot(clip=clip))
                    path = WORKFLOWS_DIR / name.replace(".json", ".jpg")
                    path.write_bytes(jpeg)
                    print(f"{path.relative_to(REPO)}: {len(jpeg) / 1000:.0f} kB")
        finally:
            server.stop()
    print(f"drawn by frontend {frontend_version()}")


if __name__ == "__main__":
    main()
