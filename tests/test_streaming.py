"""Streaming output: ComfyUI's own Wan VAE, and its tiny taew2_1 / lighttaew2_1 decoders, decoding block by block
equal one whole-video decode, the mp4
grows as blocks arrive, memory stays flat, and an interrupted or failing stream leaves a playable file.
In-process tests (ComfyUI imported, CPU) and end-to-end runs of CausVid Stream to Video over HTTP."""

from __future__ import annotations

import sys
import time

import pytest
import torch

from tools import workflows as eg
from tools.comfy_inprocess import pack_module
from tools.comfy_server import REPO_ROOT, comfyui_available, video_info
from tools.memory import LiveCpuTensors
from tools.standins import make_tiny_taehv, make_tiny_wan_vae
from tools.tiny import latent_size

pytestmark = pytest.mark.comfyui

if not comfyui_available():
    pytest.skip("ComfyUI is not installed (scripts/setup.sh)", allow_module_level=True)

H, W = 48, 64
h, w = latent_size(H, W)


@pytest.fixture(scope="module")
def streaming():
    return pack_module("nodes.streaming")


@pytest.fixture(scope="module")
def vae(streaming, tmp_path_factory):
    import comfy.sd
    import comfy.utils

    path = make_tiny_wan_vae(tmp_path_factory.mktemp("vae") / "tiny_wan21_vae.safetensors", seed=1)
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))


def _latents(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, frames, h, w, generator=torch.Generator().manual_seed(seed))


def test_block_by_block_decode_equals_one_whole_decode(streaming, vae):
    latents = _latents(1 + 3 * 4)
    whole = vae.decode(latents)[0]  # [F, H, W, 3]
    decoder = streaming.StreamingDecoder(vae)
    chunks = [latents[:, :, :1]] + [latents[:, :, i:i + 3] for i in range(1, 13, 3)]
    parts = [decoder.decode(c) for c in chunks]
    assert [p.shape[0] for p in parts] == [1, 12, 12, 12, 12]
    streamed = torch.cat(parts)
    assert streamed.shape == whole.shape == (1 + 4 * 12, H, W, 3)
    error = (streamed - whole.float()).abs().max().item()
    # a fresh decoder on a later chunk alone is not the same video: the causal cache matters
    alone = streaming.StreamingDecoder(vae).decode(chunks[2])
    seam = (alone[-8:] - parts[2][-8:]).abs().max().item()
    print(f"streamed vs whole: {error:.3g}; without the cache: {seam:.3g}")
    assert alone.shape[0] == 9 and error <= 1e-6 < seam


def test_fast_wan_decode_is_the_same_function_as_the_vaes_own(streaming, vae):
    """The fast decode (causal.wan_decoder on the VAE's own modules, a block per call, channels-last, biases and
    shortcuts folded into the next kernel) gives a whole decode's frames to float32 rounding, keeps its causal
    state across calls (a chunk decoded without it differs), and is all or nothing (a cancelled chunk decodes
    again to the same frames); the VAE's weights are left as they were."""
    import comfy.model_management as mm

    latents = _latents(1 + 3 * 4, seed=3)
    whole = vae.decode(latents)[0].float()
    before = {k: v.clone() for k, v in vae.first_stage_model.state_dict().items()}
    decoder = streaming.StreamingDecoder(vae, fast=True)
    chunks = [latents[:, :, :3]] + [latents[:, :, i:i + 3] for i in range(3, 13, 3)]  # first 1 + 2 frames, last 1
    parts = [decoder.decode(chunks[0]), decoder.decode(chunks[1])]
    assert decoder.fast and decoder.stream is not None and decoder.stream.frames == 6
    calls = []
    decoder.stream.check = lambda: calls.append(1) or (len(calls) == 5 and mm.interrupt_current_processing(True)) \
        or mm.throw_exception_if_processing_interrupted()
    with pytest.raises(mm.InterruptProcessingException):
        decoder.decode(chunks[2])
    assert decoder.stream.frames == 6  # restored: the cancelled chunk is decoded again below
    parts += [decoder.decode(c) for c in chunks[2:]]
    assert [p.shape[0] for p in parts] == [9, 12, 12, 12, 4]  # the last chunk: one latent frame
    error = (torch.cat(parts) - whole).abs().max().item()
    alone = streaming.StreamingDecoder(vae, fast=True).decode(chunks[2])
    seam = (alone[-8:] - parts[2][-8:]).abs().max().item()
    print(f"fast streamed vs whole: {error:.3g}; without the cache: {seam:.3g}")
    assert error <= 1e-5 < seam
    assert all(torch.equal(before[k], v) for k, v in vae.first_stage_model.state_dict().items())
    assert not streaming.StreamingDecoder(vae).fast  # exact unless asked


def test_fast_wan_decode_a_frame_at_a_time_when_memory_is_short(streaming, vae):
    """With little room beside sampling the fast Wan decode goes a frame at a time (fit): its estimate drops, it
    gives the same frames to float32 rounding; with room it stays a block per call; the exact decode has no
    choice to make."""
    latents = _latents(1 + 3 * 3, seed=4)
    whole = vae.decode(latents)[0].float()
    one_frame, block = (1, 16, 1, h, w), 3
    roomy, tight = streaming.StreamingDecoder(vae, fast=True), streaming.StreamingDecoder(vae, fast=True)
    big = roomy.memory_used(one_frame, block)
    roomy.fit(one_frame, block, room=big)
    tight.fit(one_frame, block, room=big - 1)
    small = tight.memory_used(one_frame, block)
    assert not roomy.low_memory and tight.low_memory and 0 < small < big
    chunks = [latents[:, :, :1]] + [latents[:, :, i:i + 3] for i in range(1, 10, 3)]
    parts = {name: torch.cat([d.decode(c) for c in chunks]) for name, d in (("block", roomy), ("frame", tight))}
    assert tight.stream.low_memory and not roomy.stream.low_memory
    for name, frames in parts.items():
        error = (frames - whole).abs().max().item()
        print(f"fast, {name} at a time, vs whole: {error:.3g}")
        assert frames.shape == whole.shape and error <= 1e-5
    exact = streaming.StreamingDecoder(vae)
    before = exact.memory_used(one_frame, block)
    exact.fit(one_frame, block, room=0)
    assert exact.memory_used(one_frame, block) == before > 0 and not exact.low_memory


def test_fast_wan_decode_a_frame_at_a_time_resumes_after_a_cancel(streaming, vae):
    """A frame at a time, the decode commits each latent frame and keeps no snapshot of the old cache (a second
    cache's memory): a Cancel before a frame, or inside the VAE's own attention module early in a frame, keeps
    the frames finished so far and the same latents decoded again give the frames of an uncancelled stream; an
    error later inside a frame loses the state, and later calls say so."""
    import comfy.model_management as mm

    latents = _latents(1 + 3 * 3, seed=5)
    chunks = [latents[:, :, :1]] + [latents[:, :, i:i + 3] for i in range(1, 10, 3)]
    plain = streaming.StreamingDecoder(vae, fast=True)
    plain.low_memory = True
    expected = [plain.decode(c) for c in chunks]

    decoder = streaming.StreamingDecoder(vae, fast=True)
    decoder.low_memory = True
    parts = [decoder.decode(chunks[0]), decoder.decode(chunks[1])]
    stream = decoder.stream
    frames = stream.frames
    checks = []
    stream.check = lambda: checks.append(1) or (len(checks) == 2 and mm.interrupt_current_processing(True)) or \
        mm.throw_exception_if_processing_interrupted()
    with pytest.raises(mm.InterruptProcessingException):
        decoder.decode(chunks[2])  # stopped before its second frame
    assert stream.frames == frames + 1 and len(stream.finished) == 1
    attention = next(layer for kind, layer in stream.layers if kind == "attention")
    forward = attention.forward
    attention.forward = lambda x: (setattr(attention, "forward", forward),
                                   mm.interrupt_current_processing(True),
                                   mm.throw_exception_if_processing_interrupted())
    with pytest.raises(mm.InterruptProcessingException):
        decoder.decode(chunks[2])  # stopped inside its second frame, in the VAE's attention module
    assert stream.frames == frames + 1 and len(stream.finished) == 1
    parts += [decoder.decode(c) for c in chunks[2:]]
    for got, want in zip(parts, expected):
        assert got.shape == want.shape and torch.equal(got, want)

    broken = streaming.StreamingDecoder(vae, fast=True)
    broken.low_memory = True
    broken.decode(chunks[0])
    head = broken.stream.head
    broken.stream.head = head._replace(weight=head.weight[:1])  # the frame's last conv fails
    with pytest.raises(RuntimeError):
        broken.decode(chunks[1])
    broken.stream.head = head
    with pytest.raises(RuntimeError, match="causal state is lost"):
        broken.decode(chunks[1])


def test_a_decode_room_and_the_stream_memory_agree_and_cover_the_measured_overheads(streaming):
    """decode_room is the largest decode call that stream_memory still fits in what is free; the allocator's
    allowance covers what the capped GPU runs reserved beyond their peaks (bench/cards.py, 2026-12-02)."""
    gib = 2 ** 30
    for free, transient in ((6 * gib, gib), (20 * gib, 5 * gib), (3 * gib, 2 * gib)):
        room = streaming.decode_room(free, transient)
        assert room + streaming.allocator_overhead(transient + room) <= free
        more = room + 2 ** 20
        assert more + streaming.allocator_overhead(transient + more) > free
        assert streaming.stream_memory(transient, room) == room + streaming.allocator_overhead(transient + room)
    for transient, reserved_beyond_peak in ((1.1, 1.06), (5.3, 2.03), (8.7, 3.55)):
        assert streaming.allocator_overhead(int(transient * gib)) >= reserved_beyond_peak * gib


def test_non_wan_vae_is_refused(streaming):
    """The message names the kinds it takes; a tiny decoder for another latent space (HunyuanVideo 1.5's) is refused
    too, Wan 2.2's (taew2_2, LongLive 2.0's) is taken."""
    import types

    from comfy.taesd.taehv import TAEHV

    both = r"Wan 2.1 VAE \(wan_2.1_vae.safetensors\) or a tiny Wan 2.1 decoder \(taew2_1 / lighttaew2_1\)"
    wan22 = r"Wan 2.2 VAE \(wan2.2_vae.safetensors\) or taew2_2"
    with pytest.raises(ValueError, match=both + ".*" + wan22 + ".*Identity"):
        streaming.StreamingDecoder(types.SimpleNamespace(first_stage_model=torch.nn.Identity()))
    with pytest.raises(ValueError, match=both + ".*32 latent channels"):
        streaming.StreamingDecoder(types.SimpleNamespace(first_stage_model=TAEHV(latent_channels=32)))
    decoder = streaming.StreamingDecoder(types.SimpleNamespace(first_stage_model=TAEHV(latent_channels=48)))
    assert isinstance(decoder, streaming.TinyStreamingDecoder) and decoder.latent_channels == 48


# -------------------------------------------------------------------------------------------------
# The tiny Wan 2.1 decoders (taew2_1, lighttaew2_1: ComfyUI's TAEHV)


@pytest.fixture(scope="module", params=["taew2_1", "lighttaew2_1"])
def tiny_vae(streaming, tmp_path_factory, request):
    """A random-weight taew2_1 (fp16 file: HunyuanVideo latent scaling) or lighttaew2_1 (bf16: none), loaded as
    VAE Loader loads it."""
    import comfy.sd
    import comfy.utils
    from comfy.taesd.taehv import TAEHV

    light = request.param == "lighttaew2_1"
    path = make_tiny_taehv(tmp_path_factory.mktemp("taehv") / f"tiny_{request.param}.safetensors", seed=2, light=light)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))
    assert isinstance(vae.first_stage_model, TAEHV) and (vae.first_stage_model.latent_format is None) == light
    return vae


def _chunks(latents: torch.Tensor) -> list[torch.Tensor]:
    """The first latent frame alone, then blocks of 3 (as the sampler hands them over)."""
    return [latents[:, :, :1]] + [latents[:, :, i:i + 3] for i in range(1, latents.shape[2], 3)]


def test_tiny_decoder_block_by_block_equals_one_whole_decode(streaming, tiny_vae):
    latents = _latents(1 + 3 * 4)
    whole = tiny_vae.decode(latents)[0]
    decoder = streaming.StreamingDecoder(tiny_vae)
    assert isinstance(decoder, streaming.TinyStreamingDecoder)
    chunks = _chunks(latents)
    parts = [decoder.decode(c) for c in chunks]
    assert [p.shape[0] for p in parts] == [1, 12, 12, 12, 12]
    streamed = torch.cat(parts)
    assert streamed.shape == whole.shape == (1 + 4 * 12, H, W, 3) and streamed.dtype == torch.float32
    assert torch.equal(streamed, whole) and whole.std() > 0.01  # bit for bit, and not a flat video
    # a fresh decoder on a later chunk is not that chunk of the video: the MemBlocks' memory matters, and a
    # video's first chunk drops TAEHV's 3 leading frames
    alone = streaming.StreamingDecoder(tiny_vae).decode(chunks[2])
    assert alone.shape[0] == 9 and (alone - parts[2][-9:]).abs().max() > 1e-3


def test_tiny_decoder_is_all_or_nothing(streaming, tiny_vae):
    """A decode that fails midway (after some MemBlocks took the chunk's frames) leaves the state as before it:
    decoding the same chunk again continues the video as if nothing had happened."""
    from comfy.taesd.taehv import MemBlock

    latents = _latents(1 + 3 * 3, seed=7)
    whole = tiny_vae.decode(latents)[0]
    decoder = streaming.StreamingDecoder(tiny_vae)
    chunks = _chunks(latents)
    parts = [decoder.decode(chunks[0]), decoder.decode(chunks[1])]
    before = list(decoder.memory), decoder.to_trim
    last = [b for b in decoder.blocks if isinstance(b, MemBlock)][-1]
    calls = []

    def fail_on_the_sixth_frame(module, args):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("out of memory (simulated)")

    hook = last.register_forward_pre_hook(fail_on_the_sixth_frame)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            decoder.decode(chunks[2])
    finally:
        hook.remove()
    assert len(calls) == 6 and decoder.to_trim == before[1] == 0
    assert all(a is b for a, b in zip(decoder.memory, before[0], strict=True))
    parts += [decoder.decode(c) for c in chunks[2:]]
    assert torch.equal(torch.cat(parts), whole)


def _frames_in(path) -> tuple[int, float]:
    frames, _, _, fps = video_info(path)
    return frames, fps


def test_a_failing_stream_leaves_a_playable_file(streaming, vae, tmp_path):
    """The decoder fails on the third block: close() re-raises it, and the file holds the two blocks before it."""
    decoder = streaming.StreamingDecoder(vae)
    real = decoder.decode
    calls = []

    def failing(latents):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory (simulated)")
        return real(latents)

    decoder.decode = failing
    writer = streaming.Mp4Writer(tmp_path / "broken.mp4", W, H)
    stream = streaming.BlockStream(decoder, writer)
    stream.put(_latents(1))
    stream.put(_latents(3, seed=1))
    stream.put(_latents(3, seed=2))
    with pytest.raises(RuntimeError, match="simulated"):
        try:  # the node's pattern: sample into the stream, close it in any case
            for i in range(5):
                stream.put(_latents(3, seed=3 + i))  # may raise already: the worker's error surfaces here
        finally:
            stream.close()
    stream.close()  # closing twice is harmless
    assert _frames_in(tmp_path / "broken.mp4") == (1 + 12, 16.0)


@pytest.mark.parametrize("alloc_conf", [None, "expandable_segments:True"])
def test_a_decode_out_of_memory_says_what_to_change(streaming, vae, tmp_path, monkeypatch, alloc_conf):
    """The VAE running out of device memory on the worker: close() raises an OutOfMemoryError (so ComfyUI still
    reads it as one) naming what to change, the blocks before it in the file; expandable segments among them
    where the allocator runs without."""
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        monkeypatch.delenv(name, raising=False)
    if alloc_conf:
        monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", alloc_conf)
    decoder = streaming.StreamingDecoder(vae)
    real, calls = decoder.decode, []

    def short_of_memory(latents):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.2 GiB")
        return real(latents)

    decoder.decode = short_of_memory
    stream = streaming.BlockStream(decoder, streaming.Mp4Writer(tmp_path / "oom.mp4", W, H))
    stream.put(_latents(1))
    stream.put(_latents(3, seed=1))
    with pytest.raises(torch.OutOfMemoryError, match="kv_cache fp8.*fp8_e4m3fn.*taew2_1.*Tried to allocate 1.2 GiB"
                       ) as raised:
        stream.close()
    assert ("expandable_segments:True and --disable-cuda-malloc" in str(raised.value)) == (alloc_conf is None)
    assert _frames_in(tmp_path / "oom.mp4") == (1, 16.0)


def _cancel_during_decode(streaming, vae, tmp_path, cancelled_call: int):
    """A stream whose decoder sees ComfyUI's Cancel flag go up during its `cancelled_call`-th decode."""
    import comfy.model_management as mm

    import threading

    decoder = streaming.StreamingDecoder(vae)
    real, calls = decoder.decode, []
    taken = threading.Event()  # the VAE's ops took the flag (a sampler polling earlier would take it first)

    def cancel_then_decode(latents):
        calls.append(1)
        if len(calls) == cancelled_call:
            mm.interrupt_current_processing(True)  # what /interrupt does, seen first by the VAE's ops
        try:
            return real(latents)
        except mm.InterruptProcessingException:
            taken.set()
            raise

    decoder.decode = cancel_then_decode
    written = []
    writer = streaming.Mp4Writer(tmp_path / "cancelled.mp4", W, H)
    real_write = writer.write
    writer.write = lambda frames: (written.append(frames), real_write(frames))
    return streaming.BlockStream(decoder, writer), calls, written, taken


def test_cancel_seen_by_the_decoder_stops_the_sampler_and_keeps_every_block(streaming, vae, tmp_path):
    """The worker's VAE ops take ComfyUI's Cancel flag first: the worker hands it back (the sampler stops at
    its next step), then decodes the interrupted block again from the unchanged cache; the file holds every
    block put, frames equal to one whole decode."""
    import comfy.model_management as mm

    blocks = [_latents(1)] + [_latents(3, seed=s) for s in (1, 2)]
    stream, calls, written, taken = _cancel_during_decode(streaming, vae, tmp_path, cancelled_call=2)
    stream.queue.maxsize = len(blocks)  # no put waits (and polls the flag) on a full queue
    with pytest.raises(mm.InterruptProcessingException):
        try:
            for block in blocks:
                stream.put(block)
            assert taken.wait(60)  # here the worker sees the Cancel first (in ComfyUI either thread may)
            for _ in range(1000):  # the sampler's per-step check, until the cancel reaches it
                mm.throw_exception_if_processing_interrupted()
                time.sleep(0.01)
        finally:
            stream.close()
    assert not mm.processing_interrupted() and len(calls) == 4  # the second block was decoded twice
    whole = vae.decode(torch.cat(blocks, dim=2))[0].float()
    assert torch.equal(torch.cat(written), whole)
    assert _frames_in(tmp_path / "cancelled.mp4") == (1 + 4 * 6, 16.0)


def test_cancel_while_the_sampler_waits_on_a_full_queue_does_not_deadlock(streaming, vae, tmp_path):
    """The decoder takes the Cancel and hands it back while the sampler is blocked on a full queue: the sampler
    must still see it (a blocking put would wait for the worker, the worker for the sampler)."""
    import threading

    import comfy.model_management as mm

    stream, calls, _, _ = _cancel_during_decode(streaming, vae, tmp_path, cancelled_call=1)
    stream.queue.maxsize = 1
    outcome = []

    def sampler():
        try:
            try:
                for i in range(6):  # never drained while the worker waits: the queue is full after one
                    stream.put(_latents(1) if i == 0 else _latents(3, seed=i))
            finally:
                stream.close()
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "deadlock: the sampler never saw the Cancel the worker handed back"
    assert len(outcome) == 1 and isinstance(outcome[0], mm.InterruptProcessingException)
    assert not mm.processing_interrupted() and _frames_in(tmp_path / "cancelled.mp4")[0] >= 1


def test_cancel_after_the_last_step_still_stops_the_prompt(streaming, vae, tmp_path):
    """Cancel during the last block's decode, when the sampler has finished: close() writes everything, clears
    the flag and raises the cancel itself."""
    import comfy.model_management as mm

    stream, calls, written, _ = _cancel_during_decode(streaming, vae, tmp_path, cancelled_call=3)
    for block in [_latents(1)] + [_latents(3, seed=s) for s in (1, 2)]:
        stream.put(block)
    with pytest.raises(mm.InterruptProcessingException):
        stream.close()
    assert not mm.processing_interrupted() and len(calls) == 4
    assert _frames_in(tmp_path / "cancelled.mp4") == (1 + 4 * 6, 16.0)


def test_memory_is_flat_over_many_blocks(streaming, vae, tmp_path):
    """42 blocks decoded and written: after the first few, no tensor memory is left behind per block. At 32x32,
    not 64x48 (a quarter of the decode's time): a tensor left behind per block shows at any size, every byte counted."""
    size = 32
    latents = [torch.randn(1, 16, n, *latent_size(size, size), generator=torch.Generator().manual_seed(seed))
               for n, seed in ((1, 0), (3, 5))]
    decoder = streaming.StreamingDecoder(vae)
    writer = streaming.Mp4Writer(tmp_path / "long.mp4", size, size)
    samples = []
    first, block = latents
    writer.write(decoder.decode(first))
    with LiveCpuTensors() as live:
        for _ in range(42):
            writer.write(decoder.decode(block))
            samples.append(live.bytes())
    writer.close()
    assert max(samples[3:]) == min(samples[3:]), samples
    assert video_info(tmp_path / "long.mp4")[:3] == (1 + 42 * 12, size, size)


# -------------------------------------------------------------------------------------------------
# End to end: CausVid Stream to Video in a real ComfyUI


def _stream_prompt(prefix: str = "video/stream_test", **sampler) -> dict:
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=21)
    (sampler_id,) = eg.find_nodes(prompt, "CausVidSampler")
    (vae_id,) = eg.find_nodes(prompt, "VAELoader")
    node = prompt[sampler_id]
    for nid in eg.find_nodes(prompt, "VAEDecode") + eg.find_nodes(prompt, "CreateVideo") + \
            eg.find_nodes(prompt, "SaveVideo"):
        del prompt[nid]
    node["class_type"] = "CausVidStreamToVideo"
    node["inputs"].update(vae=[vae_id, 0], filename_prefix=prefix, **sampler)
    return prompt, sampler_id


def test_stream_to_video_writes_the_whole_video(comfy_server, standins):
    """A sink video past its window, 2 s (9 latent frames, 33 video frames), written while it samples; the
    node returns it like Save Video (in the history) and the frames equal the sampler + VAE Decode path."""
    prompt, node_id = _stream_prompt(cache="sink", window=6, sink_frames=3, seconds=2.0, seed=3)
    result = comfy_server.run(prompt, timeout=120)
    assert result.status == "success", result.describe() + comfy_server.log_tail(3000)
    (path,) = comfy_server.output_paths(result, node_id=node_id)
    assert path.suffix == ".mp4" and _frames_in(path) == (33, 16.0)
    assert len([p for p in result.of_type("progress") if p["node"] == node_id]) == 3 * 3



def test_stream_to_video_writes_rolling_forcing_blocks_as_they_leave_its_window(comfy_server, standins):
    """Rolling Forcing samples 5 blocks together and a block is final when it leaves the window: 4 s (18 latent
    frames, 6 blocks) streamed whole, the file equal in length to the video, progress after every window."""
    prompt, node_id = _stream_prompt("video/stream_rolling_forcing", seconds=4.0, seed=3)
    prompt[node_id]["inputs"].update(preset="Rolling Forcing 1.3B", cache="preset default")
    result = comfy_server.run(prompt, timeout=180)
    assert result.status == "success", result.describe() + comfy_server.log_tail(3000)
    (path,) = comfy_server.output_paths(result, node_id=node_id)
    assert _frames_in(path) == (1 + 4 * 17, 16.0)  # 18 latent frames -> 69 video frames
    assert len([p for p in result.of_type("progress") if p["node"] == node_id]) == 6 + 5 - 1


def test_stream_to_video_takes_a_tiny_decoder(comfy_server, standins):
    """CausVid Stream to Video with a tiny taew2_1 in models/vae (VAE Loader): the same 2 s video, 33 frames."""
    name = "tiny_taew2_1.safetensors"
    make_tiny_taehv(comfy_server.models_dir / "vae" / name, seed=0)
    prompt, node_id = _stream_prompt("video/stream_taehv", cache="sink", window=6, sink_frames=3, seconds=2.0, seed=3)
    (vae_id,) = eg.find_nodes(prompt, "VAELoader")
    prompt[vae_id]["inputs"]["vae_name"] = name
    result = comfy_server.run(prompt, timeout=120)
    assert result.status == "success", result.describe() + comfy_server.log_tail(3000)
    (path,) = comfy_server.output_paths(result, node_id=node_id)
    assert path.name.startswith("stream_taehv") and _frames_in(path) == (33, 16.0)
    # the recompute policy feeds re-encoded frames back into the DiT: only the full Wan VAE, as Krea's own code
    krea, _ = _stream_prompt("video/stream_taehv_krea", seconds=2.0, seed=3)
    krea[vae_id]["inputs"]["vae_name"] = name
    krea[node_id]["inputs"].update(preset="Krea Realtime 14B", cache="preset default")
    failed = comfy_server.run(krea, timeout=120)
    assert failed.status == "error" and "not a tiny decoder" in failed.error["exception_message"], failed.describe()


def test_interrupted_stream_leaves_a_playable_file(comfy_server, standins):
    prompt, node_id = _stream_prompt("video/interrupted", cache="rolling", window=6, seconds=6.0, seed=4)  # 8 blocks
    seen = []

    def interrupt_after_three_blocks(mtype, data, server):
        if mtype == "progress" and data.get("node") == node_id:
            seen.append(1)
            if len(seen) == 3 * 3 + 1:
                assert server.interrupt() == 200

    result = comfy_server.run(prompt, timeout=120, on_message=interrupt_after_three_blocks)
    assert result.status == "interrupted", result.describe()
    (path,) = (comfy_server.base_dir / "output" / "video").glob("interrupted_*.mp4")
    frames, fps = _frames_in(path)
    # stopped in the 4th block: the 3 blocks finished before (9 latent frames) are in the file
    assert fps == 16.0 and frames in (1 + 4 * 8, 1 + 4 * 11), frames


def test_stream_benchmark_smoke(tmp_path):
    """bench/stream.py (the GPU figures' script) on the CPU with tiny models: it writes and reports."""
    import json
    import subprocess

    from tools.comfy_server import COMFY_DIR

    out = tmp_path / "stream.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "stream.py"), "--comfyui", str(COMFY_DIR),
                           "--tiny", "--device", "cpu", "--seconds", "1", "--out", str(tmp_path), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["written_frames"] == 21 and report["first_frame_s"] > 0 and report["marks"]
    assert _frames_in(tmp_path / "stream.mp4") == (21, 16.0)


def test_recompute_policy_decodes_once_for_its_context_and_the_file(streaming, vae, tmp_path):
    """Krea's recompute policy decodes every block on the sampling thread anyway: the stream writes those frames
    (`put_frames`) instead of decoding again, and they are one whole decode's. A Cancel that the VAE sees during
    such a decode still delivers that block's frames to the file, then stops sampling."""
    import types

    import comfy.model_management as mm

    sampler = pack_module("nodes.sampler")
    identity = types.SimpleNamespace(process_latent_out=lambda x: x, process_latent_in=lambda x: x)
    model = types.SimpleNamespace(model=identity, load_device=torch.device("cpu"))
    writer = streaming.Mp4Writer(tmp_path / "krea.mp4", W, H)
    written = []
    real_write = writer.write
    writer.write = lambda frames: (written.append(frames), real_write(frames))
    stream = streaming.BlockStream(streaming.StreamingDecoder(vae), writer)
    reencoder = sampler.vae_reencoder(vae, model, 3, on_frames=stream.put_frames)
    blocks = [_latents(3, seed=s) for s in range(3)]
    try:
        reencoder.add(blocks[0])
        reencoder.add(blocks[1])
        mm.interrupt_current_processing(True)  # what /interrupt does, seen first by the VAE's ops
        with pytest.raises(mm.InterruptProcessingException):
            reencoder.add(blocks[2])
    finally:
        stream.close()
    assert not mm.processing_interrupted() and reencoder.blocks_seen == 2
    assert _frames_in(tmp_path / "krea.mp4") == (9 + 12 + 12, 16.0)
    whole = vae.decode(torch.cat(blocks, dim=2))[0].float()
    assert torch.equal(torch.cat(written), whole)
    assert torch.equal(torch.cat(list(reencoder.frames)), whole[9 + 12 - 9:9 + 12])  # the last 9 of two blocks
    assert reencoder.encode_oldest().shape == (1, 16, 1, h, w)
