"""The sampling nodes' `speed` setting, and the CUDA graphs a model keeps from one execution to the next.

* `exact`: the references' arithmetic op for op (the elementwise glue run eagerly).
* `fast`: the glue as compiled kernels (`causal.kernels.COMPILED`): within bf16 noise of exact (bench/RESULTS.md
  states the measured error), not bitwise; Stream to Video decodes the Wan VAE with `causal.wan_decoder` (bf16
  rounding of the exact decode). Where compiled kernels cannot run (no CUDA, no Triton) it runs `exact` and says
  so in the log. Where FlashAttention-4 runs (the optional `flash-attn-4` package on a Hopper or Blackwell GPU),
  `fast` also runs the self-attention by it (`causal.attention.flash4`): 8 % faster blocks on an H200, as
  far from exact as SDPA's own kernels are; the log says which, and on such a GPU without the package what
  installing it gains.

Both run the block forwards as CUDA graphs on a CUDA device with the whole model loaded (the same kernels on the
same data: the same numbers, fewer launches), under PyTorch's native allocator only: ComfyUI's default
cudaMallocAsync cannot capture them (`--disable-cuda-malloc` turns it off), so there graphs are off, logged.

The graphs and their KV cache stay with the model (`CausalWanModel`) between executions of the same video shape,
so only the first run of a shape captures them. They are released when ComfyUI unloads the model (its
ON_DETACH callback with the weights unpatched, e.g. to make room for another model), when the shape changes, and
when a run finds the model partly offloaded or patched per forward (it then runs without them). Weights that moved
(other LoRA weights, a reload) need nothing here: `causal.CudaGraphs` checks their addresses every forward and
captures again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..causal import attention, kernels
from ..causal.graphs import CudaGraphs, allocator_unsupported
from ..causal.model import CausalWanModel

SPEEDS = ("fast", "exact")
DEFAULT_SPEED = "fast"
SPEED_TOOLTIP = ("fast: compiled elementwise kernels and CUDA graphs (within bf16 noise of the references, "
                 "measured in bench/RESULTS.md; the first run of a size compiles for a while); Stream to Video "
                 "also decodes the Wan VAE 1.7-1.9x faster (bf16 rounding of VAE Decode's frames). exact: the "
                 "references' arithmetic bit for bit (CUDA graphs too: the same numbers), and VAE Decode's frames. "
                 "Without CUDA + Triton, fast runs exact. With flash-attn-4 installed on a Hopper or Blackwell "
                 "GPU, fast runs the self-attention by FlashAttention-4 (about 8% faster).")
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
    flash_attention: bool = False


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
    return Speed(fused_kernels=fused, graphs=graphs, flash_attention=fused and _flash_attention(device))


def _flash_attention(device: torch.device) -> bool:
    """Whether `fast` runs the self-attention by FlashAttention-4 on `device`: where it is installed and runs (said
    once); on a Hopper or Blackwell GPU without it, the log says what installing it gains."""
    why = attention.flash4_unavailable(device)
    if why is None:
        _once(logging.INFO, "CausVid speed 'fast': self-attention by FlashAttention-4")
    elif device.type == "cuda" and torch.cuda.get_device_capability(device)[0] in attention.FLASH4_ARCHES:
        _once(logging.INFO, "CausVid speed 'fast' runs attention on SDPA: %s; with it, about 8%% faster on an "
              "H200", why)
    return why is None


_ATTRIBUTE = "_causvid_kept_graphs"


def _capturable(network: CausalWanModel, device: torch.device) -> bool:
    """Whether a capture can hold the weights: every one on `device`, none patched per forward (ComfyUI's lowvram
    LoRA)."""
    if any(getattr(m, "weight_function", None) or getattr(m, "bias_function", None) for m in network.modules()):
        return False
    return all(p.device == device for p in network.parameters())


GraphShape = tuple  # (batch, height, width, cache frames, dtype, device, FP8 cache): `_shape`


def _shape(graphs: CudaGraphs) -> GraphShape:
    return (*graphs.shape, graphs.cache.quantized)


def keep_only(network: CausalWanModel, shape: GraphShape) -> int:
    """Release kept graphs of any other shape; return the device memory that kept graphs of `shape` hold already
    (their KV cache), which a run of that shape need not reserve again."""
    kept: CudaGraphs | None = getattr(network, _ATTRIBUTE, None)
    if kept is not None and _shape(kept) != shape:
        release_graphs(network)
        return 0
    return 0 if kept is None else kept.nbytes


def kept_graphs(network: CausalWanModel, shape: GraphShape) -> CudaGraphs | None:
    """The model's CUDA graphs for this video shape: the ones kept from an earlier execution when their shape
    matches, else new ones (the old released first); None when the model is partly offloaded or patched per forward.
    Call it once the model is loaded."""
    device = shape[5]
    kept: CudaGraphs | None = getattr(network, _ATTRIBUTE, None)
    capturable = _capturable(network, device)
    if kept is not None and capturable and _shape(kept) == shape:
        return kept
    release_graphs(network)
    if not capturable:
        log.info("CausVid: CUDA graphs off for this run: the model is partly offloaded (lowvram); same numbers, "
                 "more kernel launches")
        return None
    batch, height, width, cache_frames, dtype, _, fp8 = shape
    log.info("CausVid: CUDA graphs for %dx%d, a %d-frame cache: the first forwards capture them (kept for later "
             "runs of this size)", width, height, cache_frames)
    graphs = CudaGraphs(network, batch=batch, height=height, width=width, num_frames=cache_frames, dtype=dtype,
                        device=device, kv_cache_fp8=fp8)
    setattr(network, _ATTRIBUTE, graphs)
    return graphs


def release_graphs(network: CausalWanModel) -> None:
    """Free the model's kept graphs and their KV cache now."""
    kept: CudaGraphs | None = getattr(network, _ATTRIBUTE, None)
    if kept is not None:
        kept.release()
        delattr(network, _ATTRIBUTE)


def release_on_detach(patcher, unpatch_all: bool) -> None:
    """ComfyUI's ON_DETACH callback. With `unpatch_all` the model is unloaded and its graphs go with it. Without,
    the weights stay where they are: ComfyUI detaches every loaded model it is asked to load again (each run's
    `load_models_gpu`), so releasing here would capture the graphs again on every run; where the weights moved
    meanwhile the graphs see it and capture again (`causal.CudaGraphs`)."""
    network = getattr(patcher.model, "diffusion_model", None)
    if unpatch_all and isinstance(network, CausalWanModel):
        release_graphs(network)
