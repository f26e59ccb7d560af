"""Runs the shipped workflows on the test server, each once per session, with test-size settings.

Only API inputs are overridden after conversion (the files on disk stay as shipped): the model
files, image size, step counts and prompt pairs, so a run takes seconds on CPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .graphs import SIZE
from .server import ComfyServer
from .workflow_api import nodes_of, override, to_api

WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "workflows"
WORKFLOW_FILES = sorted(path.name for path in WORKFLOWS_DIR.glob("*.json"))


def fast_overrides(checkpoint: str, lora: str) -> dict[str, dict]:
    """Per node class, the inputs the tests must change; every other value is the shipped one."""
    return {
        "CheckpointLoaderSimple": {"ckpt_name": checkpoint},
        "LoraLoader": {"lora_name": lora},
        "LoraLoaderModelOnly": {"lora_name": lora},
        "EmptyLatentImage": {"width": SIZE, "height": SIZE},
        "KSampler": {"steps": 2},
        "FIAComputeConceptSaliency": {"width": SIZE, "height": SIZE, "steps": 2, "recorded_steps": 2, "prompt_pairs": 2},
    }


def load_ui(name: str) -> dict:
    return json.loads((WORKFLOWS_DIR / name).read_text(encoding="utf-8"))


@dataclass
class WorkflowRun:
    name: str
    prompt: dict          # the API prompt as queued (after overrides)
    history: dict         # GET /history entry
    log: str              # server log written during the run
    seconds: float
    images: dict[str, list[Path]] = field(default_factory=dict)  # SaveImage node id -> files
    fused_masks: list[Path] = field(default_factory=list)  # what each FIA Fuse Masks made, saved by the runner

    def outputs_of(self, class_type: str) -> dict[str, list[Path]]:
        return {node_id: self.images.get(node_id, []) for node_id in nodes_of(self.prompt, class_type)}


def with_fused_masks_saved(prompt: dict, stem: str) -> tuple[dict, list[str]]:
    """The prompt to queue: the shipped one plus an FIA Save Mask on each FIA Fuse Masks output, so
    the tests read what was fused from the mask files, not from the server's log. Returns it and
    the save prefixes (under the mask folder), in node order."""
    queued, prefixes = dict(prompt), []
    for node_id in nodes_of(prompt, "FIAFuseMasks"):
        prefixes.append(f"e2e/{stem}_{node_id}")
        queued[f"fia-e2e-save-{node_id}"] = {"class_type": "FIASaveMask",
                                             "inputs": {"mask": [node_id, 0], "filename_prefix": prefixes[-1]}}
    return queued, prefixes


class WorkflowRunner:
    """Converts, patches and runs shipped workflows; memoised so each runs once per session."""

    def __init__(self, server: ComfyServer, checkpoint: str, lora: str):
        self.server = server
        self.overrides = fast_overrides(checkpoint, lora)
        self.runs: dict[str, WorkflowRun] = {}
        self._object_info: dict | None = None

    def object_info(self) -> dict:
        if self._object_info is None:
            self._object_info = self.server.get("/object_info")
        return self._object_info

    def api_prompt(self, name: str) -> dict:
        """The shipped workflow in API form, with test-size overrides."""
        prompt = to_api(load_ui(name), self.object_info())
        for class_type, values in self.overrides.items():
            if nodes_of(prompt, class_type):
                override(prompt, class_type, **values)
        return prompt

    def run(self, name: str) -> WorkflowRun:
        if name not in self.runs:
            prompt = self.api_prompt(name)
            if nodes_of(prompt, "FIALoadMask"):
                self._prepare_mask_files(prompt)
            start_log, start = self.server.log_size(), time.monotonic()
            queued, prefixes = with_fused_masks_saved(prompt, Path(name).stem)
            history = self.server.run(queued)
            images = {
                node_id: [self.server.output_dir / item["subfolder"] / item["filename"] for item in output["images"]]
                for node_id, output in history.get("outputs", {}).items() if "images" in output
            }
            folder = self.server.models_dir / "fia_masks"
            fused = [sorted(folder.glob(f"{prefix}_*_.safetensors"))[-1] for prefix in prefixes]
            self.runs[name] = WorkflowRun(name, prompt, history, self.server.log_text(start_log),
                                          time.monotonic() - start, images, fused)
        return self.runs[name]

    def _prepare_mask_files(self, prompt: dict) -> None:
        """A load workflow needs its mask saved first: run the shipped save workflows, then list the
        masks again the way the editor's refresh does (the node's combo is read at request time)."""
        for other in WORKFLOW_FILES:
            if nodes_of(to_api(load_ui(other), self.object_info()), "FIASaveMask"):
                self.run(other)
        listed = self.server.get("/object_info/FIALoadMask")["FIALoadMask"]["input"]["required"]["mask_name"]
        for node in nodes_of(prompt, "FIALoadMask").values():
            assert node["inputs"]["mask_name"] in listed[1]["options"], (
                f"{node['inputs']['mask_name']} not offered by FIA Load Mask after saving: {listed}"
            )
