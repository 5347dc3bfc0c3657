"""LongLive 2.0 (causal Wan2.2-TI2V-5B): the 48-channel architecture, Wan's UniPC solver and the multi-shot sink
cache, each against what its code does (docs/checkpoint_families.md, "LongLive 2.0").

* the solver: the reference's own `FlowUniPCMultistepScheduler` was run once on seeded inputs (2026-12-03,
  NVlabs/LongLive @ 7860ad9, diffusers' scheduler base); the digests of every step's output are recorded here;
* the cache: a plain rendition of its `CausalWanSelfAttention` bookkeeping (global/local end indices, the pinned
  shot block and its effective sink, a clone written per layer and committed after the last one) and of its
  per-shot RoPE offset, written independently of `causal.context`;
* the loop: its `_inference_inner` (per-block solver, clean pass at t = 0, pin after the clean pass of a shot's
  first block, no re-cache at a prompt switch).
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from causal import Noise, Output, PromptChange, Video, generate
from causal.cache_policy import CachePolicy, family_policy, multi_shot_sink
from causal.config import PRESETS, WAN22_LATENTS, detect_config
from causal.context import ContextWindow
from causal.prompts import SCENE_CUT_PREFIX, open_shots
from causal.kv_cache import KVCache
from causal.rope import rope_frequencies
from causal.schedule import SCHEDULES, Schedule
from causal.unipc import UniPC, unipc_schedule
from tools.tiny import TINY_5B, prompt, tiny_model

H, W = 64, 96  # pixels: a 4 x 6 latent, 2 x 3 = 6 tokens per frame
h, w = 4, 6
TPF = 6
BLOCK = 8
SCHEDULE = SCHEDULES["LongLive 2.0 5B"]
TWO = SCHEDULE.with_steps((999, 833))


@pytest.fixture(scope="module")
def model():
    return tiny_model(torch.bfloat16, config=TINY_5B)


# -- the architecture --------------------------------------------------------------------------------------------


def test_the_5b_preset_is_wan22_ti2v_5b():
    c = PRESETS["5B"]
    assert (c.dim, c.ffn_dim, c.num_layers, c.num_heads, c.in_dim, c.out_dim) == (3072, 14336, 30, 24, 48, 48)
    assert c.latents is WAN22_LATENTS and c.pixel_multiple == 32
    # LongLive 2.0's 704x1280: a 44 x 80 latent, 880 tokens per frame (its `frame_seq_length`)
    assert c.latent_size(704, 1280) == (44, 80) and c.tokens_per_frame(704, 1280) == 880
    assert PRESETS["1.3B"].tokens_per_frame(480, 832) == 1560 and PRESETS["1.3B"].pixel_multiple == 16


def test_wrong_sizes_and_latents_are_refused_for_the_5b(model):
    with pytest.raises(ValueError, match="multiples of 32 pixels"):
        generate(model, prompt(), Video(48, 96, total_frames=BLOCK), TWO, multi_shot_sink())
    with pytest.raises(ValueError, match=r"start latents must be \[1, 48, frames, 4, 6\]"):
        generate(model, prompt(), Video(H, W, total_frames=BLOCK, start_latents=torch.zeros(1, 16, 1, 8, 12)),
                 TWO, multi_shot_sink())


# -- the solver --------------------------------------------------------------------------------------------------

REFERENCE_DIGESTS = {
    (2, torch.bfloat16): "ccb74a9c7c15394cf715da91a482b8ab",
    (2, torch.float32): "b662a20e1435134c44ec57c2a36c1de6",
    (4, torch.bfloat16): "3df9f02837b3c92ee5a461981c6df138",
    (4, torch.float32): "aac18cae1da105dda40ef9af900a600a",
}
"""sha256 (first 32 hex digits) of every step's sample, concatenated, from the reference's
`FlowUniPCMultistepScheduler(shift=1)` after `set_timesteps(n, shift=5.0)`, fed the inputs of `_solver_inputs`."""


def _solver_inputs(steps, dtype):
    g = torch.Generator().manual_seed(1234 + steps)
    x = torch.randn(1, 8, 48, 4, 6, generator=g).to(dtype)
    return x, [torch.randn(x.shape, generator=g).to(dtype) for _ in range(steps)]


@pytest.mark.parametrize("steps,dtype", list(REFERENCE_DIGESTS))
def test_unipc_steps_equal_the_reference_scheduler_bit_for_bit(steps, dtype):
    x, flows = _solver_inputs(steps, dtype)
    _, sigmas = unipc_schedule(steps, 5.0)
    solver, samples = UniPC(sigmas), []
    for v in flows:
        x, _ = solver.step(v, x)
        samples.append(x)
    digest = hashlib.sha256(b"".join(s.view(torch.uint8).numpy().tobytes() for s in samples)).hexdigest()
    assert digest[:32] == REFERENCE_DIGESTS[(steps, dtype)]


def test_unipc_schedule_is_the_references_list():
    timesteps, sigmas = unipc_schedule(4, 5.0)
    assert timesteps == (999.0, 937.0, 833.0, 624.0)  # int64 truncation of 1000 sigma
    assert sigmas == tuple(float(torch.tensor(s, dtype=torch.float32)) for s in (
        0.99979984, 0.93726546, 0.83305538, 0.62468737, 0.0))
    assert SCHEDULE.timesteps == timesteps and SCHEDULE.frames_per_block == 8 and SCHEDULE.clean_pass


def test_the_last_unipc_step_returns_its_x0_exactly():
    x, flows = _solver_inputs(4, torch.bfloat16)
    solver = UniPC(unipc_schedule(4, 5.0)[1])
    for v in flows:
        x, x0 = solver.step(v, x)
    assert torch.equal(x, x0)


def test_a_unipc_list_must_be_the_solvers():
    with pytest.raises(ValueError, match="999, 937, 833, 624"):
        Schedule("bad", (1000, 750, 500, 250), shift=5.0, warp=False, solver="unipc")
    with pytest.raises(ValueError, match="unknown solver"):
        Schedule("bad", (1000,), shift=5.0, warp=False, solver="euler")
    assert SCHEDULE.with_steps((999, 833)).sigmas == unipc_schedule(2, 5.0)[1][:-1]


# -- the cache and the loop, rendered ----------------------------------------------------------------------------


def _reference_phases(table, start_frame, frames, offset):
    """Its `causal_rope_apply` phases: the table's rows, or with a shot offset angle(table[1]) * (p + offset)."""
    t, hh, ww = table[:, :22], table[:, 22:43], table[:, 43:]
    if offset == 0:
        temporal = t[start_frame:start_frame + frames]
    else:
        positions = torch.arange(frames, dtype=torch.float64) + start_frame + float(offset)
        angles = positions.unsqueeze(-1) * torch.angle(t[1]).to(torch.float64).unsqueeze(0)
        temporal = torch.polar(torch.ones_like(angles), angles)
    rows, cols = h // 2, w // 2  # the 2x2 patch's token grid
    return torch.cat([
        temporal.view(frames, 1, 1, -1).expand(frames, rows, cols, -1),
        hh[:rows].view(1, rows, 1, -1).expand(frames, rows, cols, -1),
        ww[:cols].view(1, 1, cols, -1).expand(frames, rows, cols, -1),
    ], dim=-1).reshape(-1, 1, 64)


class LongLive2Cache:
    """Its self-attention cache for all layers: `global_end` / `local_end` in tokens, a pinned shot block
    (`pinned_start`, `pinned_len`), the sink `sink` (its `global_sink_size` = `sink_size` with multi_shot_sink),
    each layer's write into a clone, committed after the last layer (`_apply_cache_updates`). The cache holds as
    many tokens as attention reads (`local_attn_size` x frame tokens), so every forward reads [0, local_end)."""

    def __init__(self, layers, heads, window, sink):
        shape = (1, window * TPF, heads, 128)
        self.k = [torch.zeros(shape, dtype=torch.bfloat16) for _ in range(layers)]
        self.v = [torch.zeros(shape, dtype=torch.bfloat16) for _ in range(layers)]
        self.size, self.sink, self.layers = window * TPF, sink * TPF, layers
        self.global_end = self.local_end = 0
        self.pinned_start, self.pinned_len = -1, 0
        self.pending = {}

    def store(self, layer, start, k, v):
        n, end, size = k.shape[1], start + k.shape[1], self.size
        G, L = self.global_end, self.local_end
        has_pinned = self.pinned_start >= 0 and self.pinned_len > 0
        effective_sink = self.sink + self.pinned_len if has_pinned and self.pinned_start == self.sink else self.sink
        tk, tv = self.k[layer].clone(), self.v[layer].clone()
        shift = 0
        if end > G and n + L > size:
            evicted = n + L - size
            rolled = L - evicted - effective_sink
            local_end = L + end - G - evicted
            for t in (tk, tv):
                t[:, effective_sink:effective_sink + rolled] = \
                    t[:, effective_sink + evicted:effective_sink + evicted + rolled].clone()
            shift = evicted if has_pinned and self.pinned_start >= effective_sink else 0
        else:
            local_end = L + end - G
        tk[:, local_end - n:local_end], tv[:, local_end - n:local_end] = k, v
        assert max(0, local_end - size) == 0  # the window always starts at 0 in its configuration
        self.pending[layer] = (tk, tv, end, local_end, shift)
        if layer == self.layers - 1:
            for i, (a, b, *_rest) in self.pending.items():
                self.k[i], self.v[i] = a, b
            self.global_end, self.local_end = end, local_end
            self.pinned_start -= shift
        return tk[:, :local_end].transpose(1, 2), tv[:, :local_end].transpose(1, 2)

    def pin_last_chunk(self, frames):
        self.pinned_start, self.pinned_len = self.local_end - frames * TPF, min(self.sink, frames * TPF)


def _longlive2(model, timeline, noise, schedule, *, window=32, sink=8, phi=8.0, image=None):
    """Its `_inference_inner`: per block a fresh solver over its steps, the clean pass at t = 0, a shot boundary (a
    cut in the timeline) moving the RoPE offset by phi and pinning the block after its clean pass; a prompt switch
    changes the text only. With `image` [B, 1, C, h, w] (frame-major), its image-to-video: the first block's first
    frame overwritten before every step and after it, at timestep 0 there."""
    table = rope_frequencies(128)
    cache = LongLive2Cache(model.config.num_layers, model.config.num_heads, window, sink)
    changes = {c.frame: c for c in timeline}
    text, shot, out = None, 0, []
    for b in range(noise.shape[1] // BLOCK):
        frame = BLOCK * b
        cut = False
        if frame in changes:
            text = model.text_kv(changes[frame].context, torch.bfloat16)
            cut = changes[frame].cut and b > 0
        if cut:
            shot += 1
        phases = _reference_phases(table, frame, BLOCK, shot * phi)
        latents = noise[:, frame:frame + BLOCK]  # [B, F, C, h, w], as its loop holds them
        solver = UniPC(tuple(schedule.sigmas) + (0.0,))
        clamp = image is not None and b == 0
        for tau in schedule.timesteps:
            t = torch.full((1, BLOCK), tau, dtype=torch.float32)
            if clamp:
                latents = latents.clone()
                latents[:, :1] = image
                t[:, :1] = 0
            v = model(latents.permute(0, 2, 1, 3, 4), t, text, cache=cache, cache_frame=frame, phases=phases)
            latents, _ = solver.step(v.permute(0, 2, 1, 3, 4), latents)
            if clamp:
                latents = latents.clone()
                latents[:, :1] = image
        out.append(latents.permute(0, 2, 1, 3, 4))
        model(out[-1], torch.zeros(1, BLOCK), text, cache=cache, cache_frame=frame, phases=phases)
        if cut:
            cache.pin_last_chunk(BLOCK)
    return torch.cat(out, dim=2)


def _noise(frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, frames, 48, h, w, generator=g).to(torch.bfloat16)


def _timeline(cuts):
    """A prompt at frame 0, switches at blocks 2 and 7; `cuts` says which of them start a shot."""
    return [PromptChange(0, prompt(seed=0)), PromptChange(16, prompt(seed=1), cut=cuts[0]),
            PromptChange(56, prompt(seed=2), cut=cuts[1])]


@pytest.mark.parametrize("cuts", [(True, True), (False, True), (False, False)])
def test_multi_shot_sink_reproduces_longlive2(model, cuts):
    """11 blocks in a 4-block cache: a shot pinned at block 2 floats to the sink's side and stays through
    evictions, a second shot at block 7 takes the pin; every shot moves the positions on by 8."""
    frames = 11 * BLOCK
    noise, timeline = _noise(frames), _timeline(cuts)
    expected = _longlive2(model, timeline, noise, TWO)
    got = generate(model, timeline, Video(H, W, total_frames=frames), TWO, family_policy(SCHEDULE.name),
                   noise=Noise(initial=noise)).latents
    assert torch.equal(got, expected)


def test_the_pin_and_the_offset_each_change_the_video(model):
    frames = 9 * BLOCK
    noise, timeline = _noise(frames), _timeline((True, False))
    full = generate(model, timeline, Video(H, W, total_frames=frames), TWO, multi_shot_sink(),
                    noise=Noise(initial=noise)).latents
    for other in (multi_shot_sink(rope_offset=0.0),
                  CachePolicy("sink", 32, 8, on_switch="keep", shot_rope_offset=8.0)):
        video = generate(model, timeline, Video(H, W, total_frames=frames), TWO, other,
                         noise=Noise(initial=noise)).latents
        assert torch.equal(video[:, :, :2 * BLOCK], full[:, :, :2 * BLOCK])  # the same until the shot
        assert not torch.equal(video, full)


def test_the_pinned_block_moves_to_the_sink_and_stays(model):
    """Shot blocks 2 and 7 in a 32-frame cache with an 8-frame sink: each is pinned where it was written and moves
    left with the evictions until it sits after the sink, where it stays until the next shot's block is pinned."""
    cache = KVCache(TINY_5B.num_layers, 1, 32 * TPF, TINY_5B.num_heads, 128, dtype=torch.bfloat16, device="cpu")
    window = ContextWindow(model, multi_shot_sink(), cache, tokens_per_frame=TPF, frames_per_block=BLOCK,
                           forward=lambda x, t, slot, position, offset: x)
    text = model.text_kv(prompt(), torch.bfloat16)
    window.set_prompt(prompt(), text, recache=False)
    block = torch.zeros(1, 48, BLOCK, h, w, dtype=torch.bfloat16)
    pinned, offsets = [], []
    for b in range(10):
        if b in (2, 7):
            window.set_prompt(prompt(seed=b), text, recache=True, cut=True)
        window.place(BLOCK)
        window.finish(block, 0.0)
        pinned.append(window.pinned)
        offsets.append(window.rope_offset)
    assert pinned == [None, None, 16, 16, 8, 8, 8, 24, 16, 8]
    assert offsets == [0, 0, 8, 8, 8, 8, 8, 16, 16, 16]


@pytest.mark.parametrize("first_blocks", [3, 5])
def test_a_continued_multi_shot_video_equals_one_long_run(model, first_blocks):
    """Two calls chained through the first one's history equal one run of 11 blocks, the shots before and after
    the break included (the second call's timeline counts from its own start)."""
    timeline = _timeline((True, True))
    first_frames = first_blocks * BLOCK
    one = generate(model, timeline, Video(H, W, total_frames=11 * BLOCK), TWO, multi_shot_sink(),
                   noise=Noise(seed=3)).latents
    g = torch.Generator().manual_seed(3)
    first = generate(model, [c for c in timeline if c.frame < first_frames], Video(H, W, total_frames=first_frames),
                     TWO, multi_shot_sink(), noise=Noise(generator=g), output=Output(record=True))
    rest = [PromptChange(0, prompt(seed=1)), PromptChange(56 - first_frames, prompt(seed=2), cut=True)]
    second = generate(model, rest, Video(H, W, total_frames=11 * BLOCK - first_frames, resume=first.history), TWO,
                      multi_shot_sink(), noise=Noise(generator=g)).latents
    assert torch.equal(torch.cat([first.latents, second], dim=2), one)


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="sink", window=32, sink=8, shot_sink=True), "on_switch 'keep'"),
    (dict(kind="rolling", window=32, on_switch="keep", shot_sink=True), "sink policy"),
])
def test_bad_multi_shot_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CachePolicy(**kwargs)


def test_a_multi_shot_sink_needs_whole_blocks():
    with pytest.raises(ValueError, match="whole 8-frame blocks"):
        multi_shot_sink(4, 32).check(8)
    with pytest.raises(ValueError, match="whole 8-frame blocks"):
        multi_shot_sink(8, 16).check(8)


def test_detect_config_reads_the_5b_layout():
    from causal.synthetic import random_state_dict
    sd = random_state_dict(TINY_5B, dtype=torch.bfloat16)
    assert detect_config(sd) == TINY_5B


def test_shot_offset_phases_are_the_references_angle_product():
    """A shot offset turns frame p by exp(i (p + offset) arg(table[1])), as its `compute_temporal_freqs` does: in the
    last bits of complex128 that is not the table's row p + offset, which the pack would otherwise use."""
    from causal.rope import rope_phases
    table = rope_frequencies(128)
    got = rope_phases(table, 5, 3, h // 2, w // 2, offset=16.0)
    assert torch.equal(got, _reference_phases(table, 5, 3, 16.0))
    assert not torch.equal(got, rope_phases(table, 21, 3, h // 2, w // 2))
    assert torch.allclose(got, rope_phases(table, 21, 3, h // 2, w // 2), rtol=0, atol=1e-13)


def test_a_preset_of_the_other_vae_is_refused(model):
    from causal.cache_policy import sink
    with pytest.raises(ValueError, match="48 latent channels; this model has 16 .*Wan2.1 VAE.*a Wan2.1 preset"):
        generate(tiny_model(torch.bfloat16), prompt(), Video(H, W, total_frames=BLOCK), TWO, multi_shot_sink())
    with pytest.raises(ValueError, match="16 latent channels; this model has 48 .*LongLive 2.0 5B preset"):
        generate(model, prompt(), Video(H, W, total_frames=6), SCHEDULES["LongLive 1.3B"], sink(3, 12))


def test_image_to_video_holds_the_first_frame_like_longlive2(model):
    """Its I2V: the image's latent is the first block's first frame, overwritten around every step at timestep 0;
    the result starts with it, and the later blocks attend to it."""
    frames = 6 * BLOCK
    noise, timeline = _noise(frames), _timeline((True, False))[:2]
    image = torch.randn(1, 1, 48, h, w, generator=torch.Generator().manual_seed(9)).to(torch.bfloat16)
    expected = _longlive2(model, timeline, noise, TWO, image=image)
    got = generate(model, timeline, Video(H, W, total_frames=frames, first_frame=image.transpose(1, 2)), TWO,
                   multi_shot_sink(), noise=Noise(initial=noise)).latents
    assert torch.equal(got, expected)
    assert torch.equal(got[:, :, :1], image.transpose(1, 2))
    text_only = generate(model, timeline, Video(H, W, total_frames=frames), TWO, multi_shot_sink(),
                         noise=Noise(initial=noise)).latents
    assert not torch.equal(got[:, :, BLOCK:], text_only[:, :, BLOCK:])


def test_a_first_frame_of_the_wrong_shape_is_refused(model):
    with pytest.raises(ValueError, match=r"one latent frame \[1, 48, 1, 4, 6\]"):
        generate(model, prompt(), Video(H, W, total_frames=BLOCK, first_frame=torch.zeros(1, 48, 2, h, w)), TWO,
                 multi_shot_sink())


def _merged_checkpoint(sd):
    """`model_bf16.pt` as its scripts/merge_lora_generator.py writes it: the wrapper's `model.`-prefixed state dict
    under `generator`, beside strings and flags."""
    return {"generator": {"model." + k: v for k, v in sd.items()},
            "checkpoint_format": "longlive_generator_merged_lora", "source_generator_ckpt": "base.pt",
            "source_lora_ckpt": "lora.pt", "model_name": "Wan2.2-TI2V-5B", "dtype": "bfloat16", "merged_lora": True}


@pytest.mark.parametrize("layout", ["merged", "bare"])
def test_its_checkpoint_layouts_load_as_the_5b(tmp_path, layout):
    from causal.checkpoint import read_checkpoint
    from causal.synthetic import random_state_dict
    sd = random_state_dict(TINY_5B, dtype=torch.bfloat16, seed=4)
    path = tmp_path / "model_bf16.pt"
    torch.save(_merged_checkpoint(sd) if layout == "merged" else {"model." + k: v for k, v in sd.items()}, path)
    checkpoint = read_checkpoint(path)
    assert checkpoint.config == TINY_5B and checkpoint.config.latents is WAN22_LATENTS
    assert checkpoint.state_dict.keys() == sd.keys()
    assert all(torch.equal(checkpoint.state_dict[k], v) for k, v in sd.items())


def test_its_lora_fits_the_5b_and_merges(tmp_path):
    """Its DMD LoRA (PEFT, every block linear, `generator_lora`) on the 48-channel layout: read, checked, merged."""
    from causal.lora import check_fits, merge_into, read_lora
    from causal.synthetic import random_state_dict
    from tools.tiny import peft_lora
    torch.save({"generator_lora": peft_lora(TINY_5B, rank=4)}, tmp_path / "lora.pt")
    lora = read_lora(tmp_path / "lora.pt", alpha=4)
    check_fits(lora, TINY_5B)
    sd = random_state_dict(TINY_5B, dtype=torch.bfloat16)
    before = sd["blocks.1.ffn.0.weight"].clone()
    merge_into(sd, lora)
    assert not torch.equal(sd["blocks.1.ffn.0.weight"], before)


# -- shots opened with the scene-cut prefix ----------------------------------------------------------------------


def _frames(timeline):
    return [(c.frame, c.cut, c.context) for c in timeline]


def test_a_cut_with_an_opening_opens_its_shot_with_it_for_one_block():
    """The opening (prefix + caption) drives the first block at or after the cut, the caption alone the next block
    on; no second change where a later change or the end of the video comes first."""
    p0, p1, o1, p2 = (prompt(seed=s) for s in range(4))
    assert SCENE_CUT_PREFIX == "The scene transitions. "
    timeline = [PromptChange(0, p0), PromptChange(16, p1, cut=True, opening=o1)]
    assert _frames(open_shots(timeline, BLOCK, 40)) == [(0, False, p0), (16, True, o1), (24, False, p1)]
    timeline = [PromptChange(0, p0), PromptChange(13, p1, cut=True, opening=o1), PromptChange(30, p2)]
    assert _frames(open_shots(timeline, BLOCK, 40)) == [(0, False, p0), (13, True, o1), (24, False, p1),
                                                         (30, False, p2)]
    timeline = [PromptChange(0, p0), PromptChange(13, p1, cut=True, opening=o1), PromptChange(20, p2)]
    assert _frames(open_shots(timeline, BLOCK, 40)) == [(0, False, p0), (13, True, o1), (20, False, p2)]
    timeline = [PromptChange(0, p0), PromptChange(32, p1, cut=True, opening=o1)]
    assert _frames(open_shots(timeline, BLOCK, 40)) == [(0, False, p0), (32, True, o1)]
    plain = [PromptChange(0, p0), PromptChange(16, p1, cut=True)]  # no opening: as it was (Infinity-RoPE's cut)
    assert open_shots(plain, BLOCK, 40) == plain


def test_generate_opens_shots_as_longlive2_prompts_them(model):
    """With a shot policy, a cut's opening drives its first block and the caption the rest of the shot: the video of
    the reference loop given those prompts block by block; a policy without shots reads the caption alone."""
    frames = 6 * BLOCK
    noise = _noise(frames)
    opening = prompt(seed=9)
    timeline = [PromptChange(0, prompt(seed=0)), PromptChange(16, prompt(seed=1), cut=True, opening=opening)]
    expanded = [PromptChange(0, prompt(seed=0)), PromptChange(16, opening, cut=True), PromptChange(24, prompt(seed=1))]
    expected = _longlive2(model, expanded, noise, TWO)
    got = generate(model, timeline, Video(H, W, total_frames=frames), TWO, multi_shot_sink(),
                   noise=Noise(initial=noise)).latents
    assert torch.equal(got, expected)
    without = generate(model, [PromptChange(0, prompt(seed=0)), PromptChange(16, prompt(seed=1), cut=True)],
                       Video(H, W, total_frames=frames), TWO, multi_shot_sink(), noise=Noise(initial=noise)).latents
    assert torch.equal(without[:, :, :16], got[:, :, :16]) and not torch.equal(without, got)
