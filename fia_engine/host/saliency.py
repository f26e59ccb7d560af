"""Compute Concept Saliency: prompt pairs -> recorded statistics for Eq.2 (the FIA_SALIENCY object)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import comfy.samplers
import torch

from ..core import paper
from ..core import prompts as prompt_lib
from ..core.architectures import ArchitectureSpec, PrunableLayer, fingerprint
from ..core.errors import FIAInputError
from ..core.record import RecordingProvenance, SaliencyRecord
from ..core.request import ConceptRequest, resolve_concepts
from ..core.statistics import FORMS, MomentAccumulator, Moments
from .context_cache import ContextProjectionCache, context_projections
from .layers import effective_weights, layers_of_patcher, modules_by_path, original_weights
from .recording import (
    REFERENCE_SCHEDULE_FAMILIES,
    SCHEDULES,
    ActivationRecorder,
    SamplingSettings,
    batch_conditioning,
    downscale_ratio,
    latent_geometry,
    sample_recorded_steps,
)

Encoder = Callable[[str], list]
Progress = Callable[[int, int], None]


def validate_sampling(settings: SamplingSettings, form: str) -> None:
    """Checks cheap-to-check settings before any model is run."""
    if form not in FORMS:
        raise FIAInputError(f"saliency_form: '{form}' is unknown; use one of {', '.join(FORMS)}.")
    if settings.steps < 1:
        raise FIAInputError("steps: must be at least 1.")
    if not 1 <= settings.recorded_steps <= settings.steps:
        raise FIAInputError(
            f"recorded_steps: T = {settings.recorded_steps} must be between 1 and the schedule's steps "
            f"({settings.steps}). The paper records the first 10 of 50."
        )
    if settings.prompts_per_batch < 1:
        raise FIAInputError("prompts_per_batch: must be at least 1.")
    if settings.sampler_name not in comfy.samplers.KSampler.SAMPLERS:
        raise FIAInputError(f"sampler_name: '{settings.sampler_name}' is not a ComfyUI sampler.")
    if settings.scheduler not in comfy.samplers.KSampler.SCHEDULERS:
        raise FIAInputError(f"scheduler: '{settings.scheduler}' is not a ComfyUI scheduler.")
    if settings.cfg < 0:
        raise FIAInputError("cfg: must not be negative.")
    if settings.schedule not in SCHEDULES:
        raise FIAInputError(f"schedule: '{settings.schedule}' is unknown; use one of {', '.join(SCHEDULES)}.")


@dataclass(frozen=True)
class RecordingPlan:
    """What a saliency run will record, fixed before any model runs: the layers, the settings as
    they will be sampled, the prompt sets (each base set once) and the UNet calls they cost."""

    spec: ArchitectureSpec
    layers: list[PrunableLayer]
    settings: SamplingSettings  # automatic values resolved; width and height as sampled
    geometry: tuple[int, ...]
    request: ConceptRequest
    pairs: dict[str, list[prompt_lib.PromptPair]]
    concept_base: dict[str, str]  # concept -> its base set's id
    jobs: list[tuple[str, str, list[tuple[str, int]]]]  # (kind, name, [(prompt, seed), ...])

    def unet_calls(self) -> int:
        batch = self.settings.prompts_per_batch
        return self.settings.recorded_steps * sum(-(-len(items) // batch) for _, _, items in self.jobs)


def compute_saliency(
    patcher,
    encode: Encoder,
    concepts: list[str],
    preset: prompt_lib.PromptPreset,
    *,
    keep: list[str] = (),
    num_pairs: int = 0,
    seed: int = paper.GENERAL.seed,
    settings: SamplingSettings | None = None,
    form: str = "reference",
    progress: Progress | None = None,
    streams: tuple[str, ...] | None = None,
    pairs: dict[str, list[prompt_lib.PromptPair]] | None = None,
    layer_kind: str = "ff2",
) -> SaliencyRecord:
    """Records Eq.2's statistics for every concept; base prompts shared by concepts run once.

    `encode(text)` returns ComfyUI conditioning for one prompt (CLIPTextEncode's output).
    `keep`: concepts to preserve, recorded like the others and named in the record's `keep`.
    `pairs` replaces the preset's prompt pairs with your own (concept -> pairs).
    `layer_kind` picks the layer kind of the paper's ablation (architectures.LAYER_KINDS): the same
    statistics are recorded on those Linear layers' inputs.
    The input patcher is never modified: recording runs on a clone.
    """
    plan = plan_recording(patcher, resolve_concepts(concepts, keep), preset, num_pairs=num_pairs, seed=seed,
                          settings=settings or SamplingSettings(), form=form, streams=streams, pairs=pairs,
                          layer_kind=layer_kind)
    originals = original_weights(patcher, plan.layers)  # one walk of the patcher's keys serves both
    weights = effective_weights(patcher, plan.layers, originals)
    moments, unet_calls = record_moments(patcher, encode, plan, weights, form, progress)
    dtype = patcher.model.get_dtype()  # what inference uses; fp16 halves the record for fp16 checkpoints
    abs_weights = {layer.key: weights.pop(layer.key)[:, layer.neuron_columns].abs().to("cpu", dtype)
                   for layer in plan.layers}
    provenance = RecordingProvenance(
        plan.settings, form, preset.name, num_pairs, seed,
        weight_patches=sum(len(patcher.patches.get(layer.key, [])) for layer in plan.layers),
    )
    return assemble_record(plan, moments, abs_weights, provenance, fingerprint(originals), preset.name, form,
                           unet_calls, str(patcher.load_device))


def plan_recording(
    patcher, request: ConceptRequest, preset: prompt_lib.PromptPreset, *, num_pairs: int, seed: int,
    settings: SamplingSettings, form: str, streams: tuple[str, ...] | None,
    pairs: dict[str, list[prompt_lib.PromptPair]] | None, layer_kind: str,
) -> RecordingPlan:
    """Checks the settings and resolves the automatic ones against the model; builds each prompt set once."""
    validate_sampling(settings, form)
    spec, layers = layers_of_patcher(patcher, streams, layer_kind)
    if settings.schedule == "reference" and spec.family not in REFERENCE_SCHEDULE_FAMILIES:
        settings = replace(settings, schedule="sampler")  # the reference only ever sampled SD1.x
    if settings.cfg == 0:  # 0 = automatic, like width/height: the family's recording cfg (Flux: 1 = cond only)
        settings = replace(settings, cfg=spec.recording_cfg)
    width = settings.width or spec.native_size
    height = settings.height or spec.native_size
    geometry = latent_geometry(patcher, width, height)
    if geometry[1] < 1 or geometry[2] < 1:
        raise FIAInputError(f"width/height: {width}x{height} is smaller than one latent pixel of this model.")
    # recorded as sampled: sizes between latent pixels round down (65x71 samples at 64x64 for SD1.x)
    settings = replace(settings, width=geometry[2] * downscale_ratio(patcher),
                       height=geometry[1] * downscale_ratio(patcher))

    concepts = request.recorded
    if pairs is None:
        pairs = {c: prompt_lib.build_prompt_pairs(c, preset, num_pairs, seed, settings.noise) for c in concepts}
    elif set(pairs) != set(concepts) or not all(pairs.values()):
        raise FIAInputError("pairs: give a non-empty list of prompt pairs for each concept, and only for them.")
    else:
        prompt_lib.check_noise(settings.noise)  # the built pairs' check; your own pairs still state it
    concept_base = {c: prompt_lib.base_set_id(pairs[c]) for c in concepts}
    jobs = recording_jobs(pairs, concepts, concept_base)
    return RecordingPlan(spec, layers, settings, geometry, request, pairs, concept_base, jobs)


def recording_jobs(
    pairs: dict[str, list[prompt_lib.PromptPair]], concepts: list[str], concept_base: dict[str, str] | None = None,
) -> list[tuple[str, str, list[tuple[str, int]]]]:
    """(kind, name, [(prompt, seed), ...]) per prompt set: each base set once, then each concept.
    `concept_base`: each concept's base set id, when the caller has it already."""
    concept_base = concept_base or {c: prompt_lib.base_set_id(pairs[c]) for c in concepts}
    base_sets = {concept_base[c]: pairs[c] for c in concepts}
    jobs = [("base", b, [(p.base_prompt, p.seed) for p in ps]) for b, ps in base_sets.items()]
    return jobs + [("concept", c, [(p.concept_prompt, p.seed) for p in pairs[c]]) for c in concepts]


def record_moments(
    patcher, encode: Encoder, plan: RecordingPlan, weights: dict[str, torch.Tensor], form: str,
    progress: Progress | None,
) -> tuple[dict[tuple[str, str], dict[str, Moments]], int]:
    """Samples every prompt set of the plan for its first T UNet calls on a clone; returns the
    moments per (kind, name) and layer, and the UNet calls made."""
    settings, layers = plan.settings, plan.layers
    total_calls = plan.unet_calls()
    done = 0

    def step_done() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total_calls)

    work = patcher.clone()
    unet = patcher.model.diffusion_model
    recorder = ActivationRecorder(layers, modules_by_path(unet, layers), form, settings, weights, step_done,
                                  ContextProjectionCache(context_projections(unet)))
    recorder.install(work)
    device = patcher.load_device
    negative = encode("")
    cache: dict[str, list] = {}

    def conditioning(text: str) -> list:
        if text not in cache:
            cache[text] = encode(text)
        return cache[text]

    results: dict[tuple[str, str], dict[str, Moments]] = {}
    for kind, name, items in plan.jobs:
        accumulators = {
            layer.key: MomentAccumulator(
                settings.recorded_steps, _unit_shape(layer, form), device, with_std=(kind == "base"),
                dtype=FORMS[form].accumulate_dtype,
            )
            for layer in layers
        }
        for chunk in _shape_compatible_batches(items, settings.prompts_per_batch, conditioning):
            recorder.begin_batch(accumulators, len(chunk))
            positive = batch_conditioning([conditioning(text) for text, _ in chunk])
            sample_recorded_steps(work, recorder, positive, negative, [s for _, s in chunk], plan.geometry)
        # fp32 like the reference: fp16 concept means flipped selections at Eq.2's margin
        results[(kind, name)] = {key: acc.finalize(torch.float32) for key, acc in accumulators.items()}
    return results, recorder.unet_calls


def assemble_record(
    plan: RecordingPlan, moments: dict[tuple[str, str], dict[str, Moments]], abs_weights: dict[str, torch.Tensor],
    provenance: RecordingProvenance, source_fingerprint: str, preset: str, form: str, unet_calls: int,
    device: str | None = None,
) -> SaliencyRecord:
    """The FIA_SALIENCY object from the plan and what was recorded (`device`: where the model's
    weights were, for selection to run there)."""
    concepts = plan.request.recorded
    return SaliencyRecord(
        architecture=plan.spec.family,
        layers=plan.layers,
        form=form,
        preset=preset,
        concepts=concepts,
        concept_moments={c: moments[("concept", c)] for c in concepts},
        base_moments={b: moments[("base", b)] for b in dict.fromkeys(plan.concept_base.values())},
        concept_base=plan.concept_base,
        abs_weights=abs_weights,
        prompts=plan.pairs,
        provenance=provenance,
        fingerprint=source_fingerprint,
        unet_calls=unet_calls,
        device=device,
        keep=list(plan.request.keep),
    )


def _unit_shape(layer: PrunableLayer, form: str) -> tuple[int, ...]:
    return FORMS[form].unit_shape(layer.out_features, len(range(layer.in_features)[layer.neuron_columns]))


def _shape_compatible_batches(items: list[tuple[str, int]], batch: int, conditioning: Callable[[str], list]):
    """Batches of at most `batch` prompts whose conditionings can be stacked (same token length)."""
    current: list[tuple[str, int]] = []
    for item in items:
        if current and (
            len(current) == batch or conditioning(item[0])[0][0].shape != conditioning(current[0][0])[0][0].shape
        ):
            yield current
            current = []
        current.append(item)
    if current:
        yield current
