"""The one tiny model configuration (and prompt) of the tests, the benchmarks' smoke runs and the stand-ins."""

from __future__ import annotations

import torch

from causal.config import VAE_STRIDE, WanConfig
from causal.model import CausalWanModel
from causal.synthetic import random_state_dict

TINY = WanConfig(dim=256, ffn_dim=512, num_layers=2, text_dim=64)
"""Two heads of width 128 (the real head width, so RoPE splits 22/21/21), two layers."""
TINY_5B = WanConfig(dim=256, ffn_dim=512, num_layers=2, text_dim=64, in_dim=48, out_dim=48)
"""TINY in the 5B's layout (LongLive 2.0): 48 latent channels on the Wan2.2 VAE (16x spatial stride)."""


def tiny_model(dtype: torch.dtype = torch.float32, seed: int = 0, config: WanConfig = TINY) -> CausalWanModel:
    return CausalWanModel.from_state_dict(random_state_dict(config, dtype=dtype, seed=seed), config, dtype=dtype)


def prompt(batch: int = 1, tokens: int = 12, width: int = TINY.text_dim, seed: int = 0) -> torch.Tensor:
    """A umT5-like prompt embedding: `tokens` rows, the rest of the 512 are zero (added by the model)."""
    return torch.randn(batch, tokens, width, generator=torch.Generator().manual_seed(seed))


def latent_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of the latent of a height x width video: the Wan VAE's spatial stride."""
    return height // VAE_STRIDE[1], width // VAE_STRIDE[2]


class Draws:
    """A seeded re-noise source for `Noise(renoise=...)` that records what it drew (the renditions in the tests
    replay `tensors` in order)."""

    def __init__(self, seed: int = 100, dtype: torch.dtype = torch.bfloat16) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.dtype = dtype
        self.shapes: list[tuple[int, ...]] = []
        self.tensors: list[torch.Tensor] = []

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        t = torch.randn(shape, generator=self.g).to(self.dtype)
        self.shapes.append(shape)
        self.tensors.append(t)
        return t
