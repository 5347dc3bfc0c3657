"""Profiling a few forwards of one block: CUDA time per op family (a `record_function` label around each
family's function) and per kernel (kernel classes by name, the top kernels); and whole blocks of a video on the
GPU timeline: how much of a steady block is CUDA graph replays, other kernels, and idle (`BlockMarks`,
`block_breakdown`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

import causal
from bench.environment import sync
from bench.models import Setup
from bench.timing import Clock


CATEGORY_PATCHES = (
    # (category, owner, attribute); owner is resolved lazily
    ("gemm", "torch.nn.Linear", "forward"),
    ("conv (patch embedding)", "torch.nn.Conv3d", "forward"),
    ("attention (SDPA)", "causal.model", "sdpa"),  # cross-attention
    ("attention (SDPA)", "causal.kernels", "sdpa"),  # self-attention (Glue.self_attention)
    ("attention (FlashAttention-4)", "causal.kernels", "flash4"),
    ("rope (float64)", "causal.kernels", "apply_rope"),
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
                     log: Callable[[str], None], where: str = "last", fused: bool = False) -> dict[str, Any]:
    """Profile `n_forwards` forwards of one block at the last slot (attention over all num_frames latent
    frames) or the first (over 3 frames); `fused`: the glue as compiled kernels (on CUDA; eager elsewhere)."""
    from torch.profiler import ProfilerActivity, profile

    device = setup.device
    glue = causal.kernels.COMPILED if fused and device.type == "cuda" else causal.kernels.EAGER
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
        return model(x, timestep, text, cache=cache, cache_frame=slot, rope_frame=slot, glue=glue)

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


# ------------------------------------------------------------------------------------------------------------
# Whole blocks on the GPU timeline: inside CUDA graph replays, other kernels, idle


BLOCK_MARKER = "bitwise_not"
"""The kernel `BlockMarks.mark` launches at the end of every block: its starts cut the GPU timeline into blocks."""


@dataclass
class Kernel:
    name: str
    start: float
    end: float
    in_replay: bool
    """Launched by a CUDA graph replay (its runtime call was cudaGraphLaunch)."""


class BlockMarks:
    """A one-element kernel at the end of every block (where `mark()` is called), and CUDA events around every
    replay of `graphs`' captures, each tagged with the block it falls in."""

    def __init__(self, device: torch.device, graphs: Any = None) -> None:
        self.flag = torch.zeros(1, dtype=torch.int32, device=device)
        self.cuda = device.type == "cuda"
        self.block_ends: list[Any] = []
        self.replays: list[tuple[int, Any, Any]] = []  # (block, start event, end event)
        self._restore: list[tuple[Any, Callable]] = []
        for captured in (graphs.graphs.values() if graphs is not None else ()):
            self._restore.append((captured, captured.replay))
            captured.replay = self._timed(captured.replay)

    def _timed(self, replay: Callable[[], None]) -> Callable[[], None]:
        def timed() -> None:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            replay()
            end.record()
            self.replays.append((len(self.block_ends), start, end))
        return timed

    def mark(self) -> None:
        self.flag.bitwise_not_()
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.block_ends.append(end)

    def restore(self) -> None:
        for captured, replay in self._restore:
            captured.replay = replay
        self._restore.clear()

    def split(self, steady_from: int) -> list[dict[str, float]]:
        """Per block from `steady_from` on (after the device synchronized): its seconds between two marks, the
        seconds inside replays and their count."""
        rows = []
        for b in range(max(steady_from, 1), len(self.block_ends)):
            inside = [s.elapsed_time(e) / 1000 for blk, s, e in self.replays if blk == b]
            rows.append({"block": b, "block_s": self.block_ends[b - 1].elapsed_time(self.block_ends[b]) / 1000,
                         "replay_s": sum(inside), "replays": len(inside)})
        return rows


def kineto_kernels(prof: Any) -> list[Kernel]:
    """Every GPU activity of a torch.profiler run (kernels, copies, sets), in microseconds, with whether a graph
    replay launched it (matched through the CUDA runtime call's correlation id)."""
    events = prof.profiler.kineto_results.events()
    graph_launches = {e.correlation_id() for e in events if e.name() == "cudaGraphLaunch"}
    out = []
    for e in events:
        if e.device_type() != torch.autograd.DeviceType.CUDA:
            continue
        ids = {e.correlation_id(), e.linked_correlation_id()}
        start = e.start_ns() / 1000
        out.append(Kernel(e.name(), start, start + e.duration_ns() / 1000, bool(ids & graph_launches)))
    return sorted(out, key=lambda k: k.start)


def block_breakdown(kernels: list[Kernel], steady_from: int, top: int = 24) -> dict[str, Any]:
    """Steady blocks (the GPU time between two markers, from block `steady_from` on), averaged: wall, the union of
    all activity, of replayed kernels, the time no kernel ran (idle), and the other kernels by name."""
    from bench.timeline import _clip, _length, _union

    marks = [k.start for k in kernels if BLOCK_MARKER in k.name.lower()]
    windows = list(zip(marks[steady_from - 1:], marks[steady_from:])) if steady_from >= 1 else []
    if not windows:
        return {"blocks": 0}
    wall = busy = replayed = 0.0
    others: dict[str, list[float]] = {}
    replays: dict[str, list[float]] = {}
    for lo, hi in windows:
        inside = [k for k in kernels if lo <= k.start < hi]
        wall += hi - lo
        busy += _length(_clip(_union([(k.start, k.end) for k in inside]), lo, hi))
        replayed += _length(_clip(_union([(k.start, k.end) for k in inside if k.in_replay]), lo, hi))
        for k in inside:
            entry = (replays if k.in_replay else others).setdefault(k.name, [0.0, 0])
            entry[0] += k.end - k.start
            entry[1] += 1
    n = len(windows)
    ms = 1000.0 * n  # microseconds summed over n blocks -> ms per block

    def table(kernels: dict[str, list[float]]) -> list[dict[str, Any]]:
        return [{"kernel": name[:110], "ms_per_block": d / ms, "calls_per_block": c / n}
                for name, (d, c) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]]

    return {"blocks": n, "block_ms": wall / ms, "busy_ms": busy / ms, "idle_ms": (wall - busy) / ms,
            "replay_ms": replayed / ms, "other_kernels_ms": sum(v[0] for v in others.values()) / ms,
            "replay_kernels_ms": sum(v[0] for v in replays.values()) / ms,
            "other_kernels": table(others), "replay_kernels": table(replays)}
