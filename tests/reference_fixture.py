"""The official FIA code's outputs on a seeded SD1.5-layout UNet (../shared/reference), read for the tests.

The fixture's UNet is loaded into ComfyUI's own SD1.5 classes; its prompt embeddings stand in for
the text encoder and its statistics can be turned into a SaliencyRecord, so the pack's recording,
selection and fusion can each be held against the reference's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from devkit.comfy_env import REPO

REFERENCE = REPO.parent / "shared" / "reference"
RUNS = {"objects3": "objects", "explicit1": "explicit"}
"""fixture folder -> the pack's preset of the same task."""


def available() -> bool:
    return (REFERENCE / "unet_weights.safetensors").is_file()


def unet_config() -> dict:
    """ComfyUI's SD1.5 UNet config with the fixture's widths (diffusers block_out_channels 32, 64, 128, 128)."""
    from devkit import tiny

    widths = json.loads((REFERENCE / "unet_config.json").read_text())["block_out_channels"]
    return dict(tiny.SD15_FULL_UNET, model_channels=widths[0])


def load_patcher():
    """The fixture's UNet as a ComfyUI SD1.5 model; returns (patcher, diffusers name of each FF layer key)."""
    import comfy.model_patcher
    import comfy.supported_models
    import comfy.utils

    config = unet_config()
    model_config = comfy.supported_models.SD15(dict(config))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    to_comfy = comfy.utils.unet_to_diffusers(config)
    weights = load_file(REFERENCE / "unet_weights.safetensors")
    model.diffusion_model.load_state_dict({to_comfy[k]: v for k, v in weights.items()}, strict=True)
    to_diffusers = {f"diffusion_model.{v}": k.removesuffix(".weight") for k, v in to_comfy.items()}
    patcher = comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))
    return patcher, to_diffusers


@dataclass
class Run:
    """One fixture folder: its configuration, inputs and outputs."""

    name: str
    config: dict
    prompts: list[str]
    embeddings: dict[str, torch.Tensor]
    latent: torch.Tensor

    @classmethod
    def load(cls, name: str) -> Run:
        folder = REFERENCE / name
        with safe_open(folder / "inputs.safetensors", "pt") as f:
            prompts = json.loads(f.metadata()["prompts"])
            embeddings = {text: f.get_tensor(f"embeds/{i:04d}") for i, text in enumerate(prompts)}
            embeddings[""] = f.get_tensor("uncond_embeds")
            latent = f.get_tensor("latents")
        config = json.loads((folder / "run.json").read_text())
        return cls(name, config, prompts, embeddings, latent)

    @property
    def concepts(self) -> list[str]:
        return json.loads(self._metadata("norm_stats")["concepts"])

    @property
    def fia(self) -> dict:
        return self.config["fia_config"]

    def r2(self, concept: str) -> float:
        return float(self.fia["r2_overrides"].get(concept, self.fia["r2"]))

    def encode(self, text: str) -> list:
        """The fixture's embedding as ComfyUI conditioning; a prompt the reference never ran is an error."""
        if text not in self.embeddings:
            raise KeyError(f"the reference never encoded {text!r}")
        return [[self.embeddings[text][None].clone(), {}]]

    def _metadata(self, stem: str) -> dict:
        with safe_open(REFERENCE / self.name / f"{stem}.safetensors", "pt") as f:
            return f.metadata()

    def tensors(self, stem: str) -> dict[str, torch.Tensor]:
        return load_file(REFERENCE / self.name / f"{stem}.safetensors")


def statistics_record(run: Run, patcher, to_diffusers: dict[str, str]):
    """A SaliencyRecord holding the reference's own statistics (each concept with its own base set)."""
    from fia_pack.fia_engine.core.record import RecordingProvenance, SaliencyRecord
    from fia_pack.fia_engine.core.sampling import SamplingSettings
    from fia_pack.fia_engine.core.statistics import Moments
    from fia_pack.fia_engine.host.layers import effective_weights, layers_of_patcher, original_weights

    _, layers = layers_of_patcher(patcher)
    stats = run.tensors("norm_stats")
    count = run.config["args"]["n_prompts"]

    def stat(concept: str, name: str, key: str) -> torch.Tensor:
        return stats[f"{concept}/{name}/{to_diffusers[key]}"]

    concept_moments = {c: {layer.key: Moments(stat(c, "mu_c", layer.key), None, count) for layer in layers} for c in run.concepts}
    base_moments = {
        c: {layer.key: Moments(stat(c, "mu_b", layer.key), stat(c, "sigma_b", layer.key), count) for layer in layers}
        for c in run.concepts
    }
    weights = effective_weights(patcher, layers, original_weights(patcher, layers))
    return SaliencyRecord(
        architecture="SD1.x", layers=layers, form="reference", preset=RUNS[run.name], concepts=run.concepts,
        concept_moments=concept_moments, base_moments=base_moments, concept_base={c: c for c in run.concepts},
        abs_weights={layer.key: weights[layer.key].abs() for layer in layers}, prompts={},
        provenance=RecordingProvenance(SamplingSettings(recorded_steps=len(next(iter(stats.values())))), "reference",
                                       RUNS[run.name], count, run.fia["seed"], 0),
        fingerprint="reference",
    )


def dense(indices: torch.Tensor, numel: int) -> torch.Tensor:
    flags = torch.zeros(numel, dtype=torch.bool)
    flags[indices.long()] = True
    return flags
