"""Eq.1-2: per-prompt neuron saliency and its contrast between concept and base prompts.

Eq.1 scores weight (i, j) of an FF output layer as U = |W_ij| * ||X_j|| * |cos(X_j, Y_i)|, with X
the layer input (rows = tokens, L2-normalised per row as in the reference code) and Y = X W^T.
|W| does not vary across prompts, so the per-prompt part is kept without it:
  reference form (the reference code, plain Wanda): u_j  = ||X_j||               -> [C_in]
  exact form (the paper):                           u_ij = |(Y^T X)_ij| / ||Y_i|| -> [C_out, C_in]
(||X_j|| |cos(X_j, Y_i)| = |X_j . Y_i| / ||Y_i||.) Eq.2 then needs only the mean over concept
prompts and the mean and population std over base prompts of u, per recorded step and layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

ROW_EPS = 1e-6


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise every token row of x [..., C] (fp32)."""
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(ROW_EPS)


def column_energy(x: torch.Tensor) -> torch.Tensor:
    """sum over rows of normalize_rows(x)^2, per column: x [B, N, C] -> [B, C].

    Summed (not yet square-rooted) so that rows arriving in separate calls (CFG halves run
    apart under memory pressure) pool exactly.
    """
    return normalize_rows(x).square().sum(dim=1)


def output_input_products(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For the exact form: G = Y^T Xn [B, C_out, C_in] and ||Y_i||^2 [B, C_out], Y = Xn W^T."""
    xn = normalize_rows(x)
    y = xn @ weight.float().t()
    return torch.einsum("bno,bni->boi", y, xn), y.square().sum(dim=1)


def reference_unit_saliency(energy: torch.Tensor) -> torch.Tensor:
    """Eq.1, reference form, without |W|: the column norm ||X_j||."""
    return energy.sqrt()


def exact_unit_saliency(products: torch.Tensor, output_energy: torch.Tensor) -> torch.Tensor:
    """Eq.1, exact form, without |W|: ||X_j|| |cos(X_j, Y_i)| = |G_ij| / ||Y_i||."""
    return products.abs() / output_energy.sqrt().clamp_min(ROW_EPS).unsqueeze(-1)


def contrastive_saliency(
    abs_weight: torch.Tensor, concept_mean: torch.Tensor, base_mean: torch.Tensor, base_std: torch.Tensor
) -> torch.Tensor:
    """Eq.2: S = max(0, mean_c(U) - mean_b(U) - std_b(U)) for one step of one layer, [C_out, C_in].

    U = |W| * u with |W| >= 0 constant over prompts, so the moments of U are |W| times those of u.
    Column statistics ([C_in]) broadcast over output rows.
    """
    return abs_weight * contrastive_margin(concept_mean, base_mean, base_std)


def contrastive_margin(concept_mean: torch.Tensor, base_mean: torch.Tensor, base_std: torch.Tensor) -> torch.Tensor:
    """Eq.2 without |W|: max(0, mean_c(u) - mean_b(u) - std_b(u)). In the reference form it is one
    number per input column and step, which is what lets selection work from sorted |W| columns."""
    return (concept_mean - base_mean - base_std).clamp_min(0.0)


@dataclass(frozen=True)
class SaliencyForm:
    """How one form of Eq.1 is recorded: partial sums per hooked call, then one value per prompt.

    Partial sums add exactly when rows of one evaluation arrive in several calls (CFG halves).
    """

    name: str
    per_weight: bool  # statistics [T, C_out, C_in] (else per column, [T, C_in])
    needs_weight: bool  # the hook needs the layer's weight
    accumulate_dtype: torch.dtype  # running sums over prompts
    partial_sums: Callable[[torch.Tensor, torch.Tensor | None], list[torch.Tensor]]  # (x, weight) -> sums
    unit_saliency: Callable[[list[torch.Tensor]], torch.Tensor]  # sums -> u, one row per prompt

    def unit_shape(self, out_features: int, columns: int) -> tuple[int, ...]:
        return (out_features, columns) if self.per_weight else (columns,)


FORMS: dict[str, SaliencyForm] = {
    "reference": SaliencyForm(
        "reference", per_weight=False, needs_weight=False, accumulate_dtype=torch.float64,
        partial_sums=lambda x, weight: [column_energy(x)],
        unit_saliency=lambda sums: reference_unit_saliency(sums[0]),
    ),
    "exact": SaliencyForm(
        "exact", per_weight=True, needs_weight=True, accumulate_dtype=torch.float32,  # weight-sized: fp32
        partial_sums=lambda x, weight: list(output_input_products(x, weight)),
        unit_saliency=lambda sums: exact_unit_saliency(sums[0], sums[1]),
    ),
}


@dataclass
class Moments:
    """Mean (and population std) of a per-prompt quantity, per recorded step: [T, *shape]."""

    mean: torch.Tensor
    std: torch.Tensor | None
    count: int

    def nbytes(self) -> int:
        size = self.mean.numel() * self.mean.element_size()
        return size + (self.std.numel() * self.std.element_size() if self.std is not None else 0)


class MomentAccumulator:
    """Running sums over prompts, kept on the model's device (no host sync per call).

    The std comes from a running sum of squared deviations merged batch by batch (Chan et al.'s
    form of Welford's update), not from sum_sq / n - mean^2: that difference cancels when the
    spread is small next to the mean, as it is for base prompts sharing one latent, and loses
    most of its digits in the exact form's fp32 sums. The mean is the plain sum / n either way.
    """

    def __init__(self, steps: int, shape: tuple[int, ...], device: torch.device, with_std: bool, dtype=torch.float64):
        self.sum = torch.zeros((steps, *shape), device=device, dtype=dtype)
        self.deviations = torch.zeros_like(self.sum) if with_std else None  # sum of (x - mean)^2
        self.counts = [0] * steps

    def add(self, step: int, values: torch.Tensor) -> None:
        """values: [B, *shape], one row per prompt."""
        values = values.to(self.sum.dtype)
        if self.deviations is not None:
            seen, batch = self.counts[step], values.shape[0]
            batch_mean = values.mean(dim=0)
            self.deviations[step] += (values - batch_mean).square().sum(dim=0)
            if seen:
                delta = batch_mean - self.sum[step] / seen
                self.deviations[step] += delta.square() * (seen * batch / (seen + batch))
        self.sum[step] += values.sum(dim=0)
        self.counts[step] += values.shape[0]

    def finalize(self, mean_dtype: torch.dtype = torch.float32) -> Moments:
        count = self.counts[0]
        if count == 0 or any(c != count for c in self.counts):
            raise RuntimeError(f"incomplete recording: prompts per step {self.counts}")
        mean = self.sum / count
        std = None
        if self.deviations is not None:
            std = (self.deviations / count).sqrt().float().cpu()
        return Moments(mean.to(mean_dtype).cpu(), std, count)
