"""Wan2.1's 3-D rotary position embedding, applied in float64 like the references (docs/algorithm.md
§1.7).

A head of width 128 is 64 complex numbers z_m = x[2m] + i·x[2m+1] (interleaved pairs). Pairs
0..21 turn with the latent-frame index, 22..42 with the token row, 43..63 with the token column:

    z_m <- z_m · exp(i · pos · theta_j),   theta_j = 10000^(-2j/44) (time) or 10000^(-2j/42) (space)

The product is taken in complex128 and rounded once to the activation dtype.
"""

from __future__ import annotations

import torch


ROPE_THETA = 10000.0
ROPE_POSITIONS = 1024
"""Rows of the references' frequency table: positions 0..1023. Their videos end at latent frame 1023."""


def _rope_params(positions: torch.Tensor, dim: int) -> torch.Tensor:
    # exp(i · p · theta_j) with theta_j = theta^(-2j/dim), j = 0 .. dim/2 - 1, in float64 angles
    inv = 1.0 / torch.pow(ROPE_THETA, torch.arange(0, dim, 2).to(torch.float64).div(dim))
    angles = torch.outer(positions, inv)
    return torch.polar(torch.ones_like(angles), angles)


def rope_frequencies(head_dim: int, max_positions: int = ROPE_POSITIONS, start: int = 0) -> torch.Tensor:
    """complex128 table [max_positions, head_dim / 2] of positions start .. start + max_positions - 1:
    temporal, height and width columns."""
    temporal = head_dim - 4 * (head_dim // 6)
    spatial = 2 * (head_dim // 6)
    positions = torch.arange(start, start + max_positions)
    return torch.cat([
        _rope_params(positions, temporal),
        _rope_params(positions, spatial),
        _rope_params(positions, spatial),
    ], dim=1)


def split_sizes(head_dim: int) -> list[int]:
    """Complex pairs per axis: [22, 21, 21] for head dim 128."""
    pairs = head_dim // 2
    return [pairs - 2 * (pairs // 3), pairs // 3, pairs // 3]


def rope_phases(freqs: torch.Tensor, start_frame: int, frames: int, height: int, width: int,
                offset: float = 0.0) -> torch.Tensor:
    """Phase of every token of a (frames, height, width) token grid whose first frame sits at
    RoPE position `start_frame`: complex128 [frames·height·width, 1, head_dim / 2].

    Temporal positions past the table (the references stop at 1023) are computed from the same closed
    form exp(i·p·theta_j): a rotation by p·theta_j in float64, whose angle error is about p·2^-53 rad
    (1e-10 at frame 10^6, far below bf16 rounding), rounded once like every other position. Attention
    depends only on the difference of query and key positions, so a rolling window that has moved past
    frame 1023 sees the same offsets (0..window - 1) it saw before, and frames below 1024 keep the table's
    exact values.

    A temporal `offset` (LongLive 2.0's multi-shot RoPE: shot k's frames sit k * phi further on) turns frame p by
    exp(i (p + offset) theta'_j), theta'_j = arg(table[1, j]), in float64: its reference computes shifted positions
    that way rather than from the table, which differs in the last bit of a few phases."""
    if height > freqs.shape[0] or width > freqs.shape[0]:
        raise ValueError(f"a latent grid of {height}x{width} tokens is past the RoPE table ({freqs.shape[0]} rows)")
    if start_frame < 0:
        raise ValueError(f"RoPE positions start at 0, got {start_frame}")
    head_pairs = freqs.shape[1]
    t, h, w = freqs.split(split_sizes(head_pairs * 2), dim=1)
    if offset:
        positions = torch.arange(frames, dtype=torch.float64, device=freqs.device) + start_frame + float(offset)
        angles = positions.unsqueeze(-1) * torch.angle(t[1]).to(torch.float64).unsqueeze(0)
        t = torch.polar(torch.ones_like(angles), angles)
        start_frame = 0
    elif start_frame + frames > freqs.shape[0]:
        t = rope_frequencies(head_pairs * 2, frames, start=start_frame).to(freqs.device)
        t = t[:, :split_sizes(head_pairs * 2)[0]]
        start_frame = 0
    phases = torch.cat([
        t[start_frame:start_frame + frames].view(frames, 1, 1, -1).expand(frames, height, width, -1),
        h[:height].view(1, height, 1, -1).expand(frames, height, width, -1),
        w[:width].view(1, 1, width, -1).expand(frames, height, width, -1),
    ], dim=-1)
    return phases.reshape(frames * height * width, 1, head_pairs)


def apply_rope(x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, L, heads, head_dim] by phases [L, 1, head_dim / 2]: one complex128 product, one rounding
    (`kernels.rope_rotate` is the same arithmetic in real float64, for the compiled glue)."""
    b, length, heads, dim = x.shape
    z = torch.view_as_complex(x.to(torch.float64).reshape(b, length, heads, dim // 2, 2))
    return torch.view_as_real(z * phases).flatten(3).to(x.dtype)
