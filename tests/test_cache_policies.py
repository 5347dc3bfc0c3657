"""Cache policies for endless video: rolling (CausVid-Plus), sink (LongLive / Self-Forcing), prompt switches
with LongLive's re-cache, starting from an image, positions past Wan's 1024-frame RoPE table, flat memory,
and continuing a video in a later call bit for bit.

The oracles below are plain renditions of the references' bookkeeping (docs/algorithm.md
§3.2-§3.4), written independently of `causal.context`: CausVid-Plus rolls every layer's
tensors with `torch.roll` and zeroes the tail; LongLive keeps global/local end indices, writes into a clone
of each layer's cache, reads the sink plus the window after the write, and commits after the last layer.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import causal
from causal import Compute, Noise, Output, PromptChange, Schedule, Video, generate
from causal.cache_policy import ema_sink, family_policy, fragments, infinity_rope, rolling, sink
from causal.context import ContextWindow
from causal.kv_cache import KVCache
from causal.rope import apply_rope
from tools.memory import LiveCpuTensors
from tools.tiny import Draws, TINY, latent_size, prompt, tiny_model

H, W = 32, 48
h, w = latent_size(H, W)
TPF = 6  # tokens per latent frame at 32x48
FAST = Schedule("two steps", (1000, 500), shift=8.0, warp=False)
ONE = Schedule("one step", (1000,), shift=8.0, warp=False)


@pytest.fixture(scope="module")
def model():
    return tiny_model(torch.bfloat16)


def _noise(frames, seed=0):
    return torch.randn(1, frames, 16, h, w, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def _denoise_block(model, text, cache, x_noise, eps, schedule, cache_frame, rope_frame):
    """docs/algorithm.md §5.1 for one block (steps, re-noise, clean pass) against any cache object."""
    x = x_noise.permute(0, 2, 1, 3, 4)
    for k, (tau, sigma) in enumerate(zip(schedule.timesteps, schedule.sigmas)):
        v = model(x, torch.full((1, 3), tau, dtype=torch.float64), text, cache=cache, cache_frame=cache_frame,
                  rope_frame=rope_frame)
        x0 = (x.double() - torch.tensor(sigma, dtype=torch.float64) * v.double()).to(torch.bfloat16)
        if k + 1 < schedule.num_steps:
            s = torch.full((1, 1, 1, 1, 1), schedule.sigmas[k + 1], dtype=torch.float32)
            e = next(eps).view(1, 3, 16, h, w).permute(0, 2, 1, 3, 4)
            x = ((1 - s) * x0 + s * e).to(torch.bfloat16)
    model(x0, torch.zeros(1, 3, dtype=torch.float64), text, cache=cache, cache_frame=cache_frame,
          rope_frame=rope_frame)
    return x0


def _causvid_plus(model, context, noise, eps, schedule, window):
    """CausVid-Plus (docs/algorithm.md §3.2): kv_start/kv_end/rope_start in tokens; after each block's clean pass, past the
    window, torch.roll every layer's k and v left by one block and zero the vacated tail."""
    text = model.text_kv(context, torch.bfloat16)
    cache = KVCache(TINY.num_layers, 1, window * TPF, TINY.num_heads, 128, dtype=torch.bfloat16, device="cpu")
    kv_start, rope_start, block = 0, 0, 3 * TPF
    draws, out = iter(eps), []
    for b in range(noise.shape[1] // 3):
        kv_end = kv_start + block
        out.append(_denoise_block(model, text, cache, noise[:, 3 * b:3 * b + 3], draws, schedule,
                                  kv_start // TPF, rope_start // TPF))
        kv_start, kv_end, rope_start = kv_start + block, kv_end + block, rope_start + block
        if kv_end > window * TPF:
            for tensors in (cache.keys, cache.values):
                for i, t in enumerate(tensors):
                    rolled = torch.roll(t, -block, dims=1)
                    rolled[:, -block:] = 0
                    tensors[i] = rolled
            kv_start -= block
    return torch.cat(out, dim=2)


class LongLiveCache:
    """LongLive 1.0's self-attention cache (docs/algorithm.md §3.3-§3.4), one object for all layers.
    `store` gets the absolute token start of the call, as LongLive's `current_start`."""

    def __init__(self, window, sink_frames, *, sink_recache=False):
        shape = (1, window * TPF, TINY.num_heads, 128)
        self.k = [torch.zeros(shape, dtype=torch.bfloat16) for _ in range(TINY.num_layers)]
        self.v = [torch.zeros(shape, dtype=torch.bfloat16) for _ in range(TINY.num_layers)]
        self.capacity, self.sink = window * TPF, sink_frames * TPF
        self.global_end = self.local_end = 0
        self.sink_recache = sink_recache
        self.pending = {}

    def store(self, layer, start, k, v):
        n, end, G, L, C, S = k.shape[1], start + k.shape[1], self.global_end, self.local_end, self.capacity, self.sink
        recompute = end <= G and start > 0
        tk, tv = self.k[layer].clone(), self.v[layer].clone()
        if end > G and n + L > C:
            evict = n + L - C
            rolled = L - evict - S
            for t in (tk, tv):
                t[:, S:S + rolled] = t[:, S + evict:S + evict + rolled].clone()
            local_end = L + (end - G) - evict
            local_start = local_end - n
            tk[:, local_start:local_end], tv[:, local_start:local_end] = k, v
        else:
            local_end = L + end - G
            local_start = local_end - n
            write_start = max(local_start, S) if recompute and not self.sink_recache else local_start
            offset = write_start - local_start
            tk[:, write_start:local_end], tv[:, write_start:local_end] = k[:, offset:], v[:, offset:]
        if S > 0:
            keys = torch.cat([tk[:, :S], tk[:, max(S, local_end - (C - S)):local_end]], dim=1)
            values = torch.cat([tv[:, :S], tv[:, max(S, local_end - (C - S)):local_end]], dim=1)
        else:
            keys, values = tk[:, max(0, local_end - C):local_end], tv[:, max(0, local_end - C):local_end]
        self.pending[layer] = (tk, tv)
        if layer == TINY.num_layers - 1:  # `_apply_cache_updates` after all layers
            for i, (a, b) in self.pending.items():
                self.k[i], self.v[i] = a, b
            if not recompute:
                self.global_end, self.local_end = end, local_end
        return keys.transpose(1, 2), values.transpose(1, 2)


def _longlive(model, timeline, noise, eps, schedule, window, sink_frames, *, global_sink=True):
    """LongLive's interactive inference: blocks at absolute positions; at a block whose start reaches the
    next switch frame, `_recache_after_switch` runs one forward over the last min(window, frames) clean
    latents at timestep 0 under the new prompt."""
    cache = LongLiveCache(window, sink_frames, sink_recache=not global_sink)
    changes = list(timeline)
    text = model.text_kv(changes.pop(0).context, torch.bfloat16)
    draws, out = iter(eps), []
    for b in range(noise.shape[1] // 3):
        frame = 3 * b
        if changes and frame >= changes[0].frame:
            text = model.text_kv(changes.pop(0).context, torch.bfloat16)
            if not global_sink:
                for t in cache.k + cache.v:
                    t.zero_()
            n = min(window, frame)
            latents = torch.cat(out, dim=2)[:, :, frame - n:frame]
            model(latents, torch.zeros(1, n, dtype=torch.float64), text, cache=cache, cache_frame=frame - n,
                  rope_frame=frame - n)
            cache.sink_recache = False
        out.append(_denoise_block(model, text, cache, noise[:, frame:frame + 3], draws, schedule, frame, frame))
        if not global_sink:
            cache.sink_recache = True
    return torch.cat(out, dim=2)


def test_rolling_reproduces_causvid_plus_past_the_window(model):
    noise, draws = _noise(18), Draws()
    got = generate(model, prompt(), Video(H, W, total_frames=18), FAST, rolling(6),
                   noise=Noise(initial=noise, renoise=draws)).latents
    expected = _causvid_plus(model, prompt(), noise, draws.tensors, FAST, window=6)
    assert torch.equal(got, expected)
    # and the window mattered: a cache that never evicts (one big fragment) gives other frames past 6
    draws2 = Draws()
    full = generate(model, prompt(), Video(H, W, num_frames=18), FAST,
                    noise=Noise(initial=noise, renoise=draws2)).latents
    assert torch.equal(full[:, :, :6], got[:, :, :6]) and not torch.equal(full[:, :, 9:], got[:, :, 9:])


@pytest.mark.parametrize("sink_frames, window", [(3, 9), (0, 6)])
def test_sink_and_rolling_reproduce_longlive_bookkeeping(model, sink_frames, window):
    noise, draws = _noise(21), Draws()
    policy = sink(sink_frames, window) if sink_frames else rolling(window)
    got = generate(model, prompt(), Video(H, W, total_frames=21), FAST, policy,
                   noise=Noise(initial=noise, renoise=draws)).latents
    expected = _longlive(model, [PromptChange(0, prompt())], noise, draws.tensors, FAST, window, sink_frames)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("global_sink", [True, False])
@pytest.mark.parametrize("switch", [6, 13])
def test_prompt_switch_recaches_like_longlive(model, global_sink, switch):
    """A switch inside the first window (frame 6) rewrites every slot; later (13 -> the block at 15) the sink
    keeps the first prompt's frames unless it is refreshed."""
    timeline = [PromptChange(0, prompt(seed=1)), PromptChange(switch, prompt(seed=2))]
    noise, draws = _noise(24), Draws()
    got = generate(model, timeline, Video(H, W, total_frames=24), FAST, sink(3, 9, refresh_sink=not global_sink),
                   noise=Noise(initial=noise, renoise=draws)).latents
    expected = _longlive(model, timeline, noise, draws.tensors, FAST, 9, 3, global_sink=global_sink)
    assert torch.equal(got, expected)
    draws2 = Draws()
    unswitched = generate(model, timeline[:1], Video(H, W, total_frames=24), FAST, sink(3, 9),
                          noise=Noise(initial=noise, renoise=draws2)).latents
    first_switched_block = (switch + 2) // 3 * 3
    assert torch.equal(got[:, :, :first_switched_block], unswitched[:, :, :first_switched_block])
    assert not torch.equal(got[:, :, first_switched_block:], unswitched[:, :, first_switched_block:])


def _window(model, policy, frames):
    cache = KVCache(TINY.num_layers, 1, policy.window * TPF, TINY.num_heads, 128, dtype=torch.bfloat16, device="cpu")
    window = ContextWindow(model, policy, cache, tokens_per_frame=TPF)
    window.set_prompt(prompt(), model.text_kv(prompt(), torch.bfloat16), recache=False)
    latents = _noise(frames, seed=3).permute(0, 2, 1, 3, 4)
    for i in range(0, frames, 3):
        window.write(latents[:, :, i:i + 3], 0.0)
    return window, cache


def test_sink_slots_are_never_overwritten_by_eviction_or_recache(model):
    window, cache = _window(model, sink(3, 9), 9)
    sink_keys = [k[:, :3 * TPF].clone() for k in cache.keys]
    rest = [k[:, 3 * TPF:].clone() for k in cache.keys]
    for i in range(3):  # three more blocks: each evicts the oldest non-sink block
        window.write(_noise(3, seed=10 + i).permute(0, 2, 1, 3, 4), 0.0)
    assert all(torch.equal(k[:, :3 * TPF], s) for k, s in zip(cache.keys, sink_keys))
    assert window.filled == 9 and window.position == 18
    other = prompt(seed=5)
    window.set_prompt(other, model.text_kv(other, torch.bfloat16), recache=True)
    assert all(torch.equal(k[:, :3 * TPF], s) for k, s in zip(cache.keys, sink_keys))
    assert not any(torch.equal(k[:, 3 * TPF:], r) for k, r in zip(cache.keys, rest))
    assert cache.protected == 0


def test_recache_rewrites_exactly_the_window(model):
    """Rolling: the re-cache is one forward over the cached frames at their own positions and slots."""
    window, cache = _window(model, rolling(6), 12)
    calls = []
    original = window._model_forward

    def spy(x, t, slot, position, offset):
        calls.append((x.shape[2], float(t.max()), slot, position, x.clone()))
        return original(x, t, slot, position, offset)

    window._forward = spy
    other = prompt(seed=5)
    window.set_prompt(other, model.text_kv(other, torch.bfloat16), recache=True)
    assert [(c[0], c[1], c[2], c[3]) for c in calls] == [(6, 0.0, 0, 6)]
    assert torch.equal(calls[0][4], _noise(12, seed=3).permute(0, 2, 1, 3, 4)[:, :, 6:12])


def test_evict_keeps_order_and_matches_a_plain_shift():
    cache = KVCache(1, 1, 12, 1, 4, dtype=torch.float32, device="cpu")
    cache.keys[0].copy_(torch.arange(12.0).view(1, 12, 1, 1).expand(1, 12, 1, 4))
    cache.evict(2, 3, 12)
    assert cache.keys[0][0, :9, 0, 0].tolist() == [0, 1, 5, 6, 7, 8, 9, 10, 11]
    with pytest.raises(ValueError):
        cache.evict(0, 5, 13)


def test_one_image_starts_the_video(model):
    """One start frame is cached alone at slot 0 and RoPE position 0; blocks follow at 1, 4, ..."""
    image = _noise(1, seed=4).permute(0, 2, 1, 3, 4)
    calls = []
    original = model.forward

    def spy(x, timestep, text, **kw):
        calls.append((x.shape[2], kw["cache_frame"], kw["rope_frame"], float(timestep.max())))
        return original(x, timestep, text, **kw)

    model.forward = spy
    try:
        out = generate(model, prompt(), Video(H, W, total_frames=9, start_latents=image), ONE, rolling(6),
                       noise=Noise(seed=0))
    finally:
        del model.forward
    assert out.latents.shape[2] == 9
    assert calls[0] == (1, 0, 0, 0.0)
    blocks = [(c[1], c[2]) for c in calls[1::2]]
    assert blocks == [(1, 1), (3, 4), (3, 7)]  # the window of 6 evicts the image when the third block arrives
    with_image = out.latents
    without = generate(model, prompt(), Video(H, W, total_frames=9), ONE, rolling(6), noise=Noise(seed=0)).latents
    assert not torch.equal(with_image[:, :, :3], without[:, :, :3])


def test_positions_past_the_rope_table_stay_finite_and_deterministic(model):
    video = Video(H, W, total_frames=1038)
    a = generate(model, prompt(), video, ONE, rolling(6), noise=Noise(seed=1)).latents
    b = generate(model, prompt(), video, ONE, rolling(6), noise=Noise(seed=1)).latents
    assert a.shape[2] == 1038 and torch.isfinite(a.float()).all()
    assert torch.equal(a, b)
    assert a[:, :, 1020:].float().std() > 0


@pytest.mark.parametrize("policy", [rolling(6), sink(3, 9)])
def test_memory_is_flat_over_many_blocks(model, policy):
    """Every live CPU tensor counted at each block of a 42-block video whose finished blocks go to the meta device:
    once the window is full, nothing grows."""
    samples = []
    with LiveCpuTensors() as live:
        def measure(p):
            if p.step == 0:
                samples.append(live.bytes())

        generate(model, prompt(), Video(H, W, total_frames=126), ONE, policy, noise=Noise(seed=0),
                 output=Output(device="meta", progress=measure))
    assert len(samples) == 42
    assert max(samples[5:]) == min(samples[5:]), samples


@pytest.mark.parametrize("policy, parts", [
    (fragments(9), (9, 12, 6)),  # fragments continue at a window's end: each window draws its noise at once
    (rolling(6), (9, 15, 6)),
    (sink(3, 9), (9, 15, 6)),
    (ema_sink(3, 9, 0.5), (9, 15, 6)),
    (infinity_rope(1, 6), (9, 15, 6)),  # the switch flushes the cache
])
def test_a_continued_video_equals_one_long_run(model, policy, parts):
    """Three calls chained through their histories equal one long run bit for bit, a prompt switch (at frame 12)
    included: in the long run it lands inside the second call, where it is frame 3."""
    first_n, second_n, third_n = parts
    timeline = [PromptChange(0, prompt(seed=1)), PromptChange(12, prompt(seed=2))]
    total = sum(parts)
    whole = generate(model, timeline, Video(H, W, total_frames=total), FAST, policy,
                     noise=Noise(generator=torch.Generator().manual_seed(3))).latents
    g = torch.Generator().manual_seed(3)
    first = generate(model, timeline[:1], Video(H, W, total_frames=first_n), FAST, policy, noise=Noise(generator=g),
                     output=Output(record=True))
    second = generate(model, [PromptChange(0, prompt(seed=1)), PromptChange(12 - first_n, prompt(seed=2))],
                      Video(H, W, total_frames=second_n, resume=first.history), FAST, policy,
                      noise=Noise(generator=g), output=Output(record=True))
    third = generate(model, prompt(seed=2), Video(H, W, total_frames=third_n, resume=second.history), FAST, policy,
                     noise=Noise(generator=g))
    assert torch.equal(whole, torch.cat([first.latents, second.latents, third.latents], dim=2))


def test_history_of_another_policy_is_refused(model):
    first = generate(model, prompt(), Video(H, W, total_frames=6), ONE, rolling(6), noise=Noise(seed=0),
                     output=Output(record=True))
    with pytest.raises(ValueError, match="recorded with a rolling window of 6"):
        generate(model, prompt(), Video(H, W, total_frames=3, resume=first.history), ONE, sink(3, 9),
                 noise=Noise(seed=0))


def test_family_policies():
    assert family_policy("CausVid-Plus 14B") == rolling(21)
    assert family_policy("LongLive 1.3B") == sink(3, 12)
    assert family_policy("LightX2V CausVid 14B (custom steps)").kind == "fragments"
    assert set(causal.FAMILY_POLICIES) == set(causal.SCHEDULES)
    with pytest.raises(ValueError, match="unknown cache policy"):
        causal.CachePolicy("ring")


def test_a_hundred_chained_fragments_stay_flat_and_repeat_exactly(model):
    """100 fragments of 6 latent frames (each re-caching the last block): memory per fragment start is flat, and
    the same seed gives the same latents bit for bit."""
    samples = []
    video = Video(H, W, num_frames=6, num_fragments=100)
    with LiveCpuTensors() as live:
        def measure(p):
            if p.step == 0:  # every block: two in the first fragment, then one per fragment
                samples.append(live.bytes())

        generate(model, prompt(), video, ONE, fragments(6), noise=Noise(seed=9),
                 output=Output(device="meta", progress=measure))
    assert len(samples) == 101 and max(samples[3:]) == min(samples[3:]), samples
    a = generate(model, prompt(), video, ONE, fragments(6), noise=Noise(seed=9)).latents
    b = generate(model, prompt(), video, ONE, fragments(6), noise=Noise(seed=9)).latents
    assert a.shape[2] == 6 + 3 * 99 and torch.equal(a, b)


@pytest.mark.parametrize("first_frames, replayed", [(9, 0), (6, 2)])
def test_a_full_fragment_window_is_not_recomputed_on_continue(model, first_frames, replayed):
    """Continuing where a fragment window is full starts a new window from the last clean block, so the history's
    forwards are skipped (their K/V would never be read); a window with room left is rebuilt by replaying them.
    One more block then costs the re-cache (if a new window starts), two steps and its clean pass."""
    g = torch.Generator().manual_seed(5)
    first = generate(model, prompt(), Video(H, W, total_frames=first_frames), FAST, fragments(9),
                     noise=Noise(generator=g), output=Output(record=True))
    calls = []
    original = model.forward

    def spy(*a, **kw):
        calls.append(1)
        return original(*a, **kw)

    model.forward = spy
    try:
        generate(model, prompt(), Video(H, W, total_frames=3, resume=first.history), FAST, fragments(9),
                 noise=Noise(generator=g))
    finally:
        del model.forward
    new_window = first_frames == 9
    assert len(calls) == replayed + int(new_window) + 2 + 1


# -------------------------------------------------------------------------------------------------
# FP8 KV cache


def test_fp8_rows_round_trip_within_e4m3_precision_and_zeros_stay_zero():
    from causal.kv_cache_fp8 import dequantize, quantize

    x = torch.randn(2, 7, 3, 128, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 3, 7).view(1, 7, 1, 1)
    x[0, 0, 0] = 0
    q, s = quantize(x)
    back = dequantize(q, s, torch.float32)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (2, 7, 3, 1) and torch.all(back[0, 0, 0] == 0)
    rows_max = x.abs().amax(-1, keepdim=True)
    assert torch.allclose(back.abs().amax(-1, keepdim=True), rows_max, rtol=1e-6)  # each row's max is exact
    # e4m3 keeps 3 mantissa bits: relative error <= 2^-4 for normals; at most e4m3's subnormal step below them
    assert torch.all((back - x).abs() <= 2 ** -4 * x.abs() + rows_max / 448 * 2 ** -9 + 1e-30)


def test_fp8_cache_evicts_scales_with_their_rows_and_counts_them():
    from causal.kv_cache_fp8 import Fp8KVCache

    cache = Fp8KVCache(2, 1, 12, 2, 8, dtype=torch.float32, device="cpu")
    rows = torch.randn(1, 12, 2, 8, generator=torch.Generator().manual_seed(1)) * torch.arange(1, 13.).view(1, 12, 1, 1)
    cache.store(0, 0, rows, -rows)
    before = cache.visible(0, 12)
    cache.evict(2, 3, 12)  # drop tokens 2..4, tokens 5..11 move to 2..8
    keys, values = cache.visible(0, 9)
    assert torch.equal(keys[:, :, :2], before[0][:, :, :2]) and torch.equal(keys[:, :, 2:], before[0][:, :, 5:])
    assert torch.equal(values[:, :, 2:], before[1][:, :, 5:])
    assert cache.nbytes == Fp8KVCache.nbytes_for(2, 1, 12, 2, 8, torch.float32) == 2 * 2 * 12 * 2 * (8 + 4)
    cache.release()
    assert cache.nbytes == 0


@pytest.mark.parametrize("policy_name", ["fragments", "rolling", "sink"])
def test_fp8_kv_cache_stays_close_to_the_full_precision_cache(policy_name):
    """Whole videos past the window with an FP8 cache: within 2e-2 rel-L2 of the same run with a float32 cache
    (tiny random model), deterministic, and not the same numbers (the cache really is FP8)."""
    from causal import SCHEDULES, Compute, Noise, Video, generate
    from causal.cache_policy import fragments, rolling, sink
    from tools.tiny import prompt, tiny_model

    model = tiny_model(dtype=torch.float32)
    policy = {"fragments": fragments(6), "rolling": rolling(6), "sink": sink(3, 6)}[policy_name]
    run = lambda fp8: generate(model, prompt(), Video(32, 48, num_frames=6, total_frames=15),  # noqa: E731
                               SCHEDULES["CausVid 1.3B"], policy, noise=Noise(seed=3),
                               compute=Compute(device="cpu", dtype=torch.float32, kv_cache_fp8=fp8)).latents
    full, fp8, again = run(False), run(True), run(True)
    error = ((fp8 - full).norm() / full.norm()).item()
    print(f"{policy_name}: FP8 KV cache vs float32 cache rel-L2 {error:.2e}")
    assert torch.equal(fp8, again) and 0 < error <= 2e-2


# -- positions applied when the cache is read; Reward Forcing ---------------------------------------------------


@pytest.mark.parametrize("policy, timeline", [
    (fragments(6), None),
    (rolling(6), None),
    (sink(3, 9), [PromptChange(0, prompt(seed=1)), PromptChange(13, prompt(seed=2))]),
    (sink(3, 9, refresh_sink=True), [PromptChange(0, prompt(seed=1)), PromptChange(13, prompt(seed=2))]),
])
def test_keys_rotated_when_read_give_the_write_time_rotation_bit_for_bit(model, policy, timeline):
    """The same video with keys cached un-rotated and rotated at every read, at the frames' video positions:
    the same rotation of the same values, so the same latents bit for bit, evictions and a re-cache included."""
    video = Video(H, W, total_frames=24)
    written = generate(model, timeline or prompt(), video, FAST, policy, noise=Noise(seed=0)).latents
    read = generate(model, timeline or prompt(), video, FAST, dataclasses.replace(policy, rope_at_read=True),
                    noise=Noise(seed=0)).latents
    assert torch.equal(written, read)


class RewardForcingCache:
    """Reward Forcing's self-attention cache, a plain rendition of `CausalWanSelfAttention.forward` in its
    `wan/modules/causal_model.py` (JaydenLyh/Reward-Forcing @ 4317f5a): per layer k, v [1, local_attn_size frames,
    heads, 128] and global/local end indices; keys stored RMS-normed and un-rotated; a new block past a full cache
    evicts the oldest tokens after the sink, rolls the rest left, writes at the end, and blends the evicted tokens
    into the sink (alpha * sink + (1 - alpha) * evicted, in bf16) when they are as many as the sink's; attention
    reads [sink, everything after it up to local_end], rotated with positions 0.. (`start_frame=0`). The query's
    position comes from `query_frame` before the forward. `store` gets the absolute token start (`current_start`)."""

    def __init__(self, local_attn_size, sink_size, alpha, key_phases):
        shape = (1, local_attn_size * TPF, TINY.num_heads, 128)
        self.k = [torch.zeros(shape, dtype=torch.bfloat16) for _ in range(TINY.num_layers)]
        self.v = [torch.zeros(shape, dtype=torch.bfloat16) for _ in range(TINY.num_layers)]
        self.global_end = [0] * TINY.num_layers
        self.local_end = [0] * TINY.num_layers
        self.size, self.sink, self.alpha = local_attn_size * TPF, sink_size * TPF, alpha
        self.key_phases = key_phases  # positions 0 .. local_attn_size - 1, applied to what `store` returns

    def _local_end(self, layer, start, n):
        end, G, L = start + n, self.global_end[layer], self.local_end[layer]
        if end > G and n + L > self.size:
            return L + end - G - (n + L - self.size), True
        return L + end - G, False

    def query_frame(self, start, n):
        """`query_start_frame` of the forward that starts at absolute token `start` with n tokens."""
        local_end, _ = self._local_end(0, start, n)
        return (local_end - n) // TPF

    def store(self, layer, start, k, v):
        n, S = k.shape[1], self.sink
        ck, cv = self.k[layer], self.v[layer]
        local_end, evicts = self._local_end(layer, start, n)
        if evicts:
            evicted_n = n + self.local_end[layer] - self.size
            rolled = self.local_end[layer] - evicted_n - S
            evicted_k, evicted_v = ck[:, S:S + evicted_n].clone(), cv[:, S:S + evicted_n].clone()
            ck[:, S:S + rolled] = ck[:, S + evicted_n:S + evicted_n + rolled].clone()
            cv[:, S:S + rolled] = cv[:, S + evicted_n:S + evicted_n + rolled].clone()
        ck[:, local_end - n:local_end], cv[:, local_end - n:local_end] = k, v
        if evicts and evicted_n == S:
            ck[:, :S] = self.alpha * ck[:, :S] + (1 - self.alpha) * evicted_k
            cv[:, :S] = self.alpha * cv[:, :S] + (1 - self.alpha) * evicted_v
        elif evicts:
            m = min(evicted_n, S)
            ck[:, :m], cv[:, :m] = evicted_k[:, :m], evicted_v[:, :m]
        kv_start = max(S, local_end - self.size + S)
        keys = torch.cat([ck[:, :S], ck[:, kv_start:local_end]], dim=1)
        values = torch.cat([cv[:, :S], cv[:, kv_start:local_end]], dim=1)
        self.global_end[layer], self.local_end[layer] = start + n, local_end
        return keys.transpose(1, 2), values.transpose(1, 2)


def _reward_forcing(model, noise, eps, schedule, local_attn_size, sink_size, alpha):
    """Its `CausalInferencePipeline.inference`: blocks of 3 at `current_start` = the frame index, each denoised
    then re-run clean; the query at the position the cache gives it."""
    text = model.text_kv(prompt(), torch.bfloat16)
    phases = model.phases(0, (1, 16, local_attn_size, h, w), torch.device("cpu"))
    cache = RewardForcingCache(local_attn_size, sink_size, alpha, phases)
    draws, out = iter(eps), []
    for b in range(noise.shape[1] // 3):
        frame = 3 * b
        out.append(_denoise_block(model, text, cache, noise[:, frame:frame + 3], draws, schedule, frame,
                                  cache.query_frame(frame * TPF, 3 * TPF)))
    return torch.cat(out, dim=2)


@pytest.mark.parametrize("alpha", [0.999, 0.5])
def test_ema_sink_reproduces_reward_forcing(model, alpha):
    """Reward Forcing's cache (sink 3 in a 9-frame cache, evicted blocks blended into the sink, positions the
    frames' slots) over 8 blocks, 5 of them past a full cache, bit for bit."""
    noise, draws = _noise(24), Draws()
    got = generate(model, prompt(), Video(H, W, total_frames=24), FAST, ema_sink(3, 9, alpha),
                   noise=Noise(initial=noise, renoise=draws)).latents
    expected = _reward_forcing(model, noise, draws.tensors, FAST, 9, 3, alpha)
    assert torch.equal(got, expected)


def test_the_ema_and_the_slot_positions_each_change_the_video(model):
    """Against Reward Forcing's cache: the same sink kept as written (alpha 1), and the same EMA at the video's
    positions, each give other frames from the first block that evicts (and the same ones before it)."""
    video, seed = Video(H, W, total_frames=21), Noise(seed=0)
    reward = generate(model, prompt(), video, FAST, ema_sink(3, 9, 0.5), noise=seed).latents
    plain_sink = generate(model, prompt(), video, FAST, ema_sink(3, 9, 1.0), noise=seed).latents
    video_positions = generate(model, prompt(), video, FAST,
                               dataclasses.replace(ema_sink(3, 9, 0.5), positions="video"), noise=seed).latents
    for other in (plain_sink, video_positions):
        assert torch.equal(reward[:, :, :9], other[:, :, :9])  # blocks 0-2 fill the cache; block 3 evicts
        assert not torch.equal(reward[:, :, 9:12], other[:, :, 9:12])


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="rolling", window=9, sink_ema=0.9), "for the sink policy only"),
    (dict(kind="sink", window=9, sink=3, sink_ema=1.5), r"alpha in \[0, 1\]"),
    (dict(kind="rolling", window=9, positions="slot"), "slot positions need rope_at_read"),
    (dict(kind="rolling", window=9, rope_at_read=True, positions="frame"), "unknown positions"),
    (dict(kind="rolling", window=9, on_switch="flush"), "'flush' for the sink policy only"),
    (dict(kind="sink", window=9, sink=3, on_switch="forget"), "on_switch is one of recache, flush"),
])
def test_bad_position_and_ema_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        causal.CachePolicy(**kwargs)


def test_an_ema_sink_refuses_the_fp8_cache(model):
    with pytest.raises(ValueError, match="use the bf16 KV cache"):
        generate(model, prompt(), Video(H, W, total_frames=3), ONE, ema_sink(), noise=Noise(seed=0),
                 compute=Compute(kv_cache_fp8=True))


class InfinityRopeCache:
    """Infinity-RoPE's self-attention cache (yesiltepe-hidir/infinity-rope @ 63d7b84, `wan/modules/causal_model.py`
    `CausalWanSelfAttention.forward` with a KV cache, no scene cut) and its `kv_flush`: per layer k, v of
    `local_attn_size` frames and global/local end indices; keys stored un-rotated except the first frame, stored
    rotated at 0 while the first block is written; every read rotates the cached span at positions 0.. (its
    block-relativistic RoPE), the stored first frame taken as it is; the query at its frame's place in the span.
    `store` returns the keys rotated (`key_phases` the identity, as in test_rolling_window)."""

    def __init__(self, model, local_attn_size, sink_size):
        self.model = model
        shape = (1, local_attn_size * TPF, TINY.num_heads, 128)
        self.k = [torch.zeros(shape, dtype=torch.bfloat16) for _ in range(TINY.num_layers)]
        self.v = [torch.zeros(shape, dtype=torch.bfloat16) for _ in range(TINY.num_layers)]
        self.global_end = [0] * TINY.num_layers
        self.local_end = [0] * TINY.num_layers
        self.size, self.sink = local_attn_size * TPF, sink_size * TPF
        self.key_phases = torch.ones(64 * self.size, 1, 64, dtype=torch.complex128)
        self.scene_cut = False  # its kv_cache["scene_cut"]: set for the first block after a cut

    def rope(self, x, start_frame):
        """`block_relativistic_rope` from `start_frame`; with a scene cut (`rope_cut`) the last 3 frames at 45.."""
        if self.scene_cut:
            head = x[:, :-3 * TPF]
            return torch.cat([self.rope_plain(head, start_frame) if head.shape[1] else head,
                              self.rope_plain(x[:, -3 * TPF:], 45)], dim=1)
        return self.rope_plain(x, start_frame)

    def rope_plain(self, x, start_frame):
        return apply_rope(x, self.model.phases(start_frame, (1, 16, x.shape[1] // TPF, h, w), torch.device("cpu")))

    def query_frame(self, start, n):
        """`relative_start_frame` of a forward at absolute token `start` with n tokens (before it runs); the query
        rotation then goes through `rope` too, so a cut puts it at 45 (returned as such)."""
        if self.scene_cut:
            return 45
        end, frames = start + n, self.size // TPF
        if end > self.global_end[0] and n + self.local_end[0] > self.size:
            return frames - n // TPF
        return start // TPF if start // TPF < frames else frames - n // TPF

    def flush(self):
        """`kv_flush`: slots 1..2 <- the buffer's last 2 frames, local_end = 3 frames."""
        for layer in range(TINY.num_layers):
            self.k[layer][:, TPF:3 * TPF] = self.k[layer][:, -2 * TPF:].clone()
            self.v[layer][:, TPF:3 * TPF] = self.v[layer][:, -2 * TPF:].clone()
            self.local_end[layer] = 3 * TPF

    def store(self, layer, start, k, v):
        n, end, G, L, S = k.shape[1], start + k.shape[1], self.global_end[layer], self.local_end[layer], self.sink
        ck, cv = self.k[layer], self.v[layer]
        if end > G and n + L > self.size:
            evicted = n + L - self.size
            rolled = L - evicted - S
            ck[:, S:S + rolled] = ck[:, S + evicted:S + evicted + rolled].clone()
            cv[:, S:S + rolled] = cv[:, S + evicted:S + evicted + rolled].clone()
            local_end = L + end - G - evicted
            ck[:, local_end - n:local_end], cv[:, local_end - n:local_end] = k, v
            span = ck[:, max(0, local_end - self.size):local_end]
            keys = self.rope(span, 0)
            keys[:, :TPF] = span[:, :TPF]
        else:
            local_end = L + end - G
            local_start = local_end - n
            ck[:, local_start:local_end], cv[:, local_start:local_end] = k, v
            span = ck[:, max(0, local_end - self.size):local_end]
            keys = self.rope(span, 0)
            if local_start == 0:
                ck[:, :TPF] = keys[:, :TPF]
            else:
                keys[:, :TPF] = span[:, :TPF]
        values = cv[:, max(0, local_end - self.size):local_end]
        self.global_end[layer], self.local_end[layer] = end, local_end
        return keys.transpose(1, 2), values.transpose(1, 2)


def _infinity_rope(model, timeline, noise, eps, schedule):
    """Its `CausalInferencePipeline.inference`: blocks of 3 at `current_start` = the frame index; at a scene
    boundary (a new prompt) `kv_flush` before the block, then the block under the new prompt."""
    cache = InfinityRopeCache(model, 6, 1)
    changes = list(timeline)
    text = model.text_kv(changes.pop(0).context, torch.bfloat16)
    draws, out = iter(eps), []
    for b in range(noise.shape[1] // 3):
        frame = 3 * b
        cache.scene_cut = False
        if changes and frame >= changes[0].frame:
            change = changes.pop(0)
            text = model.text_kv(change.context, torch.bfloat16)
            cache.flush()
            cache.scene_cut = change.cut
        out.append(_denoise_block(model, text, cache, noise[:, frame:frame + 3], draws, schedule, frame,
                                  cache.query_frame(frame * TPF, 3 * TPF)))
    return torch.cat(out, dim=2)


@pytest.mark.parametrize("switch, cut", [(None, False), (9, False), (15, False), (9, True), (15, True)])
def test_infinity_rope_reproduces_its_cache_and_flush(model, switch, cut):
    """Infinity-RoPE on Self-Forcing's loop: a 1-frame sink in a 6-frame cache at slot positions over 8 blocks, and
    a prompt switch (once the cache is full) that flushes it to the sink and the 2 newest frames, with or without
    a scene cut (the first block after it at positions 45..47), bit for bit."""
    timeline = [PromptChange(0, prompt(seed=1))] + ([PromptChange(switch, prompt(seed=2), cut)] if switch else [])
    noise, draws = _noise(24), Draws()
    got = generate(model, timeline, Video(H, W, total_frames=24), FAST, infinity_rope(1, 6),
                   noise=Noise(initial=noise, renoise=draws)).latents
    expected = _infinity_rope(model, timeline, noise, draws.tensors, FAST)
    assert torch.equal(got, expected)
    if switch and not cut:  # the flush, not LongLive's re-cache
        recached = generate(model, timeline, Video(H, W, total_frames=24), FAST,
                            dataclasses.replace(infinity_rope(1, 6), on_switch="recache"),
                            noise=Noise(initial=noise, renoise=Draws()))
        assert not torch.equal(got[:, :, switch:], recached.latents[:, :, switch:])
    if cut:  # the cut moved the frames from its block on, and only from there
        uncut = [timeline[0], PromptChange(switch, timeline[1].context)]
        plain = generate(model, uncut, Video(H, W, total_frames=24), FAST, infinity_rope(1, 6),
                         noise=Noise(initial=noise, renoise=Draws())).latents
        first = (switch + 2) // 3 * 3
        assert torch.equal(got[:, :, :first], plain[:, :, :first])
        assert not torch.equal(got[:, :, first:first + 3], plain[:, :, first:first + 3])


def test_a_scene_cut_is_infinity_ropes_and_its_timeline_syntax(model):
    """`12#: prompt` marks a scene cut; a cut at 0 s is refused; a cache that knows no scenes refuses a cut with
    what to use (Infinity-RoPE's or LongLive 2.0's)."""
    from causal.text import split_timeline

    lines = split_timeline("0: a cat sleeps\n12#: a dog runs\n20s: the dog stops")
    assert [(p.start, p.cut) for p in lines] == [(0.0, False), (12.0, True), (20.0, False)]
    assert lines[1].text == "a dog runs"
    with pytest.raises(ValueError, match="the first prompt .* cannot have one"):
        split_timeline("0#: a cat")
    timeline = [PromptChange(0, prompt(seed=1)), PromptChange(9, prompt(seed=2), cut=True)]
    with pytest.raises(ValueError, match="a scene cut .* needs a cache that knows scenes: Infinity-RoPE's .* "
                                         "LongLive 2.0's"):
        generate(model, timeline, Video(H, W, total_frames=12), ONE, sink(3, 9), noise=Noise(seed=0))


def test_a_scene_cut_block_goes_back_to_its_slots_once_finished(model):
    """The window's own bookkeeping, on a cache with room after the cut block (no eviction to reset it): the cut
    block is placed at 45.. while it is made and then sits at its slots like every other frame."""
    policy = infinity_rope(1, 9)
    cache = KVCache(TINY.num_layers, 1, 9 * TPF, TINY.num_heads, 128, dtype=torch.bfloat16, device="cpu")
    window = ContextWindow(model, policy, cache, tokens_per_frame=TPF, forward=lambda x, t, slot, position, offset: x)
    block = torch.zeros(1, 16, 3, h, w, dtype=torch.bfloat16)
    for _ in range(2):
        window.place(3)
        window.finish(block, 0.0)
    text = model.text_kv(prompt(seed=2), torch.bfloat16)
    window.set_prompt(prompt(seed=2), text, recache=True, cut=True)  # flush: the sink and the newest 5 frames
    assert window.filled == 6 and window.slot_positions == list(range(6))
    slot, position = window.place(3)
    assert (slot, position) == (6, 45) and window.slot_positions == [0, 1, 2, 3, 4, 5, 45, 46, 47]
    window.finish(block, 0.0)
    assert window.slot_positions == list(range(9)) and not window.scene_cut
