#!/usr/bin/env python3
"""Speed benchmark of the causal sampler on real-size random-weight Wan2.1 DiTs (issue 4).

For each model size it draws random weights (on the GPU), writes them in a real checkpoint layout
(safetensors), loads them back through the pack's own loader `causal.load_model`, and times
`causal.generate` at 832×480, 21 latent frames (81 video frames), DiT only (a random prompt
embedding [1, 512, 4096] whose rows after the 20th are zero stands in for umT5).

Per configuration: one warm-up clip (not timed), then `--repeats` timed clips with the same seed.
Reported: clip seconds (median), fps (81 frames / clip), first-block latency (start of `generate`
until block 0's last denoising step is done on the GPU), steady-state seconds per block (median of
blocks 1..6, each the time between two blocks' last steps, so it holds the previous block's clean
pass), peak VRAM (torch.cuda.max_memory_allocated, reset per clip), forwards per block, and the
relative L2 difference between the timed clips (determinism; 0 expected).

Options (`--options`, see bench/options.py) are timed the same way and carry the relative L2
difference of their final latents against the exact path with the same seed.

    python bench/bench.py                                  # all four configurations on a GPU
    python bench/bench.py --configs 1.3B-4step --repeats 3
    python bench/bench.py --profile --options fused,fp8_fused  # fp8 options run last (in place)
    python bench/bench.py --tiny                           # tiny model on the CPU (smoke test)

It prints a table and appends a section to bench/RESULTS.md (`--out`), next to the issue's
reference numbers. The repository root is a ComfyUI node pack, so it is never imported as a
package: its directory goes on sys.path and `causal` is imported alone.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for p in (str(REPO), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402

import causal  # noqa: E402
from causal.config import WanConfig  # noqa: E402
from causal.synthetic import LAYOUTS, random_state_dict, write_checkpoint  # noqa: E402

GiB = 1024 ** 3
VIDEO_FRAMES_PER_LATENT = 4  # 21 latent frames -> 1 + 4·20 = 81 video frames


@dataclass(frozen=True)
class BenchConfig:
    key: str
    model: str  # a key of causal.PRESETS
    schedule: str  # a key of causal.SCHEDULES
    label: str


CONFIGS: dict[str, BenchConfig] = {c.key: c for c in (
    BenchConfig("1.3B-3step", "1.3B", "CausVid 1.3B", "CausVid 1.3B, 3 steps + clean pass"),
    BenchConfig("1.3B-4step", "1.3B", "CausVid 1.3B warped 4-step", "CausVid 1.3B, 4 warped steps + clean pass"),
    BenchConfig("14B-9step", "14B", "CausVid-Plus 14B", "CausVid-Plus 14B, 9 steps + clean pass"),
    BenchConfig("14B-lightx2v", "14B", "LightX2V CausVid 14B", "LightX2V CausVid 14B, 9 steps, no clean pass"),
)}

REFERENCE: dict[str, dict[str, float]] = {
    # issue 4: one H100 80GB, PyTorch 2.11, SDPA, random weights, 832×480, 21 latent frames, DiT only
    "1.3B-3step": {"clip": 2.58, "first": 0.28, "vram": 8.6},
    "1.3B-4step": {"clip": 2.91, "first": 0.29, "vram": 11.3},
    "14B-9step": {"clip": 29.1, "first": 3.1, "vram": 58.1},
}
TARGETS: dict[str, dict[str, float]] = {
    "1.3B-3step": {"first": 0.2},
    "1.3B-4step": {"clip": 1.6, "first": 0.2},
    "14B-9step": {"clip": 17.5, "first": 1.9, "vram": 58.0},
    "14B-lightx2v": {"first": 1.9, "vram": 58.0},
}
# Measured bare-kernel time of one forward (GEMMs + SDPA only, landscape.md §5.1, H100, eager), as a
# line in the number of cached latent frames L (incl. the current block): t(L) = a + b·L milliseconds.
KERNEL_FIT_MS: dict[str, tuple[float, float]] = {"1.3B": (18.9, 2.4), "14B": (154.2, 10.28)}

LAYOUT_FOR_MODEL = {"1.3B": "comfyui", "14B": "lightx2v_safetensors", "tiny": "comfyui"}
TINY_CONFIG = WanConfig(dim=256, ffn_dim=512, num_layers=2, text_dim=64)


# --------------------------------------------------------------------------------------------------
# small helpers


def now_utc() -> str:
    try:
        return subprocess.run(["date", "-u", "+%Y-%m-%d %H:%M UTC"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # pragma: no cover - no `date` binary
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    den = b64.norm().item()
    return float((a64 - b64).norm().item() / den) if den else float("nan")


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def causal_source_hash() -> str:
    """Short hash of causal/*.py: which version of the core was measured (the device copy has no .git)."""
    h = hashlib.sha256()
    for f in sorted((REPO / "causal").glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": now_utc(),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "causal_sha": causal_source_hash(),
    }
    try:
        import triton  # noqa: F401

        env["triton"] = triton.__version__
    except Exception:
        env["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["card"] = props.name
        env["card_memory_gib"] = round(props.total_memory / GiB, 1)
        env["sms"] = props.multi_processor_count
        env["cudnn"] = torch.backends.cudnn.version()
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            env["driver"] = None
        with contextlib.suppress(Exception):
            env["sdpa_backends_enabled"] = {
                "flash": torch.backends.cuda.flash_sdp_enabled(),
                "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                "math": torch.backends.cuda.math_sdp_enabled(),
            }
    else:
        env["card"] = f"CPU ({platform.processor() or platform.machine()})"
    return env


class Clock:
    """CUDA events on a GPU (device timeline, no synchronisation), perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def seconds(self, a: Any, b: Any) -> float:
        if self.cuda:
            return a.elapsed_time(b) / 1000.0
        return b - a


def kernel_bound_s(model: str, forwards_per_block: int, num_blocks: int, frames_per_block: int = 3) -> float | None:
    """Bare-kernel estimate of a clip from the §5.1 line fit (None for models without a fit)."""
    if model not in KERNEL_FIT_MS:
        return None
    a, b = KERNEL_FIT_MS[model]
    return forwards_per_block * sum(a + b * frames_per_block * (k + 1) for k in range(num_blocks)) / 1000.0


# --------------------------------------------------------------------------------------------------
# models


@dataclass
class Setup:
    device: torch.device
    height: int
    width: int
    num_frames: int
    text_tokens: int
    seed: int
    tiny: bool
    ckpt_dirs: list[Path]
    checkpoint: bool = True


def model_config(name: str, tiny: bool) -> WanConfig:
    return TINY_CONFIG if tiny else causal.PRESETS[name]


def make_context(config: WanConfig, setup: Setup) -> torch.Tensor:
    """A umT5-like prompt embedding [1, 512, text_dim]: `text_tokens` random rows, then zero rows."""
    g = torch.Generator().manual_seed(1234)
    ctx = torch.zeros(1, config.text_len, config.text_dim)
    ctx[:, :setup.text_tokens] = torch.randn(1, setup.text_tokens, config.text_dim, generator=g)
    return ctx.to(device=setup.device, dtype=torch.bfloat16)


def prepare_model(name: str, setup: Setup, log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """Random weights -> checkpoint file (real layout) -> causal.load_model. Returns (model, info)."""
    config = model_config(name, setup.tiny)
    layout = LAYOUT_FOR_MODEL["tiny" if setup.tiny else name]
    nbytes = config.num_parameters() * 2
    free = 0
    for folder in setup.ckpt_dirs:  # the first candidate folder with room for the file
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free >= nbytes * 1.05 + 2e9:
            break
    path = folder / f"{name.replace('.', '_')}_{LAYOUTS[layout]}"
    info: dict[str, Any] = {"model": name, "layout": layout, "file": str(path), "parameters": config.num_parameters(),
                            "file_gb": round(nbytes / 1e9, 2)}
    ram = mem_available_bytes()
    info["disk_free_gb"] = round(free / 1e9, 1)
    info["ram_available_gb"] = round(ram / 1e9, 1) if ram else None
    log(f"[{name}] {config.num_parameters() / 1e9:.2f} B parameters, {nbytes / 1e9:.1f} GB bf16; "
        f"disk free {free / 1e9:.1f} GB, RAM available {ram / 1e9 if ram else float('nan'):.1f} GB")
    if setup.checkpoint and free < nbytes * 1.05 + 2e9:
        raise RuntimeError(f"not enough disk in {[str(d) for d in setup.ckpt_dirs]} for the {name} checkpoint "
                           f"({nbytes / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free)")
    t0 = time.perf_counter()
    sd = random_state_dict(config, dtype=torch.bfloat16, seed=setup.seed, device=setup.device)
    sync(setup.device)
    t1 = time.perf_counter()
    if not setup.checkpoint:  # straight from the state dict (profiling / option runs only)
        model = causal.CausalWanModel.from_state_dict(sd, config, dtype=torch.bfloat16, device=setup.device)
        info.update(layout="none (CausalWanModel.from_state_dict)", gen_s=round(t1 - t0, 2), write_s=0.0,
                    load_s=round(time.perf_counter() - t1, 2))
        log(f"[{name}] built from the state dict (no checkpoint file)")
        return model, info
    write_checkpoint(sd, path, layout)
    t2 = time.perf_counter()
    del sd
    free_memory()
    log(f"[{name}] weights drawn in {t1 - t0:.1f} s, written ({layout}) in {t2 - t1:.1f} s")
    t3 = time.perf_counter()
    model = causal.load_model(path, dtype=torch.bfloat16, device=setup.device)
    sync(setup.device)
    t4 = time.perf_counter()
    info.update(gen_s=round(t1 - t0, 2), write_s=round(t2 - t1, 2), load_s=round(t4 - t3, 2))
    log(f"[{name}] causal.load_model: {t4 - t3:.1f} s")
    with contextlib.suppress(OSError):
        path.unlink()  # free the disk for the next model
    free_memory()
    return model, info


# --------------------------------------------------------------------------------------------------
# timing one clip


@dataclass
class Clip:
    seconds: float
    gpu_seconds: float
    first_block: float
    block_seconds: list[float]
    peak_vram: float | None
    latents: torch.Tensor


def run_clip(model: Any, context: torch.Tensor, schedule: Any, setup: Setup, fused: bool = False,
             graphs: Any = None) -> Clip:
    device = setup.device
    clock = Clock(device)
    last_step = schedule.num_steps - 1
    marks: list[Any] = []

    def progress(p: Any) -> None:
        if p.step == last_step:
            marks.append(clock.mark())

    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    start = clock.mark()
    gen = causal.generate(model, context, height=setup.height, width=setup.width, schedule=schedule,
                          num_frames=setup.num_frames, seed=setup.seed, progress=progress, fused_kernels=fused,
                          graphs=graphs)
    end = clock.mark()
    sync(device)
    t1 = time.perf_counter()
    peak = torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None
    ends = [clock.seconds(start, m) for m in marks]
    blocks = [b - a for a, b in zip(ends, ends[1:])]
    return Clip(seconds=t1 - t0, gpu_seconds=clock.seconds(start, end), first_block=ends[0], block_seconds=blocks,
                peak_vram=peak, latents=gen.latents.detach().float().cpu())


def time_config(model: Any, context: torch.Tensor, cfg: BenchConfig, setup: Setup, repeats: int,
                log: Callable[[str], None], reference: torch.Tensor | None = None, option: str = "exact",
                warmups: int = 1, fused: bool = False,
                cuda_graphs: bool = False) -> tuple[dict[str, Any], torch.Tensor]:
    schedule = causal.SCHEDULES[cfg.schedule]
    graphs = (causal.CudaGraphs(model, batch=1, height=setup.height, width=setup.width, num_frames=setup.num_frames,
                                device=setup.device) if cuda_graphs else None)
    for i in range(warmups):
        w = run_clip(model, context, schedule, setup, fused, graphs)
        log(f"  {cfg.key} [{option}] warm-up {i + 1}: {w.seconds:.3f} s")
    clips: list[Clip] = []
    for i in range(repeats):
        c = run_clip(model, context, schedule, setup, fused, graphs)
        clips.append(c)
        log(f"  {cfg.key} [{option}] clip {i + 1}: {c.seconds:.3f} s (GPU {c.gpu_seconds:.3f} s), first block "
            f"{c.first_block:.3f} s, blocks {' '.join(f'{b:.3f}' for b in c.block_seconds)}"
            + (f", peak {c.peak_vram:.2f} GiB" if c.peak_vram is not None else ""))
    clip_s = statistics.median(c.seconds for c in clips)
    num_blocks = setup.num_frames // 3
    steady = [statistics.median(c.block_seconds) for c in clips if c.block_seconds]
    video_frames = 1 + VIDEO_FRAMES_PER_LATENT * (setup.num_frames - 1)
    latents = clips[0].latents
    row: dict[str, Any] = {
        "config": cfg.key, "label": cfg.label, "model": cfg.model, "schedule": cfg.schedule, "option": option,
        "forwards_per_block": schedule.forwards_per_block, "blocks": num_blocks, "repeats": repeats,
        "clip_s": clip_s, "clip_s_all": [c.seconds for c in clips],
        "gpu_clip_s": statistics.median(c.gpu_seconds for c in clips),
        "fps": video_frames / clip_s, "video_frames": video_frames,
        "first_block_s": statistics.median(c.first_block for c in clips),
        "steady_block_s": statistics.median(steady) if steady else None,
        "block_s": [statistics.median(c.block_seconds[i] for c in clips) for i in range(num_blocks - 1)],
        "peak_vram_gib": max(c.peak_vram for c in clips) if clips[0].peak_vram is not None else None,
        "determinism_rel_l2": max((rel_l2(c.latents, latents) for c in clips[1:]), default=None),
        "finite": bool(all(torch.isfinite(c.latents).all() for c in clips)),
        "latent_rms": float(latents.pow(2).mean().sqrt()),
    }
    if reference is not None:
        row["rel_l2_vs_exact"] = rel_l2(latents, reference)
    if not setup.tiny:
        row["kernel_bound_s"] = kernel_bound_s(cfg.model, schedule.forwards_per_block, num_blocks)
    return row, latents


def parse_overlap_variant(item: str) -> tuple[str, str, str]:
    """'1.3B-4step[:DiT option][:plain|fast]' -> (configuration, DiT option of bench/options.py, decoder)."""
    from options import OPTIONS

    key, *parts = [s.strip() for s in item.split(":")]
    if key not in CONFIGS:
        raise ValueError(f"unknown configuration {key!r} in --vae-overlap {item!r}")
    option, decoder = "exact", "plain"
    for part in parts:
        if part in ("plain", "fast"):
            decoder = part
        elif part in OPTIONS and not OPTIONS[part].fp8:
            option = part
        else:
            raise ValueError(f"--vae-overlap {item!r}: {part!r} is neither plain/fast nor a non-fp8 option "
                             f"({', '.join(o for o in OPTIONS if not OPTIONS[o].fp8)})")
    return key, option, decoder


def time_overlapped_decode(model: Any, context: torch.Tensor, cfg: BenchConfig, setup: Setup, option_name: str,
                           decoder_kind: str, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """End to end with the VAE: each finished block is decoded while the next one samples, fed from the
    progress callback. `plain`: wan_vae.OverlappedDecode (the reference decoder on a second stream, launched
    from the sampler's thread); `fast`: wan_vae.ThreadedDecode (FastDecoder on its own thread and stream).
    Clip = sampling + finishing the decode; also the first block's latency (start -> its frames decoded) and
    the sustained rate (frames decoded between the first and the last block's decode)."""
    import wan_vae
    from options import OPTIONS

    option = OPTIONS[option_name]
    device = setup.device
    decoder = wan_vae.make_decoder(device, setup.tiny)
    fast = wan_vae.FastDecoder(decoder) if decoder_kind == "fast" else None
    schedule = causal.SCHEDULES[cfg.schedule]
    last_step = schedule.num_steps - 1
    frames_per_block = 3
    video_frames = 1 + VIDEO_FRAMES_PER_LATENT * (setup.num_frames - 1)
    first_frames = 1 + VIDEO_FRAMES_PER_LATENT * (frames_per_block - 1)  # the first block's video frames

    def new_decode() -> Any:
        if fast is not None:
            return wan_vae.ThreadedDecode(fast, device)
        return wan_vae.OverlappedDecode(decoder, device)

    def sample(decode: Any, graphs: Any) -> None:
        def progress(p: Any) -> None:
            if p.step == last_step:
                decode.push(p.denoised)

        causal.generate(model, context, height=setup.height, width=setup.width, schedule=schedule,
                        num_frames=setup.num_frames, seed=setup.seed,
                        progress=progress if decode is not None else None,
                        fused_kernels=option.fused_kernels, graphs=graphs)

    def clip(graphs: Any) -> dict[str, float]:
        decode = new_decode()
        clock = Clock(device)
        gc.collect()
        sync(device)
        t0 = time.perf_counter()
        start = clock.mark()
        sample(decode, graphs)
        sampled = clock.mark()
        video = decode.finish()
        end = clock.mark()
        sync(device)
        seconds = time.perf_counter() - t0
        if video.shape[2] != video_frames:
            raise RuntimeError(f"decoded {video.shape[2]} frames, expected {video_frames}")
        done = decode.done
        between = clock.seconds(done[0], done[-1])
        return {"seconds": seconds, "first": clock.seconds(start, done[0]),
                "sustained_fps": (video_frames - first_frames) / between if between > 0 else float("nan"),
                "dit_gpu": clock.seconds(start, sampled), "tail": clock.seconds(sampled, end)}

    threaded = fast is not None and device.type == "cuda"  # ThreadedDecode decodes synchronously off CUDA
    label = f"{option_name} + {decoder_kind} decoder{' (threaded)' if threaded else ''}"
    with option.enter(), wan_vae.kept_cudnn_benchmark():
        graphs = (causal.CudaGraphs(model, batch=1, height=setup.height, width=setup.width,
                                    num_frames=setup.num_frames, device=device) if option.cuda_graphs else None)
        # Warm-ups: the decoder alone, on the thread it will run on (cuDNN plans and benchmarks are per
        # thread; compiled kernels), then the DiT alone (its compiled kernels, graph captures), so that
        # nothing compiles or captures while both run; then one clip together.
        g = torch.Generator(device).manual_seed(5)
        warm = new_decode()
        for _ in range(setup.num_frames // frames_per_block):
            warm.push(torch.randn(1, 16, frames_per_block, setup.height // 8, setup.width // 8, generator=g,
                                  device=device).to(torch.bfloat16))
        warm.finish()
        del warm
        sample(None, graphs)
        w = clip(graphs)
        log(f"  {cfg.key} [{label}] warm-up with overlapped decode: {w['seconds']:.3f} s")
        runs = [clip(graphs) for _ in range(repeats)]
        del graphs
    free_memory()
    seconds = statistics.median(r["seconds"] for r in runs)
    row = {"config": cfg.key, "label": cfg.label, "option": option_name, "decoder": decoder_kind,
           "threaded": threaded, "fused_kernels": option.fused_kernels,
           "cuda_graphs": option.cuda_graphs, "clip_s": seconds, "frames": video_frames, "fps": video_frames / seconds,
           "runs_s": [round(r["seconds"], 3) for r in runs],
           "first_block_s": statistics.median(r["first"] for r in runs),
           "sustained_fps": statistics.median(r["sustained_fps"] for r in runs),
           "dit_gpu_s": statistics.median(r["dit_gpu"] for r in runs),
           "decode_tail_s": statistics.median(r["tail"] for r in runs)}
    log(f"  {cfg.key} [{label}] with overlapped VAE decode: {seconds:.3f} s ({row['fps']:.1f} fps, "
        f"{video_frames} frames), first block decoded {row['first_block_s']:.3f} s, sustained "
        f"{row['sustained_fps']:.1f} fps, DiT {row['dit_gpu_s']:.3f} s + decode tail {row['decode_tail_s']:.3f} s, "
        f"runs {row['runs_s']}")
    return row


# --------------------------------------------------------------------------------------------------
# profile: CUDA time per op category of a few forwards at the last block


CATEGORY_PATCHES = (
    # (category, owner, attribute); owner is resolved lazily
    ("gemm", "torch.nn.Linear", "forward"),
    ("conv (patch embedding)", "torch.nn.Conv3d", "forward"),
    ("attention (SDPA)", "causal.model", "attention"),
    ("rope (float64)", "causal.model", "apply_rope"),
    ("rope (float64)", "causal.model", "rope_phases"),
    ("rmsnorm (q/k)", "causal.kernels", "rms_norm"),
    ("layernorm + modulate", "causal.kernels", "layer_norm_modulate"),
    ("layernorm (norm3, head)", "torch.nn.LayerNorm", "forward"),
    ("gate + residual", "causal.kernels", "gated_add"),
    ("gelu", "torch.nn.GELU", "forward"),
    ("kv cache write", "causal.kv_cache.KVCache", "store"),
)


def _resolve(dotted: str) -> Any:
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@contextlib.contextmanager
def category_labels() -> Iterator[None]:
    """Wrap each category's function in record_function('bench::<category>')."""
    from torch.profiler import record_function

    undo: list[tuple[Any, str, Any]] = []

    def wrap(category: str, fn: Callable) -> Callable:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with record_function(f"bench::{category}"):
                return fn(*args, **kwargs)
        return wrapped

    try:
        for category, owner_name, attr in CATEGORY_PATCHES:
            owner = _resolve(owner_name)
            old = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
            undo.append((owner, attr, old))
            setattr(owner, attr, wrap(category, old))
        yield
    finally:
        for owner, attr, old in reversed(undo):
            setattr(owner, attr, old)


KERNEL_CLASSES = (  # first match wins: attention kernels also carry cutlass / sm90 / wgmma in their names
    ("attention", ("flash", "fmha", "attention", "sdpa", "softmax", "attn")),
    ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "sm90_", "wgmma", "splitk")),
    ("copy / cast", ("copy", "cast", "convert", "to_copy", "cat", "clone", "memcpy", "memset", "fill")),
    ("reduce (norms)", ("norm", "reduce", "welford", "rsqrt", "mean")),
)


def classify_kernel(name: str) -> str:
    low = name.lower()
    if "complex" in low or "double" in low:
        return "float64 / complex elementwise"
    for cls, words in KERNEL_CLASSES:
        if any(w in low for w in words):
            return cls
    if "triton" in low:
        return "triton (compiled)"
    return "elementwise / other"


def profile_forwards(model: Any, context: torch.Tensor, setup: Setup, n_forwards: int, option: str,
                     log: Callable[[str], None], where: str = "last") -> dict[str, Any]:
    """Profile `n_forwards` forwards of one block at the last slot (attention over all num_frames latent
    frames) or the first (over 3 frames)."""
    from torch.profiler import ProfilerActivity, profile

    device = setup.device
    h, w = setup.height // 8, setup.width // 8
    cache = causal.KVCache.for_video(model.config, batch=1, height=setup.height, width=setup.width,
                                     num_frames=setup.num_frames, dtype=torch.bfloat16, device=device)
    g = torch.Generator(device).manual_seed(7)
    for t in (*cache.keys, *cache.values):
        t.normal_(generator=g)
    text = model.text_kv(context, torch.bfloat16)
    slot = setup.num_frames - 3 if where == "last" else 0
    x = torch.randn(1, 16, 3, h, w, generator=g, device=device).to(torch.bfloat16)
    timestep = torch.full((1, 3), 500.0, dtype=torch.float64, device=device)

    def forward() -> torch.Tensor:
        return model(x, timestep, text, cache=cache, cache_frame=slot, rope_frame=slot)

    for _ in range(2):
        forward()
    sync(device)
    clock = Clock(device)
    a = clock.mark()
    for _ in range(n_forwards):
        forward()
    b = clock.mark()
    sync(device)
    forward_ms = clock.seconds(a, b) * 1000 / n_forwards

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with category_labels(), profile(activities=activities) as prof:
        for _ in range(n_forwards):
            forward()
        sync(device)
    events = prof.events()
    on_gpu = device.type == "cuda"

    def incl(e: Any) -> float:  # microseconds
        return e.device_time_total if on_gpu else e.cpu_time_total

    categories: dict[str, float] = {}
    total = 0.0
    kernels: dict[str, list[float]] = {}
    for e in events:
        is_cpu = str(getattr(e, "device_type", "")).endswith("CPU")
        if not is_cpu:
            continue
        if e.name.startswith("bench::"):
            categories[e.name[7:]] = categories.get(e.name[7:], 0.0) + incl(e)
        if e.cpu_parent is None:
            total += incl(e)
        if on_gpu:
            for k in e.kernels:
                entry = kernels.setdefault(k.name, [0.0, 0])
                entry[0] += k.duration
                entry[1] += 1
    if not on_gpu:  # CPU: the top-level ops' inclusive time counts the labels' children too
        total = sum(incl(e) for e in events if str(getattr(e, "device_type", "")).endswith("CPU")
                    and e.cpu_parent is None)
    kernel_total = sum(v[0] for v in kernels.values())
    if on_gpu and kernel_total:
        total = kernel_total
    per = 1000.0 * n_forwards  # µs -> ms per forward
    rows = [{"category": c, "ms": v / per, "share": v / total if total else 0.0}
            for c, v in sorted(categories.items(), key=lambda kv: -kv[1])]
    other = total - sum(categories.values())
    rows.append({"category": "other (residual adds, modulation sums, time embedding, head, ...)",
                 "ms": other / per, "share": other / total if total else 0.0})
    classes: dict[str, float] = {}
    for name, (dur, _) in kernels.items():
        cls = classify_kernel(name)
        classes[cls] = classes.get(cls, 0.0) + dur
    top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:20]
    result = {
        "option": option, "model": model.config.name if not setup.tiny else "tiny", "slot": slot,
        "cache_frames": slot + 3, "n_forwards": n_forwards, "forward_ms": forward_ms,
        "device_ms_per_forward": total / per, "gpu_busy": (total / per) / forward_ms if forward_ms else None,
        "categories": rows,
        "kernel_classes": [{"class": c, "ms": v / per, "share": v / kernel_total}
                           for c, v in sorted(classes.items(), key=lambda kv: -kv[1])] if kernel_total else [],
        "top_kernels": [{"kernel": n[:110], "ms": d / per, "calls_per_forward": cnt / n_forwards,
                         "share": d / kernel_total} for n, (d, cnt) in top] if kernel_total else [],
    }
    log(f"  profile [{option}] {result['model']} slot {slot}: forward {forward_ms:.2f} ms wall, {total / per:.2f} ms "
        f"{'kernel' if on_gpu else 'CPU'} time")
    for r in rows:
        log(f"    {r['category']:<40} {r['ms']:8.2f} ms {100 * r['share']:5.1f} %")
    for r in result["top_kernels"][:12]:
        log(f"    {r['ms']:7.2f} ms {100 * r['share']:5.1f} % x{r['calls_per_forward']:.0f}  {r['kernel']}")
    return result


def fp32_reference(model: Any, context: torch.Tensor, cfg: BenchConfig, setup: Setup,
                   exact_latents: dict[str, torch.Tensor], option_latents: dict[str, torch.Tensor],
                   log: Callable[[str], None]) -> dict[str, Any]:
    """Run `cfg` once in float32 (weights upcast from the same bf16 values, TF32 off) with exactly the noise
    the bf16 runs drew, and measure every stored bf16 result against it."""
    device = setup.device
    schedule = causal.SCHEDULES[cfg.schedule]
    h, w = setup.height // 8, setup.width // 8

    def sources(dtype: torch.dtype) -> tuple[torch.Tensor, Callable]:
        # the sampler's own draws for seed s (bf16): initial noise first, then each re-noise, one generator
        g = torch.Generator(device).manual_seed(setup.seed)
        noise = torch.randn((1, setup.num_frames, 16, h, w), generator=g, dtype=torch.bfloat16, device=device)
        return noise.to(dtype), lambda shape: torch.randn(shape, generator=g, dtype=torch.bfloat16,
                                                          device=device).to(dtype)

    noise, renoise = sources(torch.bfloat16)
    replay = causal.generate(model, context, height=setup.height, width=setup.width, schedule=schedule,
                             num_frames=setup.num_frames, noise=noise, renoise=renoise).latents.float().cpu()
    replay_err = rel_l2(replay, exact_latents[cfg.key]) if cfg.key in exact_latents else None
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    model.float()
    try:
        noise, renoise = sources(torch.float32)
        sync(device)
        t0 = time.perf_counter()
        ref = causal.generate(model, context.float(), height=setup.height, width=setup.width, schedule=schedule,
                              num_frames=setup.num_frames, noise=noise, renoise=renoise,
                              dtype=torch.float32).latents.float().cpu()
        sync(device)
        seconds = time.perf_counter() - t0
    finally:
        model.to(torch.bfloat16)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        free_memory()
    errors = {"exact (bf16)": rel_l2(exact_latents.get(cfg.key, replay), ref)}
    for key, lat in option_latents.items():
        if key.startswith(cfg.key + ":"):
            errors[key.split(":", 1)[1]] = rel_l2(lat, ref)
    result = {"config": cfg.key, "fp32_clip_s": seconds, "replay_rel_l2": replay_err, "rel_l2_vs_fp32": errors,
              "finite": bool(torch.isfinite(ref).all())}
    log(f"  fp32 reference {cfg.key}: {seconds:.1f} s; bf16 replay of the seeded run rel-L2 {replay_err}; "
        + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    return result


# --------------------------------------------------------------------------------------------------
# output


def _f(v: Any, fmt: str = "{:.2f}", none: str = "–") -> str:
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _ratio(ours: Any, ref: Any) -> str:
    return f"{ours / ref:.2f}" if ours is not None and ref else "–"


def baseline_table(rows: list[dict[str, Any]], tiny: bool = False) -> list[str]:
    out = ["| configuration | fwd / block | clip (fps) | first block | steady s / block | peak VRAM | "
           "determinism rel-L2 | reference clip (fps) | ours / ref clip | ref first block | ours / ref first | "
           "ref VRAM | target clip / first / VRAM | bare-kernel est. (§5.1) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = {} if tiny else REFERENCE.get(r["config"], {})
        tgt = {} if tiny else TARGETS.get(r["config"], {})
        ref_clip = f"{ref['clip']:.2f} s ({r['video_frames'] / ref['clip']:.1f} fps)" if "clip" in ref else "–"
        target = " / ".join(f"<= {tgt[k]:g}{' GiB' if k == 'vram' else ' s'}" if k in tgt else "–"
                            for k in ("clip", "first", "vram"))
        out.append(
            f"| {r['label']} | {r['forwards_per_block']} | {r['clip_s']:.2f} s ({r['fps']:.1f} fps) | "
            f"{r['first_block_s']:.3f} s | {_f(r['steady_block_s'], '{:.3f} s')} | "
            f"{_f(r['peak_vram_gib'], '{:.1f} GiB')} | {_f(r['determinism_rel_l2'], '{:.1e}')} | {ref_clip} | "
            f"{_ratio(r['clip_s'], ref.get('clip'))} | {_f(ref.get('first'), '{:.2f} s')} | "
            f"{_ratio(r['first_block_s'], ref.get('first'))} | {_f(ref.get('vram'), '{:.1f} GiB')} | {target} | "
            f"{_f(r.get('kernel_bound_s'), '{:.2f} s')} |")
    return out


def options_table(rows: list[dict[str, Any]], exact: dict[str, dict[str, Any]]) -> list[str]:
    out = ["| configuration | option | clip (fps) | speed-up vs exact | first block | peak VRAM | "
           "rel-L2 vs exact (final latents) | determinism rel-L2 |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['config']} | {r['option']} | failed: {r['error'][:120]} | | | | | |")
            continue
        base = exact.get(r["config"])
        speed = f"{base['clip_s'] / r['clip_s']:.2f}×" if base else "–"
        out.append(f"| {r['config']} | {r['option']} | {r['clip_s']:.2f} s ({r['fps']:.1f} fps) | {speed} | "
                   f"{r['first_block_s']:.3f} s | {_f(r['peak_vram_gib'], '{:.1f} GiB')} | "
                   f"{_f(r.get('rel_l2_vs_exact'), '{:.2e}')} | {_f(r['determinism_rel_l2'], '{:.1e}')} |")
    return out


def profile_tables(p: dict[str, Any]) -> list[str]:
    out = [f"Profile [{p['option']}], {p['model']}, one block at latent frame {p['slot']} (attention over "
           f"{p['cache_frames']} latent frames), {p['n_forwards']} forwards: {p['forward_ms']:.1f} ms per forward wall, "
           f"{p['device_ms_per_forward']:.1f} ms kernel time (GPU busy {_f(p['gpu_busy'], '{:.0%}')})."
           + (" **Kernel time exceeds the event-timed wall time: the profiler's kernel attribution is unreliable "
              "here; use the wall time only.**" if (p.get("gpu_busy") or 0) > 1.05 else ""), "",
           "| category (record_function around the op) | ms / forward | share |", "|---|---|---|"]
    out += [f"| {r['category']} | {r['ms']:.2f} | {100 * r['share']:.1f} % |" for r in p["categories"]]
    if p["kernel_classes"]:
        out += ["", "| kernel class (by kernel name) | ms / forward | share |", "|---|---|---|"]
        out += [f"| {r['class']} | {r['ms']:.2f} | {100 * r['share']:.1f} % |" for r in p["kernel_classes"]]
        out += ["", "| top kernels | ms / forward | calls / forward | share |", "|---|---|---|---|"]
        out += [f"| `{r['kernel']}` | {r['ms']:.2f} | {r['calls_per_forward']:.0f} | {100 * r['share']:.1f} % |"
                for r in p["top_kernels"][:12]]
    return out


def vae_tables(v: dict[str, Any], configs: list[dict[str, Any]]) -> list[str]:
    """The --vae step: the plain decoder's line, the fast decoder's ladder, DiT + serial decode."""
    lines = [f"VAE decode (bench/wan_vae.py: random-weight Wan2.1 decoder, {v['parameters_m']} M parameters, "
             f"bf16; plain = `Decoder`, eager, one latent frame at a time with cached causal convs): {v['frames']} "
             f"frames in {v['decode_s']:.2f} s ({v['ms_per_frame']:.1f} ms / frame; runs {v['runs_s']}), first latent "
             f"frame {v['first_chunk_s']:.3f} s, first block of 3 latents {_f(v.get('first_block_s'), '{:.3f}')} s, "
             f"later blocks {_f(v['block_of_3_latents_s'], '{:.3f}')} s, peak {_f(v['peak_vram_gib'], '{:.1f}')} GiB "
             f"(decoder alone), finite {v['finite']}.", ""]
    fast = [r for r in v.get("fast", []) if "decode_s" in r]
    if fast:
        lines += ["`wan_vae.FastDecoder` (the same weights and function; each row adds one speed-up to the row "
                  "above; rel-L2 = ||video - plain video|| / ||plain video|| in bf16, where any change of rounding "
                  "shows):", "",
                  "| decoder | adds | decode (ms / frame) | speed-up | first latent frame | first block | later "
                  "block | peak VRAM | rel-L2 vs plain | finite |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in fast:
            what = r["what"] + (f" ({r['note']})" if r.get("note") else "")
            lines.append(f"| {r['variant']} | {what} | {r['decode_s']:.3f} s ({r['ms_per_frame']:.1f}) | "
                         f"{_f(r.get('speed_up'), '{:.2f}×')} | {r['first_chunk_s']:.3f} s | "
                         f"{_f(r.get('first_block_s'), '{:.3f} s')} | {_f(r['block_of_3_latents_s'], '{:.3f} s')} | "
                         f"{_f(r['peak_vram_gib'], '{:.1f} GiB')} | {_f(r.get('rel_l2_vs_plain'), '{:.2e}')} | "
                         f"{r['finite']} |")
        lines.append("")
    if configs:
        decoders = [("plain", v)] + ([("fast", fast[-1])] if fast else [])
        lines += ["| configuration | DiT clip | decoder | + serial VAE decode | end-to-end fps | first block + "
                  "first latent frame decoded |", "|---|---|---|---|---|---|"]
        for r in configs:
            for name, d in decoders:
                total = r["clip_s"] + d["decode_s"]
                lines.append(f"| {r['label']} | {r['clip_s']:.2f} s | {name} | {total:.2f} s | "
                             f"{r['video_frames'] / total:.1f} | {r['first_block_s'] + d['first_chunk_s']:.3f} s |")
        lines.append("")
    return lines


def markdown_section(results: dict[str, Any]) -> str:
    env = results["env"]
    s = results["settings"]
    layouts = ", ".join(f"{m['model']}: {m['layout']}" for m in results["models"])
    lines = [
        f"## {env['date']} · {env.get('card')} · torch {env['torch']} (CUDA {env.get('cuda')}, cuDNN "
        f"{env.get('cudnn')}, triton {env.get('triton')}) · causal/ sha {env['causal_sha']}", "",
        f"Settings: {s['width']}×{s['height']}, {s['num_frames']} latent frames ({s['video_frames']} video frames), "
        f"batch 1, bf16, seed {s['seed']}, prompt embedding [1, 512, text_dim] with {s['text_tokens']} non-zero rows; "
        f"DiT only; {s['warmups']} warm-up + {s['repeats']} timed clips per configuration (median); random weights "
        + (f"written as safetensors ({layouts}) and read back through `causal.load_model`. "
           if all(not m["layout"].startswith("none") for m in results["models"])
           else "built straight from the random state dict (`CausalWanModel.from_state_dict`, no checkpoint "
                "file). ")
        + f"Command: `{s['command']}`.", "",
    ]
    if results["models"]:
        lines += ["| model | parameters | file | draw | write | causal.load_model |", "|---|---|---|---|---|---|"]
        lines += [f"| {m['model']} | {m['parameters'] / 1e9:.2f} B | {m['file_gb']:.1f} GB | {m['gen_s']:.1f} s | "
                  f"{m['write_s']:.1f} s | {m['load_s']:.1f} s |" for m in results["models"] if "load_s" in m]
        lines.append("")
    if results["configs"]:
        lines += baseline_table(results["configs"], tiny=s["tiny"]) + [""]
        lines.append("Per-block seconds (median over timed clips; block k = its steps + the previous block's clean "
                     "pass): " + "; ".join(f"{r['config']}: " + " ".join(f"{b:.3f}" for b in r["block_s"])
                                           for r in results["configs"]))
        lines.append("")
    if results["options"]:
        exact = {r["config"]: r for r in results["configs"]}
        lines += ["Speed options (bench/options.py):", ""]
        lines += options_table(results["options"], exact) + [""]
    if results.get("fp32_reference"):
        f = results["fp32_reference"]
        lines += [f"Error against float32 ({f['config']}: the same weights upcast, the same noise, TF32 off; "
                  f"{f['fp32_clip_s']:.1f} s; the bf16 replay of the seeded run differs by "
                  f"{_f(f['replay_rel_l2'], '{:.1e}')}): relative L2 of the final latents", "",
                  "| path | rel-L2 vs float32 |", "|---|---|"]
        lines += [f"| {k} | {v:.2e} |" for k, v in f["rel_l2_vs_fp32"].items()] + [""]
    for p in results["profiles"]:
        lines += profile_tables(p) + [""]
    if results.get("vae"):
        lines += vae_tables(results["vae"], results["configs"])
    if results.get("vae_overlap"):
        lines += ["End to end with the VAE decode overlapped (each finished block decoded while the next samples; "
                  "plain: the reference decoder on a second CUDA stream launched from the sampler's thread, "
                  "`wan_vae.OverlappedDecode`; fast: `wan_vae.FastDecoder` on its own thread and stream, "
                  "`wan_vae.ThreadedDecode`). fps = frames / (sampling + finishing the decode); first block = start "
                  "-> the first block's frames decoded; sustained = frames decoded between the first and the last "
                  "block's decode, per second; DiT = start -> sampling done (GPU); tail = sampling done -> video "
                  "ready:", "",
                  "| configuration | DiT path | decoder | clip incl. decode | end-to-end fps | first block decoded | "
                  "sustained fps | DiT | decode tail | runs |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["vae_overlap"]:
            option = r.get("option", "fused" if r.get("fused_kernels") else "exact")
            decoder = r.get("decoder", "plain") + (" (threaded)" if r.get("threaded") else "")
            lines.append(f"| {r['label']} | {option} | {decoder} | {r['clip_s']:.2f} s | {r['fps']:.1f} | "
                         f"{_f(r.get('first_block_s'), '{:.3f} s')} | {_f(r.get('sustained_fps'), '{:.1f}')} | "
                         f"{_f(r.get('dit_gpu_s'), '{:.2f} s')} | {_f(r.get('decode_tail_s'), '{:.3f} s')} | "
                         f"{r['runs_s']} |")
        lines.append("")
    for note in results["notes"]:
        lines.append(f"- {note}")
    if results["errors"]:
        lines += ["", "Errors:"] + [f"- {e}" for e in results["errors"]]
    return "\n".join(lines).rstrip() + "\n"


def print_table(results: dict[str, Any]) -> None:
    print()
    print(f"{'configuration':<46} {'fwd':>3} {'clip s':>8} {'fps':>6} {'first':>7} {'steady':>7} {'VRAM':>6} "
          f"{'det':>8} {'ref clip':>8} {'ratio':>6}")
    for r in results["configs"]:
        ref = None if results["settings"]["tiny"] else REFERENCE.get(r["config"], {}).get("clip")
        print(f"{r['label']:<46} {r['forwards_per_block']:>3} {r['clip_s']:8.3f} {r['fps']:6.1f} "
              f"{r['first_block_s']:7.3f} {_f(r['steady_block_s'], '{:.3f}'):>7} {_f(r['peak_vram_gib'], '{:.1f}'):>6} "
              f"{_f(r['determinism_rel_l2'], '{:.1e}'):>8} {_f(ref):>8} {_ratio(r['clip_s'], ref):>6}")
    exact = {r["config"]: r for r in results["configs"]}
    for r in results["options"]:
        if "error" in r:
            print(f"  option {r['option']:<14} {r['config']}: FAILED {r['error'][:100]}")
            continue
        base = exact.get(r["config"])
        print(f"  option {r['option']:<14} {r['config']:<13} clip {r['clip_s']:.3f} s "
              f"({base['clip_s'] / r['clip_s'] if base else float('nan'):.2f}x) first {r['first_block_s']:.3f} s "
              f"rel-L2 vs exact {_f(r.get('rel_l2_vs_exact'), '{:.2e}')}")
    v = results.get("vae")
    if v:
        print(f"  VAE decode plain: {v['decode_s']:.3f} s ({v['ms_per_frame']:.1f} ms / frame)")
        for r in v.get("fast", []):
            if "decode_s" in r:
                print(f"  VAE decode {r['variant']:<18} {r['decode_s']:.3f} s ({r['ms_per_frame']:.1f} ms / frame, "
                      f"{_f(r.get('speed_up'), '{:.2f}x')}) rel-L2 vs plain {_f(r.get('rel_l2_vs_plain'), '{:.2e}')}")
    for r in results.get("vae_overlap", []):
        print(f"  overlapped decode {r['config']} [{r.get('option', 'fused' if r.get('fused_kernels') else 'exact')} + "
              f"{r.get('decoder', 'plain')}]: {r['clip_s']:.3f} s ({r['fps']:.1f} fps), first block "
              f"{_f(r.get('first_block_s'), '{:.3f}')} s, sustained {_f(r.get('sustained_fps'), '{:.1f}')} fps")


# --------------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--repeats", type=int, default=2, help="timed clips per configuration (median); default 2")
    p.add_argument("--warmups", type=int, default=1)
    p.add_argument("--out", default=str(BENCH / "RESULTS.md"), help="markdown file to append a section to ('' = none)")
    p.add_argument("--json", default=None, help="also write all numbers as JSON here (rewritten after every step)")
    p.add_argument("--tiny", action="store_true", help="a tiny model at a small size on the CPU (smoke test)")
    p.add_argument("--device", default=None, help="default: cuda if available (cpu with --tiny)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--frames", type=int, default=21, help="latent frames (21 -> 81 video frames)")
    p.add_argument("--text-tokens", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-dir", default=None,
                   help="where checkpoints are written: a folder, or a comma list tried in order until one has room "
                        "(default: a temp dir); each file is deleted once loaded")
    p.add_argument("--profile", action="store_true", help="profile forwards of the first model at the last block")
    p.add_argument("--profile-forwards", type=int, default=3)
    p.add_argument("--profile-slots", default="last", help="comma list of last / first (the block profiled)")
    p.add_argument("--profile-models", default="", help="models to profile (comma list; default the first one)")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="build models straight from the random state dict (skips the file round trip)")
    p.add_argument("--fp32-reference", default="",
                   help="configuration (1.3B only) to also run in float32 with the same noise: the error of the "
                        "exact bf16 path and of every option against float32")
    p.add_argument("--options", default="", help="comma list of bench/options.py options to time (1.3B configs)")
    p.add_argument("--options-14b", default="", help="options to time on the 14B configs of --option-configs")
    p.add_argument("--option-configs", default="1.3B-4step",
                   help="configurations the options run on (comma list); default 1.3B-4step")
    p.add_argument("--option-repeats", type=int, default=2)
    p.add_argument("--option-repeats-14b", type=int, default=1)
    p.add_argument("--from-json", default=None, help="only re-render a results JSON as markdown to --out")
    p.add_argument("--profile-option", default="", help="also profile under this option")
    p.add_argument("--vae", action="store_true", help="also time a random-weight Wan2.1 VAE decode (bench/wan_vae.py)")
    p.add_argument("--vae-overlap", default="",
                   help="comma list of CONFIG[:DIT_OPTION][:plain|fast] (e.g. 1.3B-4step:fused_graphs:fast; DiT "
                        "option from bench/options.py, default exact; decoder default plain) to time end to end with "
                        "the VAE decode of each finished block overlapped: plain = reference decoder on a second "
                        "stream from the sampler's thread, fast = FastDecoder on its own thread and stream")
    p.add_argument("--budget-s", type=float, default=None,
                   help="skip optional steps (profile, options, VAE) that would start after this many seconds")
    args = p.parse_args(argv)
    if args.tiny:
        args.height, args.width, args.frames = 48, 64, 6
        args.text_tokens = min(args.text_tokens, 4)
        args.device = args.device or "cpu"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        print_table(results)
        if args.out:
            with Path(args.out).open("a") as f:
                f.write("\n" + markdown_section(results))
        return results
    started = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    configs = [CONFIGS[k.strip()] for k in args.configs.split(",") if k.strip()]
    overlap_variants = [(i.strip(), parse_overlap_variant(i)) for i in args.vae_overlap.split(",") if i.strip()]
    option_names = [o.strip() for o in args.options.split(",") if o.strip()]
    option_names_14b = [o.strip() for o in args.options_14b.split(",") if o.strip()]
    tmp = None
    if args.ckpt_dir:
        ckpt_dirs = [Path(d) for d in args.ckpt_dir.split(",") if d]
    else:
        tmp = tempfile.TemporaryDirectory(prefix="causvid_bench_")
        ckpt_dirs = [Path(tmp.name)]
    setup = Setup(device=device, height=args.height, width=args.width, num_frames=args.frames,
                  text_tokens=args.text_tokens, seed=args.seed, tiny=args.tiny, ckpt_dirs=ckpt_dirs,
                  checkpoint=not args.no_checkpoint)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {msg}", flush=True)

    def time_ok(step: str, need_s: float = 0.0) -> bool:
        if args.budget_s is None or time.perf_counter() - started + need_s < args.budget_s:
            return True
        results["notes"].append(f"skipped {step}: past the --budget-s of {args.budget_s:.0f} s")
        log(f"skip {step}: time budget")
        return False

    results: dict[str, Any] = {
        "env": environment(device),
        "settings": {"height": args.height, "width": args.width, "num_frames": args.frames,
                     "video_frames": 1 + VIDEO_FRAMES_PER_LATENT * (args.frames - 1), "seed": args.seed,
                     "text_tokens": args.text_tokens, "repeats": args.repeats, "warmups": args.warmups,
                     "tiny": args.tiny,
                     "command": "python bench/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])},
        "models": [], "configs": [], "options": [], "profiles": [], "vae": None, "vae_overlap": [],
        "fp32_reference": None,
        "notes": [], "errors": [],
    }
    log(f"environment: {json.dumps(results['env'])}")

    def save() -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))

    model_names: list[str] = []
    for c in configs:
        if c.model not in model_names:
            model_names.append(c.model)
    profile_models = [m.strip() for m in args.profile_models.split(",") if m.strip()] or model_names[:1]
    option_cfgs = [CONFIGS[k] for k in args.option_configs.split(",") if k.strip()]
    parked: dict[str, Any] = {}  # 1.3B parked on the CPU while the 14B runs, for its profile/options later
    exact_latents: dict[str, torch.Tensor] = {}
    option_latents: dict[str, torch.Tensor] = {}
    contexts: dict[str, torch.Tensor] = {}

    def run_options(name: str, model: Any, reserve_s: float = 0.0) -> None:
        from options import OPTIONS

        big = name == "14B"
        names = option_names_14b if big else option_names
        cfgs = [cfg for cfg in option_cfgs if cfg.model == name]
        # fp8 converts the model in place: every other option on every configuration runs first
        runs = [(cfg, o) for o in names if not OPTIONS[o].fp8 for cfg in cfgs]
        runs += [(cfg, o) for o in names if OPTIONS[o].fp8 for cfg in cfgs]
        for cfg, opt in runs:
            if not time_ok(f"option {opt} on {cfg.key}", (60 if name == "14B" else 10) + reserve_s):
                continue
            option = OPTIONS[opt]
            try:
                if option.fp8 and not getattr(model, "_bench_fp8", False):
                    causal.quantize_blocks_fp8(model)
                    model._bench_fp8 = True
                    free_memory()
                with option.enter():
                    row, lat = time_config(model, contexts[name], cfg, setup,
                                           args.option_repeats_14b if big else args.option_repeats, log,
                                           reference=exact_latents.get(cfg.key), option=opt,
                                           warmups=args.warmups, fused=option.fused_kernels,
                                           cuda_graphs=option.cuda_graphs)
                row["exact_option"] = option.exact
                option_latents[f"{cfg.key}:{opt}"] = lat
            except Exception as e:
                traceback.print_exc()
                row = {"config": cfg.key, "option": opt, "error": f"{type(e).__name__}: {e}"}
            results["options"].append(row)
            save()

    def run_profiles(name: str, model: Any) -> None:
        from options import OPTIONS

        for opt in ["exact"] + ([args.profile_option] if args.profile_option else []):
            for where in [w.strip() for w in args.profile_slots.split(",") if w.strip()]:
                if not time_ok(f"profile [{opt}] {name} {where}", 20 if name == "14B" else 5):
                    continue
                try:
                    fused = causal.kernels.fused_kernels(OPTIONS[opt].fused_kernels)
                    with OPTIONS[opt].enter(), fused:
                        results["profiles"].append(profile_forwards(model, contexts[name], setup,
                                                                    args.profile_forwards, opt, log, where))
                    free_memory()  # the profile's cache and text K/V
                except Exception as e:
                    traceback.print_exc()
                    results["errors"].append(f"profile [{opt}] {name} {where} failed: {type(e).__name__}: {e}")
                save()

    def run_fp32_reference(name: str, model: Any) -> None:
        if not args.fp32_reference or CONFIGS[args.fp32_reference].model != name or not time_ok("fp32 reference", 40):
            return
        if getattr(model, "_bench_fp8", False):
            results["notes"].append("fp32 reference skipped: the model's block linears were converted to fp8")
            return
        try:
            results["fp32_reference"] = fp32_reference(model, contexts[name], CONFIGS[args.fp32_reference], setup,
                                                       exact_latents, option_latents, log)
        except Exception as e:
            traceback.print_exc()
            results["errors"].append(f"fp32 reference failed: {type(e).__name__}: {e}")
        save()

    def run_vae_overlap(name: str, model: Any) -> None:
        for item, (key, option, decoder) in overlap_variants:
            if CONFIGS[key].model != name or not time_ok(f"overlapped decode {item}", 15):
                continue
            try:
                results["vae_overlap"].append(time_overlapped_decode(model, contexts[name], CONFIGS[key], setup,
                                                                     option, decoder, 2, log))
            except Exception as e:
                traceback.print_exc()
                results["errors"].append(f"overlapped decode {item} failed: {type(e).__name__}: {e}")
            free_memory()
            save()

    def extras(name: str, model: Any, reserve_s: float) -> None:
        run_vae_overlap(name, model)
        if args.profile and name in profile_models:
            run_profiles(name, model)
        if option_names or option_names_14b:
            run_options(name, model, reserve_s=reserve_s)
        run_fp32_reference(name, model)

    try:
        for name in model_names:
            try:
                model, info = prepare_model(name, setup, log)
            except Exception as e:
                traceback.print_exc()
                results["errors"].append(f"{name}: preparing the model failed: {type(e).__name__}: {e}")
                save()
                continue
            results["models"].append(info)
            contexts[name] = make_context(model.config, setup)
            for cfg in configs:
                if cfg.model != name:
                    continue
                log(f"{cfg.key}: {cfg.label}")
                try:
                    row, latents = time_config(model, contexts[name], cfg, setup, args.repeats, log,
                                               warmups=args.warmups)
                except Exception as e:
                    traceback.print_exc()
                    results["errors"].append(f"{cfg.key}: {type(e).__name__}: {e}")
                    free_memory()
                    continue
                if device.type == "cuda" and hasattr(causal, "working_memory_bytes"):
                    est = causal.working_memory_bytes(model, batch=1, num_frames=args.frames, height=args.height,
                                                      width=args.width)
                    weights = sum(p.numel() * p.element_size() for p in model.parameters())
                    row["estimated_vram_gib"] = (est + weights) / GiB
                results["configs"].append(row)
                exact_latents[cfg.key] = latents
                save()
            if name == model_names[0] and len(model_names) > 1:
                model.to("cpu")  # park: its profile/options run after the other models' baselines
                parked[name] = model
            else:
                extras(name, model, reserve_s=120.0 if parked else 0.0)
                del model
            free_memory()
        for name, model in parked.items():
            model.to(device)
            free_memory()
            extras(name, model, reserve_s=0.0)
            del model
            free_memory()
        parked.clear()
        if args.vae and time_ok("VAE decode", 30):
            try:
                import wan_vae

                results["vae"] = wan_vae.bench_decode(device, setup.num_frames, args.height, args.width, log,
                                                      tiny=args.tiny)
            except Exception as e:
                traceback.print_exc()
                results["errors"].append(f"VAE decode failed: {type(e).__name__}: {e}")
            save()
    finally:
        if tmp is not None:
            tmp.cleanup()
        save()
        print_table(results)
        if args.out:
            section = markdown_section(results)
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as f:
                f.write(("\n" if out.exists() and out.stat().st_size else "") + section)
            log(f"appended to {out}")
    return results


if __name__ == "__main__":
    main()
