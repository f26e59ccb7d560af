"""Shared by the benchmarks: ComfyUI setup, timing, machine description, JSON + Markdown output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("FIA_BENCH_OUT") or REPO / "out" / "bench")  # the test suite's quick runs write elsewhere


def setup() -> None:
    """Real ComfyUI on sys.path (CPU unless CUDA is there) and the repo importable (a benchmark runs
    as a script from bench/, so only its own folder is on the path)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from devkit.comfy_env import setup_comfy

    setup_comfy()


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    return statistics.median(r["fn"] for r in interleaved_rounds({"fn": fn}, repeats, warm_up=False))


def rotations(names: list[str], count: int, warm_up: bool = True) -> Iterator[tuple[bool, list[str]]]:
    """(keep, order) for `count` rounds, the order rotated each round; a first warm-up round
    (keep False) loads and warms every contender."""
    for r in range(count + 1) if warm_up else range(1, count + 1):
        yield r > 0, names[r % len(names):] + names[:r % len(names)]


def interleaved_rounds(fns: dict[str, Callable[[], object]], repeats: int,
                       warm_up: bool = True) -> list[dict[str, float]]:
    """Wall seconds of each function per round, the functions taking turns within every round,
    so a slow minute of a shared machine hits all of them alike."""
    rounds = []
    for keep, order in rotations(list(fns), repeats, warm_up):
        times = {}
        for name in order:
            start = time.perf_counter()
            fns[name]()
            times[name] = time.perf_counter() - start
        if keep:
            rounds.append(times)
    return rounds


def paired_ratio(rounds: list[dict[str, float]], name: str, reference: str, scale: float = 1.0) -> dict:
    """Median and quartiles over rounds of name's time / (scale x reference's time) in the same round."""
    ratios = [r[name] / (scale * r[reference]) for r in rounds]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {"median": statistics.median(ratios), "quartiles": [quartiles[0], quartiles[2]]}


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "python": platform.python_version(),
    }


def write(name: str, data: dict, table_rows: list[tuple[str, str, str]], title: str) -> Path:
    """out/bench/<name>.json and <name>.md (a metric | value | target table)."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))
    m = data.get("machine", {})
    lines = [f"# {title}", "", f"Machine: {m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')} "
             f"({m.get('device')}), {m.get('torch_threads')} threads.", "",
             "| metric | value | target |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in table_rows]]
    path = OUT / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path
