"""The tests' way in to ComfyUI: the repo's one setup (toyworld/comfy_env.py), always on CPU."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from toyworld.comfy_env import comfyui_path, comfyui_version, setup_comfy  # noqa: E402

__all__ = ["REPO", "comfyui_path", "comfyui_version", "setup_comfyui"]


def setup_comfyui() -> Path:
    setup_comfy(force_cpu=True)
    return comfyui_path()
