"""The DiT's elementwise glue, written once, run eagerly (exact, the default) or compiled (fast).

Between the matrix products and the attention the network spends a third of a 1.3B forward in
small elementwise ops (bench/RESULTS.md: RMSNorm, RoPE, LayerNorm + modulation, gated residuals).
Each function below is the reference arithmetic with its rounding points. A `Glue` says how they run:
`EAGER` (the exact path) calls them, `COMPILED` (`Compute(fused_kernels=True)`) runs each as one
compiled kernel (torch.compile, Inductor with `emulate_precision_casts`, so every bf16 op still rounds
as in eager). The model takes the glue as an argument and passes it down to every block, so the path
from the sampler's switch to a kernel is plain to follow. The RoPE kernel gives bitwise the same
numbers; the norms sum in another order, which moves final latents by the same ~1e-2 (relative L2,
random weights) as changing the attention backend does, and leaves them as far from float32 as the
exact path is.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .attention import flash4, sdpa
from .kv_cache import KVCache
from .rope import apply_rope

RECOMPILE_LIMIT = 128
_compiled: dict[tuple[Callable, bool], Callable] = {}
_threads = threading.local()
one_at_a_time = threading.RLock()
"""Held around every call of a compiled kernel and every CUDA graph capture (causal.graphs). Before torch 2.14,
while one thread compiles (FX traces) a kernel, another thread that calls any compiled function fails ("Detected
that you are using FX to symbolically trace a dynamo-optimized function"), and a compile synchronizes the device,
which breaks a graph capture under way on another thread: both happen on a stream's first run, the decoder
compiling beside the sampler. Holding it costs ~0.1 us a call; a graph's replay calls nothing."""


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """bf16(u · rsqrt(mean(u²) + eps)) · w, u = float32(x), over the last dim."""
    u = x.float()
    return (u * torch.rsqrt(u.pow(2).mean(dim=-1, keepdim=True) + eps)).to(x.dtype) * weight


def modulate(h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """h·(1 + scale) + shift per frame, two rounding ops; h [B, F·S, D], scale/shift [B, F, 1, D]."""
    frames = scale.shape[1]
    return (h.unflatten(1, (frames, -1)) * (1 + scale) + shift).flatten(1, 2)


def layer_norm_modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    """LN(x)·(1 + scale) + shift with a weightless LayerNorm (norm1, norm2)."""
    return modulate(F.layer_norm(x, (x.shape[-1],), eps=eps), scale, shift)


def gated_add(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """x + y·gate per frame; x, y [B, F·S, D], gate [B, F, 1, D]."""
    frames = gate.shape[1]
    return x + (y.unflatten(1, (frames, -1)) * gate).flatten(1, 2)


def rope_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(a + ib)·(c + is) in real float64 arithmetic, rounded once: x [B, L, H, D] as interleaved pairs,
    cos/sin [L, 1, D/2]. The same numbers as the complex128 product, in one kernel when compiled."""
    pairs = x.unflatten(-1, (x.shape[-1] // 2, 2)).to(torch.float64)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(3).to(x.dtype)


# Compositions: one compiled kernel where eager code runs the parts in turn. With `emulate_precision_casts`
# each part keeps its rounding points, so they give the parts' numbers while reading and writing the
# activations once.


def rms_norm_rope(x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor,
                  heads: int) -> torch.Tensor:
    """RoPE(RMSNorm(x)) of a query or key projection x [B, L, heads·D] -> [B, L, heads, D]."""
    return rope_rotate(rms_norm(x, weight, eps).unflatten(-1, (heads, -1)), cos, sin)


def store_keys_values(keys: torch.Tensor, values: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Write RoPE(RMSNorm(k)) and v [B, L, heads·D] into their KV-cache slots [B, L, heads, D] in place."""
    keys.copy_(rms_norm_rope(k, weight, eps, cos, sin, keys.shape[2]))
    values.copy_(v.view_as(values))


def store_normed_keys_values(keys: torch.Tensor, values: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             weight: torch.Tensor, eps: float) -> None:
    """Write RMSNorm(k) (un-rotated: a cache whose keys are rotated when read) and v into their slots in place."""
    keys.copy_(rms_norm(k, weight, eps).view_as(keys))
    values.copy_(v.view_as(values))


def add_layer_norm_modulate(x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                            eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x + y (the cross-attention residual) and LN(x + y)·(1 + scale) + shift (the FFN's input)."""
    x = x + y
    return x, layer_norm_modulate(x, scale, shift, eps)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GELU_tanh(x·W^T + b) with the GELU in the CUDA matrix product's epilogue (cuBLASLt): it acts on the float32
    accumulator and the result is rounded once, where the layers round the product and then the GELU."""
    out = torch._addmm_activation(bias, x.reshape(-1, x.shape[-1]), weight.t(), use_gelu=True)
    return out.view(*x.shape[:-1], weight.shape[0])


def direct_weights(layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(W, b) when `layer(x)` is exactly F.linear(x, W, b) with W and b as they are, in x's dtype on x's device: a
    plain torch.nn.Linear, or a host's layer that says so by its own `direct_weights(x)` (None while it casts,
    offloads or patches its weights). None for anything else: a kernel may then not bypass the layer."""
    if hasattr(layer, "direct_weights"):
        weights = layer.direct_weights(x)
    elif type(layer) is torch.nn.Linear:
        weights = layer.weight, layer.bias
    else:
        return None
    if weights is None or weights[1] is None:
        return None
    if any(t.dtype != x.dtype or t.device != x.device for t in weights):
        return None
    return weights


def fused_unavailable(device: torch.device) -> str | None:
    """None when compiled kernels can run on `device`, else why not."""
    if device.type != "cuda":
        return f"fused kernels need a CUDA device, not {device.type}"
    try:
        import triton  # noqa: F401  (Inductor's GPU code generator)
    except ImportError:
        return "fused kernels need Triton (pip install triton; on Windows triton-windows)"
    return None


def compiled(fn: Callable, *, dynamic: bool = False) -> Callable:
    """fn as one compiled kernel per input shape (made on first use, kept for the process); `dynamic`: one kernel
    for every shape (for inputs whose length changes every block, e.g. the visible part of a KV cache)."""
    # one compiled variant per shape (resolution, batch); past dynamo's default limit of 8 it would fail (fullgraph),
    # so allow many more. Once per thread: newer torch (2.14; not 2.11) keeps dynamo's config per thread, and a
    # decode worker or ComfyUI's prompt thread may run a kernel that another thread made (a thread-local flag is
    # checked, not dynamo's config, which costs microseconds a read on this per-op path)
    if not getattr(_threads, "limit_raised", False):
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        _threads.limit_raised = True
    if (fn, dynamic) not in _compiled:
        kernel = torch.compile(fn, dynamic=dynamic, fullgraph=True, options={"emulate_precision_casts": True})

        @functools.wraps(fn)
        def call(*args):
            with one_at_a_time:
                return kernel(*args)

        _compiled[fn, dynamic] = call
    return _compiled[fn, dynamic]


@dataclass(frozen=True)
class Glue:
    """How the glue runs: each function eagerly (`EAGER`) or as its compiled kernel (`COMPILED`); and which kernel
    the self-attention runs: SDPA, or FlashAttention-4 with `flash_attention` (where `attention.flash4_unavailable`
    says it can run)."""

    compiled: bool
    flash_attention: bool = False

    def __repr__(self) -> str:
        return ("COMPILED" if self.compiled else "EAGER") + ("_FLASH" if self.flash_attention else "")

    def self_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       mask: torch.Tensor | None) -> torch.Tensor:
        return (flash4 if self.flash_attention else sdpa)(q, k, v, mask)

    def run(self, fn: Callable, *args):
        return compiled(fn)(*args) if self.compiled else fn(*args)

    def norm_rope(self, x: torch.Tensor, weight: torch.Tensor, eps: float, phases: torch.Tensor,
                  heads: int) -> torch.Tensor:
        """RoPE(RMSNorm(x)) of a query or key projection x [B, L, heads·D] -> [B, L, heads, D]; eagerly the
        rotation is the references' complex128 product, compiled the same arithmetic in real float64."""
        if self.compiled:
            return compiled(rms_norm_rope)(x, weight, eps, phases.real, phases.imag, heads)
        return apply_rope(rms_norm(x, weight, eps).unflatten(-1, (heads, -1)), phases)

    def rope(self, x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
        """x [B, L, heads, D] rotated by phases [L, 1, D / 2] (the arithmetic of `norm_rope`'s rotation); compiled,
        one kernel per length L (a cache has a few: one per fill level of its window): on an H200 it rotates 18 720
        keys of 12 heads in 0.111 ms, where one kernel for every length took 0.237 ms."""
        if self.compiled:
            return compiled(rope_rotate)(x, phases.real, phases.imag)
        return apply_rope(x, phases)

    def linear_gelu(self, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """GELU_tanh(layer(x)), the FFN's first layer and activation. Compiled, on a CUDA device, the GELU runs in
        the product's epilogue where the layer lends its weights (`direct_weights`): one rounding fewer, and on an
        H200 0.187 against 0.228 ms a 1.3B layer (bench/glue.py)."""
        if self.compiled and x.is_cuda and (weights := direct_weights(layer, x)) is not None:
            return linear_gelu(x, *weights)
        return F.gelu(layer(x), approximate="tanh")

    def store(self, cache, layer: int, start: int, k: torch.Tensor, v: torch.Tensor, weight: torch.Tensor,
              eps: float, phases: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Put RoPE(RMSNorm(k)) and v [B, L, heads·D] into `cache` (a `KVCache`) at token `start` and return its
        visible keys and values. Eagerly through `cache.store`; compiled, one kernel writes the keys straight
        into their slots (all but protected sink rows); a quantized cache quantizes them in its `store`. With
        the cache's `key_phases` set, RMSNorm(k) is stored and the visible keys are rotated by them."""
        if (key_phases := getattr(cache, "key_phases", None)) is not None:  # (the tests' renditions have none)
            if self.compiled and isinstance(cache, KVCache) and not cache.quantized:  # (not a view that places rows)
                keys, values, skip = cache.writable(layer, start, k.shape[1])
                compiled(store_normed_keys_values)(keys, values, k[:, skip:], v[:, skip:], weight, eps)
                keys, values = cache.visible(layer, start + k.shape[1])
            else:
                normed = self.run(rms_norm, k, weight, eps).unflatten(-1, (heads, -1))
                keys, values = cache.store(layer, start, normed, v.unflatten(-1, (heads, -1)))
            rotated = self.rope(keys.transpose(1, 2), key_phases[:keys.shape[2]])
            return rotated.transpose(1, 2), values
        if not self.compiled or cache.quantized:
            return cache.store(layer, start, self.norm_rope(k, weight, eps, phases, heads),
                               v.unflatten(-1, (heads, -1)))
        keys, values, skip = cache.writable(layer, start, k.shape[1])
        compiled(store_keys_values)(keys, values, k[:, skip:], v[:, skip:], weight, eps, phases.real[skip:],
                                    phases.imag[skip:])
        return cache.visible(layer, start + k.shape[1])


EAGER = Glue(compiled=False)
COMPILED = Glue(compiled=True)
