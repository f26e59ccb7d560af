"""The seeded training loop both worlds' UNets share (epsilon prediction, SD's noise schedule);
each world's command (`python -m toyworld.shapes.train`, `python -m toyworld.emoji.train`) gives
it its UNet config, its batches and its text encoder.

Data are rendered on the fly from (seed, step), as are timesteps and noise, so the weights
after step k depend only on the seed and k (on a given torch build, device and thread count):
`--minutes` just decides where the run stops, and `--resume` continues bit for bit. EMA
weights are written (float16) every `--save-every` minutes, so a partial run is usable; a
resume state (weights, EMA, Adam moments, float32) goes to `--state`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import model as tw_model

log = logging.getLogger(__name__)


def timesteps_for(gen: torch.Generator, n: int, p_low: float) -> torch.Tensor:
    """Uniform timesteps, plus (optionally) a share biased to low noise.

    The low-noise bias was a guess against per-pixel noise; measured at step 1434 it was the
    high-noise end that failed, hence the switch to uniform + min-SNR (see --switch-step)."""
    uniform = torch.randint(0, 1000, (n,), generator=gen)
    low = (torch.rand(n, generator=gen).pow(2) * 1000).long().clamp(max=999)
    pick = torch.rand(n, generator=gen) < p_low
    return torch.where(pick, low, uniform)


def learning_rate(a: argparse.Namespace, step: int) -> float:
    """Linear warmup, constant, then an optional cosine fall to a.lr_final * a.lr (a function of the step only)."""
    lr = a.lr * min(1.0, (step + 1) / a.warmup)
    if a.decay_start is not None and step >= a.decay_start:
        progress = min(1.0, (step - a.decay_start) / max(1, a.max_steps - a.decay_start))
        lr = a.lr * (a.lr_final + (1 - a.lr_final) * 0.5 * (1 + math.cos(math.pi * progress)))
    return lr


def save_weights(path: Path, ema: dict[str, torch.Tensor], meta: dict[str, str],
                 extra: dict[str, torch.Tensor] | None = None) -> None:
    """EMA weights as float16, plus `extra` tensors kept as they are (a frozen text encoder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in ema.items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    save_file(tensors, str(tmp), meta)
    tmp.replace(path)


def save_state(path: Path, unet: torch.nn.Module, ema: dict[str, torch.Tensor],
               opt: torch.optim.Optimizer, step: int, minutes: float = 0.0) -> None:
    """Resume state as safetensors (no pickle): weights, EMA and Adam moments."""
    tensors: dict[str, torch.Tensor] = {}
    names = {id(p): n for n, p in unet.named_parameters()}
    for n, p in unet.named_parameters():
        tensors["model." + n] = p.detach().cpu().clone()
    for n, v in ema.items():
        tensors["ema." + n] = v.cpu().clone()
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    tensors[f"opt.{key}.{names[id(p)]}"] = st[key].cpu().clone()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), {"step": str(step), "minutes": f"{minutes:.1f}"})
    tmp.replace(path)


def recorded_minutes(path: Path) -> float:
    """Training minutes a state or weights file records (0 for files from before they did)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return float((f.metadata() or {}).get("minutes", 0.0))


def export_checkpoint(state: Path, out: Path) -> None:
    """The EMA half of a resume state, float16, for a later session to --resume from (19 MB for v3)."""
    from safetensors import safe_open

    with safe_open(str(state), "pt") as f:
        step = f.metadata()["step"]
        tensors = {k: f.get_tensor(k).half() for k in f.keys() if k.startswith("ema.")}  # noqa: SIM118
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), {"step": step})


def load_state(path: Path, unet: torch.nn.Module, ema: dict[str, torch.Tensor],
               opt: torch.optim.Optimizer) -> int:
    """Continue from a resume state (bit for bit), an exported checkpoint or a weights file that
    records its step (both EMA only: the weights restart from it and Adam's moments are rebuilt)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        step = int(f.metadata()["step"])
    tensors = load_file(str(path))
    if not any(k.startswith("ema.") for k in tensors):  # a weights file: its tensors are the EMA
        tensors = {"ema." + k: v for k, v in tensors.items() if not k.startswith("text_encoder.")}
    with torch.no_grad():
        for n, p in unet.named_parameters():
            p.copy_(tensors.get("model." + n, tensors["ema." + n]))  # a committed checkpoint holds EMA only
            ema[n].copy_(tensors["ema." + n])
            if f"opt.exp_avg.{n}" in tensors:
                opt.state[p] = {
                    "step": torch.tensor(float(step)),
                    "exp_avg": tensors[f"opt.exp_avg.{n}"].to(p.device),
                    "exp_avg_sq": tensors[f"opt.exp_avg_sq.{n}"].to(p.device),
                }
    return step


def add_training_arguments(ap: argparse.ArgumentParser, out: str, state: str) -> None:
    """The options every world's trainer shares (schedule, loss, EMA, checkpoints)."""
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--decay-start", type=int, default=None,
                    help="step from which the learning rate falls (cosine) to --lr-final at --max-steps")
    ap.add_argument("--lr-final", type=float, default=0.05, help="final lr as a fraction of --lr")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--p-low", type=float, default=0.3,
                    help="share of low-noise timesteps before --switch-step")
    ap.add_argument("--min-snr", type=float, default=5.0,
                    help="min-SNR-gamma loss weight from --switch-step on (0: off)")
    ap.add_argument("--switch-step", type=int, default=0,
                    help="steps before this use --p-low sampling and no weighting; from it on "
                         "uniform timesteps with min-SNR weighting (the shipped run switched at 1650)")
    ap.add_argument("--offset-noise", type=float, default=0.0,
                    help="std of a per-(image, channel) constant added to the noise, so the model "
                         "learns to set the global colour itself instead of reading it from the "
                         "starting noise's mean (0: off)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from these weights (a safetensors of the same UNet) instead of a seeded init")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu",
                    help="where the UNet trains; data, timesteps and noise are drawn on the CPU")
    ap.add_argument("--save-every", type=float, default=5.0, help="minutes between checkpoints")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path(out),
                    help="EMA weights (float16); commit them under toyworld/weights/ once good")
    ap.add_argument("--state", type=Path, default=Path(state),
                    help="resume state (weights, EMA, Adam moments); not for committing")
    ap.add_argument("--resume", action="store_true", help="continue from --state")
    ap.add_argument("--export-checkpoint", type=Path, default=None,
                    help="write --state's EMA weights (float16) and step to this file and exit: a checkpoint small "
                         "enough to commit, from which --resume continues (Adam moments rebuilt)")


Batch = Callable[[int, int], tuple[torch.Tensor, list[str]]]


class ContextMemo:
    """Contexts by prompt for a frozen text encoder: a world has a few thousand distinct prompts, and
    encoding them anew took a fifth of an EmojiWorld step. A prompt's row does not depend on the
    batch it is encoded in (checked bit for bit), so training with the memo is training without it."""

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], max_prompts: int = 50_000) -> None:
        self.encode = encode
        self.max_prompts = max_prompts
        self.rows: dict[str, torch.Tensor] = {}

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        new = [p for p in dict.fromkeys(prompts) if p not in self.rows]
        fresh = dict(zip(new, self.encode(new), strict=True)) if new else {}
        if len(self.rows) + len(fresh) <= self.max_prompts:
            self.rows.update(fresh)
        return torch.stack([self.rows[p] if p in self.rows else fresh[p] for p in prompts])


def train(a: argparse.Namespace, unet_config: dict, batch: Batch,
          encode: Callable[[list[str]], torch.Tensor], metadata: dict[str, str],
          extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """The shared loop: `batch(seed, n)` gives images [n, H, W, 3] and prompts, `encode` their
    context; everything random comes from (a.seed, step), so a resumed run continues bit for bit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    torch.set_num_threads(a.threads)
    patch = tw_model.latent_format_for(unet_config).patch
    device = torch.device(a.device)
    base = tw_model.build_model(unet_config=unet_config)
    unet = base.diffusion_model
    tw_model.init_weights(unet, a.seed)
    if a.init is not None:
        weights = load_file(str(a.init))
        unet.load_state_dict({k: v.float() for k, v in weights.items() if not k.startswith("text_encoder.")}, strict=True)
    unet.to(device).train().requires_grad_(True)  # newer ComfyUI builds its weights without grad
    sigmas = base.model_sampling.sigmas.float()
    alphas_cumprod = 1.0 / (1.0 + sigmas**2)
    ema = {n: p.detach().clone() for n, p in unet.named_parameters()}
    params = [p for p in unet.parameters()]
    # fused: one kernel for all parameters (an EmojiWorld step spent 0.1 s in the per-tensor update)
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0, betas=(0.9, 0.99), fused=True)
    state_path = a.state
    state_path.parent.mkdir(parents=True, exist_ok=True)
    step, minutes_before = 0, 0.0
    if a.resume and state_path.exists():
        step = load_state(state_path, unet, ema, opt)
        minutes_before = recorded_minutes(state_path)
        log.info("resumed at step %d after %.1f training minutes", step, minutes_before)

    memo = ContextMemo(encode)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    log.info("params %d, settings %s", tw_model.parameter_count(unet), json.dumps(settings))
    start = time.time()
    last_save = start
    loss_acc, n_acc, t_acc = 0.0, 0, time.time()

    def checkpoint(final: bool) -> None:
        minutes = minutes_before + (time.time() - start) / 60  # over every resumed segment
        meta = {
            **metadata,
            "training": json.dumps(settings),
            "step": str(step),
            "minutes": f"{minutes:.1f}",
            "ema": str(a.ema),
            "final": str(final),
        }
        save_weights(a.out, ema, meta, extra_tensors)
        save_state(state_path, unet, ema, opt, step, minutes)
        log.info("saved step %d to %s", step, a.out)

    while step < a.max_steps and time.time() - start < a.minutes * 60:
        images, prompts = batch(a.seed * 1_000_003 + step, a.batch)
        gen = torch.Generator().manual_seed(a.seed * 7_919 + step)
        x0 = tw_model.image_to_latent(images, patch)
        context = memo(prompts).to(device)
        phase2 = step >= a.switch_step
        t = timesteps_for(gen, a.batch, 0.0 if phase2 else a.p_low)
        eps = torch.randn(x0.shape, generator=gen)
        if a.offset_noise > 0:
            eps = eps + a.offset_noise * torch.randn(x0.shape[:2] + (1, 1), generator=gen)
        ac = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = ac.sqrt() * x0 + (1 - ac).sqrt() * eps
        ac, eps = ac.to(device), eps.to(device)
        pred = unet(xt.to(device), t.float().to(device), context=context)
        per_sample = (pred.float() - eps).pow(2).mean(dim=(1, 2, 3))
        if phase2 and a.min_snr > 0:
            # min-SNR-gamma: low-noise samples (mostly irreducible error) stop swamping the
            # gradient, so the high-noise steps that fix colour/shape/background get learned.
            snr = ac.flatten() / (1 - ac.flatten())
            per_sample = per_sample * (snr.clamp(max=a.min_snr) / snr)
        loss = per_sample.mean()
        for g in opt.param_groups:
            g["lr"] = learning_rate(a, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for n, p in unet.named_parameters():
                ema[n].mul_(decay).add_(p.detach(), alpha=1 - decay)
        loss_acc += loss.item()
        n_acc += 1
        if step % a.log_every == 0:
            dt = (time.time() - t_acc) / n_acc
            log.info("step %d loss %.4f %.2fs/step elapsed %.1fmin", step, loss_acc / n_acc, dt,
                     (time.time() - start) / 60)
            loss_acc, n_acc, t_acc = 0.0, 0, time.time()
        if time.time() - last_save > a.save_every * 60:
            checkpoint(final=False)
            last_save = time.time()
    checkpoint(final=True)
