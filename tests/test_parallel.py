"""Sequence parallel (`causal.parallel`) on two gloo processes of the CPU, against one process.

The tiny model has 2 heads, so it splits over 2 ranks: each rank holds one head of the KV cache and 3 of each
frame's 6 tokens. One launch runs every case below on both ranks (starting processes costs seconds); the test
process runs the same cases alone, without a group, and compares. On the CPU the two give the same numbers bit for
bit (measured rel-L2 0.0 for every case; the matrix products of half the rows and the attention of one head round
as those of the whole do), so the tolerance below is the bf16 tolerance a GPU's kernels would need, not what is
seen here. Then a killed rank and a stalled one: the launcher raises instead of hanging, and no process is left.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import torch

import causal
from causal import Compute, Noise, Output, PromptChange, Schedule, Video, generate
from causal.cache_policy import ema_sink, fragments, infinity_rope, multi_shot_sink, recompute, rolling, sink
from causal.context import ContextWindow
from causal.kv_cache import KVCache
from causal.parallel import ParallelError, SequenceParallel, run_local
from tools.tiny import TINY, TINY_5B, prompt, tiny_model

H, W = 32, 48  # 6 tokens per latent frame: 3 per rank
TPF = 6
TOLERANCE = 1e-2
"""rel-L2 that bf16 rounding in other shapes allows (GPU kernels); the CPU gives 0."""
FAST = Schedule("two steps", (1000, 500), shift=8.0, warp=False)
LIGHTX2V_LIKE = Schedule("two steps, no clean pass", (999, 500), shift=8.0, warp=True, clean_pass=False,
                         lightx2v_arithmetic=True)
LONGLIVE2 = causal.SCHEDULES["LongLive 2.0 5B"].with_steps((999, 833))


def _latents(frames: int, seed: int) -> torch.Tensor:
    return torch.randn(1, 16, frames, H // 8, W // 8, generator=torch.Generator().manual_seed(seed)).bfloat16()


def _switch_at(frame: int, cut: bool = False) -> list[PromptChange]:
    return [PromptChange(0, prompt(seed=0)), PromptChange(frame, prompt(seed=1), cut=cut)]


def _generate(parallel: SequenceParallel | None, model: Any, context: Any, video: Video, schedule: Schedule,
              policy: Any = None, **compute: Any) -> torch.Tensor:
    return generate(model, context, video, schedule, policy, noise=Noise(seed=0),
                    compute=Compute(parallel=parallel, **compute)).latents


def _resumed(parallel: SequenceParallel | None, model: Any) -> torch.Tensor:
    """Two blocks recorded, then two more in a second call that rebuilds the cache from the record."""
    g = torch.Generator().manual_seed(3)
    first = generate(model, prompt(), Video(H, W, total_frames=6), FAST, sink(3, 9), noise=Noise(generator=g),
                     compute=Compute(parallel=parallel), output=Output(record=True))
    second = generate(model, prompt(), Video(H, W, total_frames=6, resume=first.history), FAST, sink(3, 9),
                      noise=Noise(generator=g), compute=Compute(parallel=parallel))
    return torch.cat([first.latents, second.latents], dim=2)


def _with_graphs(parallel: SequenceParallel | None, model: Any) -> torch.Tensor:
    """Graphs on the CPU stand-in (`test_graphs.ReplayedClosures`): each rank's hold its heads of the cache and
    replay its share of the forward, the exchanges included."""
    from test_graphs import ReplayedClosures

    policy = sink(3, 9)
    graphs = ReplayedClosures(model, batch=1, height=H, width=W, num_frames=policy.cache_frames(3), device="cpu",
                              parallel=parallel)
    heads = TINY.num_heads if parallel is None else parallel.local_heads(TINY)
    assert graphs.cache.keys[0].shape[2] == heads
    latents = _generate(parallel, model, _switch_at(12), Video(H, W, total_frames=18), FAST, policy, graphs=graphs)
    assert graphs.replays > 0
    return latents


def _block_causal(parallel: SequenceParallel | None, model: Any) -> torch.Tensor:
    """The whole sequence in one pass under the block-causal mask: no cache, every query against every key."""
    x = _latents(6, seed=5)
    t = torch.full((1, 6), 500.0, dtype=torch.float64)
    frames = torch.arange(6).repeat_interleave(TPF) // 3
    mask = frames[None, :] <= frames[:, None]
    return model(x, t, model.text_kv(prompt(), torch.bfloat16), mask=mask, parallel=parallel)


CASES: dict[str, Callable[[SequenceParallel | None, Any, Any], torch.Tensor]] = {
    "fragments, 2 windows": lambda p, m, m5: _generate(p, m, prompt(), Video(H, W, num_frames=6, num_fragments=2),
                                                        FAST, fragments(6)),
    "rolling, evicting": lambda p, m, m5: _generate(p, m, prompt(), Video(H, W, total_frames=15), FAST, rolling(6)),
    "sink, re-cached at a switch": lambda p, m, m5: _generate(p, m, _switch_at(12), Video(H, W, total_frames=18), FAST,
                                                              sink(3, 9)),
    "sink, fp8 cache": lambda p, m, m5: _generate(p, m, prompt(), Video(H, W, total_frames=15), FAST, sink(3, 9),
                                                  kv_cache_fp8=True),
    "infinity-rope, keys rotated when read, flushed at a cut": lambda p, m, m5: _generate(
        p, m, _switch_at(9, cut=True), Video(H, W, total_frames=15), FAST, infinity_rope(1, 6)),
    "reward forcing, EMA sink": lambda p, m, m5: _generate(p, m, prompt(), Video(H, W, total_frames=18), FAST,
                                                           ema_sink(3, 9, 0.9)),
    "recompute": lambda p, m, m5: _generate(p, m, prompt(), Video(H, W, total_frames=12), FAST,
                                            recompute(3, keep_first_frame=True)),
    "no clean pass, start latents": lambda p, m, m5: _generate(
        p, m, prompt(), Video(H, W, total_frames=9, start_latents=_latents(2, seed=7)), LIGHTX2V_LIKE, rolling(6)),
    "rolling forcing, joint window": lambda p, m, m5: _generate(p, m, prompt(), Video(H, W, total_frames=18),
                                                                causal.SCHEDULES["Rolling Forcing 1.3B"]),
    "longlive 2.0, multi-shot sink": lambda p, m, m5: _generate(p, m5, _switch_at(16, cut=True),
                                                                Video(64, 96, total_frames=40), LONGLIVE2,
                                                                multi_shot_sink()),
    "resumed from a record": lambda p, m, m5: _resumed(p, m),
    "sink, CUDA graphs (replayed closures), re-cached at a switch": lambda p, m, m5: _with_graphs(p, m),
    "block-causal pass, no cache": lambda p, m, m5: _block_causal(p, m),
}


def _models() -> tuple[Any, Any]:
    return tiny_model(torch.bfloat16), tiny_model(torch.bfloat16, config=TINY_5B)


def _cache_shard(parallel: SequenceParallel) -> dict[str, Any]:
    """Three chunks written through a window on this rank's cache and through one on a whole cache (this process,
    no group): the rank's cache holds its head of every token, equal to that head of the whole cache."""
    model = tiny_model(torch.bfloat16)
    text = model.text_kv(prompt(), torch.bfloat16)
    caches = []
    for p in (parallel, None):
        heads = None if p is None else p.local_heads(TINY)
        cache = KVCache.for_video(TINY, batch=1, height=H, width=W, num_frames=6, dtype=torch.bfloat16,
                                  device="cpu", num_heads=heads)
        window = ContextWindow(model, rolling(6), cache, tokens_per_frame=TPF, parallel=p)
        window.text = text
        for seed in range(3):  # the third evicts the first
            window.write(_latents(3, seed), 0.0)
        caches.append(cache)
    shard, whole = caches
    heads = slice(parallel.rank, parallel.rank + 1)
    return {"shape": tuple(shard.keys[0].shape), "whole_shape": tuple(whole.keys[0].shape),
            "equal": all(torch.equal(a, b[:, :, heads]) for a, b in zip(shard.tensors(), whole.tensors()))}


def _all_cases(parallel: SequenceParallel) -> dict[str, Any]:
    model, model5 = _models()
    out: dict[str, Any] = {name: case(parallel, model, model5) for name, case in CASES.items()}
    out["cache"] = _cache_shard(parallel)
    return out


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def two_ranks() -> list[dict[str, Any]]:
    return run_local(_all_cases, 2, timeout_s=60.0)


@pytest.fixture(scope="module")
def one_process() -> dict[str, torch.Tensor]:
    model, model5 = _models()
    return {name: case(None, model, model5) for name, case in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_give_one_process_latents(two_ranks, one_process, name):
    rank0, rank1 = (r[name] for r in two_ranks)
    alone = one_process[name]
    assert torch.equal(rank0, rank1)  # the gathered result is every rank's
    assert rank0.shape == alone.shape and torch.isfinite(rank0).all()
    error = _rel_l2(rank0, alone)
    print(f"{name}: rel-L2 {error:.2e} against one process")
    assert error < TOLERANCE


def test_each_rank_holds_its_heads_of_the_kv_cache(two_ranks):
    for rank, result in enumerate(two_ranks):
        cache = result["cache"]
        assert cache["whole_shape"] == (1, 6 * TPF, TINY.num_heads, 128)
        assert cache["shape"] == (1, 6 * TPF, TINY.num_heads // 2, 128), rank
        assert cache["equal"], rank


def test_a_clean_run_leaves_no_process(two_ranks):
    assert multiprocessing.active_children() == []


# -- failures ------------------------------------------------------------------------------------------------


def _stop_at_block_one(parallel: SequenceParallel, how: str) -> None:
    def progress(p: causal.Progress) -> None:
        if parallel.rank == 1 and p.block == 1:
            if how == "kill":
                os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
            time.sleep(600)  # stalled

    generate(tiny_model(torch.bfloat16), prompt(), Video(H, W, total_frames=9), FAST, rolling(6),
             noise=Noise(seed=0), compute=Compute(parallel=parallel), output=Output(progress=progress))


@pytest.mark.parametrize("how, timeout_s", [("kill", 30.0), ("stall", 2.0)])
def test_a_killed_or_stalled_rank_is_an_error_not_a_hang(how, timeout_s):
    """The other rank fails in its next exchange (at once when the peer's sockets close, after the timeout when it
    stalls) and says so; the launcher then ends what is left and raises with what each rank said."""
    start = time.monotonic()
    with pytest.raises(ParallelError) as excinfo:
        run_local(_stop_at_block_one, 2, how, timeout_s=timeout_s)
    message = str(excinfo.value)
    assert "rank 0: Traceback" in message and "sequence parallel, rank 0 of 2" in message
    assert "another rank has stopped, failed or is slower than the process group's timeout" in message
    assert ("rank 1: died (signal 9)" if how == "kill" else "rank 1: still running") in message
    assert time.monotonic() - start < timeout_s + 15
    assert multiprocessing.active_children() == []


# -- refusals (no process group needed) --------------------------------------------------------------------------


@pytest.mark.parametrize("config, worlds", [("14B", (2, 4, 8)), ("1.3B", (2, 4)), ("5B", (2, 4, 8))])
def test_the_head_counts_split_over_the_gpu_counts_of_a_host(config, worlds):
    c = causal.PRESETS[config]
    size = (704, 1280) if config == "5B" else (480, 832)
    for world in worlds:  # past the model's checks only the missing group is left
        with pytest.raises(ParallelError, match="no process group"):
            SequenceParallel(None, 0, world).check(c, c.tokens_per_frame(*size), torch.device("cpu"))
    if config == "1.3B":
        with pytest.raises(ValueError, match="8 ranks do not divide them"):
            SequenceParallel(None, 0, 8).check(c, 1560, torch.device("cpu"))


def test_what_cannot_split_is_refused_clearly():
    model = tiny_model(torch.bfloat16)
    with pytest.raises(ValueError, match="2 attention heads over the ranks: 4 ranks do not divide them"):
        _generate(SequenceParallel(None, 0, 4), model, prompt(), Video(H, W, total_frames=3), FAST)
    with pytest.raises(ValueError, match="3 tokens per frame do not split over 2 ranks"):
        _generate(SequenceParallel(None, 0, 2), model, prompt(), Video(16, 48, total_frames=3), FAST)
    with pytest.raises(ValueError, match="CUDA graphs were made for another sequence-parallel group"):
        Compute(parallel=SequenceParallel(None, 0, 2), graphs=SimpleNamespace(parallel=None))
    with pytest.raises(ValueError, match="every rank must switch prompts at the same block"):
        _generate(SequenceParallel(None, 0, 2), model, causal.LivePrompts(prompt()), Video(H, W, total_frames=3),
                  FAST, rolling(6))
    with pytest.raises(ParallelError, match="no process group"):
        _generate(SequenceParallel(None, 0, 2), model, prompt(), Video(H, W, total_frames=3), FAST)
    with pytest.raises(ParallelError, match="no process group"):
        SequenceParallel.current()
