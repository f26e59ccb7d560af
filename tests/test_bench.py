"""Every benchmark in its quick mode, so `make bench-perf` and its siblings cannot rot unnoticed
(the numbers are not checked here: they are measured by `make bench-perf` and kept in bench/reports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devkit.comfy_env import REPO, comfyui_path

BENCH = REPO / "bench"


def run_bench(script: str, out, *args: str) -> None:
    env = os.environ | {"FIA_BENCH_OUT": str(out), "COMFYUI_PATH": str(comfyui_path())}
    subprocess.run([sys.executable, str(BENCH / script), *args], check=True, env=env, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def perf_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    run_bench("perf.py", out, "--quick")
    return json.loads((out / "perf.json").read_text()), out


def test_perf_quick_mode_reports_every_stage(perf_report):
    report, out = perf_report
    assert report["quick"] and set(report["stages"]) == {"1", "2"} and set(report["end_to_end"]) == {"1", "2"}
    for block in report["stages"].values():
        assert set(block["seconds"]) == {"sort", "select", "select_warm", "fuse", "save", "load"}
        assert block["mask_file_bytes"] > 0 and block["pruned_weights"] > 0  # the child loads its own mask back
        assert block["seconds"]["load"]["rounds"] == 1
    for block in report["end_to_end"].values():
        assert block["unet_calls"] > 0 and block["total"]["median"] > 0
    assert report["mask_load_apply_sd15"]["load_plus_apply_seconds"] > 0  # the saved mask loads and applies
    assert "patch" in report["masked_sampling_sd15"]["unet_call"]["cpu"]
    assert "| metric | value | target |" in (out / "perf.md").read_text()


def test_official_comparison_quick_mode(tmp_path):
    run_bench("official.py", tmp_path, "--quick")
    report = json.loads((tmp_path / "official.json").read_text())
    (row,) = report["settings"].values()
    assert row["unet_calls"] == 4 * 2 and row["total"]["median"] > 0 and row["bare_forwards"]["median"] > 0


def test_gpu_script_runs_on_the_cpu(tmp_path):
    """The GPU check's own code paths (a CPU never reaches dynamic VRAM), on the tiny layout."""
    run_bench("gpu_dynamic_vram.py", tmp_path, "--allow-cpu", "--quick", "--tiny", "--size", "64")
    report = json.loads((tmp_path / "gpu_dynamic_vram.json").read_text())
    assert report["stages"]["same_masks_as_cpu"] and report["forward_weights"]["exact"]
    assert set(report["stages"]["seconds"]) >= {"record", "select", "fuse", "save", "load_apply"}


def test_performance_docs_state_what_the_committed_reports_hold():
    """docs/evaluation.md's performance tables are rendered from bench/reports (bench/report_tables.py)."""
    sys.path.insert(0, str(BENCH))
    import report_tables

    from devkit import doc_tables

    text = doc_tables.DOC.read_text()
    rendered = report_tables.tables()
    assert set(rendered) == {"perf-stages", "perf-e2e", "perf-metrics", "perf-official"}
    assert doc_tables.render(text, rendered) == text
