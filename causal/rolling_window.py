"""Rolling Forcing's sampler: a window of blocks denoised together, each block at its own noise level.

With S denoising steps (timesteps tau_0 > ... > tau_{S-1}) the window holds up to S blocks of `n_b` latent frames:
its oldest block is at its last step tau_{S-1}, its newest, fresh noise, at tau_0 (TencentARC/RollingForcing,
`pipeline/rolling_forcing_inference.py`). One forward over the whole window, the frames at their own timesteps,
predicts x0 for every block:

    x0_f = bf16(x_f - sigma_f v_f)                            (float64, sigma_f of frame f's step)

the oldest block's x0 is final; every other block is re-noised to its next level,

    x_b = bf16((1 - sigma_{k+1}) x0_b + sigma_{k+1} eps)       (float32; eps drawn for the whole window, per block)

and the window slides by one block: the next one starts a block later with fresh noise at its newest end. At the
start of the video the windows are shorter (the first has one block at tau_0), at its end too (the last has one
block at tau_{S-1}), so a video of N blocks takes N + S - 1 windows.

After each window the oldest block is cached again at timestep 0 (a clean pass): that is the only write to the KV
cache, whose first block (the *anchor*, the video's first block) stays for ever and whose later blocks roll out
oldest first past `cache_frames`. What a forward attends to (`ROLLING_FORCING_ATTENTION` frames at most):

* the window: the anchor, the last W cached frames before the window (W = attended - window - anchor frames) and
  the window itself, without a mask among its blocks; the window and the cached frames sit at their frames'
  positions in the video and the anchor right before the cached ones (its positions applied when it is read);
  while the window starts at the video's first block it attends to itself alone;
* the clean pass: the last `attended` cached frames, itself included, each at its own position, the anchor at 0
  while it is among them.

Keys are cached un-rotated and rotated when read (`KVCache.key_phases`), which at the same positions gives the
numbers of rotating them when written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .kernels import EAGER, Glue
from .kv_cache import CrossAttentionKV, KVCache
from .model import CausalWanModel
from .parallel import SequenceParallel
from .schedule import Schedule

ROLLING_FORCING_CACHE, ROLLING_FORCING_ATTENTION = 24, 21
"""Latent frames the cache holds (its `kv_cache_size` 24 x 1560) and a forward attends to at most (its
`max_attention_size` 21 x 1560)."""

Renoise = Callable[[tuple[int, ...]], torch.Tensor]


@dataclass(frozen=True)
class Window:
    """Blocks [first, last] of the video, and the step index of each (oldest first)."""

    first: int
    last: int
    steps: tuple[int, ...]


def windows(num_blocks: int, num_steps: int) -> list[Window]:
    """The windows of a video of `num_blocks` blocks under `num_steps` steps: window w holds blocks
    max(0, w - S + 1) .. min(N - 1, w), the newest at step 0 while it is new noise."""
    out = []
    for w in range(num_blocks + num_steps - 1):
        first, last = max(0, w - num_steps + 1), min(num_blocks - 1, w)
        out.append(Window(first, last, tuple(w - b for b in range(first, last + 1))))
    return out


class _Attended:
    """The keys and values one forward attends to: rows of the video's cache (`rows`, un-rotated) followed by the
    forward's own (`write_at` None) or the cache up to the end of the forward's own rows, written at `write_at`."""

    quantized = False
    protected = 0

    def __init__(self, cache: KVCache, rows: slice, key_phases: torch.Tensor, *, anchor: slice | None = None,
                 write_at: int | None = None) -> None:
        self.cache, self.rows, self.anchor, self.write_at = cache, rows, anchor, write_at
        self.key_phases = key_phases

    def store(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        if self.write_at is not None:  # the clean pass: written into the cache, read back with what precedes it
            keys[:, self.write_at:self.write_at + k.shape[1]].copy_(k)
            values[:, self.write_at:self.write_at + k.shape[1]].copy_(v)
            return keys[:, self.rows].transpose(1, 2), values[:, self.rows].transpose(1, 2)
        parts = ([self.anchor] if self.anchor is not None else []) + [self.rows]
        k_all = torch.cat([keys[:, r] for r in parts] + [k], dim=1)
        v_all = torch.cat([values[:, r] for r in parts] + [v], dim=1)
        return k_all.transpose(1, 2), v_all.transpose(1, 2)


class RollingCache:
    """The video's KV cache under Rolling Forcing's rule, in latent frames: the anchor at slots [0, anchor), then
    the cached blocks in order; `frames[s]` is the video frame in slot s."""

    def __init__(self, model: CausalWanModel, cache: KVCache, *, tokens_per_frame: int, block: int,
                 capacity: int = ROLLING_FORCING_CACHE, attended: int = ROLLING_FORCING_ATTENTION) -> None:
        self.model, self.cache, self.tpf, self.block = model, cache, tokens_per_frame, block
        self.capacity, self.attended = capacity, attended
        self.frames: list[int] = []

    def _phases(self, first: int, frames: int, like: torch.Tensor) -> torch.Tensor:
        """Phases of `frames` frames at positions first, first + 1, ... (what a forward attends to is always one run
        of positions: the anchor right before the cached frames, which come right before the window)."""
        return self.model.phases(first, (*like.shape[:2], frames, *like.shape[3:]), like.device)

    def slot_for(self, first_frame: int) -> int:
        """The slot of the block starting at video frame `first_frame`: where it was cached, or the next free slot,
        after evicting the oldest block past the anchor when the cache is full."""
        if first_frame in self.frames:
            return self.frames.index(first_frame)
        if len(self.frames) + self.block > self.capacity:
            a, n, t = self.block, self.block, self.tpf
            self.cache.evict(a * t, n * t, len(self.frames) * t)
            del self.frames[a:a + n]
        return len(self.frames)

    def window_view(self, x: torch.Tensor, first_frame: int) -> _Attended | None:
        """What the window starting at `first_frame` (x: its latents [B, 16, n, h, w]) attends to beside itself:
        None (itself alone) while it starts at the video's first block."""
        slot = self.slot_for(first_frame)
        if slot == 0:
            return None
        t, a = self.tpf, self.block
        working = max(a, slot - (self.attended - x.shape[2] - a))  # the cached frames [working, slot) precede it
        frames = a + slot - working + x.shape[2]
        return _Attended(self.cache, slice(working * t, slot * t), self._phases(first_frame + x.shape[2] - frames,
                                                                                frames, x), anchor=slice(0, a * t))

    def clean_view(self, x: torch.Tensor, first_frame: int) -> _Attended:
        """The clean pass of the block starting at `first_frame` (x: [B, 16, n_b, h, w]): written at its slot,
        attending to the last `attended` cached frames up to it."""
        slot = self.slot_for(first_frame)
        self.frames[slot:slot + x.shape[2]] = range(first_frame, first_frame + x.shape[2])
        end = slot + x.shape[2]
        lo = max(0, end - self.attended)  # 0 (the anchor at 0 and no eviction yet) or past the anchor
        return _Attended(self.cache, slice(lo * self.tpf, end * self.tpf),
                         self._phases(self.frames[lo], end - lo, x), write_at=slot * self.tpf)


def sample_rolling(model: CausalWanModel, text: CrossAttentionKV, *, num_blocks: int,
                   initial: Callable[[int], torch.Tensor], schedule: Schedule, cache: KVCache, tokens_per_frame: int,
                   renoise: Renoise, glue: Glue = EAGER, keep: bool = True,
                   after_window: Callable[[Window, torch.Tensor], None] | None = None,
                   parallel: SequenceParallel | None = None) -> torch.Tensor | None:
    """Rolling Forcing's loop over `num_blocks` blocks (at least one per step); `initial(b)` is block b's noise
    [B, n_b, 16, h, w], asked for when the block enters the window. Returns the x0 latents [B, 16, F, h, w] (with
    `keep`; else None: only the blocks in the window are held). `after_window(window, x0)` follows every window's
    forward (x0 [B, 16, frames, h, w]; its first block is final when the window's first step is the last). With
    `parallel`, `cache` holds this rank's heads (`causal.parallel`)."""
    n_b, steps = schedule.frames_per_block, schedule.steps_for(first_block=False)
    if num_blocks < len(steps):
        raise ValueError(f"Rolling Forcing makes at least {len(steps)} blocks of {n_b} latent frames (one per step: "
                         f"{len(steps) * n_b} latent frames = {4 * len(steps) * n_b - 3} video frames); got "
                         f"{num_blocks * n_b} latent frames")
    rolling = RollingCache(model, cache, tokens_per_frame=tokens_per_frame, block=n_b)
    noisy: dict[int, torch.Tensor] = {}  # each block in the window at its next level: the references' `noisy_cache`
    levels: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}  # per-frame timesteps and sigmas
    final = []
    for window in windows(num_blocks, len(steps)):
        if window.steps[-1] == 0:
            noisy[window.last] = initial(window.last)
        x = torch.cat([noisy[b] for b in range(window.first, window.last + 1)], dim=1)
        batch, frames, channels, h, w = x.shape
        if window.steps not in levels:
            level = [k for k in window.steps for _ in range(n_b)]
            levels[window.steps] = (
                torch.tensor([[steps[k][0] for k in level]] * batch, dtype=torch.float64, device=x.device),
                torch.tensor([steps[k][1] for k in level], dtype=torch.float64, device=x.device).view(1, -1, 1, 1, 1))
        t, sigma = levels[window.steps]
        first = window.first * n_b
        x_in = x.transpose(1, 2)
        v = model(x_in, t, text, cache=rolling.window_view(x_in, first), rope_frame=first, glue=glue,
                  parallel=parallel).transpose(1, 2)
        x0 = (x.double() - sigma * v.double()).to(x.dtype)
        if after_window is not None:
            after_window(window, x0.transpose(1, 2))
        del noisy[window.first]  # at its last step (a final block) or to be re-noised below
        for i, k in enumerate(window.steps):  # every block but the one at its last step goes to its next level
            if k + 1 < len(steps):
                eps = renoise((batch * frames, channels, h, w)).to(x.device).view(batch, frames, channels, h, w)
                s, rows = steps[k + 1][1], slice(i * n_b, (i + 1) * n_b)
                noisy[window.first + i] = ((1 - s) * x0[:, rows].float() + s * eps[:, rows].float()).to(x.dtype)
        if keep and window.steps[0] == len(steps) - 1:
            final.append(x0[:, :n_b])
        clean = x0[:, :n_b].transpose(1, 2)
        zero = torch.zeros(batch, n_b, dtype=torch.float64, device=x.device)
        model(clean, zero, text, cache=rolling.clean_view(clean, first), rope_frame=first, glue=glue, parallel=parallel)
    return torch.cat(final, dim=1).transpose(1, 2) if keep else None
