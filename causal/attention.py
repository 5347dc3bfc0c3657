"""Scaled dot-product attention over [B, heads, L, head_dim] tensors, softmax(q k^T/sqrtd) v.

One place to choose the kernel: PyTorch's SDPA dispatcher (flash / cuDNN / efficient / math).
Keys and values may be strided views into the KV cache; only their last dim must be contiguous.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
