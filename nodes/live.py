"""Live steering: CausVid Stream to Video given a text encoder (`live_clip`) takes new prompts while it streams.

Routes on ComfyUI's server, for the page and any HTTP client:

    GET  /causvid/live               the live runs streaming now: [{"run", "node", "blocks", "error", "paused",
                                     "prompts"}]
    POST /causvid/live/{run}/prompt  {"text": "..."}: the video turns to it from the first block that starts once
                                     it is encoded (202);
    POST /causvid/live/{run}/pause   {"paused": true | false}: hold the video after the block being made, or go on;
                                     400 with what is wrong for bad input, 404 for a run that is not streaming

When it starts, after every block, after every prompt's encode and when paused or resumed a run sends
"causvid.live" over ComfyUI's websocket: {"run", "node", "blocks", "error", "paused", "prompts"}, the prompts used
so far as {"seconds", "text"}; "error" says why the last prompt sent was not used (it could not be encoded: the video
goes on with the one before). A paused run holds its memory and waits between two blocks (Cancel still stops it,
keeping the file).

A new prompt is encoded the way CausVid Text Encode encodes it, on a thread of the run's own
(`causvid-live-encode-...`, started at the first prompt sent, joined when the run ends) and, on a GPU, on a CUDA
stream of its own: the umT5 encode runs while the current block samples instead of holding the video at the block
boundary. The thread waits for its stream before it hands the embedding over, so the sampling thread never sees an
unfinished tensor and never waits for one; the first block that starts after that takes it (`causal.LivePrompts`).
A prompt sent while another is being encoded follows it (of several sent meanwhile the last). The text encoder is
the one the run loaded beside the DiT before it started and keeps loaded with it (`sampler.kept_loaded`: the
encode's own load call never makes ComfyUI unload part of the DiT under its CUDA graphs); ComfyUI's model loads
take turns while a live run streams, and never run during a CUDA graph capture (`one_load_at_a_time`). Which block
takes a prompt now depends on when its encode finishes, but every prompt is recorded with the block that took it,
and the prompts used are written beside the video as `seconds: prompt` lines: given to CausVid Text Encode and
queued with the same settings, they make the same video.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from typing import Callable, Iterator

import torch

from ..causal import kernels
from ..causal.prompts import FPS, LivePrompts, seconds_at
from ..causal.text import clean_prompt

log = logging.getLogger("comfyui-causvid")

MAX_TEXT = 20_000
"""Characters a live prompt may have (umT5 reads at most 512 tokens; this only bounds what a request can send)."""
PAUSE_POLL_S = 0.1
"""How often a paused run looks for a Cancel."""
CLOSE_WAIT_S = 120.0
"""How long a run that ends waits for an encode under way (a daemon thread is left behind past it)."""


class LiveRun:
    """One streaming run that takes prompts: `submit` from any thread (its encode thread encodes them),
    `between_blocks` on the sampling thread, `close` once the run ends."""

    def __init__(self, node_id: str, first_text: str, first: torch.Tensor, encode: Callable[[str], torch.Tensor],
                 *, start_frames: int = 0, max_tokens: int | None = None,
                 device: torch.device | None = None, fps: float = FPS) -> None:
        self.id = uuid.uuid4().hex
        self.node_id = node_id
        self.prompts = LivePrompts(first, max_tokens=max_tokens)
        self.start_frames = start_frames
        self.fps = fps
        """The video's frame rate (its model's), which turns the frames a prompt took into seconds."""
        self.blocks = 0
        self.device = device
        """Where `encode` runs: on a CUDA device the encode thread uses a CUDA stream of its own there."""
        self._encode = encode
        self._texts = {id(first): first_text}
        self._pending: str | None = None  # the latest text sent and not yet being encoded
        self._busy = False  # the encode thread is encoding one
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake = threading.Condition()
        self._going = threading.Event()  # cleared while paused
        self._going.set()
        self.error: str | None = None
        """Why the last prompt sent was not used (it could not be encoded), until one is."""

    @staticmethod
    def check_text(text) -> str:
        """The prompt as it will be encoded (cleaned as CausVid Text Encode cleans it, on one line), or ValueError."""
        if not isinstance(text, str):
            raise ValueError(f"the prompt must be a string, not {type(text).__name__}")
        if len(text) > MAX_TEXT:
            raise ValueError(f"the prompt has {len(text)} characters; at most {MAX_TEXT} are taken")
        cleaned = clean_prompt(" ".join(text.split()))
        if not cleaned:
            raise ValueError("the prompt is empty")
        return cleaned

    def submit(self, text) -> str:
        """Have the encode thread encode a prompt for the blocks that start after it (one sent while it waits for
        the thread replaces it); returns it cleaned. ValueError for bad text or a run that has ended."""
        cleaned = self.check_text(text)
        with self._wake:
            if self._closed:
                raise ValueError("the run has ended: it takes no more prompts")
            self._pending = cleaned
            if self._thread is None:
                self._thread = threading.Thread(target=self._encoding, name=f"causvid-live-encode-{self.id[:8]}",
                                                daemon=True)  # daemon only in case an encode never returns
                self._thread.start()
            self._wake.notify_all()
        return cleaned

    def _next_text(self) -> str | None:
        """The text to encode next, waiting for one; None once the run is closed."""
        with self._wake:
            self._busy = False
            self._wake.notify_all()
            while self._pending is None and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            text, self._pending, self._busy = self._pending, None, True
            return text

    def _encoding(self) -> None:
        stream = torch.cuda.Stream(self.device) if self.device is not None and self.device.type == "cuda" else None
        try:  # inference mode, as ComfyUI runs its nodes (grad mode is per thread)
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext(), \
                    torch.inference_mode():
                while (text := self._next_text()) is not None:
                    self._encode_one(text, stream)
        finally:  # also when a BaseException ends the thread: no prompt waits for it any more
            with self._wake:
                self._closed, self._pending, self._busy = True, None, False
                self._wake.notify_all()

    def _encode_one(self, text: str, stream: torch.cuda.Stream | None) -> None:
        try:
            context = self._encode(text)
            if stream is not None:
                stream.synchronize()  # finished before the sampling thread can take it
            self._texts[id(context)] = text  # before a block can take it
            self.prompts.submit(context)
        except Exception as e:  # noqa: BLE001 (a prompt that cannot be encoded must not end the video)
            self.error = f"'{text[:60]}' was not used: {e or type(e).__name__}"
            log.warning("CausVid live: %s", self.error)
        else:
            self.error = None
        announce(self)

    def wait_encoded(self, timeout: float | None = None) -> bool:
        """Wait until every prompt sent so far is encoded and handed to the blocks (or failed); False on timeout."""
        with self._wake:
            return self._wake.wait_for(lambda: self._closed or (self._pending is None and not self._busy), timeout)

    def close(self, timeout: float = CLOSE_WAIT_S) -> None:
        """The run has ended: drop a prompt not yet being encoded, let one under way finish and join the encode
        thread (warning, and leaving the daemon thread, if that takes over `timeout` s)."""
        with self._wake:
            self._closed, self._pending = True, None
            self._wake.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warning("CausVid live: an encode still runs %.0f s after the run ended; left behind", timeout)

    @property
    def paused(self) -> bool:
        return not self._going.is_set()

    def pause(self, paused: bool = True) -> None:
        """Hold the video after the block being made (from any thread); `pause(False)` lets it go on."""
        if paused:
            self._going.clear()
        else:
            self._going.set()

    def between_blocks(self, interrupted: Callable[[], None] = lambda: None) -> None:
        """After a block's last step: count it, and wait while paused (calling `interrupted`, which raises on a
        Cancel, every PAUSE_POLL_S). Encoding happens on the encode thread, never here."""
        self.blocks += 1
        if self.paused:
            announce(self)  # the page shows the block the video holds after
        while not self._going.wait(PAUSE_POLL_S):
            interrupted()

    def used(self) -> list[tuple[float, str]]:
        """(seconds into the video, text) of every prompt used so far, in order."""
        return [(seconds_at(change.frame + self.start_frames, self.fps) if change.frame else 0.0,
                 self._texts[id(change.context)]) for change in self.prompts]

    def timeline_text(self) -> str:
        """The prompts used as CausVid Text Encode's timeline lines."""
        return "".join(f"{format(seconds, '.10g')}: {text}\n" for seconds, text in self.used())

    def status(self) -> dict:
        return {"run": self.id, "node": self.node_id, "blocks": self.blocks, "error": self.error,
                "paused": self.paused, "prompts": [{"seconds": s, "text": t} for s, t in self.used()]}


def comfy_encoder(clip) -> Callable[[str], torch.Tensor]:
    """A live run's `encode`: one prompt through ComfyUI's CLIP as CausVid Text Encode encodes it. ComfyUI's ops
    look for a Cancel in every forward and clear it as they raise; one that the encode thread saw is set again, so
    that the sampling thread sees it too and ends the run."""
    import comfy.model_management as mm

    from .text import encode_prompt

    def encode(text: str) -> torch.Tensor:
        try:
            return encode_prompt(clip, text)[0]
        except mm.InterruptProcessingException:
            mm.interrupt_current_processing()
            raise
    return encode


@contextlib.contextmanager
def one_load_at_a_time() -> Iterator[None]:
    """While a live run streams, calls of ComfyUI's `load_models_gpu` take turns, under `kernels.one_at_a_time`: the
    encode thread's (the CLIP's load before each encode) and the sampling thread's (Krea's VAE re-encode) would
    otherwise edit its list of loaded models together, which pops entries by index and could drop the wrong model;
    and a load may empty PyTorch's cache (a device-wide synchronize), which would break a CUDA graph capture under
    way on the sampling thread."""
    import comfy.model_management as mm

    load = mm.load_models_gpu

    def load_models_gpu(*args, **kwargs):
        with kernels.one_at_a_time:
            return load(*args, **kwargs)

    mm.load_models_gpu = load_models_gpu
    try:
        yield
    finally:
        mm.load_models_gpu = load


class Registry:
    """The live runs streaming now, by id."""

    def __init__(self) -> None:
        self._runs: dict[str, LiveRun] = {}
        self._lock = threading.Lock()

    def add(self, run: LiveRun) -> None:
        with self._lock:
            self._runs[run.id] = run

    def remove(self, run: LiveRun) -> None:
        with self._lock:
            self._runs.pop(run.id, None)

    def get(self, run_id: str) -> LiveRun | None:
        with self._lock:
            return self._runs.get(run_id)

    def all(self) -> list[LiveRun]:
        with self._lock:
            return list(self._runs.values())


RUNS = Registry()


def add_routes(routes, registry: Registry = RUNS) -> None:
    """Register the live routes on an aiohttp RouteTableDef (ComfyUI's `PromptServer.instance.routes`)."""
    from aiohttp import web

    @routes.get("/causvid/live")
    async def live_runs(request):
        return web.json_response([run.status() for run in registry.all()])

    async def run_and_body(request, key: str, example: str, valid=lambda value: True):
        """(the run, body[key]) of a request, or (None, the error response): 404 for no such run, 400 for a body
        that is not a JSON object with a `valid` `key` (`example` shows one)."""
        run = registry.get(request.match_info["run"])
        if run is None:
            return None, web.json_response(
                {"error": "no live run with this id is streaming (it finished, or never started)"}, status=404)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or key not in body or not valid(body[key]):
            return None, web.json_response({"error": f"send JSON: {example}"}, status=400)
        return run, body[key]

    @routes.post("/causvid/live/{run}/prompt")
    async def live_prompt(request):
        run, text = await run_and_body(request, "text", '{"text": "the new prompt"}')
        if run is None:
            return text
        try:
            text = run.submit(text)
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"run": run.id, "queued": text, "after_block": run.blocks}, status=202)

    @routes.post("/causvid/live/{run}/pause")
    async def live_pause(request):
        run, paused = await run_and_body(request, "paused", '{"paused": true} or {"paused": false}',
                                           lambda value: isinstance(value, bool))
        if run is None:
            return paused
        run.pause(paused)
        announce(run)
        return web.json_response({"run": run.id, "paused": run.paused, "after_block": run.blocks})


@contextlib.contextmanager
def streaming_live(run: LiveRun | None, registry: Registry = RUNS) -> Iterator[None]:
    """While a stream samples: its live run (if any) listed and announced, ComfyUI's model loads taking turns; when
    it ends (finished, cancelled or failed) the run is unlisted and closed, its encode thread joined."""
    if run is None:
        yield
        return
    with one_load_at_a_time():
        registry.add(run)
        try:
            announce(run)
            yield
        finally:
            registry.remove(run)
            run.close()


def register_with_server() -> bool:
    """Add the routes to ComfyUI's server, once, while it loads the packs (it serves the routes it holds when it
    starts); False where there is none (the library, in-process tests)."""
    try:
        from server import PromptServer
    except ImportError:
        return False
    server = getattr(PromptServer, "instance", None)
    if server is None or getattr(server, "_causvid_live_routes", False):
        return server is not None
    add_routes(server.routes)
    server._causvid_live_routes = True
    return True


def announce(run: LiveRun) -> None:
    """Send the run's status over ComfyUI's websocket (nothing without a server)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None:
        server.send_sync("causvid.live", run.status())
