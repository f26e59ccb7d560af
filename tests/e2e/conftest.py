"""One real ComfyUI server per test session, with the pack installed in its custom_nodes folder.

Set FIA_E2E=0 to skip this folder (e.g. for a quick unit-test loop); `make test` runs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.comfy_env import REPO, comfyui_path

from .make_checkpoint import ensure_models
from .runner import WorkflowRunner
from .server import ComfyServer, start_server

CACHE_DIR = REPO / ".cache" / "e2e"
LOG_LINES_ON_FAILURE = 120
_servers: list[ComfyServer] = []


def pytest_collection_modifyitems(config, items):
    if os.environ.get("FIA_E2E", "1") == "0":
        skip = pytest.mark.skip(reason="FIA_E2E=0")
        for item in items:
            if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
                item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches the end of the server log to every failing e2e test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _servers:
        tail = "\n".join(_servers[0].log_text().splitlines()[-LOG_LINES_ON_FAILURE:])
        report.sections.append((f"ComfyUI server log (last {LOG_LINES_ON_FAILURE} lines)", tail))


@pytest.fixture(scope="session")
def model_files() -> tuple[Path, Path]:
    """The cached SD1.5-layout checkpoint and LoRA (built on first use, about 30 s)."""
    return ensure_models(CACHE_DIR)


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, model_files) -> Iterator[ComfyServer]:
    base = tmp_path_factory.mktemp("comfyui")
    checkpoint, lora = model_files
    for folder, path in (("checkpoints", checkpoint), ("loras", lora)):
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        (base / "models" / folder / path.name).symlink_to(path)
    server = start_server(comfyui_path(), REPO, base)
    _servers.append(server)
    try:
        yield server
    finally:
        server.stop()
        _servers.remove(server)


@pytest.fixture(scope="session")
def object_info(comfy_server) -> dict:
    return comfy_server.get("/object_info")


@pytest.fixture(scope="session")
def checkpoint_name(model_files) -> str:
    return model_files[0].name


@pytest.fixture(scope="session")
def runner(comfy_server, model_files) -> WorkflowRunner:
    return WorkflowRunner(comfy_server, model_files[0].name, model_files[1].name)
