"""Where the stream's time goes, thread by thread: `Timeline` wraps the pack's streaming classes (this process
only, product code unchanged) and records, per block, when the sampler handed it over and how long it waited for
room in the queue, how long its decode took and how long its write took; `trace_summary` reads a torch.profiler
Chrome trace of a run and says, inside a window of host time, how busy each CUDA stream was, how much of that
overlapped the other streams, and where each host thread waited in the CUDA runtime.

The question these answer: with the DiT on the sampler's stream and the VAE on the decoder's, do the two overlap
(blocks written at max(DiT, decode)) or run in turn (DiT + decode), and which side waits for which.
"""

from __future__ import annotations

import functools
import gzip
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

STEADY_SKIP = (2, 3)
"""Blocks left out of the steady-state medians: the first two (compiles, captures, an empty queue) and the last
three (the sampler has finished; the decoder drains the queue alone)."""


@dataclass
class Spans:
    """(start, end) host times of one kind of event, in order."""

    spans: list[tuple[float, float]] = field(default_factory=list)

    def add(self, start: float, end: float) -> None:
        self.spans.append((start, end))

    def durations(self) -> list[float]:
        return [b - a for a, b in self.spans]


@dataclass
class RunTimeline:
    puts: Spans = field(default_factory=Spans)
    """The sampler's hand-overs: start = block finished, end = it went into the queue (the wait = backpressure)."""
    decodes: Spans = field(default_factory=Spans)
    writes: Spans = field(default_factory=Spans)

    def summary(self) -> dict[str, Any]:
        """Steady-state medians (seconds per block): the sampler's own time per block (a put's end to the next
        put's start), its wait for room in the queue, the decode, the write, and the decoder thread's idle time
        (a write's end to the next decode's start)."""
        puts, decodes, writes = self.puts.spans, self.decodes.spans, self.writes.spans
        sampler = [b[0] - a[1] for a, b in zip(puts, puts[1:])]
        idle = [d[0] - w[1] for w, d in zip(writes, decodes[1:])]

        def steady(values: list[float]) -> float | None:
            first, last = STEADY_SKIP
            kept = values[first:len(values) - last] or values
            return round(statistics.median(kept), 4) if kept else None

        return {"blocks": len(puts), "sampler_s": steady(sampler), "put_wait_s": steady(self.puts.durations()),
                "decode_s": steady(self.decodes.durations()), "write_s": steady(self.writes.durations()),
                "decoder_idle_s": steady(idle)}


class Timeline:
    """Wraps `StreamingDecoder.decode`, `BlockStream.put` and `Mp4Writer.write` of the pack's streaming module;
    while `current` is set, each call lands in it."""

    def __init__(self, streaming: Any) -> None:
        self.current: RunTimeline | None = None
        self.lock = threading.Lock()
        self._wrap(streaming.StreamingDecoder, "decode", "decodes")
        self._wrap(streaming.BlockStream, "put", "puts")
        self._wrap(streaming.Mp4Writer, "write", "writes")

    def _wrap(self, owner: type, name: str, kind: str) -> None:
        method = getattr(owner, name)

        label = f"bench::{kind}"  # a span in a profiler trace too (`steady_window` finds the blocks by it)

        @functools.wraps(method)
        def timed(obj, *args, **kwargs):
            start = time.perf_counter()
            try:
                with torch.profiler.record_function(label):
                    return method(obj, *args, **kwargs)
            finally:
                run = self.current
                if run is not None:
                    with self.lock:
                        getattr(run, kind).add(start, time.perf_counter())

        setattr(owner, name, timed)

    def begin(self) -> RunTimeline:
        self.current = RunTimeline()
        return self.current

    def finish(self) -> None:
        self.current = None


# ------------------------------------------------------------------------------------------------------------
# torch.profiler traces


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in intervals)


def _intersection(x: list[tuple[float, float]], y: list[tuple[float, float]]) -> float:
    """Total length of the overlap of two sorted, disjoint interval lists."""
    i = j = 0
    total = 0.0
    while i < len(x) and j < len(y):
        a, b = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        total += max(0.0, b - a)
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return total


def _clip(intervals: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi]


def load_trace(path: str | Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def steady_window(events: list[dict]) -> tuple[float, float] | None:
    """The trace's steady blocks: from the sampler's hand-over of block STEADY_SKIP[0] + 1 to that of the block
    STEADY_SKIP[1] before its last (Timeline's `bench::puts` spans); None with too few blocks."""
    puts = sorted(float(e["ts"]) for e in events if e.get("ph") == "X" and e.get("name") == "bench::puts")
    first, last = STEADY_SKIP
    if len(puts) < first + last + 2:
        return None
    return puts[first], puts[len(puts) - 1 - last]


def trace_summary(events: list[dict], window_us: tuple[float, float] | None = None) -> dict[str, Any]:
    """GPU busy time per CUDA stream (kernels, copies, memsets), the busy time shared by the two busiest streams,
    and per host thread the CUDA runtime calls that took the most time, all inside `window_us` (the trace's
    clock; default: the whole trace). Durations in ms; the host spans of Timeline's labels (`bench::*`) in the
    window are summed per label."""
    gpu: dict[int, list[tuple[float, float]]] = {}
    runtime: dict[int, dict[str, list[float]]] = {}
    labels: dict[str, list[tuple[float, float]]] = {}
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        span = (float(e["ts"]), float(e["ts"]) + float(e["dur"]))
        category = e.get("cat", "")
        if category in ("kernel", "gpu_memcpy", "gpu_memset"):
            gpu.setdefault(int(e.get("args", {}).get("stream", e.get("tid", 0))), []).append(span)
        elif category == "user_annotation" and e.get("name", "").startswith("bench::"):
            labels.setdefault(e["name"], []).append(span)
        elif category == "cuda_runtime" or category == "cuda_driver":
            if window_us is None or (window_us[0] <= span[0] < window_us[1]):
                runtime.setdefault(int(e.get("tid", 0)), {}).setdefault(e["name"], []).append(span[1] - span[0])
    if window_us is None:  # the GPU's busy span, or the host's where nothing ran on a GPU
        spans = [iv for ivs in gpu.values() for iv in ivs] or \
            [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events if e.get("ph") == "X" and "dur" in e]
        starts, ends = [a for a, _ in spans], [b for _, b in spans]
        window_us = (min(starts), max(ends)) if starts else (0.0, 0.0)
    lo, hi = window_us
    busy = {s: _union(_clip(spans, lo, hi)) for s, spans in gpu.items()}
    busy = {s: u for s, u in busy.items() if u}
    ranked = sorted(busy, key=lambda s: -_length(busy[s]))
    any_busy = _union([iv for u in busy.values() for iv in u])
    summary: dict[str, Any] = {
        "window_ms": round((hi - lo) / 1e3, 2),
        "gpu_busy_ms": round(_length(any_busy) / 1e3, 2),
        "streams": {str(s): {"busy_ms": round(_length(busy[s]) / 1e3, 2),
                             "kernels": sum(1 for a, b in gpu[s] if lo <= a < hi)} for s in ranked},
    }
    summary["labels_ms"] = {name: round(_length(_clip(spans, lo, hi)) / 1e3, 2) for name, spans in labels.items()}
    if len(ranked) >= 2:
        summary["top_two_overlap_ms"] = round(_intersection(busy[ranked[0]], busy[ranked[1]]) / 1e3, 2)
    names = {int(e["tid"]): e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name" and "tid" in e}
    names = {tid: f"{name} ({tid})" for tid, name in names.items()}
    summary["threads"] = {
        names.get(tid, str(tid)): {name: {"calls": len(d), "ms": round(sum(d) / 1e3, 2)}
                                  for name, d in sorted(calls.items(), key=lambda kv: -sum(kv[1]))[:6]}
        for tid, calls in runtime.items()}
    return summary
