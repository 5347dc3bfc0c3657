"""GPU checks (marked `gpu`, skipped without CUDA; run on the GPU machine, see bench/README.md)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import Linear

from causal import SCHEDULES, Compute, Noise, Output, Video, generate
from causal.kv_cache import KVCache
from tools.tiny import TINY, prompt, tiny_model

CUDA = torch.device("cuda")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_cached_blocks_equal_block_causal_pass_on_cuda():
    model = tiny_model(torch.bfloat16).to(CUDA)
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(1, 16, 9, 16, 24, generator=g, device="cuda").bfloat16()
    t = torch.rand(1, 9, generator=g, device="cuda") * 1000
    text = model.text_kv(prompt().to(CUDA), torch.bfloat16)
    full = model.forward_block_causal(x, t, text, frames_per_block=3).double()
    cache = KVCache(TINY.num_layers, 1, 9 * 96, TINY.num_heads, 128, dtype=torch.bfloat16, device="cuda")
    cached = torch.cat([model(x[:, :, i:i + 3], t[:, i:i + 3], text, cache=cache, cache_frame=i, rope_frame=i)
                        for i in range(0, 9, 3)], dim=2).double()
    assert ((cached - full).norm() / full.norm()).item() < 6e-3


def test_seeded_sampling_is_deterministic_on_cuda():
    model = tiny_model(torch.bfloat16).to(CUDA)
    video = Video(128, 192, num_frames=9, num_fragments=2)
    a = generate(model, prompt().to(CUDA), video, SCHEDULES["CausVid 1.3B"], noise=Noise(seed=3)).latents
    b = generate(model, prompt().to(CUDA), video, SCHEDULES["CausVid 1.3B"], noise=Noise(seed=3)).latents
    assert a.is_cuda and torch.equal(a, b)
    assert a.shape == (1, 16, 15, 16, 24) and torch.isfinite(a.float()).all()


def test_bf16_noise_draw_equals_rounded_fp32_draw():
    """The fact behind the noise contract (docs/algorithm.md §5.3): on CUDA, randn in bf16 is randn in fp32 rounded."""
    a = torch.randn(3, 16, 60, 104, generator=torch.Generator("cuda").manual_seed(0), device="cuda",
                    dtype=torch.bfloat16)
    b = torch.randn(3, 16, 60, 104, generator=torch.Generator("cuda").manual_seed(0), device="cuda").bfloat16()
    assert torch.equal(a, b)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _clip(model, fused=False, graphs=None):
    contexts = [prompt(seed=1).to(CUDA), prompt(seed=2).to(CUDA)]
    return generate(model, contexts, Video(128, 192, num_frames=9, num_fragments=2), SCHEDULES["CausVid 1.3B"],
                    noise=Noise(seed=5), compute=Compute(fused_kernels=fused, graphs=graphs)).latents


def test_fused_kernels_stay_within_bf16_tolerance():
    from causal import kernels

    if why := kernels.fused_unavailable(torch.device("cuda")):
        pytest.skip(why)
    model = tiny_model(torch.bfloat16).to(CUDA)
    exact, fused = _clip(model), _clip(model, fused=True)
    assert 0 <= _rel(fused, exact) < 5e-2
    assert torch.equal(_clip(model, fused=True), fused)  # deterministic


def test_gelu_epilogue_is_the_tanh_gelu_rounded_once(monkeypatch):
    """cuBLASLt's GELU epilogue (causal.kernels.linear_gelu) is the tanh GELU of the references, not the erf one:
    float32 through an identity product isolates it. In bf16 it is as close to the float64 FFN as the layers'
    twice-rounded product and GELU are, and the fused path of the sampler runs it."""
    import torch.nn.functional as F

    from causal import kernels

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    x = (torch.arange(4096, device=CUDA, dtype=torch.float32) - 2048).div(512).view(64, 64)  # -4 .. 4, exact
    out = kernels.linear_gelu(x, torch.eye(64, device=CUDA), torch.zeros(64, device=CUDA)).double()
    tanh, erf = F.gelu(x.double(), approximate="tanh"), F.gelu(x.double())
    assert (out - tanh).abs().max().item() < 1e-5 < (out - erf).abs().max().item()

    g = torch.Generator("cuda").manual_seed(0)
    layer = Linear(1536, 8960, device=CUDA, dtype=torch.bfloat16)
    h = torch.randn(1, 1560, 1536, generator=g, device=CUDA).bfloat16()
    ref = F.gelu(F.linear(h.double(), layer.weight.double(), layer.bias.double()), approximate="tanh")
    fused, eager = kernels.COMPILED.linear_gelu(layer, h), kernels.EAGER.linear_gelu(layer, h)
    assert not torch.equal(fused, eager) and _rel(fused, ref) <= _rel(eager, ref) < 4e-3

    calls, epilogue = [], kernels.linear_gelu
    monkeypatch.setattr(kernels, "linear_gelu", lambda *args: calls.append(1) or epilogue(*args))
    _clip(tiny_model(torch.bfloat16).to(CUDA), fused=True)
    assert calls


def test_fp8_block_linears_on_cuda():
    from causal import quantize_blocks_fp8

    model = tiny_model(torch.bfloat16).to(CUDA)
    exact = _clip(model)
    fp8 = _clip(quantize_blocks_fp8(model))
    assert torch.isfinite(fp8.float()).all() and 0 < _rel(fp8, exact) < 0.15


def test_cuda_graphs_replay_the_same_numbers_across_calls():
    from causal import CudaGraphs

    model = tiny_model(torch.bfloat16).to(CUDA)
    graphs = CudaGraphs(model, batch=1, height=128, width=192, num_frames=9)
    exact = _clip(model)
    assert torch.equal(_clip(model, graphs=graphs), exact)  # first call: eager + capture per slot
    assert torch.equal(_clip(model, graphs=graphs), exact)  # second call: replays only
    if not __import__("causal").kernels.fused_unavailable(torch.device("cuda")):
        fused = _clip(model, fused=True)
        assert torch.equal(_clip(model, fused=True, graphs=graphs), fused)
        assert torch.equal(_clip(model, fused=True, graphs=graphs), fused)
    with pytest.raises(ValueError, match="another model or video shape"):
        generate(model, prompt().to(CUDA), Video(64, 192, num_frames=9), SCHEDULES["CausVid 1.3B"], noise=Noise(seed=0),
                 compute=Compute(graphs=graphs))


@pytest.mark.parametrize("policy_name", ["rolling", "sink", "recompute", "ema_sink", "rolling_at_read"])
def test_cuda_graphs_replay_the_same_numbers_for_every_policy(policy_name):
    """Past the window one slot is replayed at ever new RoPE positions (read from a buffer): bit for bit the path
    without graphs, exact and fused, in a first call (captures) and a second (replays only), a prompt switch
    with LongLive's re-cache included; keys rotated when read (Reward Forcing's EMA sink, rolling at video
    positions) read their phases from the graphs' own buffer."""
    import dataclasses

    from causal import CudaGraphs, PromptChange, kernels
    from causal.cache_policy import ema_sink, recompute, rolling, sink

    policy = {"rolling": rolling(6), "sink": sink(3, 9), "recompute": recompute(3, keep_first_frame=True),
              "ema_sink": ema_sink(3, 9, 0.5),
              "rolling_at_read": dataclasses.replace(rolling(6), rope_at_read=True)}[policy_name]
    model = tiny_model(torch.bfloat16).to(CUDA)
    timeline = [PromptChange(0, prompt(seed=1).to(CUDA)), PromptChange(15, prompt(seed=2).to(CUDA))]
    graphs = CudaGraphs(model, batch=1, height=128, width=192, num_frames=policy.cache_frames(3))
    fused_options = [False] if kernels.fused_unavailable(CUDA) else [False, True]
    for fused in fused_options:
        def video(graphs=None):
            return generate(model, timeline, Video(128, 192, total_frames=24),
                            SCHEDULES["Self-Forcing / LongLive 1.3B"], policy, noise=Noise(seed=2),
                            compute=Compute(fused_kernels=fused, graphs=graphs)).latents

        exact = video()
        assert torch.equal(video(graphs=graphs), exact)
        captures = graphs.captures
        assert torch.equal(video(graphs=graphs), exact)
        assert graphs.captures == captures and graphs.replays > captures
    graphs.release()


def test_weights_moved_under_cuda_graphs_are_not_read_where_they_were():
    """Mid-video the weights move to new device memory and the old is zeroed (a host that unloads part of the model
    and loads it again): the graphs captured before are dropped and captured again, and the video is bit for bit
    the one without graphs (replays that read the old addresses would compute with zeros)."""
    from causal import CudaGraphs, kernels
    from causal.cache_policy import sink

    model = tiny_model(torch.bfloat16).to(CUDA)
    graphs = CudaGraphs(model, batch=1, height=128, width=192, num_frames=sink(3, 9).cache_frames(3))

    def move_the_weights(p) -> None:
        if p.step == p.steps - 1 and p.completed in (2 * p.steps, 5 * p.steps):
            for t in (*model.parameters(), *model.buffers()):
                old = t.data
                t.data = old.clone()
                old.zero_()

    for fused in [False] if kernels.fused_unavailable(CUDA) else [False, True]:
        def video(graphs=None, progress=None):
            return generate(model, prompt().to(CUDA), Video(128, 192, total_frames=24),
                            SCHEDULES["Self-Forcing / LongLive 1.3B"], sink(3, 9), noise=Noise(seed=2),
                            compute=Compute(fused_kernels=fused, graphs=graphs),
                            output=Output(progress=progress)).latents

        exact = video()
        dropped = graphs.dropped
        assert torch.equal(video(graphs=graphs, progress=move_the_weights), exact)
        assert graphs.dropped == dropped + 2 and graphs.replays > 0
    graphs.release()


@pytest.mark.parametrize("policy_name", ["rolling", "sink"])
def test_device_memory_is_flat_over_many_blocks(policy_name):
    """Allocator statistics at every block of a 45-block video (finished blocks go to the CPU): once the
    window is full, allocated and peak memory stay the same."""
    from causal.cache_policy import rolling, sink

    import gc

    policy = rolling(9) if policy_name == "rolling" else sink(3, 9)
    model = tiny_model(torch.bfloat16).to(CUDA)
    allocated, peaks = [], []
    gc.collect()  # no earlier test's garbage may be freed in the middle of the measurement

    def measure(p):
        if p.step == 0:
            torch.cuda.synchronize()
            allocated.append(torch.cuda.memory_allocated())
            peaks.append(torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()

    generate(model, prompt().to(CUDA), Video(128, 192, total_frames=135), SCHEDULES["CausVid 1.3B"], policy,
             noise=Noise(seed=0), output=Output(device="cpu", progress=measure))
    assert len(allocated) == 45
    assert max(allocated[5:]) == min(allocated[5:]), allocated
    assert max(peaks[6:]) == min(peaks[6:]), peaks


def test_sink_and_prompt_switch_on_cuda_match_the_cpu_bookkeeping():
    """The window policies on CUDA: a sink video with a prompt switch and a resumed continuation equal one run."""
    from causal import PromptChange
    from causal.cache_policy import sink

    model = tiny_model(torch.bfloat16).to(CUDA)
    timeline = [PromptChange(0, prompt(seed=1).to(CUDA)), PromptChange(12, prompt(seed=2).to(CUDA))]
    schedule, policy = SCHEDULES["CausVid 1.3B"], sink(3, 9)
    whole = generate(model, timeline, Video(64, 96, total_frames=24), schedule, policy,
                     noise=Noise(generator=torch.Generator("cuda").manual_seed(1)))
    g = torch.Generator("cuda").manual_seed(1)
    first = generate(model, timeline[:1], Video(64, 96, total_frames=9), schedule, policy, noise=Noise(generator=g),
                     output=Output(record=True))
    rest = generate(model, [PromptChange(0, timeline[0].context), PromptChange(3, timeline[1].context)],
                    Video(64, 96, total_frames=15, resume=first.history), schedule, policy, noise=Noise(generator=g))
    assert torch.equal(whole.latents, torch.cat([first.latents, rest.latents], dim=2))
    assert torch.isfinite(whole.latents.float()).all()


def test_out_of_memory_mid_video_leaves_nothing_behind_and_the_next_run_is_clean():
    """A real CUDA out-of-memory error in the fourth block (something else takes the card's memory): once the
    error is handled, device memory is back at its baseline and the next run equals a clean run bit for bit."""
    import gc

    from causal.cache_policy import rolling

    model = tiny_model(torch.bfloat16).to(CUDA)
    args = dict(video=Video(128, 192, total_frames=18), schedule=SCHEDULES["CausVid 1.3B"], policy=rolling(9),
                noise=Noise(seed=0))
    clean = generate(model, prompt().to(CUDA), **args).latents.cpu()
    gc.collect()
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    too_much = torch.cuda.get_device_properties(0).total_memory + 2**30

    def exhaust_memory_in_block_3(p):
        if p.block == 3 and p.step == 1:
            torch.empty(too_much, dtype=torch.uint8, device=CUDA)

    with pytest.raises(torch.OutOfMemoryError):
        generate(model, prompt().to(CUDA), output=Output(progress=exhaust_memory_in_block_3), **args)
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == baseline
    assert torch.equal(generate(model, prompt().to(CUDA), **args).latents.cpu(), clean)


def test_krea_recompute_on_cuda_continues_exactly_and_stays_flat():
    """The recompute policy on CUDA: allocated memory is the same at every block once the context is full and the
    first frame is re-encoded (blocks to the CPU, one prompt), and a continued video (its reencoder first given
    the blocks so far) equals one run bit for bit across a prompt switch."""
    from causal import PromptChange, ReencodedFrames
    from causal.cache_policy import recompute

    def reencoder():  # a causal stand-in VAE on the GPU: each block's frames depend on the blocks before it
        carry = [None]

        def decode(block):
            previous = carry[0] if carry[0] is not None else torch.zeros_like(block[:, :3, :1].float())
            frames = block[:, :3].float().cumsum(2) + previous
            carry[0] = frames[:, :, -1:].clone()
            return frames.repeat_interleave(4, dim=2).movedim(2, 0)  # [4n, B, 3, h, w]

        def encode(frame):
            return frame[0].repeat(1, 6, 1, 1)[:, :16].unsqueeze(2) * 0.5

        return ReencodedFrames(decode, encode, 3)

    model = tiny_model(torch.bfloat16).to(CUDA)
    schedule, policy = SCHEDULES["Krea Realtime 14B"], recompute(3)
    allocated = []

    def measure(p):
        if p.step == 0:
            torch.cuda.synchronize()
            allocated.append(torch.cuda.memory_allocated())

    generate(model, prompt().to(CUDA), Video(64, 96, total_frames=30), schedule, policy, noise=Noise(seed=0),
             output=Output(device="cpu", progress=measure), reencoder=reencoder())
    assert len(allocated) == 10 and max(allocated[3:]) == min(allocated[3:]), allocated

    timeline = [PromptChange(0, prompt(seed=1).to(CUDA)), PromptChange(12, prompt(seed=2).to(CUDA))]
    whole = generate(model, timeline, Video(64, 96, total_frames=30), schedule, policy,
                     noise=Noise(generator=torch.Generator("cuda").manual_seed(1)), reencoder=reencoder())
    g = torch.Generator("cuda").manual_seed(1)
    first = generate(model, timeline[:1], Video(64, 96, total_frames=9), schedule, policy, noise=Noise(generator=g),
                     output=Output(record=True), reencoder=reencoder())
    warm = reencoder()
    for b in range(3):
        warm.add(first.latents[:, :, 3 * b:3 * b + 3])
    rest = generate(model, [PromptChange(0, timeline[0].context), PromptChange(3, timeline[1].context)],
                    Video(64, 96, total_frames=21, resume=first.history), schedule, policy, noise=Noise(generator=g),
                    reencoder=warm)
    assert torch.equal(whole.latents, torch.cat([first.latents, rest.latents], dim=2))
    assert torch.isfinite(whole.latents.float()).all()


def test_host_copies_go_through_pinned_memory_and_stall_no_other_thread():
    """`to_host` gives the same values in pinned memory; while it waits for a busy stream, another thread's
    kernel launches go on (a pageable `.cpu()` holds them up in the driver for as long)."""
    import threading
    import time

    from causal.host import to_host

    x = torch.randn(4, 1024, 1024, device="cuda").permute(2, 0, 1)  # 16 MB, not contiguous
    out = to_host(x)
    assert out.is_pinned() and torch.equal(out, x.cpu())
    big = torch.randn(8192, 8192, device="cuda")

    def launches_while_copying(copy) -> float:
        """Seconds another thread takes to launch 200 small kernels 0.1 s into this thread's copy, which waits
        for ~1 s of queued GEMMs."""
        took = []

        def other() -> None:
            with torch.cuda.stream(torch.cuda.Stream()):
                y = torch.zeros(16, device="cuda")
                time.sleep(0.1)
                t0 = time.perf_counter()
                for _ in range(200):
                    y.add_(1)
                took.append(time.perf_counter() - t0)

        for _ in range(60):
            big @ big
        thread = threading.Thread(target=other)
        thread.start()
        copy(x)
        thread.join()
        torch.cuda.synchronize()
        return took[0]

    launches_while_copying(to_host)  # warm-up
    stalled = launches_while_copying(lambda t: t.cpu())
    free = launches_while_copying(to_host)
    print(f"another thread's 200 launches during a copy: pageable .cpu() {stalled:.3f} s, to_host {free:.3f} s")
    assert free < 0.1


def test_fp8_kv_cache_on_cuda_with_graphs_and_fused_kernels():
    """The FP8 cache in bf16 on the GPU: CUDA graphs replay its numbers bit for bit (exact and fused glue), and
    its video stays within 2e-2 rel-L2 of the bf16 cache's."""
    from causal import CudaGraphs, kernels
    from causal.cache_policy import sink

    policy = sink(3, 9)
    model = tiny_model(torch.bfloat16).to(CUDA)
    context = prompt(seed=1).to(CUDA)
    graphs = CudaGraphs(model, batch=1, height=128, width=192, num_frames=policy.cache_frames(3), kv_cache_fp8=True)
    for fused in [False] if kernels.fused_unavailable(CUDA) else [False, True]:
        def video(kv_cache_fp8=False, graphs=None):
            return generate(model, context, Video(128, 192, total_frames=24), SCHEDULES["Self-Forcing / LongLive 1.3B"],
                            policy, noise=Noise(seed=2),
                            compute=Compute(fused_kernels=fused, graphs=graphs, kv_cache_fp8=kv_cache_fp8)
                            ).latents.float()

        fp8 = video(kv_cache_fp8=True)
        assert torch.equal(video(kv_cache_fp8=True, graphs=graphs), fp8)
        bf16 = video()
        error = ((fp8 - bf16).norm() / bf16.norm()).item()
        print(f"fused={fused}: FP8 vs bf16 KV cache rel-L2 {error:.2e}")
        assert 0 < error <= 2e-2
    graphs.release()


def test_fp8_kv_cache_dequantizes_with_one_compiled_kernel_bit_for_bit():
    """On CUDA the FP8 cache dequantizes with its compiled kernel (one for every cache length), and that gives the
    eager arithmetic's numbers bit for bit."""
    from causal import kernels
    from causal.kv_cache_fp8 import Fp8KVCache, dequantize, quantize

    if kernels.fused_unavailable(CUDA):
        pytest.skip(kernels.fused_unavailable(CUDA))
    cache = Fp8KVCache(1, 1, 3 * 1560, 12, 128, dtype=torch.bfloat16, device=CUDA)
    assert cache.dequantize is not dequantize
    g = torch.Generator(device=CUDA).manual_seed(0)
    for tokens in (1560, 3 * 1560, 777):  # lengths vary as the cache fills: no recompile, same numbers
        x = torch.randn(1, tokens, 12, 128, device=CUDA, generator=g, dtype=torch.bfloat16) * 3
        q, s = quantize(x)
        assert torch.equal(cache.dequantize(q, s, torch.bfloat16), dequantize(q, s, torch.bfloat16))


def test_compiled_kernels_compile_on_two_threads_at_once():
    """The stream's decoder and the sampler compile their kernels on two threads on a first run: torch before 2.14
    fails a thread that calls a compiled function while another compiles ("FX to symbolically trace a
    dynamo-optimized function"); causal.kernels runs one compiled call at a time."""
    import threading

    from causal import kernels

    if kernels.fused_unavailable(CUDA):
        pytest.skip(kernels.fused_unavailable(CUDA))

    def scaled(x):  # a function of its own per thread, never compiled before
        return (x.float() * 3 + 1).to(x.dtype)

    def shifted(x):
        return (x.float() - 2).relu().to(x.dtype)

    errors, start = [], threading.Barrier(2)

    def work(fn):
        try:
            start.wait()
            for n in (1000, 2000, 3000, 4000):  # a new shape: a compile each
                kernels.compiled(fn)(torch.ones(n, device=CUDA, dtype=torch.bfloat16))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(fn,)) for fn in (scaled, shifted)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_graph_capture_beside_a_compile_on_another_thread():
    """A first stream run captures the sampler's CUDA graphs while the decoder thread compiles its kernels: an
    Inductor compile synchronizes the device, which breaks a capture under way, so captures and compiled calls
    take turns (causal.kernels.one_at_a_time); the replayed video equals the eager one."""
    import threading

    from causal import CudaGraphs, kernels
    from causal.cache_policy import sink

    if kernels.fused_unavailable(CUDA):
        pytest.skip(kernels.fused_unavailable(CUDA))
    policy = sink(3, 9)
    model = tiny_model(torch.bfloat16).to(CUDA)
    context = prompt(seed=1).to(CUDA)

    def video(graphs=None):
        return generate(model, context, Video(128, 192, total_frames=24), SCHEDULES["Self-Forcing / LongLive 1.3B"],
                        policy, noise=Noise(seed=2), compute=Compute(fused_kernels=True, graphs=graphs)).latents

    eager = video()
    stop, errors = threading.Event(), []

    def compiling() -> None:  # a reduction per new shape: Inductor autotunes (and synchronizes) as it compiles
        def rms(x):
            return x.float().pow(2).mean(-1, keepdim=True).rsqrt().to(x.dtype) * x

        n = 64
        try:
            while not stop.is_set() and n < 64 * 40:
                kernels.compiled(rms)(torch.ones(7, n, device=CUDA, dtype=torch.bfloat16))
                n += 64
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    worker = threading.Thread(target=compiling)
    worker.start()
    try:
        graphs = CudaGraphs(model, batch=1, height=128, width=192, num_frames=policy.cache_frames(3))
        replayed = video(graphs=graphs)
    finally:
        stop.set()
        worker.join()
    assert not errors, errors
    assert graphs.captures > 0 and torch.equal(replayed, eager)
    graphs.release()


def test_keys_rotated_when_read_equal_the_write_time_rotation_on_cuda():
    """The exact path with keys rotated at read equals write-time rotation bit for bit on the GPU (as on the CPU);
    fused, the RMSNorm and the rotation run as two compiled kernels instead of one, reported, not asserted equal,
    but within bf16 noise."""
    import dataclasses

    from causal import kernels
    from causal.cache_policy import sink

    model = tiny_model(torch.bfloat16).to(CUDA)
    fused_options = [False] if kernels.fused_unavailable(CUDA) else [False, True]
    for fused in fused_options:
        def video(policy):
            return generate(model, prompt(seed=1).to(CUDA), Video(128, 192, total_frames=21),
                            SCHEDULES["Self-Forcing / LongLive 1.3B"], policy, noise=Noise(seed=2),
                            compute=Compute(fused_kernels=fused)).latents.float()

        written, read = video(sink(3, 9)), video(dataclasses.replace(sink(3, 9), rope_at_read=True))
        if not fused:
            assert torch.equal(written, read)
        else:
            error = ((written - read).norm() / written.norm()).item()
            print(f"fused, rotated at read vs at write: rel-L2 {error:.3e}")
            assert error < 2e-2


def test_rolling_forcing_on_cuda_exact_and_fused():
    """Rolling Forcing's joint window on the GPU: exact twice gives the same bits; fused within bf16 noise of it."""
    from causal import kernels

    model = tiny_model(torch.bfloat16).to(CUDA)

    def video(fused):
        return generate(model, prompt(seed=1).to(CUDA), Video(128, 192, total_frames=21),
                        SCHEDULES["Rolling Forcing 1.3B"], noise=Noise(seed=2),
                        compute=Compute(fused_kernels=fused)).latents.float()

    exact = video(False)
    assert torch.isfinite(exact).all() and torch.equal(exact, video(False))
    if not kernels.fused_unavailable(CUDA):
        fused = video(True)
        error = ((fused - exact).norm() / exact.norm()).item()
        print(f"Rolling Forcing fused vs exact: rel-L2 {error:.3e}")
        assert error < 2e-2


def test_flash_attention_replays_its_own_numbers_and_stays_near_sdpa():
    """FlashAttention-4 (where installed, Hopper / Blackwell): CUDA graphs replay its eager numbers bit for bit, a
    graph of SDPA's is never replayed for it (and back), and it stays as near SDPA as another kernel does."""
    from causal import CudaGraphs, cache_policy
    from causal.attention import flash4_unavailable

    if why := flash4_unavailable(CUDA):
        pytest.skip(why)
    model = tiny_model(torch.bfloat16).to(CUDA)
    policy = cache_policy.sink(3, 6)
    graphs = CudaGraphs(model, batch=1, height=128, width=192, num_frames=policy.cache_frames(3))

    def clip(**options):
        return generate(model, prompt().to(CUDA), Video(128, 192, total_frames=18),
                        SCHEDULES["Self-Forcing / LongLive 1.3B"], policy, noise=Noise(seed=0),
                        compute=Compute(fused_kernels=True, **options)).latents.float()

    flash, sdpa = clip(flash_attention=True), clip()
    for _ in range(2):  # captures, then replays
        assert torch.equal(clip(flash_attention=True, graphs=graphs), flash)
        assert torch.equal(clip(graphs=graphs), sdpa)
    assert ((flash - sdpa).norm() / sdpa.norm()).item() < 2e-2


def test_longlive2_shots_replay_in_cuda_graphs_bit_for_bit():
    """LongLive 2.0 on the GPU (the tiny 5B layout, 8-frame blocks, UniPC with its 2x2 solve on the device): CUDA
    graphs give the eager numbers, exact and fused, with two shots (each a new RoPE offset the graphs' phases must
    follow: the same slot replayed at the same position with another offset) and an image-held first frame."""
    from causal import CudaGraphs, PromptChange, kernels
    from causal.cache_policy import multi_shot_sink
    from tools.tiny import TINY_5B

    model = tiny_model(torch.bfloat16, config=TINY_5B).to(CUDA)
    schedule = SCHEDULES["LongLive 2.0 5B"]
    timeline = [PromptChange(0, prompt(seed=1).to(CUDA)), PromptChange(16, prompt(seed=2).to(CUDA), cut=True),
                PromptChange(48, prompt(seed=3).to(CUDA), cut=True)]
    image = torch.randn(1, 48, 1, 4, 6, generator=torch.Generator().manual_seed(1)).to(CUDA, torch.bfloat16)
    policy = multi_shot_sink()
    graphs = CudaGraphs(model, batch=1, height=64, width=96, num_frames=policy.cache_frames(8))
    fused_options = [False] if kernels.fused_unavailable(CUDA) else [False, True]
    for fused in fused_options:
        def video(graphs=None):
            return generate(model, timeline, Video(64, 96, total_frames=80, first_frame=image), schedule, policy,
                            noise=Noise(seed=2), compute=Compute(fused_kernels=fused, graphs=graphs)).latents

        exact = video()
        assert torch.equal(exact[:, :, :1], image) and torch.isfinite(exact.float()).all()
        assert torch.equal(video(graphs=graphs), exact)
        captures = graphs.captures
        assert torch.equal(video(graphs=graphs), exact)
        assert graphs.captures == captures and graphs.replays > captures
    graphs.release()
