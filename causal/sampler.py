"""Autoregressive block sampling and the noise contract (docs/algorithm.md section 5).

Blocks of `frames_per_block` (3) latent frames are denoised in turn; each attends to the K/V that the cache
policy kept (`cache_policy`, `context.ContextWindow`) and to itself: the few steps of `_denoise_block` (the
equations are in its docstring), then, with the clean pass on, Net(x0, tau = 0) re-writes the slot with the
clean block's K/V.

With the `fragments` policy a window of `num_frames` latent frames (21 = 81 video frames) is filled, then
the next fragment starts from a fresh window: the previous fragment's last clean block is re-cached at slot 0
(RoPE positions restart at 0, timestep 0, under the new fragment's prompt) and 6 new blocks follow, so n
fragments give 21 + 18 (n - 1) latent frames. LightX2V intends the same chaining but re-caches a latent it
never sets (its multi-fragment path crashes, docs/algorithm.md section 3.1); this sampler always uses the clean
last block. The `rolling` and `sink` policies never restart: the window slides, the video can go on without end,
and a prompt change re-caches the window under the new prompt (LongLive). The `recompute` policy keeps no cache
between blocks: before each one a short context is cached again from scratch (Krea Realtime, `rebuilt_context`).
Given start latents (one image, or a video), they are cached at timestep 0 before the first block, which attends
to them.

Noise: with `fragments`, each fragment draws its initial noise as one tensor [B, F_new, 16, h, w]; with
`rolling` / `sink`, each block draws [B, 3, 16, h, w] before its first step (memory does not grow with the
length). Every step but the last then draws one [B * 3, 16, h, w] re-noise tensor; all from one generator.

`generate` reads as its four steps: `_prepare` resolves and checks the call's values into a `_Plan`, then a
`_BlockLoop` prefills the cache, makes every block and finishes the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from . import kernels
from .attention import flash4_unavailable
from .cache_policy import CachePolicy, family_policy, fragments
from .config import WanConfig
from .context import ContextWindow, Forward, History
from .host import to_device
from .kv_cache import CrossAttentionKV, KVCache
from .kv_cache_fp8 import Fp8KVCache, video_cache
from .model import CausalWanModel
from .parallel import SequenceParallel
from .prompts import LivePrompts, PromptChange, change_at, check_prompt, check_timeline, open_shots, per_segment
from .rebuilt_context import RebuiltContext, Reencoder
from .request import (FRAMES_PER_BLOCK, Compute, Noise, Output, Progress, Renoise, Video,
                      fragment_lengths)
from .rolling_window import ROLLING_FORCING_CACHE, Window, sample_rolling
from .schedule import Schedule
from .unipc import UniPC

Prompts = torch.Tensor | Sequence[torch.Tensor] | Sequence[PromptChange]
"""Prompt embeddings [B, <=512, text_dim] (umT5 output, zero rows after the prompt), a list with one per fragment
(the last repeats), a timeline of `PromptChange(frame, embedding)`, or a `LivePrompts` that takes new prompts
while the video is made (each from the next block on)."""


@dataclass(frozen=True)
class Generation:
    latents: torch.Tensor
    """The generated latent frames [B, 16, F, h, w] (model space), start latents excluded."""
    last_block: torch.Tensor
    """Clean latents of the final block [B, 16, frames_per_block, h, w]: what a new fragment re-caches."""
    history: History | None = None
    """With `Output(record=True)`: the cache writes that rebuild the context (`Video(resume=...)` continues)."""


def kv_cache_bytes(model: CausalWanModel, *, batch: int, num_frames: int, height: int, width: int,
                   dtype: torch.dtype = torch.bfloat16, fp8: bool = False) -> int:
    c = model.config
    tokens = num_frames * c.tokens_per_frame(height, width)
    return (Fp8KVCache if fp8 else KVCache).nbytes_for(c.num_layers, batch, tokens, c.num_heads, c.head_dim, dtype)


def working_memory_bytes(model: CausalWanModel, *, batch: int, num_frames: int, height: int, width: int,
                         dtype: torch.dtype = torch.bfloat16, frames_per_block: int = FRAMES_PER_BLOCK,
                         kv_cache_fp8: bool = False, rope_at_read: bool = False) -> int:
    """What sampling needs beside the weights: the KV cache, the text K/V and one block's activations
    (L tokens: the FFN hidden 2 L ffn, about ten L D tensors, and the float64 RoPE temporaries ~ 32 L D
    bytes); an FP8 cache adds one layer's K/V dequantized for attention; keys rotated when read add, for one
    layer's N cached tokens, their rotated copy and its float64 temporaries, N D (element + 32), and the phase
    table, N (D / heads / 2) complex128."""
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


@torch.no_grad()  # a host's tensor that requires grad (a VAE's re-encoded frame) must not make the cache a graph
def generate(model: CausalWanModel, context: Prompts, video: Video, schedule: Schedule,
             policy: CachePolicy | None = None, *, noise: Noise = Noise(), compute: Compute = Compute(),
             output: Output = Output(), reencoder: Reencoder | None = None) -> Generation:
    """Sample `video` block by block with `schedule`'s steps, prompted by `context` (`Prompts`), its context kept
    by `policy` (default: fragments of `video.num_frames` latent frames; Rolling Forcing: its preset's).
    `reencoder`: the `recompute` policy's decoder and encoder (`rebuilt_context.ReencodedFrames`): it decodes
    every generated block and encodes a decoded frame again for the rebuilt context; to continue a video it must
    already have decoded that video's generated blocks (`blocks_seen`)."""
    plan = _prepare(model, context, video, schedule, policy, noise, compute, output, reencoder)
    if schedule.joint_window:
        return _generate_joint_window(model, plan, schedule, video, output)
    loop = _BlockLoop(model, plan, schedule, video, compute, output, reencoder)
    try:
        loop.prefill(video)
        for b in range(plan.total // plan.block):
            loop.block(b)
    finally:
        loop.release()  # an exception's traceback keeps this frame alive: release the cache's memory now
    return loop.finish()


def sample_video(model: CausalWanModel, context: Prompts, video: Video, schedule: Schedule,
                 policy: CachePolicy | None = None, *, noise: Noise = Noise(), compute: Compute = Compute(),
                 output: Output = Output(), reencoder: Reencoder | None = None) -> torch.Tensor:
    """`generate`'s latents alone: [B, 16, F, height/8, width/8] (model space, i.e. VAE-normalised), start latents
    excluded."""
    return generate(model, context, video, schedule, policy, noise=noise, compute=compute, output=output,
                    reencoder=reencoder).latents


# -- prepare: every value resolved and checked once ------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """A call's values resolved once, before anything is allocated; every later step reads them here."""

    policy: CachePolicy
    timeline: Sequence[PromptChange]
    block: int
    """Latent frames per block (the schedule's)."""
    total: int
    """Latent frames to generate."""
    device: torch.device
    output_device: torch.device
    dtype: torch.dtype
    glue: kernels.Glue
    noise: Noise
    generator: torch.Generator | None
    """The noise's generator (a new one for a seed); None: torch's default."""
    noise_dtype: torch.dtype
    latent_shape: tuple[int, int, int]
    """(channels, h, w) of one latent frame: the model's VAE layout at the video's size."""
    parallel: SequenceParallel | None = None
    """This process's rank in a sequence-parallel group (`Compute.parallel`): every noise tensor is rank 0's."""
    cache_heads: int | None = None
    """The KV cache's heads: None for the model's; a sequence-parallel rank's share of them."""

    @property
    def batch(self) -> int:
        return self.timeline[0].context.shape[0]

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, dtype=self.noise_dtype, device=self.device)

    def renoise(self, shape: tuple[int, ...]) -> torch.Tensor:
        return self.shared(self.noise.renoise(shape) if self.noise.renoise is not None else self.draw(shape))

    def initial_noise(self, first: int, frames: int) -> torch.Tensor:
        """The initial noise of generated frames [first, first + frames): the given noise's, or a new draw."""
        if self.noise.initial is not None:
            return self.shared(self.noise.initial[:, first:first + frames])
        return self.shared(self.draw((self.batch, frames, *self.latent_shape)))

    def shared(self, t: torch.Tensor) -> torch.Tensor:
        """t, or under sequence parallelism rank 0's t on the compute device (every rank draws the same numbers)."""
        return t if self.parallel is None else self.parallel.broadcast(t.to(self.device))


def _prepare(model: CausalWanModel, context: Prompts, video: Video, schedule: Schedule, policy: CachePolicy | None,
             noise: Noise, compute: Compute, output: Output, reencoder: Reencoder | None) -> _Plan:
    block = schedule.frames_per_block
    own_policy = family_policy_of(schedule) if schedule.joint_window else None  # the joint window's cache size
    policy = policy or own_policy or fragments(video.num_frames)
    _check_reencoder(policy, video.resume, reencoder)
    segments = fragment_lengths(video.num_frames, video.num_fragments, video.start_frames, block)
    total = video.total_frames if video.total_frames is not None else sum(segments)
    timeline = _timeline(context, segments)
    if policy.shots and not isinstance(timeline, LivePrompts):
        timeline = open_shots(timeline, block, total)
    _check_inputs(model, timeline, video, total, schedule, policy)
    device = torch.device(compute.device) if compute.device is not None else model.patch_embedding.weight.device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    output_device = torch.device(output.device) if output.device is not None else device
    if compute.fused_kernels and (why := kernels.fused_unavailable(device)):
        raise RuntimeError(why)
    if compute.flash_attention and (why := flash4_unavailable(device)):
        raise RuntimeError(why)
    if compute.parallel is not None:
        _check_parallel(compute.parallel, model, timeline, video, device)
    batch = timeline[0].context.shape[0]
    latent_shape = (model.config.out_dim, *model.config.latent_size(video.height, video.width))
    if noise.initial is not None and tuple(noise.initial.shape) != (batch, total, *latent_shape):
        raise ValueError(f"noise must have shape {[batch, total, *latent_shape]} ([B, F, C, h, w]), got "
                         f"{list(noise.initial.shape)}")
    generator = noise.generator
    if noise.seed is not None and (noise.initial is None or noise.renoise is None):
        generator = torch.Generator(device).manual_seed(noise.seed)
    if schedule.joint_window:
        _check_joint_window(schedule, video, policy, own_policy, timeline, compute, output)
    elif compute.graphs is not None and (compute.graphs.model is not model or compute.graphs.shape != (
            batch, video.height, video.width, policy.cache_frames(block), compute.dtype, device)):
        raise ValueError("these CUDA graphs were made for another model or video shape "
                         f"(batch, height, width, cache frames, dtype, device = {compute.graphs.shape})")
    glue = kernels.Glue(compiled=compute.fused_kernels, flash_attention=compute.flash_attention)
    return _Plan(policy=policy, timeline=timeline, block=block, total=total, device=device,
                 output_device=output_device, dtype=compute.dtype, glue=glue, noise=noise, generator=generator,
                 noise_dtype=torch.float32 if schedule.lightx2v_arithmetic else compute.dtype,
                 latent_shape=latent_shape, parallel=compute.parallel,
                 cache_heads=None if compute.parallel is None else compute.parallel.local_heads(model.config))


def family_policy_of(schedule: Schedule) -> CachePolicy | None:
    """The cache policy of a preset's schedule (custom steps keep their family's); None for a schedule no preset
    has."""
    try:
        return family_policy(schedule.name)
    except ValueError:
        return None


def _timeline(context: Prompts, segments: list[int]) -> Sequence[PromptChange]:
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


def _check_reencoder(policy: CachePolicy, resume: History | None, reencoder: Reencoder | None) -> None:
    """The recompute policy needs a reencoder (unless it keeps the first frame), and a resumed video's reencoder
    must have decoded that video's blocks."""
    if policy.kind != "recompute":
        return
    if reencoder is None and not policy.keep_first_frame:
        raise ValueError("the recompute policy (Krea Realtime) encodes a decoded frame again before each block: pass "
                         "a reencoder (causal.ReencodedFrames(decode, encode)), or keep the first frame instead "
                         "(cache_policy.recompute(keep_first_frame=True))")
    if resume is None:
        return
    if resume.policy != policy or resume.rebuilt is None:
        raise ValueError(f"this history was recorded with a {resume.policy.describe()}, not a {policy.describe()}")
    generated = resume.rebuilt.generated_blocks
    if reencoder is not None and not policy.keep_first_frame and reencoder.blocks_seen != generated:
        raise ValueError(f"the reencoder has decoded {reencoder.blocks_seen} blocks but the video being continued has "
                         f"{generated}: give it the video's generated blocks first, in order")


def _check_inputs(model: CausalWanModel, timeline: Sequence[PromptChange], video: Video, total_frames: int,
                  schedule: Schedule, policy: CachePolicy) -> None:
    frames_per_block = schedule.frames_per_block
    if frames_per_block < 1:
        raise ValueError(f"frames_per_block must be at least 1 (got {frames_per_block})")
    policy.check(frames_per_block)
    config = model.config
    check_model_fits(config, schedule, video.height, video.width)
    if video.first_frame is not None:
        h, w = config.latent_size(video.height, video.width)
        expected = [timeline[0].context.shape[0], config.out_dim, 1, h, w]
        if list(video.first_frame.shape) != expected:
            raise ValueError(f"the first frame must be one latent frame {expected} for {video.width}x{video.height}, "
                             f"got {list(video.first_frame.shape)}")
        if schedule.solver != "unipc":
            raise ValueError(f"{schedule.name} starts from an image with start latents (cached before the first "
                             "block); a first frame held in the first block is LongLive 2.0's image-to-video")
        if not torch.isfinite(video.first_frame).all():
            raise ValueError("the first frame contains NaN or Inf values: encode the image again")
    start_latents = video.start_latents
    if start_latents is not None:
        h, w = config.latent_size(video.height, video.width)
        expected = (timeline[0].context.shape[0], config.out_dim, h, w)
        got = tuple(start_latents.shape)
        if start_latents.dim() != 5 or (got[0], got[1], got[3], got[4]) != expected:
            raise ValueError(f"start latents must be [{expected[0]}, {config.out_dim}, frames, {expected[2]}, "
                             f"{expected[3]}] for {video.width}x{video.height}, got {list(got)}")
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
    if not policy.evicts and total_frames + video.start_frames > policy.window and policy.window <= frames_per_block:
        raise ValueError(f"chaining fragments needs num_frames larger than one block: each new fragment re-caches "
                         f"the last block (window {policy.window} latent frames)")
    for change in timeline:
        if change.context.shape[-1] != model.config.text_dim:
            raise ValueError(f"prompt embedding width {change.context.shape[-1]} does not match the model's text "
                             f"width {model.config.text_dim}: use the text encoder made for this model (umT5-XXL)")
        check_prompt(change.context, model.config.text_len)


def check_model_fits(config: WanConfig, schedule: Schedule, height: int, width: int) -> None:
    """Raise ValueError, naming what fits, where `schedule` is made for models on another VAE than this one's (16 or
    48 latent channels) or the size is not a multiple of the model's `pixel_multiple` (16 or 32 pixels). `generate`
    checks it; a host can check it before it loads anything."""
    if config.out_dim != schedule.latent_channels:
        raise ValueError(f"the {schedule.name} schedule is made for models with {schedule.latent_channels} latent "
                         f"channels; this model has {config.out_dim} ({config.latents.name}): choose "
                         + ("the LongLive 2.0 5B preset" if config.out_dim == 48 else "a Wan2.1 preset"))
    if height % config.pixel_multiple or width % config.pixel_multiple:
        raise ValueError(f"{width}x{height}: a model on the {config.latents.name} takes width and height "
                         f"in multiples of {config.pixel_multiple} pixels")


def _check_parallel(parallel: SequenceParallel, model: CausalWanModel, timeline: Sequence[PromptChange],
                    video: Video, device: torch.device) -> None:
    if isinstance(timeline, LivePrompts):
        raise ValueError("live prompts reach each process at its own time: with sequence parallel every rank must "
                         "switch prompts at the same block, so give a prompt timeline instead")
    parallel.check(model.config, model.config.tokens_per_frame(video.height, video.width), device)


def _check_joint_window(schedule: Schedule, video: Video, policy: CachePolicy, own_policy: CachePolicy | None,
                        timeline: Sequence[PromptChange], compute: Compute, output: Output) -> None:
    unsupported = [what for what, given in (
        ("start latents", video.start_latents is not None), ("a history to resume", video.resume is not None),
        ("record", output.record), ("CUDA graphs", compute.graphs is not None),
        ("the FP8 KV cache", compute.kv_cache_fp8), ("a prompt timeline", len(timeline) > 1),
        ("live prompts", isinstance(timeline, LivePrompts)), (f"the {policy.describe()}", policy != own_policy),
        ("more than one fragment", video.num_fragments > 1)) if given]
    if unsupported:
        raise ValueError(f"{schedule.name} samples a window of blocks together (Rolling Forcing): it does not take "
                         f"{', '.join(unsupported)} yet; leave them at their defaults (cache: the preset's)")


# -- prefill, the block loop, finish ---------------------------------------------------------------------------


_NON_FINITE = ("{what} came out NaN/Inf: the checkpoint may hold NaN/Inf weights, or the numbers overflowed "
               "(fp16); nothing after it could be valid")


def _prefill_chunks(frames: int, frames_per_block: int) -> list[int]:
    """Start latents are cached in blocks, a leftover first: 1 -> [1], 21 -> [3] * 7, 22 -> [1] + [3] * 7. A single
    image is then one frame at slot 0, the way Self-Forcing caches an image (its `independent_first_frame`)."""
    first = frames % frames_per_block
    return ([first] if first else []) + [frames_per_block] * (frames // frames_per_block)


def _denoise_block(window: ContextWindow, x: torch.Tensor, slot: int, position: int, timesteps: list[torch.Tensor],
                   steps: list[tuple[float, float]], *, renoise: Renoise, float32_x0: bool,
                   report: Callable[[int, torch.Tensor], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """One block's denoising steps (docs/algorithm.md section 5.1) from its initial noise x [B, n, 16, h, w] (the
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


def _denoise_unipc(window: ContextWindow, x: torch.Tensor, slot: int, position: int, timesteps: list[torch.Tensor],
                   steps: list[tuple[float, float]], *, report: Callable[[int, torch.Tensor], None],
                   first_frame: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One block's steps with Wan's UniPC solver (`causal.unipc`, LongLive 2.0) from its initial noise x
    [B, n, C, h, w]: v = Net(x, T_k), then the solver's corrected and predicted x; after the last step x is the
    x0 of that step. A `first_frame` [B, 1, C, h, w] is written over the block's first frame before every forward
    and after every step (the timesteps give it 0): LongLive 2.0's image-to-video. Returns x and the last step's
    network input."""
    solver = UniPC(tuple(sigma for _, sigma in steps) + (0.0,))
    for k, timestep in enumerate(timesteps):
        if first_frame is not None:
            x = torch.cat([first_frame, x[:, 1:]], dim=1)
        x_in = x.transpose(1, 2)
        v = window.forward(x_in, timestep, slot, position).transpose(1, 2)
        x, x0 = solver.step(v, x)
        if first_frame is not None:
            x, x0 = (torch.cat([first_frame, t[:, 1:]], dim=1) for t in (x, x0))
        report(k, x0)
    return x, x_in


def _cache_and_forward(model: CausalWanModel, plan: _Plan, video: Video,
                       compute: Compute) -> tuple[KVCache, Forward | None]:
    """The call's KV cache and block forward: a new cache and the model's own forward, or the CUDA graphs' cache
    and their replays."""
    graphs, glue = compute.graphs, plan.glue
    if graphs is None:
        return video_cache(model.config, compute.kv_cache_fp8, batch=plan.batch, height=video.height,
                           width=video.width, num_frames=plan.policy.cache_frames(plan.block), dtype=plan.dtype,
                           device=plan.device, num_heads=plan.cache_heads), None

    def forward(x: torch.Tensor, timestep: torch.Tensor, slot: int, position: int, rope_offset: float) -> torch.Tensor:
        return graphs.forward(x, timestep, slot, position, glue, rope_offset)

    return graphs.cache, forward


def _rebuilt_context(policy: CachePolicy, frames_per_block: int, resume: History | None) -> RebuiltContext | None:
    """The recompute policy's frame keeper (a resumed video's own); None for the other policies."""
    if policy.kind != "recompute":
        return None
    if resume is None:
        return RebuiltContext(policy.window, frames_per_block, policy.keep_first_frame)
    return resume.rebuilt


class _BlockLoop:
    """One call's block loop: the context window and its prompts' text K/V, the initial noise drawn but not used
    yet, the finished blocks, and the steps counted for progress."""

    def __init__(self, model: CausalWanModel, plan: _Plan, schedule: Schedule, video: Video, compute: Compute,
                 output: Output, reencoder: Reencoder | None) -> None:
        self.model, self.plan, self.schedule, self.output, self.reencoder = model, plan, schedule, output, reencoder
        self.graphs = compute.graphs
        self.resumed = video.resume is not None
        block, batch, device = plan.block, plan.batch, plan.device
        # the video's first block may have its own step list (Causal-Forcing++); a resumed video is past it
        self.step_lists = {first: schedule.steps_for(first) for first in (True, False)}
        num_blocks = plan.total // block
        self.progress_total = num_blocks * len(self.step_lists[False]) + (
            len(self.step_lists[True]) - len(self.step_lists[False]) if not self.resumed and num_blocks else 0)
        self.block_timesteps = {first: [torch.full((batch, block), tau, dtype=torch.float64, device=device)
                                        for tau, _ in steps] for first, steps in self.step_lists.items()}
        self.clean_t = torch.zeros(batch, block, dtype=torch.float64, device=device)
        cache, forward = _cache_and_forward(model, plan, video, compute)
        self.window = ContextWindow(model, plan.policy, cache, tokens_per_frame=model.config.tokens_per_frame(
            video.height, video.width), forward=forward, record=output.record or self.resumed, glue=plan.glue,
            frames_per_block=block, parallel=plan.parallel)
        self.rebuilt = _rebuilt_context(plan.policy, block, video.resume)
        self.first_frame = None if video.first_frame is None else \
            video.first_frame.transpose(1, 2).to(device=device, dtype=plan.dtype)  # [B, 1, C, h, w]
        self.texts: dict[int, CrossAttentionKV] = {}
        self.blocks: list[torch.Tensor] = []
        self.last_block: torch.Tensor | None = None
        self.all_finite: torch.Tensor | None = None
        self.completed = 0  # denoising steps done
        self.fragment = 0
        self.chunk: torch.Tensor | None = None  # initial noise drawn but not used yet [B, frames, 16, h, w]
        self.used = 0  # frames of initial noise used so far

    def text_for(self, context: torch.Tensor) -> CrossAttentionKV:
        """The text K/V of a prompt, computed once per prompt object."""
        if id(context) not in self.texts:
            self.texts[id(context)] = self.model.text_kv(context.to(self.plan.device), self.plan.dtype)
        text = self.texts[id(context)]
        if self.graphs is not None:
            self.graphs.set_text(text)
        return text

    def prefill(self, video: Video) -> None:
        """Before the first block: the resumed history replayed, or the first prompt taken; then the start latents
        cached at timestep 0 (the recompute policy keeps them for the context it rebuilds)."""
        plan, window = self.plan, self.window
        if video.resume is not None:
            window.replay(video.resume, plan.device, plan.dtype, self.text_for)
        else:
            window.use_prompt(plan.timeline[0].context, self.text_for, recache=False)
        if self.rebuilt is not None:
            self.rebuilt = self.rebuilt.to(plan.device)
            if video.start_latents is not None:
                self.rebuilt.add(video.start_latents.to(device=plan.device, dtype=plan.dtype), generated=False)
        elif video.start_latents is not None:
            latents = video.start_latents.to(device=plan.device, dtype=plan.dtype)
            offset = 0
            for n in _prefill_chunks(video.start_frames, plan.block):
                window.write(latents[:, :, offset:offset + n], 0.0)
                offset += n
        if video.resume is not None and window.recent:
            self.last_block = torch.cat(list(window.recent)[-plan.block:], dim=2)

    def block(self, b: int) -> None:
        """Block b: a new fragment where the window is full (or the context rebuilt), the prompt of its first
        frame, its initial noise, its denoising steps, then its K/V made final in the cache."""
        plan, window, policy, n = self.plan, self.window, self.plan.policy, self.plan.block
        first = b * n
        new_fragment = not policy.evicts and not window.fits(n)
        if new_fragment:
            window.start_fragment()
            self.fragment += 1
        if self.rebuilt is not None and (context_latents := self.rebuilt.frames(self.reencoder)) is not None:
            window.rebuild(context_latents)  # under the previous block's prompt, as Krea's server does
        change = change_at(plan.timeline, first)
        window.use_prompt(change.context, self.text_for, recache=not new_fragment and self.rebuilt is None,
                          cut=change.cut)
        if new_fragment:
            window.write(self.last_block, 0.0)  # the previous window's last clean block at slot 0
        x = self.initial_noise(first)
        slot, position = window.place(n)
        first_block = b == 0 and not self.resumed
        steps, timesteps = self.step_lists[first_block], self.block_timesteps[first_block]
        first_frame = self.first_frame if first_block else None
        if first_frame is not None:  # the image's frame at timestep 0 while the first block is made
            timesteps = [torch.cat([torch.zeros_like(t[:, :1]), t[:, 1:]], dim=1) for t in timesteps]

        def report(k: int, x0: torch.Tensor) -> None:
            self.completed += 1
            if self.output.progress is not None:
                self.output.progress(Progress(self.fragment, b, k, len(steps), self.completed, self.progress_total,
                                              x0.transpose(1, 2).to(plan.dtype)))

        if self.schedule.solver == "unipc":
            x0, x_in = _denoise_unipc(window, x, slot, position, timesteps, steps, report=report,
                                      first_frame=first_frame)
        else:
            x0, x_in = _denoise_block(window, x, slot, position, timesteps, steps, renoise=plan.renoise,
                                      float32_x0=self.schedule.lightx2v_arithmetic, report=report)
        block = x0.to(plan.dtype).transpose(1, 2)
        # NaN/Inf weights or prompts show in the first block: checked at once (one host sync); later blocks
        # only add to a flag on the device, read once at the end, so no block waits for the host
        finite = torch.isfinite(block).all()
        self.all_finite = finite if self.all_finite is None else self.all_finite & finite
        if b == 0 and not finite:
            raise FloatingPointError(_NON_FINITE.format(what="block 0"))
        if self.rebuilt is not None:  # the next block rebuilds the cache: nothing here would be seen again
            self.rebuilt.add(block, generated=True)
            if self.reencoder is not None and not policy.keep_first_frame:
                self.reencoder.add(block)
        elif self.schedule.clean_pass:
            window.forward(block, self.clean_t, slot, position)
            window.finish(block, 0.0)
        else:
            window.finish(x_in, float(steps[-1][0]), clean=block)  # tau of the last step (no device read)
        self.last_block = block
        if self.output.on_block is not None:
            self.output.on_block(block)
        if self.output.keep_latents:
            self.blocks.append(to_device(block, plan.output_device))

    def initial_noise(self, first: int) -> torch.Tensor:
        """The initial noise of the block starting at generated frame `first` [B, n, 16, h, w]: fragments draw
        once for the window's new frames, window policies once per block."""
        plan, n = self.plan, self.plan.block
        if self.chunk is None or self.chunk.shape[1] == 0:
            frames = (min(plan.policy.window - self.window.filled, plan.total - first) // n * n
                      if not plan.policy.evicts else n)
            self.chunk = plan.initial_noise(self.used, frames)
            self.used += frames
        x = self.chunk[:, :n].to(device=plan.device, dtype=plan.dtype)
        self.chunk = self.chunk[:, n:]
        return x

    def release(self) -> None:
        self.window.cache = None  # type: ignore[assignment]

    def finish(self) -> Generation:
        """The result: every kept block on the output device, the last block, the record; a NaN/Inf block after
        the first raises here."""
        if self.all_finite is not None and not self.all_finite:
            raise FloatingPointError(_NON_FINITE.format(what="a block of the video"))
        history = self.window.history
        if history is not None and self.rebuilt is not None:
            history.rebuilt = self.rebuilt.to("cpu")
        last = self.last_block
        latents = torch.cat(self.blocks, dim=2) if self.blocks else last.new_empty(*last.shape[:2], 0, *last.shape[3:])
        return Generation(latents=to_device(latents, self.plan.output_device), last_block=last, history=history)


def _generate_joint_window(model: CausalWanModel, plan: _Plan, schedule: Schedule, video: Video,
                           output: Output) -> Generation:
    """Rolling Forcing's sampler (`rolling_window.sample_rolling`) behind `generate`'s callbacks: progress after
    every window (`step` is the window's oldest block's), `on_block` as each block leaves the window final. The
    noise of a block is drawn when it enters the window, before that window's re-noise draws."""
    context = plan.timeline[0].context.to(plan.device)
    n_b, num_steps, total = schedule.frames_per_block, schedule.num_steps, plan.total
    cache = video_cache(model.config, False, batch=plan.batch, height=video.height, width=video.width,
                        num_frames=ROLLING_FORCING_CACHE, dtype=plan.dtype, device=context.device,
                        num_heads=plan.cache_heads)
    completed, last_block, finite = 0, None, None

    def initial(b: int) -> torch.Tensor:  # block b's noise, drawn as it enters the window
        return plan.initial_noise(b * n_b, n_b).to(device=plan.device, dtype=plan.dtype)

    def after_window(window: Window, x0: torch.Tensor) -> None:
        nonlocal completed, last_block, finite
        completed += len(window.steps)
        oldest = x0[:, :, :n_b]
        if window.steps[0] == num_steps - 1:
            last_block = oldest
            ok = torch.isfinite(oldest).all()  # on the device: read once at the end
            finite = ok if finite is None else finite & ok
            if output.on_block is not None:
                output.on_block(oldest)
        if output.progress is not None:
            output.progress(Progress(0, window.first, window.steps[0], num_steps, completed,
                                     total // n_b * num_steps, oldest))

    try:
        latents = sample_rolling(model, model.text_kv(context, plan.dtype), num_blocks=total // n_b, initial=initial,
                                 schedule=schedule, cache=cache,
                                 tokens_per_frame=model.config.tokens_per_frame(video.height, video.width),
                                 renoise=plan.renoise, glue=plan.glue, keep=output.keep_latents,
                                 after_window=after_window, parallel=plan.parallel)
    finally:
        cache.release()
    if finite is not None and not finite:
        raise FloatingPointError(_NON_FINITE.format(what="a block of the video"))
    kept = latents if latents is not None else last_block[:, :, :0]
    return Generation(latents=to_device(kept, plan.output_device), last_block=last_block, history=None)
