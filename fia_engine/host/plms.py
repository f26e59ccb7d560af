"""The reference code's recording schedule as a ComfyUI sampler: diffusers' PNDM with skip_prk_steps.

The reference records the first T UNet calls of a 50-step `StableDiffusionPipeline` with SD1.x's
PNDM scheduler (timesteps 981, 961, 961, 941, ..., 821 for T = 10: the PLMS warm-up evaluates 961
twice), starting from unit-variance noise at t = 981. ComfyUI has no such sampler; this one makes
the same calls with the same latents, so recorded statistics match the reference's (measured
correlation 1 - 4e-9 on the reference fixture). It works in the VP space diffusers uses
(x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps) and talks to ComfyUI's denoiser in sigma space.
"""

from __future__ import annotations

import comfy.samplers
import torch

TRAIN_TIMESTEPS = 1000
STEPS_OFFSET = 1  # SD1.x/SD2.x scheduler configs: timesteps 1, 21, ..., 981 for 50 steps


def inference_timesteps(steps: int) -> list[int]:
    """PNDM's 'leading' timesteps, descending: 981, 961, ..., 1 for 50 steps (above 500 steps the
    offset would reach t = 1000, past the schedule: clamped to 999)."""
    ratio = TRAIN_TIMESTEPS // steps
    return [min(k * ratio + STEPS_OFFSET, TRAIN_TIMESTEPS - 1) for k in reversed(range(steps))]


def call_timesteps(steps: int) -> list[int]:
    """The timesteps of PLMS's UNet calls: the second one is evaluated twice (warm-up)."""
    leading = inference_timesteps(steps)
    return [leading[0], *leading[1:2], *leading[1:]]


def _previous_sample(sample, eps, alpha, alpha_prev):
    """PNDM's transfer from a_t to a_prev (formula (9) of Liu et al. 2022), as diffusers computes it."""
    sample_coeff = (alpha_prev / alpha) ** 0.5
    denominator = alpha * (1 - alpha_prev) ** 0.5 + (alpha * (1 - alpha) * alpha_prev) ** 0.5
    return sample_coeff * sample - (alpha_prev - alpha) * eps / denominator


@torch.no_grad()
def sample_plms(model, x, sigmas, extra_args=None, callback=None, disable=None, steps: int = 50,
                calls: int | None = None):
    """A k-diffusion-style sampler function for comfy.samplers.KSAMPLER.

    `sigmas` only set where ComfyUI starts and ends; the calls follow PLMS over `steps` leading
    timesteps, and stop after `calls` UNet evaluations if given (recording needs only the first
    T, as `last_step` cuts other samplers). x arrives scaled as for the largest noise level (see
    ReferenceStartSampler).
    """
    extra_args = extra_args or {}
    model_sampling = model.inner_model.inner_model.model_sampling
    table = model_sampling.sigmas.to(x.device)
    alphas = 1.0 / (1.0 + table.double() ** 2)
    ratio = TRAIN_TIMESTEPS // steps
    s_in = x.new_ones([x.shape[0]])

    def eps_at(vp_sample: torch.Tensor, t: int) -> torch.Tensor:
        sigma = table[t]
        scaled = vp_sample * (1.0 + sigma**2) ** 0.5
        denoised = model(scaled, sigma * s_in, **extra_args)
        return (scaled - denoised) / sigma

    def alpha_of(t: int) -> float:
        return float(alphas[t if t >= 0 else 0])  # set_alpha_to_one = False: the final alpha is a_0

    t0 = inference_timesteps(steps)[0]
    sample = x / (1.0 + table[t0] ** 2) ** 0.5  # = the unit-variance starting noise
    history: list[torch.Tensor] = []
    first_sample = sample
    for counter, t in enumerate(call_timesteps(steps)[:calls]):
        eps = eps_at(sample, t)
        if counter == 1:  # warm-up: redo the first step with the mean of both slopes
            sample = _previous_sample(first_sample, (eps + history[-1]) / 2, alpha_of(t0), alpha_of(t))
        else:
            history = [*history[-3:], eps]
            if len(history) == 1:
                slope = eps
            elif len(history) == 2:
                slope = (3 * history[-1] - history[-2]) / 2
            elif len(history) == 3:
                slope = (23 * history[-1] - 16 * history[-2] + 5 * history[-3]) / 12
            else:
                slope = (1 / 24) * (55 * history[-1] - 59 * history[-2] + 37 * history[-3] - 9 * history[-4])
            sample = _previous_sample(sample, slope, alpha_of(t), alpha_of(t - ratio))
        if callback is not None:
            sigma = table[max(t - ratio, 0)]
            callback({"x": sample, "i": counter, "sigma": sigma, "sigma_hat": sigma, "denoised": sample})
    return sample / alpha_of(-1) ** 0.5


class ReferenceStartSampler(comfy.samplers.KSAMPLER):
    """Starts from noise * sqrt(1 + sigma^2) (unit variance in VP space) at the first timestep, as
    diffusers' PNDM does (init_noise_sigma = 1), not from noise * sigma as ComfyUI does below sigma_max.
    The model's own noise_scaling still runs (ToyWorld centres its noise there)."""

    def max_denoise(self, model_wrap, sigmas):
        return True


def plms_sampler(steps: int, calls: int | None = None) -> ReferenceStartSampler:
    return ReferenceStartSampler(sample_plms, extra_options={"steps": steps, "calls": calls})


def plms_sigmas(model_sampling, steps: int) -> torch.Tensor:
    """Sigmas at PNDM's leading timesteps, then 0 (what ComfyUI's sampler wrapper expects)."""
    timesteps = torch.tensor(inference_timesteps(steps))
    return torch.cat([model_sampling.sigmas[timesteps].float().cpu(), torch.zeros(1)])
