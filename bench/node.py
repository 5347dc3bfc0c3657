#!/usr/bin/env python3
"""Node-path benchmark: CausVid Stream to Video run by ComfyUI's own execution engine, in this process, next to
the library path with the same options (bench/stream.py's: `causal.generate` feeding the pack's streaming
classes), in one run.

    python3 bench/node.py --comfyui .devcarry/ComfyUI --seconds 60 --speed fast --json $OUT/node.json --out $OUT/node.md
    python3 bench/node.py --comfyui .comfyui/ComfyUI --tiny --device cpu --seconds 2 --repeats 1   # smoke test

What runs. ComfyUI is imported as `python main.py` starts it (its `cuda_malloc` first, which picks PyTorch's
cudaMallocAsync backend on a CUDA build: `--allocator default` keeps PyTorch's own, as `--disable-cuda-malloc`
does), then its core nodes, this pack and the test pack `tests/comfy_test_nodes` are registered with
`nodes.load_custom_node`, as ComfyUI loads a custom-node folder. Each prompt passes `execution.validate_prompt`
and runs in an `execution.PromptExecutor` (classic cache), as a queued prompt does; `BenchServer` stands in for
the PromptServer (below). Models: real-size random weights in a temporary models folder registered with
`folder_paths`: the 1.3B DiT in ComfyUI's repackaged single-file layout (`--model 14B`: LightX2V's
causal_model.safetensors) and a Wan 2.1 VAE (ComfyUI's `WanVAE`, N(0, 0.02^2) weights, bf16); `--tiny`: the tiny
DiT (tools.tiny.TINY) and a dim-8 VAE at 64x48. The workflow is the pack's stream template
(tools/workflows/api/causvid_stream_ten_minutes.json: Self-Forcing / LongLive 1.3B, sink 3 + 12, 832x480) with
its text encoder swapped for `CausVidTestConditioning` at the model's text width (a seeded random prompt, the
template's first timeline line as its text), `seconds` and `speed` from the command line, `weight_dtype`
"default". It runs `--repeats` times with seeds seed, seed + 1, ...: ComfyUI keeps the loaded model and its
CUDA graphs, so run 1 shows the first use (compiles, captures) and the later runs the steady state.

Then ComfyUI's models are unloaded and the library path runs the same videos: the same checkpoint file through
`causal.load_model`, the same VAE file through `comfy.sd.VAE`, the test node's conditioning tensor, the same
schedule, cache policy, seeds and compute dtype; `fast` = compiled kernels + CUDA graphs (`causal.CudaGraphs`,
kept across repeats), `exact` = graphs only (none on the CPU). The settings the node handed `causal.generate`
are recorded and the library's must be the same, or the run stops.

Measured the same way on both paths (the pack's `Mp4Writer.write` and `CausVidStreamToVideo.execute` wrapped
in this process; product code unchanged): first_frame_s = from the stream node's execute start (library: the
run's start) to the end of the first write into the mp4; fps = frames written after the first write / time
from the first to the last write; block_s = time between consecutive writes (one block each); wall_s = the
node's execute (library: the run); peak device memory = torch.cuda.max_memory_allocated over the run; host
RSS now and peak. Node runs also list per-node seconds (between the executor's `executing` messages). Both
paths' mp4s of one seed are compared byte for byte (same_mp4).

Each run also reports `threads` (bench/timeline.py): per steady block, the sampler's own time, its wait for
room in the decode queue, the decode, the write, and the decoder's idle time. `--profile-seconds S` adds one run
per path of S seconds under torch.profiler (every thread, CUDA syncs): trace_node.json.gz / trace_library.json.gz
beside --json and a summary: GPU busy time per CUDA stream over the steady blocks, how much the two busiest
overlapped, each thread's slowest CUDA runtime calls. `--vae taew2_1 | lighttaew2_1` streams through a tiny
decoder (real size, random weights) instead of the Wan VAE.

`--check-latents` (on by default): CausVid Sampler (not the stream) + SaveLatent through the executor for
`--check-seconds` of video with the stream's settings, and `causal.generate` with the same; reports whether the
VAE-space latents are bitwise equal (torch.equal) and their largest difference. The default 5 s (21 latent
frames) runs past the sink window, so eviction is compared too.

The server stand-in (`BenchServer`) gives the executor what it uses of ComfyUI's PromptServer: `client_id`,
`last_node_id`, `last_prompt_id`, `sockets_metadata` (one client that takes previews with metadata, as the
current frontend does) and `send_sync`, which records the messages and hands preview images to a thread that
resizes and JPEG-encodes them, as the server does on its event-loop thread (nothing is sent anywhere). The
progress hook that `main.py` installs is replaced by `progress_hook` (same duties: interrupt check, progress
registry, `progress` message).

`--deadline-s` (from the start of the script): a prompt still running then is stopped with ComfyUI's interrupt
(a stream's mp4 stays playable), a library run at its next block; later steps that would not fit are skipped
and say so. `--json` is rewritten after every step, `--out` gets a markdown section as in bench/RESULTS.md.

Needs a ComfyUI tree (`--comfyui`) and, besides torch, what ComfyUI's core imports (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import functools
import gc
import hashlib
import io
import json
import logging
import math
import os
import queue
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# ComfyUI's top-level modules (nodes, server, execution, utils, ...) must not be shadowed: drop this script's
# folder from the path; the repository root (for `causal`, `bench`, `tools`) goes after ComfyUI's root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

GIB = 1024 ** 3
CLIENT_ID = "causvid-bench"
TEMPLATE = REPO / "tools" / "workflows" / "api" / "causvid_stream_ten_minutes.json"
TEST_NODES = REPO / "tests" / "comfy_test_nodes"
STREAM_NODE, LOADER_NODE, VAE_NODE, TEXT_NODE, CLIP_NODE = "5", "1", "3", "4", "2"
SAMPLER_NODE, SAVE_LATENT_NODE = "6", "7"
DEFAULT_PRESET = {"1.3B": "Self-Forcing / LongLive 1.3B", "14B": "LightX2V CausVid 14B", "5B": "LongLive 2.0 5B"}
LAYOUT = {"1.3B": "comfyui", "14B": "lightx2v_safetensors", "5B": "comfyui", "tiny": "comfyui"}
SIZE = {"1.3B": (832, 480), "14B": (832, 480), "5B": (1280, 704), "tiny": (64, 48)}
"""(width, height) of the stream per model: the trained sizes (the 5B: LongLive 2.0's 1280x704)."""
VAES = ("wan", "taew2_1", "lighttaew2_1", "wan2_2", "taew2_2")
"""The Wan 2.1 VAE and its tiny decoders (16 channels); the Wan 2.2 VAE and its tiny decoder (48: the 5B)."""
TRACE_MAX_BYTES = 15 * 2 ** 20
"""A compressed profiler trace larger than this is deleted (its summary stays in the report)."""
VAE_STD = 0.02
"""Weight scale of the random VAE (as bench/stream.py): its own initialisation decodes to NaN."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", default=str(REPO / ".comfyui" / "ComfyUI"), help="a ComfyUI tree (0.3.75)")
    p.add_argument("--model", choices=tuple(DEFAULT_PRESET), default="1.3B")
    p.add_argument("--tiny", action="store_true", help="the tiny DiT and VAE at 64x48 (CPU smoke test)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--vae", choices=VAES, default="wan",
                   help="the stream's decoder: the Wan 2.1 VAE or a tiny one (real size, random weights)")
    p.add_argument("--seconds", type=float, default=60.0, help="video length of each stream run")
    p.add_argument("--speed", choices=("fast", "exact"), default="fast", help="the stream node's speed widget")
    p.add_argument("--preset", default=None, help="schedule preset (default: the template's for 1.3B, LightX2V "
                                                  "CausVid 14B for 14B)")
    p.add_argument("--repeats", type=int, default=2, help="runs per path (seeds seed, seed + 1, ...)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--check-latents", action=argparse.BooleanOptionalAction, default=True,
                   help="compare CausVid Sampler's latents with causal.generate's, bit for bit")
    p.add_argument("--check-seconds", type=float, default=5.0)
    p.add_argument("--allocator", choices=("comfyui", "default"), default="comfyui",
                   help="comfyui: what `python main.py` picks (cudaMallocAsync on CUDA builds); default: "
                        "PyTorch's caching allocator (--disable-cuda-malloc)")
    p.add_argument("--deadline-s", type=float, default=540.0, help="stop cleanly this long after the start")
    p.add_argument("--work-dir", default=None, help="models/output folder (default: a temporary one, removed)")
    p.add_argument("--profile-seconds", type=float, default=0.0,
                   help="after the timed runs, one more run per path this long under torch.profiler: a Chrome "
                        "trace (gzip) beside --json and a summary of GPU busy time per stream (0: off)")
    p.add_argument("--cap-gib", type=float, default=None,
                   help="run as on a card of this size: PyTorch may allocate at most this much "
                        "(set_per_process_memory_fraction) and ComfyUI keeps the rest free (its --reserve-vram)")
    p.add_argument("--attention", choices=("auto", "sdpa"), default="auto",
                   help="auto: the node's choice (FlashAttention-4 where installed and it runs); sdpa: SDPA")
    p.add_argument("--kv-cache", choices=("bf16", "fp8"), default="bf16", help="the stream node's kv_cache widget")
    p.add_argument("--json", default=None, help="everything measured (rewritten after each step)")
    p.add_argument("--out", default=None, help="a markdown section (written)")
    args = p.parse_args(argv)
    if args.cap_gib is not None and args.device != "cuda":
        p.error("--cap-gib caps a CUDA device")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.tiny and args.model != "1.3B":
        p.error("--tiny replaces the model: leave --model at 1.3B")
    args.preset = args.preset or DEFAULT_PRESET[args.model]
    if (args.model == "5B") != args.vae.endswith("2_2"):
        p.error(f"the {args.model} model's latents need a {'Wan 2.2' if args.model == '5B' else 'Wan 2.1'} decoder: "
                f"--vae {'wan2_2 or taew2_2' if args.model == '5B' else 'wan, taew2_1 or lighttaew2_1'}")
    return args


# ------------------------------------------------------------------------------------------------------------
# ComfyUI in this process


def import_comfyui(comfy_dir: Path, *, cpu: bool, allocator: str) -> None:
    """Make ComfyUI importable and set it up as `main.py` does before torch is imported: default arguments, `--cpu`
    when asked, and (allocator 'comfyui') its `cuda_malloc` module, which chooses the CUDA allocator backend."""
    if not (comfy_dir / "execution.py").is_file():
        raise FileNotFoundError(f"no ComfyUI tree at {comfy_dir} (execution.py missing)")
    if "torch" in sys.modules and allocator == "comfyui":
        raise RuntimeError("torch is imported already: ComfyUI's allocator choice cannot apply (use "
                           "--allocator default, or run this script in a fresh process)")
    for path in (str(REPO), str(comfy_dir)):
        if path in sys.path:
            sys.path.remove(path)
    sys.path[:0] = [str(comfy_dir), str(REPO)]
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu
    if allocator == "comfyui":
        import cuda_malloc  # noqa: F401  (sets PYTORCH_CUDA_ALLOC_CONF as main.py does)


class BenchServer:
    """What PromptExecutor, its progress handler and the progress hook use of ComfyUI's PromptServer. Messages are
    recorded (progress ones only counted); preview images are resized and JPEG-encoded on a worker thread, as the
    real server encodes them on its event-loop thread, and then dropped."""

    def __init__(self) -> None:
        from protocol import BinaryEventTypes

        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.sockets_metadata = {CLIENT_ID: {"feature_flags": {"supports_preview_metadata": True}}}
        self.events: list[tuple[float, str, dict]] = []
        self.counts: dict[str, int] = {}
        self._binary = {BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA: lambda data: data[0],
                        BinaryEventTypes.UNENCODED_PREVIEW_IMAGE: lambda data: data}
        self._images: queue.Queue = queue.Queue()
        self._encoder = threading.Thread(target=self._encode, name="bench-previews", daemon=True)
        self._encoder.start()

    def send_sync(self, event, data, sid=None) -> None:
        name = f"binary:{event}" if isinstance(event, int) else event
        self.counts[name] = self.counts.get(name, 0) + 1
        if isinstance(event, int):
            if event not in self._binary:
                raise ValueError(f"the bench server does not know binary event {event}")
            self._images.put(self._binary[event](data))
        elif event not in ("progress", "progress_state"):
            self.events.append((time.perf_counter(), event, data))

    def _encode(self) -> None:
        from PIL import Image, ImageOps

        while (item := self._images.get()) is not None:
            kind, image, max_size = item
            if max_size is not None:
                image = ImageOps.contain(image, (max_size, max_size), Image.Resampling.BILINEAR)
            image.save(io.BytesIO(), format="PNG" if kind == "PNG" else "JPEG", quality=95, compress_level=1)

    def close(self) -> None:
        self._images.put(None)
        self._encoder.join()


def progress_hook(server: BenchServer) -> Callable:
    """The ProgressBar hook (main.py installs one of the same duties): stop on Cancel, update the progress
    registry (which sends progress_state and the preview), send `progress`."""
    import comfy.model_management
    from comfy_execution.progress import get_progress_state
    from comfy_execution.utils import get_executing_context

    def hook(value, total, preview_image, prompt_id=None, node_id=None) -> None:
        context = get_executing_context()
        prompt_id = prompt_id or (context.prompt_id if context else server.last_prompt_id)
        node_id = node_id or (context.node_id if context else server.last_node_id)
        comfy.model_management.throw_exception_if_processing_interrupted()
        get_progress_state().update_progress(node_id, value, total, preview_image)
        server.send_sync("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id},
                         server.client_id)

    return hook


class PromptFailed(RuntimeError):
    pass


@dataclass
class Executed:
    prompt_id: str
    seconds: float
    interrupted: bool
    outputs: dict
    node_s: dict[str, float]
    """Seconds per executed node (class_type), from one `executing` message to the next."""
    messages: dict[str, int]
    """Messages sent to the client by kind (binary:4 = a preview image with metadata)."""


class Comfy:
    """ComfyUI's executor with the core nodes, this pack and the test pack registered, and a queue-like `run`."""

    def __init__(self, *, extra_nodes: bool = False) -> None:
        """`extra_nodes`: also ComfyUI's built-in extra nodes (comfy_extras: CreateVideo, SaveVideo, ...), which the
        example workflows other than the stream template save with."""
        import comfy.utils
        import execution
        import nodes

        self.nodes, self.execution = nodes, execution
        asyncio.run(nodes.init_public_apis())
        if extra_nodes:
            asyncio.run(nodes.init_builtin_extra_nodes())
        builtin = set(nodes.NODE_CLASS_MAPPINGS)
        self.pack = self._load(REPO, builtin)
        self._load(TEST_NODES, builtin)
        self.server = BenchServer()
        comfy.utils.set_progress_bar_global_hook(progress_hook(self.server))
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.CLASSIC,
                                                 cache_args={"lru": 0, "ram": 0})

    def _load(self, folder: Path, builtin: set[str]) -> str:
        """Register a node folder as ComfyUI registers custom_nodes/<folder>; returns its module name."""
        if not asyncio.run(self.nodes.load_custom_node(str(folder), ignore=builtin, module_parent="custom_nodes")):
            raise RuntimeError(f"ComfyUI could not load the node pack {folder} (its log above says why)")
        return str(folder).replace(".", "_x_")  # the module name load_custom_node gives a folder

    def module(self, name: str):
        """A module of this pack as ComfyUI imported it (`nodes.streaming` -> <pack>.nodes.streaming)."""
        return sys.modules[f"{self.pack}.{name}"]

    def run(self, prompt: dict) -> Executed:
        """Validate and execute `prompt` as the server's queue would; raise PromptFailed on a validation or
        execution error. An interrupt (Cancel, the deadline) is not an error: `interrupted` says so."""
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        if not valid:
            raise PromptFailed(f"ComfyUI rejected the prompt: {error}; {json.dumps(node_errors)[:2000]}")
        self.server.last_prompt_id = prompt_id
        first_event, counts = len(self.server.events), dict(self.server.counts)
        start = time.perf_counter()
        self.executor.execute(prompt, prompt_id, {"client_id": CLIENT_ID}, outputs)
        seconds = time.perf_counter() - start
        events = self.server.events[first_event:]
        interrupted = any(e == "execution_interrupted" for _, e, _ in events)
        if not interrupted and not any(e == "execution_success" for _, e, _ in events):
            failure = next((d for _, e, d in events if e == "execution_error"), {})
            raise PromptFailed(f"{failure.get('node_type')} failed: {failure.get('exception_type')}: "
                               f"{failure.get('exception_message')}\n{''.join(failure.get('traceback', []))}")
        steps = [(t, d["node"]) for t, e, d in events if e == "executing" and d.get("node") is not None]
        end = next((t for t, e, _ in reversed(events) if e.startswith("execution_")), time.perf_counter())
        node_s: dict[str, float] = {}  # per node type, summed over its nodes
        for (t, node), later in zip(steps, [t for t, _ in steps[1:]] + [end]):
            kind = prompt[node]["class_type"]
            node_s[kind] = round(node_s.get(kind, 0.0) + later - t, 4)
        messages = {k: n - counts.get(k, 0) for k, n in self.server.counts.items() if n > counts.get(k, 0)}
        return Executed(prompt_id, seconds, interrupted, self.executor.history_result["outputs"], node_s, messages)


# ------------------------------------------------------------------------------------------------------------
# Timing


@dataclass
class Writes:
    """One run's writes into its mp4: (time, frames written so far) after each `Mp4Writer.write`."""

    start: float | None = None
    end: float | None = None
    times: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    paths: set[str] = field(default_factory=set)


class Recorder:
    """Wraps the pack's `Mp4Writer.write` and `CausVidStreamToVideo.execute` (this process only) so that every
    write and the stream node's start and end land in the current run's `Writes`."""

    def __init__(self, writer_class: type, stream_node: type) -> None:
        self.current: Writes | None = None
        write = writer_class.write

        @functools.wraps(write)
        def timed_write(writer, frames):
            write(writer, frames)
            if self.current is not None:
                self.current.times.append(time.perf_counter())
                self.current.frames.append(writer.frames)
                self.current.paths.add(str(writer.path))

        writer_class.write = timed_write
        execute = stream_node.execute.__func__

        @functools.wraps(execute)
        def timed_execute(cls, *args, **kwargs):
            if self.current is not None:
                self.current.start = time.perf_counter()
            try:
                return execute(cls, *args, **kwargs)
            finally:
                if self.current is not None:
                    self.current.end = time.perf_counter()

        stream_node.execute = classmethod(timed_execute)

    def begin(self) -> Writes:
        self.current = Writes()
        return self.current

    def finish(self) -> Writes:
        writes, self.current = self.current, None
        return writes


def rss_gib() -> tuple[float, float]:
    """(resident now, peak resident) of this process, GiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / GIB, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def summarize(writes: Writes, device, seed: int, stopped: str | None) -> dict[str, Any]:
    """A run's numbers from its writes (see the module docstring)."""
    import torch

    times, frames = writes.times, writes.frames
    blocks = [b - a for a, b in zip(times, times[1:])]
    later = blocks[1:] or blocks
    (path,) = writes.paths or {None}
    rss, peak_rss = rss_gib()
    cuda = device.type == "cuda"
    return {
        "seed": seed,
        "stopped": stopped,
        "frames": frames[-1] if frames else 0,
        "writes": len(times),
        "first_frame_s": times[0] - writes.start if times else None,
        "fps": (frames[-1] - frames[0]) / (times[-1] - times[0]) if len(times) > 1 else None,
        "block_s": [round(b, 4) for b in blocks],
        "median_block_s": statistics.median(later) if later else None,
        "max_block_s": max(later) if later else None,
        "wall_s": (writes.end or time.perf_counter()) - writes.start,
        "peak_device_gib": torch.cuda.max_memory_allocated(device) / GIB if cuda else None,
        "host_rss_gib": rss,
        "host_peak_rss_gib": peak_rss,
        "mp4": path,
        "mp4_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None,
    }


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


class Deadline(Exception):
    """`--deadline-s` came during a step."""


def cap_memory(device, gib: float | None, base_reserved: int) -> str:
    """Run as on a card of `gib` GiB: PyTorch's allocator refuses more (what a smaller card's driver would:
    set_per_process_memory_fraction) and ComfyUI's model management plans for it (its EXTRA_RESERVED_VRAM =
    `base_reserved`, ComfyUI's own value at import, + the rest of this card, as --reserve-vram sets). None: the
    whole card and ComfyUI's own reserve again. Returns a line that says so."""
    import torch

    import comfy.model_management as mm

    total = torch.cuda.get_device_properties(device).total_memory
    if gib is None:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        mm.EXTRA_RESERVED_VRAM = base_reserved
        return f"uncapped: {total / GIB:.1f} GiB (ComfyUI reserves {base_reserved / GIB:.2f} GiB)"
    if gib * GIB >= total:
        raise ValueError(f"a cap of {gib} GiB is not below this card's {total / GIB:.1f} GiB")
    torch.cuda.set_per_process_memory_fraction(gib * GIB / total, device)
    mm.EXTRA_RESERVED_VRAM = int(total - gib * GIB) + base_reserved
    return f"capped at {gib} GiB of {total / GIB:.1f} (ComfyUI reserves {mm.EXTRA_RESERVED_VRAM / GIB:.1f} GiB)"


# ------------------------------------------------------------------------------------------------------------
# Files and prompts


def write_models(models: Path, args: argparse.Namespace, device) -> dict[str, Any]:
    """Random-weight DiT and VAE files in `models`/diffusion_models and `models`/vae; returns what was written."""
    import torch

    import causal
    from causal.synthetic import LAYOUTS, random_state_dict, write_checkpoint
    from tools.tiny import TINY

    kind = "tiny" if args.tiny else args.model
    config = TINY if args.tiny else causal.PRESETS[args.model]
    t0 = time.perf_counter()
    dit = models / "diffusion_models" / f"bench_{kind.replace('.', '_')}_{LAYOUTS[LAYOUT[kind]]}"
    dit.parent.mkdir(parents=True, exist_ok=True)
    state_dict = random_state_dict(config, dtype=torch.bfloat16, seed=0, device=device)
    write_checkpoint(state_dict, dit, LAYOUT[kind])
    del state_dict
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    t1 = time.perf_counter()
    vae = write_decoder(models, args.vae, args.tiny)
    return {"dit": str(dit), "dit_layout": LAYOUT[kind], "dit_gb": round(dit.stat().st_size / 1e9, 2),
            "dit_write_s": round(t1 - t0, 1), "vae": str(vae), "vae_mb": round(vae.stat().st_size / 1e6, 1),
            "config": config.name, "text_dim": config.text_dim}


def write_decoder(models: Path, kind: str, tiny: bool) -> Path:
    """A random-weight decoder file in `models`/vae: the Wan 2.1 VAE (`kind` 'wan'; dim 8 when `tiny`) or a tiny
    decoder (taew2_1 / lighttaew2_1, real size); returns its path."""
    import torch
    from safetensors.torch import save_file

    from comfy.ldm.wan.vae import WanVAE
    from tools.standins import random_taehv_state_dict

    if kind in ("wan2_2", "taew2_2"):  # ComfyUI builds the Wan 2.2 VAE at its one size, so no tiny version
        from comfy.ldm.wan.vae2_2 import WanVAE as Wan22VAE
        from comfy.taesd.taehv import TAEHV

        vae = models / "vae" / f"bench_{kind}.safetensors"
        module = (Wan22VAE(dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                           temperal_downsample=[False, True, True]) if kind == "wan2_2" else
                  TAEHV(latent_channels=48, show_progress_bar=False))
        g = torch.Generator().manual_seed(0)
        dtype = torch.bfloat16 if kind == "wan2_2" else torch.float16
        weights = {k: (torch.randn(v.shape, generator=g) * VAE_STD).to(dtype)
                   for k, v in module.state_dict().items()}
    elif kind == "wan":
        vae = models / "vae" / f"bench_wan_2.1_vae{'_tiny' if tiny else ''}.safetensors"
        wan = WanVAE(dim=8 if tiny else 96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                     temperal_downsample=[False, True, True])
        g = torch.Generator().manual_seed(0)
        weights = {k: (torch.randn(v.shape, generator=g) * VAE_STD).to(torch.bfloat16)
                   for k, v in wan.state_dict().items()}
    else:  # VAELoader tells the two tiny decoders apart by dtype (fp16: taew2_1)
        vae = models / "vae" / f"bench_{kind}.safetensors"
        weights = random_taehv_state_dict(0, torch.bfloat16 if kind == "lighttaew2_1" else torch.float16)
    vae.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(vae))
    return vae


def template_text(template: dict) -> str:
    """The template's first timeline line without its time: one prompt (the test conditioning has no timeline;
    the template's next prompt starts at 150 s)."""
    first = template[TEXT_NODE]["inputs"]["text"].splitlines()[0]
    return first.split(":", 1)[1].strip()


def stream_prompt(template: dict, args: argparse.Namespace, files: dict, size: tuple[int, int], seed: int) -> dict:
    """The stream template with the test conditioning for the text encoder, the bench's files and settings."""
    prompt = json.loads(json.dumps(template))
    del prompt[CLIP_NODE]
    prompt[TEXT_NODE] = {"class_type": "CausVidTestConditioning",
                         "inputs": {"text": template_text(template), "width": files["text_dim"]}}
    prompt[LOADER_NODE]["inputs"].update(ckpt_name=Path(files["dit"]).name, weight_dtype="default")
    prompt[VAE_NODE]["inputs"]["vae_name"] = Path(files["vae"]).name
    width, height = size
    prompt[STREAM_NODE]["inputs"].update(width=width, height=height, seconds=args.seconds, speed=args.speed,
                                         seed=seed, preset=args.preset, filename_prefix="bench/node_stream",
                                         kv_cache=args.kv_cache)
    if args.model == "5B":  # its own cache and 8-frame blocks: 125 frames = 32 latent frames, its cache's size
        prompt[STREAM_NODE]["inputs"].update(cache="preset default", window=0, sink_frames=-1, length=125)
    return prompt


def check_prompt(stream: dict, seconds: float, seed: int) -> dict:
    """CausVid Sampler with the stream node's settings for `seconds`, its latents saved (SaveLatent)."""
    prompt = {k: v for k, v in stream.items() if k in (LOADER_NODE, TEXT_NODE)}
    inputs = {k: v for k, v in stream[STREAM_NODE]["inputs"].items() if k not in ("vae", "filename_prefix")}
    inputs.update(seconds=seconds, seed=seed)
    prompt[SAMPLER_NODE] = {"class_type": "CausVidSampler", "inputs": inputs}
    prompt[SAVE_LATENT_NODE] = {"class_type": "SaveLatent",
                                "inputs": {"samples": [SAMPLER_NODE, 0], "filename_prefix": "bench/node_check"}}
    return prompt


def describe_call(video, schedule, policy, compute) -> dict[str, str]:
    """The settings of a `causal.generate` call that both paths must share (reprs: the node's `causal` is the
    pack's copy of the package, the library's the top-level one)."""
    return {"height": str(video.height), "width": str(video.width), "schedule": repr(schedule),
            "policy": repr(policy), "num_frames": str(video.num_frames),
            "total_frames": str(video.total_frames), "dtype": str(compute.dtype),
            "device": str(compute.device), "fused_kernels": str(compute.fused_kernels),
            "flash_attention": str(compute.flash_attention),
            "graphs": str(compute.graphs is not None), "kv_cache_fp8": str(compute.kv_cache_fp8)}


def weight_dtypes(network) -> dict[str, int]:
    """Parameters per storage dtype of a DiT (recorded, not compared: ComfyUI may keep some in another dtype)."""
    counts: dict[str, int] = {}
    for p in network.parameters():
        counts[str(p.dtype)] = counts.get(str(p.dtype), 0) + p.numel()
    return counts


# ------------------------------------------------------------------------------------------------------------
# The run


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.perf_counter()
        self.report: dict[str, Any] = {"settings": {}, "environment": {}, "files": {}, "node": {"runs": []},
                                       "library": {"runs": []}, "latents": None, "skipped": [], "errors": []}
        self.node_calls: list[dict[str, str]] = []
        self.node_graphs: dict[str, int] | None = None
        """Graph captures and replays of the node's last `generate` call (None without CUDA graphs)."""

    # -- bookkeeping ------------------------------------------------------------------------------------------

    def left_s(self) -> float:
        return self.args.deadline_s - (time.perf_counter() - self.t0)

    def fits(self, what: str, estimate_s: float | None) -> bool:
        """Whether a step estimated at `estimate_s` (None: unknown, try) fits before the deadline; records a skip."""
        if self.left_s() > 0 and (estimate_s is None or estimate_s < self.left_s()):
            return True
        self.report["skipped"].append({"step": what, "left_s": round(self.left_s(), 1),
                                       "estimate_s": estimate_s and round(estimate_s, 1)})
        needs = "" if estimate_s is None else f", it needs about {estimate_s:.0f} s"
        log(f"skipped {what}: {self.left_s():.0f} s left{needs}")
        return False

    def step(self, name: str, body: Callable[[], None]) -> bool:
        """Run one step; an error is recorded (and printed), not raised, so that later steps still run; a step that
        ran into the deadline counts as skipped."""
        try:
            body()
            return True
        except Deadline as e:
            self.report["skipped"].append({"step": name, "left_s": round(self.left_s(), 1), "why": str(e)})
            log(f"{name} stopped: {e}")
            return False
        except Exception as e:  # noqa: BLE001 (recorded, the exit status says so)
            self.report["errors"].append({"step": name, "error": f"{type(e).__name__}: {e}",
                                          "traceback": traceback.format_exc()})
            log(f"{name} FAILED: {type(e).__name__}: {e}\n{traceback.format_exc()}")
            return False
        finally:
            self.write_json()

    def write_json(self) -> None:
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(self.report, indent=1, default=str))

    # -- main -------------------------------------------------------------------------------------------------

    def main(self) -> int:
        args = self.args
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        import_comfyui(Path(args.comfyui).resolve(), cpu=args.device == "cpu", allocator=args.allocator)
        import torch

        import comfy.model_management as mm

        import causal
        from bench.environment import environment

        self.torch, self.mm, self.causal = torch, mm, causal
        self.device = mm.get_torch_device()
        if torch.device(args.device).type != self.device.type:
            raise RuntimeError(f"asked for {args.device}, ComfyUI picked {self.device}")
        if args.cap_gib is not None:
            self.cap(args.cap_gib)
        work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="causvid_node_bench_"))
        self.size = SIZE["tiny" if args.tiny else args.model]
        template = json.loads(TEMPLATE.read_text())
        import comfyui_version

        env = environment(self.device)
        env.update(comfyui=comfyui_version.__version__, allocator=torch.cuda.get_allocator_backend()
                   if self.device.type == "cuda" else None,
                   alloc_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF"))
        self.report["environment"] = env
        self.report["settings"] = {
            "model": "tiny" if args.tiny else args.model, "size": "{}x{}".format(*self.size),
            "seconds": args.seconds, "speed": args.speed, "preset": args.preset, "repeats": args.repeats,
            "seed": args.seed, "check_latents": args.check_latents, "check_seconds": args.check_seconds,
            "vae": args.vae, "attention": args.attention, "cap_gib": args.cap_gib, "kv_cache": args.kv_cache, "allocator": args.allocator,
            "deadline_s": args.deadline_s, "workflow": TEMPLATE.name,
            "cache": "the preset's" if args.model == "5B" else
            "{cache} {sink_frames} + {window}".format(**template[STREAM_NODE]["inputs"])}
        try:
            if self.step("setup", lambda: self.setup(work)):
                with self.attention():
                    self.phases(template, self.report["files"])
        finally:
            if hasattr(self, "comfy"):
                self.comfy.server.close()
            self.write_json()
            self.finish()
            if not args.work_dir:
                shutil.rmtree(work, ignore_errors=True)
        return 1 if self.report["errors"] else 0

    @contextlib.contextmanager
    def attention(self):
        """`--attention sdpa`: the node's `fast` keeps SDPA even where FlashAttention-4 runs (its choice is
        `nodes.speed._flash_attention`; the library path does what the node did, `flash_attention` in the call)."""
        speed = self.comfy.module("nodes.speed")
        choose = speed._flash_attention
        if self.args.attention == "sdpa":
            speed._flash_attention = lambda device: False
        try:
            yield
        finally:
            speed._flash_attention = choose

    def cap(self, gib: float) -> None:
        log(cap_memory(self.device, gib, self.mm.EXTRA_RESERVED_VRAM))

    def setup(self, work: Path) -> None:
        """The model files in `work`/models (registered with folder_paths, first), the output folder, ComfyUI's
        executor with the nodes registered, and the timing wrappers."""
        import folder_paths

        files = self.report["files"] = write_models(work / "models", self.args, self.device)
        log(f"wrote {files['dit']} ({files['dit_gb']} GB, {files['dit_write_s']} s) and {files['vae']}")
        for kind in ("diffusion_models", "vae"):
            folder_paths.add_model_folder_path(kind, str(work / "models" / kind), is_default=True)
        for sub, setter in (("output", folder_paths.set_output_directory), ("temp", folder_paths.set_temp_directory)):
            (work / sub).mkdir(parents=True, exist_ok=True)
            setter(str(work / sub))
        self.output = work / "output"
        self.comfy = Comfy()
        streaming = self.comfy.module("nodes.streaming")
        self.recorder = Recorder(streaming.Mp4Writer, self.comfy.module("nodes.stream").CausVidStreamToVideo)
        from bench.timeline import Timeline  # imports torch: only after ComfyUI chose the allocator

        self.timeline = Timeline(streaming)
        self.record_node_calls()

    def record_node_calls(self) -> None:
        """Wrap the pack's `generate` (as its sampler module calls it) to keep the settings each node run used."""
        sampler = self.comfy.module("nodes.sampler")
        generate = sampler.generate

        @functools.wraps(generate)
        def recorded(network, timeline, video, schedule, policy=None, **kwargs):
            self.node_calls.append(describe_call(video, schedule, policy, kwargs["compute"]))
            self.report["node"]["weight_dtypes"] = weight_dtypes(network)
            graphs = kwargs["compute"].graphs
            before = (graphs.captures, graphs.replays) if graphs is not None else None
            try:
                return generate(network, timeline, video, schedule, policy, **kwargs)
            finally:
                self.node_graphs = None if before is None else \
                    {"graph_captures": graphs.captures - before[0], "graph_replays": graphs.replays - before[1]}

        sampler.generate = recorded

    def phases(self, template: dict, files: dict) -> None:
        args = self.args
        prompts = [stream_prompt(template, args, files, self.size, args.seed + i) for i in range(args.repeats)]
        for i, prompt in enumerate(prompts):
            runs = self.report["node"]["runs"]
            if not self.fits(f"node run {i + 1}", runs[-1]["wall_s"] if runs else None):
                break
            if not self.step(f"node run {i + 1}", lambda p=prompt: self.node_stream(p)):
                break
        if args.profile_seconds and self.report["node"]["runs"] and self.fits("node profile", None):
            profile_prompt = json.loads(json.dumps(prompts[-1]))
            # a seed of its own: the same inputs as the last run would be ComfyUI's cached result
            profile_prompt[STREAM_NODE]["inputs"].update(seconds=args.profile_seconds, seed=args.seed + args.repeats)
            self.step("node profile", lambda: self.node_stream(profile_prompt, profile=True))
        if self.node_calls:
            self.report["node"]["generate"] = self.node_calls[0]
        check = check_prompt(prompts[0], args.check_seconds, args.seed)
        if args.check_latents and self.fits("node latents check", self.check_estimate()):
            self.step("node latents check", lambda: self.node_check(check))
        self.step("unload ComfyUI's models", self.unload)
        if self.fits("library model load", None):
            self.step("library model load", lambda: self.library_setup(files, prompts[0]))
        if hasattr(self, "lib"):
            for i in range(args.repeats):
                runs = self.report["library"]["runs"]
                estimate = (runs or self.report["node"]["runs"] or [{}])[-1].get("wall_s")
                if not self.fits(f"library run {i + 1}", estimate):
                    break
                if not self.step(f"library run {i + 1}", lambda s=args.seed + i: self.library_stream(s)):
                    break
            if args.profile_seconds and self.report["library"]["runs"] and self.fits("library profile", None):
                self.step("library profile", lambda: self.library_stream(args.seed + args.repeats,
                                                                         args.profile_seconds))
            if args.check_latents and self.fits("library latents check", self.check_estimate()):
                self.step("library latents check", self.library_check)
        self.compare()

    def check_estimate(self) -> float | None:
        """Seconds the latents check should take: its video at the stream's frames per second, plus a margin."""
        runs = [r for r in self.report["node"]["runs"] if r.get("fps")]
        return None if not runs else 10 + self.args.check_seconds * 16 / runs[-1]["fps"]

    # -- node path --------------------------------------------------------------------------------------------

    def execute(self, prompt: dict) -> Executed:
        """Run a prompt, interrupted (ComfyUI's Cancel) when the deadline comes."""
        fired = threading.Event()

        def interrupt() -> None:
            fired.set()
            self.mm.interrupt_current_processing(True)

        timer = threading.Timer(max(self.left_s(), 0), interrupt)
        timer.start()
        try:
            executed = self.comfy.run(prompt)
        finally:
            timer.cancel()
        if fired.is_set() and not executed.interrupted:  # fired after the node's last check: clear the flag
            self.mm.interrupt_current_processing(False)
        return executed

    @contextlib.contextmanager
    def profiled(self, path: str, on: bool) -> Iterator[None]:
        """With `on`: the body under torch.profiler (CPU and CUDA); its trace goes beside --json as
        trace_<path>.json.gz and a summary of its steady blocks (bench/timeline.py) into the report."""
        if not on:
            yield
            return
        from bench.timeline import load_trace, steady_window, trace_summary

        torch = self.torch
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        # every thread's ops (the decoder's too), and the CUDA synchronisations: who waited for what
        config = torch._C._profiler._ExperimentalConfig(profile_all_threads=True, enable_cuda_sync_events=True)
        with torch.profiler.profile(activities=activities, experimental_config=config) as prof:
            yield
        folder = Path(self.args.json).parent if self.args.json else self.output
        raw = folder / f"trace_{path}.json"
        prof.export_chrome_trace(str(raw))
        events = load_trace(raw)
        with open(raw, "rb") as f, gzip.open(f"{raw}.gz", "wb") as g:
            shutil.copyfileobj(f, g)
        raw.unlink()
        kept = Path(f"{raw}.gz").stat().st_size <= TRACE_MAX_BYTES
        if not kept:  # too big to fetch from a lent machine: the summary stays
            Path(f"{raw}.gz").unlink()
        window = steady_window(events)
        self.report[path]["profile"] = {"trace": f"{raw.name}.gz" if kept else None, "steady_window": window is not None,
                                        **trace_summary(events, window)}
        log(f"{path} profile: {json.dumps(self.report[path]['profile'])[:1500]}")

    def node_stream(self, prompt: dict, profile: bool = False) -> None:
        seed = prompt[STREAM_NODE]["inputs"]["seed"]
        reset_peak(self.device)
        writes = self.recorder.begin()
        threads = self.timeline.begin()
        try:
            with self.profiled("node", profile):
                executed = self.execute(prompt)
        finally:
            self.recorder.finish()
            self.timeline.finish()
        if writes.start is None:
            raise RuntimeError(f"CausVid Stream to Video did not run (cached?): {executed.node_s}")
        stopped = "deadline" if executed.interrupted else None
        run = summarize(writes, self.device, seed, stopped)
        run.update(prompt_s=executed.seconds, node_s=executed.node_s, messages=executed.messages,
                   threads=threads.summary(), **(self.node_graphs or {}))
        if profile:
            self.report["node"]["profile"]["run"] = run
            return
        self.report["node"]["runs"].append(run)
        log_run("node", run)

    def node_check(self, prompt: dict) -> None:
        from safetensors.torch import load_file

        executed = self.execute(prompt)
        if executed.interrupted:
            raise Deadline("the node's latents check ran into the deadline")
        (saved,) = executed.outputs[SAVE_LATENT_NODE]["latents"]
        path = self.output / saved["subfolder"] / saved["filename"]
        self.node_latents = load_file(str(path))["latent_tensor"]
        self.report["node"]["check"] = {"prompt_s": executed.seconds, "node_s": executed.node_s,
                                        "shape": list(self.node_latents.shape), "generate": self.node_calls[-1]}
        log(f"node latents check: {list(self.node_latents.shape)} in {executed.seconds:.1f} s")

    def unload(self) -> None:
        """Free the device for the library path (the node's model stays in ComfyUI's cache, on the CPU)."""
        self.mm.unload_all_models()
        gc.collect()
        self.mm.soft_empty_cache()

    # -- library path -----------------------------------------------------------------------------------------

    def library_setup(self, files: dict, stream: dict) -> None:
        """The library's model, VAE, conditioning and settings: the node's, made again."""
        torch, causal = self.torch, self.causal
        import comfy.latent_formats
        import comfy.sd
        import comfy.utils

        from causal import kernels

        inputs = stream[STREAM_NODE]["inputs"]
        node = self.node_calls[0] if self.node_calls else None
        cuda = self.device.type == "cuda"
        # the node's compute dtype (ComfyUI's choice: bf16 on a GPU, float32 on the CPU)
        if node is not None:
            dtype = getattr(torch, node["dtype"].removeprefix("torch."))
        else:
            dtype = torch.bfloat16 if cuda else torch.float32
            log(f"library: no node run to take the compute dtype from; {dtype}, ComfyUI's choice on {self.device}")
        self.report["library"]["dtype_from"] = "node" if node is not None else "default (no node run)"
        t0 = time.perf_counter()
        model = causal.load_model(files["dit"], dtype=dtype, device=self.device)
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(files["vae"]))
        load_s = time.perf_counter() - t0
        conditioning_node = self.comfy.nodes.NODE_CLASS_MAPPINGS["CausVidTestConditioning"]
        text_inputs = stream[TEXT_NODE]["inputs"]
        context = conditioning_node.execute(text=text_inputs["text"], width=text_inputs["width"]).result[0][0][0]
        schedule = causal.SCHEDULES[inputs["preset"]]
        if inputs["cache"] == "preset default":
            policy = causal.cache_policy.family_policy(inputs["preset"])
        elif inputs["cache"] == "sink":
            policy = causal.cache_policy.sink(inputs["sink_frames"], inputs["window"])
        else:
            raise ValueError(f"the template's cache policy is now '{inputs['cache']}': update the library path")
        fps = model.config.latents.fps
        fused = self.args.speed == "fast"
        if fused and (why := kernels.fused_unavailable(self.device)):
            log(f"library: speed 'fast' runs without compiled kernels here, as the node does: {why}")
            fused = False
        flash = fused and self.args.attention == "auto" and causal.attention.flash4_unavailable(self.device) is None
        width, height = inputs["width"], inputs["height"]
        fp8 = inputs.get("kv_cache") == "fp8"
        graphs = causal.CudaGraphs(model, batch=1, height=height, width=width, dtype=dtype, device=self.device,
                                   num_frames=policy.cache_frames(schedule.frames_per_block), kv_cache_fp8=fp8) \
            if cuda and causal.graphs.allocator_unsupported() is None else None  # as the node decides
        self.lib = {"model": model, "vae": vae, "context": context, "graphs": graphs,
                    "latent_format": comfy.latent_formats.Wan22() if model.config.out_dim == 48 else
                    comfy.latent_formats.Wan21(), "fps": fps,
                    "call": dict(video=causal.Video(height, width, num_frames=(inputs["length"] - 1) // 4 + 1,
                                                    total_frames=causal.prompts.frames_for_seconds(
                                                        inputs["seconds"], 0, schedule.frames_per_block, fps)),
                                 schedule=schedule, policy=policy,
                                 compute=causal.Compute(device=self.device, dtype=dtype, fused_kernels=fused,
                                                        graphs=graphs, kv_cache_fp8=fp8,
                                                        flash_attention=flash))}
        mine = describe_call(**self.lib["call"])
        self.report["library"]["generate"] = mine
        self.report["library"]["weight_dtypes"] = weight_dtypes(model)
        self.report["library"]["load_s"] = load_s
        if node is not None and mine != node:
            differ = {k: (node[k], mine[k]) for k in mine if mine[k] != node[k]}
            raise ValueError(f"the library's settings differ from the node's (node, library): {differ}")

    def library_stream(self, seed: int, profile_seconds: float = 0.0) -> None:
        lib, causal = self.lib, self.causal
        profile = profile_seconds > 0
        call, video = dict(lib["call"]), lib["call"]["video"]
        if profile:
            call["video"] = replace(video, total_frames=causal.prompts.frames_for_seconds(
                profile_seconds, 0, call["schedule"].frames_per_block, lib["fps"]))
        streaming = self.comfy.module("nodes.streaming")
        config = lib["model"].config
        h, w = config.latent_size(video.height, video.width)
        path = self.output / "bench" / f"library_stream_{seed}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        reset_peak(self.device)
        writes = self.recorder.begin()
        threads = self.timeline.begin()
        writes.start = time.perf_counter()
        stopped = None
        graphs = lib["graphs"]
        before = (graphs.captures, graphs.replays) if graphs else None
        try:
            with self.profiled("library", profile):  # the whole stream: its last decodes come after sampling
                decoder = streaming.StreamingDecoder(lib["vae"], fast=call["compute"].fused_kernels)  # as the node
                decoder.load((1, config.out_dim, 1, h, w))
                stream = streaming.BlockStream(decoder, streaming.Mp4Writer(path, video.width, video.height,
                                                                            lib["fps"]))

                def on_block(block) -> None:
                    stream.put(causal.host.to_host(lib["latent_format"].process_out(block.float())))  # as the node
                    if self.left_s() <= 0:
                        raise Deadline

                try:
                    causal.generate(lib["model"], lib["context"], **call, noise=causal.Noise(seed=seed),
                                    output=causal.Output(device="cpu", keep_latents=False, on_block=on_block))
                except Deadline:
                    stopped = "deadline"
                finally:
                    stream.close()
        finally:
            writes.end = time.perf_counter()
            self.recorder.finish()
            self.timeline.finish()
        run = summarize(writes, self.device, seed, stopped)
        run["threads"] = threads.summary()
        if graphs:
            run["graph_captures"], run["graph_replays"] = graphs.captures - before[0], graphs.replays - before[1]
        if profile:
            self.report["library"]["profile"]["run"] = run
            return
        self.report["library"]["runs"].append(run)
        log_run("library", run)

    def library_check(self) -> None:
        lib, causal = self.lib, self.causal
        video = replace(lib["call"]["video"], total_frames=causal.prompts.frames_for_seconds(
            self.args.check_seconds, 0, lib["call"]["schedule"].frames_per_block, lib["fps"]))
        call = dict(lib["call"], video=video)

        def on_block(block) -> None:
            if self.left_s() <= 0:
                raise Deadline("the library's latents check ran into the deadline")

        t0 = time.perf_counter()
        latents = causal.generate(lib["model"], lib["context"], **call, noise=causal.Noise(seed=self.args.seed),
                                  output=causal.Output(device="cpu", on_block=on_block)).latents
        self.library_latents = lib["latent_format"].process_out(latents.float())
        self.report["library"]["check"] = {"s": time.perf_counter() - t0, "shape": list(self.library_latents.shape),
                                           "generate": describe_call(**call)}

    # -- results ----------------------------------------------------------------------------------------------

    def compare(self) -> None:
        node, library = getattr(self, "node_latents", None), getattr(self, "library_latents", None)
        if node is not None and library is not None:
            same_shape = node.shape == library.shape
            node_settings, library_settings = (self.report[p]["check"]["generate"] for p in ("node", "library"))
            self.report["latents"] = {
                "seconds": self.args.check_seconds, "shape": list(node.shape), "same_shape": same_shape,
                "equal": same_shape and self.torch.equal(node, library),
                "max_abs_diff": (node.float() - library.float()).abs().max().item() if same_shape else None,
                "settings_equal": node_settings == library_settings}
        for n, l in zip(self.report["node"]["runs"], self.report["library"]["runs"]):
            complete = not n["stopped"] and not l["stopped"]
            n["same_mp4"] = l["same_mp4"] = complete and n["mp4_sha256"] == l["mp4_sha256"]

    def finish(self) -> None:
        table = render_table(self.report)
        print(table, flush=True)
        if self.args.out:
            Path(self.args.out).write_text(render_markdown(self.report, table))


def log(message: str) -> None:
    print(f"[bench/node.py] {message}", flush=True)


def log_run(path: str, run: dict) -> None:
    log(f"{path} seed {run['seed']}: first frame {fmt(run['first_frame_s'], 2)} s, {fmt(run['fps'], 1)} fps "
        f"written, {run['frames']} frames, median block {fmt(run['median_block_s'], 3)} s, wall "
        f"{fmt(run['wall_s'], 1)} s, peak {fmt(run['peak_device_gib'], 2)} GiB, stopped: {run['stopped']}")


def fmt(value: float | None, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def render_table(report: dict) -> str:
    rows = ["| path | run | seed | first frame (s) | fps written | s / block: median (max) | frames | wall (s) | "
            "peak device (GiB) | host RSS / peak (GiB) | same mp4 | stopped |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in ("node", "library"):
        for i, r in enumerate(report[path]["runs"], 1):
            rows.append(f"| {path} | {i} | {r['seed']} | {fmt(r['first_frame_s'], 2)} | {fmt(r['fps'], 1)} | "
                        f"{fmt(r['median_block_s'], 3)} ({fmt(r['max_block_s'], 3)}) | {r['frames']} | "
                        f"{fmt(r['wall_s'], 1)} | {fmt(r['peak_device_gib'], 2)} | {fmt(r['host_rss_gib'], 1)} / "
                        f"{fmt(r['host_peak_rss_gib'], 1)} | {r.get('same_mp4', '–')} | {r['stopped'] or ''} |")
    lines = ["\n".join(rows)]
    latents = report["latents"]
    if latents:
        lines.append(f"Latents (CausVid Sampler vs causal.generate, {latents['seconds']} s, {latents['shape']}): "
                     f"bitwise equal {latents['equal']}, max abs difference {latents['max_abs_diff']}, same "
                     f"settings {latents['settings_equal']}.")
    for skip in report["skipped"]:
        why = f": {skip['why']}" if skip.get("why") else ""
        lines.append(f"Skipped {skip['step']} ({skip['left_s']} s left){why}.")
    for error in report["errors"]:
        lines.append(f"Error in {error['step']}: {error['error'].splitlines()[0]}")
    return "\n\n".join(lines)


def render_markdown(report: dict, table: str) -> str:
    env, s = report["environment"], report["settings"]
    node_settings = report["node"].get("generate", {})
    heading = (f"## {env.get('date')} · {env.get('card')} · torch {env.get('torch')} (CUDA {env.get('cuda')}, "
               f"triton {env.get('triton')}) · ComfyUI {env.get('comfyui')} · node path vs library "
               f"(bench/node.py) · causal/ sha {env.get('causal_sha')}")
    setting = (f"CausVid Stream to Video in ComfyUI's executor (in process, `{s['workflow']}` with "
               f"CausVidTestConditioning for the text encoder) vs `causal.generate` + the pack's streaming classes, "
               f"{s['model']} random weights ({report['files'].get('dit_layout')} layout), decoder "
               f"{s.get('vae', 'wan')}, {s['size']}, "
               f"{s['seconds']} s of video per run, preset {s['preset']}, speed `{s['speed']}` (compute "
               f"{node_settings.get('dtype', '?')}, compiled kernels {node_settings.get('fused_kernels', '?')}, CUDA "
               f"graphs {node_settings.get('graphs', '?')}), cache {s['cache']}, {s['repeats']} run(s) per path with "
               f"seeds from {s['seed']}; allocator {env.get('allocator') or 'n/a'} (`--allocator {s['allocator']}`). "
               "first frame = stream node's execute start (library: run start) -> first frame written; fps = frames "
               "written after the first write / first -> last write; s / block = between writes; peak = "
               "torch.cuda.max_memory_allocated over the run.")
    node_s = [f"run {i}: " + ", ".join(f"{k} {v:.2f} s" for k, v in r.get("node_s", {}).items())
              for i, r in enumerate(report["node"]["runs"], 1)]
    extra = f"Node seconds per executed node: {'; '.join(node_s)}." if node_s else ""
    return "\n\n".join(x for x in (heading, setting, table, extra) if x) + "\n"


def main(argv: list[str] | None = None) -> int:
    return Bench(parse_args(argv)).main()


if __name__ == "__main__":
    sys.exit(main())
