"""Autoregressive block sampling and the noise contract (docs/algorithm.md §5).

Blocks of `frames_per_block` (3) latent frames are denoised in turn; each attends to the K/V that the cache
policy kept (`cache_policy`, `context.ContextWindow`) and to itself: the few steps of `_denoise_block` (the
equations are in its docstring), then, with the clean pass on, Net(x0, tau = 0) re-writes the slot with the
clean block's K/V.

With the `fragments` policy a window of `num_frames` latent frames (21 = 81 video frames) is filled, then
the next fragment starts from a fresh window: the previous fragment's last clean block is re-cached at slot 0
(RoPE positions restart at 0, timestep 0, under the new fragment's prompt) and 6 new blocks follow, so n
fragments give 21 + 18·(n - 1) latent frames. LightX2V intends the same chaining but re-caches a latent it
never sets (its multi-fragment path crashes, docs/algorithm.md §3.1); this sampler always uses the clean
last block. The
`rolling` and `sink` policies never restart: the window slides, the video can go on without end, and a prompt
change re-caches the window under the new prompt (LongLive). The `recompute` policy keeps no cache between
blocks: before each one a short context is cached again from scratch (Krea Realtime, `rebuilt_context`). Given
`start_latents` (one image, or a video), they are cached at timestep 0 before the first block, which attends
to them.

Noise: with `fragments`, each fragment draws its initial noise as one tensor [B, F_new, 16, h, w]; with
`rolling` / `sink`, each block draws [B, 3, 16, h, w] before its first step (memory does not grow with the
length). Every step but the last then draws one [B·3, 16, h, w] re-noise tensor; all from one generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from . import kernels
from .attention import flash4_unavailable
from .cache_policy import CachePolicy, family_policy, fragments
from .config import LATENT_CHANNELS, VAE_STRIDE
from .context import ContextWindow, History
from .host import to_device
from .graphs import CudaGraphs
from .kv_cache import CrossAttentionKV, KVCache
from .kv_cache_fp8 import Fp8KVCache, video_cache
from .model import CausalWanModel
from .rebuilt_context import RebuiltContext, Reencoder
from .prompts import LivePrompts, PromptChange, change_at, check_timeline, per_segment
from .rolling_window import ROLLING_FORCING_CACHE, Window, sample_rolling
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
    steps: int
    """Denoising steps of this block (the last one is `steps - 1`)."""
    completed: int
    total: int
    denoised: torch.Tensor
    """The current block's x0 prediction [B, 16, frames_per_block, h, w] (model space)."""


@dataclass(frozen=True)
class Generation:
    latents: torch.Tensor
    """The generated latent frames [B, 16, F, h, w] (model space), start latents excluded."""
    last_block: torch.Tensor
    """Clean latents of the final block [B, 16, frames_per_block, h, w]: what a new fragment re-caches."""
    history: History | None = None
    """With `record=True`: the cache writes that rebuild the context (`generate(resume=...)` continues)."""


def fragment_lengths(num_frames: int, num_fragments: int, start_frames: int = 0,
                     frames_per_block: int = FRAMES_PER_BLOCK) -> list[int]:
    """New latent frames per fragment: the whole blocks after the start latents, then num_frames -
    frames_per_block each. Window policies use the same segments to count a video's length."""
    first = (num_frames - start_frames) // frames_per_block * frames_per_block
    return [first] + [num_frames - frames_per_block] * (num_fragments - 1)



def kv_cache_bytes(model: CausalWanModel, *, batch: int, num_frames: int, height: int, width: int,
                   dtype: torch.dtype = torch.bfloat16, fp8: bool = False) -> int:
    c = model.config
    tokens = num_frames * c.tokens_per_frame(height, width)
    return (Fp8KVCache if fp8 else KVCache).nbytes_for(c.num_layers, batch, tokens, c.num_heads, c.head_dim, dtype)


def working_memory_bytes(model: CausalWanModel, *, batch: int, num_frames: int, height: int, width: int,
                         dtype: torch.dtype = torch.bfloat16, frames_per_block: int = FRAMES_PER_BLOCK,
                         kv_cache_fp8: bool = False, rope_at_read: bool = False) -> int:
    """What sampling needs beside the weights: the KV cache, the text K/V and one block's activations
    (L tokens: the FFN hidden 2·L·ffn, about ten L·D tensors, and the float64 RoPE temporaries ~ 32·L·D
    bytes); an FP8 cache adds one layer's K/V dequantized for attention; keys rotated when read add, for one
    layer's N cached tokens, their rotated copy and its float64 temporaries, N·D·(element + 32), and the phase
    table, N·(D / heads / 2) complex128."""
    c = model.config
    element = torch.empty((), dtype=dtype).element_size()
    tokens = frames_per_block * c.tokens_per_frame(height, width)
    activations = batch * tokens * (2 * c.ffn_dim * element + c.dim * (10 * element + 32))
    text = 2 * c.num_layers * batch * c.text_len * c.dim * element
    cache = kv_cache_bytes(model, batch=batch, num_frames=num_frames, height=height, width=width, dtype=dtype,
                           fp8=kv_cache_fp8)
    if kv_cache_fp8:
        cache += kv_cache_bytes(model, batch=batch, num_frames=num_frames, height=height, width=width,
                                dtype=dtype) // c.num_layers
    if rope_at_read:
        cached = num_frames * c.tokens_per_frame(height, width)
        cache += batch * cached * c.dim * (element + 32) + cached * (c.head_dim // 2) * 16
    return cache + text + activations


def _check_inputs(model: CausalWanModel, timeline: Sequence[PromptChange], height: int, width: int,
                  total_frames: int, frames_per_block: int, policy: CachePolicy,
                  start_latents: torch.Tensor | None) -> None:
    if height <= 0 or width <= 0 or height % PIXEL_MULTIPLE or width % PIXEL_MULTIPLE:
        raise ValueError(f"width and height must be positive multiples of {PIXEL_MULTIPLE} pixels "
                         f"(got {width}x{height})")
    if frames_per_block < 1:
        raise ValueError(f"frames_per_block must be at least 1 (got {frames_per_block})")
    policy.check(frames_per_block)
    if start_latents is not None:
        expected = (timeline[0].context.shape[0], LATENT_CHANNELS, height // 8, width // 8)
        got = tuple(start_latents.shape)
        if start_latents.dim() != 5 or (got[0], got[1], got[3], got[4]) != expected:
            raise ValueError(f"start latents must be [{expected[0]}, {LATENT_CHANNELS}, frames, {expected[2]}, "
                             f"{expected[3]}] for {width}x{height}, got {list(got)}")
        n = got[2]
        if n < 1:
            raise ValueError("the start latent has no frames")
        if not torch.isfinite(start_latents).all():
            raise ValueError("the start latents contain NaN or Inf values: encode the image or video again")
        if not policy.evicts and n + frames_per_block > policy.window:
            raise ValueError(f"start latents ({n} frames) must leave room for a {frames_per_block}-frame block in "
                             f"a fragment of {policy.window} latent frames")
    if total_frames < frames_per_block or total_frames % frames_per_block:
        raise ValueError(f"the video must be a whole number of {frames_per_block}-frame blocks "
                         f"(got {total_frames} latent frames)")
    check_timeline(timeline, total_frames)
    start = 0 if start_latents is None else start_latents.shape[2]
    if not policy.evicts and total_frames + start > policy.window and policy.window <= frames_per_block:
        raise ValueError(f"chaining fragments needs num_frames larger than one block: each new fragment re-caches "
                         f"the last block (window {policy.window} latent frames)")
    for change in timeline:
        if change.context.shape[-1] != model.config.text_dim:
            raise ValueError(f"prompt embedding width {change.context.shape[-1]} does not match the model's text "
                             f"width {model.config.text_dim}: use the text encoder made for this model (umT5-XXL)")
        if change.context.shape[1] > model.config.text_len:
            raise ValueError(f"a prompt has {change.context.shape[1]} tokens; the model reads at most "
                             f"{model.config.text_len}")
        if change.context.shape[1] == 0:
            raise ValueError("a prompt embedding has 0 tokens: encode a prompt (even an empty one gives the end "
                             "token)")
        if not torch.isfinite(change.context).all():
            raise ValueError("a prompt embedding contains NaN or Inf values: the text encoder's output is broken; "
                             "re-encode the prompt (and check the text encoder file)")


_NON_FINITE = ("{what} came out NaN/Inf: the checkpoint may hold NaN/Inf weights, or the numbers overflowed "
               "(fp16); nothing after it could be valid")


def _prefill_chunks(frames: int, frames_per_block: int) -> list[int]:
    """Start latents are cached in blocks, a leftover first: 1 -> [1], 21 -> [3]·7, 22 -> [1] + [3]·7. A single
    image is then one frame at slot 0, the way Self-Forcing caches an image (its `independent_first_frame`)."""
    first = frames % frames_per_block
    return ([first] if first else []) + [frames_per_block] * (frames // frames_per_block)


def _timeline(context: torch.Tensor | Sequence[torch.Tensor] | Sequence[PromptChange],
              segments: list[int]) -> Sequence[PromptChange]:
    if isinstance(context, LivePrompts):
        return context
    if isinstance(context, torch.Tensor):
        return [PromptChange(0, context)]
    items = list(context)
    if items and all(isinstance(c, PromptChange) for c in items):
        return items  # type: ignore[return-value]
    if len(items) > len(segments):
        raise ValueError(f"got {len(items)} prompts for {len(segments)} fragment(s): give one prompt, or one per "
                         "fragment")
    return per_segment(items, segments)  # type: ignore[arg-type]


def _rebuilt_context(policy: CachePolicy, frames_per_block: int, resume: History | None,
                     reencoder: Reencoder | None) -> RebuiltContext | None:
    """The recompute policy's frame keeper (a resumed video's own), checked against the reencoder; None for the
    other policies."""
    if policy.kind != "recompute":
        return None
    if reencoder is None and not policy.keep_first_frame:
        raise ValueError("the recompute policy (Krea Realtime) encodes a decoded frame again before each block: pass "
                         "a reencoder (causal.ReencodedFrames(decode, encode)), or keep the first frame instead "
                         "(cache_policy.recompute(keep_first_frame=True))")
    if resume is None:
        return RebuiltContext(policy.window, frames_per_block, policy.keep_first_frame)
    if resume.policy != policy or resume.rebuilt is None:
        raise ValueError(f"this history was recorded with a {resume.policy.describe()}, not a {policy.describe()}")
    if reencoder is not None and not policy.keep_first_frame and reencoder.blocks_seen != resume.rebuilt.generated_blocks:
        raise ValueError(f"the reencoder has decoded {reencoder.blocks_seen} blocks but the video being continued has "
                         f"{resume.rebuilt.generated_blocks}: give it the video's generated blocks first, in order")
    return resume.rebuilt


def _denoise_block(window: ContextWindow, x: torch.Tensor, slot: int, position: int, timesteps: list[torch.Tensor],
                   steps: list[tuple[float, float]], *, renoise: Renoise, float32_x0: bool,
                   report: Callable[[int, torch.Tensor], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """One block's denoising steps (docs/algorithm.md §5.1) from its initial noise x [B, n, 16, h, w] (the
    references' frame-major layout; the network takes [B, 16, n, h, w]), step k at (tau_k, sigma_k):

        v  = Net(x, tau_k)                                    (writes the block's K/V at `slot`)
        x0 = bf16(x - sigma_k v)                              (float64; LightX2V: float32, not rounded)
        x  = bf16((1 - sigma_{k+1}) x0 + sigma_{k+1} eps)     (float32, eps = renoise([B n, 16, h, w]); not after
                                                                the last step)

    `report(k, x0)` follows every step. Returns x0 and the last step's network input."""
    batch, frames, channels, h, w = x.shape
    dtype = x.dtype
    for k, (timestep, (_, sigma)) in enumerate(zip(timesteps, steps)):
        x_in = x.transpose(1, 2)
        v = window.forward(x_in, timestep, slot, position).transpose(1, 2)
        if float32_x0:
            x0 = x.float() - sigma * v.float()
        else:
            x0 = (x.double() - sigma * v.double()).to(dtype)
        report(k, x0)
        if k + 1 < len(steps):
            next_sigma = steps[k + 1][1]
            eps = renoise((batch * frames, channels, h, w)).to(x.device).view(batch, frames, channels, h, w)
            x = ((1 - next_sigma) * x0.float() + next_sigma * eps.float()).to(dtype)
    return x0, x_in


@torch.no_grad()  # a host's tensor that requires grad (a VAE's re-encoded frame) must not make the cache a graph
def generate(model: CausalWanModel, context: torch.Tensor | Sequence[torch.Tensor] | Sequence[PromptChange], *,
             height: int, width: int, schedule: Schedule, num_frames: int = FRAGMENT_FRAMES, num_fragments: int = 1,
             total_frames: int | None = None, policy: CachePolicy | None = None,
             seed: int | None = None, generator: torch.Generator | None = None,
             noise: torch.Tensor | None = None, renoise: Renoise | None = None,
             start_latents: torch.Tensor | None = None, resume: History | None = None,
             frames_per_block: int | None = None,
             dtype: torch.dtype = torch.bfloat16, device: torch.device | str | None = None,
             output_device: torch.device | str | None = None, record: bool = False,
             on_block: Callable[[torch.Tensor], None] | None = None, keep_latents: bool = True,
             progress: Callable[[Progress], None] | None = None, fused_kernels: bool = False,
             graphs: CudaGraphs | None = None, reencoder: Reencoder | None = None,
             kv_cache_fp8: bool = False, flash_attention: bool = False) -> Generation:
    """Sample a video block by block; see `sample_video` for the arguments."""
    frames_per_block = frames_per_block or schedule.frames_per_block
    own_policy = family_policy_of(schedule) if schedule.joint_window else None  # the joint window's cache size
    policy = policy or own_policy or fragments(num_frames)
    if num_fragments < 1:
        raise ValueError(f"num_fragments must be at least 1 (got {num_fragments})")
    if start_latents is not None and resume is not None:
        raise ValueError("give either start latents or a history to resume, not both")
    rebuilt = _rebuilt_context(policy, frames_per_block, resume, reencoder)
    start = 0 if start_latents is None else start_latents.shape[2]
    segments = fragment_lengths(num_frames, num_fragments, start, frames_per_block)
    total = total_frames if total_frames is not None else sum(segments)
    timeline = _timeline(context, segments)
    _check_inputs(model, timeline, height, width, total, frames_per_block, policy, start_latents)
    device = torch.device(device) if device is not None else model.patch_embedding.weight.device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    output_device = torch.device(output_device) if output_device is not None else device
    if fused_kernels and (why := kernels.fused_unavailable(device)):
        raise RuntimeError(why)
    if flash_attention and (why := flash4_unavailable(device)):
        raise RuntimeError(why)
    glue = kernels.Glue(compiled=fused_kernels, flash_attention=flash_attention)
    batch = timeline[0].context.shape[0]
    h, w = height // 8, width // 8
    noise_dtype = torch.float32 if schedule.lightx2v_arithmetic else dtype
    if noise is not None and tuple(noise.shape) != (batch, total, LATENT_CHANNELS, h, w):
        raise ValueError(f"noise must have shape {[batch, total, LATENT_CHANNELS, h, w]} "
                         f"([B, F, 16, H/8, W/8]), got {list(noise.shape)}")
    if noise is None or renoise is None:
        if generator is None and seed is not None:
            generator = torch.Generator(device).manual_seed(seed)

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=noise_dtype, device=device)

    renoise = renoise or draw
    if schedule.joint_window:
        unsupported = [what for what, given in (
            ("start latents", start_latents is not None), ("a history to resume", resume is not None),
            ("record", record), ("CUDA graphs", graphs is not None), ("the FP8 KV cache", kv_cache_fp8),
            ("a prompt timeline", len(timeline) > 1), ("live prompts", isinstance(timeline, LivePrompts)),
            (f"the {policy.describe()}", policy != own_policy),
            ("more than one fragment", num_fragments > 1)) if given]
        if unsupported:
            raise ValueError(f"{schedule.name} samples a window of blocks together (Rolling Forcing): it does not take "
                             f"{', '.join(unsupported)} yet; leave them at their defaults (cache: the preset's)")
        n_b = frames_per_block

        def initial(b: int) -> torch.Tensor:  # block b's noise, drawn as it enters the window
            chunk = noise[:, b * n_b:(b + 1) * n_b] if noise is not None else draw((batch, n_b, LATENT_CHANNELS, h, w))
            return chunk.to(device=device, dtype=dtype)

        return _generate_joint_window(model, timeline[0].context.to(device), initial, schedule=schedule, glue=glue,
                                      renoise=renoise, on_block=on_block, keep_latents=keep_latents,
                                      progress=progress, output_device=output_device, size=(height, width, total),
                                      dtype=dtype)
    # the video's first block may have its own step list (Causal-Forcing++); a resumed video is past it
    step_lists = {first: schedule.steps_for(first) for first in (True, False)}
    num_blocks = total // frames_per_block
    progress_total = num_blocks * len(step_lists[False]) + (
        len(step_lists[True]) - len(step_lists[False]) if resume is None and num_blocks else 0)
    block_timesteps = {first: [torch.full((batch, frames_per_block), tau, dtype=torch.float64, device=device)
                               for tau, _ in steps] for first, steps in step_lists.items()}
    clean_t = torch.zeros(batch, frames_per_block, dtype=torch.float64, device=device)
    tokens_per_frame = model.config.tokens_per_frame(height, width)
    if graphs is None:
        cache = video_cache(model.config, kv_cache_fp8, batch=batch, height=height, width=width,
                            num_frames=policy.cache_frames(frames_per_block), dtype=dtype, device=device)
        forward = None
    elif graphs.model is not model or graphs.shape != (batch, height, width, policy.cache_frames(frames_per_block),
                                                        dtype, device):
        raise ValueError("these CUDA graphs were made for another model or video shape "
                         f"(batch, height, width, cache frames, dtype, device = {graphs.shape})")
    elif graphs.cache.quantized != kv_cache_fp8:
        raise ValueError(f"these CUDA graphs hold a {'FP8' if graphs.cache.quantized else dtype} KV cache; "
                         f"this call asks for {'FP8' if kv_cache_fp8 else dtype}")
    else:
        cache = graphs.cache

        def forward(x: torch.Tensor, timestep: torch.Tensor, slot: int, position: int) -> torch.Tensor:
            return graphs.forward(x, timestep, slot, position, glue)

    window = ContextWindow(model, policy, cache, tokens_per_frame=tokens_per_frame, forward=forward,
                           record=record or resume is not None, glue=glue, frames_per_block=frames_per_block)
    texts: dict[int, CrossAttentionKV] = {}

    def text_for(context: torch.Tensor) -> CrossAttentionKV:
        if id(context) not in texts:
            texts[id(context)] = model.text_kv(context.to(device), dtype)
        text = texts[id(context)]
        if graphs is not None:
            graphs.set_text(text)
        return text

    blocks: list[torch.Tensor] = []
    all_finite: torch.Tensor | None = None
    completed = 0
    fragment = 0
    chunk: torch.Tensor | None = None  # initial noise drawn but not used yet [B, frames, 16, h, w]
    used = 0  # frames of initial noise used so far
    try:
        if resume is not None:
            window.replay(resume, device, dtype, text_for)
        else:
            window.use_prompt(timeline[0].context, text_for, recache=False)
        if rebuilt is not None:
            rebuilt = rebuilt.to(device)
            if start_latents is not None:
                rebuilt.add(start_latents.to(device=device, dtype=dtype), generated=False)
        elif start_latents is not None:
            latents = start_latents.to(device=device, dtype=dtype)
            offset = 0
            for n in _prefill_chunks(start, frames_per_block):
                window.write(latents[:, :, offset:offset + n], 0.0)
                offset += n
        last_block = None if resume is None or not window.recent else torch.cat(
            list(window.recent)[-frames_per_block:], dim=2)
        for b in range(total // frames_per_block):
            first = b * frames_per_block
            new_fragment = not window.policy.evicts and not window.fits(frames_per_block)
            if new_fragment:
                window.start_fragment()
                fragment += 1
            if rebuilt is not None and (context_latents := rebuilt.frames(reencoder)) is not None:
                window.rebuild(context_latents)  # under the previous block's prompt, as Krea's server does
            change = change_at(timeline, first)
            window.use_prompt(change.context, text_for, recache=not new_fragment and rebuilt is None, cut=change.cut)
            if new_fragment:
                window.write(last_block, 0.0)  # the previous window's last clean block at slot 0
            if chunk is None or chunk.shape[1] == 0:
                # fragments: one draw for the window's new frames; window policies: one per block
                frames = (min(policy.window - window.filled, total - first) // frames_per_block * frames_per_block
                          if not policy.evicts else frames_per_block)
                chunk = (noise[:, used:used + frames] if noise is not None
                         else draw((batch, frames, LATENT_CHANNELS, h, w)))
                used += frames
            x = chunk[:, :frames_per_block].to(device=device, dtype=dtype)
            chunk = chunk[:, frames_per_block:]
            slot, position = window.place(frames_per_block)
            first_block = b == 0 and resume is None
            steps, timesteps = step_lists[first_block], block_timesteps[first_block]

            def report(k: int, x0: torch.Tensor) -> None:
                nonlocal completed
                completed += 1
                if progress is not None:
                    progress(Progress(fragment, b, k, len(steps), completed, progress_total,
                                      x0.transpose(1, 2).to(dtype)))

            x0, x_in = _denoise_block(window, x, slot, position, timesteps, steps, renoise=renoise,
                                      float32_x0=schedule.lightx2v_arithmetic, report=report)
            block = x0.to(dtype).transpose(1, 2)
            # NaN/Inf weights or prompts show in the first block: checked at once (one host sync); later blocks
            # only add to a flag on the device, read once at the end, so no block waits for the host
            finite = torch.isfinite(block).all()
            all_finite = finite if all_finite is None else all_finite & finite
            if b == 0 and not finite:
                raise FloatingPointError(_NON_FINITE.format(what="block 0"))
            if rebuilt is not None:  # the next block rebuilds the cache: nothing here would be seen again
                rebuilt.add(block, generated=True)
                if reencoder is not None and not policy.keep_first_frame:
                    reencoder.add(block)
            elif schedule.clean_pass:
                window.forward(block, clean_t, slot, position)
                window.finish(block, 0.0)
            else:
                window.finish(x_in, float(steps[-1][0]), clean=block)  # tau of the last step (no device read)
            last_block = block
            if on_block is not None:
                on_block(block)
            if keep_latents:
                blocks.append(to_device(block, output_device))
    finally:
        cache = None  # an exception's traceback keeps this frame alive: release the cache's memory now
        window.cache = None  # type: ignore[assignment]
    if all_finite is not None and not all_finite:
        raise FloatingPointError(_NON_FINITE.format(what="a block of the video"))
    if window.history is not None and rebuilt is not None:
        window.history.rebuilt = rebuilt.to("cpu")
    latents = torch.cat(blocks, dim=2) if blocks else last_block.new_empty(*last_block.shape[:2], 0,
                                                                           *last_block.shape[3:])
    return Generation(latents=to_device(latents, output_device), last_block=last_block, history=window.history)


def family_policy_of(schedule: Schedule) -> CachePolicy | None:
    """The cache policy of a preset's schedule (custom steps keep their family's); None for a schedule no preset
    has."""
    try:
        return family_policy(schedule.name)
    except ValueError:
        return None


def _generate_joint_window(model: CausalWanModel, context: torch.Tensor, initial: Callable[[int], torch.Tensor], *,
                           schedule: Schedule, glue: kernels.Glue, renoise: Renoise,
                           on_block: Callable[[torch.Tensor], None] | None, keep_latents: bool,
                           progress: Callable[[Progress], None] | None, output_device: torch.device,
                           size: tuple[int, int, int], dtype: torch.dtype) -> Generation:
    """Rolling Forcing's sampler (`rolling_window.sample_rolling`) behind `generate`'s callbacks: progress after
    every window (`step` is the window's oldest block's), `on_block` as each block leaves the window final. The
    noise of a block is drawn when it enters the window, before that window's re-noise draws."""
    height, width, total = size
    batch = context.shape[0]
    n_b, num_steps = schedule.frames_per_block, schedule.num_steps
    cache = video_cache(model.config, False, batch=batch, height=height, width=width,
                        num_frames=ROLLING_FORCING_CACHE, dtype=dtype, device=context.device)
    completed, last_block, finite = 0, None, None

    def after_window(window: Window, x0: torch.Tensor) -> None:
        nonlocal completed, last_block, finite
        completed += len(window.steps)
        oldest = x0[:, :, :n_b]
        if window.steps[0] == num_steps - 1:
            last_block = oldest
            ok = torch.isfinite(oldest).all()  # on the device: read once at the end
            finite = ok if finite is None else finite & ok
            if on_block is not None:
                on_block(oldest)
        if progress is not None:
            progress(Progress(0, window.first, window.steps[0], num_steps, completed, total // n_b * num_steps,
                              oldest))

    try:
        latents = sample_rolling(model, model.text_kv(context, dtype), num_blocks=total // n_b, initial=initial,
                                 schedule=schedule, cache=cache,
                                 tokens_per_frame=model.config.tokens_per_frame(height, width), renoise=renoise,
                                 glue=glue, keep=keep_latents, after_window=after_window)
    finally:
        cache.release()
    if finite is not None and not finite:
        raise FloatingPointError(_NON_FINITE.format(what="a block of the video"))
    kept = latents if latents is not None else last_block[:, :, :0]
    return Generation(latents=to_device(kept, output_device), last_block=last_block, history=None)


def sample_video(model: CausalWanModel, context: torch.Tensor | Sequence[torch.Tensor] | Sequence[PromptChange], *,
                 height: int, width: int, schedule: Schedule, **options) -> torch.Tensor:
    """Generate latents [B, 16, F, height/8, width/8] (model space, i.e. VAE-normalised); start latents
    are not included. The options are `generate`'s:

    context: prompt embeddings [B, <=512, text_dim] (umT5 output, zero rows after the prompt), a list with
        one per fragment (the last repeats), a timeline of `PromptChange(frame, embedding)`, or a
        `LivePrompts` that takes new prompts while the video is made (each from the next block on).
    height, width: video size in pixels, multiples of 16.
    schedule: a `Schedule` (see `SCHEDULES` for the presets).
    policy: a `CachePolicy` (`cache_policy.rolling(21)`, `sink(3, 12)`, ...); default: fragments of
        `num_frames` latent frames.
    num_frames: latent frames of a fragment window, a multiple of `frames_per_block` (21 -> 81 frames).
    num_fragments: chained windows (21 + 18·(n - 1) latent frames in all by default). Window policies
        make a video of the same length unless `total_frames` says otherwise.
    total_frames: generated latent frames in all (a multiple of `frames_per_block`), any length.
    seed / generator: where noise comes from when it is not given (a new generator on `device`
        seeded with `seed`; with neither, torch's default generator).
    noise: replaces the initial noise, shape [B, F, 16, H/8, W/8] in the references' frame-major
        layout, F = all generated frames.
    renoise: called with a shape (B·frames_per_block, 16, H/8, W/8) for every re-noise draw, in
        order; returns the tensor to use.
    start_latents: clean latents [B, 16, n, H/8, W/8] (model space, any n >= 1: one image is one frame)
        cached at timestep 0 before the first block, to start from an image or extend a video.
    resume: a `History` from an earlier `generate(record=True)`: its cache is rebuilt and the video goes
        on as if it had never stopped (pass the same generator, advanced by the earlier call).
    record: keep the `History` (on the CPU) in the result.
    output_device: where finished blocks go (default: the compute device); the CPU keeps device memory
        flat however long the video is.
    on_block: called with each finished block's clean latents [B, 16, frames_per_block, h, w] (model
        space, on the compute device) as soon as it is done, e.g. to decode and write it (streaming).
    keep_latents: False returns no latents (zero frames): with `on_block`, memory stays flat on every device.
    fused_kernels: run the elementwise glue as compiled kernels (CUDA + Triton): faster, within bf16
        tolerance of the exact path but not bitwise equal (bench/RESULTS.md). Off: the exact path.
    graphs: a `CudaGraphs` for this model and video shape (`num_frames = policy.cache_frames(frames_per_block)`),
        reused across calls: its KV cache is used and each slot's forward is captured once and replayed, RoPE
        positions read from a buffer (the same numbers, fewer launches; every cache policy).
    reencoder: the `recompute` policy's decoder and encoder (`rebuilt_context.ReencodedFrames`): it decodes every
        generated block and encodes a decoded frame again for the rebuilt context. To continue a video, it must
        already have decoded that video's generated blocks (`blocks_seen`).
    kv_cache_fp8: store the KV cache in FP8 (e4m3, a float32 scale per token and head: `kv_cache_fp8`), about
        half the memory; not bitwise (its error against the bf16 cache is in bench/RESULTS.md). With `graphs`,
        theirs must be made with the same setting.
    flash_attention: self-attention by FlashAttention-4 (the `flash-attn-4` package; Hopper and Blackwell GPUs:
        `attention.flash4_unavailable` says why not elsewhere): 1.1x faster blocks on an H200, as far from exact as
        SDPA's other backends are (bench/RESULTS.md).
    """
    return generate(model, context, height=height, width=width, schedule=schedule, **options).latents
