"""CausVid Multi-GPU in-process (ComfyUI imported, CPU): the node checks its GPU list and the model before any run;
the sampler on a marked model runs on two gloo CPU workers and gives the unmarked model's latents, blocks and noise
state bit for bit; a Cancel stops the workers and the next run goes on; ComfyUI's Unload Models ends them."""

from __future__ import annotations

import pytest
import torch

from tools.comfy_inprocess import pack_module
from tools.comfy_server import comfyui_available
from tools.tiny import TINY

pytestmark = pytest.mark.comfyui

if not comfyui_available():
    pytest.skip("ComfyUI is not installed (scripts/setup.sh)", allow_module_level=True)

H, W = 32, 48  # 6 tokens per latent frame: 3 per worker
WIDGETS = dict(width=W, height=H, length=21, preset="Self-Forcing / LongLive 1.3B", custom_steps="", seed=4,
               num_fragments=1, speed="exact", cache="sink", window=6, sink_frames=3)


@pytest.fixture(scope="module")
def nodes():
    return pack_module("nodes.multi_gpu"), pack_module("nodes.sampler")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import dataclasses

    synthetic, config = pack_module("causal.synthetic"), pack_module("causal.config")
    sd = synthetic.random_state_dict(config.WanConfig(**dataclasses.asdict(TINY)), dtype=torch.bfloat16, seed=0)
    return synthetic.write_checkpoint(sd, tmp_path_factory.mktemp("ckpt") / "model.pt", "causvid")


@pytest.fixture(scope="module")
def model(checkpoint):
    return pack_module("nodes.comfy_model").load_causal_model(checkpoint, "bf16")


@pytest.fixture(scope="module")
def marked(nodes, model):
    multi_gpu, _ = nodes
    yield multi_gpu.CausVidMultiGPU.execute(model, "cpu, cpu").args[0]
    multi_gpu.close_pool()


def _conditioning():
    return [[torch.randn(1, 12, TINY.text_dim, generator=torch.Generator().manual_seed(1)), {}]]


def test_the_gpu_list_is_checked_with_what_to_write(nodes):
    multi_gpu, _ = nodes
    assert multi_gpu.parse_devices("cpu,cpu") == ("cpu", "cpu")
    for text, message in (("", "gpus is empty"), ("a, b", "GPU numbers separated by commas"),
                          ("0,0", "names a GPU twice")):
        with pytest.raises(ValueError, match=message):
            multi_gpu.parse_devices(text)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="asks for GPU 0, 1, but this ComfyUI sees no CUDA GPU"):
            multi_gpu.parse_devices("0,1")


def test_what_the_workers_cannot_load_is_refused_by_the_node(nodes, model, checkpoint):
    multi_gpu, _ = nodes
    with pytest.raises(ValueError, match="2 attention heads do not split over 3 GPUs: use 2"):
        multi_gpu.CausVidMultiGPU.execute(model, "cpu,cpu,cpu")
    fast = pack_module("nodes.comfy_model").load_causal_model(checkpoint, "fp8_e4m3fn_fast")
    with pytest.raises(ValueError, match="fp8_e4m3fn_fast, ComfyUI's fp8 products, is one GPU's only"):
        multi_gpu.CausVidMultiGPU.execute(fast, "cpu,cpu")
    patched = model.clone()
    key = next(k for k in patched.model.state_dict() if k.endswith("self_attn.q.weight"))
    patched.add_patches({key: (torch.zeros_like(patched.model.state_dict()[key]),)}, 1.0)
    with pytest.raises(ValueError, match="LoRA patches from another node"):
        multi_gpu.CausVidMultiGPU.execute(patched, "cpu,cpu")


def test_the_sampler_on_two_workers_gives_one_processs_video(nodes, model, marked):
    """Latents, the streamed blocks and the state's noise equal the unmarked model's bit for bit; the workers stay
    for the next run (the same processes)."""
    multi_gpu, sampler = nodes
    runs = []
    for m in (model, marked):
        blocks = []
        job = sampler.prepare(m, **WIDGETS)
        latents, state = sampler.run(m, _conditioning(), job, None, on_block=blocks.append)
        runs.append((latents, blocks, state))
    (latents, blocks, state), (latents_1, blocks_1, state_1) = runs
    assert latents.shape == (1, 16, 6, H // 8, W // 8) and torch.equal(latents, latents_1)
    assert len(blocks) == 2 and all(torch.equal(a, b) for a, b in zip(blocks, blocks_1))
    assert torch.equal(state.rng_state, state_1.rng_state) and state_1.video.shape == latents.shape
    workers = [w.process.pid for w in multi_gpu._running[0].pool._workers]
    again, _ = sampler.run(marked, _conditioning(), sampler.prepare(marked, **WIDGETS), None)
    assert torch.equal(again, latents) and [w.process.pid for w in multi_gpu._running[0].pool._workers] == workers


def test_fp8_storage_on_the_workers_computes_comfyuis_fp8_model_bit_for_bit(nodes, checkpoint):
    """weight_dtype fp8_e4m3fn: the workers build the model with e4m3 matrices cast at every product
    (`causal.fp8_storage`) and give what ComfyUI's manual-cast fp8 model gives, holding half the bytes."""
    multi_gpu, sampler = nodes
    fp8 = pack_module("nodes.comfy_model").load_causal_model(checkpoint, "fp8_e4m3fn")
    assert fp8.model.causvid_source.fp8_storage
    marked = multi_gpu.CausVidMultiGPU.execute(fp8, "cpu,cpu").args[0]
    one, _ = sampler.run(fp8, _conditioning(), sampler.prepare(fp8, **WIDGETS), None)
    pooled, _ = sampler.run(marked, _conditioning(), sampler.prepare(marked, **WIDGETS), None)
    assert torch.equal(pooled, one)
    bf16 = pack_module("nodes.comfy_model").load_causal_model(checkpoint, "bf16")
    other, _ = sampler.run(bf16, _conditioning(), sampler.prepare(bf16, **WIDGETS), None)
    assert not torch.equal(one, other)  # the e4m3 rounding shows
    model = pack_module("causal.fp8_storage").fp8_storage_model(
        pack_module("causal.checkpoint").read_checkpoint(checkpoint).state_dict, bf16.model.diffusion_model.config,
        "cpu")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    assert model.blocks[0].modulation.dtype == torch.bfloat16


def test_continue_on_the_workers_goes_on_as_one_process(nodes, model, marked):
    """Sampler then Continue (the state's history replayed on the workers' caches, the noise continued): the
    unmarked model's frames bit for bit."""
    _, sampler = nodes
    request = pack_module("causal.request")
    Video, Noise = request.Video, request.Noise
    fragments = []
    for m in (model, marked):
        _, state = sampler.run(m, _conditioning(), sampler.prepare(m, **WIDGETS), None)
        video = Video(state.height, state.width, state.num_frames, 1, resume=state.history)  # as Continue does
        noise = Noise(generator=sampler.restore_generator(state, m.load_device))
        job = sampler.job_for(video, state.schedule, state.policy, noise, seconds=0.0, speed="exact",
                              kv_cache="bf16", prefix=state.video, state=state)
        fragments.append(sampler.run(m, _conditioning(), job, None)[0])
    assert fragments[0].shape[2] > 0 and torch.equal(fragments[0], fragments[1])


def test_a_cancel_stops_the_workers_and_the_next_run_goes_on(nodes, model, marked):
    import comfy.model_management as mm

    multi_gpu, sampler = nodes

    def cancel(block):
        mm.interrupt_current_processing(True)

    with pytest.raises(mm.InterruptProcessingException):
        sampler.run(marked, _conditioning(), sampler.prepare(marked, **WIDGETS), None, on_block=cancel)
    assert not multi_gpu._running[0].pool.closed
    expected, _ = sampler.run(model, _conditioning(), sampler.prepare(model, **WIDGETS), None)
    after, _ = sampler.run(marked, _conditioning(), sampler.prepare(marked, **WIDGETS), None)
    assert torch.equal(after, expected)


def test_unload_models_ends_the_workers(nodes, marked):
    import comfy.model_management as mm

    multi_gpu, sampler = nodes
    sampler.run(marked, _conditioning(), sampler.prepare(marked, **WIDGETS), None)
    pool = multi_gpu._running[0].pool
    workers = [w.process for w in pool._workers]
    mm.unload_all_models()
    assert pool.closed and [p.returncode for p in workers] == [0, 0]
    sampler.run(marked, _conditioning(), sampler.prepare(marked, **WIDGETS), None)  # new workers
    assert not multi_gpu._running[0].pool.closed and multi_gpu._running[0].pool is not pool


def test_live_prompts_and_the_recompute_policy_stay_on_one_gpu(nodes, marked):
    _, sampler = nodes
    job = sampler.prepare(marked, **{**WIDGETS, "cache": "recompute", "window": 3, "sink_frames": -1})
    with pytest.raises(ValueError, match="recompute policy .* sample it on one GPU"):
        sampler.run(marked, _conditioning(), job, None)
