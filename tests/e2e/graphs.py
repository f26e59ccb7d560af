"""API-format prompts the surface tests build directly (the shipped workflows come from workflows/)."""

from __future__ import annotations

LOADER = "1"
SIZE = 64  # pixels; an 8x8 latent keeps every UNet call cheap on CPU

# Each test picks its prompt strings so that no two tests share a cached CLIPTextEncode result by accident.
FAST_SALIENCY = dict(
    concepts="Van Gogh\nClaude Monet", preset="art", concept_template="a {placeholder} in the style of {concept}",
    base_template="a {placeholder}", placeholders="", prompt_pairs=2, seed=1244, steps=2, recorded_steps=2, cfg=7.5,
    sampler_name="euler", scheduler="normal", width=SIZE, height=SIZE, prompts_per_batch=4,
    saliency_form="reference",
)


def loader(checkpoint: str) -> dict:
    return {LOADER: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}}}


def plain_generation(checkpoint: str, seed: int, prefix: str, model: list | None = None,
                     advanced: bool = False) -> dict:
    """Checkpoint -> KSampler -> VAE decode -> SaveImage; `model` may point at another node's MODEL.

    `advanced`: the same sampling through KSamplerAdvanced (all steps, noise added, fully denoised):
    the same image from a node no output cache can answer with the KSampler's earlier result.
    """
    prompt = loader(checkpoint) | {
        "10": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse on a cliff", "clip": [LOADER, 1]}},
        "11": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": [LOADER, 1]}},
        "12": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "13": {"class_type": "KSampler", "inputs": {
            "model": model or [LOADER, 0], "seed": seed, "steps": 3, "cfg": 7.5, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0, "positive": ["10", 0], "negative": ["11", 0],
            "latent_image": ["12", 0]}},
        "14": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": [LOADER, 2]}},
        "15": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": prefix}},
    }
    if advanced:
        inputs = prompt["13"]["inputs"]
        inputs.pop("denoise")
        inputs.update(noise_seed=inputs.pop("seed"), add_noise="enable", start_at_step=0, end_at_step=10000,
                      return_with_leftover_noise="disable")
        prompt["13"]["class_type"] = "KSamplerAdvanced"
    return prompt


def fia_chain(checkpoint: str, **saliency: object) -> dict:
    """Checkpoint -> saliency -> select -> fuse; ids 20..22. Callers add the consumer of the mask."""
    return loader(checkpoint) | {
        "20": {"class_type": "FIAComputeConceptSaliency",
               "inputs": {"model": [LOADER, 0], "clip": [LOADER, 1], **(FAST_SALIENCY | saliency)}},
        "21": {"class_type": "FIASelectSensitiveNeurons",
               "inputs": {"saliency": ["20", 0], "r1": 0.05, "r2": 0.0, "r2_overrides": "", "method": "fia"}},
        "22": {"class_type": "FIAFuseMasks",
               "inputs": {"concept_masks": ["21", 0], "alpha": 0.8, "fusion": "concept-agnostic"}},
    }


def save_mask(prompt: dict, prefix: str) -> dict:
    return prompt | {"23": {"class_type": "FIASaveMask", "inputs": {"mask": ["22", 0], "filename_prefix": prefix}}}
