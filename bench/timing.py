"""Timing the sampler: one clip (`run_clip`), a configuration's warm-up + timed clips and its report row
(`time_config`), and the float32 reference run the bf16 paths are measured against (`fp32_reference`)."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

import causal
from bench.configs import BenchConfig, kernel_bound_s, video_frames
from bench.environment import GiB, free_memory, sync
from bench.models import Setup


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


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    den = b64.norm().item()
    return float((a64 - b64).norm().item() / den) if den else float("nan")


@dataclass
class Clip:
    seconds: float
    gpu_seconds: float
    first_block: float
    block_seconds: list[float]
    peak_vram: float | None
    latents: torch.Tensor


def run_clip(model: Any, context: torch.Tensor, schedule: Any, setup: Setup, fused: bool = False,
             graphs: Any = None, flash: bool = False) -> Clip:
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
    gen = causal.generate(model, context, causal.Video(setup.height, setup.width, num_frames=setup.num_frames),
                          schedule, noise=causal.Noise(seed=setup.seed),
                          compute=causal.Compute(fused_kernels=fused, graphs=graphs, flash_attention=flash),
                          output=causal.Output(progress=progress))
    end = clock.mark()
    sync(device)
    t1 = time.perf_counter()
    peak = torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None
    ends = [clock.seconds(start, m) for m in marks]
    blocks = [b - a for a, b in zip(ends, ends[1:])]
    return Clip(seconds=t1 - t0, gpu_seconds=clock.seconds(start, end), first_block=ends[0], block_seconds=blocks,
                peak_vram=peak, latents=gen.latents.detach().float().cpu())


def cuda_graphs_for(model: Any, setup: Setup) -> Any:
    """One causal.CudaGraphs for the setup's clip size, reused by every clip of a configuration."""
    return causal.CudaGraphs(model, batch=1, height=setup.height, width=setup.width, num_frames=setup.num_frames,
                             device=setup.device)


def time_config(model: Any, context: torch.Tensor, cfg: BenchConfig, setup: Setup, repeats: int,
                log: Callable[[str], None], reference: torch.Tensor | None = None, option: str = "exact",
                warmups: int = 1, fused: bool = False, cuda_graphs: bool = False,
                flash: bool = False) -> tuple[dict[str, Any], torch.Tensor]:
    schedule = causal.SCHEDULES[cfg.schedule]
    graphs = cuda_graphs_for(model, setup) if cuda_graphs else None
    for i in range(warmups):
        w = run_clip(model, context, schedule, setup, fused, graphs, flash)
        log(f"  {cfg.key} [{option}] warm-up {i + 1}: {w.seconds:.3f} s")
    clips: list[Clip] = []
    for i in range(repeats):
        c = run_clip(model, context, schedule, setup, fused, graphs, flash)
        clips.append(c)
        log(f"  {cfg.key} [{option}] clip {i + 1}: {c.seconds:.3f} s (GPU {c.gpu_seconds:.3f} s), first block "
            f"{c.first_block:.3f} s, blocks {' '.join(f'{b:.3f}' for b in c.block_seconds)}"
            + (f", peak {c.peak_vram:.2f} GiB" if c.peak_vram is not None else ""))
    clip_s = statistics.median(c.seconds for c in clips)
    num_blocks = setup.num_frames // 3
    steady = [statistics.median(c.block_seconds) for c in clips if c.block_seconds]
    frames = video_frames(setup.num_frames)
    latents = clips[0].latents
    row: dict[str, Any] = {
        "config": cfg.key, "label": cfg.label, "model": cfg.model, "schedule": cfg.schedule, "option": option,
        "forwards_per_block": schedule.forwards_per_block, "blocks": num_blocks, "repeats": repeats,
        "clip_s": clip_s, "clip_s_all": [c.seconds for c in clips],
        "gpu_clip_s": statistics.median(c.gpu_seconds for c in clips),
        "fps": frames / clip_s, "video_frames": frames,
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
    replay = causal.generate(model, context, causal.Video(setup.height, setup.width, num_frames=setup.num_frames),
                             schedule, noise=causal.Noise(initial=noise, renoise=renoise)).latents.float().cpu()
    replay_err = rel_l2(replay, exact_latents[cfg.key]) if cfg.key in exact_latents else None
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    model.float()
    try:
        noise, renoise = sources(torch.float32)
        sync(device)
        t0 = time.perf_counter()
        ref = causal.generate(model, context.float(),
                              causal.Video(setup.height, setup.width, num_frames=setup.num_frames), schedule,
                              noise=causal.Noise(initial=noise, renoise=renoise),
                              compute=causal.Compute(dtype=torch.float32)).latents.float().cpu()
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
