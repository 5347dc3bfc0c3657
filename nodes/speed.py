"""The sampling nodes' `speed` setting, and the CUDA graphs a model keeps from one execution to the next.

* `exact`: the references' arithmetic op for op (the elementwise glue run eagerly).
* `fast`: the glue as compiled kernels (`causal.kernels.COMPILED`): within bf16 noise of exact (bench/RESULTS.md
  states the measured error), not bitwise; Stream to Video decodes the Wan VAE with `causal.wan_decoder` (bf16
  rounding of the exact decode). Where compiled kernels cannot run (no CUDA, no Triton) it runs `exact` and says
  so in the log.

Both run the block forwards as CUDA graphs on a CUDA device with the whole model loaded (the same kernels on the
same data: the same numbers, fewer launches), under PyTorch's native allocator only: ComfyUI's default
cudaMallocAsync cannot capture them (`--disable-cuda-malloc` turns it off), so there graphs are off, logged.

The graphs and their KV cache stay with the model (`CausalWanModel`) between executions of the same video shape,
so only the first run of a shape captures them. They are released when ComfyUI unloads the model (its
ON_DETACH callback with the weights unpatched, e.g. to make room for another model), when the shape changes, and
when the model's weights moved (partial offloading, other LoRA weights): a capture reads weights at fixed
addresses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..causal import kernels
from ..causal.graphs import CudaGraphs, allocator_unsupported
from ..causal.model import CausalWanModel

SPEEDS = ("fast", "exact")
DEFAULT_SPEED = "fast"
SPEED_TOOLTIP = ("fast: compiled elementwise kernels and CUDA graphs (within bf16 noise of the references, "
                 "measured in bench/RESULTS.md; the first run of a size compiles for a while); Stream to Video "
                 "also decodes the Wan VAE 1.7-1.9x faster (bf16 rounding of VAE Decode's frames). exact: the "
                 "references' arithmetic bit for bit (CUDA graphs too: the same numbers), and VAE Decode's frames. "
                 "Without CUDA + Triton, fast runs exact.")
log = logging.getLogger("comfyui-causvid")
_said: set[str] = set()


def _once(level: int, message: str, *args) -> None:
    """Log a fallback the first time it happens in this process (it holds for every later run too)."""
    text = message % args
    if text not in _said:
        _said.add(text)
        log.log(level, text)


@dataclass(frozen=True)
class Speed:
    """What a `speed` setting turns into on a device."""

    fused_kernels: bool
    graphs: bool


def choose_speed(level: str, device: torch.device) -> Speed:
    """The options a level runs with on `device`; a level the device cannot run falls back to exact, logged."""
    if level not in SPEEDS:
        raise ValueError(f"unknown speed '{level}'; choose one of {', '.join(SPEEDS)}")
    fused = level == "fast"
    if fused and (why := kernels.fused_unavailable(device)):
        _once(logging.WARNING, "CausVid speed 'fast' runs as 'exact' here: %s", why)
        fused = False
    graphs = device.type == "cuda"
    if graphs and (why := allocator_unsupported()) is not None:
        _once(logging.INFO, "CausVid: CUDA graphs off (a few %% slower, same numbers): %s", why)
        graphs = False
    return Speed(fused_kernels=fused, graphs=graphs)


@dataclass
class _Kept:
    graphs: CudaGraphs
    weights: tuple[int, ...]
    """The weights' addresses when the graphs were captured."""


_ATTRIBUTE = "_causvid_kept_graphs"


def _weights_in_place(network: CausalWanModel, device: torch.device) -> tuple[int, ...] | None:
    """The weights' addresses when every weight sits on `device` with no per-forward patch function (ComfyUI's
    lowvram LoRA); None when a capture could not hold them (a weight offloaded or patched per forward)."""
    addresses = []
    for module in network.modules():
        if getattr(module, "weight_function", None) or getattr(module, "bias_function", None):
            return None
    for p in network.parameters():
        if p.device != device:
            return None
        addresses.append(p.data_ptr())
    return tuple(addresses)


GraphShape = tuple  # (batch, height, width, cache frames, dtype, device, FP8 cache): `_shape`


def _shape(graphs: CudaGraphs) -> GraphShape:
    return (*graphs.shape, graphs.cache.quantized)


def keep_only(network: CausalWanModel, shape: GraphShape) -> int:
    """Release kept graphs of any other shape; return the device memory that kept graphs of `shape` hold already
    (their KV cache), which a run of that shape need not reserve again."""
    kept: _Kept | None = getattr(network, _ATTRIBUTE, None)
    if kept is not None and _shape(kept.graphs) != shape:
        release_graphs(network)
        return 0
    return 0 if kept is None else kept.graphs.nbytes


def kept_graphs(network: CausalWanModel, shape: GraphShape) -> CudaGraphs | None:
    """The model's CUDA graphs for this video shape: the ones kept from an earlier execution when their shape and
    weights still match, else new ones (the old released first); None when the model is partly offloaded. Call it
    once the model is loaded: the weights' addresses decide."""
    device = shape[5]
    weights = _weights_in_place(network, device)
    kept: _Kept | None = getattr(network, _ATTRIBUTE, None)
    if kept is not None and kept.weights == weights and _shape(kept.graphs) == shape:
        return kept.graphs
    release_graphs(network)
    if weights is None:
        log.info("CausVid: CUDA graphs off for this run: the model is partly offloaded (lowvram); same numbers, "
                 "more kernel launches")
        return None
    batch, height, width, cache_frames, dtype, _, fp8 = shape
    log.info("CausVid: CUDA graphs for %dx%d, a %d-frame cache: the first forwards capture them (kept for later "
             "runs of this size)", width, height, cache_frames)
    graphs = CudaGraphs(network, batch=batch, height=height, width=width, num_frames=cache_frames, dtype=dtype,
                        device=device, kv_cache_fp8=fp8)
    setattr(network, _ATTRIBUTE, _Kept(graphs, weights))
    return graphs


def release_graphs(network: CausalWanModel) -> None:
    """Free the model's kept graphs and their KV cache now."""
    kept: _Kept | None = getattr(network, _ATTRIBUTE, None)
    if kept is not None:
        kept.graphs.release()
        delattr(network, _ATTRIBUTE)


def release_on_detach(patcher, unpatch_all: bool) -> None:
    """ComfyUI's ON_DETACH callback. With `unpatch_all` the model is unloaded and its graphs go with it. Without,
    the weights stay where they are: ComfyUI detaches every loaded model it is asked to load again (each run's
    `load_models_gpu`), so releasing here would capture the graphs again on every run; a run whose weights moved
    meanwhile captures new ones anyway (`kept_graphs` compares their addresses)."""
    network = getattr(patcher.model, "diffusion_model", None)
    if unpatch_all and isinstance(network, CausalWanModel):
        release_graphs(network)
