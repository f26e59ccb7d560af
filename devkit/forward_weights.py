"""The weights a forward pass actually multiplies by, read as F.linear receives them: after every
patch path (baked at load, low-VRAM or dynamic-VRAM casts, weight wrappers) has had its say.
Used by the dynamic-VRAM tests and the GPU check (bench/gpu_dynamic_vram.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class LinearWeights(torch.overrides.TorchFunctionMode):
    """Records the weight of the F.linear call made while `current` names a layer."""

    def __init__(self):
        super().__init__()
        self.current: str | None = None
        self.seen: dict[str, torch.Tensor] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear and self.current is not None:
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            self.seen[self.current] = weight.detach().clone()
        return func(*args, **kwargs)


@contextlib.contextmanager
def recording(modules: dict[str, torch.nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """{name: module} -> {name: the weight its forward used} (the last call's), filled while inside."""
    recorder = LinearWeights()
    handles = []
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: setattr(recorder, "current", name)))
        handles.append(module.register_forward_hook(lambda m, a, o: setattr(recorder, "current", None)))
    try:
        with recorder:
            yield recorder.seen
    finally:
        for handle in handles:
            handle.remove()
