"""Make `import comfy` work outside a running ComfyUI: the repo's one place for it (tests,
benchmarks, training, CLI scripts)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_COMFYUI = REPO / ".comfyui" / "ComfyUI"


def comfyui_path(path: str | os.PathLike[str] | None = None) -> Path:
    """`path`, else COMFYUI_PATH, else the copy scripts/provision.sh made (absolute: servers run elsewhere)."""
    root = Path(path or os.environ.get("COMFYUI_PATH") or DEFAULT_COMFYUI).absolute()
    if not (root / "comfy").is_dir():
        raise RuntimeError(f"no ComfyUI at {root}: run scripts/provision.sh or set COMFYUI_PATH")
    return root


def comfyui_version(path: str | os.PathLike[str] | None = None) -> str:
    """The version a ComfyUI tree declares (comfyui_version.py), read without importing it, so test
    reports can name the ComfyUI they ran on."""
    text = (comfyui_path(path) / "comfyui_version.py").read_text(encoding="utf-8")
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return match.group(1) if match else "unknown"


def setup_comfy(path: str | os.PathLike[str] | None = None, pytorch_attention: bool = False,
                force_cpu: bool = False) -> None:
    """Put ComfyUI on sys.path and pick CPU mode (always with `force_cpu`, else when there is no
    CUDA), unless ComfyUI is already imported: inside a server its settings are left alone.

    `pytorch_attention` selects torch SDPA (faster on CPU than the default sub-quadratic
    attention, and needed for training); it only takes effect before ComfyUI is imported.
    """
    if "comfy.model_management" in sys.modules:
        return
    root = comfyui_path(path)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import torch
    from comfy.cli_args import args

    if force_cpu or not torch.cuda.is_available():
        args.cpu = True
    if pytorch_attention:
        args.use_pytorch_cross_attention = True


def setup_comfyui() -> Path:
    """The tests' setup: ComfyUI on sys.path, always on CPU; returns the ComfyUI in use."""
    setup_comfy(force_cpu=True)
    return comfyui_path()
