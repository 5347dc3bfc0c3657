"""Wan DiT hyper-parameters: the presets and their detection from a state dict.

Every size-dependent constant of the pack lives here. Head dim is 128 for every Wan2.1 and Wan2.2 model, so
the head count follows from the width (`dim // 128`); everything else is read from tensor shapes. The latent
channels say which VAE a model denoises: 16 the Wan2.1 VAE's (1.3B, 14B), 48 the Wan2.2 VAE's (TI2V-5B, LongLive
2.0), with its 16x spatial stride and 24 fps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch

HEAD_DIM = 128
"""Per-head width of every Wan2.1 model (and what the 22/21/21 RoPE split assumes)."""

LATENT_CHANNELS = 16
TEXT_LEN = 512
FREQ_DIM = 256
PATCH_SIZE = (1, 2, 2)
EPS = 1e-6
VAE_STRIDE = (4, 8, 8)
"""Wan2.1 VAE: 4x temporal (first frame alone), 8x spatial."""


@dataclass(frozen=True)
class LatentLayout:
    """The VAE whose latents a DiT denoises: channels, strides and the frame rate its models were trained at."""

    name: str
    channels: int
    temporal_stride: int
    """Video frames per latent frame after the first (which is alone)."""
    spatial_stride: int
    fps: int


WAN21_LATENTS = LatentLayout("Wan2.1 VAE", LATENT_CHANNELS, VAE_STRIDE[0], VAE_STRIDE[1], 16)
WAN22_LATENTS = LatentLayout("Wan2.2 VAE", 48, 4, 16, 24)
LATENT_LAYOUTS = {layout.channels: layout for layout in (WAN21_LATENTS, WAN22_LATENTS)}


@dataclass(frozen=True)
class WanConfig:
    """Shape of a Wan2.1 text-to-video DiT (causal or not: the weights are the same)."""

    dim: int
    ffn_dim: int
    num_layers: int
    text_dim: int = 4096
    in_dim: int = LATENT_CHANNELS
    out_dim: int = LATENT_CHANNELS
    text_len: int = TEXT_LEN
    freq_dim: int = FREQ_DIM
    patch_size: tuple[int, int, int] = PATCH_SIZE
    eps: float = EPS

    def __post_init__(self) -> None:
        if self.dim % HEAD_DIM:
            raise ValueError(f"model width {self.dim} is not a multiple of the Wan head dim {HEAD_DIM}")

    @property
    def num_heads(self) -> int:
        return self.dim // HEAD_DIM

    @property
    def head_dim(self) -> int:
        return HEAD_DIM

    @property
    def latents(self) -> LatentLayout:
        """The VAE layout of the latents this model reads and writes (by its output channels)."""
        if self.out_dim not in LATENT_LAYOUTS:
            raise ValueError(f"a model with {self.out_dim} latent channels matches no Wan VAE (16: Wan2.1, 48: Wan2.2)")
        return LATENT_LAYOUTS[self.out_dim]

    @property
    def pixel_multiple(self) -> int:
        """Video sizes must be multiples of this: the VAE's spatial stride times the patch (16 or 32 pixels)."""
        return self.latents.spatial_stride * self.patch_size[1]

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w): the latent grid of one frame of a height x width (pixels) video."""
        stride = self.latents.spatial_stride
        return height // stride, width // stride

    @property
    def name(self) -> str:
        for name, preset in PRESETS.items():
            if preset == self:
                return name
        return f"custom (dim {self.dim}, {self.num_layers} layers)"

    def tokens_per_frame(self, height: int, width: int) -> int:
        """Tokens of one latent frame of a height×width (pixels) video: the VAE's stride, then the patch."""
        h, w = self.latent_size(height, width)
        return (h // self.patch_size[1]) * (w // self.patch_size[2])

    def num_parameters(self) -> int:
        return sum(int(torch.Size(shape).numel()) for shape in expected_shapes(self).values())


PRESETS: dict[str, WanConfig] = {
    "1.3B": WanConfig(dim=1536, ffn_dim=8960, num_layers=30),
    "14B": WanConfig(dim=5120, ffn_dim=13824, num_layers=40),
    "5B": WanConfig(dim=3072, ffn_dim=14336, num_layers=30, in_dim=48, out_dim=48),
}
"""Wan2.1 T2V 1.3B and 14B; Wan2.2 TI2V-5B (LongLive 2.0's base: 24 heads, the Wan2.2 VAE's 48 channels)."""


def expected_shapes(config: WanConfig) -> dict[str, tuple[int, ...]]:
    """The exact bare key set of a Wan2.1 T2V DiT with its tensor shapes (docs/algorithm.md §1.1)."""
    d, f = config.dim, config.ffn_dim
    patch_out = config.out_dim * config.patch_size[0] * config.patch_size[1] * config.patch_size[2]
    shapes: dict[str, tuple[int, ...]] = {
        "patch_embedding.weight": (d, config.in_dim, *config.patch_size),
        "patch_embedding.bias": (d,),
        "text_embedding.0.weight": (d, config.text_dim),
        "text_embedding.0.bias": (d,),
        "text_embedding.2.weight": (d, d),
        "text_embedding.2.bias": (d,),
        "time_embedding.0.weight": (d, config.freq_dim),
        "time_embedding.0.bias": (d,),
        "time_embedding.2.weight": (d, d),
        "time_embedding.2.bias": (d,),
        "time_projection.1.weight": (6 * d, d),
        "time_projection.1.bias": (6 * d,),
        "head.modulation": (1, 2, d),
        "head.head.weight": (patch_out, d),
        "head.head.bias": (patch_out,),
    }
    for i in range(config.num_layers):
        p = f"blocks.{i}."
        shapes[p + "modulation"] = (1, 6, d)
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                shapes[f"{p}{attn}.{proj}.weight"] = (d, d)
                shapes[f"{p}{attn}.{proj}.bias"] = (d,)
            shapes[f"{p}{attn}.norm_q.weight"] = (d,)
            shapes[f"{p}{attn}.norm_k.weight"] = (d,)
        shapes[p + "norm3.weight"] = (d,)
        shapes[p + "norm3.bias"] = (d,)
        shapes[p + "ffn.0.weight"] = (f, d)
        shapes[p + "ffn.0.bias"] = (f,)
        shapes[p + "ffn.2.weight"] = (d, f)
        shapes[p + "ffn.2.bias"] = (d,)
    return shapes


_BLOCK_INDEX = re.compile(r"^blocks\.(\d+)\.")


def detect_config(state_dict: Mapping[str, torch.Tensor]) -> WanConfig:
    """Read a WanConfig off the shapes of a bare-key Wan state dict.

    Raises ValueError naming the key that is missing; a full key/shape check is
    `checkpoint.validate_state_dict`'s job.
    """
    for key in ("head.modulation", "blocks.0.ffn.0.weight", "text_embedding.0.weight", "patch_embedding.weight",
                "head.head.weight"):
        if key not in state_dict:
            raise ValueError(f"not a Wan2.1 DiT state dict: key '{key}' is missing")
    dim = int(state_dict["head.modulation"].shape[-1])
    layers = {int(m.group(1)) for k in state_dict if (m := _BLOCK_INDEX.match(k))}
    patch = tuple(int(s) for s in state_dict["patch_embedding.weight"].shape[2:])
    out_dim = int(state_dict["head.head.weight"].shape[0]) // (patch[0] * patch[1] * patch[2])
    return WanConfig(
        dim=dim,
        ffn_dim=int(state_dict["blocks.0.ffn.0.weight"].shape[0]),
        num_layers=max(layers) + 1,
        text_dim=int(state_dict["text_embedding.0.weight"].shape[1]),
        in_dim=int(state_dict["patch_embedding.weight"].shape[1]),
        out_dim=out_dim,
        freq_dim=int(state_dict["time_embedding.0.weight"].shape[1]) if "time_embedding.0.weight" in state_dict
        else FREQ_DIM,
        patch_size=patch,  # type: ignore[arg-type]
    )
