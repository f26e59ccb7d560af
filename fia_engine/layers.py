"""Feed-forward output layers per architecture: where FIA looks and prunes (paper section 1).

A layer is found by walking the diffusion model's modules, so nothing assumes a layer count or a
block layout. Modules are registered in the order they run in every supported model, so walk
order is execution order (a test checks this with forward hooks); sorting by name is not
(SDXL's `transformer_blocks.10` would sort before `.2`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .errors import FIAInputError

DIFFUSION_PREFIX = "diffusion_model."


@dataclass(frozen=True)
class FFLayer:
    """One prunable weight. Neurons are its input columns `neuron_start:neuron_stop`."""

    key: str
    module_path: str
    out_features: int
    in_features: int
    neuron_start: int = 0
    neuron_stop: int = -1
    stream: str = "unet"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def neuron_columns(self) -> slice:
        stop = self.in_features if self.neuron_stop < 0 else self.neuron_stop
        return slice(self.neuron_start, stop)

    def as_dict(self) -> dict:
        return {
            "key": self.key, "module_path": self.module_path, "shape": list(self.shape),
            "neuron_start": self.neuron_start, "neuron_stop": self.neuron_stop, "stream": self.stream,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FFLayer:
        out_features, in_features = data["shape"]
        return cls(
            data["key"], data["module_path"], int(out_features), int(in_features),
            int(data.get("neuron_start", 0)), int(data.get("neuron_stop", -1)), data.get("stream", "unet"),
        )


@dataclass(frozen=True)
class ArchitectureSpec:
    """How to find the feed-forward output layers of one model family."""

    family: str
    config_classes: tuple[str, ...]
    is_ff_output: Callable[[str, torch.nn.Module], bool]
    native_size: int = 512
    neuron_range: Callable[[str, torch.nn.Module], tuple[int, int]] = lambda path, module: (0, -1)
    stream_of: Callable[[str], str] = lambda path: "unet"
    default_streams: tuple[str, ...] = ("unet",)
    all_streams: tuple[str, ...] = ("unet",)
    notes: dict[str, str] = field(default_factory=dict)


def _is_unet_ff_output(path: str, module: torch.nn.Module) -> bool:
    """`ff.net.2` of a BasicTransformerBlock: the Linear after GEGLU (SD1.x/SD2.x/SDXL)."""
    return path.endswith(".ff.net.2") and isinstance(module, torch.nn.Linear)


UNET_NOTE = "ff.net.2 of every transformer block; neurons = all GEGLU outputs"

ARCHITECTURES: list[ArchitectureSpec] = [
    ArchitectureSpec("SD1.x", ("SD15",), _is_unet_ff_output, 512, notes={"layers": UNET_NOTE}),
    ArchitectureSpec("SD2.x", ("SD20",), _is_unet_ff_output, 768, notes={"layers": UNET_NOTE}),
    ArchitectureSpec("SDXL", ("SDXL", "SDXLRefiner"), _is_unet_ff_output, 1024, notes={"layers": UNET_NOTE}),
]


def register_architecture(spec: ArchitectureSpec) -> None:
    """Adds (or replaces, by family) an architecture description."""
    ARCHITECTURES[:] = [a for a in ARCHITECTURES if a.family != spec.family] + [spec]


def architecture_of(model_config: object) -> ArchitectureSpec:
    """The spec whose config class is the nearest ancestor of the model's config class."""
    for cls in type(model_config).__mro__:
        for spec in ARCHITECTURES:
            if cls.__name__ in spec.config_classes:
                return spec
    name = type(model_config).__name__
    return ArchitectureSpec(name, (name,), _is_unet_ff_output, notes={"layers": UNET_NOTE + " (generic)"})


def discover_ff_layers(
    diffusion_model: torch.nn.Module, spec: ArchitectureSpec, streams: tuple[str, ...] | None = None
) -> list[FFLayer]:
    """The feed-forward output layers of the selected streams, in execution order."""
    wanted = set(streams or spec.default_streams)
    layers = []
    for path, module in diffusion_model.named_modules():
        if not spec.is_ff_output(path, module):
            continue
        stream = spec.stream_of(path)
        if stream not in wanted:
            continue
        start, stop = spec.neuron_range(path, module)
        out_features, in_features = module.weight.shape
        layers.append(
            FFLayer(f"{DIFFUSION_PREFIX}{path}.weight", path, out_features, in_features, start, stop, stream)
        )
    return layers


def layers_of_patcher(patcher, streams: tuple[str, ...] | None = None) -> tuple[ArchitectureSpec, list[FFLayer]]:
    """Architecture and FF layers of a ComfyUI ModelPatcher; refuses models without any."""
    spec = architecture_of(patcher.model.model_config)
    layers = discover_ff_layers(patcher.model.diffusion_model, spec, streams)
    if not layers:
        raise FIAInputError(
            f"model: this {spec.family} model has no supported feed-forward layers "
            f"(looked for: {spec.notes.get('layers', 'ff output layers')}). FIA supports "
            f"{', '.join(a.family for a in ARCHITECTURES)}; connect one of those."
        )
    return spec, layers


def modules_by_path(diffusion_model: torch.nn.Module, layers: list[FFLayer]) -> dict[str, torch.nn.Module]:
    named = dict(diffusion_model.named_modules())
    return {layer.module_path: named[layer.module_path] for layer in layers}


def original_weights(patcher, layers: list[FFLayer]) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, before any patch (LoRA, mask) of this or an upstream node."""
    key_patches = patcher.get_key_patches(DIFFUSION_PREFIX)
    weights = {}
    for layer in layers:
        weight, convert = key_patches[layer.key][0]
        weights[layer.key] = convert(weight) if convert is not None else weight
    return weights


def effective_weights(patcher, layers: list[FFLayer]) -> dict[str, torch.Tensor]:
    """The weights sampling uses: the originals with this patcher's weight patches applied (CPU, fp32)."""
    import comfy.lora  # the host's own patch arithmetic, so LoRAs etc. are applied exactly as it does

    originals = original_weights(patcher, layers)
    weights = {}
    for layer in layers:
        weight = originals[layer.key].detach().to("cpu", torch.float32, copy=True)
        patches = patcher.patches.get(layer.key, [])
        if patches:
            weight = comfy.lora.calculate_weight(patches, weight, layer.key)
        weights[layer.key] = weight
    return weights


def fingerprint(weights: dict[str, torch.Tensor]) -> str:
    """A short hash of the FF weights, stable across fp32/fp16 loading of one checkpoint."""
    digest = hashlib.blake2b(digest_size=8)
    for key in sorted(weights):
        digest.update(key.encode())
        digest.update(weights[key].detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
    return digest.hexdigest()




def block_label(layer: FFLayer) -> str:
    """A short human label such as 'input_blocks.4 tb0' for charts and logs."""
    parts = layer.module_path.split(".")
    head = ".".join(parts[:2])
    depth = next((parts[i + 1] for i, p in enumerate(parts) if p == "transformer_blocks"), "")
    return f"{head} tb{depth}" if depth else head
