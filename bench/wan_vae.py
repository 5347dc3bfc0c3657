"""A minimal Wan2.1 VAE *decoder* for timing (random weights): the same layers, shapes and streaming
order as the Wan2.1 VAE (docs/algorithm.md §9.2), written for this benchmark.

Layout (base width 96, multipliers 1, 2, 4, 4, two residual blocks per level + 1 on the way up, the
first two up-steps also double time): 16 latent channels -> causal 3×3×3 conv to 384 -> middle (residual,
single-head spatial attention, residual) -> 4 levels of residual blocks with nearest ×2 up-sampling
(+ a causal 3×1×1 conv that doubles the frame count on the first two) -> RMS norm, SiLU, 3×3×3 conv to
RGB. `Decoder` (the reference) decodes latent frames one at a time; every causal 3-tap convolution keeps
the last two input frames of the stream (the reference's `feat_cache`), so 21 latent frames give
1 + 4·20 = 81 frames.

The same function, faster: `wan_vae_fast.FastDecoder`; decoding while the sampler goes on:
`wan_vae_stream` (`ThreadedDecode`, `OverlappedDecode`); their timing: `vae_runs`.

Only the compute matters here (weights are random); the output is checked for shape and finiteness.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Stream = dict  # module -> cached input frames (or a marker), one per decode


class CausalConv3d(nn.Conv3d):
    """Conv3d padded causally in time (2·p frames in front, none behind), symmetrically in space."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int, int], padding: int | tuple = 0) -> None:
        super().__init__(cin, cout, kernel)
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Without a stream: zeros before the first frame (the 1×1×1 convs; see `causal_conv`)."""
        return super().forward(F.pad(x, (*self.space_pad, self.time_pad, 0)))


class RMSNorm(nn.Module):
    """F.normalize over channels · sqrtC · gamma (Wan's RMS_norm, no bias)."""

    def __init__(self, dim: int, images: bool) -> None:
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cin, images=False)
        self.conv1 = CausalConv3d(cin, cout, 3, padding=1)
        self.norm2 = RMSNorm(cout, images=False)
        self.conv2 = CausalConv3d(cout, cout, 3, padding=1)
        self.shortcut = CausalConv3d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, stream: Stream) -> torch.Tensor:
        h = x if self.shortcut is None else self.shortcut(x)
        y = causal_conv(self.conv1, F.silu(self.norm1(x)), stream)
        y = causal_conv(self.conv2, F.silu(self.norm2(y)), stream)
        return y + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame."""

    def __init__(self, dim: int, operations=nn) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = operations.Conv2d(dim, dim * 3, 1)
        self.proj = operations.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, stream: Stream) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * t, c, h, w)
        q, k, v = self.to_qkv(self.norm(y)).reshape(b * t, 1, 3 * c, h * w).transpose(2, 3).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
        y = self.proj(y.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2) + x


class Upsample(nn.Module):
    """Nearest ×2 in space and a 3×3 conv halving the channels; with `temporal`, a causal 3×1×1 conv to
    2·C channels first turns each frame into two (skipped for the stream's first chunk)."""

    def __init__(self, dim: int, temporal: bool, operations=nn) -> None:
        super().__init__()
        self.conv = operations.Conv2d(dim, dim // 2, 3, padding=1)
        self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0)) if temporal else None

    def forward(self, x: torch.Tensor, stream: Stream) -> torch.Tensor:
        b, c, t, h, w = x.shape
        if self.time_conv is not None:
            if self not in stream:  # first chunk: the first frame stays one frame
                stream[self] = True
            else:
                x = causal_conv(self.time_conv, x, stream)
                x = x.view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
                t = 2 * t
        y = x.transpose(1, 2).reshape(b * t, c, h, w)
        y = F.interpolate(y.float(), scale_factor=2.0, mode="nearest-exact").type_as(y)
        y = self.conv(y)
        return y.reshape(b, t, c // 2, 2 * h, 2 * w).transpose(1, 2)


def causal_conv(conv: CausalConv3d, x: torch.Tensor, stream: Stream) -> torch.Tensor:
    """Apply a causal conv to one chunk of a stream: prepend the conv's last `time_pad` input frames
    (zeros before the stream starts) and remember this chunk's last ones."""
    past = stream.get(conv)
    full = x if past is None else torch.cat([past, x], 2)
    stream[conv] = full[:, :, -conv.time_pad:].clone()
    full = F.pad(full, (*conv.space_pad, conv.time_pad - (full.shape[2] - x.shape[2]), 0))
    return nn.Conv3d.forward(conv, full)


class Decoder(nn.Module):
    def __init__(self, dim: int = 96, z_dim: int = 16, mult: tuple[int, ...] = (1, 2, 4, 4),
                 res_blocks: int = 2, temporal_up: tuple[bool, ...] = (True, True, False)) -> None:
        super().__init__()
        dims = [dim * u for u in (mult[-1], *mult[::-1])]
        self.mean = nn.Parameter(torch.randn(z_dim) * 0.5)
        self.std = nn.Parameter(torch.rand(z_dim) + 0.5)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = nn.ModuleList([ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                     ResidualBlock(dims[0], dims[0])])
        ups: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                cin //= 2  # the previous up-sampling halved the channels
            for _ in range(res_blocks + 1):
                ups.append(ResidualBlock(cin, cout))
                cin = cout
            if i < len(mult) - 1:
                ups.append(Upsample(cout, temporal=temporal_up[i]))
        self.ups = nn.ModuleList(ups)
        self.head_norm = RMSNorm(dims[-1], images=False)
        self.head = CausalConv3d(dims[-1], 3, 3, padding=1)

    def decode_chunk(self, z: torch.Tensor, stream: Stream) -> torch.Tensor:
        x = causal_conv(self.conv1, z, stream)
        for layer in self.middle:
            x = layer(x, stream)
        for layer in self.ups:
            x = layer(x, stream)
        return causal_conv(self.head, F.silu(self.head_norm(x)), stream)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_done: Callable[[int], None] | None = None) -> torch.Tensor:
        """latents [B, 16, F, h, w] (model space) -> video [B, 3, 1 + 4(F - 1), 8h, 8w] in [-1, 1]."""
        z = latents * self.std.view(1, -1, 1, 1, 1) + self.mean.view(1, -1, 1, 1, 1)
        x = self.conv2(z)
        stream: Stream = {}
        out = []
        for i in range(x.shape[2]):
            out.append(self.decode_chunk(x[:, :, i:i + 1], stream))
            if chunk_done is not None:
                chunk_done(i)
        return torch.cat(out, 2).clamp_(-1, 1)


def make_decoder(device: torch.device, tiny: bool = False, seed: int = 0) -> Decoder:
    """The benchmark's decoder: random weights drawn with `seed`, bf16, inference only."""
    torch.manual_seed(seed)
    return Decoder(dim=8 if tiny else 96).to(device=device, dtype=torch.bfloat16).eval().requires_grad_(False)


def video_rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64, frame by frame (no float64 copy of a whole video)."""
    num = den = 0.0
    for i in range(b.shape[2]):
        x, y = a[:, :, i].double(), b[:, :, i].double()
        num += float((x - y).pow(2).sum())
        den += float(y.pow(2).sum())
    return math.sqrt(num / den) if den else float("nan")

