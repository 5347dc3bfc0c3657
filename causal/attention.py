"""Scaled dot-product attention over [B, heads, L, head_dim] tensors, softmax(q k^T/sqrtd) v.

Two kernels. `sdpa`: PyTorch's SDPA dispatcher (flash / cuDNN / efficient / math), everywhere, the exact path's.
`flash4`: FlashAttention-4 (the optional `flash-attn-4` package, CuTe DSL, compiled on its first call per
shape class), on Hopper and Blackwell only; on an H200 it is 1.16-1.26x cuDNN's SDPA on the self-attention shapes
of a 1.3B or 14B block (4680 queries x 4680-32760 keys, replayed in CUDA graphs) with the same error against
float32 attention (2.3e-3), and 0.85-0.93x on the 512 text keys of cross-attention, which therefore stays on SDPA
(bench/RESULTS.md, bench/flash4.py). Keys and values may be strided views into the KV cache; only their last dim
must be contiguous. The queries and the cache are [B, L, heads, head_dim] underneath, FA4's own layout, so the
views cost no copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FLASH4_ARCHES = (9, 10)
"""Compute capability majors FlashAttention-4 runs on: Hopper (sm90) and Blackwell (sm100)."""
FLASH4_DTYPES = (torch.bfloat16, torch.float16)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def flash4(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """FlashAttention-4 on [B, heads, L, d] views; SDPA where FA4 does not apply (a mask, which FA4 takes none of,
    or a dtype other than bf16 / fp16)."""
    if mask is not None or q.dtype not in FLASH4_DTYPES:
        return sdpa(q, k, v, mask)
    from flash_attn.cute import flash_attn_func

    out, _ = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def flash4_unavailable(device: torch.device) -> str | None:
    """None when FlashAttention-4 can run on `device`, else why not (said to the user as is)."""
    if device.type != "cuda":
        return "FlashAttention-4 needs a CUDA device"
    major, minor = torch.cuda.get_device_capability(device)
    if major not in FLASH4_ARCHES:
        return f"FlashAttention-4 runs on Hopper and Blackwell data-centre GPUs (sm90, sm100), not sm{major}{minor}"
    try:
        import flash_attn.cute  # noqa: F401
    except ImportError as e:
        return f"FlashAttention-4 is not installed (pip install flash-attn-4): {e}"
    return None
