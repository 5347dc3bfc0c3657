"""The Wan2.1 (and Wan2.2 TI2V-5B) text-to-video DiT run block-causally over a KV cache (docs/algorithm.md §1-§2).

Numerics follow the references (CausVid, CausVid-Plus, Self-Forcing) op for op: bf16 weights and
activations, the timestep sinusoid and the RoPE rotation in float64, RMSNorm statistics in float32
rounded before the weight, LayerNorm on the bf16 tensor, and every modulation product and sum a
separate op (each rounds). Parameter names are Wan's, so ComfyUI's LoRA and loaders see a `WanModel`.

Layer classes come from `operations` (default `torch.nn`) and raw parameters (the modulations, the
RMSNorm weights) are read through `cast(tensor, dtype, device)`, so a host such as ComfyUI can pass
its own offloading layers and casting without this module importing it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from . import kernels
from .attention import sdpa
from .config import WanConfig
from .kernels import EAGER, Glue
from .kv_cache import CrossAttentionKV, KVCache
from .parallel import SequenceParallel, Shard
from .rope import rope_frequencies, rope_phases

Cast = Callable[[torch.Tensor, torch.dtype, torch.device], torch.Tensor]
Operations = Any  # a namespace with Linear, Conv3d, LayerNorm classes (torch.nn or comfy.ops.*)


def default_cast(t: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return t.to(device=device, dtype=dtype)


def sinusoidal_embedding(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[cos(p·omega_k), sin(p·omega_k)], omega_k = 10000^(-k/(dim/2)), k < dim/2, in float64 (cosines first)."""
    half = dim // 2
    p = positions.to(torch.float64)
    angles = torch.outer(p, torch.pow(10000, -torch.arange(half, dtype=p.dtype, device=p.device).div(half)))
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class RMSNorm(nn.Module):
    """RMSNorm(u) = bf16(u_32 · rsqrt(mean(u_32²) + eps)) · w over the full width (not per head)."""

    def __init__(self, dim: int, eps: float, cast: Cast, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.cast = cast
        self.weight = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, glue: Glue = EAGER) -> torch.Tensor:
        return glue.run(kernels.rms_norm, x, self.weight_for(x), self.eps)

    def weight_for(self, x: torch.Tensor) -> torch.Tensor:
        return self.cast(self.weight, x.dtype, x.device)


class Projections(nn.Module):
    """q, k, v, o projections with RMSNorm on q and k: the layers of both attentions of a block."""

    def __init__(self, config: WanConfig, ops: Operations, cast: Cast, device=None, dtype=None,
                 small_dtype=None) -> None:
        super().__init__()
        d = config.dim
        self.num_heads = config.num_heads
        self.q = ops.Linear(d, d, device=device, dtype=dtype)
        self.k = ops.Linear(d, d, device=device, dtype=dtype)
        self.v = ops.Linear(d, d, device=device, dtype=dtype)
        self.o = ops.Linear(d, d, device=device, dtype=dtype)
        self.norm_q = RMSNorm(d, config.eps, cast, device, small_dtype)
        self.norm_k = RMSNorm(d, config.eps, cast, device, small_dtype)
        self.cast = cast


class SelfAttention(Projections):
    def forward(self, h: torch.Tensor, phases: torch.Tensor, cache: KVCache | None, layer: int,
                cache_start: int, mask: torch.Tensor | None, glue: Glue = EAGER,
                shard: Shard | None = None) -> torch.Tensor:
        """With a cache, this input's keys and values go into their slots (all but protected sink rows) and
        attention covers the cache up to the input's end; without one, the input attends to itself. With a
        `shard`, h holds this rank's tokens and the ranks exchange them around attention (`causal.parallel`)."""
        if shard is not None:
            return shard.self_attention(self, h, phases, cache, layer, cache_start, mask, glue)
        heads = self.num_heads
        norm_q, norm_k = self.norm_q, self.norm_k
        q = glue.norm_rope(self.q(h), norm_q.weight_for(h), norm_q.eps, phases, heads)
        k, v = self.k(h), self.v(h)
        if cache is not None:
            keys, values = glue.store(cache, layer, cache_start, k, v, norm_k.weight_for(h), norm_k.eps, phases,
                                      heads)
        else:
            keys = glue.norm_rope(k, norm_k.weight_for(h), norm_k.eps, phases, heads).transpose(1, 2)
            values = v.unflatten(-1, (heads, -1)).transpose(1, 2)
        out = glue.self_attention(q.transpose(1, 2), keys, values, mask)
        return self.o(out.transpose(1, 2).flatten(2))


class CrossAttention(Projections):
    def text_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, length, _ = text.shape
        k = self.norm_k(self.k(text)).view(b, length, self.num_heads, -1)
        v = self.v(text).view(b, length, self.num_heads, -1)
        return k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()

    def forward(self, h: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, glue: Glue = EAGER) -> torch.Tensor:
        b, length, _ = h.shape
        q = self.norm_q(self.q(h), glue).view(b, length, self.num_heads, -1)
        out = sdpa(q.transpose(1, 2), keys, values)  # 512 text keys: SDPA beats FlashAttention-4 there
        return self.o(out.transpose(1, 2).flatten(2))


class AttentionBlock(nn.Module):
    """x += g_1·SelfAttn(LN(x)(1+s_1)+b_1); x += CrossAttn(LN_affine(x)); x += g_2·FFN(LN(x)(1+s_2)+b_2)."""

    def __init__(self, config: WanConfig, ops: Operations, cast: Cast, device=None, dtype=None,
                 small_dtype=None) -> None:
        super().__init__()
        d = config.dim
        self.cast = cast
        self.eps = config.eps  # norm1, norm2: LayerNorms without weights (in kernels.layer_norm_modulate)
        self.self_attn = SelfAttention(config, ops, cast, device, dtype, small_dtype)
        self.norm3 = ops.LayerNorm(d, eps=config.eps, elementwise_affine=True, device=device, dtype=small_dtype)
        self.cross_attn = CrossAttention(config, ops, cast, device, dtype, small_dtype)
        self.ffn = nn.Sequential(
            ops.Linear(d, config.ffn_dim, device=device, dtype=dtype),
            nn.GELU(approximate="tanh"),
            ops.Linear(config.ffn_dim, d, device=device, dtype=dtype),
        )
        self.modulation = nn.Parameter(torch.empty(1, 6, d, device=device, dtype=small_dtype))

    def forward(self, x: torch.Tensor, e0: torch.Tensor, phases: torch.Tensor,
                text_k: torch.Tensor,
                text_v: torch.Tensor, cache: KVCache | None, layer: int, cache_start: int,
                mask: torch.Tensor | None, glue: Glue = EAGER, shard: Shard | None = None) -> torch.Tensor:
        # (shift_1, scale_1, gate_1, shift_2, scale_2, gate_2), each [B, F, 1, D]
        m = (self.cast(self.modulation, x.dtype, x.device).unsqueeze(1) + e0).chunk(6, dim=2)
        h = glue.run(kernels.layer_norm_modulate, x, m[1], m[0], self.eps)
        attended = self.self_attn(h, phases, cache, layer, cache_start, mask, glue, shard)
        x = glue.run(kernels.gated_add, x, attended, m[2])
        x, h = glue.run(kernels.add_layer_norm_modulate, x, self.cross_attn(self.norm3(x), text_k, text_v, glue),
                        m[4], m[3], self.eps)
        return glue.run(kernels.gated_add, x, self.feed_forward(h, glue), m[5])

    def feed_forward(self, h: torch.Tensor, glue: Glue = EAGER) -> torch.Tensor:
        """ffn(h) = W_2·GELU_tanh(W_1·h + b_1) + b_2; the first product and the GELU as the glue runs them."""
        up, _, down = self.ffn
        return down(glue.linear_gelu(up, h))


class Head(nn.Module):
    def __init__(self, config: WanConfig, ops: Operations, cast: Cast, device=None, dtype=None,
                 small_dtype=None) -> None:
        super().__init__()
        d = config.dim
        self.cast = cast
        out = config.out_dim * config.patch_size[0] * config.patch_size[1] * config.patch_size[2]
        self.norm = ops.LayerNorm(d, eps=config.eps, elementwise_affine=False, device=device, dtype=small_dtype)
        self.head = ops.Linear(d, out, device=device, dtype=dtype)
        self.modulation = nn.Parameter(torch.empty(1, 2, d, device=device, dtype=small_dtype))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        # e [B, F, D] is the time embedding before SiLU; (shift, scale) = modulation + e
        frames = e.shape[1]
        shift, scale = (self.cast(self.modulation, x.dtype, x.device).unsqueeze(1) + e.unsqueeze(2)).chunk(2, dim=2)
        return self.head(self.norm(x).unflatten(1, (frames, -1)) * (1 + scale) + shift)


class CausalWanModel(nn.Module):
    """Wan2.1 T2V DiT with per-frame timesteps, evaluated one block of latent frames at a time."""

    def __init__(self, config: WanConfig, *, operations: Operations = nn, cast: Cast = default_cast,
                 device=None, dtype=None, small_dtype=None) -> None:
        """`dtype` is the storage dtype of the large matrices; `small_dtype` (default: `dtype`) that of
        the norms, modulations and patch embedding, which stay precise when the matrices are fp8."""
        super().__init__()
        self.config = config
        self.cast = cast
        ops = operations
        d = config.dim
        small = small_dtype or dtype
        self.patch_embedding = ops.Conv3d(config.in_dim, d, kernel_size=config.patch_size,
                                          stride=config.patch_size, device=device, dtype=small)
        self.text_embedding = nn.Sequential(
            ops.Linear(config.text_dim, d, device=device, dtype=dtype),
            nn.GELU(approximate="tanh"),
            ops.Linear(d, d, device=device, dtype=dtype),
        )
        self.time_embedding = nn.Sequential(
            ops.Linear(config.freq_dim, d, device=device, dtype=dtype),
            nn.SiLU(),
            ops.Linear(d, d, device=device, dtype=dtype),
        )
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(d, 6 * d, device=device, dtype=dtype))
        self.blocks = nn.ModuleList(
            AttentionBlock(config, ops, cast, device, dtype, small) for _ in range(config.num_layers))
        self.head = Head(config, ops, cast, device, dtype, small)
        self._freqs: dict[torch.device, torch.Tensor] = {}  # RoPE table per device; not a parameter

    # -- inputs ---------------------------------------------------------------------------------

    def rope_table(self, device: torch.device) -> torch.Tensor:
        if device not in self._freqs:
            self._freqs[device] = rope_frequencies(self.config.head_dim).to(device)
        return self._freqs[device]

    def text_kv(self, context: torch.Tensor, dtype: torch.dtype) -> CrossAttentionKV:
        """Embed a prompt [B, <=512, text_dim] (zero rows appended up to 512, never masked) and
        compute every layer's cross-attention keys and values once, on the context's device."""
        b, length, width = context.shape
        if width != self.config.text_dim:
            raise ValueError(f"text embedding width {width} does not match the model's text_dim "
                             f"{self.config.text_dim}")
        if length > self.config.text_len:
            raise ValueError(f"prompt has {length} tokens; the model takes at most {self.config.text_len}")
        ctx = context.to(dtype)
        if length < self.config.text_len:
            ctx = torch.cat([ctx, ctx.new_zeros(b, self.config.text_len - length, width)], dim=1)
        text = self.text_embedding(ctx)
        pairs = [block.cross_attn.text_kv(text) for block in self.blocks]
        return CrossAttentionKV(keys=[k for k, _ in pairs], values=[v for _, v in pairs])

    def _time(self, timestep: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # timestep [B, F] -> e [B, F, D] (for the head) and e0 [B, F, 6, D] (for the blocks)
        emb = sinusoidal_embedding(self.config.freq_dim, timestep.flatten()).to(dtype)
        e = self.time_embedding(emb)
        e0 = self.time_projection(e).unflatten(1, (6, self.config.dim))
        return e.unflatten(0, timestep.shape), e0.unflatten(0, timestep.shape)

    # -- forward --------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, text: CrossAttentionKV, *,
                cache: KVCache | None = None, cache_frame: int = 0, rope_frame: int = 0, rope_offset: float = 0.0,
                phases: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                glue: Glue = EAGER, parallel: SequenceParallel | None = None) -> torch.Tensor:
        """Flow prediction v for latents x [B, C, F, h, w] at per-frame timesteps [B, F].

        With `cache`, the tokens' K/V are written at latent-frame slot `cache_frame` and attention
        covers the cache up to the end of this input; RoPE places the first frame at `rope_frame` (shifted by
        `rope_offset`, `rope.rope_phases`), or the
        tokens turn by the given `phases` (`self.phases(rope_frame, x.shape)`: a CUDA graph reads them from a
        buffer, so one capture serves every position). Without a cache, attention covers the input itself,
        restricted by `mask` if given. `glue` runs the elementwise ops eagerly (exact) or as compiled kernels
        (`kernels.COMPILED`). With `parallel`, this process computes its share of the tokens and the result is every
        rank's, gathered (`causal.parallel`).
        """
        grid = self._grid(x.shape)
        # token-major in memory, as the references' torch.cat of the patch embeddings leaves it: a transposed view
        # would make every LayerNorm copy its input and every compiled kernel read it against its stride
        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        e, e0 = self._time(timestep, tokens.dtype)
        if phases is None:
            phases = self.phases(rope_frame, x.shape, tokens.device, rope_offset)
        cache_start = cache_frame * grid[1] * grid[2]
        shard = None if parallel is None else parallel.shard(grid[0])
        if shard is not None:
            tokens, phases = shard.local(tokens, 1), shard.local(phases, 0)
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, e0, phases, text.keys[i], text.values[i], cache, i, cache_start, mask, glue, shard)
        out = self.head(tokens, e)
        return self._unpatchify(out if shard is None else shard.gather(out), grid)

    def _grid(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid (frames, rows, columns) of latents of `shape` [B, C, F, h, w]."""
        p = self.config.patch_size
        return shape[2] // p[0], shape[3] // p[1], shape[4] // p[2]

    def phases(self, rope_frame: int, shape: torch.Size | tuple[int, ...], device: torch.device,
               offset: float = 0.0) -> torch.Tensor:
        """RoPE phases of latents of `shape` whose first frame sits at position `rope_frame` (+ `offset`)."""
        return rope_phases(self.rope_table(device), rope_frame, *self._grid(shape), offset)

    def forward_block_causal(self, x: torch.Tensor, timestep: torch.Tensor, text: CrossAttentionKV,
                             frames_per_block: int, glue: Glue = EAGER) -> torch.Tensor:
        """The whole sequence in one pass under the training-time block-causal mask (docs/algorithm.md
        §2.1): a token
        of block j sees every token of blocks 0..j. The KV-cached loop must reproduce this."""
        p = self.config.patch_size
        frames = x.shape[2] // p[0]
        per_frame = (x.shape[3] // p[1]) * (x.shape[4] // p[2])
        block = torch.arange(frames, device=x.device).repeat_interleave(per_frame) // frames_per_block
        mask = block[None, :] <= block[:, None]
        return self.forward(x, timestep, text, mask=mask, glue=glue)

    def _unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        # out [B, F, S, p·q·r·C] with C fastest -> [B, C, F·p, H·q, W·r]
        b = out.shape[0]
        f, h, w = grid
        p, q, r = self.config.patch_size
        c = self.config.out_dim
        u = out.reshape(b, f, h, w, p, q, r, c)
        return torch.einsum("bfhwpqrc->bcfphqwr", u).reshape(b, c, f * p, h * q, w * r)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], config: WanConfig, *,
                        dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                        operations: Operations = nn, cast: Cast = default_cast) -> "CausalWanModel":
        """Build on the meta device and adopt the given tensors (no random init, no extra copy)."""
        with torch.device("meta"):
            model = cls(config, operations=operations, cast=cast)
        model.load_state_dict(state_dict, strict=True, assign=True)
        model.to(device=device, dtype=dtype)
        return model.eval().requires_grad_(False)
