"""The official code's own job, done by the pack: three objects, 30 prompt pairs each, on a seeded
width-32 SD1.5-layout UNet at 64x64 (the configuration of the reference fixture, ../shared/reference).

The official code cannot run here; its time is the measurement in OFFICIAL (same CPU). This
times the pack end to end (prompt list -> saved mask: saliency, selection, fusion, save), each
stage, and the bare UNet forwards those saliency calls need (the same batches without hooks),
for a few prompts-per-batch and thread settings, rounds taking turns; medians with quartiles.

    python bench/official.py [--rounds 3] [--quick]

Writes out/bench/official.json and .md (and --report: the committed copy, bench/reports/).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common

common.setup()

import torch  # noqa: E402

import fia_engine as fia  # noqa: E402
from devkit import tiny  # noqa: E402

OFFICIAL = {
    "seconds": [310.0, 312.0], "measured": "2026-12-03, this 2-core x86-64 CPU, two interleaved rounds",
    "unet_calls": 9180, "batch": 2, "image_evaluations": 18360,
    "note": "official run_fia: 180 prompts x 51 PNDM calls, all 50 steps one prompt at a time",
}
CONCEPTS = ["parachute", "golf ball", "church"]  # the fixture's objects


def fixture_layout_patcher(seed: int = 0, model_channels: int = 32):
    """A ComfyUI SD1.5 UNet with the fixture's widths (32, 64, 128, 128), seeded weights, fp32."""
    import comfy.model_patcher
    import comfy.supported_models

    cfg = comfy.supported_models.SD15(dict(tiny.SD15_FULL_UNET, model_channels=model_channels))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, device=torch.device("cpu"))
    tiny.fill_seeded(model.diffusion_model, seed, scale=0.02)
    return comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def end_to_end(patcher, encode, concepts: list[str], pairs: int, batch: int, recorded: int, out: Path) -> dict:
    """Prompt list -> saved mask, every stage timed."""
    settings = fia.SamplingSettings(width=64, height=64, prompts_per_batch=batch, recorded_steps=recorded)
    cpu = time.process_time()
    stamps = [time.perf_counter()]
    record = fia.compute_saliency(patcher, encode, concepts, fia.resolve_preset("objects"), num_pairs=pairs,
                                  settings=settings)
    stamps.append(time.perf_counter())
    masks = fia.select_sensitive_neurons(record)
    stamps.append(time.perf_counter())
    mask = fia.fuse_masks([masks])
    stamps.append(time.perf_counter())
    fia.save_mask(mask, out)
    stamps.append(time.perf_counter())
    stages = dict(zip(("saliency", "select", "fuse", "save"), (b - a for a, b in zip(stamps, stamps[1:])), strict=True))
    return {**stages, "total": stamps[-1] - stamps[0], "total_cpu": time.process_time() - cpu,
            "unet_calls": record.unet_calls, "pruned": mask.pruned_count}


def bare_forwards(patcher, encode, concepts: list[str], pairs: int, batch: int, recorded: int) -> dict:
    """The same sampler calls as saliency, no hooks: the unavoidable work."""
    from fia_engine.host.recording import batch_conditioning, latent_geometry, sample_first_steps
    from fia_engine.host.saliency import recording_jobs

    settings = fia.SamplingSettings(width=64, height=64, prompts_per_batch=batch, recorded_steps=recorded)
    prompt_pairs = {c: fia.build_prompt_pairs(c, fia.resolve_preset("objects"), pairs, fia.paper.GENERAL.seed,
                                              settings.noise) for c in concepts}
    geometry = latent_geometry(patcher, 64, 64)
    negative, cache = encode(""), {}
    start = time.perf_counter()
    for _, _, items in recording_jobs(prompt_pairs, concepts):
        for first in range(0, len(items), batch):
            chunk = items[first:first + batch]
            positive = batch_conditioning([cache.setdefault(t, encode(t)) for t, _ in chunk])
            sample_first_steps(patcher, settings, positive, negative, [s for _, s in chunk], geometry)
    return {"seconds": time.perf_counter() - start}


def quartiles(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return {"median": statistics.median(values), "quartiles": [q[0], q[2]], "rounds": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 31])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="1 round, 2 pairs, T = 2, one setting: checks the script")
    parser.add_argument("--report", type=Path, help="also write the JSON here (bench/reports/official.json)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.pairs, args.batches, args.threads = 1, 2, [4], [1]
    recorded = 2 if args.quick else 10
    patcher, encode = fixture_layout_patcher(), tiny.hashed_encoder(768)
    settings = [(b, t) for b in args.batches for t in args.threads]
    timed: dict[str, list[dict]] = {f"batch {b}, {t} threads": [] for b, t in settings}
    bare: dict[str, list[float]] = {name: [] for name in timed}
    with tempfile.TemporaryDirectory() as tmp:
        for keep, order in common.rotations(settings, args.rounds, warm_up=not args.quick):
            for batch, threads in order:
                torch.set_num_threads(threads)
                name = f"batch {batch}, {threads} threads"
                run = end_to_end(patcher, encode, CONCEPTS, args.pairs, batch, recorded, Path(tmp) / "mask.safetensors")
                forwards = bare_forwards(patcher, encode, CONCEPTS, args.pairs, batch, recorded)
                if keep:
                    timed[name].append(run)
                    bare[name].append(forwards["seconds"])
    result = {"machine": common.machine(), "concepts": CONCEPTS, "pairs": args.pairs, "recorded_steps": recorded,
              "size": 64, "model": "SD1.5 layout, widths 32/64/128/128, seeded fp32 weights", "quick": args.quick,
              "official": OFFICIAL, "settings": {}}
    for name, runs in timed.items():
        row = {stage: quartiles([r[stage] for r in runs])
               for stage in ("saliency", "select", "fuse", "save", "total", "total_cpu")}
        row["bare_forwards"] = quartiles(bare[name])
        row["saliency_over_bare"] = quartiles([r["saliency"] / b for r, b in zip(runs, bare[name], strict=True)])
        row["unet_calls"], row["pruned"] = runs[0]["unet_calls"], runs[0]["pruned"]
        row["speedup_vs_official"] = statistics.mean(OFFICIAL["seconds"]) / row["total"]["median"]
        result["settings"][name] = row
    best = min(result["settings"], key=lambda n: result["settings"][n]["total"]["median"])
    result["best"] = best
    path = common.write("official", result, rows(result), "FIA: the official code's job, side by side")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(path.with_suffix(".json").read_text())
    print(path.read_text())


def rows(result: dict) -> list[tuple[str, str, str]]:
    def cell(q: dict) -> str:
        return f"{q['median']:.2f} ({q['quartiles'][0]:.2f}-{q['quartiles'][1]:.2f})"

    out = [("official run_fia (measured, not run here)", f"{OFFICIAL['seconds'][0]:.0f}-{OFFICIAL['seconds'][1]:.0f} s", "")]
    for name, row in result["settings"].items():
        out.append((f"pack end to end, {name} ({row['unet_calls']} UNet calls)", cell(row["total"]),
                    f"{row['speedup_vs_official']:.1f}x faster"))
        out.append((f"  saliency / select / fuse / save, {name}",
                    " / ".join(cell(row[s]) for s in ("saliency", "select", "fuse", "save")), ""))
        out.append((f"  bare forwards of the same calls, {name}; saliency / bare", f"{cell(row['bare_forwards'])}; "
                    f"{cell(row['saliency_over_bare'])}", ""))
    return out


if __name__ == "__main__":
    main()
