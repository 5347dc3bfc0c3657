"""Streaming output: each finished block is decoded by the user's VAE and written to an mp4 at once.

`StreamingDecoder` drives one of ComfyUI's own Wan decoders a frame at a time with its causal state kept
for the whole video, so block-by-block decoding gives the frames of one whole-video decode: no seams, nothing
re-encoded. Three kinds: the full Wan 2.1 VAE (`comfy.ldm.wan.vae.WanVAE`: its `conv2` and `decoder`, the loop
its `decode` runs, one feature cache), the full Wan 2.2 VAE (`comfy.ldm.wan.vae2_2.WanVAE`, LongLive 2.0's: the
same loop, its first frame decoded as the first chunk, then un-patched 2x2) and the tiny taew2_1 / lighttaew2_1 /
taew2_2 decoders (`comfy.taesd.taehv.TAEHV`: its decoder run in time order as its sequential decode does, each
MemBlock remembering its last input).
`Mp4Writer` encodes frames to H.264 with PyAV (ComfyUI's own dependency) as they arrive; closing it in any
case leaves a playable file with every frame written so far. `BlockStream` runs them as a pipeline: the next
block samples while the last one decodes (its own thread and CUDA stream) while the one before is encoded (a
third thread), each stage fed through a bounded queue, so a block takes the slowest stage's time, not their sum,
and memory stays flat. Frames reach the CPU through `causal.host.to_host`, which holds up no other thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import comfy.model_management as mm
import torch

from ..causal.host import to_host
from ..causal.wan_decoder import WanDecodeStream

log = logging.getLogger("comfyui-causvid")

FPS = 16
DECODE_HEADROOM = 1.2
"""Decode memory estimates are the measured peaks times this (other resolutions, cards and cuDNN versions)."""
ALLOCATOR_SHARE, ALLOCATOR_FLOOR = 0.4, 0.65 * 2**30
"""PyTorch's caching allocator keeps the blocks a CUDA stream freed for that stream: with the decode on its own
stream, memory reserved ran 0.65 + 0.4 x (what is allocated and freed block by block: activations and the
decode) GiB above the peak allocated, or less (1.06, 2.03, 3.55 GiB above it for 1.1, 5.3, 8.7 GiB of such
memory; bench/cards.py, 2026-12-02). The KV cache, allocated once, adds none."""


UNSUPPORTED = ("streaming needs the Wan 2.1 VAE (wan_2.1_vae.safetensors) or a tiny Wan 2.1 decoder (taew2_1 / "
               "lighttaew2_1), or for LongLive 2.0 the Wan 2.2 VAE (wan2.2_vae.safetensors) or taew2_2, loaded with "
               "VAE Loader; this VAE is a {}")


def allocator_overhead(transient: int) -> int:
    """Memory the allocator reserves beyond the peak for `transient` bytes allocated and freed block by block."""
    return int(ALLOCATOR_FLOOR + ALLOCATOR_SHARE * transient)


def stream_memory(sampling_transient: int, decode: int) -> int:
    """What a stream asks ComfyUI to keep free beside the sampler's own memory: a decode call's, and the
    allocator's overhead on it and on the sampler's `sampling_transient` bytes."""
    return decode + allocator_overhead(sampling_transient + decode)


def decode_room(free: int, sampling_transient: int) -> int:
    """The most a decode call may take where `free` bytes are left beside the weights and the KV cache."""
    # decode + allocator_overhead(sampling_transient + decode) <= free, solved for decode
    return int((free - ALLOCATOR_FLOOR - ALLOCATOR_SHARE * sampling_transient) / (1 + ALLOCATOR_SHARE))


class StreamingDecoder:
    """Decode a Wan latent video a chunk at a time, carrying the decoder's causal state between chunks.
    `StreamingDecoder(vae)` makes the one for the VAE's kind: `WanVAEStreamingDecoder` (the Wan 2.1 VAE),
    `Wan22VAEStreamingDecoder` (the Wan 2.2 VAE) or `TinyStreamingDecoder` (taew2_1 / lighttaew2_1 / taew2_2); any
    other VAE raises ValueError. `fast=True` lets a kind
    decode faster where it can, within bf16 rounding of its exact decode (the Wan VAE: `causal.wan_decoder`)."""

    def __new__(cls, vae, *, fast: bool = False) -> StreamingDecoder:
        return super().__new__(_decoder_kind(vae) if cls is StreamingDecoder else cls)

    def __init__(self, vae, *, fast: bool = False) -> None:
        self.vae = vae
        self.model = vae.first_stage_model
        self.fast = fast
        """Whether this decoder may run a fast decode (a kind without one, or a VAE that cannot, runs exact)."""

    @property
    def latent_channels(self) -> int:
        """The channels of the latents it decodes: 16 (Wan 2.1) or 48 (Wan 2.2), as its VAE module says."""
        return getattr(self.model, "latent_channels", None) or self.model.z_dim

    def load(self, latent_shape: tuple[int, ...]) -> None:
        """Put the VAE on its device with room to decode chunks of `latent_shape` (ComfyUI's model management)."""
        mm.load_models_gpu([self.vae.patcher], memory_required=self.memory_used(latent_shape, latent_shape[2]))

    def memory_used(self, latent_shape: tuple[int, ...], block: int) -> int:
        """Device memory one decode call of a `block`-frame block takes beside the VAE's weights: the kind's
        measured peak per latent pixel (`per_latent_pixel`, in elements of the VAE's dtype) with headroom."""
        pixels = latent_shape[-2] * latent_shape[-1] * self.vae.vae_dtype.itemsize
        return int(DECODE_HEADROOM * self.per_latent_pixel(block) * pixels)

    PER_LATENT_PIXEL: float = 0.0
    """A kind's `per_latent_pixel` where it does not depend on the block."""

    def per_latent_pixel(self, block: int) -> float:
        """Peak working memory of one decode call / (h * w * element size) (bench/vae_decode.py measures it)."""
        return self.PER_LATENT_PIXEL

    def fit(self, latent_shape: tuple[int, ...], block: int, room: int) -> None:
        """Choose how to decode so that a call takes at most `room` bytes where the kind can (the Wan VAE's fast
        decode a frame at a time); a call that takes more stays as it is (the sampler's memory check sees it)."""

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-space latents [1, C, n, h, w] -> frames [F, H, W, 3] (float32, CPU; the VAE's `process_output`,
        as VAE Decode gives them: in [0, 1] for the Wan VAE, unclamped for the tiny decoders): 1 + 4 (n - 1)
        frames for the video's first chunk, 4 n after it. If it raises, the same chunk can be decoded again: the
        causal state is as it was before the call (the fast Wan decode a frame at a time instead keeps the frames
        it finished before a Cancel, and decodes only the rest the next time)."""
        self._prepare()
        before = self._state()
        try:
            z = latents.to(device=self.vae.device, dtype=self.vae.vae_dtype)
            pixels = self.vae.process_output(self._decode(z).float())  # [1, 3, F, H, W]
            return to_host(pixels[0].permute(1, 2, 3, 0))
        except BaseException:
            self._restore(before)
            raise

    def _prepare(self) -> None:
        """Before each decode, once the VAE is loaded (e.g. choose how to decode)."""

    def _state(self) -> object:
        """A snapshot of the causal state (decoding replaces its tensors, it never writes into them)."""
        raise NotImplementedError

    def _restore(self, state: object) -> None:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """[B, C, n, h, w] on the VAE's device and dtype -> the decoder's raw output [B, 3, F, H, W]."""
        raise NotImplementedError


class WanVAEStreamingDecoder(StreamingDecoder):
    """The Wan 2.1 VAE: `conv2`, then `decoder` one latent frame at a time with one causal feature cache (exact:
    VAE Decode's frames bit for bit). Fast: `causal.wan_decoder.WanDecodeStream` on the same modules' weights, a
    block per call (a frame at a time after `fit` found too little room), where every weight sits on the VAE's
    device unpatched (else exact, logged)."""

    # peak of one decode call per latent pixel, in elements of the VAE's dtype (bench/vae_decode.py, 832x480,
    # bf16, H200, 2026-12-02): the exact decode one latent frame per call; the fast decode of n latent frames
    # per call A + B n (n = 1: 349578, n = 3: 679949), a frame at a time (low_memory) flat, committing each latent
    # frame with no snapshot of the old causal cache (1.03 GiB a call at 832x480)
    EXACT_PER_LATENT_PIXEL = 325548
    FAST_PER_LATENT_PIXEL = (184392, 165186)
    LOW_MEMORY_PER_LATENT_PIXEL = 88338

    def __init__(self, vae, *, fast: bool = False) -> None:
        super().__init__(vae, fast=fast)
        from comfy.ldm.wan.vae import CausalConv3d

        self.cache: list = [None] * sum(isinstance(m, CausalConv3d) for m in self.model.decoder.modules())
        self.stream: WanDecodeStream | None = None
        self.low_memory = False
        """The fast decode a frame at a time (about 0.4x the memory of a block per call, 1.17x the time)."""

    def _prepare(self) -> None:
        """At the first decode (the VAE is loaded by then): the fast decode where every weight sits on the VAE's
        device unpatched, else the exact one from here on, logged."""
        if not self.fast or self.stream is not None:
            return
        if (why := self._cannot_go_fast()) is not None:
            log.info("CausVid: the Wan VAE streams with its exact decode: %s", why)
            self.fast = False
            return
        self.stream = WanDecodeStream(self.model.conv2, self.model.decoder, device=torch.device(self.vae.device),
                                      dtype=self.vae.vae_dtype, check=mm.throw_exception_if_processing_interrupted,
                                      low_memory=self.low_memory)

    def _cannot_go_fast(self) -> str | None:
        device = torch.device(self.vae.device)
        for m in self.model.modules():
            if getattr(m, "weight_function", None) or getattr(m, "bias_function", None):
                return "its weights are patched per call"
        if any(p.device != device for p in self.model.parameters()):
            return "its weights are not all on the GPU (partial loading)"
        return None

    def per_latent_pixel(self, block: int) -> float:
        if not self.fast:
            return self.EXACT_PER_LATENT_PIXEL
        if self.low_memory:
            return self.LOW_MEMORY_PER_LATENT_PIXEL
        a, b = self.FAST_PER_LATENT_PIXEL
        return a + b * block

    def memory_used(self, latent_shape: tuple[int, ...], block: int) -> int:
        # the fast decode's channels-last copies of the decoder's weights
        copies = mm.module_size(self.model.decoder) + mm.module_size(self.model.conv2) if self.fast else 0
        return super().memory_used(latent_shape, block) + copies

    def fit(self, latent_shape: tuple[int, ...], block: int, room: int) -> None:
        if self.fast and not self.low_memory and self.memory_used(latent_shape, block) > room:
            self.low_memory = True
            log.info("CausVid: the Wan VAE decodes a frame at a time, to fit beside sampling (%.1f GiB a call, "
                     "%.1f GiB left)", self.memory_used(latent_shape, block) / 2**30, room / 2**30)

    def _state(self) -> object:
        return self.stream.state() if self.stream is not None else list(self.cache)

    def _restore(self, state) -> None:
        if self.stream is not None:
            self.stream.restore(state)
        else:
            self.cache[:] = state

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.stream is not None:
            return self.stream.decode(z)
        x = self.model.conv2(z)
        out = [self.model.decoder(x[:, :, i:i + 1], feat_cache=self.cache, feat_idx=[0]) for i in range(x.shape[2])]
        return torch.cat(out, dim=2)


class Wan22VAEStreamingDecoder(StreamingDecoder):
    """The Wan 2.2 VAE (48 latent channels, 16x: LongLive 2.0's): `conv2`, then `decoder` one latent frame at a time
    with one causal feature cache, the video's first frame as its first chunk (which keeps one output frame of
    four), each frame's output un-patched from 2x2 (what its `decode` does for the whole video). Exact only."""

    PER_LATENT_PIXEL = 8000 * 16 * 16
    """ComfyUI's own estimate of its Wan 2.2 decode per latent pixel (`comfy.sd.VAE.memory_used_decode`, which it
    decodes a frame at a time, so any number of frames), in elements of the VAE's dtype; not measured here."""

    def __init__(self, vae, *, fast: bool = False) -> None:
        super().__init__(vae)
        from comfy.ldm.wan.vae import CausalConv3d

        self.cache: list = [None] * sum(isinstance(m, CausalConv3d) for m in self.model.decoder.modules())
        self.first = True  # the next frame is the video's first

    def _state(self) -> tuple[list, bool]:
        return list(self.cache), self.first

    def _restore(self, state: tuple[list, bool]) -> None:
        self.cache[:], self.first = state

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        from comfy.ldm.wan.vae2_2 import unpatchify

        x = self.model.conv2(z)
        out = []
        for i in range(x.shape[2]):
            out.append(self.model.decoder(x[:, :, i:i + 1], feat_cache=self.cache, feat_idx=[0],
                                          first_chunk=self.first))
            self.first = False
        return unpatchify(torch.cat(out, dim=2), patch_size=2)


class TinyStreamingDecoder(StreamingDecoder):
    """taew2_1 / lighttaew2_1 (`TAEHV`, 16 latent channels) and taew2_2 (48 channels, each output frame un-shuffled
    from 2x2 pixels). Its decoder is a chain of per-frame 2D layers in
    which a MemBlock also sees its own input of the previous frame (zeros before the video's first) and a TGrow
    turns each frame into `stride` frames (x4 in all). Run frame by frame in time order, as TAEHV's sequential
    decode runs it, with each MemBlock's last input kept between chunks; the first `frames_to_trim` output
    frames of the video (3: 4 n - 3 = 1 + 4 (n - 1)) are dropped, as TAEHV drops them."""

    PER_LATENT_PIXEL = 42617
    """Peak of one decode call per latent pixel in elements of its dtype (taew2_1, bench/vae_decode.py, 832x480,
    H200, 2026-12-02; lighttaew2_1 has the same layers)."""

    def __init__(self, vae, *, fast: bool = False) -> None:
        super().__init__(vae)
        from comfy.taesd.taehv import MemBlock, TGrow

        self.MemBlock, self.TGrow = MemBlock, TGrow
        self.blocks = list(self.model.decoder)
        self.memory: list[torch.Tensor | None] = [None] * len(self.blocks)
        self.to_trim: int = self.model.frames_to_trim

    def _state(self) -> tuple[list, int]:
        return list(self.memory), self.to_trim

    def _restore(self, state: tuple[list, int]) -> None:
        self.memory[:], self.to_trim = state

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        z = self.model.process_in(z)
        frames = [f for t in range(z.shape[2]) for f in self._frame(z[:, :, t].contiguous(), 0)]
        drop = min(self.to_trim, len(frames))
        self.to_trim -= drop
        frames = frames[drop:]
        if self.model.patch_size > 1:  # taew2_2: 12 channels of 2x2 pixels per output pixel
            frames = [F.pixel_shuffle(f, self.model.patch_size) for f in frames]
        return torch.stack(frames, dim=2)

    def _frame(self, x: torch.Tensor, first: int) -> list[torch.Tensor]:
        """One frame [B, C, h, w] through decoder blocks `first`... -> its output frames [B, 3, H, W], in order."""
        for i in range(first, len(self.blocks)):
            block = self.blocks[i]
            if isinstance(block, self.MemBlock):
                past = self.memory[i]
                self.memory[i] = x  # never written into: the block concatenates it and adds it to a new tensor
                x = block(x, torch.zeros_like(x) if past is None else past)
            elif isinstance(block, self.TGrow):
                # TGrow gives [B * stride, C, h, w]: each input frame's `stride` frames, run on through the rest in turn
                grown = block(x).view(x.shape[0], block.stride, *x.shape[1:])
                return [f for k in range(block.stride) for f in self._frame(grown[:, k], i + 1)]
            else:
                x = block(x)
        return [x]


def _decoder_kind(vae) -> type[StreamingDecoder]:
    from comfy.ldm.wan.vae2_2 import WanVAE as Wan22VAE
    from comfy.taesd.taehv import TAEHV

    model = getattr(vae, "first_stage_model", None)
    if isinstance(model, TAEHV):
        if (model.latent_channels, model.patch_size) not in ((16, 1), (48, 2)):
            raise ValueError(UNSUPPORTED.format(f"tiny TAEHV decoder with {model.latent_channels} latent channels "
                                                "(not Wan 2.1's 16 or Wan 2.2's 48)"))
        return TinyStreamingDecoder
    if isinstance(model, Wan22VAE):
        return Wan22VAEStreamingDecoder
    if model is not None and all(hasattr(model, name) for name in ("conv2", "decoder")):
        return WanVAEStreamingDecoder
    raise ValueError(UNSUPPORTED.format(type(model).__name__))


class Mp4Writer:
    """H.264 (yuv420p) at `fps` (a Wan2.1 model's 16 by default), frames appended as they come; `close` flushes the
    encoder."""

    def __init__(self, path: Path, width: int, height: int, fps: int = FPS) -> None:
        self.path = path
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("h264", rate=Fraction(fps, 1))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.frames = 0
        self.closed = False

    def write(self, frames: torch.Tensor) -> None:
        """frames [F, H, W, 3] in [0, 1]."""
        pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        for image in pixels:
            for packet in self.stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                self.container.mux(packet)
            self.frames += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()


def expandable_segments() -> bool:
    """Whether PyTorch's allocator was started with expandable segments (PYTORCH_CUDA_ALLOC_CONF or, in newer
    PyTorch, PYTORCH_ALLOC_CONF)."""
    return any("expandable_segments:true" in os.environ.get(name, "").replace(" ", "").lower()
               for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"))


ALLOCATOR_ADVICE = ("start ComfyUI with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True and --disable-cuda-malloc "
                    "(the decode then reuses what sampling freed: the 1.3B stream with the Wan VAE ran in 8 GiB so)")


def decode_out_of_memory(error: torch.OutOfMemoryError) -> torch.OutOfMemoryError:
    """The same error with what to change in its message (the blocks written so far stay in the file)."""
    allocator = "" if expandable_segments() else f", or {ALLOCATOR_ADVICE}"
    return torch.OutOfMemoryError(
        "the VAE ran out of GPU memory decoding a finished block while the next one sampled (the blocks before it "
        "are in the mp4). Free some: kv_cache fp8 (half the KV cache), weight_dtype fp8_e4m3fn, a tiny decoder "
        f"(taew2_1), a smaller size or window, or ComfyUI's --reserve-vram{allocator}. {error}")


class BlockStream:
    """Decode on one worker thread, encode and write on another; `put` blocks while `depth` blocks wait to be
    decoded, the decoder while `depth` decoded blocks wait to be written (backpressure)."""

    def __init__(self, decoder: StreamingDecoder, writer: Mp4Writer, *, depth: int = 2,
                 on_frames: Callable[[int, torch.Tensor], None] | None = None) -> None:
        self.decoder, self.writer = decoder, writer
        self.queue: queue.Queue = queue.Queue(maxsize=depth)  # (decoded?, latents or frames) to decode
        self.decoded: queue.Queue = queue.Queue(maxsize=depth)  # frames to write
        self.error: BaseException | None = None
        self.on_frames = on_frames
        self.closed = False
        self.closing = threading.Event()
        self.cancelled = False  # the user pressed Cancel while the worker was decoding
        self.threads = [threading.Thread(target=self._decoding, name="causvid-stream-decode", daemon=True),
                        threading.Thread(target=self._writing, name="causvid-stream-write", daemon=True)]
        for thread in self.threads:
            thread.start()

    def _fail(self, error: BaseException) -> None:
        if self.error is None:  # the first error is the one raised
            self.error = error

    def _decoding(self) -> None:
        device = torch.device(self.decoder.vae.device)
        # its own CUDA stream, so the decode can run beside the sampler's kernels
        with torch.cuda.stream(torch.cuda.Stream(device)) if device.type == "cuda" else contextlib.nullcontext():
            while (item := self.queue.get()) is not None:
                if self.error is not None:
                    continue  # keep draining so `put` never blocks on a dead worker
                decoded, data = item
                try:
                    self.decoded.put(data if decoded else self._decode(data))
                except torch.OutOfMemoryError as e:
                    self._fail(decode_out_of_memory(e))
                except BaseException as e:  # noqa: BLE001 (re-raised on the sampling thread)
                    self._fail(e)
        self.decoded.put(None)

    def _writing(self) -> None:
        failed = False  # a decode error still lets the blocks decoded before it reach the file
        while (frames := self.decoded.get()) is not None:
            if failed:
                continue  # keep draining so the decoder never blocks on a dead writer
            try:
                self.writer.write(frames)
                if self.on_frames is not None:
                    self.on_frames(self.writer.frames, frames[-1])
            except BaseException as e:  # noqa: BLE001 (re-raised on the sampling thread)
                failed = True
                self._fail(e)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode one finished block, also when the user cancels meanwhile. ComfyUI's Cancel is one global flag
        that the first op to see it clears (every comfy.ops layer checks it, the VAE's too); when this thread
        sees it, it hands it back so that the sampler stops at its next step, waits until the sampler has taken
        it (or the stream is closing) and decodes the block again from the unchanged cache: blocks already
        sampled are never lost to a cancel."""
        while True:
            try:
                return self.decoder.decode(latents)
            except mm.InterruptProcessingException:
                self.cancelled = True
                if not self.closing.is_set():
                    mm.interrupt_current_processing(True)
                    while mm.processing_interrupted() and not self.closing.wait(0.02):
                        pass

    def put(self, latents: torch.Tensor) -> None:
        """Queue a finished block (VAE-space latents) to decode and write."""
        self._put((False, latents))

    def put_frames(self, frames: torch.Tensor) -> None:
        """Queue frames [F, H, W, 3] already decoded (by `decoder`, in order) to write."""
        self._put((True, frames))

    def _put(self, item: tuple[bool, torch.Tensor]) -> None:
        """While the queue is full, the sampler still answers a Cancel (one the worker handed back waits for
        it: blocking here for good would deadlock the two)."""
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                mm.throw_exception_if_processing_interrupted()

    def close(self) -> None:
        """Decode and write what is queued, then finish the file (also after an error or a cancel); raise the
        worker's error, if any, or the cancel it saw, the first time."""
        if self.closed:
            return
        self.closed = True
        self.closing.set()
        self.queue.put(None)
        for thread in self.threads:
            thread.join()
        self.writer.close()
        if self.error is not None:
            raise self.error
        if self.cancelled:
            # a Cancel the worker saw after the sampler's last step: it still stops the prompt
            mm.interrupt_current_processing(False)
            raise mm.InterruptProcessingException()
