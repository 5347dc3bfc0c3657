"""Krea Realtime's context: a few clean frames, cached again from scratch before every block.

Krea Realtime 14B keeps nothing in its KV cache from one block to the next (docs/checkpoint_families.md). Before
block b, with f latent frames so far and K context frames (3 by default), it empties the cache and runs one
forward at timestep 0 over

    C = [head, L_{f-m+1}, ..., L_{f-1}],   m = min(f, K)

at RoPE positions 0..m-1; the block's steps then sit at position m, so positions never pass K + 2 however long
the video runs. L_1..L_{f-1} are the clean latent frames after the first; `head` is

* L_0, the video's own first latent frame, while `keep_first_frame` or (g - 1)·n_b < K (g = blocks generated so
  far, n_b = frames per block: the first frame is still close);
* otherwise E(P): the oldest of the last 1 + 4(K - 1) decoded video frames (the frames of L_{f-K+1}..L_{f-1}
  and the one before them), encoded again by the VAE on its own. The Wan VAE encodes a video's first frame
  alone, so the context then starts the way every video the model was trained on starts.

`RebuiltContext` keeps the frames C is built from (on the compute device, K + 1 frames at most). A `Reencoder`
decodes each finished block and encodes P when asked; `ReencodedFrames` is one from two functions, so the host
(ComfyUI's VAE, a test's stand-in) supplies the decode and the encode. Krea decodes only the generated blocks,
from a fresh decoder, so the reencoder never sees start latents.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from .config import VAE_STRIDE


class Reencoder(Protocol):
    """Decodes every generated block in order and encodes one of the decoded frames again."""

    blocks_seen: int
    """Generated blocks decoded so far (a continued video's reencoder must have seen all of them)."""

    def add(self, block: torch.Tensor) -> None:
        """Decode a finished block's clean latents [B, 16, n, h, w] (model space) and keep its frames."""

    def encode_oldest(self) -> torch.Tensor:
        """The oldest kept frame encoded alone: a model-space latent [B, 16, 1, h, w]."""


def decoded_frames_kept(context_frames: int) -> int:
    """1 + 4 (K - 1): the video frames of the context's last K - 1 latent frames and the one before them."""
    return 1 + VAE_STRIDE[0] * (context_frames - 1)


class ReencodedFrames:
    """A `Reencoder` from a streaming `decode` (clean latents [B, 16, n, h, w] -> frames, frame-major: the first
    block gives 1 + 4 (n - 1) frames, later ones 4 n) and an `encode` (one frame, as `decode` returns it with its
    leading frame axis of length 1, -> a model-space latent [B, 16, 1, h, w])."""

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor],
                 encode: Callable[[torch.Tensor], torch.Tensor], context_frames: int = 3) -> None:
        self.decode = decode
        self.encode = encode
        self.frames: deque[torch.Tensor] = deque(maxlen=decoded_frames_kept(context_frames))
        self.blocks_seen = 0

    def add(self, block: torch.Tensor) -> None:
        self.add_frames(self.decode(block))

    def add_frames(self, frames: torch.Tensor) -> None:
        """Keep a block's frames that were decoded elsewhere (e.g. when a continued video warms the decoder up)."""
        for i in range(frames.shape[0]):
            self.frames.append(frames[i:i + 1])
        self.blocks_seen += 1

    def encode_oldest(self) -> torch.Tensor:
        if not self.frames:
            raise RuntimeError("no decoded frame to encode yet")
        return self.encode(self.frames[0])


@dataclass
class RebuiltContext:
    """The clean latent frames the next block's context is built from, and the rule that picks them."""

    context_frames: int
    frames_per_block: int
    keep_first_frame: bool = False
    first: torch.Tensor | None = None
    """L_0 [B, 16, 1, h, w]."""
    latest: deque[torch.Tensor] = field(default_factory=deque)
    """The last K - 1 frames after L_0, one [B, 16, 1, h, w] tensor each."""
    generated_blocks: int = 0

    def __post_init__(self) -> None:
        if self.context_frames < 1:
            raise ValueError(f"the rebuilt context needs at least one latent frame, got {self.context_frames}")
        self.latest = deque(self.latest, maxlen=self.context_frames - 1)

    def add(self, latents: torch.Tensor, *, generated: bool) -> None:
        """Clean latent frames [B, 16, n, h, w] that joined the video: start latents, or a generated block."""
        for i in range(latents.shape[2]):
            frame = latents[:, :, i:i + 1]
            if self.first is None:
                self.first = frame
            else:
                self.latest.append(frame)
        self.generated_blocks += int(generated)

    @property
    def needs_reencode(self) -> bool:
        return not self.keep_first_frame and (self.generated_blocks - 1) * self.frames_per_block >= self.context_frames

    def frames(self, reencoder: Reencoder | None) -> torch.Tensor | None:
        """C [B, 16, m, h, w] (module docstring); None before the video has a frame."""
        if self.first is None:
            return None
        if not self.needs_reencode:
            head = self.first
        elif reencoder is None:
            raise ValueError("the recompute policy encodes a decoded frame again once the first frame is "
                             f"{self.context_frames} frames behind: give a reencoder, or keep the first frame")
        else:
            head = reencoder.encode_oldest().to(device=self.first.device, dtype=self.first.dtype)
        return torch.cat([head, *self.latest], dim=2)

    def to(self, device: torch.device | str) -> "RebuiltContext":
        """A copy with its frames on `device` (a continued video's state keeps them on the CPU)."""
        return RebuiltContext(self.context_frames, self.frames_per_block, self.keep_first_frame,
                              None if self.first is None else self.first.to(device),
                              deque((f.to(device) for f in self.latest), maxlen=self.context_frames - 1),
                              self.generated_blocks)
