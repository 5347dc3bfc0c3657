"""CausVid Sampler and CausVid Continue: ComfyUI inputs -> `causal.generate` -> LATENT + CAUSVID_STATE.

Latents cross the node boundary in VAE space (like KSampler's output) and are turned into model space
with the model's latent format on the way in. The KV cache lives only inside one execution; what
carries a video on is a small CPU state: the last clean block, the generator state and the settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io, ui

from ..causal.cache_policy import KINDS, CachePolicy, family_policy
from ..causal.context import History
from ..causal.host import to_host
from ..causal.rebuilt_context import ReencodedFrames
from ..causal.config import LATENT_LAYOUTS, PATCH_SIZE
from ..causal.prompts import FPS, PromptChange, frames_for_seconds, per_segment, timeline_from_seconds
from ..causal.request import FRAMES_PER_BLOCK, PIXEL_MULTIPLE, Compute, Noise, Output, Video, fragment_lengths
from ..causal.sampler import check_model_fits, generate, kv_cache_bytes, working_memory_bytes
from ..causal.schedule import SCHEDULES, Schedule
from .comfy_model import causal_network, compute_dtype
from .live import LiveRun, announce
from .multi_gpu import multi_gpu_of, pool_for
from .speed import DEFAULT_SPEED, SPEED_TOOLTIP, SPEEDS, choose_speed, keep_only, kept_graphs, release_graphs
from .streaming import StreamingDecoder, WanVAEStreamingDecoder
from .text import CUT_KEY, FRAGMENT_KEY, OPENING_KEY, START_KEY

log = logging.getLogger("comfyui-causvid")

CausVidStateType = io.Custom("CAUSVID_STATE")
# 1 + 4 * (1023 - 1) video frames = 1023 latent frames: the longest fragment whose blocks stay inside Wan's RoPE table
MAX_LENGTH = 4089
PRESET_POLICY = "preset default"
VAE_FILES = {16: "wan_2.1_vae.safetensors", 48: "wan2.2_vae.safetensors"}
"""The VAE file (Comfy-Org's repackaged name) of a model's latent channels, for the messages."""


@dataclass(frozen=True)
class CausVidState:
    """Everything needed to continue a video; immutable, on the CPU."""

    history: History
    """The cache writes that rebuild the context (replayed by the next run: one forward per cached chunk)."""
    video: torch.Tensor | None
    """Every latent frame so far [B, C, T, h, w] (C the model's latent channels), VAE space (start latent
    included); None when the video was streamed to a file instead."""
    rng_state: torch.Tensor
    rng_device: str
    schedule: Schedule
    policy: CachePolicy
    num_frames: int
    width: int
    height: int
    model: str = ""
    """The network's shape (`WanConfig.name`): a state continues only on the model that made it."""
    live_prompts: str = ""
    """The prompts a live run used, as CausVid Text Encode's `seconds: prompt` lines (what its .prompts.txt holds:
    queued with the same settings they make the same video); "" for any other run."""


def latent_frames(length: int) -> int:
    return (length - 1) // 4 + 1


def check_length(length: int, frames_per_block: int = FRAMES_PER_BLOCK) -> str | None:
    frames = latent_frames(length)
    if length > MAX_LENGTH:
        return f"length {length} is over the maximum of {MAX_LENGTH} frames per fragment"
    shortest = max(9, 1 + 4 * (frames_per_block - 1))
    if (length - 1) % 4 or frames % frames_per_block or length < shortest:
        if frames_per_block == 1:
            return f"length {length} is not 1 + 4k frames (k >= 2): use e.g. 9, 13, 17, ... or 81"
        examples = [shortest + 4 * frames_per_block * k for k in range(7)]
        trained = " (21 latent frames, the trained length)" if frames_per_block == FRAMES_PER_BLOCK else ""
        return (f"length {length} is not a whole number of {frames_per_block}-latent-frame blocks: use "
                f"{shortest} + {4 * frames_per_block}k frames, e.g. {', '.join(map(str, examples[:-1]))} or "
                f"{examples[-1]}{trained}")
    return None


def pixel_multiple(preset: str | None) -> int:
    """Width and height are multiples of this for the models a preset is made for: their VAE's spatial stride times
    the patch (16 pixels for the Wan2.1 VAE, 32 for the Wan2.2 VAE)."""
    if not isinstance(preset, str) or preset not in SCHEDULES:
        return PIXEL_MULTIPLE
    return LATENT_LAYOUTS[SCHEDULES[preset].latent_channels].spatial_stride * PATCH_SIZE[1]


def model_fps(model) -> int:
    """The frame rate of a MODEL's videos: its VAE's (16 fps Wan2.1, 24 fps Wan2.2)."""
    return causal_network(model).config.latents.fps


def parse_steps(text: str) -> list[float]:
    try:
        return [float(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"custom steps must be numbers separated by commas, e.g. '1000, 757, 522'; "
                         f"got '{text}'") from None


def choose_schedule(preset: str, custom_steps: str) -> Schedule:
    if preset not in SCHEDULES:
        raise ValueError(f"unknown preset '{preset}'; choose one of {', '.join(SCHEDULES)}")
    schedule = SCHEDULES[preset]
    return schedule.with_steps(parse_steps(custom_steps)) if custom_steps.strip() else schedule


def choose_policy(preset: str, cache: str, window: int, sink: int, num_frames: int) -> CachePolicy:
    """The cache policy from the widgets: the preset's own unless overridden; window 0 and sink -1 mean
    the policy's default (fragments: the length's latent frames)."""
    base = family_policy(preset)
    kind = base.kind if cache == PRESET_POLICY else cache
    if kind not in KINDS:
        raise ValueError(f"unknown cache policy '{cache}'; choose one of {PRESET_POLICY}, {', '.join(KINDS)}")
    if kind == "fragments":
        size = window or num_frames
    else:
        size = window or (base.window if base.kind == kind else {"rolling": 21, "sink": 12, "recompute": 3}[kind])
    sink_frames = 0
    if kind == "sink":
        sink_frames = sink if sink >= 0 else (base.sink if base.kind == "sink" else 3)
    elif sink > 0:
        raise ValueError(f"sink_frames only applies to the sink policy (got {sink} with {kind})")
    if kind == base.kind:  # the preset's own cache, resized: its EMA sink and positions stay
        return dataclasses.replace(base, window=size, sink=sink_frames)
    return CachePolicy(kind, size, sink_frames)


def prompt_timeline(conditioning, segments: list[int], start_frames: int, fps: float = FPS) -> list[PromptChange]:
    """The prompt timeline from CONDITIONING: CausVid Text Encode's timed lines at their times (seconds at `fps`; a
    scene cut with its shot opening, which a shot policy uses: `causal.prompts.open_shots`), its untimed lines one
    per fragment (the last repeats), or a single core CLIPTextEncode entry for the whole video."""
    if not conditioning:
        raise ValueError("the conditioning is empty: connect a text encode node")
    tagged = sorted((entry for entry in conditioning if FRAGMENT_KEY in entry[1]), key=lambda e: e[1][FRAGMENT_KEY])
    for entry in tagged or conditioning[:1]:
        if entry[0].shape[1] > 512:
            raise ValueError(f"the prompt has {entry[0].shape[1]} tokens but the model reads at most 512: shorten it "
                             "or use CausVid Text Encode, which truncates like the reference")
    if tagged and START_KEY in tagged[0][1]:
        return timeline_from_seconds([(e[1][START_KEY], e[0], e[1].get(CUT_KEY, False), e[1].get(OPENING_KEY))
                                      for e in tagged], start_frames, fps)
    if tagged:
        prompts = [entry[0] for entry in tagged]
    elif len(conditioning) == 1:
        prompts = [conditioning[0][0]]
    else:
        raise ValueError(f"got {len(conditioning)} combined conditionings; CausVid takes one prompt per fragment: "
                         "use CausVid Text Encode with one prompt per line")
    if len(prompts) > len(segments):
        raise ValueError(f"{len(prompts)} prompts for {len(segments)} fragment(s): raise num_fragments or remove "
                         "prompt lines")
    return per_segment(prompts, segments)


@dataclass(frozen=True)
class Job:
    """What one sampling run does, from the widgets or from a state: the values `causal.generate` takes (the video,
    its schedule and cache policy, its noise) and the node's own settings."""

    video: Video
    """Size, fragment length, the latent frames to make in all, and what it starts from: the start latents (model
    space) or the state's history."""
    schedule: Schedule
    policy: CachePolicy
    noise: Noise
    """The run's generator: seeded from the widget, or the state's, continued."""
    speed: str
    """`speed.SPEEDS`: exact, or fast (compiled glue); both with CUDA graphs where the model is on the GPU."""
    kv_cache: str = "bf16"
    """`KV_CACHES`: the KV cache in the compute dtype, or in FP8 (about half the memory)."""
    segments: tuple[int, ...] = ()
    """Latent frames each fragment adds (where one prompt per fragment starts)."""
    prefix: torch.Tensor | None = None
    """VAE-space latents the returned video begins with (the start latent, or the video so far)."""
    resume: CausVidState | None = None
    notice: str | None = None
    """What a start latent makes of `length` when whole blocks after it leave fewer frames (`shorter_than_asked`)."""


def vae_reencoder(vae, model, context_frames: int, on_frames=None,
                  decoder: StreamingDecoder | None = None) -> ReencodedFrames:
    """Krea's decode of every generated block and encode of one decoded frame, with the user's Wan VAE: blocks
    arrive in model space and are decoded with one causal cache (`StreamingDecoder`); a frame [1, H, W, 3] is
    encoded alone (VAE Encode of one image) and returned in model space on the model's device. `on_frames` gets
    every block's frames too (a stream writes them instead of decoding the block again); a Cancel seen by the
    VAE during a decode still delivers that block's frames, then stops sampling."""
    decoder = decoder or StreamingDecoder(vae)
    latent_format = model.model

    def decode(block: torch.Tensor) -> torch.Tensor:
        vae_block = latent_format.process_latent_out(block.float())
        try:
            frames = decoder.decode(vae_block)
        except mm.InterruptProcessingException:
            if on_frames is None:
                raise
            on_frames(decoder.decode(vae_block))  # the op that raised cleared the flag; the cache is unchanged
            raise
        if on_frames is not None:
            on_frames(frames)
        return frames

    def encode(frame: torch.Tensor) -> torch.Tensor:
        return latent_format.process_latent_in(vae.encode(frame).float()).to(model.load_device)

    return ReencodedFrames(decode, encode, context_frames)


def shares_decode(job: Job) -> bool:
    """Whether the recompute policy's decoder, which decodes every generated block anyway, can give a stream its
    frames: not after a start latent, which a stream decodes first and the policy's decoder never sees."""
    return job.policy.kind == "recompute" and not job.policy.keep_first_frame and job.video.start_latents is None


def reencoder_for(model, vae, job: Job, batch: int, on_frames=None):
    """The recompute policy's VAE decoder and encoder (None for the other policies); a continued video's decoder
    first decodes the blocks generated so far, so its causal cache is the one of the uninterrupted run."""
    if job.policy.kind != "recompute" or job.policy.keep_first_frame:
        return None
    if vae is None:
        raise ValueError(f"the {job.policy.describe()} (Krea Realtime) encodes a decoded frame again before every "
                         "block: connect the Wan 2.1 VAE (VAE Loader, wan_2.1_vae.safetensors) to the vae input")
    if batch != 1:
        raise ValueError("the recompute cache policy decodes one video as it goes: use a prompt batch of 1")
    decoder = StreamingDecoder(vae)
    if not isinstance(decoder, WanVAEStreamingDecoder):  # its frames go back into the DiT: Krea's own VAE only
        raise ValueError("the recompute policy (Krea Realtime) encodes a decoded frame again with the full Wan 2.1 "
                         "VAE, as Krea does: connect wan_2.1_vae.safetensors, not a tiny decoder")
    reencoder = vae_reencoder(vae, model, job.policy.window, on_frames, decoder)
    if job.resume is not None:
        if job.resume.video is None:
            raise ValueError("a streamed video keeps no latents, and continuing a recompute (Krea) video decodes the "
                             "video so far again: sample it with CausVid Sampler to continue it, or stream it in one run")
        block = job.schedule.frames_per_block
        generated = job.resume.history.rebuilt.generated_blocks * block
        video = job.resume.video[:, :, job.resume.video.shape[2] - generated:]
        for start in range(0, generated, block):
            reencoder.add_frames(decoder.decode(video[:, :, start:start + block]))  # VAE space, as recorded
    return reencoder


def fragment_segments(video: Video, frames_per_block: int) -> list[int]:
    """Latent frames each fragment of `video` adds: the whole blocks after the start latents, then length - one
    block each; a continuation's fragments each start from a re-cached block (its length with any policy)."""
    start = frames_per_block if video.resume is not None else video.start_frames
    return fragment_lengths(video.num_frames, video.num_fragments, start, frames_per_block)


def shorter_than_asked(video: Video, frames_per_block: int) -> str | None:
    """What a start latent makes of `length` when whole blocks after it leave fewer frames (None when they do not):
    81 with one image frame makes 73."""
    if video.start_latents is None or video.resume is not None:
        return None
    start, block, n = video.start_frames, frames_per_block, video.num_frames
    made = start + fragment_lengths(n, 1, start, block)[0]
    if made >= n or made <= start:
        return None
    length = 4 * n - 3
    return (f"the start latent's {start} frame(s) and the {block}-frame blocks that fit after it make {made} latent "
            f"frames ({4 * made - 3} frames), not length {length}; length {length + 4 * block} makes "
            f"{4 * (made + block) - 3}")


def check_segments(segments: list[int], video: Video, frames_per_block: int) -> None:
    """Refuse a length that adds no frames (a fragment that would only re-cache), saying what to change."""
    block, n, start_frames = frames_per_block, video.num_frames, video.start_frames
    length, two_blocks = 4 * n - 3, 4 * 2 * block - 3
    if video.resume is not None and segments[0] <= 0:
        raise ValueError(f"this state was sampled with length {length} ({n} latent frames, one block): a continued "
                         f"fragment starts again from its last block and would add nothing. Sample the video with a "
                         f"length of at least {two_blocks} to continue it")
    if video.resume is None and segments[0] <= 0:
        raise ValueError(f"the start latent has {start_frames} latent frames and length {length} holds {n}: no room "
                         f"for a {block}-frame block after it. Set length to at least "
                         f"{4 * (start_frames + block) - 3}")
    if len(segments) > 1 and segments[1] <= 0:
        raise ValueError(f"num_fragments {video.num_fragments} with length {length}: each fragment after the first "
                         f"starts again from the last block and adds length - {4 * block} frames, nothing at length "
                         f"{length}. Set length to at least {two_blocks}, or num_fragments to 1")


def job_for(video: Video, schedule: Schedule, policy: CachePolicy, noise: Noise, *, seconds: float, speed: str,
            kv_cache: str, prefix: torch.Tensor | None = None, state: CausVidState | None = None,
            fps: float = FPS) -> Job:
    """The run of `video` as long as the settings ask: `seconds` at `fps` (start latents included), else its
    fragments after the start latents or the state's last block, refused where they add no frames; a start latent
    that leaves fewer frames than `length` is logged (whole blocks follow it)."""
    if state is not None and state.history is None:
        raise ValueError(f"this state comes from {state.schedule.name}, whose window of blocks sampled together "
                         "cannot be continued yet: make the whole video in one Sampler or Stream to Video run")
    block = schedule.frames_per_block
    segments = fragment_segments(video, block)
    notice = None
    if seconds > 0:
        total = frames_for_seconds(seconds, video.start_frames, block, fps)
    else:
        check_segments(segments, video, block)
        total, notice = sum(segments), shorter_than_asked(video, block)
        if notice is not None:
            log.info("CausVid: %s", notice)
    return Job(dataclasses.replace(video, total_frames=total), schedule, policy, noise, speed, kv_cache,
               tuple(segments), prefix, state, notice)


@dataclass(frozen=True)
class SamplingMemory:
    """Device memory sampling takes beside the weights: `total` (KV cache, text K/V, one block's activations), of
    which the KV cache, `cache`, is allocated once for the run; the rest comes and goes block by block."""

    total: int
    cache: int

    @property
    def transient(self) -> int:
        return self.total - self.cache


def sampling_memory(model, job: Job, batch: int) -> SamplingMemory:
    block, network = job.schedule.frames_per_block, causal_network(model)
    shape = dict(batch=batch, num_frames=job.policy.cache_frames(block), height=job.video.height,
                 width=job.video.width, dtype=compute_dtype(model))
    fp8 = job.kv_cache == "fp8"
    joint = job.schedule.joint_window  # Rolling Forcing: a window of blocks per forward, keys rotated when read
    frames_per_forward = block * (job.schedule.num_steps if joint else 1)
    return SamplingMemory(total=working_memory_bytes(network, **shape, frames_per_block=frames_per_forward,
                                                     kv_cache_fp8=fp8, rope_at_read=job.policy.rope_at_read or joint),
                          cache=kv_cache_bytes(network, **shape, fp8=fp8))


def load_for_sampling(model, extra_models: tuple, memory_required: int) -> None:
    """Load the sampled `model` and the `extra_models` it works with (the stream's VAE) through ComfyUI's model
    management, keeping `memory_required` bytes free beside them. Two things `load_models_gpu` alone gets wrong
    on a small card (bench/cards.py, H200 under caps, 2026-12-02):
    - it gives each model in turn what is free beyond `memory_required`, so the DiT can take the room a VAE
      listed after it needed; a VAE left partly offloaded decodes on its slow exact path, whose larger call then
      ran out of memory (14B at 16 GiB). The extra models (small) therefore load first and whole.
    - its smart memory unloads other models only partly, by its own estimate of what they free, which can leave
      the text encoder on the card and the DiT's weights streamed every forward (1.3B at 8 GiB with taew2_1: 234 MB
      offloaded, CUDA graphs off, 1.95x the time per block). Where the DiT comes out partly offloaded while models
      this run does not use still hold memory on its device, those are unloaded entirely and the load tried
      again."""
    models = [model, *extra_models]
    if extra_models:  # with room for the DiT's missing weights as the next call counts them (1.1 x): it unloads none
        missing = model.model_size() - (model.loaded_size() if model.current_loaded_device() == model.load_device
                                        else 0)
        mm.load_models_gpu(list(extra_models), memory_required=memory_required + int(1.1 * missing),
                           force_full_load=True)
    mm.load_models_gpu(models, memory_required=memory_required)
    if model.loaded_size() >= model.model_size():
        return
    device = model.load_device
    others = [m for m in mm.current_loaded_models
              if m.device == device and m.model is not None and all(m.model is not x for x in models)]
    if not others:
        return
    log.info("CausVid: unloading %s to hold more of the model on %s (%.2f of %.2f GiB loaded)",
             ", ".join(type(m.model.model).__name__ for m in others), device, model.loaded_size() / 2**30,
             model.model_size() / 2**30)
    ours = [m for m in mm.current_loaded_models if any(m.model is x for x in models)]
    mm.free_memory(float("inf"), device, keep_loaded=ours)  # a target never met: every other model goes whole
    mm.load_models_gpu(models, memory_required=memory_required)


@contextlib.contextmanager
def kept_loaded(models: tuple) -> Iterator[None]:
    """While sampling, ComfyUI's model management unloads none of the run's `models` (the DiT, and the VAE or text
    encoder working beside it): a VAE Encode (Krea's re-encode) or a live prompt's text encode (on its own thread) calls
    `load_models_gpu`, which would otherwise free room for its estimate by unloading part of the DiT, and with
    CUDA graphs captured the next replays would read freed memory (14B Krea at 24 GiB crashed so on an H200,
    2026-12-02). The run reserved the memory those calls use before it started (`run`'s extra_memory)."""
    free_memory = mm.free_memory

    def free_memory_keeping_the_run(memory_required, device, keep_loaded=()):
        ours = [m for m in mm.current_loaded_models if any(m.model is x for x in models)]
        return free_memory(memory_required, device, keep_loaded=[*keep_loaded, *ours])

    mm.free_memory = free_memory_keeping_the_run
    try:
        yield
    finally:
        mm.free_memory = free_memory


def run(model, conditioning, job: Job, node_id: str | None, *, on_block=None, keep_video: bool = True,
        extra_models: tuple = (), extra_memory: int = 0, preview=None, vae=None,
        on_decoded=None, live: LiveRun | None = None) -> tuple[torch.Tensor, CausVidState]:
    """Sample and package the result: (new latents in VAE space, the state after them). With `on_block`, each
    finished block (VAE space, CPU) goes there as soon as it is done; without `keep_video` nothing else is kept.
    `preview()`, when given, supplies the progress preview (e.g. the newest decoded frame) instead of the latent
    previewer's. `vae` serves the recompute policy (Krea Realtime), which decodes and encodes as it samples;
    `on_decoded` then gets each block's decoded frames (see `shares_decode`). With `live` its prompts are the
    timeline, and a prompt sent meanwhile, encoded on the run's own thread, drives the first block that starts once
    it is encoded (`live.LiveRun`)."""
    network, video = causal_network(model), job.video
    if job.resume is not None and job.resume.model != network.config.name:
        raise ValueError(f"this state was made by the {job.resume.model} model; connect the same model to continue "
                         f"it (this one is {network.config.name})")
    timeline = live.prompts if live is not None else prompt_timeline(conditioning, list(job.segments),
                                                                     video.start_frames, network.config.latents.fps)
    device, dtype = model.load_device, compute_dtype(model)
    mm.throw_exception_if_processing_interrupted()
    batch = timeline[0].context.shape[0]
    multi = multi_gpu_of(model)
    if multi is not None:
        check_multi_gpu(job, live)
    if job.policy.kind == "recompute" and not job.policy.keep_first_frame and vae is not None:
        if vae.patcher not in extra_models:
            extra_models = (*extra_models, vae.patcher)
            one_frame = (1, network.config.out_dim, 1, *network.config.latent_size(video.height, video.width))
            extra_memory += vae.memory_used_decode(one_frame, vae.vae_dtype)
    speed = choose_speed(job.speed, device if multi is None else torch.device(multi.devices[0]))
    if multi is not None:  # the workers keep graphs of their own, on GPUs, where one GPU would
        worker_graphs = torch.device(multi.devices[0]).type == "cuda" and not job.schedule.joint_window
        speed = dataclasses.replace(speed, graphs=False)
    if speed.graphs and job.schedule.joint_window:
        log.info("CausVid: CUDA graphs off for %s (its window of blocks is not captured yet; same numbers)",
                 job.schedule.name)
        speed = dataclasses.replace(speed, graphs=False)
    cache_frames = job.policy.cache_frames(job.schedule.frames_per_block)
    fp8 = job.kv_cache == "fp8"
    memory = sampling_memory(model, job, batch).total
    # on the GPU model management makes room (offloading weights) but the KV cache and activations must fit beside
    # what it keeps free; on the CPU an allocation this large could get the whole server killed by the OS instead
    smaller = "lower the size or the window" + ("" if fp8 else ", or set kv_cache to fp8 (half the cache)") + \
        (", or stream with a tiny decoder (taew2_1 in VAE Loader)" if extra_memory else "")
    needs = (f"sampling {video.width}x{video.height} with a {job.policy.describe()} needs "
             f"{(memory + extra_memory) / 2**30:.1f}")
    if device.type == "cpu" and memory + extra_memory > (free := mm.get_free_memory(device)):
        raise MemoryError(f"{needs} GiB of RAM for its KV cache and activations, but {free / 2**30:.1f} GiB are "
                          f"free: {smaller}")
    if device.type == "cuda" and memory + extra_memory > (usable := mm.get_total_memory(device)
                                                          - mm.extra_reserved_memory()):
        raise MemoryError(f"{needs} GiB of GPU memory for its KV cache, activations and VAE decode, but this card "
                          f"has {usable / 2**30:.1f} GiB for ComfyUI even with every weight offloaded: {smaller}")
    shape = (batch, video.height, video.width, cache_frames, dtype, device, fp8)
    held = keep_only(network, shape) if speed.graphs else 0  # a KV cache kept from a run of this shape
    sample, compute_device = generate, device
    if multi is None:
        load_for_sampling(model, extra_models, memory - held + extra_memory)
    else:  # the workers hold the weights; their handle (and the VAE) take their room in model management
        pool, handle = pool_for(model)
        sample = functools.partial(pool.generate, graphs=worker_graphs)
        compute_device, extra_models = None, (handle, *extra_models)
        mm.load_models_gpu(list(extra_models), memory_required=memory + extra_memory)
    graphs = kept_graphs(network, shape) if speed.graphs else None
    reencoder = reencoder_for(model, vae, job, batch, on_decoded)
    previewer = latent_preview.get_previewer(device, model.model.latent_format)
    bars: list[comfy.utils.ProgressBar] = []

    def progress(p) -> None:
        mm.throw_exception_if_processing_interrupted()
        if not bars:
            bars.append(comfy.utils.ProgressBar(p.total, node_id=node_id))
        image = None
        if p.step == p.steps - 1:  # one preview per block: a preview costs a device-to-host copy and a JPEG
            image = preview() if preview is not None else None
            if image is None and previewer is not None:
                image = previewer.decode_latent_to_preview_image("JPEG", p.denoised[:, :, -1:].float().to(device))
            if live is not None:
                live.between_blocks(mm.throw_exception_if_processing_interrupted)
                announce(live)
        bars[0].update_absolute(p.completed, p.total, image)

    def block_done(block: torch.Tensor) -> None:
        on_block(to_host(model.model.process_latent_out(block.float())))

    try:
        with kept_loaded((model, *extra_models)):
            result = sample(network, timeline, video, job.schedule, job.policy, noise=job.noise,
                            compute=Compute(device=compute_device, dtype=dtype, fused_kernels=speed.fused_kernels,
                                            graphs=graphs, kv_cache_fp8=fp8, flash_attention=speed.flash_attention),
                            output=Output(device="cpu", keep_latents=keep_video,
                                          on_block=None if on_block is None else block_done, progress=progress,
                                          record=not job.schedule.joint_window),
                            reencoder=reencoder)
    except mm.InterruptProcessingException:
        raise  # a Cancel comes between forwards: the kept graphs are whole
    except BaseException:
        # an error may have come in the middle of a capture: drop the graphs (and the KV cache they hold) now
        # rather than at the next unload; the next run captures anew
        if graphs is not None:
            release_graphs(network)
        raise
    out_device = mm.intermediate_device()
    new = model.model.process_latent_out(result.latents.float()).to(out_device)
    whole = None
    if keep_video:
        whole = (new if job.prefix is None else torch.cat([job.prefix.to(out_device), new], dim=2)).cpu()
    state = CausVidState(history=result.history, video=whole, rng_state=job.noise.generator.get_state(),
                         rng_device=str(device), schedule=job.schedule, policy=job.policy,
                         num_frames=video.num_frames, width=video.width, height=video.height,
                         model=network.config.name)
    return new, state


def check_multi_gpu(job: Job, live: LiveRun | None) -> None:
    """What CausVid Multi-GPU's workers cannot run, refused before they start."""
    if live is not None:
        raise ValueError("live prompts reach the sampler while it runs, and every Multi-GPU worker must switch at "
                         "the same block: give the prompts as 'seconds: prompt' lines, or sample live on one GPU")
    if job.policy.kind == "recompute" and not job.policy.keep_first_frame:
        raise ValueError("the recompute policy (Krea Realtime) decodes and encodes each block with the VAE in "
                         "ComfyUI's process, which the Multi-GPU workers cannot reach: sample it on one GPU")


def restore_generator(state: CausVidState, device: torch.device) -> torch.Generator:
    if torch.device(state.rng_device).type != torch.device(device).type:
        raise ValueError(f"this state was sampled on {state.rng_device}; its noise cannot continue on {device}")
    generator = torch.Generator(device)
    generator.set_state(state.rng_state)
    return generator


POLICY_TOOLTIP = ("How context carries past the window. fragments: every `length` frames start a new window from "
                  "the last block (LightX2V). rolling: a sliding window of the most recent frames (CausVid-Plus, "
                  "Self-Forcing). sink: the first frames stay, the rest slides (LongLive). recompute: a short "
                  "context cached again before every block, its first frame re-encoded by the VAE (Krea "
                  "Realtime; needs the vae input). Any policy makes a video of any length at constant memory.")


def _video_inputs() -> list:
    return [
        io.Combo.Input("cache", options=[PRESET_POLICY, *KINDS], default=PRESET_POLICY, optional=True,
                       tooltip=POLICY_TOOLTIP),
        io.Int.Input("window", default=0, min=0, max=1023, optional=True,
                     tooltip="Latent frames the KV cache holds (0: the policy's default: 21 rolling, 12 sink, the "
                             "length's for fragments, 3 rebuilt for recompute). A multiple of 3 except for "
                             "recompute."),
        io.Int.Input("sink_frames", default=-1, min=-1, max=1020, optional=True,
                     tooltip="Sink policy: leading latent frames that are never evicted (-1: the default, 3)."),
        io.Float.Input("seconds", default=0.0, min=0.0, max=36000.0, step=0.25, optional=True,
                       tooltip="Total length in seconds at the model's frame rate (16 fps; 24 for LongLive 2.0 on "
                               "the Wan2.2 VAE), start latent included (0: length and "
                               "num_fragments decide). Past one window, the cache policy carries the context."),
        kv_cache_input(),
    ]


def sampling_inputs() -> list:
    """The widgets and sockets a sampling node takes after its model and prompt (Sampler and Stream to Video)."""
    return [
        io.Int.Input("width", default=832, min=16, max=4096, step=16,
                     tooltip="A multiple of 16 (of 32 for LongLive 2.0 on the Wan2.2 VAE: e.g. 1280x704)."),
        io.Int.Input("height", default=480, min=16, max=4096, step=16,
                     tooltip="A multiple of 16 (of 32 for LongLive 2.0 on the Wan2.2 VAE)."),
        io.Int.Input("length", default=81, min=9, max=MAX_LENGTH, step=4,
                     tooltip="Frames per fragment: 81 = 21 latent frames = 5 s at 16 fps (the trained "
                             "length). Whole blocks: 9 + 12k for 3-frame blocks, 29 + 32k for LongLive 2.0's "
                             "8-frame blocks (24 fps)."),
        io.Combo.Input("preset", options=list(SCHEDULES), default="CausVid 1.3B",
                       tooltip="Step list, shift, clean pass and cache policy of the checkpoint family."),
        io.String.Input("custom_steps", default="", tooltip="Optional step list replacing the preset's, "
                        "e.g. '1000, 757, 522'; shift, warp and clean pass stay the preset's."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Noise seed. With a state connected the noise continues from the state and "
                             "the seed is not used."),
        io.Int.Input("num_fragments", default=1, min=1, max=256,
                     tooltip="Fragments to chain: each later one adds length - one block of frames (12 for "
                             "3-frame blocks)."),
        speed_input(),
        io.Latent.Input("start_latent", optional=True, tooltip="Optional start: VAE Encode of one image "
                        "(1 latent frame) or of a video, with the model's VAE (Wan2.1; Wan2.2 for LongLive 2.0). It "
                        "is cached before the first block, which attends to it, and the returned video begins "
                        "with it. LongLive 2.0 makes one image its video's first frame instead (its image-to-video: "
                        "held in the first block while that block is made)."),
        CausVidStateType.Input("state", optional=True, tooltip="Continue from an earlier sampler's state."),
        *_video_inputs(),
    ]


KV_CACHES = ("bf16", "fp8")
KV_CACHE_TOOLTIP = ("How the KV cache stores past frames. bf16: the compute dtype (bf16 on a GPU, float32 on the "
                    "CPU), exact. fp8: e4m3 with a scale per token and head, about half the memory (the 14B's "
                    "21-frame cache: 27 GB -> 14 GB), not bitwise (measured error in bench/RESULTS.md).")


def check_kv_cache(kv_cache: str) -> str:
    if kv_cache not in KV_CACHES:
        raise ValueError(f"unknown kv_cache '{kv_cache}'; choose one of {', '.join(KV_CACHES)}")
    return kv_cache


def kv_cache_input():
    return io.Combo.Input("kv_cache", options=list(KV_CACHES), default="bf16", optional=True, tooltip=KV_CACHE_TOOLTIP)


def speed_input():
    return io.Combo.Input("speed", options=list(SPEEDS), default=DEFAULT_SPEED, optional=True, tooltip=SPEED_TOOLTIP)


def vae_input():
    return io.Vae.Input("vae", optional=True, tooltip="The Wan 2.1 VAE, for the recompute cache policy (Krea "
                        "Realtime 14B), which decodes each block and encodes a frame again as it samples. "
                        "The other policies do not use it.")


def prepare(model, *, width: int, height: int, length: int, preset: str, custom_steps: str, seed: int,
            num_fragments: int, speed: str = DEFAULT_SPEED, kv_cache: str = "bf16", start_latent=None,
            state: CausVidState | None = None,
            cache: str = PRESET_POLICY, window: int = 0, sink_frames: int = -1, seconds: float = 0.0) -> Job:
    """Check the sampling widgets and turn them into a Job (raises ValueError saying what to change), before anything
    loads: a preset made for the other VAE's models, or a size the model's VAE does not take, is refused here."""
    if (message := CausVidSampler.validate_inputs(width, height, length, custom_steps, preset)) is not True:
        raise ValueError(message)
    schedule = choose_schedule(preset, custom_steps)
    config = causal_network(model).config
    check_model_fits(config, schedule, height, width)
    num_frames = latent_frames(length)
    policy = choose_policy(preset, cache, window, sink_frames, num_frames)
    settings = dict(seconds=seconds, speed=speed, kv_cache=check_kv_cache(kv_cache), fps=config.latents.fps)
    if state is not None:
        if start_latent is not None:
            raise ValueError("connect either a start latent or a state, not both")
        if (state.width, state.height, state.num_frames) != (width, height, num_frames):
            raise ValueError(f"the state was sampled at {state.width}x{state.height}, "
                             f"{4 * state.num_frames - 3} frames per fragment; set the same size and length")
        if state.policy != policy:
            raise ValueError(f"the state was sampled with a {state.policy.describe()}; this node is set to a "
                             f"{policy.describe()}: set the same cache settings")
        video = Video(height, width, num_frames, num_fragments, resume=state.history)
        noise = Noise(generator=restore_generator(state, model.load_device))
        return job_for(video, schedule, policy, noise, **settings, prefix=state.video, state=state)
    noise = Noise(generator=torch.Generator(model.load_device).manual_seed(seed))
    if start_latent is None:
        return job_for(Video(height, width, num_frames, num_fragments), schedule, policy, noise, **settings)
    prefix = start_latent["samples"]
    h, w = config.latent_size(height, width)
    channels, vae = config.out_dim, config.latents.name
    if prefix.dim() != 5 or tuple(prefix.shape[3:]) != (h, w) or prefix.shape[1] != channels:
        raise ValueError(f"the start latent is {list(prefix.shape)}; it must be a Wan video latent of "
                         f"{width}x{height} for this model ([B, {channels}, frames, {h}, {w}]): VAE Encode "
                         f"an image or a video of that size with the {vae} ({VAE_FILES[channels]})")
    latents = model.model.process_latent_in(prefix.float())
    if schedule.solver == "unipc" and prefix.shape[2] == 1:  # LongLive 2.0's image-to-video: the image is frame 0
        video = Video(height, width, num_frames, num_fragments, first_frame=latents)
        return job_for(video, schedule, policy, noise, **settings)
    video = Video(height, width, num_frames, num_fragments, start_latents=latents)
    return job_for(video, schedule, policy, noise, **settings, prefix=prefix)


class CausVidSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausVidSampler",
            display_name="CausVid Sampler",
            category="CausVid",
            description="Autoregressive few-step sampling of a causal Wan model: a block of latent frames at a time "
                        "(3 for the Wan2.1 families, 8 for LongLive 2.0 5B) over a KV cache kept by a cache policy, "
                        "for any length. Returns VAE-space latents (the start latent first, when one is "
                        "connected).",
            inputs=[
                io.Model.Input("model", tooltip="From CausVid Model Loader."),
                io.Conditioning.Input("positive", tooltip="CausVid Text Encode (one prompt per fragment, or "
                                                          "'seconds: prompt' lines) or CLIPTextEncode."),
                *sampling_inputs(),
                vae_input(),
            ],
            outputs=[io.Latent.Output(display_name="latent"), CausVidStateType.Output(display_name="state")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, width: int, height: int, length: int, custom_steps: str,
                        preset: str | None = None) -> bool | str:
        # linked inputs arrive as None here: they are checked again when the node runs. ComfyUI skips its own
        # type and range checks for the inputs this function names, so the types are checked here first.
        for name, value in (("width", width), ("height", height), ("length", length)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                return f"{name} must be a whole number, got {value!r}"
        multiple = pixel_multiple(preset)  # the preset's models' VAE; the model itself is checked when it runs
        for name, value in (("width", width), ("height", height)):
            if value is not None and (value < multiple or value % multiple or value > 4096):
                vae = "" if multiple == PIXEL_MULTIPLE else f" (the {preset} preset's models are on the Wan2.2 VAE)"
                return f"{name} must be a multiple of {multiple} between {multiple} and 4096{vae}, got {value}"
        block = SCHEDULES[preset].frames_per_block if isinstance(preset, str) and preset in SCHEDULES \
            else FRAMES_PER_BLOCK
        if length is not None and (message := check_length(length, block)):
            return message
        if custom_steps is not None and not isinstance(custom_steps, str):
            return f"custom_steps must be text such as '1000, 757, 522', got {custom_steps!r}"
        if isinstance(custom_steps, str) and custom_steps.strip():
            try:
                parse_steps(custom_steps)
            except ValueError as e:
                return str(e)
        return True

    @classmethod
    def execute(cls, model, positive, vae=None, **widgets) -> io.NodeOutput:
        job = prepare(model, **widgets)
        if job.resume is not None and job.resume.video is None:
            raise ValueError("this state comes from a streamed video, which keeps no latents: continue it with "
                             "CausVid Stream to Video")
        new, next_state = run(model, positive, job, cls.hidden.unique_id, vae=vae)
        latent = new if job.prefix is None or job.resume is not None else next_state.video
        notice = job.notice  # said on the node (ComfyUI's executed message), not only in the log
        return io.NodeOutput({"samples": latent}, next_state, ui=None if notice is None else ui.PreviewText(notice))


class CausVidContinue(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausVidContinue",
            display_name="CausVid Continue",
            category="CausVid",
            description="Grows a video by more fragments with a new (or the same) prompt: the cache is rebuilt exactly "
                        "as it was, so the result equals one long run. Returns the new frames and the whole video "
                        "so far: decode the whole video once, so there is no seam.",
            inputs=[
                io.Model.Input("model"),
                CausVidStateType.Input("state"),
                io.Conditioning.Input("positive", tooltip="The prompt(s) from here on; the same prompt as before "
                                                          "goes on without a re-cache, another one re-caches the "
                                                          "window (window policies) or starts the next fragment."),
                io.Int.Input("num_fragments", default=1, min=1, max=256,
                             tooltip="How much to add: this many times (length - one block) frames."),
                io.Float.Input("seconds", default=0.0, min=0.0, max=36000.0, step=0.25, optional=True,
                               tooltip="Seconds to add instead (0: num_fragments decides)."),
                speed_input(),
                vae_input(),
                kv_cache_input(),
            ],
            outputs=[io.Latent.Output(display_name="fragment"), io.Latent.Output(display_name="video"),
                     CausVidStateType.Output(display_name="state")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, state: CausVidState, positive, num_fragments: int, seconds: float = 0.0,
                speed: str = DEFAULT_SPEED, vae=None, kv_cache: str = "bf16") -> io.NodeOutput:
        if state.video is None:
            raise ValueError("this state comes from a streamed video, which keeps no latents: continue it with "
                             "CausVid Stream to Video (its state input)")
        video = Video(state.height, state.width, state.num_frames, num_fragments, resume=state.history)
        job = job_for(video, state.schedule, state.policy, Noise(generator=restore_generator(state, model.load_device)),
                      seconds=seconds, speed=speed, kv_cache=check_kv_cache(kv_cache), prefix=state.video, state=state,
                      fps=model_fps(model))
        new, next_state = run(model, positive, job, cls.hidden.unique_id, vae=vae)
        return io.NodeOutput({"samples": new}, {"samples": next_state.video}, next_state)
