"""CUDA graphs of the block forward, kept with their KV cache across fragments and `generate` calls.

After the glue is fused, a 1.3B forward spends much of its time launching kernels (bench/RESULTS.md).
`CudaGraphs` owns a KV cache for one video shape and captures each block slot's forward once: the
first call of a slot runs eagerly (its result is used) and captures; later calls of that slot — the next
denoising steps, later fragments, later videos of the same shape — copy their inputs into the captured
buffers and replay. A replay runs the same kernels on the same data, so the numbers do not change.
It holds the cache's memory (5.6 GiB for 1.3B at 832×480, 21 frames) for as long as it lives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .kernels import EAGER, Glue
from .kv_cache import CrossAttentionKV, KVCache
from .model import CausalWanModel


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    timestep: torch.Tensor
    out: torch.Tensor


class CudaGraphs:
    def __init__(self, model: CausalWanModel, *, batch: int, height: int, width: int, num_frames: int,
                 dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cuda") -> None:
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device.type}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.model = model
        self.shape = (batch, height, width, num_frames, dtype, device)
        self.cache = KVCache.for_video(model.config, batch=batch, height=height, width=width,
                                       num_frames=num_frames, dtype=dtype, device=device)
        self.text: CrossAttentionKV | None = None
        self.graphs: dict[tuple, _Captured] = {}
        self.pool = torch.cuda.graph_pool_handle()  # the graphs never run concurrently: they share memory
        self.stream = torch.cuda.Stream(device)

    def set_text(self, text: CrossAttentionKV) -> None:
        """Use this prompt's K/V from now on (copied into the buffers the graphs read)."""
        if self.text is None:
            self.text = CrossAttentionKV([k.clone() for k in text.keys], [v.clone() for v in text.values])
            return
        for static, new in zip(self.text.keys + self.text.values, text.keys + text.values):
            static.copy_(new)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, slot: int, glue: Glue = EAGER) -> torch.Tensor:
        """The model's forward at block slot `slot` (RoPE position = slot), eager the first time."""
        key = (tuple(x.shape), x.dtype, slot, glue.compiled)
        captured = self.graphs.get(key)
        if captured is not None:
            captured.x.copy_(x)
            captured.timestep.copy_(timestep)
            captured.graph.replay()
            return captured.out.clone()
        static_x, static_t = x.contiguous().clone(), timestep.clone()
        kwargs = dict(cache=self.cache, cache_frame=slot, rope_frame=slot, glue=glue)
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = self.model(static_x, static_t, self.text, **kwargs)  # eager; also warms this stream up
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
                static_out = self.model(static_x, static_t, self.text, **kwargs)
        torch.cuda.current_stream().wait_stream(self.stream)
        out.record_stream(torch.cuda.current_stream())  # made on the side stream, used on this one
        self.graphs[key] = _Captured(graph, static_x, static_t, static_out)
        return out
