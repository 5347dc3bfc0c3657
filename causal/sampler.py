"""Autoregressive block sampling (design §4.6, §4.7, §5.4, §5.7) and the noise contract
(architecture.md).

A *fragment* is a window of `num_frames` latent frames (21 = 81 video frames) sharing one KV cache.
Blocks of `frames_per_block` (3) latent frames are denoised in turn; each attends to the cached
K/V of every earlier block of its fragment and to itself. Per block and step k:

    v  = Net(x, τ_k)                          (writes the block's K/V at its slot)
    x0 = bf16(x − σ_k·v)                      (float64; LightX2V mode: float32, not rounded)
    x  = bf16((1 − σ_{k+1})·x0 + σ_{k+1}·ε)   (float32, fresh ε ~ N(0, I); not after the last step)

then, with the clean pass on, Net(x0, τ = 0) re-writes the slot with the clean block's K/V.

Fragment f ≥ 1 starts from a fresh window: the previous fragment's last clean block is re-cached at
slot 0 (RoPE positions restart at 0, timestep 0, under fragment f's prompt) and 6 new blocks follow,
so n fragments give 21 + 18·(n − 1) latent frames. LightX2V intends the same chaining but re-caches
a latent it never sets (its multi-fragment path crashes, §5.7); this sampler always uses the clean
last block. Given `start_latents`, the first fragment is prefilled the same way (extension).

Noise: each fragment draws its initial noise as one tensor [B, F_new, 16, h, w] and then one
[B·3, 16, h, w] re-noise draw per step but the last, block by block, all from one generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from . import kernels
from .config import LATENT_CHANNELS, VAE_STRIDE
from .graphs import CudaGraphs
from .kv_cache import CrossAttentionKV, KVCache
from .model import CausalWanModel
from .schedule import Schedule

FRAMES_PER_BLOCK = 3
FRAGMENT_FRAMES = 21
PIXEL_MULTIPLE = VAE_STRIDE[1] * 2  # VAE stride 8 × patch 2

Renoise = Callable[[tuple[int, ...]], torch.Tensor]


@dataclass(frozen=True)
class Progress:
    """Reported after every denoising step. Raising from the callback stops sampling."""

    fragment: int
    block: int
    step: int
    completed: int
    total: int
    denoised: torch.Tensor
    """The current block's x0 prediction [B, 16, frames_per_block, h, w] (model space)."""


@dataclass(frozen=True)
class Generation:
    latents: torch.Tensor
    """The generated latent frames [B, 16, F, h, w] (model space), start latents excluded."""
    last_block: torch.Tensor
    """Clean latents of the final block [B, 16, frames_per_block, h, w]: what a continuation re-caches."""


def fragment_lengths(num_frames: int, num_fragments: int, start_frames: int = 0,
                     frames_per_block: int = FRAMES_PER_BLOCK) -> list[int]:
    """New latent frames per fragment: num_frames − start, then num_frames − frames_per_block each."""
    return [num_frames - start_frames] + [num_frames - frames_per_block] * (num_fragments - 1)


def kv_cache_bytes(model: CausalWanModel, *, batch: int, num_frames: int, height: int, width: int,
                   dtype: torch.dtype = torch.bfloat16) -> int:
    c = model.config
    tokens = num_frames * c.tokens_per_frame(height, width)
    return KVCache.nbytes_for(c.num_layers, batch, tokens, c.num_heads, c.head_dim, dtype)


def working_memory_bytes(model: CausalWanModel, *, batch: int, num_frames: int, height: int, width: int,
                         dtype: torch.dtype = torch.bfloat16, frames_per_block: int = FRAMES_PER_BLOCK) -> int:
    """What sampling needs beside the weights: the KV cache, the text K/V and one block's activations
    (L tokens: the FFN hidden 2·L·ffn, about ten L·D tensors, and the float64 RoPE temporaries ≈ 32·L·D
    bytes)."""
    c = model.config
    element = torch.empty((), dtype=dtype).element_size()
    tokens = frames_per_block * c.tokens_per_frame(height, width)
    activations = batch * tokens * (2 * c.ffn_dim * element + c.dim * (10 * element + 32))
    text = 2 * c.num_layers * batch * c.text_len * c.dim * element
    cache = kv_cache_bytes(model, batch=batch, num_frames=num_frames, height=height, width=width, dtype=dtype)
    return cache + text + activations


def _check_inputs(model: CausalWanModel, contexts: list[torch.Tensor], num_frames: int, height: int,
                  width: int, num_fragments: int, frames_per_block: int,
                  start_latents: torch.Tensor | None) -> None:
    if height <= 0 or width <= 0 or height % PIXEL_MULTIPLE or width % PIXEL_MULTIPLE:
        raise ValueError(f"width and height must be positive multiples of {PIXEL_MULTIPLE} pixels "
                         f"(got {width}×{height})")
    if frames_per_block < 1 or num_frames < frames_per_block or num_frames % frames_per_block:
        raise ValueError(f"num_frames must be a whole number of {frames_per_block}-frame blocks "
                         f"(got {num_frames} latent frames)")
    if num_fragments < 1:
        raise ValueError(f"num_fragments must be at least 1 (got {num_fragments})")
    if num_fragments > 1 and num_frames <= frames_per_block:
        raise ValueError("chaining fragments needs num_frames larger than one block")
    if len(contexts) != num_fragments:
        raise ValueError(f"got {len(contexts)} prompts for {num_fragments} fragments: give one prompt, "
                         "or one per fragment")
    for ctx in contexts:
        if ctx.dim() != 3:
            raise ValueError(f"a prompt embedding must be [batch, tokens, width], got shape {tuple(ctx.shape)}")
        if ctx.shape[-1] != model.config.text_dim:
            raise ValueError(f"prompt embedding width {ctx.shape[-1]} does not match the model's text "
                             f"width {model.config.text_dim}: use the text encoder made for this model (umT5-XXL)")
        if ctx.shape[0] != contexts[0].shape[0]:
            raise ValueError("all prompts must have the same batch size")
    if start_latents is not None:
        expected = (contexts[0].shape[0], LATENT_CHANNELS, height // 8, width // 8)
        got = tuple(start_latents.shape)
        if start_latents.dim() != 5 or (got[0], got[1], got[3], got[4]) != expected:
            raise ValueError(f"start latents must be [{expected[0]}, {LATENT_CHANNELS}, frames, {expected[2]}, "
                             f"{expected[3]}] for {width}×{height}, got {list(got)}")
        n = got[2]
        if n % frames_per_block or not 0 < n < num_frames:
            raise ValueError(f"start latents must be whole {frames_per_block}-frame blocks and fewer than "
                             f"num_frames ({num_frames}); got {n} frames")


def generate(model: CausalWanModel, context: torch.Tensor | Sequence[torch.Tensor], *, height: int, width: int,
             schedule: Schedule, num_frames: int = FRAGMENT_FRAMES, num_fragments: int = 1,
             seed: int | None = None, generator: torch.Generator | None = None,
             noise: torch.Tensor | None = None, renoise: Renoise | None = None,
             start_latents: torch.Tensor | None = None, frames_per_block: int = FRAMES_PER_BLOCK,
             dtype: torch.dtype = torch.bfloat16, device: torch.device | str | None = None,
             progress: Callable[[Progress], None] | None = None, fused_kernels: bool = False,
             graphs: CudaGraphs | None = None) -> Generation:
    """Sample `num_fragments` chained fragments; see `sample_video` for the arguments."""
    contexts = [context] * num_fragments if isinstance(context, torch.Tensor) else list(context)
    _check_inputs(model, contexts, num_frames, height, width, num_fragments, frames_per_block, start_latents)
    device = torch.device(device) if device is not None else model.patch_embedding.weight.device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if fused_kernels and (why := kernels.fused_unavailable(device)):
        raise RuntimeError(why)
    batch = contexts[0].shape[0]
    h, w = height // 8, width // 8
    start = 0 if start_latents is None else start_latents.shape[2]
    lengths = fragment_lengths(num_frames, num_fragments, start, frames_per_block)
    noise_dtype = torch.float32 if schedule.lightx2v_arithmetic else dtype
    if noise is not None and tuple(noise.shape) != (batch, sum(lengths), LATENT_CHANNELS, h, w):
        raise ValueError(f"noise must have shape {[batch, sum(lengths), LATENT_CHANNELS, h, w]} "
                         f"([B, F, 16, H/8, W/8]), got {list(noise.shape)}")
    if noise is None or renoise is None:
        if generator is None and seed is not None:
            generator = torch.Generator(device).manual_seed(seed)

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=noise_dtype, device=device)

    renoise = renoise or draw
    steps = list(zip(schedule.timesteps, schedule.sigmas))
    total = sum(lengths) // frames_per_block * len(steps)
    timesteps = [torch.full((batch, frames_per_block), tau, dtype=torch.float64, device=device)
                 for tau, _ in steps]
    clean_t = torch.zeros(batch, frames_per_block, dtype=torch.float64, device=device)
    if graphs is None:
        cache = KVCache.for_video(model.config, batch=batch, height=height, width=width, num_frames=num_frames,
                                  dtype=dtype, device=device)
    elif graphs.model is not model or graphs.shape != (batch, height, width, num_frames, dtype, device):
        raise ValueError("these CUDA graphs were made for another model or video shape "
                         f"(batch, height, width, frames, dtype, device = {graphs.shape})")
    else:
        cache = graphs.cache

    text: CrossAttentionKV | None = None  # the current fragment's prompt K/V

    def forward(x: torch.Tensor, timestep: torch.Tensor, slot: int) -> torch.Tensor:
        if graphs is not None:
            return graphs.forward(x, timestep, slot)
        return model(x, timestep, text, cache=cache, cache_frame=slot, rope_frame=slot)

    blocks: list[torch.Tensor] = []
    completed = 0
    try:
        with kernels.fused_kernels(fused_kernels):
            context_latents = None if start_latents is None else start_latents.to(device=device, dtype=dtype)
            previous_context = None
            for fragment, new_frames in enumerate(lengths):
                if contexts[fragment] is not previous_context:
                    text = model.text_kv(contexts[fragment].to(device), dtype)
                    previous_context = contexts[fragment]
                    if graphs is not None:
                        graphs.set_text(text)
                if fragment > 0:
                    context_latents = blocks[-1]
                cached = 0 if context_latents is None else context_latents.shape[2]
                for slot in range(0, cached, frames_per_block):
                    forward(context_latents[:, :, slot:slot + frames_per_block], clean_t, slot)
                offset = sum(lengths[:fragment])
                fragment_noise = (noise[:, offset:offset + new_frames] if noise is not None
                                  else draw((batch, new_frames, LATENT_CHANNELS, h, w)))
                for b in range(new_frames // frames_per_block):
                    slot = cached + b * frames_per_block
                    # the references' layout: x [B, frames, 16, h, w]; the network takes [B, 16, frames, h, w]
                    x = fragment_noise[:, b * frames_per_block:(b + 1) * frames_per_block].to(device=device,
                                                                                              dtype=dtype)
                    for k, (timestep, (_, sigma)) in enumerate(zip(timesteps, steps)):
                        v = forward(x.transpose(1, 2), timestep, slot).transpose(1, 2)
                        if schedule.lightx2v_arithmetic:
                            x0 = x.float() - sigma * v.float()
                        else:
                            x0 = (x.double() - sigma * v.double()).to(dtype)
                        completed += 1
                        if progress is not None:
                            progress(Progress(fragment, b, k, completed, total, x0.transpose(1, 2).to(dtype)))
                        if k + 1 < len(steps):
                            next_sigma = steps[k + 1][1]
                            eps = renoise((batch * frames_per_block, LATENT_CHANNELS, h, w))
                            eps = eps.to(device).view(batch, frames_per_block, LATENT_CHANNELS, h, w)
                            x = ((1 - next_sigma) * x0.float() + next_sigma * eps.float()).to(dtype)
                    block = x0.to(dtype).transpose(1, 2)
                    if schedule.clean_pass:
                        forward(block, clean_t, slot)
                    blocks.append(block)
    finally:
        cache = None  # an exception's traceback keeps this frame alive: release the cache's memory now
    return Generation(latents=torch.cat(blocks, dim=2), last_block=blocks[-1])


def sample_video(model: CausalWanModel, context: torch.Tensor | Sequence[torch.Tensor], *,
                 num_frames: int = FRAGMENT_FRAMES,
                 height: int, width: int, schedule: Schedule, seed: int | None = None,
                 noise: torch.Tensor | None = None, renoise: Renoise | None = None, num_fragments: int = 1,
                 start_latents: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 frames_per_block: int = FRAMES_PER_BLOCK, dtype: torch.dtype = torch.bfloat16,
                 device: torch.device | str | None = None,
                 progress: Callable[[Progress], None] | None = None, fused_kernels: bool = False,
                 graphs: CudaGraphs | None = None) -> torch.Tensor:
    """Generate latents [B, 16, F, height/8, width/8] (model space, i.e. VAE-normalised).

    context: prompt embeddings [B, ≤512, text_dim] (umT5 output, zero rows after the prompt), or a
        list with one per fragment.
    num_frames: latent frames per fragment window, a multiple of `frames_per_block` (21 → 81 frames).
    height, width: video size in pixels, multiples of 16.
    schedule: a `Schedule` (see `SCHEDULES` for the presets).
    seed / generator: where noise comes from when it is not given (a new generator on `device`
        seeded with `seed`; with neither, torch's default generator).
    noise: replaces the initial noise, shape [B, F, 16, H/8, W/8] in the references' frame-major
        layout, F = all generated frames (fragment f's frames follow fragment f−1's).
    renoise: called with a shape (B·frames_per_block, 16, H/8, W/8) for every re-noise draw, in
        order; returns the tensor to use.
    num_fragments: chained windows (21 + 18·(n − 1) latent frames in all by default).
    start_latents: clean latents [B, 16, n, H/8, W/8] (model space, n a multiple of 3, n < num_frames)
        cached at timestep 0 before the first fragment, to extend a video; they are not returned.
    fused_kernels: run the elementwise glue as compiled kernels (CUDA + Triton): faster, within bf16
        tolerance of the exact path but not bitwise equal (bench/RESULTS.md). Off: the exact path.
    graphs: a `CudaGraphs` for this model and video shape, reused across calls: its KV cache is used and
        every block slot's forward is captured once and replayed (the same numbers, fewer launches).
    """
    return generate(model, context, num_frames=num_frames, height=height, width=width, schedule=schedule,
                    seed=seed, noise=noise, renoise=renoise, num_fragments=num_fragments,
                    start_latents=start_latents, generator=generator, frames_per_block=frames_per_block,
                    dtype=dtype, device=device, progress=progress, fused_kernels=fused_kernels,
                    graphs=graphs).latents
