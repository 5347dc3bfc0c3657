"""A real, headless ComfyUI 0.3.75 server driven over HTTP and websocket, for the tests and scripts/run_example.py.

ComfyUI lives in ``<repo>/.comfyui/ComfyUI`` (installed by ``scripts/setup.sh``). A ``ComfyServer``
gets a temporary ``--base-directory`` with

    custom_nodes/comfyui-causvid      -> symlink to this repository (the pack under test)
    custom_nodes/causvid_test_nodes   -> symlink to tests/comfy_test_nodes (test-only nodes)
    models/{diffusion_models,vae,text_encoders,loras}/

and is driven over HTTP + websocket exactly as the ComfyUI frontend does. It binds 127.0.0.1 only.

Typical use (the session-scoped fixtures ``comfy_server`` and ``tiny_vae_name`` live in
``tests/conftest.py``)::

    def test_something(comfy_server, tiny_vae_name):
        result = comfy_server.run(prompt, timeout=120)
        assert result.status == "success", result.describe()
        (mp4,) = comfy_server.output_paths(result, node_id="5")

``tools.comfy_inprocess`` imports ComfyUI and the pack in *this* process instead.
Only the standard library and aiohttp (a ComfyUI dependency) are used; PyAV for ``video_info``.

Over 500 lines because ``ComfyServer`` is one object of about 400 (start and stop, the websocket run loop,
queue and history calls, output paths) that reads best whole.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:
    import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
COMFY_DIR = Path(os.environ.get("CAUSVID_COMFYUI_DIR", REPO_ROOT / ".comfyui" / "ComfyUI"))
TEST_NODES_DIR = REPO_ROOT / "tests" / "comfy_test_nodes"
MAIN_PACK_NAME = "comfyui-causvid"
TEST_PACK_NAME = "causvid_test_nodes"
MODEL_FOLDERS = ("diffusion_models", "vae", "text_encoders", "loras")

TERMINAL_MESSAGES = ("execution_success", "execution_error", "execution_interrupted")
_STATUS_OF = {
    "execution_success": "success",
    "execution_error": "error",
    "execution_interrupted": "interrupted",
}


class ComfyStartupError(RuntimeError):
    """The server did not come up, or a required custom-node pack failed to import."""


class PromptRejected(RuntimeError):
    """POST /prompt answered with an error (e.g. 400 prompt_outputs_failed_validation)."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        super().__init__(f"POST /prompt -> HTTP {status}: {json.dumps(body)[:4000]}")


def comfyui_available() -> bool:
    return (COMFY_DIR / "main.py").is_file()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main_pack_present() -> bool:
    """True when the repository root has its ComfyUI entry ``__init__.py``."""
    return (REPO_ROOT / "__init__.py").is_file()


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class RunResult:
    """Everything observed while one prompt ran."""

    prompt_id: str
    status: str  # "success" | "error" | "interrupted" | "timeout"
    messages: list[dict] = field(default_factory=list)  # [{"type": ..., "data": ...}] in order
    preview_frames: int = 0  # binary websocket frames (latent previews)
    preview_event_types: list[int] = field(default_factory=list)  # 1 PREVIEW_IMAGE, 4 ..._WITH_METADATA
    history: dict = field(default_factory=dict)  # /history/<id>[<id>], {} if absent
    elapsed: float = 0.0

    def of_type(self, msg_type: str) -> list[dict]:
        """The ``data`` of every message of one type (e.g. "progress", "executed")."""
        return [m["data"] for m in self.messages if m["type"] == msg_type]

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def error(self) -> dict | None:
        """The ``execution_error`` payload (node_id, exception_type, exception_message, traceback)."""
        errs = self.of_type("execution_error")
        return errs[0] if errs else None

    @property
    def outputs(self) -> dict:
        """``/history`` outputs: {node_id: ui dict}."""
        return self.history.get("outputs", {}) or {}

    def ui(self, node_id: str) -> dict:
        """The ui dict of an output node, from ``executed`` messages (falls back to /history)."""
        for data in self.of_type("executed"):
            if str(data.get("node")) == str(node_id) or str(data.get("display_node")) == str(node_id):
                return data.get("output") or {}
        return self.outputs.get(str(node_id), {})

    def ui_text(self, node_id: str) -> list[str]:
        return list(self.ui(node_id).get("text", []))

    def executed_nodes(self) -> list[str]:
        return [str(d.get("node")) for d in self.of_type("executed")]

    def describe(self) -> str:
        """Short human-readable summary for assertion messages."""
        lines = [f"prompt {self.prompt_id}: status={self.status} in {self.elapsed:.1f}s, "
                 f"{len(self.messages)} messages, {self.preview_frames} preview frames"]
        err = self.error
        if err:
            lines.append(f"  error in node {err.get('node_id')} ({err.get('node_type')}): "
                         f"{err.get('exception_type')}: {err.get('exception_message')}")
            tb = err.get("traceback") or []
            lines.append("  " + "".join(tb)[-3000:].replace("\n", "\n  "))
        types = [m["type"] for m in self.messages]
        lines.append(f"  message types: {types[:60]}{' ...' if len(types) > 60 else ''}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Server


class ComfyServer:
    """A headless ComfyUI server in a temporary base directory.

    Args:
        base_dir: the ``--base-directory`` (created; a fresh temp dir if None).
        packs: custom-node packs to symlink, ``{folder name: source dir}``; default this repo as
            ``comfyui-causvid`` and ``tests/comfy_test_nodes`` as ``causvid_test_nodes``.
        required_packs: pack folder names that must import; startup fails (with the log tail) if
            one is reported ``IMPORT FAILED`` / ``Cannot import``. Default: the test pack, plus the
            main pack when the repo root has an ``__init__.py``.
        extra_args: more ``main.py`` arguments (e.g. ``["--cache-none"]``).
        preview_method: ``--preview-method`` (latent2rgb gives binary preview frames).
        python: interpreter (default ``sys.executable``, i.e. the venv running pytest).
        front_end_root: the page ComfyUI serves (default an empty folder: the API only; a browser test gives the
            real frontend's `comfyui_frontend_package/static`).
    """

    def __init__(
        self,
        base_dir: str | os.PathLike | None = None,
        *,
        packs: Mapping[str, str | os.PathLike] | None = None,
        required_packs: Iterable[str] | None = None,
        extra_args: Iterable[str] = (),
        preview_method: str = "latent2rgb",
        python: str | None = None,
        startup_timeout: float = 180.0,
        env: Mapping[str, str] | None = None,
        front_end_root: str | os.PathLike | None = None,
    ):
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="comfy_e2e_"))
        self.packs = dict(packs) if packs is not None else {
            MAIN_PACK_NAME: REPO_ROOT,
            TEST_PACK_NAME: TEST_NODES_DIR,
        }
        if required_packs is None:
            required_packs = [TEST_PACK_NAME] if TEST_PACK_NAME in self.packs else []
            if MAIN_PACK_NAME in self.packs and main_pack_present():
                required_packs.append(MAIN_PACK_NAME)
        self.required_packs = list(required_packs)
        self.extra_args = list(extra_args)
        self.preview_method = preview_method
        self.python = python or sys.executable
        self.startup_timeout = startup_timeout
        self.env = dict(env) if env else {}
        self.front_end_root = Path(front_end_root) if front_end_root is not None else self.base_dir / "frontend"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.pack_import: dict[str, bool] = {}  # folder name -> imported OK (from the log table)
        self._log_file = None

    # -- paths ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def custom_nodes_dir(self) -> Path:
        return self.base_dir / "custom_nodes"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "comfyui.log"

    @property
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n_chars: int = 6000) -> str:
        return self.log_text[-n_chars:]

    # -- lifecycle --------------------------------------------------------------------------
    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for sub in MODEL_FOLDERS:
            (self.models_dir / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("input", "output", "temp", "user", "frontend"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        self.custom_nodes_dir.mkdir(parents=True, exist_ok=True)
        for name, src in self.packs.items():
            link = self.custom_nodes_dir / name
            if link.is_symlink() or link.exists():
                if link.is_symlink() and Path(os.readlink(link)) == Path(src):
                    continue
                if link.is_symlink() or link.is_file():
                    link.unlink()
                else:
                    shutil.rmtree(link)
            link.symlink_to(Path(src), target_is_directory=True)

    def _command(self) -> list[str]:
        return [
            self.python, "main.py",
            "--cpu",
            "--listen", "127.0.0.1",
            "--port", str(self.port),
            "--disable-auto-launch",
            "--base-directory", str(self.base_dir),
            "--front-end-root", str(self.front_end_root),
            "--preview-method", self.preview_method,
            *self.extra_args,
        ]

    def start(self) -> "ComfyServer":
        if not comfyui_available():
            raise ComfyStartupError(f"ComfyUI not found at {COMFY_DIR}: run scripts/setup.sh")
        self._prepare_dirs()
        last_err: Exception | None = None
        for _attempt in range(3):
            self.port = free_port()
            try:
                self._start_once()
                return self
            except ComfyStartupError as e:
                last_err = e
                self.stop()
                if "address already in use" not in self.log_text.lower():
                    raise
        raise last_err  # type: ignore[misc]

    def _start_once(self) -> None:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"$ {' '.join(self._command())}\n".encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            self._command(),
            cwd=str(COMFY_DIR),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise ComfyStartupError(
                    f"ComfyUI exited with code {self.proc.returncode} during startup. Log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/system_stats", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise ComfyStartupError(
                    f"ComfyUI did not answer /system_stats within {self.startup_timeout:.0f}s. Log tail:\n{self.log_tail()}"
                )
            time.sleep(0.2)
        self._check_pack_imports()

    def _check_pack_imports(self) -> None:
        log = self.log_text
        self.pack_import = {}
        for m in re.finditer(r"^\s*[\d.]+ seconds( \(IMPORT FAILED\))?: (.+?)\s*$", log, re.M):
            self.pack_import[os.path.basename(m.group(2))] = m.group(1) is None
        problems = []
        for name in self.required_packs:
            pack_path = str(self.custom_nodes_dir / name)
            if f"Cannot import {pack_path} " in log or f"Cannot import {pack_path}:" in log:
                problems.append(f"{name}: 'Cannot import' in the log")
            elif name not in self.pack_import:
                problems.append(f"{name}: not in ComfyUI's custom-node import table")
            elif not self.pack_import[name]:
                problems.append(f"{name}: IMPORT FAILED")
        if problems:
            raise ComfyStartupError(
                "custom-node pack import problem(s): " + "; ".join(problems) + f"\nLog tail:\n{self.log_tail(12000)}"
            )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=15)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def cleanup(self) -> None:
        """Stop, and delete the base directory if this object created it."""
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- HTTP ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, payload: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
        data = None
        headers = {}
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, body, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, body, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
        if "json" in ctype:
            try:
                return status, json.loads(body)
            except ValueError:
                pass
        return status, body

    def get(self, path: str, timeout: float = 60.0) -> Any:
        """GET ``path`` (e.g. "/system_stats"); parsed JSON for JSON replies, else bytes. Raises on
        HTTP errors."""
        status, body = self._request("GET", path, timeout=timeout)
        if status >= 400:
            raise RuntimeError(f"GET {path} -> HTTP {status}: {body[:2000]!r}")
        return body

    def post(self, path: str, payload: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
        """POST JSON; returns (status code, parsed JSON or bytes); never raises on HTTP errors."""
        return self._request("POST", path, payload if payload is not None else {}, timeout=timeout)

    def object_info(self, node_class: str | None = None) -> dict:
        """``/object_info`` (all node schemas) or ``/object_info/<class>`` (that node's schema)."""
        if node_class is None:
            return self.get("/object_info")
        return self.get("/object_info/" + urllib.parse.quote(node_class)).get(node_class, {})

    def post_prompt(self, prompt: dict, client_id: str | None = None, prompt_id: str | None = None,
                    extra_data: dict | None = None) -> tuple[int, Any]:
        """Queue an API-format prompt. 200 -> {"prompt_id", "number", "node_errors"};
        400 -> {"error": {...}, "node_errors": {...}}."""
        payload: dict = {"prompt": prompt}
        if client_id is not None:
            payload["client_id"] = client_id
        if prompt_id is not None:
            payload["prompt_id"] = prompt_id
        if extra_data:
            payload["extra_data"] = extra_data
        return self.post("/prompt", payload)

    def history(self, prompt_id: str) -> dict:
        """``/history/<id>`` entry for one prompt ({} if not there yet)."""
        return (self.get(f"/history/{prompt_id}") or {}).get(prompt_id, {})

    def interrupt(self, prompt_id: str | None = None) -> int:
        status, _ = self.post("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})
        return status

    def free(self, unload_models: bool = True, free_memory: bool = True) -> int:
        status, _ = self.post("/free", {"unload_models": unload_models, "free_memory": free_memory})
        return status

    def clear_queue(self) -> None:
        self.post("/queue", {"clear": True})

    # -- running prompts ----------------------------------------------------------------------
    def run(
        self,
        prompt: dict,
        timeout: float = 120.0,
        on_message: Callable[[str, Any, "ComfyServer"], None] | None = None,
        prompt_id: str | None = None,
    ) -> RunResult:
        """Queue ``prompt`` and follow it on the websocket until it finishes.

        Collects every JSON message of this prompt (``execution_start``, ``execution_cached``,
        ``executing``, ``progress``, ``progress_state``, ``executed``, ``execution_success`` /
        ``execution_error`` / ``execution_interrupted``) and counts binary preview frames, then
        fetches ``/history/<id>``. ``on_message(type, data, server)`` is called for each JSON message
        (``type == "preview"`` with the frame's bytes for binary frames), e.g. to call
        ``server.interrupt()`` after the first ``progress``. Raises ``PromptRejected`` when
        ``/prompt`` refuses the graph (validation errors). On timeout the prompt is interrupted and
        the result has ``status == "timeout"``.
        """
        return asyncio.run(self._run(prompt, timeout, on_message, prompt_id))

    async def _run(self, prompt, timeout, on_message, prompt_id) -> RunResult:
        import aiohttp

        client_id = uuid.uuid4().hex
        t0 = time.monotonic()
        result = RunResult(prompt_id="", status="timeout")
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{self.url}/ws?clientId={client_id}", max_msg_size=0,
                                          autoping=True) as ws:
                status, body = await loop.run_in_executor(
                    None, lambda: self.post_prompt(prompt, client_id=client_id, prompt_id=prompt_id))
                if status != 200:
                    raise PromptRejected(status, body)
                pid = body["prompt_id"]
                result.prompt_id = pid
                deadline = t0 + timeout
                terminal_at: float | None = None
                while True:
                    now = time.monotonic()
                    if terminal_at is not None:
                        wait = terminal_at + 3.0 - now  # short grace for the final "executing" None
                    else:
                        wait = deadline - now
                    if wait <= 0:
                        break
                    try:
                        msg = await ws.receive(timeout=wait)
                    except asyncio.TimeoutError:
                        break
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        try:
                            obj = json.loads(msg.data)
                        except ValueError:
                            continue
                        mtype, data = obj.get("type"), obj.get("data") or {}
                        mpid = data.get("prompt_id") if isinstance(data, dict) else None
                        if mpid is not None and mpid != pid:
                            continue  # another prompt's message
                        if mtype == "status" and mpid is None:
                            continue  # queue status broadcasts
                        result.messages.append({"type": mtype, "data": data})
                        if on_message is not None:
                            on_message(mtype, data, self)
                        if mtype in TERMINAL_MESSAGES:
                            result.status = _STATUS_OF[mtype]
                            terminal_at = time.monotonic()
                        if mtype == "executing" and data.get("node") is None and mpid == pid:
                            if result.status == "timeout":
                                # finished without a terminal message we saw (should not happen)
                                result.status = "unknown"
                            break  # sent after the history entry is written
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        result.preview_frames += 1
                        if len(msg.data) >= 4:
                            result.preview_event_types.append(int.from_bytes(msg.data[:4], "big"))
                        if on_message is not None:
                            on_message("preview", msg.data, self)
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                      aiohttp.WSMsgType.ERROR):
                        break
        if result.status == "timeout" and result.prompt_id:
            await loop.run_in_executor(None, lambda: self.post("/queue", {"delete": [result.prompt_id]}))
            await loop.run_in_executor(None, self.interrupt)
        # history is written before the final "executing" None; poll briefly in case we missed it
        hist_deadline = time.monotonic() + 10.0
        while True:
            result.history = await loop.run_in_executor(None, self.history, result.prompt_id)
            if result.history or result.status == "timeout" or time.monotonic() > hist_deadline:
                break
            await asyncio.sleep(0.1)
        if result.status in ("timeout", "unknown") and result.history:
            st = (result.history.get("status") or {}).get("status_str")
            if result.status == "unknown":
                result.status = {"success": "success", "error": "error"}.get(st, "unknown")
        result.elapsed = time.monotonic() - t0
        return result

    def output_paths(self, result: RunResult, node_id: str | None = None) -> list[Path]:
        """Files that output nodes reported (``images``/``gifs``/``video``/``audio`` entries with
        ``filename``/``subfolder``/``type``) in ``/history``, resolved under the output dir."""
        roots = {"output": self.output_dir, "temp": self.base_dir / "temp", "input": self.input_dir}
        paths = []
        for nid, ui in result.outputs.items():
            if node_id is not None and str(nid) != str(node_id):
                continue
            for value in ui.values():
                if not isinstance(value, list):
                    continue
                for item in value:
                    if isinstance(item, dict) and "filename" in item:
                        root = roots.get(item.get("type", "output"), self.output_dir)
                        paths.append(root / item.get("subfolder", "") / item["filename"])
        return paths


def video_frames(path: str | os.PathLike) -> np.ndarray:
    """The frames of a saved video as one uint8 array [F, H, W, 3] (RGB), read back with PyAV."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def video_info(path: str | os.PathLike) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of a saved video, read back with PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)
