"""Weights stored as e4m3 and multiplied in the activations' dtype, as ComfyUI's `weight_dtype` fp8_e4m3fn stores them.

Every matrix (and its bias) is rounded once to e4m3 at load, W8 = e4m3(W), and cast back at each product,
y = x bf16(W8)^T + bf16(b8) (bf16 or whatever dtype x has): half the weights' memory, no fp8 arithmetic. The norms,
modulations and the patch embedding stay in bf16 (`small_dtype`) and are cast to x's dtype where they are used.
`causal.fp8` is the other fp8 option: per-row scaled weights multiplied on the fp8 tensor cores.

These layers give ComfyUI's manual-cast layers' numbers (the same casts and products), so a model built here
computes what CausVid Model Loader's fp8_e4m3fn model computes (tests/test_multi_gpu_nodes.py); CausVid Multi-GPU's
workers build theirs so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import WanConfig
from .model import CausalWanModel

E4M3 = torch.float8_e4m3fn
SMALL_DTYPE = torch.bfloat16
"""Where the weights are e4m3, the dtype of everything else (ComfyUI's choice for this model too)."""


class CastLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastConv3d(nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, self.weight.to(x.dtype), bias)


class CastLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


class CastOperations:
    """Layers that keep their weights in their storage dtype and cast them to the input's at every call."""

    Linear = CastLinear
    Conv3d = CastConv3d
    LayerNorm = CastLayerNorm


def fp8_storage_model(state_dict: dict[str, torch.Tensor], config: WanConfig,
                      device: torch.device | str) -> CausalWanModel:
    """The model with its matrices in e4m3 and the rest in bf16, from `state_dict` (each tensor cast once to the
    dtype its parameter is stored in)."""
    with torch.device("meta"):
        model = CausalWanModel(config, operations=CastOperations, dtype=E4M3, small_dtype=SMALL_DTYPE)
    stored = {name: t.dtype for name, t in [*model.named_parameters(), *model.named_buffers()]}
    model.load_state_dict({name: t.to(device=device, dtype=stored[name]) for name, t in state_dict.items()},
                          strict=True, assign=True)
    return model.eval().requires_grad_(False)
