"""GPU check: the mask under ComfyUI's default GPU loader (0.16+: ModelPatcherDynamic, "dynamic VRAM"),
masked sampling time, and saliency seconds per concept at the paper's protocol.

No CPU run reaches dynamic VRAM (ModelPatcherDynamic falls back to the plain ModelPatcher there), so
this script is for a CUDA machine. It
1. builds a full-width SD1.5-layout UNet (860M parameters, seeded random weights, fp16) and loads its
   state dict through `comfy.sd.load_diffusion_model_state_dict`, ComfyUI's loader for UNets
   (UNETLoader), which picks the patcher class ComfyUI uses on this GPU;
2. applies a mask (a seeded 1.4 % of every FF layer's weights, about SD1.5 masks' share) and reads,
   during a real sampling step, the weights F.linear receives in every FF layer: the pruned entries
   must be exact zeros and the others the checkpoint's values;
3. times sampling (512x512, 20 euler steps, cfg 7.5) plain vs masked, the two taking turns;
4. times saliency for 1 and 3 concepts at the paper's protocol (30 prompt pairs, 512x512, T = 10 of
   a 50-step schedule), so seconds per concept (the paper: 11.3 s per concept on an A6000) can be
   read both with the shared base prompts (1 concept) and without (the marginal concept);
5. times every stage of the method for 3 concepts: record, select, fuse, save, load + apply, with
   selection and fusion on the GPU (where the weights are; the statistics move there a layer at a
   time), and checks that selection and fusion on the CPU give the same masks bit for bit.
Prompts are encoded by a seeded stand-in encoder (no CLIP weights are needed; encoding is not timed).

    COMFYUI_PATH=/path/to/ComfyUI python bench/gpu_dynamic_vram.py [--out file.json] [--quick] [--tiny]

Writes out/bench/gpu_dynamic_vram.json and .md (and --out). Exits 1 if a pruned weight is not zero.
scripts/gpu-check.sh runs it on the device machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

common.setup()

import comfy.model_management  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.supported_models  # noqa: E402
import torch  # noqa: E402

import fia_engine as fia  # noqa: E402
from devkit import forward_weights, tiny  # noqa: E402
from devkit.comfy_env import comfyui_version  # noqa: E402

PRUNED_SHARE = 0.014
SAMPLING_STEPS = 20


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def full_sd15_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A full-width SD1.5 UNet's state dict in fp16, as a UNet-only checkpoint file holds it."""
    cfg = comfy.supported_models.SD15(dict(tiny.SD15_FULL_UNET))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, device=torch.device("cpu"))
    tiny.fill_seeded(model.diffusion_model, seed, scale=0.02)
    return {k: v.half() for k, v in model.diffusion_model.state_dict().items()}


def sampler(patcher, encode, steps: int, size: int):
    positive, negative = encode("a photo of a lighthouse"), encode("")
    latent = torch.zeros(1, 4, size // 8, size // 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(7))

    def run():
        out = comfy.sample.sample(patcher, noise, steps, 7.5, "euler", "normal", positive, negative, latent)
        synchronize()
        return out

    return run


def check_forward_weights(patcher, mask, originals, encode, size: int) -> dict:
    """One sampling step with the FF layers' F.linear weights recorded."""
    modules = fia.layers.modules_by_path(patcher.model.diffusion_model, mask.layers)
    by_key = {layer.key: modules[layer.module_path] for layer in mask.layers}
    with forward_weights.recording(by_key) as seen:
        sampler(patcher, encode, 1, size)()
    lowvram = [k for k, m in by_key.items() if getattr(m, "weight_lowvram_function", None) is not None]
    wrong_zeros, wrong_kept = {}, {}
    for key, indices in mask.pruned.items():
        used = seen[key].flatten().cpu()
        original = originals[key].to(used.dtype).flatten()  # as cast to the compute dtype
        pruned = torch.zeros_like(used, dtype=torch.bool)
        pruned[indices.long()] = True
        if (used[pruned] != 0).any():
            wrong_zeros[key] = int((used[pruned] != 0).sum())
        if not torch.equal(used[~pruned], original[~pruned]):
            wrong_kept[key] = int((used[~pruned] != original[~pruned]).sum())
    return {
        "layers_seen": len(seen), "layers": len(mask.pruned), "pruned_weights": mask.pruned_count,
        "layers_patched_per_cast": len(lowvram), "weight_dtype_in_forward": str(next(iter(seen.values())).dtype),
        "nonzero_pruned_by_layer": wrong_zeros, "changed_kept_by_layer": wrong_kept,
        "exact": not wrong_zeros and not wrong_kept and len(seen) == len(mask.pruned),
    }


def saliency_seconds(patcher, encode, concepts: list[str], batch: int, recorded: int, size: int, pairs: int) -> dict:
    settings = fia.SamplingSettings(steps=50, recorded_steps=recorded, width=size, height=size,
                                    prompts_per_batch=batch)
    synchronize()
    start = time.perf_counter()
    record = fia.compute_saliency(patcher, encode, concepts, fia.resolve_preset("objects"), num_pairs=pairs,
                                  settings=settings)
    synchronize()
    return {"seconds": time.perf_counter() - start, "unet_calls": record.unet_calls}


def method_stages(patcher, encode, recorded: int, size: int, pairs: int, tmp: Path) -> dict:
    """Record, select, fuse, save, load + apply for three concepts, each stage timed (selection and
    fusion on the model's device), and the same selection and fusion on the CPU compared bit for bit."""
    settings = fia.SamplingSettings(steps=50, recorded_steps=recorded, width=size, height=size, prompts_per_batch=30)
    times, stamp = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal stamp
        synchronize()
        now = time.perf_counter()
        times[name], stamp = now - stamp, now

    record = fia.compute_saliency(patcher, encode, ["cat", "dog", "bird"], fia.resolve_preset("objects"),
                                  num_pairs=pairs, settings=settings)
    lap("record")
    masks = fia.select_sensitive_neurons(record)  # on record.device: where the weights were
    lap("select")
    mask = fia.fuse_masks([masks], device=record.device)
    lap("fuse")
    path = tmp / "three.safetensors"
    fia.save_mask(mask, path)
    lap("save")
    masked = fia.apply_mask(patcher, fia.load_mask(path))
    comfy.model_management.load_models_gpu([masked])  # the patches are computed when the model loads
    lap("load_apply")
    cpu_masks = fia.select_sensitive_neurons(record, device="cpu")
    cpu_mask = fia.fuse_masks([cpu_masks], device="cpu")
    lap("select_fuse_on_cpu")
    same = all(torch.equal(masks.selected[c][k], cpu_masks.selected[c][k]) for c in masks.concepts
               for k in masks.selected[c]) and all(torch.equal(mask.pruned[k], cpu_mask.pruned[k]) for k in mask.pruned)
    return {"device": record.device, "seconds": times, "pruned": mask.pruned_count, "same_masks_as_cpu": same,
            "unet_calls": record.unet_calls, "pairs": pairs, "recorded_steps": recorded}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--rounds", type=int, default=4, help="timed sampling rounds (plus one warm-up)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 2 steps, 4 pairs, T = 2: checks the script")
    parser.add_argument("--size", type=int, default=512, help="image size (paper: 512)")
    parser.add_argument("--tiny", action="store_true",
                        help="SD1.5 layout at width 32 (the reference fixture's) instead of 320: a CPU smoke test")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run without CUDA: checks the script itself (a CPU never reaches dynamic VRAM)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("no CUDA device: this check is for a GPU machine (--allow-cpu runs it anyway, as a smoke test)")
        return 2
    rounds, recorded, pairs = (2, 2, 4) if args.quick else (args.rounds, 10, 30)
    encode = tiny.hashed_encoder(768)
    result = {"machine": common.machine(), "comfyui": comfyui_version(), "size": args.size, "quick": args.quick}

    start = time.perf_counter()
    if args.tiny:  # ComfyUI's loader detects SD1.5 by its width: the smoke test builds the patcher itself
        import official

        patcher = official.fixture_layout_patcher()
    else:
        state_dict = full_sd15_state_dict()
        patcher = comfy.sd.load_diffusion_model_state_dict(state_dict)
        del state_dict
    result["loader"] = {"patcher_class": type(patcher).__name__, "dynamic": bool(getattr(patcher, "is_dynamic",
                        lambda: False)()), "seconds_build_and_load": time.perf_counter() - start,
                        "dtype": str(patcher.model.get_dtype())}
    print(json.dumps(result["loader"]))

    mask = tiny.seeded_mask(fia, patcher, PRUNED_SHARE)
    originals = {k: w.detach().to("cpu", copy=True) for k, w in fia.layers.original_weights(patcher, mask.layers).items()}
    masked = fia.apply_mask(patcher, mask)
    result["forward_weights"] = check_forward_weights(masked, mask, originals, encode, args.size)
    result["forward_weights_plain_model"] = {  # the input model is untouched on the same GPU path
        "exact_originals": all(torch.equal(w.detach().cpu(), originals[k]) for k, w in
                               fia.layers.original_weights(patcher, mask.layers).items())}
    print(json.dumps(result["forward_weights"]))

    steps = 2 if args.quick else SAMPLING_STEPS
    runs = {"plain": sampler(patcher, encode, steps, args.size), "masked": sampler(masked, encode, steps, args.size)}
    switches = common.interleaved_rounds(runs, rounds)  # each run follows the other model: includes re-patching
    steady = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            run()  # loads and patches this model
            begin = time.perf_counter()
            run()
            steady[name].append(time.perf_counter() - begin)
    result["sampling"] = {
        "steps": steps, "rounds": rounds,
        "alternating_seconds": {n: statistics.median(r[n] for r in switches) for n in runs},
        "alternating_ratio_masked_over_plain": common.paired_ratio(switches, "masked", "plain"),
        "steady_seconds": {n: statistics.median(t) for n, t in steady.items()},
        "steady_ratio_masked_over_plain": statistics.median(m / p for m, p in zip(steady["masked"], steady["plain"])),
    }
    print(json.dumps(result["sampling"]))

    saliency = {}
    for batch in (4, 30):
        one = saliency_seconds(patcher, encode, ["cat"], batch, recorded, args.size, pairs)  # warm-up
        one = saliency_seconds(patcher, encode, ["cat"], batch, recorded, args.size, pairs)
        three = saliency_seconds(patcher, encode, ["cat", "dog", "bird"], batch, recorded, args.size, pairs)
        saliency[f"prompts_per_batch_{batch}"] = {
            "one_concept": one, "three_concepts": three,
            "seconds_per_concept_with_base": one["seconds"],
            "seconds_per_added_concept": (three["seconds"] - one["seconds"]) / 2,
        }
        print(json.dumps(saliency[f"prompts_per_batch_{batch}"]))
    result["saliency"] = {"pairs": pairs, "recorded_steps": recorded, "schedule_steps": 50, "paper_seconds_per_concept":
                          11.3, "paper_gpu": "A6000", **saliency}
    with tempfile.TemporaryDirectory() as tmp:
        result["stages"] = method_stages(patcher, encode, recorded, args.size, pairs, Path(tmp))
    print(json.dumps(result["stages"]))
    result["peak_vram_bytes"] = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None

    fw, sm, st = result["forward_weights"], result["sampling"], result["stages"]
    rows = [
        ("loader patcher", result["loader"]["patcher_class"], "ModelPatcherDynamic (0.16+)"),
        ("pruned weights zero / kept weights unchanged in the forward",
         f"{fw['exact']} ({fw['layers_seen']} of {fw['layers']} layers, {fw['pruned_weights']} pruned)", "True"),
        ("masked / plain sampling, steady", f"{sm['steady_ratio_masked_over_plain']:.3f}", "about 1"),
        ("masked / plain sampling, alternating models", f"{sm['alternating_ratio_masked_over_plain']['median']:.3f}", ""),
        *[(f"saliency s per concept (batch {b.split('_')[-1]}): 1 concept with base / each added",
           f"{v['seconds_per_concept_with_base']:.2f} / {v['seconds_per_added_concept']:.2f}", "paper 11.3 (A6000)")
          for b, v in saliency.items()],
        (f"3 concepts on {st['device']}: record / select / fuse / save / load + apply, s",
         " / ".join(f"{st['seconds'][k]:.2f}" for k in ("record", "select", "fuse", "save", "load_apply")), ""),
        ("selection and fusion: same masks on the CPU", str(st["same_masks_as_cpu"]), "True"),
    ]
    path = common.write("gpu_dynamic_vram", result, rows, "FIA on a GPU: dynamic VRAM, masked sampling, saliency")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path.with_suffix(".json"), args.out)
        shutil.copy(path, args.out.with_suffix(".md"))
    print(path.read_text())
    ok = fw["exact"] and result["forward_weights_plain_model"]["exact_originals"] and st["same_masks_as_cpu"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
