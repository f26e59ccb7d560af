"""Train the ToyWorld evaluator CNN on freshly rendered, augmented images (seeded).

    python -m toyworld.shapes.train_evaluator --out toyworld/weights/evaluator.safetensors

Held-out accuracy is measured on renders from a disjoint seed stream, clean and degraded by
`augment` with a fixed seed, and stored in the weights' metadata.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from . import world
from .evaluator import HEADS, Evaluator, accuracy, classify, label_indices

log = logging.getLogger("toyworld.shapes.train_evaluator")
HELD_OUT_SEED = 987_654_321


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Imitate sampler flaws: gaussian and impulse pixel noise, blur, gain and brightness shifts,
    and colour casts (a per-channel offset, as the v2 model tinted backgrounds teal or purple)."""
    b = images.shape[0]
    x = images.movedim(-1, 1)
    blur = torch.rand(b, 1, 1, 1, generator=gen) < 0.3
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3).contiguous(), groups=3)
    x = torch.where(blur, blurred, x)
    gain = 1 + 0.12 * (torch.rand(b, 3, 1, 1, generator=gen) * 2 - 1)
    shift = 0.06 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    cast = 0.05 * (torch.rand(b, 3, 1, 1, generator=gen) * 2 - 1)
    x = x * gain + shift + cast
    sigma = 0.2 * torch.rand(b, 1, 1, 1, generator=gen) ** 2
    x = x + sigma * torch.randn(x.shape, generator=gen)
    p_imp = 0.05 * torch.rand(b, 1, 1, 1, generator=gen)
    hit = torch.rand(b, 1, 32, 32, generator=gen) < p_imp
    x = torch.where(hit, torch.rand(x.shape, generator=gen), x)
    return x.clamp(0, 1).movedim(1, -1)


def rendered_set(seed: int, n: int) -> tuple[torch.Tensor, list[tuple[str, str, str]]]:
    images, _, labels = world.batch(seed, n)
    return images, [lab.as_tuple() for lab in labels]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--held-out", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("toyworld/weights/evaluator.safetensors"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    net = Evaluator()
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.1)
    start = time.time()
    net.train()
    for step in range(a.steps):
        images, labels = rendered_set(a.seed * 1_000_003 + step + 1, a.batch)
        gen = torch.Generator().manual_seed(a.seed * 7_919 + step)
        logits = net(augment(images, gen))
        target = label_indices(labels)
        loss = sum(F.cross_entropy(logits[k], target[k]) for k in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0:
            log.info("step %d loss %.4f %.1fs", step + 1, float(loss), time.time() - start)
    net.eval()
    images, labels = rendered_set(HELD_OUT_SEED, a.held_out)
    clean = accuracy(classify(images, net), labels)
    noisy = accuracy(classify(augment(images, torch.Generator().manual_seed(1)), net), labels)
    log.info("held-out clean %s noisy %s", clean, noisy)
    meta = {
        "held_out_clean": json.dumps(clean),
        "held_out_augmented": json.dumps(noisy),
        "held_out": f"{a.held_out} renders, world.batch(seed={HELD_OUT_SEED}); augmented: augment(seed 1)",
        "heads": json.dumps({k: list(v) for k, v in HEADS.items()}),
        "minutes": f"{(time.time() - start) / 60:.1f}",
        "training": json.dumps({k: str(v) for k, v in vars(a).items()}),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items() if v.dtype.is_floating_point}, str(a.out), meta)
    log.info("saved %s", a.out)


if __name__ == "__main__":
    main()
