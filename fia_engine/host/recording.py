"""Recording FF activations while ComfyUI samples the first T steps (paper section 2).

A clone of the user's ModelPatcher gets an APPLY_MODEL wrapper (no global patching): during each
UNet call it hooks the FF output layers, reduces their inputs to per-prompt statistics on the
model's device, and removes the hooks again. The schedule is cut at T steps (`last_step`), and a
sampler that evaluates the model more than once per step is stopped at its T-th evaluation: the
reference code runs all 50 steps and discards 40.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import torch

from ..core import statistics
from ..core.architectures import PrunableLayer
from ..core.sampling import COND, REFERENCE_SCHEDULE_FAMILIES, SCHEDULES, UNCOND, SamplingSettings
from . import plms
from .context_cache import ContextProjectionCache, cacheable

__all__ = ["COND", "REFERENCE_SCHEDULE_FAMILIES", "SCHEDULES", "UNCOND", "ActivationRecorder", "SamplingSettings"]

class StopSampling(Exception):
    """Raised from the wrapper once T evaluations are recorded; caught around the sampler."""


class ActivationRecorder:
    """Turns the FF inputs of T UNet evaluations of one prompt batch into per-prompt statistics.

    An evaluation may arrive as one call with cond and uncond batched, or as several calls (ComfyUI
    splits them under memory pressure): partial sums are kept until every expected chunk was seen.
    """

    def __init__(
        self,
        layers: list[PrunableLayer],
        modules: dict[str, torch.nn.Module],
        form: str,
        settings: SamplingSettings,
        weights: dict[str, torch.Tensor] | None = None,
        on_evaluation: Callable[[], None] | None = None,
        context_cache: ContextProjectionCache | None = None,
    ):
        self.layers = layers
        self.modules = modules
        self.form = statistics.FORMS[form]
        self.settings = settings
        self.expected_chunks = settings.chunks_per_evaluation()
        self.weights = weights or {}
        self._device_weights: dict[str, torch.Tensor] = {}
        self.on_evaluation = on_evaluation
        self.context_cache = context_cache
        self._patcher = None
        self.unet_calls = 0
        self._reset_batch(None, 0)

    def _reset_batch(self, accumulators, batch_size: int) -> None:
        self.accumulators = accumulators
        self.batch_size = batch_size
        self.evaluation = 0
        self._seen_chunks: set[int] = set()
        self._partial: dict[str, list[torch.Tensor]] = {}
        self._chunks: list[int] = []

    def begin_batch(self, accumulators: dict[str, statistics.MomentAccumulator], batch_size: int) -> None:
        self._reset_batch(accumulators, batch_size)
        if self.context_cache is not None:
            self.context_cache.clear()

    @property
    def complete(self) -> bool:
        return self.evaluation >= self.settings.recorded_steps

    def wrapper(self, executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        """The APPLY_MODEL wrapper body (installed through a closure, see `install`)."""
        comfy.model_management.throw_exception_if_processing_interrupted()
        if self.complete:
            raise StopSampling
        self._chunks = list(transformer_options.get("cond_or_uncond") or [COND])
        handles = [self.modules[layer.module_path].register_forward_pre_hook(self._hook(layer)) for layer in self.layers]
        cache = self.context_cache if self.context_cache is not None and cacheable(self._patcher) else None
        try:
            with cache.serving(tuple(self._chunks)) if cache is not None else contextlib.nullcontext():
                output = executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        self.unet_calls += 1
        self._seen_chunks.update(self._chunks)
        if self._seen_chunks >= self.expected_chunks:
            self._finish_evaluation()
        return output

    def install(self, patcher, key: str = "fia_saliency") -> None:
        """Adds the wrapper to `patcher` (a clone). A plain closure, so clone()'s deepcopy of
        model_options shares this recorder instead of copying it."""
        def apply_model_wrapper(executor, *args, **kwargs):
            return self.wrapper(executor, *args, **kwargs)

        self._patcher = patcher

        patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, key, apply_model_wrapper)

    def _hook(self, layer: PrunableLayer):
        def record(module, args):
            x = args[0]
            chunks = self._chunks
            x = x.reshape(len(chunks), self.batch_size, -1, x.shape[-1])[..., layer.neuron_columns]
            wanted = [i for i, c in enumerate(chunks) if c == COND or self.settings.pool_uncond]
            if not wanted:
                return None
            pooled = x[wanted]
            pooled = pooled.transpose(0, 1).reshape(self.batch_size, -1, pooled.shape[-1])
            self._add_partial(layer.key, self._reduce(layer, pooled))
            return None

        return record

    def _reduce(self, layer: PrunableLayer, x: torch.Tensor) -> list[torch.Tensor]:
        weight = None
        if self.form.needs_weight:
            weight = self._device_weights.get(layer.key)
            if weight is None or weight.device != x.device:
                weight = self.weights[layer.key][:, layer.neuron_columns].to(x.device, torch.float32)
                self._device_weights[layer.key] = weight
        return self.form.partial_sums(x, weight)

    def _add_partial(self, key: str, parts: list[torch.Tensor]) -> None:
        current = self._partial.get(key)
        self._partial[key] = parts if current is None else [a + b for a, b in zip(current, parts, strict=True)]

    def _finish_evaluation(self) -> None:
        for layer in self.layers:
            self.accumulators[layer.key].add(self.evaluation, self.form.unit_saliency(self._partial[layer.key]))
        self._partial = {}
        self._seen_chunks = set()
        self.evaluation += 1
        if self.on_evaluation is not None:
            self.on_evaluation()


def batch_conditioning(conditionings: list[list]) -> list:
    """Stacks single-prompt ComfyUI conditionings ([[cond, extras]]) into one batch."""
    tensors = [c[0][0] for c in conditionings]
    extras = {}
    for name, value in conditionings[0][0][1].items():
        others = [c[0][1].get(name) for c in conditionings]
        if torch.is_tensor(value) and all(torch.is_tensor(o) and o.shape == value.shape for o in others):
            extras[name] = torch.cat(others)
        else:
            extras[name] = value
    return [[torch.cat(tensors), extras]]


def downscale_ratio(patcher) -> int:
    """Image pixels per latent pixel, from the model's latent format."""
    return int(getattr(patcher.model.latent_format, "spacial_downscale_ratio", 8))


def latent_geometry(patcher, width: int, height: int) -> tuple[int, int, int]:
    """(channels, latent height, latent width) for an image size, from the model's latent format."""
    ratio = downscale_ratio(patcher)
    return patcher.model.latent_format.latent_channels, height // ratio, width // ratio


def sample_recorded_steps(
    patcher, recorder: ActivationRecorder, positive: list, negative: list, seeds: list[int],
    geometry: tuple[int, int, int],
) -> None:
    """Samples one prompt batch until T evaluations are recorded; every prompt's noise comes from its own seed."""
    settings = recorder.settings
    with contextlib.suppress(StopSampling):
        sample_first_steps(patcher, settings, positive, negative, seeds, geometry)
    if not recorder.complete:
        raise RuntimeError(
            f"the sampler made {recorder.evaluation} model evaluations, fewer than the "
            f"{settings.recorded_steps} recorded steps asked for"
        )


def sample_first_steps(
    patcher, settings: SamplingSettings, positive: list, negative: list, seeds: list[int], geometry: tuple[int, int, int]
) -> None:
    """The first T UNet calls of `settings`' schedule for one prompt batch: what recording hooks
    into, and, without hooks, the unavoidable work it is measured against."""

    channels, height, width = geometry
    latent = torch.zeros((len(seeds), channels, height, width))
    noise = torch.cat([comfy.sample.prepare_noise(latent[:1], seed) for seed in seeds])
    # ComfyUI runs nodes in inference mode; scripts calling the engine get it here too, or
    # autograd would build a graph through every UNet call
    with torch.inference_mode():
        if settings.schedule == "reference":
            sigmas = plms.plms_sigmas(patcher.get_model_object("model_sampling"), settings.steps)
            sampler = plms.plms_sampler(settings.steps, settings.recorded_steps)
            comfy.sample.sample_custom(
                patcher, noise, settings.cfg, sampler, sigmas, positive, negative, latent, disable_pbar=True, seed=seeds[0]
            )
        else:
            comfy.sample.sample(
                patcher, noise, settings.steps, settings.cfg, settings.sampler_name, settings.scheduler,
                positive, negative, latent, last_step=settings.recorded_steps, disable_pbar=True, seed=seeds[0],
            )
