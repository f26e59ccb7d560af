"""The performance tables: out/bench/*.md, and docs/evaluation.md's from the committed reports.

`python bench/report_tables.py` rewrites the blocks between `<!-- table:perf-... -->` markers of
docs/evaluation.md from bench/reports/perf.json and official.json (written by `bench/perf.py
--report` and `bench/official.py --report`), so the docs state only what a report holds (a test
checks they agree). Plain Python: rendering needs neither torch nor ComfyUI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "bench" / "reports"
Row = tuple[str, str, str]


def cell(q: dict, digits: int = 2) -> str:
    """A median with its quartiles over rounds."""
    return f"{q['median']:.{digits}f} ({q['quartiles'][0]:.{digits}f}-{q['quartiles'][1]:.{digits}f})"


def saliency_rows(result: dict) -> list[Row]:
    if "overhead_small" not in result:  # --selection-only
        return []
    small, big, shared = result["overhead_small"], result["overhead_sd15"], result["shared_base"]
    rows = [
        *[(f"saliency_overhead_ratio, {o['model']} (quartiles over rounds)",
           f"{o['saliency_overhead_ratio']:.3f} ({o['ratio_quartiles'][0]:.3f}-{o['ratio_quartiles'][1]:.3f})", "<= 1.10")
          for o in (small, big)],
        (f"UNet calls per concept ({big['model']}: {big['prompt_pairs']} pairs, cond+uncond batched, "
         f"T={big['settings']['recorded_steps']})",
         f"{big['unet_calls_per_concept']} (full schedule: {big['full_schedule_unet_calls'] // 2})", "batches x T"),
        ("shared_base_speedup (5 concepts / 5 x 1 concept; quartiles)",
         f"{shared['shared_base_speedup']:.3f} ({shared['ratio_quartiles'][0]:.3f}-{shared['ratio_quartiles'][1]:.3f})", "<= 0.65"),
        (f"saliency_state_bytes per concept, {big['model']}, reference form", f"{big['saliency_state_bytes_per_concept']:,}",
         "<= 1 MB"),
    ]
    return rows + [(f"saliency seconds, {small['model']}, {b} prompts per batch", f"{s:.2f}", "")
                   for b, s in result["batch_scaling_small"].items()]


def mask_rows(result: dict) -> list[Row]:
    ten = result["stages"][max(result["stages"], key=int) if "10" not in result["stages"] else "10"]
    ms = result.get("masked_sampling_sd15")
    memory = ten["memory"]
    sampling = [] if ms is None else [
        (f"{label}, SD1.5 {ms['size']}x{ms['size']}, CPU seconds, {how}",
         f"{r['cpu'][mode]['median']:.3f} ({r['cpu'][mode]['quartiles'][0]:.3f}-{r['cpu'][mode]['quartiles'][1]:.3f})",
         target if mode == "patch" else "")
        for how, r in ((f"per sampler step, median of {ms['sampler_step']['rounds']} rounds (quartiles)",
                        ms["sampler_step"]),
                       (f"per UNet call, median of {ms['unet_call']['cycles']} paired calls (quartiles)",
                        ms["unet_call"]))
        for label, mode, target in (("masked_sampling_ratio, patch mode", "patch", "<= 1.02"),
                                    ("wrapper mode time ratio", "wrapper", ""))]
    return [
        (f"peak RSS of select+fuse above resident, {ten['concepts']} concepts / largest layer (fp32)",
         f"{memory['peak_over_largest_layer']:.2f} (outputs excluded: {memory['working_over_largest_layer']:.2f})",
         "<= 1 without outputs"),
        *sampling,
        (f"mask_file_bytes, {ten['concepts']}-concept mask", f"{ten['mask_file_bytes']:,} ({ten['pruned_weights']:,} pruned)",
         "<= 2 MB"),
        *([("mask load + apply seconds", f"{result['mask_load_apply_sd15']['load_plus_apply_seconds']:.2f}", "")]
          if "mask_load_apply_sd15" in result else []),
    ]


def perf_rows(result: dict) -> list[Row]:
    return [*stage_rows(result), *e2e_rows(result), *saliency_rows(result), *mask_rows(result)]


def stage_rows(result: dict) -> list[Row]:
    rows = []
    for n, block in result["stages"].items():
        sec = block["seconds"]
        rows.append((f"{n} concepts, {block['layers']} layers ({block['weights']:,} weights), T = 10: "
                     "select (of it: column sort) / fuse / save / load, s",
                     f"{cell(sec['select'])} ({cell(sec['sort'])}) / {cell(sec['fuse'], 3)} / {cell(sec['save'], 3)} / "
                     f"{cell(sec['load'], 3)}", ""))
        rows.append((f"{n} concepts: select + fuse per concept, first selection from the model (sorts), s",
                     cell(block["select_fuse_per_concept"]), "<= 1"))
        rows.append((f"{n} concepts: select + fuse per concept, selecting again (sorted columns kept), s",
                     cell(block["select_fuse_per_concept_warm"]), "<= 1"))
    return rows


def e2e_rows(result: dict) -> list[Row]:
    return [(f"prompt list -> saved mask, {n} concepts x {e['pairs']} pairs, T = {e['recorded_steps']}, "
             f"{e['unet_calls']} UNet calls: total (saliency / select / fuse / save), s",
             f"{cell(e['total'])} ({cell(e['saliency'])} / {cell(e['select'])} / {cell(e['fuse'], 3)} / "
             f"{cell(e['save'], 3)})", "") for n, e in result.get("end_to_end", {}).items()]


def table(rows: list[Row], head: tuple[str, str, str] = ("metric", "value (quartiles over rounds)", "target")) -> str:
    return "\n".join([f"| {' | '.join(head)} |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in rows]])


def stage_table(result: dict) -> str:
    lines = ["| concepts | select (s) | of it: column sort (s) | select again (s) | fuse (s) | save (s) | load (s) "
             "| select + fuse per concept: first / again (s) | peak above resident / largest layer "
             "(outputs and kept sorted columns excluded) |", "|---|---|---|---|---|---|---|---|---|"]
    for n, block in result["stages"].items():
        sec, memory = block["seconds"], block["memory"]
        lines.append(f"| {n} | {cell(sec['select'])} | {cell(sec['sort'])} | {cell(sec['select_warm'])} | "
                     f"{cell(sec['fuse'], 3)} | {cell(sec['save'], 3)} | {cell(sec['load'], 3)} | "
                     f"{cell(block['select_fuse_per_concept'])} / {cell(block['select_fuse_per_concept_warm'])} | "
                     f"{memory['peak_over_largest_layer']:.2f} ({memory['working_over_largest_layer']:.2f}) |")
    return "\n".join(lines)


def e2e_table(result: dict) -> str:
    lines = ["| concepts | UNet calls | prompt list -> saved mask (s) | saliency (s) | select (s) | fuse (s) | save (s) "
             "| per concept (s) |", "|---|---|---|---|---|---|---|---|"]
    if "end_to_end" not in result:
        return "\n".join([*lines, "| not in this report | | | | | | | |"])
    for n, e in result["end_to_end"].items():
        lines.append(f"| {n} | {e['unet_calls']:,} | {cell(e['total'])} | {cell(e['saliency'])} | {cell(e['select'])} | "
                     f"{cell(e['fuse'], 3)} | {cell(e['save'], 3)} | {cell(e['per_concept'])} |")
    return "\n".join(lines)


def official_table(result: dict) -> str:
    official = result["official"]
    lines = ["| run | UNet calls | end to end (s) | saliency (s) | select (s) | fuse (s) | bare forwards (s) "
             "| saliency / bare | vs official |", "|---|---|---|---|---|---|---|---|---|",
             f"| official `run_fia` (measured {official['measured']}) | {official['unet_calls']:,} at batch "
             f"{official['batch']} | {official['seconds'][0]:.0f}-{official['seconds'][1]:.0f} | | | | | | 1x |"]
    mean = sum(official["seconds"]) / len(official["seconds"])
    for name, row in result["settings"].items():
        lines.append(f"| pack, {name} | {row['unet_calls']:,} | {cell(row['total'])} | {cell(row['saliency'])} | "
                     f"{cell(row['select'])} | {cell(row['fuse'], 3)} | {cell(row['bare_forwards'])} | "
                     f"{cell(row['saliency_over_bare'], 3)} | {mean / row['total']['median']:.1f}x |")
    return "\n".join(lines)


def tables() -> dict[str, str]:
    """Every performance block of docs/evaluation.md, from the committed reports (those present)."""
    out = {}
    if (REPORTS / "perf.json").exists():
        perf = json.loads((REPORTS / "perf.json").read_text())
        out |= {"perf-stages": stage_table(perf), "perf-e2e": e2e_table(perf),
                "perf-metrics": table([*saliency_rows(perf), *mask_rows(perf)])}
    if (REPORTS / "official.json").exists():
        out["perf-official"] = official_table(json.loads((REPORTS / "official.json").read_text()))
    return out


def main() -> None:
    sys.path.insert(0, str(REPO))
    from devkit import doc_tables

    doc_tables.DOC.write_text(doc_tables.render(doc_tables.DOC.read_text(), tables()))
    print(f"rewrote the performance tables of {doc_tables.DOC}")


if __name__ == "__main__":
    main()
