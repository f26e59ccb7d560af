"""What the Comfy Registry gets: pyproject's [tool.comfy] as `comfy node validate` reads it, and the
files `comfy node pack` would publish (git-tracked files minus .comfyignore, gitignore syntax)."""

from __future__ import annotations

import re
import subprocess

import pytest
import tomllib

from devkit.comfy_env import REPO, comfyui_version

# comfy-cli's pattern for requires-comfyui parts (registry/config_parser.py validate_version)
VERSION_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")
RUNTIME = ["__init__.py", "LICENSE", "README.md", "pyproject.toml", "nodes/", "fia_engine/", "workflows/"]
LEFT_OUT = ["toyworld/", "tests/", "devkit/", "bench/", ".ci/", "scripts/"]


@pytest.fixture(scope="module")
def config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def published() -> list[str]:
    """Tracked files that .comfyignore keeps, matched by git's own gitignore rules."""
    run = dict(cwd=REPO, capture_output=True, text=True)
    tracked = subprocess.run(["git", "ls-files"], check=True, **run).stdout.split()
    ignored = subprocess.run(["git", "-c", "core.excludesFile=.comfyignore", "check-ignore", "--no-index", "--stdin"],
                             input="\n".join(tracked), **run).stdout.split()
    # .gitignore's own patterns name only untracked build output, so what is left out here is .comfyignore's doing
    return sorted(set(tracked) - set(ignored))


def test_tool_comfy_names_publisher_icon_and_the_comfyui_versions(config):
    comfy, project = config["tool"]["comfy"], config["project"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and project["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    required = comfy["requires-comfyui"]
    assert all(VERSION_PART.match(part.strip()) for part in required.split(","))
    oldest = tuple(int(n) for n in re.search(r"\d+\.\d+\.\d+", required).group().split("."))
    tested = tuple(int(n) for n in re.match(r"\d+\.\d+\.\d+", comfyui_version()).group().split("."))
    assert oldest <= tested, f"requires-comfyui {required} excludes ComfyUI {comfyui_version()}, which is tested"
    icon = comfy["Icon"]
    assert icon.startswith("https://raw.githubusercontent.com/") and icon.endswith(".png")
    path = REPO / icon.split("/main/", 1)[1]  # the address serves this committed file
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 100_000


def test_published_pack_has_the_nodes_and_leaves_out_development_material(published):
    assert all(any(f == p or f.startswith(p) for f in published) for p in RUNTIME)
    assert not [f for f in published if any(f.startswith(p) for p in LEFT_OUT)]
    size = sum((REPO / f).stat().st_size for f in published if (REPO / f).is_file())
    assert size < 2_000_000, f"published pack is {size} bytes"
