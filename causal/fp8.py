"""fp8 (e4m3) matrix products for the transformer blocks' linears, through `torch._scaled_mm`.

Weights are stored as e4m3 with one float32 scale per output row; activations are quantised per
token (row) on the fly: y = bf16((q(x)·s_x) (q(W)·s_W)^T + b), with q(u) = e4m3(u / s), s = amax(|u|)/448.
Halves the weights' memory (14B: 28.6 -> 14.3 GB) and runs the products on the fp8 tensor cores
(Hopper, Ada). Not bit-exact: bench/RESULTS.md gives its error against the exact path.
"""

from __future__ import annotations

import torch
from torch import nn

from . import kernels

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (e4m3 [M, K], float32 scales [M, 1]) with x ~ q·s per row."""
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / E4M3_MAX
    return (x.float() / scale).to(E4M3), scale


class Fp8Linear(nn.Module):
    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight, scale = quantize_rows(linear.weight.detach())
        self.weight = nn.Parameter(weight, requires_grad=False)  # [out, in]
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out]
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        # the activations' quantisation as one compiled kernel on the GPU (part of this speed option's cost)
        q, scale = kernels.compiled(quantize_rows)(rows) if rows.is_cuda else quantize_rows(rows)
        # the bias is added in the product's float32 epilogue, before the one rounding to x.dtype
        y = torch._scaled_mm(q, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, bias=self.bias,
                             out_dtype=x.dtype)
        return y.view(*x.shape[:-1], y.shape[-1])


def quantize_blocks_fp8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear inside the transformer blocks by an Fp8Linear, in place (CUDA, sm >= 8.9)."""
    for block in model.blocks:
        for name, module in list(block.named_modules()):
            if isinstance(module, nn.Linear):
                parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
                setattr(parent, name.rsplit(".", 1)[-1], Fp8Linear(module))
    return model
