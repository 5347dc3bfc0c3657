"""A KV cache stored in FP8 (e4m3): about half the memory of a bf16 cache.

Each cached row (one token of one head: head_dim values) is stored as e4m3 codes with its own float32 scale,

    s = max|x| / 448,    q = e4m3(x / s),    x ~ q · s,

(448 is e4m3's largest finite value), so a row's largest value is exact up to its scale and every value keeps
e4m3's 3 mantissa bits relative to that row's range. Rows are quantized as they are written and dequantized to
the compute dtype when attention reads them (on CUDA with Triton as one compiled kernel of the same arithmetic;
eagerly the casts and the product each pass over the whole visible cache in float32). The rest of the cache's
bookkeeping (slots, protected sink rows, eviction in order) is `KVCache`'s, with the scales moving with their
rows. Per-row scales cost 4 bytes per 128 values (3 %); coarser scales (per frame or block) would save that at a
larger error.
"""

from __future__ import annotations

import torch

from .config import WanConfig
from .kernels import compiled, fused_unavailable
from .kv_cache import KVCache

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
SCALE_DTYPE = torch.float32


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (e4m3 codes [..., D], float32 scales [..., 1]); a row of zeros gets scale 1."""
    amax = x.abs().amax(dim=-1, keepdim=True).to(SCALE_DTYPE)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return (x.to(SCALE_DTYPE) / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (q.to(SCALE_DTYPE) * scale).to(dtype)


class Fp8KVCache(KVCache):
    """`KVCache` with e4m3 rows and a float32 scale per row; reads give the compute dtype `dtype`."""

    quantized = True

    def __init__(self, num_layers: int, batch: int, capacity: int, num_heads: int, head_dim: int,
                 *, dtype: torch.dtype, device: torch.device | str) -> None:
        super().__init__(num_layers, batch, capacity, num_heads, head_dim, dtype=FP8, device=device)
        self.dtype = dtype
        fused = fused_unavailable(torch.device(device)) is None
        self.dequantize = compiled(dequantize, dynamic=True) if fused else dequantize
        scales = (batch, capacity, num_heads, 1)
        self.key_scales = [torch.ones(scales, dtype=SCALE_DTYPE, device=device) for _ in range(num_layers)]
        self.value_scales = [torch.ones(scales, dtype=SCALE_DTYPE, device=device) for _ in range(num_layers)]

    @staticmethod
    def nbytes_for(num_layers: int, batch: int, capacity: int, num_heads: int, head_dim: int,
                   dtype: torch.dtype) -> int:
        codes = KVCache.nbytes_for(num_layers, batch, capacity, num_heads, head_dim, FP8)
        return codes + 2 * num_layers * batch * capacity * num_heads * SCALE_DTYPE.itemsize

    def release(self) -> None:
        super().release()
        self.key_scales.clear()
        self.value_scales.clear()

    def tensors(self) -> list[torch.Tensor]:
        return [*super().tensors(), *self.key_scales, *self.value_scales]

    def visible(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        keys = self.dequantize(self.keys[layer][:, :end], self.key_scales[layer][:, :end], self.dtype)
        values = self.dequantize(self.values[layer][:, :end], self.value_scales[layer][:, :end], self.dtype)
        return keys.transpose(1, 2), values.transpose(1, 2)

    def store(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values, skip = self.writable(layer, start, k.shape[1])
        end = start + k.shape[1]
        for codes, scales, x in ((keys, self.key_scales[layer], k), (values, self.value_scales[layer], v)):
            q, s = quantize(x[:, skip:])
            codes.copy_(q)
            scales[:, start + skip:end].copy_(s)
        return self.visible(layer, end)


def video_cache(config: WanConfig, fp8: bool, *, batch: int, height: int, width: int, num_frames: int,
                dtype: torch.dtype, device: torch.device | str, num_heads: int | None = None) -> KVCache:
    """The cache for `num_frames` latent frames of a height×width video: FP8 rows with `fp8`, else `dtype`; of
    `num_heads` heads (default: the model's)."""
    return (Fp8KVCache if fp8 else KVCache).for_video(config, batch=batch, height=height, width=width,
                                                      num_frames=num_frames, dtype=dtype, device=device,
                                                      num_heads=num_heads)
