"""FIA Compute Concept Saliency: records Eq.2's statistics while sampling prompt pairs."""

from __future__ import annotations

import comfy.samplers
import comfy.utils
from comfy_api.latest import io

from ..fia_engine import PRESET_NAMES, SamplingSettings, compute_saliency, paper, parse_lines, resolve_preset
from ..fia_engine.core.architectures import LAYER_KINDS, STREAM_CHOICES
from ..fia_engine.core.prompts import NOISE_PROTOCOLS
from ..fia_engine.core.statistics import FORMS
from ..fia_engine.host.recording import SCHEDULES
from .boundary import FIANode
from .types import CATEGORY, Saliency


def clip_encoder(clip):
    """The computation of CLIPTextEncode, one prompt at a time."""

    def encode(text: str) -> list:
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))

    return encode


def comfy_progress():
    """A `progress(done, total)` callback that drives ComfyUI's progress bar (websocket events in the server)."""
    bar: comfy.utils.ProgressBar | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or comfy.utils.ProgressBar(total)
        bar.update_absolute(done, total)

    return progress


LAYERS_INPUT = io.Combo.Input(
    "layers", options=list(LAYER_KINDS), default="ff2", optional=True,
    tooltip="Which Linear layers to analyse and prune: ff2, the feed-forward output (the paper's choice), or "
            "for the paper's ablation ff1 (feed-forward input), cross-attn kv (cross-attention key and value, "
            "whose input is the text) or self-attn kv. The key/value kinds exist in SD1.x/SD2.x/SDXL only.",
)


class FIAComputeConceptSaliency(FIANode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FIAComputeConceptSaliency",
            display_name="FIA Compute Concept Saliency",
            category=CATEGORY,
            description=(
                "Samples concept prompts and matching base prompts for the first T steps and records how "
                "strongly every feed-forward weight responds to each concept (Forget-It-All Eq.1-2)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to analyse (it is not modified)."),
                io.Clip.Input("clip", tooltip="The text encoder that belongs to the model."),
                io.String.Input("concepts", multiline=True, default="",
                                placeholder="Van Gogh\nClaude Monet",
                                tooltip="The concepts to forget, one per line. Lines starting with # are ignored."),
                io.Combo.Input("preset", options=list(PRESET_NAMES), default="objects",
                               tooltip="Prompt templates from the paper: objects 'a {concept} in a {place}' vs "
                                       "'a {place}'; explicit 'a photo of a {concept} {person}'; art "
                                       "'a {object} in the style of {concept}' vs 'a {object}'; or custom."),
                io.String.Input("concept_template", default="a {placeholder} in the style of {concept}",
                                tooltip="Custom preset only: the concept prompt; must contain {concept}, may "
                                        "contain {placeholder}."),
                io.String.Input("base_template", default="a {placeholder}",
                                tooltip="Custom preset only: the same prompt without the concept."),
                io.String.Input("placeholders", multiline=True, default="",
                                tooltip="Placeholders, one per line. Empty: the preset's vocabulary from the "
                                        "paper (30 places, 18 persons or 30 objects)."),
                io.Int.Input("prompt_pairs", default=0, min=0, max=1000,
                             tooltip="Concept/base prompt pairs per concept. 0 = one per placeholder (the "
                                     "reference code's choice: 30 for objects and art, 18 for explicit)."),
                io.Int.Input("seed", default=paper.GENERAL.seed, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the prompt shuffle and of the starting latent every prompt shares "
                                     f"(see noise). The paper uses {paper.GENERAL.seed}."),
                io.Int.Input("steps", default=paper.GENERAL.steps, min=1, max=1000,
                             tooltip="Length of the sampling schedule the recorded steps are taken from "
                                     f"(paper: {paper.GENERAL.steps})."),
                io.Int.Input("recorded_steps", default=paper.GENERAL.recorded_steps, min=1, max=1000,
                             tooltip=f"T: how many early UNet calls are recorded (paper: {paper.GENERAL.recorded_steps}). Sampling stops "
                                     "there; the rest of the schedule is never run."),
                io.Float.Input("cfg", default=0.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance while recording. 0 = the model family's value: "
                                       "7.5 for SD1.x/SD2.x/SDXL (paper), 4.5 for SD3, 1.0 for Flux (cond only)."),
                io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="euler",
                               tooltip="Sampler used while recording when schedule is 'sampler' (and for "
                                       "families other than SD1.x/SD2.x)."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="normal",
                               tooltip="Noise schedule used with sampler_name."),
                io.Int.Input("width", default=0, min=0, max=8192, step=8,
                             tooltip="Image width while recording; 0 = the model's native size (512 for SD1.x)."),
                io.Int.Input("height", default=0, min=0, max=8192, step=8,
                             tooltip="Image height while recording; 0 = the model's native size."),
                io.Int.Input("prompts_per_batch", default=4, min=1, max=256,
                             tooltip="Prompts sampled together. Higher is faster if memory allows; results "
                                     "agree within float rounding."),
                io.Combo.Input("streams", options=list(STREAM_CHOICES), default="default",
                               tooltip="Which feed-forward layers to analyse and prune. default: the UNet's for "
                                       "SD1.x/SD2.x/SDXL, the image stream for SD3, image and single blocks for "
                                       "Flux. all: also the text-stream MLPs of SD3 and Flux."),
                io.Combo.Input("saliency_form", options=list(FORMS), default="reference",
                               tooltip="reference: |W|*||X_j|| as in the reference code (small, fast). exact: "
                                       "the paper's Eq.1 with the cosine term (keeps T weight-sized tensors per "
                                       "concept: about 2 GB per concept for SD1.5)."),
                io.Combo.Input("schedule", options=list(SCHEDULES), default="reference", optional=True,
                               tooltip="reference: the reference code's UNet calls, the first T of 50-step PNDM "
                                       "(timesteps 981, 961, 961, 941, ...), so SD1.x/SD2.x statistics match the "
                                       "paper's code; other families use sampler_name/scheduler. sampler: "
                                       "sampler_name and scheduler for every family."),
                io.Combo.Input("noise", options=list(NOISE_PROTOCOLS), default="shared", optional=True,
                               tooltip="shared: every prompt starts from the seed's latent, as the reference "
                                       "code, so the base prompts' spread measures only the prompts. per-pair: "
                                       "pair k starts from seed + k (the noise then enters Eq.2's std and far "
                                       "fewer weights are selected)."),
                LAYERS_INPUT,
            ],
            outputs=[Saliency.Output(display_name="saliency",
                                     tooltip="Per concept, step and layer statistics for Select Sensitive Neurons.")],
        )

    @classmethod
    def execute(cls, model, clip, concepts, preset, concept_template, base_template, placeholders, prompt_pairs,
                seed, steps, recorded_steps, cfg, sampler_name, scheduler, width, height, prompts_per_batch,
                streams, saliency_form, schedule="reference", noise="shared", layers="ff2") -> io.NodeOutput:
        chosen = resolve_preset(preset, concept_template, base_template, placeholders)
        settings = SamplingSettings(steps, recorded_steps, cfg, sampler_name, scheduler, width, height, prompts_per_batch,
                                    schedule=schedule, noise=noise)
        record = compute_saliency(model, clip_encoder(clip), parse_lines(concepts), chosen, num_pairs=prompt_pairs, seed=seed,
                                  settings=settings, form=saliency_form, progress=comfy_progress(), streams=(streams,),
                                  layer_kind=layers)
        return io.NodeOutput(record)
