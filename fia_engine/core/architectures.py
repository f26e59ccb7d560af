"""Feed-forward output layers per architecture: where FIA looks and prunes (paper section 1).

A layer is found by walking the diffusion model's modules, so nothing assumes a layer count or a
block layout. Modules are registered in the order they run in every supported model, so walk
order is execution order (tests check this with forward hooks); sorting by name is not
(SDXL's `transformer_blocks.10` would sort before `.2`).

Families (full-size layer counts checked on the meta device in tests):
  SD1.x, SD2.x, SDXL  `ff.net.2` after GEGLU, all input columns are neurons          16 / 16 / 70
  SD3 (MMDiT)         `joint_blocks.{i}.{x,context}_block.mlp.fc2` after GELU        47 (medium)
  Flux.1              `double_blocks.{i}.{img,txt}_mlp.2` after GELU and
                      `single_blocks.{i}.linear2`, whose input is concat(attention, MLP):
                      only the MLP columns are neurons                                76 (dev)
Only SD1.x is validated by the paper; the others are extensions checked for mechanics.

The paper's ablation masks other Linear layers the same way (`LAYER_KINDS`): ff1 (the FF input
projection), and the key/value projections of cross-attention (their input is the text) and of
self-attention. Each is a variant of the family's spec (`spec.with_layers(kind)`) whose neurons are
again the layer's input columns; a family without separate key/value weights refuses those kinds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from . import paper
from .errors import FIAInputError

DIFFUSION_PREFIX = "diffusion_model."


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable Linear weight of the chosen layer kind (`kind`: ff2, the paper's feed-forward
    output, or ff1 / attention k/v for its ablation). Neurons are its input columns
    `neuron_start:neuron_stop`."""

    key: str
    module_path: str
    out_features: int
    in_features: int
    neuron_start: int = 0
    neuron_stop: int = -1
    stream: str = "unet"
    kind: str = "ff2"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def neuron_columns(self) -> slice:
        stop = self.in_features if self.neuron_stop < 0 else self.neuron_stop
        return slice(self.neuron_start, stop)

    def as_dict(self) -> dict:
        """The file's layer entry; `kind` only where it is not the paper's ff2, so ff2 files stay as they were."""
        data = {
            "key": self.key, "module_path": self.module_path, "shape": list(self.shape),
            "neuron_start": self.neuron_start, "neuron_stop": self.neuron_stop, "stream": self.stream,
        }
        return data if self.kind == "ff2" else data | {"kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict) -> PrunableLayer:
        out_features, in_features = data["shape"]
        return cls(
            data["key"], data["module_path"], int(out_features), int(in_features),
            int(data.get("neuron_start", 0)), int(data.get("neuron_stop", -1)), data.get("stream", "unet"),
            data.get("kind", "ff2"),
        )


VARIANT_FIELDS = ("is_prunable", "neuron_range", "stream_of", "default_streams", "all_streams", "max_layers", "notes")


@dataclass(frozen=True)
class ArchitectureSpec:
    """How to find the prunable layers of one model family (the feed-forward output layers, or
    another kind of the paper's ablation: with_layers), and how to record them.

    `stream_of` names the token stream a layer belongs to (MMDiT/Flux have separate image and text
    MLPs); `default_streams` are the ones masked unless the user asks for others. `recording_cfg`
    is the guidance scale used while recording when the user leaves cfg at 0 (automatic).
    `unsupported` (non-empty) refuses a family whose layout is recognised but not handled yet.
    `max_layers` is the most FF layers a model of the family has (all streams, largest variant):
    a mask file claiming more is refused unread. `layer_kinds` holds, per ablation kind other than
    ff2, the fields that differ (a string instead says why the family lacks that kind).
    """

    family: str
    config_classes: tuple[str, ...]
    is_prunable: Callable[[str, torch.nn.Module], bool]  # a Linear of the spec's layer kind
    native_size: int = 512
    neuron_range: Callable[[str, torch.nn.Module], tuple[int, int]] = lambda path, module: (0, -1)
    stream_of: Callable[[str], str] = lambda path: "unet"
    default_streams: tuple[str, ...] = ("unet",)
    all_streams: tuple[str, ...] = ("unet",)
    recording_cfg: float = paper.GENERAL.cfg
    unsupported: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    max_layers: int = 128
    layers: str = "ff2"
    layer_kinds: dict[str, dict | str] = field(default_factory=dict)

    def with_layers(self, kind: str = "ff2") -> ArchitectureSpec:
        """The spec that finds, records and checks layers of `kind` instead of ff2."""
        if kind == self.layers:
            return self
        if kind not in LAYER_KINDS:
            raise FIAInputError(f"layers: '{kind}' is unknown; use one of {', '.join(LAYER_KINDS)}.")
        if self.layers != "ff2":
            return replace(self, layers="ff2", **self.layer_kinds["ff2"]).with_layers(kind)
        variant = self.layer_kinds.get(kind, f"the layout has no {kind} layers FIA knows")
        if isinstance(variant, str):
            offered = ", ".join(["ff2", *(k for k, v in self.layer_kinds.items() if k != "ff2" and isinstance(v, dict))])
            raise FIAInputError(f"layers: {self.family} models cannot use '{kind}' ({variant}); use {offered}.")
        ff2 = {name: getattr(self, name) for name in VARIANT_FIELDS}
        return replace(self, layers=kind, layer_kinds=self.layer_kinds | {"ff2": ff2}, **variant)


def _is_unet_ff_output(path: str, module: torch.nn.Module) -> bool:
    """`ff.net.2` of a BasicTransformerBlock: the Linear after GEGLU (SD1.x/SD2.x/SDXL)."""
    return path.endswith(".ff.net.2") and isinstance(module, torch.nn.Linear)


def _linear_ending(*suffixes: str) -> Callable[[str, torch.nn.Module], bool]:
    """A Linear whose path ends with one of `suffixes` inside a transformer block."""
    return lambda path, module: (
        isinstance(module, torch.nn.Linear) and ".transformer_blocks." in path and path.endswith(suffixes)
    )


def _linear_at(pattern: str) -> Callable[[str, torch.nn.Module], bool]:
    """A Linear whose full module path matches `pattern` (anchored, so embedders' MLPs never match)."""
    regex = re.compile(pattern)
    return lambda path, module: isinstance(module, torch.nn.Linear) and regex.fullmatch(path) is not None


def _mmdit_stream(path: str) -> str:
    return "txt" if ".context_block." in path else "img"


def _flux_stream(path: str) -> str:
    if path.startswith("single_blocks."):
        return "single"
    return "txt" if ".txt_mlp." in path else "img"


def _flux_neuron_range(path: str, module: torch.nn.Module) -> tuple[int, int]:
    """Single blocks feed linear2 with concat(attention output, MLP activation). The attention part
    is as wide as the block's hidden size, which is linear2's output width (it is added back to the
    residual stream); the rest, hidden * mlp_ratio columns, are the MLP neurons. Attention columns
    are never neurons, so they are never recorded, scored or masked."""
    if path.startswith("single_blocks."):
        return module.out_features, module.in_features
    return 0, -1


UNET_NOTE = "ff.net.2 of every transformer block; neurons = all GEGLU outputs"
MMDIT_NOTE = "joint_blocks.{i}.x_block.mlp.fc2 (img) and context_block.mlp.fc2 (txt); neurons = all GELU outputs"
FLUX_NOTE = (
    "double_blocks.{i}.img_mlp.2 (img), txt_mlp.2 (txt), single_blocks.{i}.linear2 (single: image and text "
    "tokens together); neurons = GELU outputs, in linear2 only the MLP columns after the attention output"
)

LAYER_NAMES = {
    "ff2": "feed-forward layer", "ff1": "feed-forward input layer",
    "cross-attn kv": "cross-attention key/value layer", "self-attn kv": "self-attention key/value layer",
}
LAYER_KINDS = tuple(LAYER_NAMES)
"""The paper's ablation: FF output (its choice), FF input, cross-attention k/v, self-attention k/v."""


def layers_named(kind: str, count: int | None = None) -> str:
    """'feed-forward layers', '16 cross-attention key/value layers': a kind's layers in messages."""
    name = f"{LAYER_NAMES[kind]}s"
    return name if count is None else f"{count} {name}"


def _unet_kinds(ff_layers: int) -> dict[str, dict]:
    """SD1.x/SD2.x/SDXL: every transformer block has all four, k and v as two layers each."""
    def kind(suffixes: tuple[str, ...], note: str, per_block: int) -> dict:
        return {"is_prunable": _linear_ending(*suffixes), "notes": {"layers": note},
                "max_layers": per_block * ff_layers}

    return {
        "ff1": kind((".ff.net.0.proj",), "ff.net.0.proj (GEGLU's input projection); neurons = its input features", 1),
        "cross-attn kv": kind((".attn2.to_k", ".attn2.to_v"), "attn2.to_k and attn2.to_v; neurons = text features", 2),
        "self-attn kv": kind((".attn1.to_k", ".attn1.to_v"), "attn1.to_k and attn1.to_v; neurons = image features", 2),
    }


JOINT_ATTENTION = "joint attention computes query, key and value in one fused qkv Linear"

ARCHITECTURES: list[ArchitectureSpec] = [
    ArchitectureSpec("SD1.x", ("SD15",), _is_unet_ff_output, 512, notes={"layers": UNET_NOTE}, max_layers=16,
                     layer_kinds=_unet_kinds(16)),
    ArchitectureSpec("SD2.x", ("SD20",), _is_unet_ff_output, 768, notes={"layers": UNET_NOTE}, max_layers=16,
                     layer_kinds=_unet_kinds(16)),
    ArchitectureSpec(
        "SDXL", ("SDXL", "SDXLRefiner"), _is_unet_ff_output, 1024, notes={"layers": UNET_NOTE}, max_layers=70,
        layer_kinds=_unet_kinds(70),
    ),
    ArchitectureSpec(
        "SD3", ("SD3",), _linear_at(r"joint_blocks\.\d+\.(x_block|context_block)\.mlp\.fc2"), 1024,
        stream_of=_mmdit_stream, default_streams=("img",), all_streams=("img", "txt"), recording_cfg=4.5,
        notes={"layers": MMDIT_NOTE}, max_layers=75,  # SD3.5 large
        layer_kinds={
            "ff1": {"is_prunable": _linear_at(r"joint_blocks\.\d+\.(x_block|context_block)\.mlp\.fc1"),
                    "notes": {"layers": "joint_blocks.{i}.{x,context}_block.mlp.fc1; neurons = its input features"}},
            "cross-attn kv": JOINT_ATTENTION, "self-attn kv": JOINT_ATTENTION,
        },
    ),
    ArchitectureSpec(
        "Flux", ("Flux",), _linear_at(r"double_blocks\.\d+\.(img|txt)_mlp\.2|single_blocks\.\d+\.linear2"), 1024,
        neuron_range=_flux_neuron_range, stream_of=_flux_stream, default_streams=("img", "single"),
        all_streams=("img", "txt", "single"), recording_cfg=1.0, notes={"layers": FLUX_NOTE}, max_layers=76,
        layer_kinds={
            # single blocks' linear1 feeds attention and MLP at once: only the double blocks' MLPs qualify
            "ff1": {"is_prunable": _linear_at(r"double_blocks\.\d+\.(img|txt)_mlp\.0"),
                    "neuron_range": lambda path, module: (0, -1), "default_streams": ("img",),
                    "all_streams": ("img", "txt"), "max_layers": 38,
                    "notes": {"layers": "double_blocks.{i}.{img,txt}_mlp.0; neurons = its input features"}},
            "cross-attn kv": JOINT_ATTENTION, "self-attn kv": JOINT_ATTENTION,
        },
    ),
    # Flux.2 subclasses Flux's config: without its own entry it would be taken for Flux.1.
    ArchitectureSpec(
        "Flux.2", ("Flux2",), lambda path, module: False, 1024,
        unsupported="untested layout, and its 128-channel latent at 1/16 scale is not handled by recording",
    ),
]


def register_architecture(spec: ArchitectureSpec) -> None:
    """Adds (or replaces, by family) an architecture description."""
    ARCHITECTURES[:] = [a for a in ARCHITECTURES if a.family != spec.family] + [spec]


def generic_spec(family: str) -> ArchitectureSpec:
    """A model family without its own entry: a UNet whose FF layers are `ff.net.2`."""
    return ArchitectureSpec(family, (family,), _is_unet_ff_output, notes={"layers": UNET_NOTE + " (generic)"},
                            layer_kinds=_unet_kinds(128))


def spec_of_family(family: str) -> ArchitectureSpec:
    """The spec a mask's recorded family name refers to (the generic one for unlisted families)."""
    return next((spec for spec in ARCHITECTURES if spec.family == family), None) or generic_spec(family)


def architecture_of(model_config: object) -> ArchitectureSpec:
    """The spec whose config class is the nearest ancestor of the model's config class."""
    for cls in type(model_config).__mro__:
        for spec in ARCHITECTURES:
            if cls.__name__ in spec.config_classes:
                return spec
    return generic_spec(type(model_config).__name__)


def discover_layers(
    diffusion_model: torch.nn.Module, spec: ArchitectureSpec, streams: tuple[str, ...] | None = None
) -> list[PrunableLayer]:
    """The prunable layers of the spec's kind (spec.layers) in the selected streams, in execution order."""
    wanted = set(resolve_streams(spec, streams))
    layers = []
    for path, module in diffusion_model.named_modules():
        if not spec.is_prunable(path, module):
            continue
        stream = spec.stream_of(path)
        if stream not in wanted:
            continue
        start, stop = spec.neuron_range(path, module)
        out_features, in_features = module.weight.shape
        layers.append(PrunableLayer(
            f"{DIFFUSION_PREFIX}{path}.weight", path, out_features, in_features, start, stop, stream, spec.layers
        ))
    return layers


STREAM_CHOICES = ("default", "all")
"""What a node offers for streams: the family's default streams, or every stream."""


def resolve_streams(spec: ArchitectureSpec, streams: tuple[str, ...] | None) -> tuple[str, ...]:
    """Stream names to mask: None or ("default",) = the family's defaults, ("all",) = every stream."""
    if not streams or tuple(streams) == STREAM_CHOICES[:1]:
        return spec.default_streams
    if tuple(streams) == STREAM_CHOICES[1:]:
        return spec.all_streams
    unknown = [s for s in streams if s not in spec.all_streams]
    if unknown:
        raise FIAInputError(
            f"streams: {spec.family} models have no '{unknown[0]}' stream; use default, all or "
            f"{', '.join(spec.all_streams)}. (A mask made for another model family names streams this one lacks.)"
        )
    return tuple(streams)


def supported_families() -> list[str]:
    return [a.family for a in ARCHITECTURES if not a.unsupported]


def fingerprint(weights: dict[str, torch.Tensor], samples_per_layer: int = 65536) -> str:
    """A short hash of the FF weights, stable across fp32/fp16 loading of one checkpoint.

    Hashes evenly spaced samples of every layer (plus its shape): another fine-tune changes
    essentially every weight, and hashing all of SD1.5's 50M would cost more than a UNet call.
    """
    digest = hashlib.blake2b(digest_size=8)
    for key in sorted(weights):
        flat = weights[key].detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_layer)
        digest.update(f"{key}{tuple(weights[key].shape)}".encode())
        digest.update(flat[::step].to("cpu", torch.float16).contiguous().numpy().tobytes())
    return digest.hexdigest()


def block_label(layer: PrunableLayer) -> str:
    """A short human label such as 'input_blocks.4 tb0' or 'double_blocks.3 txt' for charts and logs."""
    parts = layer.module_path.split(".")
    head = ".".join(parts[:2])
    depth = next((parts[i + 1] for i, p in enumerate(parts) if p == "transformer_blocks"), "")
    if depth:
        projection = {"to_k": " k", "to_v": " v"}.get(parts[-1], "")
        return f"{head} tb{depth}{projection}"
    return f"{head} {layer.stream}" if layer.stream in ("img", "txt") else head
