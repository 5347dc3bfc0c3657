"""CUDA graphs of the block forward, kept with their KV cache across blocks, fragments and `generate` calls.

After the glue is fused, a 1.3B forward spends much of its time launching kernels (bench/RESULTS.md).
`CudaGraphs` owns a KV cache for one video shape and captures the forward once per *key*: the chunk's shape,
its cache slot (which fixes where its keys go and how many keys attention reads) and the glue. The first call
of a key runs eagerly (its result is used) and captures; later calls copy their inputs into the captured
buffers and replay. A replay runs the same kernels on the same data, so the numbers do not change.

What changes from one call of a key to the next is data in those buffers, never a constant of the capture:
the latents, the timesteps and the RoPE phases of the chunk's position. So one capture serves every policy:
`fragments` (position = slot), `rolling` / `sink` (once the window is full every block goes to the same slot
at a growing position; the eviction before it is an ordinary copy within the cache, outside the graph) and
`recompute` (the rebuilt context and the block at fixed slots). Forwards that skip protected sink rows (a
prompt switch's re-cache, rare) run eagerly on the same cache. A policy that rotates keys when the cache is read
(`rope_at_read`) gives the cache a table of key phases before each forward; the graphs copy it into one buffer of
their own when it changes, and every capture reads that buffer.

A graph reads the weights at the addresses they had when it was captured. A host that moves them meanwhile
(ComfyUI unloading part of the model to make room for another) would have the replays read freed memory, so every
forward first checks the addresses: where any moved, the graphs are dropped and captured again once the weights
all sit on the device, and until then the forwards run eagerly on the same cache (the same numbers).

Under sequence parallelism (`parallel`, `causal.parallel`) each rank's graphs hold its heads of the cache and
capture its share of the forward, the NCCL exchanges included: every rank captures and replays the same keys in
the same order, as it runs the same loop.

It holds the cache's memory (5.6 GiB for 1.3B at 832×480, 21 frames) and the graphs' working memory for as long
as it lives; `release()` frees both at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from . import kernels
from .kernels import EAGER, Glue
from .kv_cache import CrossAttentionKV
from .kv_cache_fp8 import video_cache
from .model import CausalWanModel
from .parallel import SequenceParallel

log = logging.getLogger("comfyui-causvid")


def allocator_unsupported() -> str | None:
    """None when this process's CUDA allocator can capture the forward, else why not. Under PyTorch's
    cudaMallocAsync backend (ComfyUI's default on most NVIDIA cards) capturing a compiled (Triton) kernel fails with
    "CUDA driver error: invalid argument" and the failed capture then aborts the process when its memory is freed
    (seen on an H200, torch 2.11): the graphs need the native caching allocator."""
    if torch.cuda.is_available() and torch.cuda.get_allocator_backend() != "native":
        return (f"CUDA graphs need PyTorch's native CUDA allocator, not {torch.cuda.get_allocator_backend()} "
                "(in ComfyUI: start it with --disable-cuda-malloc)")
    return None


@dataclass
class _Captured:
    replay: Callable[[], None]
    x: torch.Tensor
    timestep: torch.Tensor
    phases: torch.Tensor
    out: torch.Tensor
    position: tuple[int, float]
    """The position and offset whose phases `phases` holds now (copied again only when they change)."""


class CudaGraphs:
    def __init__(self, model: CausalWanModel, *, batch: int, height: int, width: int, num_frames: int,
                 dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cuda",
                 kv_cache_fp8: bool = False, parallel: SequenceParallel | None = None) -> None:
        device = self._check_device(torch.device(device))
        self.model = model
        self.shape = (batch, height, width, num_frames, dtype, device)
        self.parallel = parallel
        self.cache = video_cache(model.config, kv_cache_fp8, batch=batch, height=height, width=width,
                                 num_frames=num_frames, dtype=dtype, device=device,
                                 num_heads=None if parallel is None else parallel.local_heads(model.config))
        self.text: CrossAttentionKV | None = None
        self.graphs: dict[tuple, _Captured] = {}
        self.key_phases: torch.Tensor | None = None  # the buffer the captures read the cache's key phases from
        self._key_phases_from: torch.Tensor | None = None  # the table last copied into it
        self.captures = 0
        self.replays = 0
        self.dropped = 0
        """How many times the weights moved under captured graphs (each time they were all dropped)."""
        self._weights: list[tuple[torch.Tensor, int]] = []  # what the captures read: (tensor, its address then)
        self._start_capturing(device)

    # -- the capture itself (a CPU stand-in in the tests overrides these two) ---------------------

    @staticmethod
    def _check_device(device: torch.device) -> torch.device:
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device.type}")
        if (why := allocator_unsupported()) is not None:
            raise ValueError(why)
        return torch.device("cuda", torch.cuda.current_device()) if device.index is None else device

    def _start_capturing(self, device: torch.device) -> None:
        self.pool = torch.cuda.graph_pool_handle()  # the graphs never run concurrently: they share memory
        self.stream = torch.cuda.Stream(device)

    def _capture(self, run: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, Callable[[], None], torch.Tensor]:
        """Run `run` eagerly (its result is returned first), then capture it: (eager result, replay, the
        captured output buffer that each replay rewrites)."""
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = run()  # eager; also warms this stream up
            graph = torch.cuda.CUDAGraph()
            # thread_local: a decoder working on another thread meanwhile (the stream's worker) may still allocate;
            # but it may not compile a kernel: Inductor synchronizes the device, which breaks a capture under way
            with kernels.one_at_a_time, torch.cuda.graph(graph, pool=self.pool, stream=self.stream,
                                                          capture_error_mode="thread_local"):
                static_out = run()
        torch.cuda.current_stream().wait_stream(self.stream)
        out.record_stream(torch.cuda.current_stream())  # made on the side stream, used on this one
        return out, graph.replay, static_out

    # -- use --------------------------------------------------------------------------------------

    def set_text(self, text: CrossAttentionKV) -> None:
        """Use this prompt's K/V from now on (copied into the buffers the graphs read)."""
        if self.text is None:
            self.text = CrossAttentionKV([k.clone() for k in text.keys], [v.clone() for v in text.values])
            return
        for static, new in zip(self.text.keys + self.text.values, text.keys + text.values):
            static.copy_(new)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, slot: int, position: int,
                glue: Glue = EAGER, rope_offset: float = 0.0) -> torch.Tensor:
        """The model's forward of chunk x [B, C, n, h, w] whose K/V go to cache slot `slot` (latent frames) at RoPE
        position `position` (+ `rope_offset`): eager the first time its key is seen, a replay after that."""
        if self.text is None:
            raise RuntimeError("set_text first: the graphs read the prompt's K/V from their own buffers")
        model = self.model
        self._use_key_phases()
        if self.cache.protected or not self._weights_where_captured():
            # a re-cache that keeps the sink (rare: its skipped rows are no data), or weights moved since the capture
            return model(x, timestep, self.text, cache=self.cache, cache_frame=slot, rope_frame=position,
                         rope_offset=rope_offset, glue=glue, parallel=self.parallel)
        key = (tuple(x.shape), x.dtype, slot, glue, self.cache.key_phases is not None)
        captured = self.graphs.get(key)
        if captured is not None:
            captured.x.copy_(x)
            captured.timestep.copy_(timestep)
            if captured.position != (position, rope_offset):
                captured.phases.copy_(model.phases(position, x.shape, x.device, rope_offset))
                captured.position = (position, rope_offset)
            captured.replay()
            self.replays += 1
            return captured.out.clone()
        static_x, static_t = x.contiguous().clone(), timestep.clone()
        static_phases = model.phases(position, x.shape, x.device, rope_offset).clone()

        def run() -> torch.Tensor:
            return model(static_x, static_t, self.text, cache=self.cache, cache_frame=slot, phases=static_phases,
                         glue=glue, parallel=self.parallel)

        out, replay, static_out = self._capture(run)
        self.graphs[key] = _Captured(replay, static_x, static_t, static_phases, static_out, (position, rope_offset))
        self.captures += 1
        return out

    def _weights_where_captured(self) -> bool:
        """Whether the graphs may run: the weights are where the captures read them, or none is captured and they
        all sit on the graphs' device (then captures record where). Weights that moved drop every graph."""
        if self._weights and all(t.data_ptr() == address for t, address in self._weights):
            return True
        if self._weights:
            self.graphs.clear()
            self._weights = []
            self.dropped += 1
            log.warning("CausVid: the model's weights moved on the device (the host unloaded some of them); its "
                        "CUDA graphs are captured again once the weights are back, and meanwhile the forwards run "
                        "without them (the same numbers)")
        device = self.shape[5]
        tensors = [*self.model.parameters(), *self.model.buffers()]
        if any(t.device != device for t in tensors):
            return False
        self._weights = [(t, t.data_ptr()) for t in tensors]
        return True

    def _use_key_phases(self) -> None:
        """Point the cache at this object's key-phase buffer, holding the table the window gave it."""
        table = self.cache.key_phases
        if table is None or table is self.key_phases:
            return
        if self.key_phases is None:
            self.key_phases = torch.zeros(self.cache.capacity, *table.shape[1:], dtype=table.dtype,
                                          device=table.device)
        if table is not self._key_phases_from:
            self.key_phases[:table.shape[0]].copy_(table)
            self._key_phases_from = table
        self.cache.key_phases = self.key_phases

    @property
    def nbytes(self) -> int:
        """The KV cache's bytes (the graphs' working memory comes on top, about one forward's activations)."""
        return self.cache.nbytes

    def release(self) -> None:
        """Free the graphs and the cache now (this object cannot be used afterwards)."""
        self.graphs.clear()
        self.cache.release()
        self.text = None
        self.key_phases = self._key_phases_from = None
