"""CUDA graphs for every cache policy, checked on the CPU with a stand-in that has a graph's semantics.

A CUDA graph freezes everything its capture saw as a Python value (shapes, slot numbers, positions passed as
ints) and re-reads only the contents of the tensors it captured. `ReplayedClosures` keeps exactly that contract:
a capture keeps the forward's closure, with every Python value bound at capture time, and a replay runs it again
on whatever the captured buffers hold now. So if a position or a slot were baked into a capture instead of read
from a buffer, a replay at another position would give other numbers and these tests would fail. The real graphs
are checked the same way on the GPU (tests/test_gpu.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from causal import Compute, Noise, Output, PromptChange, Schedule, Video, generate
from causal.cache_policy import ema_sink, fragments, recompute, rolling, sink
from causal.graphs import CudaGraphs
from tools.tiny import prompt, tiny_model

H, W = 32, 48
TWO_STEPS = Schedule("two steps", (1000, 500), shift=8.0, warp=False, clean_pass=True)


class ReplayedClosures(CudaGraphs):
    """CudaGraphs on the CPU: capture = keep the closure; replay = run it again into the captured output buffer."""

    @staticmethod
    def _check_device(device: torch.device) -> torch.device:
        return device

    def _start_capturing(self, device: torch.device) -> None:
        pass

    def _capture(self, run):
        out = run()
        static_out = out.clone()
        # a graph reads the weights at their addresses at capture: a replay after they moved would read freed memory
        weights = [(t, t.data_ptr()) for t in (*self.model.parameters(), *self.model.buffers())]
        # what the forward reads from the cache object itself: a graph keeps the rows it skipped at capture and the
        # key-phase tensor it read then (its address), whatever the cache says at replay
        protected, key_phases = self.cache.protected, self.cache.key_phases

        def replay() -> None:
            if any(t.data_ptr() != address for t, address in weights):
                raise RuntimeError("a replay read weights that had moved since its capture")
            now = self.cache.protected, self.cache.key_phases
            self.cache.protected, self.cache.key_phases = protected, key_phases
            try:
                static_out.copy_(run())
            finally:
                self.cache.protected, self.cache.key_phases = now

        return out, replay, static_out


@pytest.fixture(scope="module")
def model():
    return tiny_model(torch.bfloat16)


POLICIES = {
    "fragments": (fragments(9), 15),
    "rolling": (rolling(6), 24),
    "sink": (sink(3, 9), 24),
    "recompute": (recompute(3, keep_first_frame=True), 15),
    "ema_sink": (ema_sink(3, 9, 0.5), 24),  # keys rotated when read, at slot positions
    "rolling_rope_at_read": (dataclasses.replace(rolling(6), rope_at_read=True), 24),  # at ever new positions
}


def _graphs(model, policy, kv_cache_fp8=False):
    return ReplayedClosures(model, batch=1, height=H, width=W, num_frames=policy.cache_frames(3), device="cpu",
                            kv_cache_fp8=kv_cache_fp8)


def _video(model, policy, total, graphs=None, context=None, kv_cache_fp8=False, progress=None):
    context = prompt(seed=1) if context is None else context
    return generate(model, context, Video(H, W, num_frames=9, total_frames=total), TWO_STEPS, policy,
                    noise=Noise(seed=4), compute=Compute(graphs=graphs, kv_cache_fp8=kv_cache_fp8),
                    output=Output(progress=progress))


@pytest.mark.parametrize("name", list(POLICIES))
def test_graphs_give_every_policy_the_exact_numbers(model, name):
    """Past the window the same slot is replayed at ever new positions (rolling, sink), fragments restart at slot 0,
    recompute rebuilds its context at fixed slots: bit for bit the path without graphs, in a first call (captures)
    and a second one (replays only)."""
    policy, total = POLICIES[name]
    exact = _video(model, policy, total).latents
    graphs = _graphs(model, policy)
    assert torch.equal(_video(model, policy, total, graphs).latents, exact)
    captures = graphs.captures
    assert 0 < captures < graphs.replays
    assert torch.equal(_video(model, policy, total, graphs).latents, exact)
    assert graphs.captures == captures  # the second video only replays


def test_a_prompt_switch_with_a_kept_sink_runs_beside_the_graphs(model):
    """LongLive's re-cache skips the sink's rows (protected): it runs eagerly on the graphs' cache, and the video,
    switch included, equals the one without graphs; a continued video through the graphs equals one long run."""
    policy = sink(3, 9)
    # at frame 9 the video still fits the window (every row re-cached); at 15 the sink's rows are kept
    timeline = [PromptChange(0, prompt(seed=1)), PromptChange(9, prompt(seed=2)), PromptChange(15, prompt(seed=3))]
    exact = _video(model, policy, 24, context=timeline).latents
    graphs = _graphs(model, policy)
    assert torch.equal(_video(model, policy, 24, graphs, context=timeline).latents, exact)
    g = torch.Generator().manual_seed(4)
    first = generate(model, timeline[:2], Video(H, W, total_frames=12), TWO_STEPS, policy, noise=Noise(generator=g),
                     compute=Compute(graphs=graphs), output=Output(record=True))
    second = generate(model, [PromptChange(0, prompt(seed=2)), PromptChange(3, prompt(seed=3))],
                      Video(H, W, total_frames=12, resume=first.history), TWO_STEPS, policy, noise=Noise(generator=g),
                      compute=Compute(graphs=graphs))
    assert torch.equal(torch.cat([first.latents, second.latents], dim=2), exact)


@pytest.mark.parametrize("name", ["rolling", "sink"])
def test_graphs_with_an_fp8_cache_give_its_numbers_and_refuse_the_other_kind(model, name):
    """The FP8 cache's scales are buffers the graphs read like its rows: bit for bit the path without graphs."""
    policy, total = POLICIES[name]
    exact = _video(model, policy, total, kv_cache_fp8=True).latents
    graphs = _graphs(model, policy, kv_cache_fp8=True)
    assert torch.equal(_video(model, policy, total, graphs, kv_cache_fp8=True).latents, exact)
    assert not torch.equal(exact, _video(model, policy, total).latents)
    with pytest.raises(ValueError, match="FP8 KV cache"):
        _video(model, policy, total, graphs)
    graphs.release()
    assert graphs.nbytes == 0


def test_weights_moved_under_the_graphs_drop_them_and_the_video_keeps_its_numbers(model, caplog):
    """A host moving the weights mid-video (ComfyUI unloading part of the model for a VAE encode, then loading it
    again): the captures are dropped and made again at the new addresses, and the video is the one without graphs."""
    policy, total = POLICIES["sink"]
    exact = _video(model, policy, total).latents
    moved = tiny_model(torch.bfloat16)
    graphs = _graphs(moved, policy)

    def move_the_weights(p) -> None:
        if p.step == p.steps - 1 and p.completed in (2 * p.steps, 5 * p.steps):  # after blocks 2 and 5
            for t in (*moved.parameters(), *moved.buffers()):
                t.data = t.data.clone()

    with caplog.at_level("WARNING", logger="comfyui-causvid"):
        assert torch.equal(_video(moved, policy, total, graphs, progress=move_the_weights).latents, exact)
    assert graphs.dropped == 2 and "weights moved" in caplog.text
    assert graphs.replays > 0


def test_graphs_for_another_cache_size_are_refused(model):
    graphs = _graphs(model, rolling(6))
    with pytest.raises(ValueError, match="another model or video shape"):
        _video(model, sink(3, 9), 12, graphs)
    with pytest.raises(ValueError, match="another model or video shape"):
        _video(model, recompute(6, keep_first_frame=True), 12, graphs)  # 6 + 3 frames of cache, not 6


def test_released_graphs_hold_no_cache(model):
    graphs = _graphs(model, rolling(6))
    _video(model, rolling(6), 12, graphs)
    assert graphs.nbytes > 0 and graphs.graphs
    graphs.release()
    assert graphs.nbytes == 0 and not graphs.graphs


def test_graphs_refuse_the_cuda_malloc_async_allocator(monkeypatch):
    """Under cudaMallocAsync (ComfyUI's default allocator) a capture of a compiled kernel fails and the failed
    capture aborts the process when freed: refused up front, with what to do."""
    from causal import graphs as graphs_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_allocator_backend", lambda: "cudaMallocAsync")
    assert "--disable-cuda-malloc" in graphs_module.allocator_unsupported()
    with pytest.raises(ValueError, match="native CUDA allocator, not cudaMallocAsync"):
        CudaGraphs(tiny_model(torch.bfloat16), batch=1, height=H, width=W, num_frames=6, device="cuda")
    monkeypatch.setattr(torch.cuda, "get_allocator_backend", lambda: "native")
    assert graphs_module.allocator_unsupported() is None


def test_graphs_kept_from_a_read_time_policy_give_a_write_time_one_its_own_numbers(model):
    """One CudaGraphs (one cache, as the nodes keep them per shape) first under keys rotated when read, then under
    the same window with keys rotated when written: the second video is its own exact one (the captures of the
    first are not replayed for it, and the cache no longer rotates at read)."""
    read = dataclasses.replace(rolling(6), rope_at_read=True, positions="slot")
    graphs = _graphs(model, rolling(6))
    assert torch.equal(_video(model, read, 24, graphs).latents, _video(model, read, 24).latents)
    assert torch.equal(_video(model, rolling(6), 24, graphs).latents, _video(model, rolling(6), 24).latents)
