"""The causal DiT: KV-cached block evaluation equals the training-time block-causal pass, and the
numerics that parity depends on (RoPE layout, sinusoid, RMSNorm rounding, token order)."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from torch.nn import Linear

from causal.kernels import COMPILED, EAGER, direct_weights
from causal.kv_cache import KVCache
from causal.model import RMSNorm, default_cast, sinusoidal_embedding
from causal.rope import apply_rope, rope_frequencies, rope_phases, split_sizes
from tools.tiny import TINY, prompt, tiny_model


def _cached_blocks(model, x, t, text, frames_per_block=3, glue=EAGER, protected=0):
    b, _, frames, h, w = x.shape
    cache = KVCache(model.config.num_layers, b, frames * (h // 2) * (w // 2), model.config.num_heads,
                    model.config.head_dim, dtype=x.dtype, device=x.device)
    outs = [model(x[:, :, i:i + frames_per_block], t[:, i:i + frames_per_block], text, cache=cache,
                  cache_frame=i, rope_frame=i, glue=glue) for i in range(0, frames, frames_per_block)]
    if protected:  # rewrite the cache over protected leading rows (a re-cache under an attention sink)
        cache.protected = protected
        outs.append(model(x[:, :, :frames_per_block], t[:, :frames_per_block], text, cache=cache, cache_frame=0,
                          rope_frame=0, glue=glue))
    return torch.cat(outs, dim=2)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-6), (torch.bfloat16, 6e-3)])
def test_kv_cached_blocks_equal_block_causal_full_pass(dtype, tol):
    model = tiny_model(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 9, 8, 12, generator=g).to(dtype)
    t = torch.rand(2, 9, generator=g) * 1000  # a different timestep per frame
    text = model.text_kv(prompt(batch=2), dtype)
    full = model.forward_block_causal(x, t, text, frames_per_block=3)
    cached = _cached_blocks(model, x, t, text)
    assert cached.shape == (2, 16, 9, 8, 12) and cached.dtype == dtype
    error = _rel(cached, full)
    assert error < tol
    # the mask matters: without it the first block would see the future and differ far more
    unmasked = model(x, t, text)
    assert _rel(unmasked[:, :, :3], full[:, :, :3]) > 10 * error


def test_later_blocks_depend_on_the_cache_and_first_block_does_not_see_the_future():
    model = tiny_model()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 16, 6, 8, 8, generator=g)
    t = torch.full((1, 6), 500.0)
    text = model.text_kv(prompt(), torch.float32)
    base = _cached_blocks(model, x, t, text)
    changed = x.clone()
    changed[:, :, 4] += 1.0  # perturb block 1 only
    out = _cached_blocks(model, changed, t, text)
    assert torch.equal(out[:, :, :3], base[:, :, :3])
    x2 = x.clone()
    x2[:, :, 0] += 1.0  # perturb block 0: block 1 must change through the cache
    assert not torch.allclose(_cached_blocks(model, x2, t, text)[:, :, 3:], base[:, :, 3:])


def test_rewriting_a_slot_replaces_its_keys():
    """A later forward at the same slot (next step, clean pass) overwrites what the block cached."""
    model = tiny_model()
    g = torch.Generator().manual_seed(3)
    a, b, c = (torch.randn(1, 16, 3, 8, 8, generator=g) for _ in range(3))
    t = torch.full((1, 3), 250.0)
    text = model.text_kv(prompt(), torch.float32)
    cache = KVCache(2, 1, 6 * 16, 2, 128, dtype=torch.float32, device="cpu")
    model(a, t, text, cache=cache, cache_frame=0)
    model(b, t, text, cache=cache, cache_frame=0)  # overwrite slot 0 with b
    out = model(c, t, text, cache=cache, cache_frame=3, rope_frame=3)
    fresh = KVCache(2, 1, 6 * 16, 2, 128, dtype=torch.float32, device="cpu")
    model(b, t, text, cache=fresh, cache_frame=0)
    assert torch.equal(out, model(c, t, text, cache=fresh, cache_frame=3, rope_frame=3))


def test_rope_pairs_are_interleaved_and_split_22_21_21():
    assert split_sizes(128) == [22, 21, 21]
    freqs = rope_frequencies(128)
    assert freqs.shape == (1024, 64) and freqs.dtype == torch.complex128
    f, h, w = 2, 3, 4
    phases = rope_phases(freqs, 5, f, h, w)
    token = (1 * h + 2) * w + 3  # frame 1 (position 6), row 2, column 3
    for pair, position, theta in [(0, 6, 1.0), (7, 6, 10000 ** (-14 / 44)), (22, 2, 1.0),
                                  (22 + 5, 2, 10000 ** (-10 / 42)), (43 + 20, 3, 10000 ** (-40 / 42))]:
        x = torch.zeros(1, f * h * w, 1, 128, dtype=torch.float64)
        x[0, token, 0, 2 * pair] = 1.0  # real part of the pair
        y = apply_rope(x, phases)[0, token, 0]
        angle = position * theta
        assert y[2 * pair].item() == pytest.approx(math.cos(angle), abs=1e-12)
        assert y[2 * pair + 1].item() == pytest.approx(math.sin(angle), abs=1e-12)
        assert y.abs().sum().item() == pytest.approx(abs(math.cos(angle)) + abs(math.sin(angle)), abs=1e-12)


def test_rope_rotates_in_float64_and_rounds_once():
    """The references' complex128 product, rounded once to bf16; the fused kernel's real float64
    formulation gives the same numbers."""
    from causal.kernels import rope_rotate

    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 24, 2, 128, generator=g).to(torch.bfloat16)
    phases = rope_phases(rope_frequencies(128), 900, 2, 3, 4)
    expected = torch.view_as_real(torch.view_as_complex(x.double().reshape(1, 24, 2, 64, 2)) * phases)
    assert torch.equal(apply_rope(x, phases), expected.flatten(3).to(torch.bfloat16))
    assert torch.equal(rope_rotate(x, phases.real, phases.imag), apply_rope(x, phases))


def test_rope_positions_past_the_table_follow_the_closed_form():
    """Frames past the references' 1024-row table are rotated by the same exp(i·p·theta) in float64: a longer
    table agrees with the short one on its rows (bitwise) and the positions past it match the closed form."""
    table = rope_frequencies(128)
    longer = rope_frequencies(128, 4096)
    assert torch.equal(longer[:1024], table)
    for start in (1022, 1023, 1024, 3000, 1_000_000):
        phases = rope_phases(table, start, 3, 2, 2)
        temporal = split_sizes(128)[0]
        expected = rope_frequencies(128, 3, start=start)[:, :temporal]
        assert torch.equal(phases.view(3, 2, 2, -1)[:, 0, 0, :temporal], expected)
        assert torch.isfinite(torch.view_as_real(phases)).all()
    assert torch.equal(rope_phases(table, 1019, 3, 2, 2), rope_phases(longer, 1019, 3, 2, 2))
    # rows past the table equal what a long enough table holds, to float64 rounding of p·theta
    assert torch.allclose(rope_phases(table, 3000, 3, 2, 2), rope_phases(longer, 3000, 3, 2, 2), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="start at 0"):
        rope_phases(table, -1, 3, 2, 2)


def test_sinusoid_is_float64_cos_then_sin():
    emb = sinusoidal_embedding(256, torch.tensor([757, 0]))
    assert emb.dtype == torch.float64 and emb.shape == (2, 256)
    k = 10
    omega = 10000 ** (-k / 128)
    assert emb[0, k].item() == pytest.approx(math.cos(757 * omega), abs=1e-13)
    assert emb[0, 128 + k].item() == pytest.approx(math.sin(757 * omega), abs=1e-13)
    assert torch.equal(emb[1, :128], torch.ones(128, dtype=torch.float64))


def test_rmsnorm_normalises_in_float32_over_full_width_and_rounds_before_the_weight():
    norm = RMSNorm(256, 1e-6, default_cast, dtype=torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(256))
    x = (3 * torch.randn(5, 256)).to(torch.bfloat16)
    u = x.float()
    expected = (u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16) * norm.weight
    assert torch.equal(norm(x), expected)
    fused = (u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.float()).to(torch.bfloat16)
    assert not torch.equal(norm(x), fused)  # the rounding order is observable


def test_token_order_and_unpatchify_round_trip():
    """Token (f, h', w') owns pixels (f, 2h'+q, 2w'+r); its 64 outputs are ordered (q, r, c), c fastest."""
    model = tiny_model()
    f, h, w = 2, 3, 4
    out = torch.arange(f * h * w * 64, dtype=torch.float32).view(1, f, h * w, 64)
    video = model._unpatchify(out, (f, h, w))
    assert video.shape == (1, 16, f, 2 * h, 2 * w)
    token_f, token_h, token_w, q, r, c = 1, 2, 3, 1, 0, 5
    value = ((token_f * h + token_h) * w + token_w) * 64 + (q * 2 + r) * 16 + c
    assert video[0, c, token_f, 2 * token_h + q, 2 * token_w + r].item() == value


def test_text_kv_pads_to_512_unmasked_and_checks_width():
    model = tiny_model()
    short = prompt(tokens=7)
    padded = torch.cat([short, torch.zeros(1, 505, TINY.text_dim)], dim=1)
    a, b = model.text_kv(short, torch.float32), model.text_kv(padded, torch.float32)
    assert a.keys[0].shape == (1, TINY.num_heads, 512, 128)
    assert all(torch.equal(x, y) for x, y in zip(a.keys + a.values, b.keys + b.values))
    with pytest.raises(ValueError, match="text_dim"):
        model.text_kv(torch.zeros(1, 5, 32), torch.float32)
    with pytest.raises(ValueError, match="at most 512"):
        model.text_kv(torch.zeros(1, 513, TINY.text_dim), torch.float32)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 0.0), (torch.bfloat16, 0.0)])
def test_fused_compositions_compute_the_eager_numbers(monkeypatch, dtype, tol):
    """The compiled glue's own code (RMSNorm + RoPE in one function, keys/values written straight into
    their cache slots, protected sink rows skipped, the cross residual folded into the FFN's LayerNorm),
    run uncompiled on the CPU, gives the exact path's numbers with and without a cache: only the compiler
    may change rounding."""
    from causal import kernels

    model = tiny_model(dtype)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(1, 16, 6, 8, 12, generator=g).to(dtype)
    t = torch.rand(1, 6, generator=g) * 1000
    text = model.text_kv(prompt(), dtype)
    exact_cached = _cached_blocks(model, x, t, text, protected=20)
    exact_full = model.forward_block_causal(x, t, text, 3)
    used: set[str] = set()
    monkeypatch.setattr(kernels, "compiled", lambda fn: used.add(fn.__name__) or fn)
    fused_cached = _cached_blocks(model, x, t, text, glue=COMPILED, protected=20)
    fused_full = model.forward_block_causal(x, t, text, 3, glue=COMPILED)
    assert {"rms_norm_rope", "store_keys_values", "add_layer_norm_modulate"} <= used
    assert _rel(fused_cached, exact_cached) <= tol and _rel(fused_full, exact_full) <= tol


def test_residual_stream_is_token_major_in_memory():
    """Every block and the head get the residual stream contiguous [B, tokens, dim], as the references' torch.cat
    of the patch embeddings leaves it: a transposed view made every norm3 LayerNorm copy it (bench/RESULTS.md)."""
    model = tiny_model(torch.bfloat16)
    seen = []
    for module in [*model.blocks, model.head]:
        module.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous()))
    cache = KVCache.for_video(TINY, batch=1, height=64, width=96, num_frames=3, dtype=torch.bfloat16, device="cpu")
    model(torch.randn(1, 16, 3, 8, 12).bfloat16(), torch.rand(1, 3) * 1000, model.text_kv(prompt(), torch.bfloat16),
          cache=cache)
    assert seen == [True] * (len(model.blocks) + 1)


def test_compiled_read_time_keys_compute_the_eager_numbers(monkeypatch):
    """Keys cached un-rotated (the cache's `key_phases` set): the compiled glue's code (RMSNorm(k) and v written by
    one function, the visible keys rotated by another), run uncompiled, fills the cache with the eager path's rows
    and gives its outputs bit for bit, block after block."""
    from causal import kernels

    model = tiny_model(torch.bfloat16)
    g = torch.Generator().manual_seed(13)
    x = torch.randn(1, 16, 6, 8, 12, generator=g).bfloat16()
    t = torch.rand(1, 6, generator=g) * 1000
    text = model.text_kv(prompt(), torch.bfloat16)

    def blocks(glue):
        cache = KVCache.for_video(TINY, batch=1, height=64, width=96, num_frames=6, dtype=torch.bfloat16,
                                  device="cpu")
        cache.key_phases = model.phases(0, x.shape, x.device)
        outs = [model(x[:, :, f:f + 3], t[:, f:f + 3], text, cache=cache, cache_frame=f, rope_frame=f, glue=glue)
                for f in (0, 3)]
        return outs, cache.keys + cache.values

    exact_outs, exact_rows = blocks(EAGER)
    used: set[str] = set()
    monkeypatch.setattr(kernels, "compiled", lambda fn, **_: used.add(fn.__name__) or fn)
    fused_outs, fused_rows = blocks(COMPILED)
    assert {"store_normed_keys_values", "rope_rotate"} <= used and "store_keys_values" not in used
    assert all(torch.equal(a, b) for a, b in zip(fused_outs + fused_rows, exact_outs + exact_rows))


def test_direct_weights_lends_only_layers_that_multiply_them_as_they_are():
    """A kernel may bypass a linear layer (the GELU epilogue) only for a plain torch.nn.Linear or a layer that lends
    its weights itself, with a bias, in the activations' dtype and device; anything else keeps its own forward."""
    layer = Linear(8, 4).bfloat16()
    x = torch.randn(2, 8).bfloat16()
    assert direct_weights(layer, x) == (layer.weight, layer.bias)
    assert direct_weights(layer, x.float()) is None  # a cast would be needed
    assert direct_weights(Linear(8, 4, bias=False).bfloat16(), x) is None

    class OwnArithmetic(torch.nn.Linear):  # e.g. fp8 products: its forward is not F.linear of its weights
        pass

    assert direct_weights(OwnArithmetic(8, 4).bfloat16(), x) is None

    class Lending(OwnArithmetic):
        lend = True

        def direct_weights(self, x):
            return (self.weight, self.bias) if self.lend else None

    lending = Lending(8, 4).bfloat16()
    assert direct_weights(lending, x) == (lending.weight, lending.bias)
    lending.lend = False  # casting, offloading or patching now
    assert direct_weights(lending, x) is None


@pytest.mark.parametrize("glue", [EAGER, COMPILED])
def test_feed_forward_is_the_sequential_ffn_off_cuda(glue):
    """The block's FFN through the glue equals nn.Sequential(Linear, GELU_tanh, Linear) bit for bit where no GELU
    epilogue runs (eagerly, and compiled off a CUDA device: the CPU's addmm activation is the erf GELU)."""
    block = tiny_model(torch.bfloat16).blocks[0]
    h = torch.randn(1, 40, TINY.dim, generator=torch.Generator().manual_seed(3)).bfloat16()
    assert torch.equal(block.feed_forward(h, glue), block.ffn(h))


def test_compiled_glue_on_the_cpu_stays_within_bf16_rounding():
    """The compiled glue for real (Inductor's CPU backend stands in for Triton here): a cached pass and a
    block-causal pass within bf16 rounding of the exact path, and deterministic."""
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("Inductor's CPU backend needs a C++ compiler")
    model = tiny_model(torch.bfloat16)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(1, 16, 6, 8, 12, generator=g).bfloat16()
    t = torch.rand(1, 6, generator=g) * 1000
    text = model.text_kv(prompt(), torch.bfloat16)
    exact = _cached_blocks(model, x, t, text, protected=20)
    fused = _cached_blocks(model, x, t, text, glue=COMPILED, protected=20)
    print(f"compiled vs exact: {_rel(fused, exact):.3g}")
    assert 0 < _rel(fused, exact) < 2e-2
    assert torch.equal(_cached_blocks(model, x, t, text, glue=COMPILED, protected=20), fused)


def test_compiled_kernels_allow_many_shapes_on_every_thread():
    """A kernel first wrapped on one thread and then run on another (a decode worker, ComfyUI's prompt thread)
    gets the raised recompile limit there too: newer torch keeps dynamo's config per thread, and past its
    default of 8 shapes a fullgraph kernel would fail."""
    import threading

    from causal import kernels

    kernels.compiled(kernels.rms_norm)  # wrapping compiles nothing yet
    seen = []
    thread = threading.Thread(target=lambda: (kernels.compiled(kernels.rms_norm),
                                              seen.append(torch._dynamo.config.recompile_limit)))
    thread.start()
    thread.join()
    assert seen[0] >= kernels.RECOMPILE_LIMIT


def test_flash_attention_glue_routes_self_attention_only(monkeypatch):
    """Glue(flash_attention=True) sends every block's self-attention (long keys) to FlashAttention-4 and leaves the
    cross-attention (512 text keys) on SDPA; where FA4 does not apply it is SDPA exactly."""
    import causal.attention
    import causal.kernels
    from causal.kernels import Glue

    calls = []

    def recorded(q, k, v, mask=None):
        calls.append(k.shape[2])
        return causal.attention.sdpa(q, k, v, mask)

    monkeypatch.setattr(causal.kernels, "flash4", recorded)
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 16, 6, 6, 8, generator=g), torch.rand(1, 6, generator=g) * 1000
    text = model.text_kv(prompt(), torch.float32)
    flash = Glue(compiled=False, flash_attention=True)
    assert torch.equal(_cached_blocks(model, x, t, text, glue=flash), _cached_blocks(model, x, t, text))
    assert calls == [36] * TINY.num_layers + [72] * TINY.num_layers  # the cached keys, never the 512 text keys
    assert flash != EAGER and len({flash, EAGER, COMPILED}) == 3  # distinct CUDA graph keys
    q, k, v = (torch.randn(1, 2, n, 8, generator=g) for n in (4, 6, 6))
    mask = torch.rand(4, 6, generator=g) > 0.3
    mask[:, 0] = True
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert torch.equal(causal.attention.flash4(q, k, v, mask), sdpa(q, k, v, attn_mask=mask))  # FA4 takes no mask
    assert torch.equal(causal.attention.flash4(q, k, v), sdpa(q, k, v))  # float32: FA4 takes bf16 / fp16 only


def test_flash_attention_is_refused_where_it_cannot_run():
    from causal import SCHEDULES, Compute, Noise, Video, generate
    from causal.attention import flash4_unavailable

    assert flash4_unavailable(torch.device("cpu")) == "FlashAttention-4 needs a CUDA device"
    with pytest.raises(RuntimeError, match="FlashAttention-4 needs a CUDA device"):
        generate(tiny_model(), prompt(), Video(48, 64, num_frames=3), SCHEDULES["CausVid 1.3B"],
                 noise=Noise(seed=0), compute=Compute(flash_attention=True))
