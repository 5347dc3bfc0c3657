"""Key/value caches of the causal DiT (docs/algorithm.md §2.2, §2.5).

`KVCache` holds, per layer, preallocated self-attention keys (RoPE-rotated when written, or un-rotated with
`key_phases` set: then rotated as attention reads them) and values for a
window of latent frames, token-major ([B, tokens, heads, head_dim]: the projections' own layout, so a
write is a contiguous copy, or a fused kernel's own output; attention reads transposed views). Every
forward writes its tokens' K/V at its slot and attends to everything from slot 0 up to the end of what it
wrote, so the current block sees all earlier blocks and itself. Later writes to the same slot (the next
denoising step, the clean context pass) replace earlier ones. `evict` drops tokens from the middle and moves
the later ones left, keeping their order: attention then sums over the keys in the references' order, so a
rolling window gives their numbers bit for bit (a ring buffer would not).

`CrossAttentionKV` holds the text keys/values per layer: they depend only on the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import WanConfig


class KVCache:
    """Self-attention K/V of `capacity` tokens per layer, stored [B, tokens, heads, head_dim]."""

    quantized = False
    """Whether rows are stored in another form than they are read (`kv_cache_fp8.Fp8KVCache`): a write must then
    go through `store`, not into `writable`'s views."""

    def __init__(self, num_layers: int, batch: int, capacity: int, num_heads: int, head_dim: int,
                 *, dtype: torch.dtype, device: torch.device | str) -> None:
        shape = (batch, capacity, num_heads, head_dim)
        self.capacity = capacity
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.protected = 0
        """Tokens [0, protected) are never written (an attention sink kept through a re-cache); the rows of a
        write that fall there are dropped."""
        self.key_phases: torch.Tensor | None = None
        """None: keys are stored RoPE-rotated. Else keys are stored un-rotated (RMS-normed) and attention rotates
        token t's key by key_phases[t] (complex128 [tokens, 1, head_dim / 2]) when it reads it: the positions of
        the cached frames, which the cache policy sets before each forward (`ContextWindow`)."""

    @classmethod
    def for_video(cls, config: WanConfig, *, batch: int, height: int, width: int, num_frames: int,
                  dtype: torch.dtype, device: torch.device | str, num_heads: int | None = None) -> KVCache:
        """A cache for `num_frames` latent frames of a height×width (pixels) video, of `num_heads` heads (default:
        the model's; a sequence-parallel rank's share of them, `causal.parallel`)."""
        return cls(config.num_layers, batch, num_frames * config.tokens_per_frame(height, width),
                   num_heads or config.num_heads, config.head_dim, dtype=dtype, device=device)

    @staticmethod
    def nbytes_for(num_layers: int, batch: int, capacity: int, num_heads: int, head_dim: int,
                   dtype: torch.dtype) -> int:
        element = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * batch * capacity * num_heads * head_dim * element

    def release(self) -> None:
        """Drop every tensor now (the cache cannot be used afterwards)."""
        self.keys.clear()
        self.values.clear()

    def tensors(self) -> list[torch.Tensor]:
        """Every per-token tensor of the cache ([B, tokens, ...]): what eviction moves."""
        return [*self.keys, *self.values]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def slots(self, layer: int, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Where tokens [start, start + length) of `layer` go: key and value views [B, length, heads, head_dim]."""
        end = start + length
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: tokens up to {end} but the cache holds {self.capacity}")
        return self.keys[layer][:, start:end], self.values[layer][:, start:end]

    def writable(self, layer: int, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Where a write of tokens [start, start + length) lands: key and value views of the slots it may
        write, and how many of its leading rows fall on protected slots and are dropped."""
        skip = min(max(self.protected - start, 0), length)
        keys, values = self.slots(layer, start + skip, length - skip)
        return keys, values, skip

    def visible(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of tokens [0, end) as attention takes them: views [B, heads, end, head_dim]."""
        return self.keys[layer][:, :end].transpose(1, 2), self.values[layer][:, :end].transpose(1, 2)

    def evict(self, start: int, count: int, end: int) -> None:
        """Drop tokens [start, start + count) of every layer; tokens [start + count, end) move to
        [start, end - count). Copied in pieces of `count` tokens, front to back, so no piece overlaps
        the one it overwrites and no temporary is needed."""
        if count <= 0:
            return
        if start < 0 or start + count > end or end > self.capacity:
            raise ValueError(f"cannot evict tokens {start}..{start + count} of {end} (capacity {self.capacity})")
        for tensor in self.tensors():
            for dst in range(start, end - count, count):
                n = min(count, end - count - dst)
                tensor[:, dst:dst + n].copy_(tensor[:, dst + count:dst + count + n])

    def store(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, L, heads, head_dim] at tokens [start, start + L); return the views
        [B, heads, start + L, head_dim] of everything attention may see."""
        keys, values, skip = self.writable(layer, start, k.shape[1])
        keys.copy_(k[:, skip:])
        values.copy_(v[:, skip:])
        return self.visible(layer, start + k.shape[1])


@dataclass
class CrossAttentionKV:
    """Per-layer text keys/values [B, heads, text_len, head_dim], computed once per prompt."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
