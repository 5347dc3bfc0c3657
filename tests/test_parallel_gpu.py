"""Sequence parallel over NCCL (marked `gpu`, skipped without CUDA): world size 1 on one GPU, 2 where there are two,
against one process on GPU 0, exact and with the fused glue / FlashAttention-4 where they run."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

import causal
from causal.cache_policy import rolling, sink
from causal.parallel import SequenceParallel, run_local
from test_parallel import FAST, H, TOLERANCE, W, _generate, _rel_l2, _switch_at
from tools.tiny import prompt, tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

POLICIES = {"rolling": rolling(6), "sink, keys rotated when read": dataclasses.replace(sink(3, 9), rope_at_read=True)}


def _options(device: torch.device) -> dict[str, dict[str, bool]]:
    options = {"exact": {}, "fp8 cache": {"kv_cache_fp8": True}}
    if causal.kernels.fused_unavailable(device) is None:
        options["fused"] = {"fused_kernels": True}
    if causal.attention.flash4_unavailable(device) is None:
        options["flash attention"] = {"flash_attention": True}
    return options


def _cases(parallel: SequenceParallel | None) -> dict[str, torch.Tensor]:
    device = torch.device("cuda", 0 if parallel is None else parallel.rank)
    model = tiny_model(torch.bfloat16).to(device)
    out = {}
    for name, policy in POLICIES.items():
        for option, compute in _options(device).items():
            context = _switch_at(9) if "sink" in name else prompt()
            out[f"{name}, {option}"] = _generate(parallel, model, context, causal.Video(H, W, total_frames=15), FAST,
                                                 policy, **compute).cpu()
    return out


@pytest.fixture(scope="module")
def one_gpu() -> dict[str, torch.Tensor]:
    return _cases(None)


@pytest.mark.parametrize("world", [1, 2])
def test_nccl_ranks_give_one_process_latents(one_gpu: dict[str, Any], world: int) -> None:
    if torch.cuda.device_count() < world:
        pytest.skip(f"needs {world} GPUs")
    ranks = run_local(_cases, world, device_type="cuda", timeout_s=120.0)
    for name, alone in one_gpu.items():
        assert all(torch.equal(r[name], ranks[0][name]) for r in ranks), name
        error = _rel_l2(ranks[0][name], alone)
        print(f"N={world} {name}: rel-L2 {error:.2e} against one process")
        assert error < TOLERANCE, name


@pytest.mark.parametrize("world", [1, 2])
def test_a_rank_pool_on_the_gpus_gives_one_process_latents(tmp_path, world: int) -> None:
    """`causal.rank_pool` on GPUs 0..world-1 (NCCL) against one process on GPU 0, a prompt switch under the sink
    policy, eagerly and with CUDA graphs (captured in the first run, replayed in the second); rel-L2 printed."""
    if torch.cuda.device_count() < world:
        pytest.skip(f"needs {world} GPUs")
    from causal.rank_pool import ModelSource, RankPool
    from causal.synthetic import random_state_dict, write_checkpoint
    from tools.tiny import TINY

    path = write_checkpoint(random_state_dict(TINY, dtype=torch.bfloat16, seed=0), tmp_path / "model.pt", "causvid")
    source = ModelSource.of_file(path, torch.bfloat16)
    video, policy = causal.Video(H, W, total_frames=15), sink(3, 9)
    alone = causal.generate(source.load("cuda:0"), _switch_at(9), video, FAST, policy,
                            noise=causal.Noise(generator=torch.Generator("cuda:0").manual_seed(0))).latents.cpu()
    runs = {}
    with RankPool(source, [f"cuda:{i}" for i in range(world)]) as pool:
        for name, graphs in (("eager", False), ("graphs, captured", True), ("graphs, replayed", True)):
            g = torch.Generator("cuda:0").manual_seed(0)
            runs[name] = pool.generate(None, _switch_at(9), video, FAST, policy, noise=causal.Noise(generator=g),
                                       graphs=graphs).latents
    for name, latents in runs.items():
        error = _rel_l2(latents, alone)
        print(f"rank pool N={world}, {name}: rel-L2 {error:.2e} against one process")
        assert error < TOLERANCE
    # the graphs replay the same kernels, NCCL exchanges included: the eager ranks' numbers
    assert torch.equal(runs["graphs, captured"], runs["eager"]) and torch.equal(runs["graphs, replayed"], runs["eager"])
