"""Live prompts (issue: steer a streaming video while it is made): a prompt submitted while the video samples drives
the blocks from the next block start on, and the timeline it records, queued, gives the same video bit for bit."""

from __future__ import annotations

import threading

import pytest
import torch

from causal import SCHEDULES, LivePrompts, Noise, Output, PromptChange, Schedule, Video, generate
from causal.cache_policy import recompute, sink
from tools.tiny import TINY, latent_size, prompt, tiny_model

H, W = 32, 48
FAST = Schedule("two steps", (1000, 500), shift=8.0, warp=False)


@pytest.fixture(scope="module")
def model():
    return tiny_model(torch.bfloat16)


def _noise(frames: int) -> torch.Tensor:
    h, w = latent_size(H, W)
    return torch.randn(1, frames, 16, h, w, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)


def _video(model, context, policy, progress=None):
    return generate(model, context, Video(H, W, total_frames=15), FAST, policy, noise=Noise(seed=3, initial=_noise(15)),
                    output=Output(progress=progress)).latents


@pytest.mark.parametrize("policy", [sink(1, 6), recompute(3, keep_first_frame=True)], ids=["sink", "recompute"])
def test_a_live_prompt_turns_the_video_at_the_next_block_as_its_recorded_timeline_does(model, policy):
    """Prompt b submitted during block 1 (twice: the last one counts) drives blocks 2.. (from latent frame 6); prompt
    c submitted during block 3 drives block 4. The video equals the recorded timeline queued, bit for bit, and
    differs from the video without the switches."""
    a, b_first, b, c = (prompt(seed=s) for s in (1, 2, 3, 4))
    live = LivePrompts(a, max_tokens=TINY.text_len)

    def progress(p):
        if p.block == 1:
            live.submit(b_first if p.step == 0 else b)
        if p.block == 3 and p.step == p.steps - 1:
            live.submit(c)

    got = _video(model, live, policy, progress)
    assert [(change.frame, change.context) for change in live] == [(0, a), (6, b), (12, c)]
    queued = _video(model, list(live), policy)
    assert torch.equal(got, queued)
    assert not torch.equal(got, _video(model, a, policy))


def test_a_prompt_from_another_thread_waits_for_the_next_block_start(model):
    """Submitted from another thread while block 0 samples, it is recorded at block 1's first frame."""
    a, b = prompt(seed=1), prompt(seed=2)
    live = LivePrompts(a)
    block0 = threading.Event()
    sent = threading.Event()

    def progress(p):
        if p.block == 0 and p.step == 0:
            block0.set()
            assert sent.wait(10)

    def sender():
        block0.wait(10)
        live.submit(b)
        sent.set()

    thread = threading.Thread(target=sender)
    thread.start()
    _video(model, live, sink(1, 6), progress)
    thread.join()
    assert [change.frame for change in live] == [0, 3]


def test_bad_live_prompts_are_refused_and_change_nothing():
    a = prompt(seed=1)
    live = LivePrompts(a, max_tokens=TINY.text_len)
    with pytest.raises(ValueError, match="batch size and width"):
        live.submit(torch.zeros(1, 4, TINY.text_dim + 1))
    with pytest.raises(ValueError, match="batch size and width"):
        live.submit(torch.zeros(2, 4, TINY.text_dim))
    with pytest.raises(ValueError, match="at most"):
        live.submit(torch.zeros(1, TINY.text_len + 1, TINY.text_dim))
    with pytest.raises(ValueError, match="NaN or Inf"):
        live.submit(torch.full((1, 4, TINY.text_dim), float("nan")))
    with pytest.raises(ValueError, match=r"\[batch, tokens, width\]"):
        live.submit(torch.zeros(4, TINY.text_dim))
    assert live.change_at(3) is live[0] and len(live) == 1
    assert live.change_at(3).context is a


def test_a_prompt_is_recorded_once_and_only_at_a_later_frame():
    """A change is taken at a block start after the last one; asking again for the same frame gives the same."""
    a, b = prompt(seed=1), prompt(seed=2)
    live = LivePrompts(a)
    live.submit(b)
    assert live.change_at(0).context is a  # frame 0 is the first prompt's: b waits for a later block start
    assert live.change_at(3) == PromptChange(3, b) and live.change_at(3) == PromptChange(3, b)
    assert len(live) == 2


def test_seconds_at_is_the_inverse_of_latent_frame_at():
    from causal.prompts import latent_frame_at, seconds_at

    assert [latent_frame_at(seconds_at(f)) for f in range(0, 5000, 7)] == list(range(0, 5000, 7))
    assert seconds_at(0) == 0.0 and seconds_at(1) == 1 / 16 and seconds_at(3) == 9 / 16


def test_rolling_forcing_refuses_live_prompts(model):
    with pytest.raises(ValueError, match="live prompts"):
        generate(model, LivePrompts(prompt(seed=1)), Video(H, W, total_frames=15), SCHEDULES["Rolling Forcing 1.3B"],
                 noise=Noise(seed=0))
