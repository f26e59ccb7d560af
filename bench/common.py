"""Shared by the benchmarks: ComfyUI setup, timing, machine description, JSON + Markdown output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "bench"


def setup() -> None:
    """Real ComfyUI on sys.path (CPU unless CUDA is there), the repo and tests/ importable."""
    for path in (REPO, REPO / "tests"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    from toyworld.comfy_env import setup_comfy

    setup_comfy()


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
