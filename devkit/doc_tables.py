"""The evaluation tables in docs/evaluation.md, rendered from the committed reports.

`python -m devkit.doc_tables` rewrites every block between `<!-- table:NAME -->` and
`<!-- /table:NAME -->` from `toyworld/experiments/reports/*.json`, so a re-measured report updates the docs
and the docs never state a figure the reports do not hold (a test checks they agree).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "toyworld" / "experiments" / "reports"
EMOJI_REPORTS = REPO / "toyworld" / "emoji" / "reports"
DOC = REPO / "docs" / "evaluation.md"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _per_concept(rates: dict[str, float]) -> str:
    return " / ".join(f"{100 * v:.0f}" for v in rates.values())


def efficacy_table(report: dict, size: str) -> str:
    """One row per configuration of a concept set: forget, synonym forget, preserve, overall, cost."""
    block = report[size]
    base = block["base"]
    concepts = " / ".join(block["concepts"])
    lines = [
        f"| {size} concepts | forget rate ({concepts}) | synonym forget | preserve accuracy (of base) | overall "
        "| pixel change | pruned |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in block.items():
        if not isinstance(row, dict) or "forget_rate" not in row:
            continue
        preserve = row["preserve_accuracy"]
        of_base = preserve / max(base["preserve_accuracy"], 1e-9)
        pruned = f"{100 * row['sparsity']:.2f}%" if "sparsity" in row else ""
        lines.append(
            f"| {name} | {_percent(row['forget_rate'])} ({_per_concept(row['forget_rate_per_concept'])}) "
            f"| {_percent(row['synonym_forget_rate'])} | {_percent(preserve)} ({_percent(of_base)}) "
            f"| {_percent(row['overall'])} | {row['preserve_pixel_change']:.3f} | {pruned} |"
        )
    return "\n".join(lines)


def base_quality_table(report: dict) -> str:
    """The base model's attribute accuracy per sampler setting, as the evaluator reads it."""
    lines = ["| sampling | wording | images | colour | shape | background | all three |", "|---|---|---|---|---|---|---|"]
    for run in [report["base_quality"], report["synonym_prompts"], *report["sweep"]]:
        settings, match = run["settings"], run["match"]
        lines.append(
            f"| {settings['sampler']} {settings['steps']} cfg {settings['cfg']} | {settings['wording']} "
            f"| {settings['images']} | " + " | ".join(_percent(match[k]) for k in ("colour", "shape", "background", "all"))
            + " |"
        )
    return "\n".join(lines)


def base_values_table(report: dict) -> str:
    """The base model's accuracy per single value, absent values included, with the images behind each."""
    run = report["base_quality"]
    lines = ["| attribute | value: accuracy (images) |", "|---|---|"]
    for attribute, values in run["attribute_accuracy_per_value"].items():
        counts = run["images_per_value"][attribute]
        lines.append(f"| {attribute} | " + ", ".join(
            f"{value} {_percent(rate)} ({counts[value]})" for value, rate in values.items()) + " |")
    return "\n".join(lines)


def layer_ablation_table(report: dict) -> str:
    """One row per layer kind: forget rate per concept, preserve accuracy, overall, pruned share."""
    concepts = " / ".join(report["concepts"])
    rows = report["rows"]
    base = rows["base"]["preserve_accuracy"]
    lines = [f"| layers | forget rate ({concepts}) | preserve accuracy (of base) | overall | pruned (of that kind) |",
             "|---|---|---|---|---|"]
    for name, row in rows.items():
        pruned = f"{100 * row['pruned_share']:.2f}% of {row['weights']:,}" if "pruned_share" in row else ""
        lines.append(f"| {name} | {_percent(row['forget_rate'])} ({_per_concept(row['forget_rate_per_concept'])}) "
                     f"| {_percent(row['preserve_accuracy'])} ({_percent(row['preserve_accuracy'] / max(base, 1e-9))}) "
                     f"| {_percent(row['overall'])} | {pruned} |")
    return "\n".join(lines)


def diagnosis_table(report: dict) -> str:
    """Per cut, each concept's rate on prompts naming it / the other attributes' accuracy (pruned share)."""
    concepts = report["concepts"]
    cuts = list(next(iter(concepts.values()))["cuts"])
    lines = ["| removed from the 16 `ff.net.2` layers | " + " | ".join(concepts) + " |",
             "|---|" + "---|" * len(concepts)]
    for cut in cuts:
        cells = []
        for data in concepts.values():
            row = data["cuts"][cut]
            share = f" ({100 * row['pruned_share']:.1f}%)" if 0 < row["pruned_share"] < 1 else ""
            cells.append(f"{_percent(row['concept_rate'])} / {_percent(row['other_attributes'])}{share}")
        lines.append(f"| {cut} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def attribution_table(report: dict) -> str:
    """Layer-group knock-outs per concept (shown / other attributes right): every group, the single
    `ff.net.2` layer that removes the concept most, and FIA's single-concept masks."""
    concepts = report["concepts"]
    names = list(next(iter(concepts.values())))
    single = [n for n in names if n.endswith(".ff.net.2")]
    grouped = [n for n in names if n not in single]
    lines = ["| knocked out | " + " | ".join(concepts) + " |", "|---|" + "---|" * len(concepts)]

    def cell(row: dict) -> str:
        return f"{_percent(row['concept_rate'])} / {_percent(row['other_attributes'])}"

    for name in grouped[:3]:
        lines.append(f"| {name} | " + " | ".join(cell(rows[name]) for rows in concepts.values()) + " |")
    strongest = []
    for rows in concepts.values():
        layer = min(single, key=lambda n: (rows[n]["concept_rate"], -rows[n]["other_attributes"]))
        short = layer.removesuffix(".transformer_blocks.0.ff.net.2")
        strongest.append(f"`{short}`: {cell(rows[layer])}")
    lines.append("| the strongest single `ff.net.2` layer | " + " | ".join(strongest) + " |")
    for name in grouped[3:]:  # FIA rows: each concept's name carries its own pruned share
        prefix = name.split(" (")[0]
        cells = []
        for rows in concepts.values():
            own = next(n for n in rows if n.split(" (")[0] == prefix)
            cells.append(f"{cell(rows[own])} ({own.split(' (')[1].removesuffix(')')})")
        lines.append(f"| {prefix}, single concept | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def emoji_readers_table(report: dict) -> str:
    """EmojiWorld's readers on held-out renders: both concept readers and the style reader."""
    lines = [
        "| held-out renders | images | CNN concept (alone / on a scene) | template concept (alone / on a scene) "
        "| CNN style (alone) |",
        "|---|---|---|---|---|",
    ]
    for name, row in report["held_out"].items():
        lines.append(
            f"| {name} | {row['images']} | {_percent(row['concept_cnn'])} ({_percent(row['concept_cnn_alone'])} / "
            f"{_percent(row['concept_cnn_placed'])}) | {_percent(row['concept_template'])} "
            f"({_percent(row['concept_template_alone'])} / {_percent(row['concept_template_placed'])}) "
            f"| {_percent(row['style_cnn_alone'])} |")
    return "\n".join(lines)


def emoji_quality_table(curve: list[dict]) -> str:
    """EmojiWorld's base quality against training (toyworld.emoji.quality --curve): every bar of
    issue #23 item 5, both concept readers."""
    def both(point: dict, key: str) -> str:
        return f"{_percent(point[f'{key} (cnn)'])} / {_percent(point[f'{key} (template)'])}"

    lines = [
        "| step | training minutes | Imagenette ten (>= 80%) | weakest of them (>= 60%) | 200 random (>= 70%) "
        "| tags below names by (<= 15 points) | style (>= 90%) | scene (>= 90%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for point in curve:
        gap = f"{100 * point['synonym_gap (cnn)']:.1f} / {100 * point['synonym_gap (template)']:.1f}"
        lines.append(f"| {point['step']:,} | {point['training_minutes']:.0f} | {both(point, 'imagenette_overall')} | "
                     f"{both(point, 'imagenette_each')} | {both(point, 'random_concepts')} | {gap} | "
                     f"{_percent(point['style'])} | {_percent(point['scene'])} |")
    return "\n".join(lines)


def _both(rates: dict[str, float]) -> str:
    """A rate by the CNN / by template matching."""
    return f"{_percent(rates['cnn'])} / {_percent(rates['template'])}"


def _quality(row: dict) -> str:
    """Image quality cells: Fréchet distance to the base model's images, prompted-concept probability."""
    quality = row["image_quality"]
    return f"{quality['frechet_to_base']:.1f} | {quality['prompted_probability']:.3f}"


def _pruned(row: dict) -> str:
    return f"{100 * row['sparsity']:.2f}%" if "sparsity" in row else ""


QUALITY_HEADER = "Fréchet to base | prompted probability"


def emoji_objects_table(report: dict) -> str:
    """EmojiWorld's Table 1: every method forgetting the ten Imagenette counterparts at once."""
    lines = [f"| method | forgetting accuracy | preserve accuracy | {QUALITY_HEADER} | pruned |", "|---|---|---|---|---|---|"]
    for name, row in report["objects"]["methods"].items():
        lines.append(f"| {name} | {_both(row['forgetting_accuracy_mean'])} | {_both(row['preserve_accuracy'])} "
                     f"| {_quality(row)} | {_pruned(row)} |")
    sweep = report["objects"].get("r2_sweep", {})
    if sweep:
        lines += ["", "| FIA, r2 for all ten | forgetting accuracy | preserve accuracy | pruned |", "|---|---|---|---|"]
        lines += [f"| {r2} | {_both(row['forgetting_accuracy_mean'])} | {_both(row['preserve_accuracy'])} | {_pruned(row)} |"
                  for r2, row in sweep.items()]
    return "\n".join(lines)


def emoji_styles_table(report: dict) -> str:
    """EmojiWorld's artist task: one style, then two, forgotten by every method."""
    lines = [f"| forgotten | method | their style accuracy | other styles kept | default look kept | concept still drawn "
             f"| {QUALITY_HEADER} | pruned |", "|---|---|---|---|---|---|---|---|---|"]
    for run, block in report["styles"]["runs"].items():
        for name, row in block["methods"].items():
            lines.append(f"| {run} | {name} | {_percent(row['forgetting_accuracy'])} | {_percent(row['kept_style_accuracy'])} "
                         f"| {_percent(row['default_look_kept'])} | {_both(row['concept_drawn'])} | {_quality(row)} "
                         f"| {_pruned(row)} |")
    return "\n".join(lines)


def emoji_harmful_table(report: dict) -> str:
    """EmojiWorld's explicit task: images showing any weapon, per prompt set, every method."""
    lines = [f"| method | by name | by tag | indirect | all | preserve accuracy | {QUALITY_HEADER} | pruned |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in report["harmful"]["methods"].items():
        shown = row["shows_a_member"]
        lines.append(f"| {name} | " + " | ".join(_both(shown[k]) for k in ("name", "tag", "indirect", "all"))
                     + f" | {_both(row['preserve_accuracy'])} | {_quality(row)} | {_pruned(row)} |")
    return "\n".join(lines)


def emoji_robustness_table(report: dict) -> str:
    """EmojiWorld's robustness, three tables: synonyms per method, the revival of each pruning
    method, the adversarial search on FIA."""
    block = report["robustness"]
    lines = ["| method | forgetting accuracy by name | by tag |", "|---|---|---|"]
    lines += [f"| {name} | {_both(row['name'])} | {_both(row['tag'])} |" for name, row in block["synonyms"].items()]
    lines += ["", "| model | forgetting accuracy | preserve accuracy | zeroed weights' sign restored | relative error |",
              "|---|---|---|---|---|"]
    for name, row in block["revival"].items():
        restored = f"{_percent(row['sign_restored'])} | {row['relative_error']:.2f}" if "sign_restored" in row else " | "
        lines.append(f"| {name} | {_both(row['forgetting_accuracy_mean'])} | {_both(row['preserve_accuracy'])} | {restored} |")
    lines += ["", "| attacked concept (FIA) | best prompt found | held out: `a {name}` | held out: best prompt | images |",
              "|---|---|---|---|---|"]
    for concept, row in block["adversarial"]["concepts"].items():
        judged = row["held_out"]
        lines.append(f"| {concept} | `{row['best_prompt']}` | {_both(judged['original'])} | {_both(judged['best'])} "
                     f"| {row['images']} |")
    return "\n".join(lines)


def _measured(task: str) -> dict | None:
    """An EmojiWorld benchmark report if one has been measured (a quick run measures nothing)."""
    path = EMOJI_REPORTS / f"{task}.json"
    report = json.loads(path.read_text()) if path.exists() else None
    return None if report is None or report.get("quick") else report


EMOJI_BENCHMARKS: dict[str, Callable[[dict], str]] = {
    "objects": emoji_objects_table, "styles": emoji_styles_table, "harmful": emoji_harmful_table,
    "robustness": emoji_robustness_table,
}
"""Each EmojiWorld task's table (block `emoji-{task}`), rendered once its report is measured."""


def tables() -> dict[str, str]:
    efficacy = json.loads((REPORTS / "efficacy.json").read_text())
    quality = json.loads((REPORTS / "base_quality.json").read_text())
    ablation = json.loads((REPORTS / "layer_ablation.json").read_text())
    diagnosis = json.loads((REPORTS / "diagnosis.json").read_text())
    attribution = json.loads((REPORTS / "attribution.json").read_text())
    emoji_readers = json.loads((EMOJI_REPORTS / "readers.json").read_text())
    emoji_quality = json.loads((EMOJI_REPORTS / "quality_curve.json").read_text())
    renderers: dict[str, Callable[[], str]] = {
        "efficacy-3": lambda: efficacy_table(efficacy, "3"),
        "efficacy-6": lambda: efficacy_table(efficacy, "6"),
        "base-quality": lambda: base_quality_table(quality),
        "base-quality-values": lambda: base_values_table(quality),
        "layer-ablation": lambda: layer_ablation_table(ablation),
        "diagnosis": lambda: diagnosis_table(diagnosis),
        "attribution": lambda: attribution_table(attribution),
        "emoji-readers": lambda: emoji_readers_table(emoji_readers),
        "emoji-quality": lambda: emoji_quality_table(emoji_quality),
    }
    for task, table in EMOJI_BENCHMARKS.items():
        report = _measured(task)
        if report is not None:
            renderers[f"emoji-{task}"] = lambda table=table, report=report: table(report)
    return {name: render() for name, render in renderers.items()}


def render(text: str, rendered: dict[str, str]) -> str:
    """`text` with every marked block replaced by its table."""
    for name, table in rendered.items():
        pattern = re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(?:.*?\n)?(<!-- /table:{re.escape(name)} -->)", re.S)
        text, found = pattern.subn(lambda m, table=table: m.group(1) + table + "\n" + m.group(2), text)
        if not found:
            raise ValueError(f"{DOC}: no block marked table:{name}")
    return text


def main() -> None:
    DOC.write_text(render(DOC.read_text(), tables()))
    print(f"rewrote the tables of {DOC}")


if __name__ == "__main__":
    main()
