"""Test setup: a real ComfyUI (CPU) on sys.path and this repo loaded as a custom-node package."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from devkit.comfy_env import REPO, comfyui_path, comfyui_version, setup_comfyui

setup_comfyui()
# The tiny models' ops are too small to gain from threads; one thread avoids oversubscribing the
# 2-core CI machine (measured 5-8x faster saliency on the tiny SDXL under load).
torch.set_num_threads(1)

PACK_NAME = "fia_pack"


FOLDER_MARKS = {"e2e": "server", "browser": "browser"}
"""Tests in these folders carry these speed marks (`make unit` deselects them)."""


def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).parent
    for item in items:
        path = Path(str(item.fspath))
        for folder, mark in FOLDER_MARKS.items():
            if path.is_relative_to(tests / folder):
                item.add_marker(getattr(pytest.mark, mark))


def pytest_report_header(config):
    """Which ComfyUI and web frontend this run uses (COMFYUI_PATH picks the one, the interpreter's packages
    the other; `make test` runs each version)."""
    try:
        frontend = importlib.metadata.version("comfyui-frontend-package")
    except importlib.metadata.PackageNotFoundError:
        frontend = "none"
    return f"ComfyUI {comfyui_version()} at {comfyui_path()}, frontend {frontend}"


def load_pack():
    """Imports the repo the way ComfyUI imports a custom node folder (a package from __init__.py)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


load_pack()
# One engine per test run: ToyWorld and the benchmark helpers import `fia_engine` by its own name;
# they get the modules the pack loaded, so classes such as SaliencyRecord are the same objects.
for _name, _module in list(sys.modules.items()):
    if _name == f"{PACK_NAME}.fia_engine" or _name.startswith(f"{PACK_NAME}.fia_engine."):
        sys.modules.setdefault(_name.removeprefix(f"{PACK_NAME}."), _module)


@pytest.fixture(scope="session")
def pack():
    return load_pack()


@pytest.fixture(scope="session")
def engine(pack):
    return pack.fia_engine


@pytest.fixture(scope="session")
def tiny_clip():
    from devkit import tiny

    return tiny.tiny_clip()


@pytest.fixture()
def tiny_model():
    from devkit import tiny

    return tiny.tiny_sd15_patcher()


@pytest.fixture(scope="session")
def encode(tiny_clip):
    from devkit import tiny

    return tiny.clip_encoder(tiny_clip)


@pytest.fixture()
def counted_model():
    """The tiny model, counting its UNet calls: a refused input must cost none."""
    import comfy.patcher_extension

    from devkit import tiny

    model = tiny.tiny_sd15_patcher()
    calls = []

    def count(executor, *args, **kwargs):
        calls.append(1)
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "count", count)
    return model, calls
