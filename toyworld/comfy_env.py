"""Make `import comfy` work outside a running ComfyUI (tests, training, CLI scripts)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_COMFYUI = Path(__file__).resolve().parents[1] / ".comfyui" / "ComfyUI"


def setup_comfy(path: str | os.PathLike[str] | None = None, pytorch_attention: bool = False) -> None:
    """Put ComfyUI on sys.path and force CPU mode unless ComfyUI is already imported.

    Inside a ComfyUI server `comfy` is already loaded and its settings are left alone.
    `pytorch_attention` selects torch SDPA (faster on CPU than the default sub-quadratic
    attention, and needed for training); it only takes effect before ComfyUI is imported.
    """
    if "comfy.model_management" in sys.modules:
        return
    root = Path(path or os.environ.get("COMFYUI_PATH") or DEFAULT_COMFYUI)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import torch
    from comfy.cli_args import args

    if not torch.cuda.is_available():
        args.cpu = True
    if pytorch_attention:
        args.use_pytorch_cross_attention = True
