"""The block sampler: the per-block procedure of docs/algorithm.md §5.1 / §4.7 number for number, the noise
contract, fragments and their cache/RoPE bookkeeping, prefill, and input validation."""

from __future__ import annotations

import pytest
import torch

import causal
import causal.cache_policy
from causal import SCHEDULES, Compute, Noise, Output, Schedule, Video, fragment_lengths, generate, sample_video
from causal.kv_cache import KVCache
from tools.tiny import Draws, TINY, latent_size, prompt, tiny_model

H, W = 32, 48  # pixels -> latents 4×6, 2×3 = 6 tokens per frame
h, w = latent_size(H, W)
FAST = Schedule("two steps", (1000, 500), shift=8.0, warp=False)


@pytest.fixture(scope="module")
def model():
    return tiny_model(torch.bfloat16)


def _noise(frames, seed=0, batch=1, dtype=torch.bfloat16):
    return torch.randn(batch, frames, 16, h, w, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _oracle(model, context, noise, eps, schedule, frames):
    """docs/algorithm.md §5.1 written out plainly for one fragment: per block, K steps with x0 = bf16(x - sigmav) in float64
    and x = bf16((1-sigma')x0 + sigma'eps) in float32, then the clean pass at t = 0. LightX2V: float32 x0."""
    text = model.text_kv(context, torch.bfloat16)
    cache = KVCache(TINY.num_layers, 1, frames * 6, TINY.num_heads, 128, dtype=torch.bfloat16, device="cpu")
    draws = iter(eps)
    out = []
    for start in range(0, frames, 3):
        x = noise[:, start:start + 3].permute(0, 2, 1, 3, 4).to(torch.bfloat16)  # [B, C, F, h, w]
        for k, (tau, sigma) in enumerate(zip(schedule.timesteps, schedule.sigmas)):
            v = model(x, torch.full((1, 3), tau, dtype=torch.float64), text, cache=cache, cache_frame=start,
                      rope_frame=start)
            if schedule.lightx2v_arithmetic:
                x0 = x.float() - torch.tensor(sigma, dtype=torch.float32) * v.float()
            else:
                x0 = (x.double() - torch.tensor(sigma, dtype=torch.float64) * v.double()).to(torch.bfloat16)
            if k + 1 < schedule.num_steps:
                s = torch.full((1, 1, 1, 1, 1), schedule.sigmas[k + 1], dtype=torch.float32)
                e = next(draws).view(1, 3, 16, h, w).permute(0, 2, 1, 3, 4)
                x = ((1 - s) * x0 + s * e).to(torch.bfloat16)
        x0 = x0.to(torch.bfloat16)
        if schedule.clean_pass:
            model(x0, torch.zeros(1, 3, dtype=torch.float64), text, cache=cache, cache_frame=start, rope_frame=start)
        out.append(x0)
    return torch.cat(out, dim=2)


@pytest.mark.parametrize("name", ["CausVid 1.3B", "LightX2V CausVid 14B"])
def test_matches_the_reference_procedure_bit_for_bit(model, name):
    schedule = SCHEDULES[name].with_steps(SCHEDULES[name].step_list[:3])
    noise = _noise(6, dtype=torch.float32 if schedule.lightx2v_arithmetic else torch.bfloat16)
    draws = Draws(dtype=noise.dtype)
    context = prompt()
    got = sample_video(model, context, Video(H, W, num_frames=6), schedule, noise=Noise(initial=noise, renoise=draws))
    assert draws.shapes == [(3, 16, h, w)] * 4  # 2 blocks × (3 - 1) re-noise draws, block by block
    expected = _oracle(model, context, noise, draws.tensors, schedule, 6)
    assert got.dtype == torch.bfloat16 and got.shape == (1, 16, 6, h, w)
    assert torch.equal(got, expected)


def test_clean_pass_changes_what_later_blocks_see(model):
    with_pass = SCHEDULES["CausVid 1.3B"]
    without = Schedule("no clean pass", with_pass.step_list, shift=8.0, warp=False, clean_pass=False)
    video, noise = Video(H, W, num_frames=6), _noise(6)
    a = sample_video(model, prompt(), video, with_pass, noise=Noise(initial=noise, renoise=Draws()))
    b = sample_video(model, prompt(), video, without, noise=Noise(initial=noise, renoise=Draws()))
    assert torch.equal(a[:, :, :3], b[:, :, :3]) and not torch.equal(a[:, :, 3:], b[:, :, 3:])


def test_seeds(model):
    video = Video(H, W, num_frames=6)
    a = sample_video(model, prompt(), video, FAST, noise=Noise(seed=7))
    assert torch.equal(a, sample_video(model, prompt(), video, FAST, noise=Noise(seed=7)))
    assert not torch.equal(a, sample_video(model, prompt(), video, FAST, noise=Noise(seed=8)))


def test_seed_draw_order_is_the_contract(model):
    """Seeded sampling = initial noise [B, F, 16, h, w] drawn first, then [B·3, 16, h, w] per re-noise."""
    g = torch.Generator().manual_seed(11)
    noise = torch.randn(1, 6, 16, h, w, generator=g, dtype=torch.bfloat16)
    eps = lambda shape: torch.randn(shape, generator=g, dtype=torch.bfloat16)  # noqa: E731
    injected = sample_video(model, prompt(), Video(H, W, num_frames=6), FAST, noise=Noise(initial=noise, renoise=eps))
    seeded = sample_video(model, prompt(), Video(H, W, num_frames=6), FAST, noise=Noise(seed=11))
    assert torch.equal(injected, seeded)


def test_injected_noise_is_used_verbatim(model):
    one_step = Schedule("one step", (1000,), shift=8.0, warp=False)
    noise = _noise(3, seed=3)
    out = sample_video(model, prompt(), Video(H, W, num_frames=3), one_step, noise=Noise(seed=1, initial=noise))
    text = model.text_kv(prompt(), torch.bfloat16)
    cache = KVCache(2, 1, 18, 2, 128, dtype=torch.bfloat16, device="cpu")
    x = noise.permute(0, 2, 1, 3, 4)
    v = model(x, torch.full((1, 3), 1000.0, dtype=torch.float64), text, cache=cache)
    assert torch.equal(out, (x.double() - v.double()).to(torch.bfloat16))
    assert torch.equal(out, sample_video(model, prompt(), Video(H, W, num_frames=3), one_step,
                                         noise=Noise(seed=2, initial=noise)))


class Recorder:
    def __init__(self, model):
        self.model, self.calls = model, []

    def __enter__(self):
        original = self.model.forward

        def forward(x, timestep, text, **kw):
            self.calls.append((kw["cache_frame"], kw["rope_frame"], x.shape[2], float(timestep[0, 0]), x.clone()))
            return original(x, timestep, text, **kw)

        self.model.forward = forward
        return self

    def __exit__(self, *exc):
        del self.model.forward


def test_fragment_bookkeeping(model):
    assert fragment_lengths(21, 3) == [21, 18, 18] and sum(fragment_lengths(21, 4)) == 21 + 18 * 3
    with Recorder(model) as rec:
        result = generate(model, [prompt(seed=1), prompt(seed=2), prompt(seed=3)],
                          Video(H, W, num_frames=9, num_fragments=3), FAST, noise=Noise(seed=0))
    assert result.latents.shape == (1, 16, 9 + 6 + 6, h, w)
    slots = [(c[0], c[1], c[3]) for c in rec.calls]
    block = lambda s: [(s, s, 1000.0), (s, s, 1000.0 * 0 + 500.0), (s, s, 0.0)]  # noqa: E731 two steps + clean pass
    fragment0 = block(0) + block(3) + block(6)
    later = [(0, 0, 0.0)] + block(3) + block(6)  # re-cache of the last block at slot 0, RoPE restarts
    assert slots == fragment0 + later + later
    # the re-cache input is the previous fragment's clean last block
    recache_inputs = [c[4] for c in rec.calls if c[0] == 0 and c[3] == 0.0 and c is not rec.calls[2]]
    assert torch.equal(recache_inputs[0], result.latents[:, :, 6:9])
    assert torch.equal(recache_inputs[1], result.latents[:, :, 12:15])
    assert torch.equal(result.last_block, result.latents[:, :, -3:])


def test_chained_calls_equal_one_multi_fragment_call(model):
    whole = generate(model, prompt(), Video(H, W, num_frames=9, num_fragments=2), FAST,
                     noise=Noise(generator=torch.Generator().manual_seed(5)))
    g = torch.Generator().manual_seed(5)
    first = generate(model, prompt(), Video(H, W, num_frames=9), FAST, noise=Noise(generator=g))
    second = generate(model, prompt(), Video(H, W, num_frames=9, start_latents=first.last_block), FAST,
                      noise=Noise(generator=g))
    assert second.latents.shape[2] == 6
    assert torch.equal(whole.latents, torch.cat([first.latents, second.latents], dim=2))


def test_start_latents_are_prefilled_at_timestep_zero(model):
    start = _noise(6, seed=9).permute(0, 2, 1, 3, 4)
    with Recorder(model) as rec:
        out = sample_video(model, prompt(), Video(H, W, num_frames=9, start_latents=start), FAST,
                           noise=Noise(seed=0))
    assert out.shape[2] == 3
    assert [(c[0], c[3]) for c in rec.calls[:2]] == [(0, 0.0), (3, 0.0)]
    assert torch.equal(rec.calls[0][4], start[:, :, :3]) and torch.equal(rec.calls[1][4], start[:, :, 3:])
    assert rec.calls[2][0] == 6


def test_progress_reports_every_step_and_can_stop(model):
    seen = []
    sample_video(model, prompt(), Video(H, W, num_frames=6, num_fragments=2), FAST, noise=Noise(seed=0),
                 output=Output(progress=seen.append))
    assert [(p.fragment, p.block, p.step) for p in seen] == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 2, 0),
                                                             (1, 2, 1)]
    assert [p.completed for p in seen] == list(range(1, 7)) and {p.total for p in seen} == {6}
    assert seen[0].denoised.shape == (1, 16, 3, h, w)

    class Stop(Exception):
        pass

    def stop(p):
        raise Stop

    with pytest.raises(Stop):
        sample_video(model, prompt(), Video(H, W, num_frames=6), FAST, noise=Noise(seed=0),
                     output=Output(progress=stop))


def test_batch_of_two_prompts(model):
    ctx = torch.cat([prompt(seed=1), prompt(seed=2)])
    out = sample_video(model, ctx, Video(H, W, num_frames=3), FAST, noise=Noise(seed=0))
    assert out.shape == (2, 16, 3, h, w) and not torch.equal(out[0], out[1])


@pytest.mark.parametrize("kwargs, match", [
    (dict(height=470), "multiples of 16"),
    (dict(width=40), "multiples of 16"),
    (dict(num_frames=10), "whole number"),
    (dict(num_frames=0), "at least one latent frame"),
    (dict(num_fragments=0), "at least 1"),
    (dict(context=torch.zeros(1, 5, 32)), "text width"),
    (dict(context=[prompt(), prompt()]), r"2 prompts for 1 fragment\(s\)"),
    (dict(noise=torch.zeros(1, 5, 16, h, w)), "noise must have shape"),
    (dict(start_latents=torch.zeros(1, 16, 4, h, w)), "leave room for a 3-frame block"),
    (dict(start_latents=torch.zeros(1, 16, 6, h, w)), "leave room for a 3-frame block"),
    (dict(start_latents=torch.zeros(1, 16, 0, h, w)), "no frames"),
    (dict(total_frames=7), "whole number of 3-frame blocks"),
    (lambda: dict(policy=causal.cache_policy.sink(3, 3)), "smaller than the window"),
    (lambda: dict(policy=causal.cache_policy.sink(2, 4)), "whole number of 3-frame blocks"),
    (lambda: dict(policy=causal.cache_policy.rolling(2)), "whole number of 3-frame blocks"),
    (lambda: dict(policy=causal.cache_policy.sink(1, 3)), "leaves no room"),
    (dict(context=[causal.PromptChange(3, prompt())]), "must start at the beginning"),
    (dict(context=[causal.PromptChange(0, prompt()), causal.PromptChange(6, prompt(seed=1))]), "past the end"),
    (dict(context=[causal.PromptChange(0, prompt()), causal.PromptChange(0, prompt(seed=1))]), "move forward"),
    (dict(start_latents=torch.zeros(1, 16, 3, h + 1, w)), "start latents must be"),
    (dict(start_latents=torch.zeros(1, 16, 3, h, w), resume=causal.History(causal.cache_policy.rolling(6))),
     "not start latents and a history to resume"),
    (dict(first_frame=torch.zeros(1, 16, 1, h, w)), "a first frame held in the first block is LongLive 2.0's"),
])
def test_bad_input_raises_clear_value_errors(model, kwargs, match):
    args = dict(context=prompt(), num_frames=6, height=H, width=W)
    with pytest.raises(ValueError, match=match):
        args.update(kwargs() if callable(kwargs) else kwargs)
        context, policy, noise = args.pop("context"), args.pop("policy", None), args.pop("noise", None)
        sample_video(model, context, Video(**args), FAST, policy, noise=Noise(seed=0, initial=noise))


def test_fused_kernels_need_cuda(model):
    with pytest.raises(RuntimeError, match="CUDA"):
        sample_video(model, prompt(), Video(H, W, num_frames=3), FAST, noise=Noise(seed=0),
                     compute=Compute(fused_kernels=True))


def test_cuda_graphs_need_cuda(model):
    from causal import CudaGraphs

    with pytest.raises(ValueError, match="CUDA"):
        CudaGraphs(model, batch=1, height=H, width=W, num_frames=6, device="cpu")


def test_nan_weights_stop_sampling_with_a_message():
    broken = tiny_model(torch.bfloat16)
    with torch.no_grad():
        broken.blocks[1].ffn[2].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="block 0 .* NaN/Inf: the checkpoint may hold NaN/Inf weights"):
        sample_video(broken, prompt(), Video(H, W, num_frames=6), FAST, noise=Noise(seed=0))


@pytest.mark.parametrize("context, match", [
    (torch.full((1, 4, TINY.text_dim), float("nan")), "NaN or Inf"),
    (torch.cat([prompt(), torch.full((1, 1, TINY.text_dim), float("inf"))], dim=1), "NaN or Inf"),
    (torch.zeros(1, 0, TINY.text_dim), "0 tokens"),
])
def test_broken_prompt_embeddings_are_refused(model, context, match):
    with pytest.raises(ValueError, match=match):
        sample_video(model, context, Video(H, W, num_frames=3), FAST, noise=Noise(seed=0))


def test_non_finite_start_latents_are_refused(model):
    start = torch.full((1, 16, 3, h, w), float("nan"))
    with pytest.raises(ValueError, match="start latents contain NaN"):
        sample_video(model, prompt(), Video(H, W, num_frames=9, start_latents=start), FAST, noise=Noise(seed=0))


def test_frame_wise_blocks_and_a_first_block_step_list(model):
    """Causal-Forcing++ frame-wise: one latent frame per block, the first block with its own 4-step list, the
    later ones with 2 steps; every block's clean pass at t = 0 at its own slot and position."""
    schedule = SCHEDULES["Causal-Forcing++ frame-wise 2-step"]
    assert schedule.frames_per_block == 1 and schedule.first_block_steps == (1000, 750, 500, 250)
    assert [round(t, 2) for t, _ in schedule.steps_for(True)] == [1000.0, 937.5, 833.33, 625.0]
    assert [round(t, 2) for t, _ in schedule.steps_for(False)] == [1000.0, 833.33]
    with Recorder(model) as rec:
        seen = []
        out = generate(model, prompt(), Video(H, W, num_frames=4), schedule, noise=Noise(seed=0),
                       output=Output(progress=seen.append))
    assert out.latents.shape == (1, 16, 4, h, w)
    calls = [(c[0], c[1], c[2], round(c[3], 2)) for c in rec.calls]
    first = [(0, 0, 1, t) for t in (1000.0, 937.5, 833.33, 625.0)] + [(0, 0, 1, 0.0)]
    later = lambda s: [(s, s, 1, 1000.0), (s, s, 1, 833.33), (s, s, 1, 0.0)]  # noqa: E731
    assert calls == first + later(1) + later(2) + later(3)
    assert [p.completed for p in seen] == list(range(1, 11)) and {p.total for p in seen} == {10}


def test_a_later_non_finite_block_fails_the_call(model):
    """Only block 0 is checked at once (no host sync per block); a NaN later still fails the whole call."""
    draws = []

    def renoise(shape):
        draws.append(shape)
        value = float("nan") if len(draws) == 2 else 0.0  # the second block's re-noise
        return torch.full(shape, value, dtype=torch.bfloat16)

    with pytest.raises(FloatingPointError, match="a block of the video came out NaN/Inf"):
        sample_video(model, prompt(), Video(H, W, num_frames=6), FAST, noise=Noise(initial=_noise(6), renoise=renoise))


@pytest.mark.parametrize("policy", [causal.cache_policy.fragments(6), causal.cache_policy.sink(3, 6),
                                    causal.cache_policy.recompute(3, keep_first_frame=True)])
def test_a_finished_call_holds_nothing_until_the_garbage_collector_runs(policy):
    """With the garbage collector off, dropping the model and the result frees the model at once: `generate` leaves
    no reference cycle behind (one would keep the model, the text K/V and cached latents on the device until
    some later collection, and make memory figures of the next call jump)."""
    import gc
    import weakref

    model = tiny_model(torch.bfloat16)
    alive = weakref.ref(model)
    gc.collect()
    gc.disable()
    try:
        result = generate(model, prompt(), Video(32, 48, total_frames=9), SCHEDULES["CausVid 1.3B"], policy,
                          noise=Noise(seed=0), output=Output(record=True))
        del model, result
        assert alive() is None
    finally:
        gc.enable()
