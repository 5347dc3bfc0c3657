"""`causal.rank_pool`: local ranks that keep a model loaded and sample for a caller that is not a rank (two gloo
workers of the CPU here). Their latents, blocks, progress and generator state are one process's, bit for bit on the
CPU (`causal.parallel` says why); a Cancel stops every rank after the same step and the pool goes on; an error all
ranks raise comes back as itself; a worker killed mid-run, or one that cannot load the model, is an error that ends
every worker."""

from __future__ import annotations

import pytest
import torch

import causal
from causal import Compute, Noise, Output, PromptChange, Video, generate
from causal.cache_policy import sink
from causal.parallel import ParallelError
from causal.prompts import LivePrompts
from causal.rank_pool import ModelSource, RankPool
from causal.synthetic import random_state_dict, write_checkpoint
from tools.tiny import TINY, prompt

H, W = 32, 48  # 6 tokens per latent frame: 3 per rank
SCHEDULE = causal.SCHEDULES["CausVid 1.3B"]
POLICY = sink(3, 6)
TIMELINE = [PromptChange(0, prompt(seed=0)), PromptChange(6, prompt(seed=1))]


class Cancel(Exception):
    pass


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> ModelSource:
    sd = random_state_dict(TINY, dtype=torch.bfloat16, seed=0)
    path = write_checkpoint(sd, tmp_path_factory.mktemp("ckpt") / "model.pt", "causvid")
    return ModelSource.of_file(path, torch.bfloat16)


@pytest.fixture(scope="module")
def pool(source):
    with RankPool(source, ["cpu", "cpu"]) as pool:
        yield pool


@pytest.fixture(scope="module")
def model(source):
    return source.load("cpu")


def _run(sample, model, context, video: Video, generator: torch.Generator, events: list | None = None, **output):
    calls = {} if events is None else dict(progress=lambda p: events.append(("step", p.block, p.step, p.denoised)),
                                           on_block=lambda b: events.append(("block", b)))
    return sample(model, context, video, SCHEDULE, POLICY, noise=Noise(generator=generator),
                  compute=Compute(dtype=torch.bfloat16), output=Output(**calls, **output))


def _same_events(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x[:-1] == y[:-1] and torch.equal(x[-1], y[-1]) for x, y in zip(a, b))


def test_the_pool_samples_as_one_process_bit_for_bit(pool, model):
    """A prompt switch past the sink's window, recorded, then continued from the record: latents, every step's
    progress (with its x0), every block and the generator's state equal one process's `generate`."""
    results = []
    for sample in (pool.generate, generate):
        g, events = torch.Generator().manual_seed(3), []
        first = _run(sample, model, TIMELINE, Video(H, W, total_frames=12), g, events, record=True)
        second = _run(sample, model, prompt(seed=1), Video(H, W, total_frames=6, resume=first.history), g)
        results.append((first, second, events, g.get_state()))
    (first, second, events, state), (first_1, second_1, events_1, state_1) = results
    assert first.latents.shape == (1, 16, 12, H // 8, W // 8) and first.history is not None
    assert torch.equal(first.latents, first_1.latents) and torch.equal(second.latents, second_1.latents)
    assert torch.equal(first.last_block, first_1.last_block.cpu())
    assert len(events) == 4 * (3 + 1) and _same_events(events, events_1)
    assert torch.equal(state, state_1)


def test_a_callback_that_raises_stops_every_rank_and_the_pool_goes_on(pool, model):
    def cancel_at_block_1(p):
        if p.block == 1:
            raise Cancel

    with pytest.raises(Cancel):
        pool.generate(None, TIMELINE, Video(H, W, total_frames=12), SCHEDULE, POLICY, noise=Noise(seed=1),
                      output=Output(progress=cancel_at_block_1))
    expected = generate(model, TIMELINE, Video(H, W, total_frames=9), SCHEDULE, POLICY, noise=Noise(seed=2)).latents
    after = pool.generate(None, TIMELINE, Video(H, W, total_frames=9), SCHEDULE, POLICY, noise=Noise(seed=2)).latents
    assert torch.equal(after, expected)


def test_an_error_every_rank_raises_comes_back_as_itself_and_the_pool_goes_on(pool, model):
    with pytest.raises(ValueError, match="3 tokens per frame do not split over 2 ranks"):
        pool.generate(None, prompt(), Video(16, 48, total_frames=3), SCHEDULE, noise=Noise(seed=0))
    assert not pool.closed
    assert pool.generate(None, prompt(), Video(H, W, total_frames=3), SCHEDULE, noise=Noise(seed=0)).latents.shape \
        == (1, 16, 3, H // 8, W // 8)


def test_what_the_ranks_cannot_run_is_refused_before_they_start(pool, model):
    video = Video(H, W, total_frames=3)
    with pytest.raises(ValueError, match="live prompts"):
        pool.generate(None, LivePrompts(prompt()), video, SCHEDULE)
    with pytest.raises(ValueError, match="renoise function"):
        pool.generate(None, prompt(), video, SCHEDULE, noise=Noise(renoise=torch.randn))
    with pytest.raises(ValueError, match="leave Compute's device"):
        pool.generate(None, prompt(), video, SCHEDULE, compute=Compute(device="cpu"))
    other = causal.WanConfig(dim=128, ffn_dim=256, num_layers=1, text_dim=64)
    with pytest.raises(ValueError, match="the ranks hold the"):
        pool.generate(causal.CausalWanModel(other), prompt(), video, SCHEDULE)


def test_a_worker_killed_mid_run_is_an_error_that_ends_every_worker(source):
    pool = RankPool(source, ["cpu", "cpu"])
    workers = [w.process for w in pool._workers]

    def kill_rank_1(p):
        workers[1].kill()

    with pytest.raises(ParallelError, match=r"rank 1 \(cpu\) died while sampling.*the next run starts new ones"):
        pool.generate(None, prompt(), Video(H, W, total_frames=9), SCHEDULE, noise=Noise(seed=0),
                      output=Output(progress=kill_rank_1))
    assert pool.closed and all(p.poll() is not None for p in workers)
    with pytest.raises(ParallelError, match="closed"):
        pool.generate(None, prompt(), Video(H, W, total_frames=3), SCHEDULE)


def test_a_model_the_workers_cannot_load_is_its_own_error(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="model.safetensors"):
        RankPool(ModelSource.of_file(bad, torch.bfloat16), ["cpu", "cpu"])


def test_the_workers_keep_the_callers_environment_but_run_the_native_allocator_cuda_graphs_need():
    from causal.rank_pool import AUTHKEY_VARIABLE, worker_environment

    caller = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
              "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True, backend:cudaMallocAsync"}
    env = worker_environment(caller, b"key")
    assert env == {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                   "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", AUTHKEY_VARIABLE: b"key".hex()}
    assert "PYTORCH_CUDA_ALLOC_CONF" not in worker_environment({"PYTORCH_CUDA_ALLOC_CONF": "backend:cudaMallocAsync"},
                                                               b"key")


def test_close_ends_every_worker_cleanly(source):
    pool = RankPool(source, ["cpu"])
    workers = [w.process for w in pool._workers]
    pool.close()
    assert [p.returncode for p in workers] == [0]
