"""The VAE runs: decoding 21 random latent frames with the plain decoder and each step of the fast
decoder's ladder (`--vae`, `bench_decode`), and sampling while each finished block is decoded
(`--vae-overlap`, `time_overlapped_decode`)."""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from typing import Any, Callable, Iterator

import torch

import causal
from bench.configs import CONFIGS, BenchConfig, video_frames
from bench.environment import GiB, free_memory, sync
from bench.models import Setup
from bench.options import OPTIONS
from bench.timing import Clock, cuda_graphs_for
from bench.wan_vae import Decoder, make_decoder, video_rel_l2
from bench.wan_vae_fast import FAST_LADDER, FastDecoder, FastOptions
from bench.wan_vae_stream import OverlappedDecode, ThreadedDecode
from causal.kernels import fused_unavailable as compile_unavailable


@contextlib.contextmanager
def kept_cudnn_benchmark() -> Iterator[None]:
    """Restore torch.backends.cudnn.benchmark afterwards (a fast decoder turns it on)."""
    before = torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _decode_once(decode: Callable[[torch.Tensor, Callable[[int], None]], torch.Tensor], latents: torch.Tensor,
                 device: torch.device) -> tuple[float, list[float], torch.Tensor, float | None]:
    """One timed decode: (seconds, marks after latent frames 0, 2, 5, 8, … from the start, video, peak GiB)."""
    cuda = device.type == "cuda"
    clock = Clock(device)
    marks: list[Any] = []

    def chunk_done(i: int) -> None:
        if i == 0 or i % 3 == 2:
            marks.append(clock.mark())

    sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    marks.append(clock.mark())
    video = decode(latents, chunk_done)
    sync(device)
    total = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / GiB if cuda else None
    return total, [clock.seconds(marks[0], m) for m in marks[1:]], video, peak


def _time_decode(decode: Callable[[torch.Tensor, Callable[[int], None]], torch.Tensor], latents: torch.Tensor,
                 device: torch.device, repeats: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Time `decode(latents, chunk_done)` (warm-up + `repeats`, median): whole video, first latent frame,
    first 3-latent block and the later blocks (marks after latent frames 0, 2, 5, 8, …)."""
    cuda = device.type == "cuda"
    _decode_once(decode, latents, device)  # warm-up (cuDNN plans, compilation)
    runs = [_decode_once(decode, latents, device) for _ in range(repeats)]
    total = statistics.median(r[0] for r in runs)
    ends = [statistics.median(r[1][k] for r in runs) for k in range(len(runs[0][1]))]
    video = runs[0][2]
    frames = video.shape[2]
    blocks = [b - a for a, b in zip(ends[1:], ends[2:])]  # 3 latent frames -> 12 video frames each
    return {
        "decode_s": round(total, 4),
        "frames": frames,
        "ms_per_frame": round(1000 * total / frames, 2),
        "first_chunk_s": round(ends[0], 4),
        "first_block_s": round(ends[1], 4) if len(ends) > 1 else None,
        "block_of_3_latents_s": round(statistics.median(blocks), 4) if blocks else None,
        "block_s": [round(b, 4) for b in blocks],
        "peak_vram_gib": round(max(r[3] for r in runs), 2) if cuda else None,
        "finite": bool(torch.isfinite(video).all()),
        "runs_s": [round(r[0], 3) for r in runs],
    }, video


def bench_decode(device: torch.device, num_frames: int, height: int, width: int, log: Callable[[str], None],
                 tiny: bool = False, repeats: int = 2,
                 ladder: tuple[tuple[str, str, FastOptions], ...] = FAST_LADDER) -> dict[str, Any]:
    """Time decoding `num_frames` random latent frames at height×width (bf16) with the plain decoder
    (top-level keys) and each step of `ladder` (`fast`: its numbers and its video's relative L2 against
    the plain decoder's); median of `repeats`."""
    dec = make_decoder(device, tiny)
    params = sum(p.numel() for p in dec.parameters())
    g = torch.Generator(device).manual_seed(3)
    latents = torch.randn(1, 16, num_frames, height // 8, width // 8, generator=g, device=device).to(torch.bfloat16)
    expected = (1, 3, video_frames(num_frames), height, width)
    result, plain = _time_decode(dec.decode, latents, device, repeats)
    if tuple(plain.shape) != expected:
        raise RuntimeError(f"decoder output {tuple(plain.shape)}, expected {expected}")
    result = {"parameters_m": round(params / 1e6, 1), **result, "fast": []}
    log(f"  VAE decode [plain]: {result}")
    compiled_note = compile_unavailable(device)
    with kept_cudnn_benchmark():
        for name, what, options in ladder:
            fast = FastDecoder(dec, options)
            row, video = _time_decode(fast.decode, latents, device, repeats)
            row = {"variant": name, "what": what, **{k: getattr(options, k) for k in (
                "chunk_frames", "conv_padding", "channels_last", "cudnn_benchmark", "compiled")}, **row}
            if options.compiled and compiled_note:
                row["compiled"] = False
                row["note"] = f"eager: {compiled_note}"
            row["rel_l2_vs_plain"] = video_rel_l2(video, plain) if video.shape == plain.shape else None
            row["speed_up"] = round(result["decode_s"] / row["decode_s"], 2) if row["decode_s"] else None
            log(f"  VAE decode [{name}]: {row}")
            result["fast"].append(row)
            del fast, video
    return result


def parse_overlap_variant(item: str) -> tuple[str, str, str]:
    """'1.3B-4step[:DiT option][:plain|fast]' -> (configuration, DiT option of bench/options.py, decoder)."""
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


def new_overlapped_decode(decoder: Decoder, fast: FastDecoder | None,
                          device: torch.device) -> ThreadedDecode | OverlappedDecode:
    """One video's decode: `fast` on its worker thread if given, else the plain decoder on a second stream."""
    if fast is not None:
        return ThreadedDecode(fast, device)
    return OverlappedDecode(decoder, device)


def sample_decoding(model: Any, context: torch.Tensor, setup: Setup, schedule: causal.Schedule, fused: bool,
                    decode: ThreadedDecode | OverlappedDecode | None, graphs: Any) -> None:
    """One clip; each finished block's clean latents go to `decode` (if any) from the progress callback."""
    last_step = schedule.num_steps - 1

    def progress(p: Any) -> None:
        if p.step == last_step:
            decode.push(p.denoised)

    causal.generate(model, context, height=setup.height, width=setup.width, schedule=schedule,
                    num_frames=setup.num_frames, seed=setup.seed,
                    progress=progress if decode is not None else None,
                    fused_kernels=fused, graphs=graphs)


def overlapped_clip(model: Any, context: torch.Tensor, setup: Setup, schedule: causal.Schedule, fused: bool,
                    decode: ThreadedDecode | OverlappedDecode, graphs: Any) -> dict[str, float]:
    """One clip sampled while `decode` decodes its blocks, and the video finished: its timings."""
    device = setup.device
    frames = video_frames(setup.num_frames)
    first_frames = video_frames(3)  # the first block's video frames
    clock = Clock(device)
    gc.collect()
    sync(device)
    t0 = time.perf_counter()
    start = clock.mark()
    sample_decoding(model, context, setup, schedule, fused, decode, graphs)
    sampled = clock.mark()
    video = decode.finish()
    end = clock.mark()
    sync(device)
    seconds = time.perf_counter() - t0
    if video.shape[2] != frames:
        raise RuntimeError(f"decoded {video.shape[2]} frames, expected {frames}")
    done = decode.done
    between = clock.seconds(done[0], done[-1])
    return {"seconds": seconds, "first": clock.seconds(start, done[0]),
            "sustained_fps": (frames - first_frames) / between if between > 0 else float("nan"),
            "dit_gpu": clock.seconds(start, sampled), "tail": clock.seconds(sampled, end)}


def time_overlapped_decode(model: Any, context: torch.Tensor, cfg: BenchConfig, setup: Setup, option_name: str,
                           decoder_kind: str, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """End to end with the VAE: each finished block is decoded while the next one samples, fed from the
    progress callback. `plain`: wan_vae_stream.OverlappedDecode (the reference decoder on a second stream,
    launched from the sampler's thread); `fast`: wan_vae_stream.ThreadedDecode (FastDecoder on its own thread
    and stream). Clip = sampling + finishing the decode; also the first block's latency (start -> its frames
    decoded) and the sustained rate (frames decoded between the first and the last block's decode)."""
    option = OPTIONS[option_name]
    device = setup.device
    decoder = make_decoder(device, setup.tiny)
    fast = FastDecoder(decoder) if decoder_kind == "fast" else None
    schedule = causal.SCHEDULES[cfg.schedule]
    fused = option.fused_kernels
    frames_per_block = 3
    frames = video_frames(setup.num_frames)

    threaded = fast is not None and device.type == "cuda"  # ThreadedDecode decodes synchronously off CUDA
    label = f"{option_name} + {decoder_kind} decoder{' (threaded)' if threaded else ''}"
    with option.enter(), kept_cudnn_benchmark():
        graphs = cuda_graphs_for(model, setup) if option.cuda_graphs else None
        # Warm-ups: the decoder alone, on the thread it will run on (cuDNN plans and benchmarks are per
        # thread; compiled kernels), then the DiT alone (its compiled kernels, graph captures), so that
        # nothing compiles or captures while both run; then one clip together.
        g = torch.Generator(device).manual_seed(5)
        warm = new_overlapped_decode(decoder, fast, device)
        for _ in range(setup.num_frames // frames_per_block):
            warm.push(torch.randn(1, 16, frames_per_block, setup.height // 8, setup.width // 8, generator=g,
                                  device=device).to(torch.bfloat16))
        warm.finish()
        del warm
        sample_decoding(model, context, setup, schedule, fused, None, graphs)
        w = overlapped_clip(model, context, setup, schedule, fused, new_overlapped_decode(decoder, fast, device),
                            graphs)
        log(f"  {cfg.key} [{label}] warm-up with overlapped decode: {w['seconds']:.3f} s")
        runs = [overlapped_clip(model, context, setup, schedule, fused, new_overlapped_decode(decoder, fast, device),
                                graphs) for _ in range(repeats)]
        del graphs
    free_memory()
    seconds = statistics.median(r["seconds"] for r in runs)
    row = {"config": cfg.key, "label": cfg.label, "option": option_name, "decoder": decoder_kind,
           "threaded": threaded, "fused_kernels": option.fused_kernels,
           "cuda_graphs": option.cuda_graphs, "clip_s": seconds, "frames": frames, "fps": frames / seconds,
           "runs_s": [round(r["seconds"], 3) for r in runs],
           "first_block_s": statistics.median(r["first"] for r in runs),
           "sustained_fps": statistics.median(r["sustained_fps"] for r in runs),
           "dit_gpu_s": statistics.median(r["dit_gpu"] for r in runs),
           "decode_tail_s": statistics.median(r["tail"] for r in runs)}
    log(f"  {cfg.key} [{label}] with overlapped VAE decode: {seconds:.3f} s ({row['fps']:.1f} fps, "
        f"{frames} frames), first block decoded {row['first_block_s']:.3f} s, sustained "
        f"{row['sustained_fps']:.1f} fps, DiT {row['dit_gpu_s']:.3f} s + decode tail {row['decode_tail_s']:.3f} s, "
        f"runs {row['runs_s']}")
    return row
