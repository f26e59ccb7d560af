"""ToyWorld: two small image worlds with known ground truth (`shapes`, `emoji`), the SD1.5-layout
models trained on them (`common`) and the FIA experiments run on them (`experiments`); the map is
at the top of toyworld/README.md.

Both worlds run on ComfyUI and on the engine, which imports ComfyUI, so importing the package puts
ComfyUI on sys.path first (CPU unless CUDA is there; a running ComfyUI's settings are left alone).
This is the package's one ComfyUI setup: no module below calls `setup_comfy` again.
"""

from __future__ import annotations

import sys

from devkit.comfy_env import setup_comfy

SDPA_COMMANDS = ("toyworld.shapes.train", "toyworld.experiments.report", "toyworld.experiments.channel_means")
"""`python -m` commands that run on torch's SDPA attention, as they always have: the shapes model
was trained and its base-quality figures measured with it, and a resumed run continues bit for bit
only on the attention it started with. Every other command (EmojiWorld's training included) keeps
ComfyUI's CPU default; on CUDA ComfyUI picks SDPA itself."""


def running_command() -> str | None:
    """The module `python -m` is about to run, while its packages are being imported (until runpy has
    found it, sys.argv[0] is "-m"); None otherwise. The attention must be chosen before ComfyUI's
    model management is imported, that is, here."""
    if sys.argv[:1] != ["-m"]:
        return None
    return sys.orig_argv[-len(sys.argv)].removeprefix("-m")


setup_comfy(pytorch_attention=running_command() in SDPA_COMMANDS)
