"""CausVid Sampler and CausVid Continue: ComfyUI inputs → `causal.generate` → LATENT + CAUSVID_STATE.

Latents cross the node boundary in VAE space (like KSampler's output) and are turned into model space
with the model's latent format on the way in. The KV cache lives only inside one execution; what
carries a video on is a small CPU state: the last clean block, the generator state and the settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management as mm
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..causal.sampler import FRAMES_PER_BLOCK, PIXEL_MULTIPLE, fragment_lengths, generate, working_memory_bytes
from ..causal.schedule import SCHEDULES, Schedule
from .comfy_model import causal_network, compute_dtype
from .text import FRAGMENT_KEY

CausVidStateType = io.Custom("CAUSVID_STATE")
MAX_LENGTH = 4093  # 1024 latent frames: the end of Wan's RoPE table


@dataclass(frozen=True)
class CausVidState:
    """Everything needed to continue a video; immutable, on the CPU."""

    last_block: torch.Tensor
    """Clean latents of the newest block [B, 16, 3, h, w], model space."""
    video: torch.Tensor
    """Every latent frame so far [B, 16, T, h, w], VAE space (start latent included)."""
    rng_state: torch.Tensor
    rng_device: str
    schedule: Schedule
    fused_kernels: bool
    num_frames: int
    width: int
    height: int


def latent_frames(length: int) -> int:
    return (length - 1) // 4 + 1


def check_length(length: int) -> str | None:
    frames = latent_frames(length)
    if (length - 1) % 4 or frames % FRAMES_PER_BLOCK or not 9 <= length <= MAX_LENGTH:
        return (f"length {length} is not a whole number of {FRAMES_PER_BLOCK}-latent-frame blocks: use 1 + 4·(3k) "
                f"frames, e.g. 9, 21, 33, 45, 57, 69 or 81 (21 latent frames, the trained length)")
    return None


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


def prompt_embeddings(conditioning, num_fragments: int) -> list[torch.Tensor]:
    """One prompt tensor per fragment from CONDITIONING: CausVid Text Encode's tagged entries in order
    (the last repeats), or a single core CLIPTextEncode entry for every fragment."""
    if not conditioning:
        raise ValueError("the conditioning is empty: connect a text encode node")
    tagged = [entry for entry in conditioning if FRAGMENT_KEY in entry[1]]
    if tagged:
        prompts = [entry[0] for entry in sorted(tagged, key=lambda e: e[1][FRAGMENT_KEY])]
    elif len(conditioning) == 1:
        prompts = [conditioning[0][0]]
    else:
        raise ValueError(f"got {len(conditioning)} combined conditionings; CausVid takes one prompt per fragment: "
                         "use CausVid Text Encode with one prompt per line")
    if len(prompts) > num_fragments:
        raise ValueError(f"{len(prompts)} prompts for {num_fragments} fragment(s): raise num_fragments or remove "
                         "prompt lines")
    prompts += [prompts[-1]] * (num_fragments - len(prompts))
    for p in prompts:
        if p.shape[1] > 512:
            raise ValueError(f"the prompt has {p.shape[1]} tokens but the model reads at most 512: shorten it or "
                             "use CausVid Text Encode, which truncates like the reference")
    return prompts


def run(model, conditioning, *, schedule: Schedule, width: int, height: int, num_frames: int, num_fragments: int,
        generator: torch.Generator, start: torch.Tensor | None, prefix: torch.Tensor | None,
        fused_kernels: bool, node_id: str | None) -> tuple[torch.Tensor, CausVidState]:
    """Sample and package the result: (new latents in VAE space, the state after them)."""
    network = causal_network(model)
    contexts = prompt_embeddings(conditioning, num_fragments)
    batch = contexts[0].shape[0]
    device, dtype = model.load_device, compute_dtype(model)
    mm.throw_exception_if_processing_interrupted()
    memory = working_memory_bytes(network, batch=batch, num_frames=num_frames, height=height, width=width,
                                  dtype=dtype)
    mm.load_models_gpu([model], memory_required=memory)
    start_frames = 0 if start is None else start.shape[2]
    total = sum(fragment_lengths(num_frames, num_fragments, start_frames)) // FRAMES_PER_BLOCK * schedule.num_steps
    bar = comfy.utils.ProgressBar(total, node_id=node_id)
    previewer = latent_preview.get_previewer(device, model.model.latent_format)

    def progress(p) -> None:
        mm.throw_exception_if_processing_interrupted()
        preview = None
        if previewer is not None:
            preview = previewer.decode_latent_to_preview_image("JPEG", p.denoised[:, :, -1:].float())
        bar.update_absolute(p.completed, p.total, preview)

    result = generate(network, contexts, height=height, width=width, schedule=schedule, num_frames=num_frames,
                      num_fragments=num_fragments, generator=generator, start_latents=start, device=device,
                      dtype=dtype, progress=progress, fused_kernels=fused_kernels)
    out_device = mm.intermediate_device()
    new = model.model.process_latent_out(result.latents.float()).to(out_device)
    video = new if prefix is None else torch.cat([prefix.to(out_device), new], dim=2)
    state = CausVidState(last_block=result.last_block.cpu(), video=video.cpu(), rng_state=generator.get_state(),
                         rng_device=str(device), schedule=schedule, fused_kernels=fused_kernels,
                         num_frames=num_frames, width=width, height=height)
    return new, state


def restore_generator(state: CausVidState, device: torch.device) -> torch.Generator:
    if torch.device(state.rng_device).type != torch.device(device).type:
        raise ValueError(f"this state was sampled on {state.rng_device}; its noise cannot continue on {device}")
    generator = torch.Generator(device)
    generator.set_state(state.rng_state)
    return generator


class CausVidSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausVidSampler",
            display_name="CausVid Sampler",
            category="CausVid",
            description="Autoregressive few-step sampling of a causal Wan2.1 model: 3 latent frames at a time over a "
                        "KV cache, fragments of `length` frames chained end to start. Returns VAE-space latents.",
            inputs=[
                io.Model.Input("model", tooltip="From CausVid Model Loader."),
                io.Conditioning.Input("positive", tooltip="CausVid Text Encode (one prompt per fragment) or "
                                                          "CLIPTextEncode."),
                io.Int.Input("width", default=832, min=16, max=4096, step=16),
                io.Int.Input("height", default=480, min=16, max=4096, step=16),
                io.Int.Input("length", default=81, min=9, max=MAX_LENGTH, step=12,
                             tooltip="Frames per fragment: 81 = 21 latent frames = 5 s at 16 fps (the trained "
                                     "length). Must be 1 + 4·(3k)."),
                io.Combo.Input("preset", options=list(SCHEDULES), default="CausVid 1.3B",
                               tooltip="Step list, shift and clean pass of the checkpoint family."),
                io.String.Input("custom_steps", default="", tooltip="Optional step list replacing the preset's, "
                                "e.g. '1000, 757, 522'; shift, warp and clean pass stay the preset's."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed. With a state connected the noise continues from the state and "
                                     "the seed is not used."),
                io.Int.Input("num_fragments", default=1, min=1, max=256,
                             tooltip="Fragments to chain: each later one adds length − 12 frames."),
                io.Boolean.Input("fused_kernels", default=False, optional=True,
                                 tooltip="Compiled elementwise kernels (CUDA + Triton): ~1.3× faster on an H100 "
                                         "(bench/RESULTS.md), within bf16 tolerance of the reference numerics "
                                         "but not bitwise equal. The first run compiles for a while."),
                io.Latent.Input("start_latent", optional=True, tooltip="Optional video latent (VAE Encode) to "
                                "extend: 3·k latent frames, fewer than the fragment's."),
                CausVidStateType.Input("state", optional=True, tooltip="Continue from an earlier sampler's state."),
            ],
            outputs=[io.Latent.Output(display_name="latent"), CausVidStateType.Output(display_name="state")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, width: int, height: int, length: int, custom_steps: str) -> bool | str:
        # linked inputs arrive as None here: they are checked again when the node runs
        for name, value in (("width", width), ("height", height)):
            if value is not None and (value < PIXEL_MULTIPLE or value % PIXEL_MULTIPLE or value > 4096):
                return f"{name} must be a multiple of {PIXEL_MULTIPLE} between 16 and 4096, got {value}"
        if length is not None and (message := check_length(length)):
            return message
        if isinstance(custom_steps, str) and custom_steps.strip():
            try:
                parse_steps(custom_steps)
            except ValueError as e:
                return str(e)
        return True

    @classmethod
    def execute(cls, model, positive, width: int, height: int, length: int, preset: str, custom_steps: str,
                seed: int, num_fragments: int, fused_kernels: bool = False, start_latent=None,
                state: CausVidState | None = None) -> io.NodeOutput:
        if (message := cls.validate_inputs(width, height, length, custom_steps)) is not True:
            raise ValueError(message)
        schedule = choose_schedule(preset, custom_steps)
        num_frames = latent_frames(length)
        if state is not None:
            if start_latent is not None:
                raise ValueError("connect either a start latent or a state, not both")
            if (state.width, state.height, state.num_frames) != (width, height, num_frames):
                raise ValueError(f"the state was sampled at {state.width}×{state.height}, "
                                 f"{4 * state.num_frames - 3} frames per fragment; set the same size and length")
            generator, start, prefix = restore_generator(state, model.load_device), state.last_block, state.video
        else:
            generator = torch.Generator(model.load_device).manual_seed(seed)
            start = prefix = None
            if start_latent is not None:
                prefix = start_latent["samples"]
                expected = (height // 8, width // 8)
                if prefix.dim() != 5 or tuple(prefix.shape[3:]) != expected:
                    raise ValueError(f"the start latent is {list(prefix.shape)}; it must be a video latent of "
                                     f"{width}×{height} ([B, 16, frames, {height // 8}, {width // 8}])")
                if prefix.shape[2] % FRAMES_PER_BLOCK:
                    raise ValueError(
                        f"the start latent has {prefix.shape[2]} latent frames; CausVid caches whole blocks of "
                        f"{FRAMES_PER_BLOCK}. Encode 9, 21, 33, … frames (to start from one image, repeat it 9 times "
                        "and VAE Encode the still video)")
                start = model.model.process_latent_in(prefix.float())
        new, next_state = run(model, positive, schedule=schedule, width=width, height=height, num_frames=num_frames,
                              num_fragments=num_fragments, generator=generator, start=start, prefix=prefix,
                              fused_kernels=fused_kernels, node_id=cls.hidden.unique_id)
        return io.NodeOutput({"samples": new}, next_state)


class CausVidContinue(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausVidContinue",
            display_name="CausVid Continue",
            category="CausVid",
            description="Grows a video by more fragments with a new (or the same) prompt. Returns the new frames and "
                        "the whole video so far: decode the whole video once, so there is no seam.",
            inputs=[
                io.Model.Input("model"),
                CausVidStateType.Input("state"),
                io.Conditioning.Input("positive"),
                io.Int.Input("num_fragments", default=1, min=1, max=256),
            ],
            outputs=[io.Latent.Output(display_name="fragment"), io.Latent.Output(display_name="video"),
                     CausVidStateType.Output(display_name="state")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, state: CausVidState, positive, num_fragments: int) -> io.NodeOutput:
        new, next_state = run(model, positive, schedule=state.schedule, width=state.width, height=state.height,
                              num_frames=state.num_frames, num_fragments=num_fragments,
                              generator=restore_generator(state, model.load_device), start=state.last_block,
                              prefix=state.video, fused_kernels=state.fused_kernels, node_id=cls.hidden.unique_id)
        return io.NodeOutput({"samples": new}, {"samples": next_state.video}, next_state)
