"""Rolling Forcing (TencentARC/RollingForcing @ a1477d0): a window of 5 blocks denoised together at staggered
noise levels, the oldest block's clean pass the only cache write, the anchor block re-positioned when read.

The oracle is a plain rendition of its `inference_rolling_forcing` loop and its `CausalWanSelfAttention.forward`
cache bookkeeping (global/local end indices in tokens, the first block stored un-rotated and every later one
rotated when written, the working cache and the anchor extracted per forward), written independently of
`causal.rolling_window`, with its 1560-token frame replaced by the tiny model's frame.
"""

from __future__ import annotations

import pytest
import torch

from causal.kv_cache import KVCache
from causal.rolling_window import ROLLING_FORCING_ATTENTION, ROLLING_FORCING_CACHE, sample_rolling, windows
from causal.rope import apply_rope
from causal.schedule import Schedule
from tools.tiny import Draws, TINY, latent_size, prompt, tiny_model

H, W = 32, 48
h, w = latent_size(H, W)
TPF = 6  # tokens per latent frame at 32x48
STEPS = Schedule("rolling forcing", (1000, 800, 600, 400, 200), shift=5.0, warp=True)


@pytest.fixture(scope="module")
def model():
    return tiny_model(torch.bfloat16)


class RollingForcingCache:
    """Its per-layer cache dicts and `CausalWanSelfAttention.forward` with a KV cache, for one forward at a time:
    the driver sets `current_start` (tokens) and `updating_cache` before each call. `store` gets RMSNorm(k) and
    returns keys already rotated as its code rotates them (its `key_phases` are the identity: a rotation by 1 is
    exact)."""

    def __init__(self, model):
        self.model = model
        shape = (1, ROLLING_FORCING_CACHE * TPF, TINY.num_heads, 128)
        self.k = [torch.zeros(shape, dtype=torch.bfloat16) for _ in range(TINY.num_layers)]
        self.v = [torch.zeros(shape, dtype=torch.bfloat16) for _ in range(TINY.num_layers)]
        self.global_end = [0] * TINY.num_layers
        self.local_end = [0] * TINY.num_layers
        self.frame_length, self.block_length = TPF, 3 * TPF
        self.max_attention_size = ROLLING_FORCING_ATTENTION * TPF
        self.current_start, self.updating_cache = 0, False
        self.key_phases = torch.ones(64 * self.max_attention_size, 1, 64, dtype=torch.complex128)  # read by the glue

    def rope(self, x, start_frame):  # causal_rope_apply over x [B, L, heads, D] from frame start_frame
        frames = x.shape[1] // TPF
        return apply_rope(x, self.model.phases(start_frame, (1, 16, frames, h, w), torch.device("cpu")))

    def store(self, layer, start, k, v):
        B, S = self.block_length, self.block_length  # sink_tokens = 1 * block_length
        ck, cv = self.k[layer], self.v[layer]
        current_start_frame = self.current_start // self.frame_length
        roped_key = self.rope(k, current_start_frame)
        cache_end = self.current_start + B
        num_new = cache_end - self.global_end[layer]
        size = ck.shape[1]
        if num_new > 0 and num_new + self.local_end[layer] > size:
            evicted = num_new + self.local_end[layer] - size
            rolled = self.local_end[layer] - evicted - S
            ck[:, S:S + rolled] = ck[:, S + evicted:S + evicted + rolled].clone()
            cv[:, S:S + rolled] = cv[:, S + evicted:S + evicted + rolled].clone()
            local_end = self.local_end[layer] + cache_end - self.global_end[layer] - evicted
            local_start = local_end - B
            ck[:, local_start:local_end] = roped_key[:, :B]
            cv[:, local_start:local_end] = v[:, :B]
        else:
            local_end = self.local_end[layer] + cache_end - self.global_end[layer]
            local_start = local_end - B
            ck[:, local_start:local_end] = k[:, :B] if local_start == 0 else roped_key[:, :B]
            cv[:, local_start:local_end] = v[:, :B]
        if num_new > 0:
            self.global_end[layer], self.local_end[layer] = cache_end, local_end
        if local_start == 0:
            keys, values = roped_key, v
        elif self.updating_cache:
            lo = max(0, local_end - self.max_attention_size)
            keys, values = ck[:, lo:local_end].clone(), cv[:, lo:local_end]
            if lo == 0:
                keys[:, :B] = self.rope(keys[:, :B], 0)
        else:
            working_max = self.max_attention_size - k.shape[1] - B
            lo = max(B, local_start - working_max)
            working_k, working_v = ck[:, lo:local_start], cv[:, lo:local_start]
            anchor_k = self.rope(ck[:, :B], current_start_frame - working_k.shape[1] // self.frame_length - 3)
            keys = torch.cat([anchor_k, working_k, roped_key], dim=1)
            values = torch.cat([cv[:, :B], working_v, v], dim=1)
        return keys.transpose(1, 2), values.transpose(1, 2)


def _rolling_forcing(model, noise, eps, schedule):
    """`inference_rolling_forcing` for text to video, blocks of 3, `context_noise` 0."""
    text = model.text_kv(prompt(), torch.bfloat16)
    cache = RollingForcingCache(model)
    steps = schedule.steps_for(first_block=False)
    S, n_b = len(steps), 3
    batch, num_frames = noise.shape[:2]
    num_blocks = num_frames // n_b
    noisy_cache, output = torch.zeros_like(noise), torch.zeros_like(noise)
    shared = [steps[S - 1 - j] for j in range(S) for _ in range(n_b)]  # reversed: clean to noisy, per frame
    draws = iter(eps)
    for window_index in range(num_blocks + S - 1):
        start_block, end_block = max(0, window_index - S + 1), min(num_blocks - 1, window_index)
        start, end = start_block * n_b, (end_block + 1) * n_b
        n = end - start
        if n == S * n_b or start == 0:
            noisy_input = torch.cat([noisy_cache[:, start:end - n_b], noise[:, end - n_b:end]], dim=1)
        else:
            noisy_input = noisy_cache[:, start:end]
        if n == S * n_b:
            current = shared
        elif start == 0:
            current = shared[-n:]
        else:
            current = shared[:n]
        t = torch.tensor([[tau for tau, _ in current]], dtype=torch.float64)
        cache.current_start, cache.updating_cache = start * TPF, False
        flow = model(noisy_input.permute(0, 2, 1, 3, 4), t, text, cache=cache, cache_frame=start,
                     rope_frame=start).permute(0, 2, 1, 3, 4)
        sigma_t = torch.tensor([sigma for _, sigma in current], dtype=torch.float64).view(1, -1, 1, 1, 1)
        denoised = (noisy_input.double() - sigma_t * flow.double()).to(torch.bfloat16)
        output[:, start:end] = denoised
        for block_idx in range(start_block, end_block + 1):
            i = block_idx - start_block
            index = [tau for tau, _ in steps].index(current[i * n_b][0])
            if index == S - 1:
                continue
            e = next(draws).view(batch, n, 16, h, w)
            s = torch.tensor(steps[index + 1][1], dtype=torch.float32)
            noisy_cache[:, block_idx * n_b:(block_idx + 1) * n_b] = \
                ((1 - s) * denoised.float() + s * e.float()).to(torch.bfloat16)[:, i * n_b:(i + 1) * n_b]
        cache.updating_cache = True
        model(denoised[:, :n_b].permute(0, 2, 1, 3, 4), torch.zeros(1, n_b, dtype=torch.float64), text, cache=cache,
              cache_frame=start, rope_frame=start)
    return output.permute(0, 2, 1, 3, 4)


def _blocks_of(noise):
    """`initial` for `sample_rolling`: block b of a whole video's noise [B, F, 16, h, w]."""
    return lambda b: noise[:, 3 * b:3 * b + 3]


def test_windows_slide_one_block_at_staggered_steps():
    got = [(wi.first, wi.last, wi.steps) for wi in windows(7, 5)]
    assert got[:5] == [(0, 0, (0,)), (0, 1, (1, 0)), (0, 2, (2, 1, 0)), (0, 3, (3, 2, 1, 0)), (0, 4, (4, 3, 2, 1, 0))]
    assert got[5:] == [(1, 5, (4, 3, 2, 1, 0)), (2, 6, (4, 3, 2, 1, 0)), (3, 6, (4, 3, 2, 1)), (4, 6, (4, 3, 2)),
                       (5, 6, (4, 3)), (6, 6, (4,))]


@pytest.mark.parametrize("blocks", [7, 14])
def test_rolling_window_reproduces_rolling_forcing(model, blocks):
    """7 blocks: the windows at the start, full and at the end; 14: past the 24-frame cache (evictions after the
    anchor) and the clean pass no longer seeing the anchor."""
    frames = 3 * blocks
    noise = torch.randn(1, frames, 16, h, w, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    draws = Draws()
    cache = KVCache(TINY.num_layers, 1, ROLLING_FORCING_CACHE * TPF, TINY.num_heads, 128, dtype=torch.bfloat16,
                    device="cpu")
    got = sample_rolling(model, model.text_kv(prompt(), torch.bfloat16), num_blocks=blocks, initial=_blocks_of(noise),
                         schedule=STEPS, cache=cache, tokens_per_frame=TPF, renoise=draws)
    expected = _rolling_forcing(model, noise, draws.tensors, STEPS)
    assert len(draws.tensors) == sum(len(wi.steps) - (wi.steps[0] == 4) for wi in windows(blocks, 5))
    assert torch.equal(got, expected)


def test_generate_runs_the_rolling_forcing_preset_and_streams_blocks_as_they_leave_the_window(model):
    """`generate` with the preset's schedule runs the joint window: the same latents as the loop itself from the
    same noise and draws; every block handed to `on_block` once, final, in order; progress after every window
    with one preview-step per block; what it cannot do yet refused with what to leave at its default."""
    from causal import SCHEDULES, Noise, Output, Video, generate
    from causal.cache_policy import rolling

    schedule = SCHEDULES["Rolling Forcing 1.3B"]
    noise = torch.randn(1, 18, 16, h, w, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    draws, blocks, reports = Draws(), [], []
    got = generate(model, prompt(), Video(H, W, total_frames=18), schedule, noise=Noise(initial=noise, renoise=draws),
                   output=Output(on_block=blocks.append, progress=reports.append))
    cache = KVCache(TINY.num_layers, 1, ROLLING_FORCING_CACHE * TPF, TINY.num_heads, 128, dtype=torch.bfloat16,
                    device="cpu")
    replayed = iter(draws.tensors)
    direct = sample_rolling(model, model.text_kv(prompt(), torch.bfloat16), num_blocks=6, initial=_blocks_of(noise),
                            schedule=schedule, cache=cache, tokens_per_frame=TPF, renoise=lambda shape: next(replayed))
    assert torch.equal(got.latents, direct) and got.history is None
    assert torch.equal(torch.cat(blocks, dim=2), direct) and len(blocks) == 6
    assert len(reports) == 6 + 5 - 1 and reports[-1].completed == reports[-1].total == 6 * 5
    assert [r.block for r in reports if r.step == r.steps - 1] == list(range(6))
    streamed = []  # a stream keeps nothing: the blocks go to on_block only, the same ones
    kept = generate(model, prompt(), Video(H, W, total_frames=18), schedule,
                    noise=Noise(initial=noise, renoise=lambda shape, again=iter(draws.tensors): next(again)),
                    output=Output(keep_latents=False, on_block=streamed.append))
    assert kept.latents.shape[2] == 0 and torch.equal(torch.cat(streamed, dim=2), direct)
    with pytest.raises(ValueError, match="does not take record, the rolling window of 21 latent frames yet"):
        generate(model, prompt(), Video(H, W, total_frames=18), schedule, rolling(21), noise=Noise(seed=0),
                 output=Output(record=True))
    with pytest.raises(ValueError, match="at least 5 .* got 12 latent frames"):
        generate(model, prompt(), Video(H, W, total_frames=12), schedule, noise=Noise(seed=0))
