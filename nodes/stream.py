"""CausVid Stream to Video: sample, decode each finished block with the user's Wan VAE and append it to an
mp4 in ComfyUI's output folder while the next block samples (see `streaming`)."""

from __future__ import annotations

from pathlib import Path

import comfy.model_management as mm
import folder_paths
import torch
from comfy_api.latest import io, ui
from PIL import Image

from .sampler import CausVidStateType, prepare, run, sampling_inputs, sampling_memory, shares_decode
from .speed import choose_speed
from .streaming import FPS, BlockStream, Mp4Writer, StreamingDecoder, decode_room, stream_memory


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


class CausVidStreamToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausVidStreamToVideo",
            display_name="CausVid Stream to Video",
            category="CausVid",
            description="Samples like CausVid Sampler and writes the video to an mp4 (H.264, 16 fps) block by block "
                        "while it is generated: the Wan VAE decodes each finished block with its causal cache kept "
                        "(the same frames as one whole decode), so memory stays flat for any length and a cancelled "
                        "or failed run leaves a playable file with every frame finished so far.",
            inputs=[
                io.Model.Input("model", tooltip="From CausVid Model Loader."),
                io.Conditioning.Input("positive", tooltip="CausVid Text Encode (one prompt per fragment, or "
                                                          "'seconds: prompt' lines) or CLIPTextEncode."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE (VAE Loader, wan_2.1_vae.safetensors), or a tiny "
                             "Wan 2.1 decoder (taew2_1 / lighttaew2_1 in models/vae: several times faster, lower "
                             "quality). Each streamed file equals one whole decode with the same VAE."),
                io.String.Input("filename_prefix", default="video/causvid_stream",
                                tooltip="Where the mp4 goes, inside ComfyUI's output folder (as Save Video)."),
                *sampling_inputs(),
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
    def execute(cls, model, positive, vae, filename_prefix: str, **widgets) -> io.NodeOutput:
        job = prepare(model, **widgets)
        if not positive or positive[0][0].shape[0] != 1:
            raise ValueError("CausVid Stream to Video writes one video: use a prompt batch of 1")
        # speed fast decodes the Wan VAE faster too, where the fused kernels run (bf16 rounding of exact)
        device = model.load_device
        decoder = StreamingDecoder(vae, fast=choose_speed(job.speed, device).fused_kernels)
        h, w = job.height // 8, job.width // 8
        one_frame = (1, 16, 1, h, w)
        block, sampling = job.schedule.frames_per_block, sampling_memory(model, job, 1)
        if device.type == "cuda":  # a decode call that fits beside the weights and sampling
            free = mm.get_total_memory(device) - mm.extra_reserved_memory() - model.model_size() \
                - vae.patcher.model_size() - sampling.total
            decoder.fit(one_frame, block, decode_room(free, sampling.transient))
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), job.width, job.height)
        file = f"{name}_{counter:05}_.mp4"
        newest = NewestFrame()
        writer = Mp4Writer(Path(folder) / file, job.width, job.height, FPS)
        stream = BlockStream(decoder, writer, on_frames=newest.update)
        try:
            if job.start is not None:
                stream.put(job.prefix)  # the video begins with its start image or video
            # the recompute policy (Krea) decodes every block on the sampling thread anyway: write those frames
            shared = shares_decode(job)
            _, state = run(model, positive, job, cls.hidden.unique_id, on_block=None if shared else stream.put,
                           keep_video=False, extra_models=(vae.patcher,),
                           extra_memory=stream_memory(sampling.transient, decoder.memory_used(one_frame, block)),
                           preview=newest, vae=vae,
                           on_decoded=stream.put_frames if shared else None)
        finally:
            stream.close()
        saved = ui.SavedResult(file, subfolder, io.FolderType.output)
        return io.NodeOutput(state, ui=ui.PreviewVideo([saved]))
