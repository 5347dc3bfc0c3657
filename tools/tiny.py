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


def peft_lora(config: WanConfig = TINY, rank: int = 8, seed: int = 0, prefix: str = "base_model.model.",
              dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """A random PEFT LoRA state dict as LongLive saves it (`get_peft_model_state_dict`) on every block linear of
    `config`: lora_A [r, in], lora_B [out, r]."""
    from causal.lora import TARGETS

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(config.num_layers):
        for target in TARGETS:
            out_dim, in_dim = ((config.ffn_dim, config.dim) if target == "ffn.0" else
                               (config.dim, config.ffn_dim) if target == "ffn.2" else (config.dim, config.dim))
            key = f"{prefix}blocks.{i}.{target}"
            sd[f"{key}.lora_A.weight"] = (torch.randn(rank, in_dim, generator=g) * 0.05).to(dtype)
            sd[f"{key}.lora_B.weight"] = (torch.randn(out_dim, rank, generator=g) * 0.05).to(dtype)
    return sd


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
