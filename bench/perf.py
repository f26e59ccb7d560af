"""`make bench-perf`: what saliency, selection, masks and masked sampling cost, measured side by side.

Models: (a) ToyWorld when its weights are present, else a seeded tiny SD1.5-layout model;
(b) a full-width SD1.5 UNet (random seeded weights, real layer sizes) at a small resolution;
(c) the reference fixture's width-32 SD1.5 layout (seeded) for the end-to-end runs.
Writes out/bench/perf.json and out/bench/perf.md (--report: also the committed copy that
docs/evaluation.md's performance tables are rendered from, bench/reports/perf.json). Medians of
--repeats rounds with quartiles. `--quick` runs every part on tiny models in about a minute: the
test suite runs it (tests/test_bench.py), so the bench cannot rot unnoticed.
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
import report_tables

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

OBJECTS = ["cassette player", "chainsaw", "english springer", "french horn", "garbage truck", "gas pump", "tench",
           "lighthouse", "teapot", "violin", "bicycle", "umbrella", "pizza", "backpack", "canoe", "tractor", "castle",
           "banana", "giraffe", "clock", "guitar", "sailboat", "windmill", "kettle", "zebra", "anchor", "bridge"]
"""With official.CONCEPTS, 30 objects for the end-to-end runs."""
TOYWORLD_WEIGHTS = common.REPO / "toyworld" / "weights" / "toyworld_v3.safetensors"  # the shapes model
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


def small_subject(quick: bool = False) -> Subject:
    if TOYWORLD_WEIGHTS.exists() and not quick:
        from toyworld.common.loader import load_toyworld
        from toyworld.experiments import forgetting

        world = load_toyworld(TOYWORLD_WEIGHTS)
        return Subject("ToyWorld", world.patcher, world.encode, lambda c, n: forgetting.concept_pairs(c, n),
                       forgetting.RECORDING)
    clip = tiny.tiny_clip()
    settings = (fia.SamplingSettings(steps=50, recorded_steps=2, width=32, height=32, prompts_per_batch=2) if quick
                else fia.SamplingSettings(steps=50, recorded_steps=10, width=64, height=64, prompts_per_batch=8))
    return Subject("tiny SD1.5 layout", tiny.tiny_sd15_patcher(), tiny.clip_encoder(clip), objects_pairs, settings)


def objects_pairs(concept: str, count: int) -> list[fia.PromptPair]:
    return fia.build_prompt_pairs(concept, fia.PRESETS["objects"], count, fia.paper.GENERAL.seed)


def sd15_subject(size: int, quick: bool = False) -> Subject:
    """The full-width SD1.5 UNet (quick: the tiny SD1.5 layout, same code paths)."""
    import comfy.model_patcher
    import comfy.supported_models

    unet = tiny.TINY_SD15_UNET if quick else tiny.SD15_FULL_UNET
    cfg = comfy.supported_models.SD15(dict(unet))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, device=torch.device("cpu"))
    tiny.fill_seeded(model.diffusion_model, 0, scale=0.02)
    patcher = comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))
    name = f"tiny SD1.5 layout, {size}x{size}" if quick else f"SD1.5 UNet, full width, {size}x{size}"
    return Subject(name, patcher, tiny.hashed_encoder(unet["context_dim"]), objects_pairs,
                   fia.SamplingSettings(steps=50, recorded_steps=2 if quick else 10, width=size, height=size,
                                        prompts_per_batch=4))


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


def batch_scaling(subject: Subject, pairs: int, repeats: int, batches: tuple[int, ...] = (1, 4, 8)) -> dict:
    concepts = ["red"] if subject.name == "ToyWorld" else ["golf ball"]
    rounds = common.interleaved_rounds(
        {str(b): lambda b=b: subject.saliency(concepts, pairs, prompts_per_batch=b) for b in batches}, repeats)
    return {str(b): statistics.median(r[str(b)] for r in rounds) for b in batches}


def mask_modes(size: int, mask: fia.UnlearningMask, quick: bool = False) -> dict:
    """Plain, patch-mode and wrapper-mode models, each on its own seeded copy of the SD1.5 UNet.

    Separate copies are each patched once, as for a user who samples the masked model over and
    over; clones of one model would swap their patches on the shared module at every turn,
    timing fresh allocations instead of the mask.
    """
    return {"plain": sd15_subject(size, quick).patcher, "patch": fia.apply_mask(sd15_subject(size, quick).patcher, mask),
            "wrapper": fia.apply_mask(sd15_subject(size, quick).patcher, mask, mode="wrapper")}


def sampler_step_ratios(models: dict, size: int, rounds: int, steps: int = 4, width: int = 768) -> dict:
    """Process CPU seconds per sampler step (comfy.sample.sample, timed between its callbacks, the
    first step dropped), the models taking turns sample by sample."""
    channels, height, latent_width = latent_geometry(models["plain"], size, size)
    encode = tiny.hashed_encoder(width)
    positive, negative = encode("a photo of a cat"), encode("")
    latent = torch.zeros(2, channels, height, latent_width)
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


def unet_call_ratios(models: dict, size: int, cycles: int, width: int = 768) -> dict:
    """Process CPU seconds of one UNet call (a cond + uncond batch of 2 prompts, as a CFG step
    makes), the models taking turns call by call: the finest pairing, so the least noise."""
    channels, height, latent_width = latent_geometry(models["plain"], size, size)
    encode = tiny.hashed_encoder(width)
    context = torch.cat([encode("a photo of a cat")[0][0], encode("")[0][0]] * 2)
    x = torch.randn(4, channels, height, latent_width, generator=torch.Generator().manual_seed(0))
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


def masked_sampling_child(out_json: str, mask_path: str, size: str, rounds: str, quick: str = "") -> None:
    """Masked sampling in a fresh process with a fixed glibc mmap threshold (STEADY_ALLOCATOR),
    under `torch.inference_mode()` as ComfyUI runs every node."""
    # The random weights (scale 0.02) push activations into float32's subnormal range, where x86
    # arithmetic is many times slower, and pruning changes how many land there: without flushing
    # them the patched model's Linear layers ran 19% slower (torch profiler), with it 0%. Real
    # checkpoints do not live there; the flag takes the fake model's quirk out of the mask's cost.
    torch.set_flush_denormal(True)
    with torch.inference_mode():
        models = mask_modes(int(size), fia.load_mask(mask_path), bool(quick))
        width = tiny.TINY_SD15_UNET["context_dim"] if quick else 768
        result = {"size": int(size), "flush_denormal": True,
                  "sampler_step": sampler_step_ratios(models, int(size), int(rounds), width=width),
                  "unet_call": unet_call_ratios(models, int(size), 2 * int(rounds), width=width)}
    Path(out_json).write_text(json.dumps(result))


def run_child(name: str, *args: str, env: dict | None = None) -> dict:
    """Runs `name`_child(out_json, *args) in a fresh interpreter and returns its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "result.json"
        subprocess.run([sys.executable, __file__, "--child", name, str(out_json), *args], check=True, env=env)
        return json.loads(out_json.read_text())


def synthetic_record(layers: list[fia.PrunableLayer], concepts: int, steps: int, seed: int = 0) -> SaliencyRecord:
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
    # a real fingerprint of these weights: mask files accept hex only (the bench once wrote
    # 'synthetic' and `make bench-perf` stopped at loading its own mask)
    return SaliencyRecord("SD1.x", layers, "reference", "objects", names, concept_moments, {"b": base},
                          {n: "b" for n in names}, abs_weights, {},
                          RecordingProvenance(fia.SamplingSettings(recorded_steps=steps), "reference", "objects", 30, 0, 0),
                          fia.architectures.fingerprint(abs_weights))


def model_layers(quick: bool) -> list[fia.PrunableLayer]:
    """The 16 `ff.net.2` layers of SD1.5 (quick: of the tiny SD1.5 layout), from a meta-device model."""
    import comfy.supported_models

    unet = tiny.TINY_SD15_UNET if quick else tiny.SD15_FULL_UNET
    model = comfy.supported_models.SD15(dict(unet)).get_model({}, device=torch.device("meta"))
    return fia.discover_layers(model.diffusion_model, fia.architecture_of(model.model_config))


def quartiles(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return {"median": statistics.median(values), "quartiles": [q[0], q[2]], "rounds": len(values)}


def stages_child(out_json: str, mask_dir: str, counts: str, repeats: str, quick: str = "") -> None:
    """Select, fuse, save and load for N concepts (each of `counts`) on synthetic statistics with
    SD1.5's shapes, in a fresh process, the peak RSS reset before each N's first round."""
    layers = model_layers(bool(quick))
    result = {n: stages_of(layers, int(n), int(repeats), Path(mask_dir) / f"mask{n}.safetensors", i == 0)
              for i, n in enumerate(counts.split(","))}
    for block in result.values():  # the sort does not depend on the concepts: timed with the first count
        block["seconds"]["sort"] = next(iter(result.values()))["seconds"]["sort"]
    Path(out_json).write_text(json.dumps(result))


def stages_of(layers: list[fia.PrunableLayer], concepts: int, repeats: int, mask_path: Path, time_sort: bool) -> dict:
    record = synthetic_record(layers, concepts=concepts, steps=10)
    settings = fia.MethodSettings()  # the paper's objects values
    gc.collect()
    times: dict[str, list[float]] = {"sort": [], "select": [], "select_warm": [], "fuse": [], "save": [], "load": []}
    memory = {}
    for round_number in range(repeats):
        fia.factorised.clear_sorted_columns()  # cold: the first selection from a model pays the sort
        if round_number == 0:
            resident = process_memory_bytes("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak, to the current RSS
        start = time.perf_counter()
        result = fia.masks_from(record, settings)
        both = time.perf_counter() - start
        masks, mask = result.concept_masks, result.mask
        if round_number == 0:
            peak = process_memory_bytes("VmHWM")
            outputs = sum(t.numel() * t.element_size() for c in masks.concepts for t in masks.selected[c].values())
            outputs += sum(t.numel() * t.element_size() for t in (*mask.pruned.values(), *mask.kept_agnostic.values()))
            kept = fia.factorised.sorted_columns_bytes()
            largest = max(layer.out_features * layer.in_features for layer in layers) * 4
            memory = {"peak_rss_above_resident_bytes": peak - resident, "output_bytes": outputs,
                      "sorted_columns_kept_bytes": kept, "largest_layer_fp32_bytes": largest,
                      "peak_over_largest_layer": (peak - resident) / largest,
                      "working_over_largest_layer": (peak - resident - outputs - kept) / largest}
        warm_start = time.perf_counter()  # again from the same model: the sorted columns are kept
        fia.masks_from(record, settings)
        warm = time.perf_counter() - warm_start
        fuse_start = time.perf_counter()  # masks_from selects and fuses: fusion timed again on its own
        fia.fuse_masks([masks])
        times["fuse"].append(time.perf_counter() - fuse_start)
        times["select"].append(both - times["fuse"][-1])
        times["select_warm"].append(warm - times["fuse"][-1])
        save_start = time.perf_counter()
        fia.save_mask(mask, mask_path)
        times["save"].append(time.perf_counter() - save_start)
        load_start = time.perf_counter()
        loaded = fia.load_mask(mask_path)
        times["load"].append(time.perf_counter() - load_start)
        assert loaded.pruned_count == mask.pruned_count
        if time_sort:
            sort_start = time.perf_counter()
            for layer in layers:  # the part of selection that belongs to the model: once per run, for all concepts
                fia.factorised.SortedColumns(record.abs_weights[layer.key])
            times["sort"].append(time.perf_counter() - sort_start)
    n = concepts
    return {
        "concepts": n, "recorded_steps": 10, "r1": fia.paper.TASKS["objects"].r1, "r2": fia.paper.TASKS["objects"].r2,
        "alpha": fia.paper.TASKS["objects"].alpha, "layers": len(layers),
        "weights": sum(layer.out_features * layer.in_features for layer in layers),
        "seconds": {name: quartiles(values) for name, values in times.items() if values},
        "select_fuse_per_concept": quartiles([(a + b) / n for a, b in zip(times["select"], times["fuse"], strict=True)]),
        "select_fuse_per_concept_warm": quartiles([(a + b) / n for a, b in zip(times["select_warm"], times["fuse"],
                                                                                strict=True)]),
        "memory": memory, "pruned_weights": mask.pruned_count,
        "kept_agnostic_weights": sum(int(k.numel()) for k in mask.kept_agnostic.values()),
        "sparsity": mask.sparsity, "mask_file_bytes": Path(mask_path).stat().st_size,
        "per_concept_selected": {c: masks.count(c) for c in masks.concepts},
    }


def stages(tmp: Path, counts: tuple[int, ...], repeats: int, quick: bool) -> dict:
    # glibc's adaptive mmap threshold keeps freed layer-sized buffers in the heap, so RSS would
    # show allocator retention rather than live memory. A fixed 4 MiB threshold returns them to
    # the OS while block-sized temporaries stay in the heap (a lower one mmaps every block: the
    # page faults then cost more than the selection)
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": str(4 << 20)}
    return run_child("stages", str(tmp), ",".join(map(str, counts)), str(repeats), "1" if quick else "", env=env)


def end_to_end(concepts: int, pairs: int, recorded: int, batch: int, repeats: int, tmp: Path, quick: bool) -> dict:
    """A prompt list -> a saved mask (saliency, selection, fusion, save) on the reference fixture's
    width-32 SD1.5 layout at 64x64 (quick: the tiny layout), the paper's objects values."""
    import official

    patcher = tiny.tiny_sd15_patcher() if quick else official.fixture_layout_patcher()
    encode = tiny.hashed_encoder(tiny.TINY_SD15_UNET["context_dim"] if quick else 768)
    names = [*official.CONCEPTS, *OBJECTS][:concepts]
    runs = [official.end_to_end(patcher, encode, names, pairs, batch, recorded, tmp / "e2e.safetensors")
            for _ in range(repeats)]
    return {"concepts": concepts, "pairs": pairs, "recorded_steps": recorded, "prompts_per_batch": batch,
            "unet_calls": runs[0]["unet_calls"], "pruned": runs[0]["pruned"],
            **{stage: quartiles([r[stage] for r in runs]) for stage in ("saliency", "select", "fuse", "save", "total")},
            "per_concept": quartiles([r["total"] / concepts for r in runs])}


def mask_load_apply(subject: Subject, mask_path: Path, repeats: int) -> dict:
    def load_apply():
        fia.apply_mask(subject.patcher, fia.load_mask(mask_path))

    return {"load_plus_apply_seconds": common.median_seconds(load_apply, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sampling-rounds", type=int, default=16,
                        help="rounds of plain / patch / wrapper sampling (4 steps each) for masked_sampling_ratio")
    parser.add_argument("--size", type=int, default=64, help="image size for the full-width SD1.5 UNet")
    parser.add_argument("--masks-only", action="store_true",
                        help="selection, mask file and masked sampling only (writes perf_masks.json/.md)")
    parser.add_argument("--quick", action="store_true",
                        help="every part on tiny models, one round (about a minute): checks the bench itself")
    parser.add_argument("--report", type=Path, help="also write the JSON here (bench/reports/perf.json)")
    parser.add_argument("--e2e-pairs", type=int, default=30, help="prompt pairs per concept in the end-to-end runs")
    parser.add_argument("--e2e-batch", type=int, default=31, help="prompts per batch in the end-to-end runs")
    parser.add_argument("--selection-only", action="store_true",
                        help="the stages and end-to-end runs, the mask's load + apply; no recording-overhead or "
                             "masked-sampling rounds (a shared machine's hour)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        {"stages": stages_child, "masked_sampling": masked_sampling_child}[args.child[0]](*args.child[1:])
        return
    quick = args.quick
    if quick:
        args.repeats, args.sampling_rounds, args.size = 1, 1, 32
    counts, pairs, recorded = ((1, 2), 2, 2) if quick else ((1, 10, 30), args.e2e_pairs, 10)
    small_pairs = 2 if quick else 16
    result = {"machine": common.machine(), "repeats": args.repeats, "quick": quick, "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        result["stages"] = stages(Path(tmp), counts, args.repeats, quick)
        mask_path = Path(tmp) / f"mask{counts[1]}.safetensors"  # the 10-concept mask (quick: 2)
        if not args.masks_only:
            result["end_to_end"] = {str(n): end_to_end(n, pairs, recorded, 4 if quick else args.e2e_batch, args.repeats,
                                                       Path(tmp), quick) for n in counts}
        if not args.masks_only and not args.selection_only:
            small = small_subject(quick)
            # a ToyWorld round takes seconds, so its hook overhead (about 5%) needs more rounds
            # than --repeats to stand clear of this machine's +-10% scatter between rounds
            result["overhead_small"] = overhead(small, small_pairs, args.repeats if quick else 3 * args.repeats)
            result["shared_base"] = shared_base(small, max(2, small_pairs // 2), args.repeats)
            result["batch_scaling_small"] = batch_scaling(small, max(2, small_pairs // 2), args.repeats,
                                                          (1, 2) if quick else (1, 4, 8))
            del small
        sd15 = sd15_subject(args.size, quick)
        if not args.masks_only and not args.selection_only:
            result["overhead_sd15"] = overhead(sd15, 2 if quick else 4, args.repeats)
        result["mask_load_apply_sd15"] = mask_load_apply(sd15, mask_path, args.repeats)
        del sd15
        if not args.selection_only:
            result["masked_sampling_sd15"] = run_child("masked_sampling", str(mask_path), str(args.size),
                                                       str(args.sampling_rounds), "1" if quick else "",
                                                       env=os.environ | STEADY_ALLOCATOR)
    rows = report_tables.mask_rows(result) if args.masks_only else report_tables.perf_rows(result)
    path = common.write("perf_masks" if args.masks_only else "perf", result, rows, "FIA performance")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(path.with_suffix(".json").read_text())
    print(path.read_text())


if __name__ == "__main__":
    main()
