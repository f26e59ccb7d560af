"""Puts a real ComfyUI on sys.path (COMFYUI_PATH, else the provisioned 0.3.75) in CPU mode."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def comfyui_path() -> Path:
    path = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui" / "ComfyUI")
    if not (path / "comfy").is_dir():
        raise RuntimeError(f"no ComfyUI at {path}: run scripts/provision.sh or set COMFYUI_PATH")
    return path


def setup_comfyui() -> Path:
    path = comfyui_path()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    from comfy.cli_args import args

    args.cpu = True
    return path
