"""Decoding while the sampler goes on: `ThreadedDecode` runs a `FastDecoder` on its long-lived worker
thread (`DecodeWorker`) with its own CUDA stream, fed block by block from the sampler's progress callback;
`OverlappedDecode` is the earlier same-thread second-stream variant of the plain `wan_vae.Decoder`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import torch

from bench.wan_vae import Decoder, Stream

if TYPE_CHECKING:
    from bench.wan_vae_fast import FastDecoder


class DecodeWorker:
    """A long-lived thread that runs decode jobs in order, on its own CUDA stream (on CUDA).

    Long-lived because cuDNN keeps its handles and execution plans (the cudnn.benchmark choices) per
    thread: a new thread per video would plan every convolution again. One per decoder and device
    (`FastDecoder.worker`); warm it up through a `ThreadedDecode` so that its plans and compiled kernels
    exist before it runs next to the sampler."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"vae-decode-{device}", daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job()` on the worker thread, after the jobs before it (it must catch its own errors)."""
        self.jobs.put(job)

    def _run(self) -> None:
        torch.set_grad_enabled(False)  # grad mode, current device and current stream are per thread
        with contextlib.ExitStack() as stack:
            if self.stream is not None:
                torch.cuda.set_device(self.device)
                stack.enter_context(torch.cuda.stream(self.stream))
            while True:
                job = self.jobs.get()
                job()
                del job


class ThreadedDecode:
    """Decode one video's latent blocks as the sampler finishes them, on the decoder's worker thread.

    `push(latents)` (from the sampler's thread, e.g. its progress callback) records an event on the
    caller's current stream and queues the block; the worker makes its stream wait for that event,
    decodes the block (`FastDecoder.push`) and records `done` (one timing mark per block). `push` then
    lets the caller run at most `max_ahead` blocks ahead of the GPU, waiting with the GIL released:
    otherwise the sampler's thread queues its whole clip, blocks in a kernel launch once CUDA's launch
    queue is full (holding the GIL) and the worker cannot launch anything until sampling is done.
    `finish()` waits for the worker and returns the video [B, 3, frames, H, W]; an exception raised on
    the worker is raised again there. With `threaded=False` (the default off CUDA) `push` decodes at once.
    """

    def __init__(self, decoder: FastDecoder, device: torch.device | str, threaded: bool | None = None,
                 max_ahead: int | None = 1) -> None:
        self.decoder = decoder
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.worker = decoder.worker(self.device) if (self.cuda if threaded is None else threaded) else None
        self.max_ahead = max_ahead
        self.state = decoder.start()
        self.chunks: list[torch.Tensor] = []
        self.done: list[Any] = []  # per block: a timing CUDA event on the decode stream, or perf_counter()
        self.video: torch.Tensor | None = None
        self.error: BaseException | None = None
        self._ahead: list[torch.cuda.Event] = []
        self._finished = threading.Event()

    def push(self, latents: torch.Tensor) -> None:
        if self.worker is None:
            self._decode(latents)
            return
        ready = None
        if self.cuda:
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(self.device))
            # freed by the sampler while the decode stream may still read it: the allocator waits for it
            latents.record_stream(self.worker.stream)
        self.worker.submit(lambda: self._job(latents, ready))
        if ready is not None and self.max_ahead is not None:
            self._ahead.append(ready)
            while len(self._ahead) > self.max_ahead:
                self._ahead.pop(0).synchronize()  # releases the GIL while it waits

    def finish(self) -> torch.Tensor:
        if self.worker is not None:
            self.worker.submit(self._concat)
            self._finished.wait()
        elif self.error is None:
            self._concat()
        if self.error is not None:
            raise self.error
        if self.video is None:
            raise RuntimeError("nothing was decoded")
        if self.worker is not None and self.cuda:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.worker.stream)
            self.video.record_stream(current)  # made on the decode stream, used and freed on this one
        return self.video

    def _decode(self, latents: torch.Tensor) -> None:
        self.chunks += self.decoder.push(latents, self.state)
        if self.cuda:
            mark = torch.cuda.Event(enable_timing=True)
            mark.record()
        else:
            mark = time.perf_counter()
        self.done.append(mark)

    def _job(self, latents: torch.Tensor, ready: torch.cuda.Event | None) -> None:
        if self.error is not None:
            return  # finish() raises the first error
        try:
            if ready is not None:
                torch.cuda.current_stream(self.device).wait_event(ready)
            self._decode(latents)
        except BaseException as e:  # noqa: BLE001 - handed to finish()
            self.error = e

    def _concat(self) -> None:
        try:
            if self.error is None and self.chunks:
                self.video = torch.cat(self.chunks, 2)
                self.chunks.clear()
        except BaseException as e:  # noqa: BLE001
            self.error = e
        finally:
            self._finished.set()


class OverlappedDecode:
    """The plain decoder on a second CUDA stream, launched from the sampler's own thread (`push` each
    finished block's clean latents, `finish` for the whole video): the first attempt at overlapping."""

    def __init__(self, decoder: Decoder, device: torch.device) -> None:
        self.decoder = decoder
        self.cuda = device.type == "cuda"
        self.side = torch.cuda.Stream(device) if self.cuda else None
        self.state: Stream = {}
        self.chunks: list[torch.Tensor] = []
        self.done: list[Any] = []  # per block: a timing CUDA event on the side stream, or perf_counter()

    @torch.no_grad()
    def _decode(self, latents: torch.Tensor) -> None:
        d = self.decoder
        x = d.conv2(latents * d.std.view(1, -1, 1, 1, 1) + d.mean.view(1, -1, 1, 1, 1))
        for i in range(x.shape[2]):
            self.chunks.append(d.decode_chunk(x[:, :, i:i + 1], self.state))

    def push(self, latents: torch.Tensor) -> None:
        if not self.cuda:
            self._decode(latents)
            self.done.append(time.perf_counter())
            return
        self.side.wait_stream(torch.cuda.current_stream())  # the block is written on the sampler's stream
        latents.record_stream(self.side)
        with torch.cuda.stream(self.side):
            self._decode(latents)
            mark = torch.cuda.Event(enable_timing=True)
            mark.record()
        self.done.append(mark)

    def finish(self) -> torch.Tensor:
        if self.cuda:
            torch.cuda.current_stream().wait_stream(self.side)
        return torch.cat(self.chunks, 2).clamp_(-1, 1)
