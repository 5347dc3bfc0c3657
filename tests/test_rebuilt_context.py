"""The recompute policy (Krea Realtime 14B): a short context cached again from scratch before every block, its
first frame re-encoded from a decoded frame, RoPE positions bounded. Checked against a plain rendition of
Krea's server loop (krea-ai/realtime-video @ acf4b7b, `release_server.GenerationSession`), with a stateful
stand-in VAE in place of the Wan VAE."""

from __future__ import annotations

from collections import deque

import pytest
import torch

import causal
from causal import Noise, Output, PromptChange, Schedule, Video, generate
from causal.cache_policy import CachePolicy, family_policy, recompute, rolling
from causal.kv_cache import KVCache
from causal.rebuilt_context import ReencodedFrames, decoded_frames_kept
from causal.schedule import nearest_sigma, sigma_table
from tools.tiny import Draws, TINY, latent_size, prompt, tiny_model

H, W = 32, 48
h, w = latent_size(H, W)
TPF = 6  # tokens per latent frame at 32x48
KREA = causal.SCHEDULES["Krea Realtime 14B"]


@pytest.fixture(scope="module")
def model():
    return tiny_model(torch.bfloat16)


class StandinVae:
    """A causal stand-in for the Wan VAE: decoding a block depends on every block before it (a running carry,
    like the decoder's feature cache), the first block gives 1 + 4 (n - 1) frames and later ones 4 n; encoding
    maps one frame [1, 1, 3, h, w] back to a latent [1, 16, 1, h, w]."""

    def __init__(self) -> None:
        self.carry = torch.zeros(1, 3, h, w)
        self.started = False

    def decode(self, block: torch.Tensor) -> torch.Tensor:
        frames = []
        for i in range(block.shape[2]):
            latent = block[:, :3, i].float()
            self.carry = 0.5 * self.carry + latent
            repeats = 1 if not self.started else 4
            self.started = True
            frames += [(self.carry + 0.1 * r)[None] for r in range(repeats)]
        return torch.cat(frames)  # [F, 1, 3, h, w]

    @staticmethod
    def encode(frame: torch.Tensor) -> torch.Tensor:
        x = frame[0]  # [1, 3, h, w]
        return torch.cat([x * (1 + c / 16) for c in range(6)], dim=1)[:, :16].unsqueeze(2)


def _reencoder(context_frames=3):
    vae = StandinVae()
    return ReencodedFrames(vae.decode, vae.encode, context_frames)


def _krea_step_list(steps=5, strength=1.0, shift=5.0):
    """Krea's `get_denoising_schedule`: warped linspace(1000·strength, 0, steps) over the zero-padded table."""
    _, table = sigma_table(shift)
    padded = torch.cat([table, torch.zeros(1)])
    return [float(t) for t in padded[1000 - torch.linspace(strength * 1000, 0, steps).to(torch.long)]]


def _krea(model, timeline, noise, renoise, K, *, start=None, keep_first_frame=False):
    """GenerationSession.generate_block_internal, block by block: recompute_kv_cache (a zeroed cache, the context
    [first or re-encoded frame, last K - 1] at t = 0 from position 0 under the prompt in use), then the steps at
    position min(frames so far, K), x0 in float64, re-noise in float32, the block decoded into a deque of
    1 + (K - 1)·4 frames. `timeline`: (generated frame, prompt) pairs; Krea swaps the prompt after the recompute.
    One deliberate difference: with K = 1 Krea's re-encode branch slices `[-K + 1:]` = `[0:]`, every frame (its
    cache of K + 3 frames then overflows); here, as in the pack, no frame follows the re-encoded one."""
    vae = StandinVae()
    taus = _krea_step_list()
    sigmas = [nearest_sigma(t, 5.0) for t in taus]
    prompts = {frame: model.text_kv(p, torch.bfloat16) for frame, p in timeline}
    text = prompts[0]
    frame_context_cache = deque(maxlen=1 + (K - 1) * 4)
    all_latents = [] if start is None else [start[:, :, i:i + 1] for i in range(start.shape[2])]
    n_blocks = noise.shape[1] // 3
    out = []
    for block_idx in range(n_blocks):
        cache = KVCache(TINY.num_layers, 1, (K + 3) * TPF, TINY.num_heads, 128, dtype=torch.bfloat16, device="cpu")
        current_start_frame = len(all_latents)
        model_input_start_frame = min(current_start_frame, K)
        if current_start_frame:
            clean = all_latents
            if keep_first_frame or (block_idx - 1) * 3 < K:
                clean = clean[:1] if K == 1 else clean[:1] + clean[1:][-K + 1:]
            else:
                first = StandinVae.encode(frame_context_cache[0]).to(torch.bfloat16)
                clean = [first] + (clean[1:][-K + 1:] if K > 1 else [])
            context = torch.cat(clean, dim=2)
            model(context, torch.zeros(1, context.shape[2], dtype=torch.float64), text, cache=cache, cache_frame=0,
                  rope_frame=0)
        text = prompts.get(3 * block_idx, text)
        x = noise[:, 3 * block_idx:3 * block_idx + 3].permute(0, 2, 1, 3, 4)
        for k, (tau, sigma) in enumerate(zip(taus, sigmas)):
            v = model(x, torch.full((1, 3), tau, dtype=torch.float64), text, cache=cache,
                      cache_frame=model_input_start_frame, rope_frame=model_input_start_frame)
            x0 = (x.double() - sigma * v.double()).to(torch.bfloat16)
            if k + 1 < len(taus):
                s = torch.tensor(sigmas[k + 1], dtype=torch.float32)
                e = renoise((3, 16, h, w)).view(1, 3, 16, h, w).permute(0, 2, 1, 3, 4)
                x = ((1 - s) * x0.float() + s * e.float()).to(torch.bfloat16)
        all_latents += [x0[:, :, i:i + 1] for i in range(3)]
        frame_context_cache.extend(vae.decode(x0).split(1, dim=0))
        out.append(x0)
    return torch.cat(out, dim=2)


def _noise(frames, seed=0):
    return torch.randn(1, frames, 16, h, w, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16)


def test_krea_schedule_is_its_servers_default():
    assert list(KREA.timesteps) == _krea_step_list()
    assert KREA.timesteps[-1] == 0 and KREA.sigmas[-1] == pytest.approx(5 * 0.001 / (1 + 4 * 0.001))
    assert not KREA.clean_pass and KREA.forwards_per_block == 5
    assert family_policy("Krea Realtime 14B") == recompute(3)
    # the final 0 is a step only where the family says so; elsewhere it ends the list
    assert Schedule("x", (1000, 750, 0), 5.0, True).timesteps == Schedule("x", (1000, 750), 5.0, True).timesteps
    custom = KREA.with_steps([1000, 500, 0])
    assert custom.zero_step and custom.timesteps[-1] == 0 and custom.num_steps == 3
    with pytest.raises(ValueError, match="outside"):
        Schedule("x", (1000, 0, 500), 5.0, True, zero_step=True)


@pytest.mark.parametrize("K, start_frames, keep_first", [(3, 0, False), (2, 0, False), (3, 1, False),
                                                         (3, 3, False), (3, 0, True), (1, 0, False)])
def test_recompute_reproduces_krea_realtime(model, K, start_frames, keep_first):
    """generate(policy=recompute) equals the rendition of Krea's loop bit for bit over 5 blocks: the context's
    first frame switches from L_0 to a re-encoded decoded frame after block 1 (K = 3), positions stay bounded, a
    prompt switch at frame 9 takes effect after that block's recompute."""
    frames = 15
    timeline = [(0, prompt(seed=1)), (9, prompt(seed=2))]
    noise = _noise(frames)
    start = None if not start_frames else _noise(start_frames, seed=7).permute(0, 2, 1, 3, 4)
    ref = _krea(model, timeline, noise, Draws(), K, start=start, keep_first_frame=keep_first)
    vae = StandinVae()
    got = generate(model, [PromptChange(f, p) for f, p in timeline],
                   Video(H, W, total_frames=frames, start_latents=start), KREA,
                   recompute(K, keep_first_frame=keep_first), noise=Noise(initial=noise, renoise=Draws()),
                   reencoder=ReencodedFrames(vae.decode, vae.encode, K))
    assert torch.equal(got.latents, ref)


def test_rebuilt_context_stays_bounded(model):
    """Every forward of a 30-block video writes at slot = RoPE position <= K, into a cache of K + 3 frames."""
    seen = []
    original = model.forward

    def spy(x, t, text, *, cache, cache_frame, rope_frame, **kw):
        seen.append((cache_frame, rope_frame, x.shape[2], cache.capacity))
        return original(x, t, text, cache=cache, cache_frame=cache_frame, rope_frame=rope_frame, **kw)

    model.forward = spy
    try:
        generate(model, prompt(), Video(H, W, total_frames=90), Schedule("one", (1000,), 5.0, True, clean_pass=False),
                 recompute(3), noise=Noise(seed=0), reencoder=_reencoder())
    finally:
        del model.forward
    assert {cap for *_, cap in seen} == {6 * TPF}
    assert max(slot + n for slot, _, n, _ in seen) <= 6
    assert all(slot == position for slot, position, _, _ in seen)
    # 29 rebuilds (3 frames at slot 0) and 30 blocks (at slot 0 for the first, 3 after)
    assert seen.count((0, 0, 3, 6 * TPF)) == 30 and seen.count((3, 3, 3, 6 * TPF)) == 29


def test_a_continued_krea_video_equals_one_long_run(model):
    """Two calls chained through the history (the second reencoder first decodes the first call's blocks) equal
    one long run bit for bit, a prompt switch in the second call included."""
    timeline = [PromptChange(0, prompt(seed=1)), PromptChange(12, prompt(seed=2))]
    whole = generate(model, timeline, Video(H, W, total_frames=18), KREA, recompute(3),
                     noise=Noise(generator=torch.Generator().manual_seed(3)), reencoder=_reencoder()).latents
    g = torch.Generator().manual_seed(3)
    first = generate(model, timeline[:1], Video(H, W, total_frames=9), KREA, recompute(3), noise=Noise(generator=g),
                     output=Output(record=True), reencoder=_reencoder())
    assert first.history.events and first.history.rebuilt.generated_blocks == 3
    reencoder = _reencoder()
    with pytest.raises(ValueError, match="has decoded 0 blocks but the video being continued has 3"):
        generate(model, prompt(seed=1), Video(H, W, total_frames=3, resume=first.history), KREA, recompute(3),
                 noise=Noise(seed=0), reencoder=reencoder)
    for b in range(3):
        reencoder.add(first.latents[:, :, 3 * b:3 * b + 3])
    second = generate(model, [PromptChange(0, prompt(seed=1)), PromptChange(3, prompt(seed=2))],
                      Video(H, W, total_frames=9, resume=first.history), KREA, recompute(3), noise=Noise(generator=g),
                      reencoder=reencoder)
    assert torch.equal(whole, torch.cat([first.latents, second.latents], dim=2))


def test_recompute_settings_are_checked(model):
    video, seed = Video(H, W, total_frames=6), Noise(seed=0)
    with pytest.raises(ValueError, match="pass a reencoder"):
        generate(model, prompt(), video, KREA, recompute(3), noise=seed)
    generate(model, prompt(), video, KREA, recompute(3, keep_first_frame=True), noise=seed)  # needs no reencoder
    with pytest.raises(ValueError, match="at least one latent frame"):
        recompute(0)
    with pytest.raises(ValueError, match="recompute policy only"):
        CachePolicy("rolling", 21, keep_first_frame=True)
    other = generate(model, prompt(), video, KREA, rolling(6), noise=seed, output=Output(record=True))
    with pytest.raises(ValueError, match="recorded with a rolling window"):
        generate(model, prompt(), Video(H, W, total_frames=6, resume=other.history), KREA, recompute(3), noise=seed,
                 reencoder=_reencoder())
    assert decoded_frames_kept(3) == 9 and recompute(3).cache_frames(3) == 6


def test_a_reencoded_frame_that_requires_grad_builds_no_graph(model):
    """A host VAE whose parameters require grad (ComfyUI's, outside its executor) returns an encoded frame that
    carries an autograd graph: fed into the KV cache, every later block would chain onto it and device memory
    would grow without end. Sampling records no graph."""
    weight = torch.ones((), requires_grad=True)
    vae = StandinVae()
    reencoder = ReencodedFrames(vae.decode, lambda frame: StandinVae.encode(frame) * weight, 3)
    result = generate(model, prompt(), Video(H, W, total_frames=12), KREA, recompute(3), noise=Noise(seed=0),
                      reencoder=reencoder)
    assert not result.latents.requires_grad and result.latents.grad_fn is None
