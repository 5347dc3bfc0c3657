"""What a `generate` call asks for, as four values beside the model, the prompts, the schedule and the cache policy:

* `Video`: what to make (the size, the length, what it starts from);
* `Noise`: where its random numbers come from (a seed, a generator, or given tensors);
* `Compute`: where and how the numbers are computed (device, dtype, compiled glue, CUDA graphs, FP8 cache, several
  GPUs);
* `Output`: what happens to the finished blocks (where they go, whether they are kept, callbacks, the record).

Each checks what it can check alone when it is made; what depends on the model, the schedule or the prompts is
checked when `generate` starts, before anything is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .config import VAE_STRIDE
from .context import History
from .graphs import CudaGraphs
from .parallel import SequenceParallel

FRAMES_PER_BLOCK = 3
FRAGMENT_FRAMES = 21
PIXEL_MULTIPLE = VAE_STRIDE[1] * 2  # VAE stride 8 x patch 2; a Wan2.2-VAE model needs 32 (`WanConfig.pixel_multiple`)

Renoise = Callable[[tuple[int, ...]], torch.Tensor]


def fragment_lengths(num_frames: int, num_fragments: int, start_frames: int = 0,
                     frames_per_block: int = FRAMES_PER_BLOCK) -> list[int]:
    """New latent frames per fragment: the whole blocks after the start latents, then num_frames -
    frames_per_block each. Window policies use the same segments to count a video's length."""
    first = (num_frames - start_frames) // frames_per_block * frames_per_block
    return [first] + [num_frames - frames_per_block] * (num_fragments - 1)


@dataclass(frozen=True)
class Video:
    """What to make: the size in pixels, the length in latent frames, and what the video starts from (nothing,
    start latents, or a recorded history it goes on from)."""

    height: int
    width: int
    """Pixels, multiples of 16 (of 32 for a model on the Wan2.2 VAE: checked when `generate` starts)."""
    num_frames: int = FRAGMENT_FRAMES
    """Latent frames of a fragment window, a whole number of blocks (21 -> 81 video frames): the `fragments`
    policy's window, and the length that `num_fragments` counts in."""
    num_fragments: int = 1
    """Chained windows: 21 + 18 (n - 1) latent frames in all by default. Window policies make a video of the same
    length unless `total_frames` says otherwise."""
    total_frames: int | None = None
    """Generated latent frames in all, a whole number of blocks, any length; None: the fragments' sum."""
    start_latents: torch.Tensor | None = None
    """Clean latents [B, C, n, h, w] (model space, any n >= 1: one image is one frame) cached at timestep 0
    before the first block, to start from an image or extend a video; not part of the result."""
    first_frame: torch.Tensor | None = None
    """One clean latent frame [B, C, 1, h, w] (model space, an encoded image) that is the video's first frame: it
    is written over the first block's first frame before every step and after it, at timestep 0 (LongLive 2.0's
    image-to-video, its `independent_first_frame` with an image); part of the result, and of `total_frames`."""
    resume: History | None = None
    """A `History` from an earlier call with `Output(record=True)`: its cache is rebuilt and the video goes on as
    if it had never stopped (give the same generator, advanced by the earlier call)."""

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0 or self.height % PIXEL_MULTIPLE or self.width % PIXEL_MULTIPLE:
            raise ValueError(f"width and height must be positive multiples of {PIXEL_MULTIPLE} pixels "
                             f"(got {self.width}x{self.height})")
        if self.num_frames < 1:
            raise ValueError(f"a fragment window must hold at least one latent frame (got num_frames = "
                             f"{self.num_frames})")
        if self.num_fragments < 1:
            raise ValueError(f"num_fragments must be at least 1 (got {self.num_fragments})")
        given = [name for name, value in (("start latents", self.start_latents), ("a first frame", self.first_frame),
                                          ("a history to resume", self.resume)) if value is not None]
        if len(given) > 1:
            raise ValueError(f"give one of start latents, a first frame or a history to resume, not {' and '.join(given)}")

    @property
    def start_frames(self) -> int:
        return 0 if self.start_latents is None else self.start_latents.shape[2]


@dataclass(frozen=True)
class Noise:
    """Where the random numbers come from (docs/algorithm.md section 5.3): a new generator seeded with `seed`, a
    `generator`, or with neither torch's default generator; `initial` and `renoise` replace the draws with given
    numbers (a test feeding what a reference drew). Draws are made on the compute device, in the compute dtype
    (float32 in LightX2V's arithmetic)."""

    seed: int | None = None
    generator: torch.Generator | None = None
    """Advanced by the call: a later call given it continues the noise."""
    initial: torch.Tensor | None = None
    """The initial noise [B, F, C, h, w] in the references' frame-major layout, F = every generated frame,
    consumed in order (fragment after fragment), cast to the compute dtype on use."""
    renoise: Renoise | None = None
    """Called with a shape (B * frames_per_block, C, h, w) for every re-noise draw, in order; returns the
    tensor to use, in the float32 arithmetic as given (so give it the dtype the reference drew in)."""

    def __post_init__(self) -> None:
        if self.seed is not None and self.generator is not None:
            raise ValueError("give a seed or a generator, not both (the generator's state decides the noise)")


@dataclass(frozen=True)
class Compute:
    """Where and how the numbers are computed. The defaults are the exact path: the references' arithmetic op for
    op, in bf16, on the model's device."""

    device: torch.device | str | None = None
    """The compute device; None: the model's."""
    dtype: torch.dtype = torch.bfloat16
    fused_kernels: bool = False
    """The elementwise glue as compiled kernels (CUDA + Triton): faster, within bf16 tolerance of the exact path
    but not bitwise equal (bench/RESULTS.md)."""
    graphs: CudaGraphs | None = None
    """A `CudaGraphs` for this model and video shape (`num_frames = policy.cache_frames(frames_per_block)`), reused
    across calls: its KV cache is used and each slot's forward is captured once and replayed (the same numbers,
    fewer launches; every cache policy)."""
    kv_cache_fp8: bool = False
    """The KV cache in FP8 (e4m3, a float32 scale per token and head), about half the memory; not bitwise (its
    error against the bf16 cache is in bench/RESULTS.md). `graphs` must hold the same kind of cache."""
    flash_attention: bool = False
    """The self-attention by FlashAttention-4 (the optional `flash-attn-4` package; Hopper and Blackwell GPUs,
    `attention.flash4_unavailable` says why not elsewhere): 8-9 % faster blocks on an H200, as far from exact as
    SDPA's own kernels are (bench/RESULTS.md)."""
    parallel: SequenceParallel | None = None
    """Sequence parallelism (`causal.parallel`): this process's rank in a group whose every rank calls `generate`
    with the same arguments, each on its own device, and gets the whole result; each computes its share of every
    block's tokens and holds its share of the KV cache's heads. Within bf16 tolerance of one process, not bitwise."""

    def __post_init__(self) -> None:
        if self.graphs is not None and self.graphs.parallel != self.parallel:
            raise ValueError("these CUDA graphs were made for another sequence-parallel group (or none): make them "
                             "with this call's `parallel`")
        if self.graphs is not None and self.graphs.cache.quantized != self.kv_cache_fp8:
            raise ValueError(f"these CUDA graphs hold a {'FP8' if self.graphs.cache.quantized else self.dtype} KV "
                             f"cache; this call asks for {'FP8' if self.kv_cache_fp8 else self.dtype}")


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
    """The current block's x0 prediction [B, C, frames_per_block, h, w] (model space)."""


@dataclass(frozen=True)
class Output:
    """What happens to the finished blocks, and what the caller hears while they are made."""

    device: torch.device | str | None = None
    """Where finished blocks go; None: the compute device. The CPU keeps device memory flat however long the
    video is."""
    keep_latents: bool = True
    """False returns no latents (zero frames): with `on_block`, memory stays flat on every device."""
    on_block: Callable[[torch.Tensor], None] | None = None
    """Called with each finished block's clean latents [B, C, frames_per_block, h, w] (model space, on the
    compute device) as soon as it is done, e.g. to decode and write it (streaming)."""
    progress: Callable[[Progress], None] | None = None
    record: bool = False
    """Return the `History` (on the CPU) that `Video(resume=...)` goes on from."""
