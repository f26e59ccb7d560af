"""`make bench-perf`: what saliency, selection, masks and masked sampling cost, measured side by side.

Models: (a) ToyWorld when its weights are present, else a seeded tiny SD1.5-layout model;
(b) a full-width SD1.5 UNet (random seeded weights, real layer sizes) at a small resolution.
Writes out/bench/perf.json and out/bench/perf.md. Medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

common.setup()

import comfy.model_management  # noqa: E402
import comfy.patcher_extension  # noqa: E402
import comfy.sample  # noqa: E402
import torch  # noqa: E402

import fia_engine as fia  # noqa: E402
from devkit import tiny  # noqa: E402
from fia_engine.core.memory import process_memory_bytes  # noqa: E402
from fia_engine.core.record import RecordingProvenance, SaliencyRecord  # noqa: E402
from fia_engine.core.statistics import Moments  # noqa: E402
from fia_engine.host.recording import batch_conditioning, latent_geometry, sample_first_steps  # noqa: E402
from fia_engine.host.saliency import recording_jobs  # noqa: E402

TOYWORLD_WEIGHTS = common.REPO / "toyworld" / "weights" / "toyworld.safetensors"
# glibc hands activation buffers above its (adaptive) mmap threshold back to the OS on every free,
# so each sampler step page-faults them in again. Where the threshold stands depends on what the
# process allocated before: the same plain sampling ran 1.4-1.6 s/step fresh and 0.9-1.0 s/step
# after a saliency run (identical outputs). Fixed thresholds take that history out of the ratio.
STEADY_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}


class Subject:
    """A model to measure, with its prompt pairs and recording settings."""

    def __init__(self, name, patcher, encode, pairs_for, settings: fia.SamplingSettings):
        self.name, self.patcher, self.encode, self.pairs_for, self.settings = name, patcher, encode, pairs_for, settings

    def pairs(self, concepts: list[str], count: int) -> dict[str, list[fia.PromptPair]]:
        return {c: self.pairs_for(c, count) for c in concepts}

    def saliency(self, concepts: list[str], count: int, **overrides) -> SaliencyRecord:
        settings = fia.SamplingSettings(**(vars(self.settings) | overrides))
        return fia.compute_saliency(self.patcher, self.encode, concepts, fia.PromptPreset("bench", (), (), ()),
                                    num_pairs=count, settings=settings, pairs=self.pairs(concepts, count))

    def plain_sampling(self, concepts: list[str], count: int) -> int:
        """The same batches, prompts, seeds and schedule as saliency, with no hooks: the
        unavoidable work. Returns the number of sampler runs."""
        settings = self.settings
        geometry = latent_geometry(self.patcher, settings.width, settings.height)
        negative, cache, runs = self.encode(""), {}, 0
        for _, _, items in recording_jobs(self.pairs(concepts, count), concepts):
            for start in range(0, len(items), settings.prompts_per_batch):
                chunk = items[start:start + settings.prompts_per_batch]
                positive = batch_conditioning([cache.setdefault(t, self.encode(t)) for t, _ in chunk])
                sample_first_steps(self.patcher, settings, positive, negative, [s for _, s in chunk], geometry)
                runs += 1
        return runs


def small_subject() -> Subject:
    if TOYWORLD_WEIGHTS.exists():
        from toyworld import forgetting
        from toyworld.loader import load_toyworld

        world = load_toyworld(TOYWORLD_WEIGHTS)
        return Subject("ToyWorld", world.patcher, world.encode, lambda c, n: forgetting.concept_pairs(c, n),
                       forgetting.RECORDING)
    clip = tiny.tiny_clip()
    return Subject("tiny SD1.5 layout", tiny.tiny_sd15_patcher(), tiny.clip_encoder(clip), objects_pairs,
                   fia.SamplingSettings(steps=50, recorded_steps=10, width=64, height=64, prompts_per_batch=8))


def objects_pairs(concept: str, count: int) -> list[fia.PromptPair]:
    return fia.build_prompt_pairs(concept, fia.PRESETS["objects"], count, fia.paper.GENERAL.seed)


def sd15_subject(size: int) -> Subject:
    import comfy.model_patcher
    import comfy.supported_models

    cfg = comfy.supported_models.SD15(dict(tiny.SD15_FULL_UNET))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, device=torch.device("cpu"))
    tiny.fill_seeded(model.diffusion_model, 0, scale=0.02)
    patcher = comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))
    return Subject(f"SD1.5 UNet, full width, {size}x{size}", patcher, tiny.hashed_encoder(768), objects_pairs,
                   fia.SamplingSettings(steps=50, recorded_steps=10, width=size, height=size, prompts_per_batch=4))


def count_unet_calls(subject: Subject, run) -> int:
    calls = []

    def counter(executor, *args, **kwargs):
        calls.append(1)
        return executor(*args, **kwargs)

    original = subject.patcher
    subject.patcher = original.clone()
    subject.patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "bench_count", counter)
    try:
        run()
    finally:
        subject.patcher = original
    return len(calls)


def overhead(subject: Subject, pairs: int, repeats: int) -> dict:
    concepts = ["golf ball"] if subject.name != "ToyWorld" else ["red"]
    record = subject.saliency(concepts, pairs)
    rounds = common.interleaved_rounds({"saliency": lambda: subject.saliency(concepts, pairs),
                                        "plain": lambda: subject.plain_sampling(concepts, pairs)}, repeats)
    ratio = common.paired_ratio(rounds, "saliency", "plain")
    plain_calls = count_unet_calls(subject, lambda: subject.plain_sampling(concepts, pairs))
    batches = 2 * -(-pairs // subject.settings.prompts_per_batch)
    return {
        "model": subject.name, "prompt_pairs": pairs, "settings": vars(subject.settings),
        "saliency_seconds": statistics.median(r["saliency"] for r in rounds),
        "plain_sampling_seconds": statistics.median(r["plain"] for r in rounds),
        "saliency_overhead_ratio": ratio["median"], "ratio_quartiles": ratio["quartiles"],
        "unet_calls": record.unet_calls, "plain_unet_calls": plain_calls,
        "unet_calls_expected": batches * subject.settings.recorded_steps,
        "unet_calls_per_concept": record.unet_calls // 2,
        "full_schedule_unet_calls": batches * subject.settings.steps,
        "saliency_state_bytes_per_concept": record.state_bytes_per_concept(),
    }


def shared_base(subject: Subject, pairs: int, repeats: int) -> dict:
    concepts = ["red", "green", "blue", "yellow", "purple"] if subject.name == "ToyWorld" else [
        "golf ball", "parachute", "church", "chainsaw", "gas pump"]
    rounds = common.interleaved_rounds({"one": lambda: subject.saliency(concepts[:1], pairs),
                                        "five": lambda: subject.saliency(concepts, pairs)}, repeats)
    ratio = common.paired_ratio(rounds, "five", "one", scale=5)
    return {"one_concept_seconds": statistics.median(r["one"] for r in rounds),
            "five_concepts_seconds": statistics.median(r["five"] for r in rounds),
            "shared_base_speedup": ratio["median"], "ratio_quartiles": ratio["quartiles"],
            "note": "all five concepts share one base set: 6 prompt sets instead of 10 (ideal ratio 0.6)"}


def batch_scaling(subject: Subject, pairs: int, repeats: int) -> dict:
    concepts = ["red"] if subject.name == "ToyWorld" else ["golf ball"]
    rounds = common.interleaved_rounds(
        {str(b): lambda b=b: subject.saliency(concepts, pairs, prompts_per_batch=b) for b in (1, 4, 8)}, repeats)
    return {b: statistics.median(r[b] for r in rounds) for b in ("1", "4", "8")}


def mask_modes(size: int, mask: fia.UnlearningMask) -> dict:
    """Plain, patch-mode and wrapper-mode models, each on its own seeded copy of the SD1.5 UNet.

    Separate copies are each patched once, as for a user who samples the masked model over and
    over; clones of one model would swap their patches on the shared module at every turn,
    timing fresh allocations instead of the mask.
    """
    return {"plain": sd15_subject(size).patcher, "patch": fia.apply_mask(sd15_subject(size).patcher, mask),
            "wrapper": fia.apply_mask(sd15_subject(size).patcher, mask, mode="wrapper")}


def sampler_step_ratios(models: dict, size: int, rounds: int, steps: int = 4) -> dict:
    """Process CPU seconds per sampler step (comfy.sample.sample, timed between its callbacks, the
    first step dropped), the models taking turns sample by sample."""
    channels, height, width = latent_geometry(models["plain"], size, size)
    encode = tiny.hashed_encoder(768)
    positive, negative = encode("a photo of a cat"), encode("")
    latent = torch.zeros(2, channels, height, width)
    noise = comfy.sample.prepare_noise(latent, 3)

    def step_seconds(patcher) -> dict[str, float]:
        stamps: list[tuple[float, float]] = []
        comfy.sample.sample(patcher, noise, steps, 7.5, "euler", "normal", positive, negative, latent, disable_pbar=True,
                            callback=lambda *_: stamps.append((time.perf_counter(), time.process_time())))
        return {clock: statistics.median(b[i] - a[i] for a, b in zip(stamps[1:], stamps[2:]))
                for i, clock in enumerate(("wall", "cpu"))}

    timed = []
    for keep, names in common.rotations(list(models), rounds):
        times = {name: step_seconds(models[name]) for name in names}
        if keep:
            timed.append(times)
    by_clock = {clock: [{n: t[n][clock] for n in t} for t in timed] for clock in ("cpu", "wall")}
    return {"step_seconds": {n: statistics.median(t[n] for t in by_clock["cpu"]) for n in models},
            "cpu": {n: common.paired_ratio(by_clock["cpu"], n, "plain") for n in ("patch", "wrapper")},
            "wall": {n: common.paired_ratio(by_clock["wall"], n, "plain") for n in ("patch", "wrapper")},
            "rounds": len(timed), "steps_per_sample": steps}


def unet_call_ratios(models: dict, size: int, cycles: int) -> dict:
    """Process CPU seconds of one UNet call (a cond + uncond batch of 2 prompts, as a CFG step
    makes), the models taking turns call by call: the finest pairing, so the least noise."""
    channels, height, width = latent_geometry(models["plain"], size, size)
    encode = tiny.hashed_encoder(768)
    context = torch.cat([encode("a photo of a cat")[0][0], encode("")[0][0]] * 2)
    x = torch.randn(4, channels, height, width, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((4,), 5.0)
    comfy.model_management.load_models_gpu(list(models.values()))  # each patched once, all kept loaded
    timed = []
    for keep, names in common.rotations(list(models), cycles):
        times = {}
        for name in names:
            start = time.process_time()
            models[name].model.apply_model(x, sigma, c_crossattn=context)
            times[name] = time.process_time() - start
        if keep:
            timed.append(times)

    def op_counts(patcher) -> collections.Counter:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            patcher.model.apply_model(x, sigma, c_crossattn=context)
        return collections.Counter({e.key: e.count for e in profile.key_averages()})

    ops = {name: op_counts(patcher) for name, patcher in models.items()}
    return {"call_seconds": {n: statistics.median(t[n] for t in timed) for n in models},
            "cpu": {n: common.paired_ratio(timed, n, "plain") for n in ("patch", "wrapper")}, "cycles": len(timed),
            "ops_per_call": sum(ops["plain"].values()),
            "ops_beyond_plain": {n: dict(ops[n] - ops["plain"]) for n in ("patch", "wrapper")}}


def masked_sampling_child(out_json: str, mask_path: str, size: str, rounds: str) -> None:
    """Masked sampling in a fresh process with a fixed glibc mmap threshold (STEADY_ALLOCATOR),
    under `torch.inference_mode()` as ComfyUI runs every node."""
    # The random weights (scale 0.02) push activations into float32's subnormal range, where x86
    # arithmetic is many times slower, and pruning changes how many land there: without flushing
    # them the patched model's Linear layers ran 19% slower (torch profiler), with it 0%. Real
    # checkpoints do not live there; the flag takes the fake model's quirk out of the mask's cost.
    torch.set_flush_denormal(True)
    with torch.inference_mode():
        models = mask_modes(int(size), fia.load_mask(mask_path))
        result = {"size": int(size), "flush_denormal": True,
                  "sampler_step": sampler_step_ratios(models, int(size), int(rounds)),
                  "unet_call": unet_call_ratios(models, int(size), 2 * int(rounds))}
    Path(out_json).write_text(json.dumps(result))


def run_child(name: str, *args: str, env: dict | None = None) -> dict:
    """Runs `name`_child(out_json, *args) in a fresh interpreter and returns its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "result.json"
        subprocess.run([sys.executable, __file__, "--child", name, str(out_json), *args], check=True, env=env)
        return json.loads(out_json.read_text())


def synthetic_record(layers: list[fia.FFLayer], concepts: int, steps: int, seed: int = 0) -> SaliencyRecord:
    """Statistics with SD1.5's shapes: every concept raises a few percent of the columns."""
    gen = torch.Generator().manual_seed(seed)
    abs_weights, base, concept_moments = {}, {}, {f"c{i}": {} for i in range(concepts)}
    for layer in layers:
        columns = layer.in_features
        abs_weights[layer.key] = torch.randn(layer.shape, generator=gen).abs_() * 0.02
        base_mean = 0.5 + torch.rand(steps, columns, generator=gen)
        base_std = 0.02 + 0.03 * torch.rand(steps, columns, generator=gen)
        base[layer.key] = Moments(base_mean, base_std, 30)
        for name in concept_moments:
            bump = (torch.rand(columns, generator=gen) < 0.05) * torch.rand(columns, generator=gen) * 0.3
            noise = 0.02 * torch.randn(steps, columns, generator=gen)
            concept_moments[name][layer.key] = Moments(base_mean + bump + noise, None, 30)
    names = list(concept_moments)
    return SaliencyRecord("SD1.x", layers, "reference", "objects", names, concept_moments, {"b": base},
                          {n: "b" for n in names}, abs_weights, {},
                          RecordingProvenance(fia.SamplingSettings(recorded_steps=steps), "reference", "objects", 30, 0, 0),
                          "synthetic")


def select_fuse_child(out_json: str, mask_path: str) -> None:
    """Runs in a fresh process so its peak RSS belongs to selection and fusion alone."""
    import comfy.supported_models

    model = comfy.supported_models.SD15(dict(tiny.SD15_FULL_UNET)).get_model({}, device=torch.device("meta"))
    layers = fia.discover_ff_layers(model.diffusion_model, fia.architecture_of(model.model_config))
    record = synthetic_record(layers, concepts=10, steps=10)
    gc.collect()
    resident = process_memory_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak, to the current RSS
    start = time.perf_counter()
    result = fia.masks_from(record, fia.MethodSettings())  # the paper's objects values
    masks, mask = result.concept_masks, result.mask
    seconds = time.perf_counter() - start
    peak = process_memory_bytes("VmHWM")
    fia.save_mask(mask, mask_path)
    largest = max(layer.out_features * layer.in_features for layer in layers) * 4
    Path(out_json).write_text(json.dumps({
        "concepts": 10, "recorded_steps": 10, "r1": fia.paper.TASKS["objects"].r1, "r2": fia.paper.TASKS["objects"].r2,
        "alpha": fia.paper.TASKS["objects"].alpha,
        "select_fuse_seconds": seconds, "peak_rss_above_resident_bytes": peak - resident,
        "largest_layer_fp32_bytes": largest, "peak_over_largest_layer": (peak - resident) / largest,
        "pruned_weights": mask.pruned_count, "kept_agnostic_weights": sum(int(k.numel()) for k in mask.kept_agnostic.values()),
        "sparsity": mask.sparsity, "mask_file_bytes": Path(mask_path).stat().st_size,
        "per_concept_selected": {c: masks.count(c) for c in masks.concepts},
    }))


def select_fuse(tmp: Path) -> tuple[dict, Path]:
    mask_path = tmp / "mask10.safetensors"
    # glibc's adaptive mmap threshold keeps freed layer-sized buffers in the heap, so RSS would
    # show allocator retention rather than live memory. A fixed 4 MiB threshold returns them to
    # the OS while block-sized temporaries stay in the heap (a lower one mmaps every block: the
    # page faults then cost more than the selection)
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": str(4 << 20)}
    return run_child("select_fuse", str(mask_path), env=env), mask_path


def mask_load_apply(subject: Subject, mask_path: Path, repeats: int) -> dict:
    def load_apply():
        fia.apply_mask(subject.patcher, fia.load_mask(mask_path))

    return {"load_plus_apply_seconds": common.median_seconds(load_apply, repeats)}


def saliency_rows(result: dict) -> list[tuple[str, str, str]]:
    small, big, shared = result["overhead_small"], result["overhead_sd15"], result["shared_base"]
    rows = [
        *[(f"saliency_overhead_ratio, {o['model']} (quartiles over rounds)",
           f"{o['saliency_overhead_ratio']:.3f} ({o['ratio_quartiles'][0]:.3f}-{o['ratio_quartiles'][1]:.3f})", "<= 1.10")
          for o in (small, big)],
        ("UNet calls per concept (SD1.5: 4 pairs in one batch of 4, cond+uncond batched, T=10)",
         f"{big['unet_calls_per_concept']} (full schedule: {big['full_schedule_unet_calls'] // 2})",
         "batches x T"),
        ("shared_base_speedup (5 concepts / 5 x 1 concept; quartiles)",
         f"{shared['shared_base_speedup']:.3f} ({shared['ratio_quartiles'][0]:.3f}-{shared['ratio_quartiles'][1]:.3f})", "<= 0.65"),
        ("saliency_state_bytes per concept, SD1.5 reference form", f"{big['saliency_state_bytes_per_concept']:,}", "<= 1 MB"),
    ]
    return rows + [(f"saliency seconds, {small['model']}, {b} prompts per batch", f"{s:.2f}", "")
                   for b, s in result["batch_scaling_small"].items()]


def mask_rows(result: dict) -> list[tuple[str, str, str]]:
    sf, ms = result["select_fuse_sd15"], result["masked_sampling_sd15"]
    return [
        ("select_fuse_seconds, 10 concepts, SD1.5 shapes", f"{sf['select_fuse_seconds']:.1f}", ""),
        ("peak RSS of select+fuse above resident / largest layer (fp32)", f"{sf['peak_over_largest_layer']:.2f}", "<= 2"),
        *[(f"{label}, SD1.5 {ms['size']}x{ms['size']}, CPU seconds, {how}",
           f"{r['cpu'][mode]['median']:.3f} ({r['cpu'][mode]['quartiles'][0]:.3f}-{r['cpu'][mode]['quartiles'][1]:.3f})",
           target if mode == "patch" else "")
          for how, r in ((f"per sampler step, median of {ms['sampler_step']['rounds']} rounds (quartiles)",
                          ms["sampler_step"]),
                         (f"per UNet call, median of {ms['unet_call']['cycles']} paired calls (quartiles)",
                          ms["unet_call"]))
          for label, mode, target in (("masked_sampling_ratio, patch mode", "patch", "<= 1.02"),
                                      ("wrapper mode time ratio", "wrapper", ""))],
        ("mask_file_bytes, 10-concept SD1.5 mask", f"{sf['mask_file_bytes']:,} ({sf['pruned_weights']:,} pruned)", "<= 2 MB"),
        ("mask load + apply seconds, SD1.5", f"{result['mask_load_apply_sd15']['load_plus_apply_seconds']:.2f}", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sampling-rounds", type=int, default=16,
                        help="rounds of plain / patch / wrapper sampling (4 steps each) for masked_sampling_ratio")
    parser.add_argument("--size", type=int, default=64, help="image size for the full-width SD1.5 UNet")
    parser.add_argument("--masks-only", action="store_true",
                        help="selection, mask file and masked sampling only (writes perf_masks.json/.md)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        {"select_fuse": select_fuse_child, "masked_sampling": masked_sampling_child}[args.child[0]](*args.child[1:])
        return
    result = {"machine": common.machine(), "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        result["select_fuse_sd15"], mask_path = select_fuse(Path(tmp))
        if not args.masks_only:
            small = small_subject()
            # a ToyWorld round takes seconds, so its hook overhead (about 5%) needs more rounds
            # than --repeats to stand clear of this machine's +-10% scatter between rounds
            result["overhead_small"] = overhead(small, 16, 3 * args.repeats)
            result["shared_base"] = shared_base(small, 8, args.repeats)
            result["batch_scaling_small"] = batch_scaling(small, 8, args.repeats)
            del small
        sd15 = sd15_subject(args.size)
        if not args.masks_only:
            result["overhead_sd15"] = overhead(sd15, 4, args.repeats)
        result["mask_load_apply_sd15"] = mask_load_apply(sd15, mask_path, args.repeats)
        del sd15
        result["masked_sampling_sd15"] = run_child("masked_sampling", str(mask_path), str(args.size), str(args.sampling_rounds),
                                                   env=os.environ | STEADY_ALLOCATOR)
    rows = mask_rows(result) if args.masks_only else saliency_rows(result) + mask_rows(result)
    path = common.write("perf_masks" if args.masks_only else "perf", result, rows, "FIA performance")
    print(path.read_text())


if __name__ == "__main__":
    main()
