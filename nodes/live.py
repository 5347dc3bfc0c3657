"""Live steering: CausVid Stream to Video given a text encoder (`live_clip`) takes new prompts while it streams.

Routes on ComfyUI's server, for the page and any HTTP client:

    GET  /causvid/live               the live runs streaming now: [{"run", "node", "blocks", "error", "paused",
                                     "prompts"}]
    POST /causvid/live/{run}/prompt  {"text": "..."}: the video turns to it from the next block on (202);
    POST /causvid/live/{run}/pause   {"paused": true | false}: hold the video after the block being made, or go on;
                                     400 with what is wrong for bad input, 404 for a run that is not streaming

When it starts, after every block and when paused or resumed a run sends "causvid.live" over ComfyUI's websocket:
{"run", "node", "blocks", "error", "paused", "prompts"}, the prompts used so far as {"seconds", "text"}; "error"
says why the last prompt sent was not used (it could not be encoded: the video goes on with the one before). A
paused run holds its memory and waits between two blocks (Cancel still stops it, keeping the file).

A new prompt is encoded between two blocks on the sampling thread, the way CausVid Text Encode encodes it, with the
text encoder the run loaded beside the DiT before it started and keeps loaded with it (`sampler.kept_loaded`: the
encode's own load call never makes ComfyUI unload part of the DiT under its CUDA graphs), and drives the blocks from
the next one on (`causal.LivePrompts`). The prompts used are written beside the video as `seconds: prompt` lines:
given to CausVid Text Encode and queued with the same settings, they make the same video.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Callable

import torch

from ..causal.prompts import LivePrompts, seconds_at
from ..causal.text import clean_prompt

log = logging.getLogger("comfyui-causvid")

MAX_TEXT = 20_000
"""Characters a live prompt may have (umT5 reads at most 512 tokens; this only bounds what a request can send)."""
PAUSE_POLL_S = 0.1
"""How often a paused run looks for a Cancel."""


class LiveRun:
    """One streaming run that takes prompts: `submit` from any thread, `between_blocks` on the sampling thread."""

    def __init__(self, node_id: str, first_text: str, first: torch.Tensor, encode: Callable[[str], torch.Tensor],
                 *, start_frames: int = 0, max_tokens: int | None = None) -> None:
        self.id = uuid.uuid4().hex
        self.node_id = node_id
        self.prompts = LivePrompts(first, max_tokens=max_tokens)
        self.start_frames = start_frames
        self.blocks = 0
        self._encode = encode
        self._texts = {id(first): first_text}
        self._pending: str | None = None
        self._lock = threading.Lock()
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
        """Queue a prompt for the next block (a later one before that block replaces it); returns it cleaned."""
        cleaned = self.check_text(text)
        with self._lock:
            self._pending = cleaned
        return cleaned

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
        """After a block's last step: wait while paused (calling `interrupted`, which raises on a Cancel, every
        PAUSE_POLL_S), then encode the queued prompt, if any, so that the next block takes it."""
        self.blocks += 1
        if self.paused:
            announce(self)  # the page shows the block the video holds after
        while not self._going.wait(PAUSE_POLL_S):
            interrupted()
        with self._lock:
            text, self._pending = self._pending, None
        if text is None:
            return
        try:
            context = self._encode(text)
            self.prompts.submit(context)
        except Exception as e:  # noqa: BLE001 (a prompt that cannot be encoded must not end the video)
            self.error = f"'{text[:60]}' was not used: {e}"
            log.warning("CausVid live: %s", self.error)
            return
        self._texts[id(context)] = text
        self.error = None

    def used(self) -> list[tuple[float, str]]:
        """(seconds into the video, text) of every prompt used so far, in order."""
        return [(seconds_at(change.frame + self.start_frames) if change.frame else 0.0,
                 self._texts[id(change.context)]) for change in self.prompts]

    def timeline_text(self) -> str:
        """The prompts used as CausVid Text Encode's timeline lines."""
        return "".join(f"{format(seconds, '.10g')}: {text}\n" for seconds, text in self.used())

    def status(self) -> dict:
        return {"run": self.id, "node": self.node_id, "blocks": self.blocks, "error": self.error,
                "paused": self.paused, "prompts": [{"seconds": s, "text": t} for s, t in self.used()]}


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
