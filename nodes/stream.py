"""CausVid Stream to Video: sample, decode each finished block with the user's Wan VAE and append it to an
mp4 in ComfyUI's output folder while the next block samples (see `streaming`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io, ui
from PIL import Image

from ..causal.text import TEXT_TOKENS
from .comfy_model import causal_network
from .live import LiveRun, comfy_encoder, streaming_live
from .sampler import VAE_FILES, prepare, run, sampling_inputs, sampling_memory, shares_decode
from .speed import choose_speed
from .streaming import BlockStream, Mp4Writer, StreamingDecoder, decode_room, stream_memory
from .text import START_KEY, TEXT_KEY


class NewestFrame:
    """The last frame written, as a progress preview (made once per frame, on the sampling thread)."""

    def __init__(self) -> None:
        self.frame: torch.Tensor | None = None
        self.count = 0
        self._image = None
        self._made_for = -1

    def update(self, count: int, frame: torch.Tensor) -> None:
        self.frame, self.count = frame, count

    def __call__(self):
        if self.frame is None:
            return None
        if self._made_for != self.count:
            pixels = (self.frame.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            self._image, self._made_for = ("JPEG", Image.fromarray(pixels), 512), self.count
        return self._image


def live_run(clip, positive, job, node_id: str, fps: float) -> LiveRun:
    """The live run of a stream whose positive is one CausVid Text Encode prompt (its text starts the timeline)."""
    if len(positive) != 1 or TEXT_KEY not in positive[0][1] or START_KEY in positive[0][1]:
        raise ValueError("a live stream (live_clip connected) starts from one prompt of CausVid Text Encode: give it a "
                         "single line without a time; later prompts come while it streams")
    if job.resume is not None or job.schedule.joint_window:
        raise ValueError("a live stream starts a new video with a block-by-block preset: disconnect live_clip to "
                         f"{'continue a state' if job.resume is not None else 'use ' + job.schedule.name}")
    start = job.video.start_frames
    return LiveRun(node_id, positive[0][1][TEXT_KEY], positive[0][0], comfy_encoder(clip), start_frames=start,
                   max_tokens=TEXT_TOKENS, device=clip.patcher.load_device, fps=fps)


class CausVidStreamToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausVidStreamToVideo",
            display_name="CausVid Stream to Video",
            category="CausVid",
            description="Samples like CausVid Sampler and writes the video to an mp4 (H.264, at the model's frame "
                        "rate: 16 fps, 24 for LongLive 2.0) block by block "
                        "while it is generated: the Wan VAE decodes each finished block with its causal cache kept "
                        "(the same frames as one whole decode), so memory stays flat for any length and a cancelled "
                        "or failed run leaves a playable file with every frame finished so far.",
            inputs=[
                io.Model.Input("model", tooltip="From CausVid Model Loader."),
                io.Conditioning.Input("positive", tooltip="CausVid Text Encode (one prompt per fragment, or "
                                                          "'seconds: prompt' lines) or CLIPTextEncode."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE (VAE Loader, wan_2.1_vae.safetensors), or a tiny "
                             "Wan 2.1 decoder (taew2_1 / lighttaew2_1 in models/vae: several times faster, lower "
                             "quality); for LongLive 2.0 the Wan 2.2 VAE (wan2.2_vae.safetensors) or taew2_2. Each "
                             "streamed file equals one whole decode with the same VAE."),
                io.String.Input("filename_prefix", default="video/causvid_stream",
                                tooltip="Where the mp4 goes, inside ComfyUI's output folder (as Save Video)."),
                *sampling_inputs(),
                io.Clip.Input("live_clip", optional=True,
                              tooltip="Live: connect the text encoder (the CLIPLoader of positive) to steer the "
                                      "video while it streams. A prompt typed into this node's live panel (or sent "
                                      "to POST /causvid/live/<run>/prompt) drives it from the next block on; Pause "
                                      "holds it between blocks. The prompts used are saved beside the mp4 as "
                                      "'seconds: prompt' lines, which queued give the same video. Keeps the text "
                                      "encoder loaded."),
            ],
            outputs=[io.Custom("CAUSVID_STATE").Output(display_name="state")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, width: int, height: int, length: int, custom_steps: str,
                        preset: str | None = None) -> bool | str:
        from .sampler import CausVidSampler

        return CausVidSampler.validate_inputs(width, height, length, custom_steps, preset)

    @classmethod
    def execute(cls, model, positive, vae, filename_prefix: str, live_clip=None, **widgets) -> io.NodeOutput:
        job = prepare(model, **widgets)
        if not positive or positive[0][0].shape[0] != 1:
            raise ValueError("CausVid Stream to Video writes one video: use a prompt batch of 1")
        # speed fast decodes the Wan VAE faster too, where the fused kernels run (bf16 rounding of exact)
        device = model.load_device
        decoder = StreamingDecoder(vae, fast=choose_speed(job.speed, device).fused_kernels)
        config = causal_network(model).config
        if decoder.latent_channels != config.out_dim:
            raise ValueError(f"this VAE decodes {decoder.latent_channels}-channel latents, but the model makes "
                             f"{config.out_dim}-channel latents for the {config.latents.name}: connect "
                             f"{VAE_FILES[config.out_dim]} (VAE Loader)")
        one_frame = (1, config.out_dim, 1, *config.latent_size(job.video.height, job.video.width))
        block, sampling = job.schedule.frames_per_block, sampling_memory(model, job, 1)
        if device.type == "cuda":  # a decode call that fits beside the weights and sampling
            free = mm.get_total_memory(device) - mm.extra_reserved_memory() - model.model_size() \
                - vae.patcher.model_size() - sampling.total
            decoder.fit(one_frame, block, decode_room(free, sampling.transient))
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), job.video.width, job.video.height)
        file = f"{name}_{counter:05}_.mp4"
        live = None if live_clip is None else live_run(live_clip, positive, job, cls.hidden.unique_id,
                                                       config.latents.fps)
        extra_models, extra_memory = (vae.patcher,), stream_memory(sampling.transient,
                                                                     decoder.memory_used(one_frame, block))
        if live is not None:  # the text encoder stays loaded, with room to run, so encoding never unloads the DiT
            extra_models = (*extra_models, live_clip.patcher)
            extra_memory += mm.minimum_inference_memory()
        newest = NewestFrame()
        writer = Mp4Writer(Path(folder) / file, job.video.width, job.video.height, config.latents.fps)
        stream = BlockStream(decoder, writer, on_frames=newest.update)
        try:
            with streaming_live(live):  # ends (its encodes too) before the stream decodes its last blocks
                if job.video.start_latents is not None:
                    stream.put(job.prefix)  # the video begins with its start image or video
                # the recompute policy (Krea) decodes every block on the sampling thread anyway: write those frames
                shared = shares_decode(job)
                _, state = run(model, positive, job, cls.hidden.unique_id, on_block=None if shared else stream.put,
                               keep_video=False, extra_models=extra_models, extra_memory=extra_memory,
                               preview=newest, vae=vae, on_decoded=stream.put_frames if shared else None, live=live)
            if live is not None:
                state = dataclasses.replace(state, live_prompts=live.timeline_text())
        finally:
            stream.close()
            if live is not None:
                (Path(folder) / f"{name}_{counter:05}_.prompts.txt").write_text(live.timeline_text(), encoding="utf-8")
        saved = ui.SavedResult(file, subfolder, io.FolderType.output)
        return io.NodeOutput(state, ui=ui.PreviewVideo([saved]))
