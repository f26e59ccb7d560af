"""The real ComfyUI web frontend in headless Chromium, on a server with the pack installed.

Reuses the end-to-end suite's server helper and test checkpoint; the only difference is the
frontend folder: here the `comfyui-frontend-package` the server expects, not an empty one.
Needs /usr/bin/chromium (scripts/provision-browser.sh). FIA_BROWSER=0 skips this folder.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from e2e.conftest import CACHE_DIR
from e2e.make_checkpoint import ensure_models
from e2e.server import ComfyServer, start_server

from devkit.comfy_env import REPO, comfyui_path

CHROMIUM = Path("/usr/bin/chromium")
# Flags that keep Chromium from reaching for the network it does not have here (see the provisioning notes).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = REPO / "out" / "screenshots"
VIEWPORT = {"width": 1920, "height": 1080}
# A first visit opens the template browser and a "try Nodes 2.0" banner; a returning user sees neither.
USER_SETTINGS = {"Comfy.TutorialCompleted": True, "LiteGraph.Canvas.MinFontSizeForLOD": 1}  # text at any zoom
RETURNING_USER = "localStorage.setItem('vueNodesBannerDismissed', 'true')"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("FIA_BROWSER", "1") != "0":
        return
    skip = pytest.mark.skip(reason="FIA_BROWSER=0")
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(skip)


def frontend_version() -> str:
    """The frontend under test: the `comfyui-frontend-package` this interpreter imports (scripts/test.sh
    lays the newest one from PyPI in front of the newest tree's own for one extra run)."""
    return importlib.metadata.version("comfyui-frontend-package")


def start_frontend_server(base: Path, models: dict[str, Path] | None = None) -> ComfyServer:
    """A ComfyUI server in `base` that serves the frontend under test, with `models` ("<models subfolder>/
    <name>": file) linked into its models folder: by default the test checkpoint and LoRA."""
    import comfyui_frontend_package

    base.mkdir(parents=True, exist_ok=True)
    (base / "frontend").symlink_to(Path(str(importlib.resources.files(comfyui_frontend_package) / "static")))
    if models is None:
        checkpoint, lora = ensure_models(CACHE_DIR)
        models = {f"checkpoints/{checkpoint.name}": checkpoint, f"loras/{lora.name}": lora}
    for name, target in models.items():
        (base / "models" / name).parent.mkdir(parents=True, exist_ok=True)
        (base / "models" / name).symlink_to(target)
    server = start_server(comfyui_path(), REPO, base)
    try:
        for setting, value in USER_SETTINGS.items():
            status, _ = server.request("POST", f"/settings/{setting}", value)
            assert status == 200, f"could not store setting {setting}"
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def frontend_server(tmp_path_factory) -> Iterator[ComfyServer]:
    server = start_frontend_server(tmp_path_factory.mktemp("comfyui-browser"))
    try:
        yield server
    finally:
        server.stop()


NODES_ON_SCREEN_JS = """(ids) => {
    const canvas = app.canvas, page = canvas.canvas.getBoundingClientRect(), margin = 36;
    const corners = ids.map((id) => app.graph.getNodeById(id).boundingRect).flatMap(([x, y, w, h]) => [
        canvas.ds.convertOffsetToCanvas([x, y]), canvas.ds.convertOffsetToCanvas([x + w, y + h])]);
    const left = Math.max(0, Math.min(...corners.map((c) => c[0])) - margin);
    const top = Math.max(0, Math.min(...corners.map((c) => c[1])) - margin);
    const right = Math.min(page.width, Math.max(...corners.map((c) => c[0])) + margin);
    const bottom = Math.min(page.height, Math.max(...corners.map((c) => c[1])) + margin);
    return {x: page.left + left, y: page.top + top, width: right - left, height: bottom - top};
}"""


class Editor:
    """The graph editor page, with what it received over the websocket and the errors it raised."""

    def __init__(self, page, server: ComfyServer):
        self.page = page
        self.server = server
        self.messages: list[dict] = []
        self.page_errors: list[str] = []
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("websocket", self._watch)

    def _watch(self, socket) -> None:
        def received(payload) -> None:
            if isinstance(payload, str):
                self.messages.append(json.loads(payload))

        socket.on("framereceived", received)

    def open(self) -> None:
        self.page.goto(self.server.url)
        self.page.wait_for_function(
            "() => window.app?.graph && window.LiteGraph?.registered_node_types?.FIAUnlearn", timeout=120_000)
        self.page.keyboard.press("Escape")

    def screenshot(self, name: str, node_ids: list[int] | None = None) -> Path:
        """The whole page, or only the screen area of some nodes (for pictures in the docs)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        clip = self.page.evaluate(NODES_ON_SCREEN_JS, node_ids) if node_ids else None
        self.page.screenshot(path=str(path), clip=clip)
        return path


@contextmanager
def chromium_page(server: ComfyServer, viewport: dict | None = None) -> Iterator[Editor]:
    """Headless Chromium on the server's editor, as a returning user opens it."""
    assert CHROMIUM.exists(), "no /usr/bin/chromium: run scripts/provision-browser.sh (make test does)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=viewport or VIEWPORT)
            page.add_init_script(RETURNING_USER)
            page.set_default_timeout(60_000)
            editor = Editor(page, server)
            editor.open()
            yield editor
        finally:
            browser.close()


@pytest.fixture(scope="package")
def editor(frontend_server) -> Iterator[Editor]:
    with chromium_page(frontend_server) as editor:
        yield editor
