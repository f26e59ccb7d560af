"""A real ComfyUI server in a child process, with every folder it writes in a temporary base dir.

The pack is linked into `<base>/custom_nodes/` the way users install it; the server runs on
loopback with an empty front-end folder (no web UI needed) and an in-memory database.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACK_FOLDER = "comfyui-forget-it-all"


class PromptRejected(Exception):
    """POST /prompt answered with a validation error instead of queueing."""

    def __init__(self, status: int, body: dict):
        super().__init__(f"HTTP {status}: {json.dumps(body)[:2000]}")
        self.status = status
        self.body = body


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ComfyServer:
    process: subprocess.Popen
    url: str
    base_dir: Path
    log_path: Path

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    def log_text(self, start: int = 0) -> str:
        """The server's combined stdout/stderr from byte `start` on."""
        with open(self.log_path, "rb") as handle:
            handle.seek(start)
            return handle.read().decode("utf-8", "replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def request(self, method: str, path: str, payload: Any = None, timeout: float = 30) -> tuple[int, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        try:
            return status, json.loads(body) if body else None
        except json.JSONDecodeError:
            return status, body.decode("utf-8", "replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, f"GET {path}: HTTP {status} {body}"
        return body

    def queue(self, prompt: dict) -> str:
        """Queues an API-format prompt; raises PromptRejected when validation refuses it."""
        status, body = self.request("POST", "/prompt", {"prompt": prompt, "client_id": "fia-e2e"})
        if status != 200 or body.get("node_errors"):
            raise PromptRejected(status, body if isinstance(body, dict) else {"raw": body})
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        """The prompt's history entry once it has finished (successfully or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"].get("status_str") in ("success", "error")
            ):
                return entry
            self.assert_alive()
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        """Queues, waits, and fails with the server's error message unless the run succeeded."""
        entry = self.wait(self.queue(prompt), timeout)
        status = entry["status"]
        assert status["status_str"] == "success", f"prompt failed: {json.dumps(status['messages'])[:3000]}"
        return entry

    def assert_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"ComfyUI exited with code {code}:\n{self.log_text()[-6000:]}")

    def stop(self) -> None:
        """Ends the server and anything it started (its own process group)."""
        if self.process.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if pytest itself is killed, so no orphan keeps the port and CPU."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_server(comfyui: Path, pack: Path, base_dir: Path, timeout: float = 240) -> ComfyServer:
    """Starts `main.py` headless and returns once GET /object_info answers."""
    for sub in ("custom_nodes", "models", "input", "output", "user", "frontend"):
        (base_dir / sub).mkdir(parents=True, exist_ok=True)
    link = base_dir / "custom_nodes" / PACK_FOLDER
    if not link.exists():
        link.symlink_to(pack, target_is_directory=True)
    port = free_port()
    log_path = base_dir / "server.log"
    command = [
        sys.executable, str(comfyui / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
        "--front-end-root", str(base_dir / "frontend"), "--disable-auto-launch",
        "--database-url", "sqlite:///:memory:", "--base-directory", str(base_dir),
        # Paid cloud-API nodes are irrelevant here; skipping their import saves startup time.
        "--disable-api-nodes",
        # ComfyUI runs CLIP in fp16 on CPU, which is slow there; fp32 does not change what the pack does.
        "--fp32-text-enc",
    ]
    # On a shared 2-core machine, one compute thread is several times faster than two fighting
    # the other jobs for the cores (measured: 3 s vs 0.3 s per UNet call). FIA_E2E_THREADS overrides.
    threads = os.environ.get("FIA_E2E_THREADS", "1")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=base_dir, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True, preexec_fn=_die_with_parent)
    server = ComfyServer(process, f"http://127.0.0.1:{port}", base_dir, log_path)
    deadline = time.monotonic() + timeout
    try:
        while True:
            server.assert_alive()
            try:
                status, _ = server.request("GET", "/object_info/CheckpointLoaderSimple", timeout=5)
                if status == 200:
                    return server
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"ComfyUI not ready after {timeout} s:\n{server.log_text()[-6000:]}")
            time.sleep(0.5)
    except BaseException:
        server.stop()
        raise
