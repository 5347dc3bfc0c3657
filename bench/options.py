"""Speed options measured against the exact path: monkeypatches of `causal`, applied only inside the bench.

Nothing here changes `causal/`. Each option is a context manager that patches functions or methods of
`causal.model` (or selects an SDPA backend) and restores them on exit; `bench.py` times a clip under it
and reports the relative L2 difference of the final latents against the exact path with the same seed.

Options:

* ``sdpa_cudnn`` / ``sdpa_flash`` / ``sdpa_efficient``: force one SDPA backend (the exact path lets
  PyTorch's dispatcher choose).
* ``rope_fused64``: the RoPE rotation as one compiled kernel in real float64 arithmetic
  (x·cos − y·sin, x·sin + y·cos, rounded once): the same numbers as the complex128 product, without
  the three float64 round trips through memory.
* ``rope_fused32``: the same in float32.
* ``norms_fused``: RMSNorm, LayerNorm + modulation, and the gated residual adds as compiled kernels
  (Inductor, ``emulate_precision_casts`` so every bf16 op still rounds as in eager).
* ``qkv_fused``: the q, k, v projections as one GEMM against concatenated weights (an extra copy
  of 3·d² weights per layer while the option is on).
* ``fast``: sdpa_cudnn + rope_fused64 + norms_fused.
* ``rms_eager_fused``, ``rope_complex64``, ``gelu_epilogue``, ``eager_fast``: what can be had without a
  compiler (Windows without Triton): F.rms_norm, a complex64 RoPE product, and the FFN's first GEMM with
  cuBLASLt's tanh-GELU epilogue (``torch._addmm_activation``).
* ``fast2``: rope_fused64 + compiled norms/glue + gelu_epilogue, default SDPA backend.

Compiled helpers are built lazily (`torch.compile`), so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator

import torch
import torch.nn.functional as F

import causal.model as cm


@dataclass(frozen=True)
class Option:
    name: str
    description: str
    exact: bool
    """True if the option is meant to give the exact path's numbers (any difference is then a finding)."""
    enter: Callable[[], ContextManager[None]]


@contextlib.contextmanager
def _patched(obj, name: str, value) -> Iterator[None]:
    old = obj.__dict__[name] if isinstance(obj, type) else getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _compile(fn):
    """torch.compile for fixed shapes; on a machine without a working compiler the caller sees the error."""
    import torch._inductor.config as inductor_config

    inductor_config.emulate_precision_casts = True  # round after every bf16 op, as eager does
    return torch.compile(fn, dynamic=False, fullgraph=True)


# -- SDPA backend ---------------------------------------------------------------------------------

def _sdpa(backend: str) -> Callable[[], ContextManager[None]]:
    def enter() -> ContextManager[None]:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([getattr(SDPBackend, backend)])
    return enter


# -- RoPE -------------------------------------------------------------------------------------------

def _rope_real(x: torch.Tensor, phases_real: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
    # x [B, L, H, D]; phases_real [L, 1, D/2, 2] float64 (cos, sin) = view_as_real of the complex table
    xf = x.unflatten(-1, (x.shape[-1] // 2, 2)).to(compute)
    c = phases_real[..., 0].to(compute)
    s = phases_real[..., 1].to(compute)
    a, b = xf[..., 0], xf[..., 1]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(3).to(x.dtype)


def _rope64(x: torch.Tensor, phases_real: torch.Tensor) -> torch.Tensor:
    return _rope_real(x, phases_real, torch.float64)


def _rope32(x: torch.Tensor, phases_real: torch.Tensor) -> torch.Tensor:
    return _rope_real(x, phases_real, torch.float32)


@functools.lru_cache(maxsize=None)
def _rope_kernel(compute: torch.dtype):
    return _compile(_rope64 if compute == torch.float64 else _rope32)


def _rope_option(compute: torch.dtype) -> Callable[[], ContextManager[None]]:
    def apply_rope(x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
        return _rope_kernel(compute)(x, torch.view_as_real(phases))

    return lambda: _patched(cm, "apply_rope", apply_rope)


# -- norms and modulation ------------------------------------------------------------------------------

def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    u = x.float()
    normed = (u * torch.rsqrt(u.pow(2).mean(dim=-1, keepdim=True) + eps)).to(x.dtype)
    return normed * weight


def _ln_modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    frames = scale.shape[1]
    h = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return (h.unflatten(1, (frames, -1)) * (1 + scale) + shift).flatten(1, 2)


def _gated_add(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    frames = gate.shape[1]
    return x + (y.unflatten(1, (frames, -1)) * gate).flatten(1, 2)


@functools.lru_cache(maxsize=None)
def _norm_kernels():
    return _compile(_rms), _compile(_ln_modulate), _compile(_gated_add)


def _rmsnorm_forward(self, x: torch.Tensor) -> torch.Tensor:
    rms, _, _ = _norm_kernels()
    return rms(x, self.cast(self.weight, x.dtype, x.device), self.eps)


def _block_forward(self, x, e0, phases, text_k, text_v, cache, layer, cache_start, mask):
    # causal.model.AttentionBlock.forward with the elementwise glue in compiled kernels
    _, ln_mod, gated_add = _norm_kernels()
    m = (self.cast(self.modulation, x.dtype, x.device).unsqueeze(1) + e0).chunk(6, dim=2)
    y = self.self_attn(ln_mod(x, m[1], m[0], self.norm1.eps), phases, cache, layer, cache_start, mask)
    x = gated_add(x, y, m[2])
    x = x + self.cross_attn(self.norm3(x), text_k, text_v)
    y = self.ffn(ln_mod(x, m[4], m[3], self.norm2.eps))
    return gated_add(x, y, m[5])


@contextlib.contextmanager
def _norms_fused() -> Iterator[None]:
    with _patched(cm.RMSNorm, "forward", _rmsnorm_forward), _patched(cm.AttentionBlock, "forward", _block_forward):
        yield


# -- one QKV projection -------------------------------------------------------------------------------

_QKV_CACHED: list = []


def _qkv_self_attention_forward(self, h, phases, cache, layer, cache_start, mask):
    # causal.model.SelfAttention.forward with q, k, v from one GEMM against the concatenated weights
    b, length, _ = h.shape
    if getattr(self, "_bench_qkv", None) is None:
        self._bench_qkv = (torch.cat([self.q.weight, self.k.weight, self.v.weight]),
                           torch.cat([self.q.bias, self.k.bias, self.v.bias]))
        _QKV_CACHED.append(self)
    q, k, v = F.linear(h, *self._bench_qkv).chunk(3, dim=-1)
    q = cm.apply_rope(self.norm_q(q).view(b, length, self.num_heads, -1), phases)
    k = cm.apply_rope(self.norm_k(k).view(b, length, self.num_heads, -1), phases)
    v = v.reshape(b, length, self.num_heads, -1)
    if cache is not None:
        keys, values = cache.store(layer, cache_start, k, v)
    else:
        keys, values = k.transpose(1, 2), v.transpose(1, 2)
    out = cm.attention(q.transpose(1, 2), keys, values, mask)
    return self.o(out.transpose(1, 2).flatten(2))


@contextlib.contextmanager
def _qkv_fused() -> Iterator[None]:
    try:
        with _patched(cm.SelfAttention, "forward", _qkv_self_attention_forward):
            yield
    finally:
        while _QKV_CACHED:  # drop the concatenated copies again
            _QKV_CACHED.pop()._bench_qkv = None


# -- paths without a compiler (eager ops only) ------------------------------------------------------

def _rmsnorm_eager_fused(self, x: torch.Tensor) -> torch.Tensor:
    # F.rms_norm on the float32 tensor (one fused kernel where torch has one), then the same rounding
    w = self.cast(self.weight, x.dtype, x.device)
    return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype) * w


_C64_LAST: list = [None, None]  # (phases tensor, its complex64 copy); identity-checked, never by address


def _apply_rope_complex64(x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    if _C64_LAST[0] is not phases:
        _C64_LAST[:] = [phases, phases.to(torch.complex64)]
    b, length, heads, dim = x.shape
    z = torch.view_as_complex(x.float().reshape(b, length, heads, dim // 2, 2))
    return torch.view_as_real(z * _C64_LAST[1]).flatten(3).to(x.dtype)


@contextlib.contextmanager
def _rope_complex64() -> Iterator[None]:
    try:
        with _patched(cm, "apply_rope", _apply_rope_complex64):
            yield
    finally:
        _C64_LAST[:] = [None, None]


def _ffn_gelu_epilogue(ffn: torch.nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    # Linear → tanh-GELU as one cuBLASLt GEMM with a GELU epilogue (applied before rounding to bf16)
    first, second = ffn[0], ffn[2]
    a = torch._addmm_activation(first.bias, h.flatten(0, 1), first.weight.t(), use_gelu=True)
    return second(a.unflatten(0, h.shape[:2]))


def _make_block_forward(compiled_glue: bool, gelu_epilogue: bool):
    def forward(self, x, e0, phases, text_k, text_v, cache, layer, cache_start, mask):
        # causal.model.AttentionBlock.forward, glue compiled or eager, FFN GELU optionally in the GEMM
        ln_mod, gated_add = _norm_kernels()[1:] if compiled_glue else (_ln_modulate, _gated_add)
        m = (self.cast(self.modulation, x.dtype, x.device).unsqueeze(1) + e0).chunk(6, dim=2)
        y = self.self_attn(ln_mod(x, m[1], m[0], self.norm1.eps), phases, cache, layer, cache_start, mask)
        x = gated_add(x, y, m[2])
        x = x + self.cross_attn(self.norm3(x), text_k, text_v)
        h = ln_mod(x, m[4], m[3], self.norm2.eps)
        y = _ffn_gelu_epilogue(self.ffn, h) if gelu_epilogue else self.ffn(h)
        return gated_add(x, y, m[5])
    return forward


def _block(compiled_glue: bool, gelu_epilogue: bool, compiled_rms: bool = False):
    @contextlib.contextmanager
    def enter() -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_patched(cm.AttentionBlock, "forward", _make_block_forward(compiled_glue, gelu_epilogue)))
            if compiled_rms:
                stack.enter_context(_patched(cm.RMSNorm, "forward", _rmsnorm_forward))
            yield
    return enter


# -- combinations -----------------------------------------------------------------------------------

def _combined(*enters: Callable[[], ContextManager[None]]) -> Callable[[], ContextManager[None]]:
    @contextlib.contextmanager
    def enter() -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for e in enters:
                stack.enter_context(e())
            yield
    return enter


OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("sdpa_cudnn", "SDPA restricted to the cuDNN attention backend", False, _sdpa("CUDNN_ATTENTION")),
    Option("sdpa_flash", "SDPA restricted to the FlashAttention-2 backend", False, _sdpa("FLASH_ATTENTION")),
    Option("sdpa_efficient", "SDPA restricted to the memory-efficient backend", False,
           _sdpa("EFFICIENT_ATTENTION")),
    Option("sdpa_math", "SDPA restricted to the math (reference) backend; runs anywhere", False, _sdpa("MATH")),
    Option("rope_fused64", "RoPE as one compiled float64 kernel (same arithmetic)", True,
           _rope_option(torch.float64)),
    Option("rope_fused32", "RoPE as one compiled float32 kernel", False, _rope_option(torch.float32)),
    Option("norms_fused", "RMSNorm, LN+modulate, gated residual as compiled kernels (eager rounding)", False,
           _norms_fused),
    Option("qkv_fused", "q, k, v projections as one GEMM (concatenated weights, +3·d² per layer)", False,
           _qkv_fused),
    Option("fast", "sdpa_cudnn + rope_fused64 + norms_fused", False,
           _combined(_sdpa("CUDNN_ATTENTION"), _rope_option(torch.float64), _norms_fused)),
    Option("rms_eager_fused", "RMSNorm through F.rms_norm on float32 (no compiler)", False,
           lambda: _patched(cm.RMSNorm, "forward", _rmsnorm_eager_fused)),
    Option("rope_complex64", "RoPE product in complex64 instead of complex128 (no compiler)", False, _rope_complex64),
    Option("gelu_epilogue", "FFN up-projection + tanh-GELU as one cuBLASLt GEMM (torch._addmm_activation)", False,
           _block(compiled_glue=False, gelu_epilogue=True)),
    Option("eager_fast", "rms_eager_fused + rope_complex64 + gelu_epilogue (no compiler needed)", False,
           _combined(lambda: _patched(cm.RMSNorm, "forward", _rmsnorm_eager_fused), _rope_complex64,
                     _block(compiled_glue=False, gelu_epilogue=True))),
    Option("fast2", "rope_fused64 + compiled RMSNorm / LN+modulate / gated residual + gelu_epilogue "
           "(default SDPA backend)", False,
           _combined(_rope_option(torch.float64), _block(compiled_glue=True, gelu_epilogue=True, compiled_rms=True))),
)}
