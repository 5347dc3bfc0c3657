"""CPU tests of bench/wan_vae_fast.py's fast decoder: the same function as bench/wan_vae.py's reference decoder.

Tiny random weights (base width 8), float32, 5 latent frames of 4×6 (32×48 pixels, 17 frames). The
plain `Decoder` decodes one latent frame at a time; `FastDecoder` decodes chunks of several frames with
padding inside the convs, channels-last tensors and deferred biases, and `ThreadedDecode` streams blocks
through a worker thread. The compiled kernels need CUDA and are not exercised here (bench.py's GPU run
reports their error against the plain decoder).
"""

from __future__ import annotations

import pytest
import torch

from bench import wan_vae
from bench.wan_vae_fast import FAST_LADDER, FastDecoder, FastOptions, chunk_plan
from bench.wan_vae_stream import ThreadedDecode

TOL = 1e-5


@pytest.fixture(scope="module")
def setup() -> tuple[wan_vae.Decoder, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    decoder = wan_vae.Decoder(dim=8).eval().requires_grad_(False)
    latents = torch.randn(1, 16, 5, 4, 6, generator=torch.Generator().manual_seed(1))
    video = decoder.decode(latents)
    assert video.shape == (1, 3, 17, 32, 48)
    assert (video.abs() < 1).float().mean() > 0.9  # not saturated: the comparisons below see the values
    return decoder, latents, video


def test_chunk_plan():
    assert chunk_plan(21, 3) == [1, 2, 3, 3, 3, 3, 3, 3]  # the sampler's blocks: [0] + [1, 2], then 3s
    assert chunk_plan(3, 3) == [1, 2] and chunk_plan(3, 3, started=True) == [3]
    assert chunk_plan(5, 1) == [1] * 5
    assert chunk_plan(5, 4) == [1, 3, 1]


@pytest.mark.parametrize("name,options", [(n, o) for n, _, o in FAST_LADDER]
                         + [("8-frame chunks", FastOptions(chunk_frames=8))])
def test_fast_decoder_matches_plain(setup, name, options):
    decoder, latents, video = setup
    fast = FastDecoder(decoder, options)
    out = fast.decode(latents)
    assert out.shape == video.shape
    assert wan_vae.video_rel_l2(out, video) < TOL, name
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(fast.net.parameters(), decoder.parameters()))


def test_threaded_streaming_matches_plain(setup):
    decoder, latents, video = setup
    fast = FastDecoder(decoder)
    for _ in range(2):  # the second video reuses the decoder's worker thread with a fresh stream state
        decode = ThreadedDecode(fast, "cpu", threaded=True)
        decode.push(latents[:, :, :3])  # chunks [0], [1, 2]
        decode.push(latents[:, :, 3:])  # [3, 4]
        out = decode.finish()
        assert out.shape == video.shape and len(decode.done) == 2
        assert wan_vae.video_rel_l2(out, video) < TOL
    assert len(fast._workers) == 1
    synchronous = ThreadedDecode(fast, "cpu")  # off CUDA the default decodes in push
    for i in range(0, 5, 2):
        synchronous.push(latents[:, :, i:i + 2])
    assert synchronous.worker is None and wan_vae.video_rel_l2(synchronous.finish(), video) < TOL


def test_first_latent_frame_must_be_a_chunk_of_its_own(setup):
    decoder, latents, video = setup
    fast = FastDecoder(decoder)
    same = torch.cat(fast.decode_chunks(latents, [1, 4], fast.start()), 2)
    assert wan_vae.video_rel_l2(same, video) < TOL  # later chunk lengths do not matter
    wrong = torch.cat(fast.decode_chunks(latents, [2, 3], fast.start()), 2)
    # the temporal up-samplers skip their time conv on the stream's whole first chunk
    assert wrong.shape != video.shape or wan_vae.video_rel_l2(wrong, video) > 1e-2
    assert wrong.shape[2] == 2 + 4 * 3


def test_worker_error_is_raised_in_finish(setup):
    decoder, latents, video = setup
    fast = FastDecoder(decoder)
    decode = ThreadedDecode(fast, "cpu", threaded=True)
    decode.push(latents[:, :, :3])
    decode.push(torch.zeros(1, 7, 2, 4, 6))  # 7 latent channels: fails on the worker, not in push
    decode.push(latents[:, :, 3:])  # skipped after the error
    with pytest.raises(RuntimeError):
        decode.finish()
    again = ThreadedDecode(fast, "cpu", threaded=True)  # the worker thread survives
    again.push(latents)
    assert wan_vae.video_rel_l2(again.finish(), video) < TOL
