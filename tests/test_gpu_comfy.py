"""GPU checks of the nodes inside ComfyUI's model management, in-process (marked `gpu`, skipped without CUDA).

Run alone, in a process of its own, with ComfyUI's tree named (its model management must see the GPU, and the
CPU tests import ComfyUI with --cpu):

    CAUSVID_COMFYUI_DIR=.devcarry/ComfyUI python3 -m pytest -q tests/test_gpu_comfy.py
"""

from __future__ import annotations

import dataclasses
import gc
import time

import pytest
import torch

from tools.tiny import TINY, prompt

pytestmark = [pytest.mark.gpu, pytest.mark.comfyui,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def pack():
    import importlib
    import sys

    from tools.comfy_inprocess import add_comfyui_to_sys_path, import_folder
    from tools.comfy_server import REPO_ROOT

    if "comfy.model_management" in sys.modules and sys.modules["comfy.model_management"].cpu_state.name == "CPU":
        pytest.skip("ComfyUI was imported with --cpu in this process: run this file alone (its docstring)")
    add_comfyui_to_sys_path(cpu=False)
    import_folder("comfyui_causvid", REPO_ROOT)
    return lambda name: importlib.import_module(f"comfyui_causvid.{name}")


def test_out_of_memory_inside_a_sampler_run_leaves_memory_as_it_was_and_the_rerun_is_clean(pack, tmp_path):
    """A run that runs out of device memory (the process capped just above what the loaded model holds, so the
    KV cache, activations or a CUDA graph capture fail) raises torch's OutOfMemoryError; once ComfyUI unloads,
    the device memory is what it was after a clean run and unload, and the same settings then give the clean
    run's latents bit for bit (CUDA graphs and compiled kernels on, as `speed` fast runs)."""
    import comfy.model_management as mm

    synthetic, comfy_model = pack("causal.synthetic"), pack("nodes.comfy_model")
    sampler = pack("nodes.sampler")
    config = pack("causal.config").WanConfig(**dataclasses.asdict(TINY))  # the pack's own class, as ComfyUI loads it
    path = synthetic.write_checkpoint(synthetic.random_state_dict(config, dtype=torch.bfloat16, seed=0),
                                      tmp_path / "tiny.safetensors", "lightx2v_safetensors")
    patcher = comfy_model.load_causal_model(path, "bf16")
    conditioning = [[prompt(seed=1), {}]]

    def sample():
        job = sampler.prepare(patcher, width=512, height=512, length=21, preset="Self-Forcing / LongLive 1.3B",
                              custom_steps="", seed=3, num_fragments=1, speed="fast", cache="sink", window=6,
                              sink_frames=3)
        return sampler.run(patcher, conditioning, job, None)[0]

    def settled() -> int:
        mm.unload_all_models()
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        return torch.cuda.memory_allocated()

    clean = sample()
    baseline = settled()
    total = torch.cuda.get_device_properties(0).total_memory
    mm.load_models_gpu([patcher])
    try:
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + 8 * 2**20) / total)
        with pytest.raises(torch.OutOfMemoryError):  # anything else (a broken capture, a CUDA error) fails the test
            sample()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    after = settled()
    print(f"allocated after a clean run and unload {baseline} B, after the failed run and unload {after} B")
    assert after == baseline
    assert torch.equal(sample(), clean)


def test_a_live_prompt_is_encoded_on_a_cuda_stream_of_its_own_while_the_gpu_samples(pack):
    """The live encode thread runs ComfyUI's CLIP (a tiny umT5 on the GPU) on a CUDA stream of its own while the
    sampling thread keeps the default stream busy, and hands over a finished embedding: CausVid Text Encode's on
    the sampling thread, bit for bit."""
    import threading

    from tools.comfy_inprocess import import_folder
    from tools.comfy_server import TEST_NODES_DIR

    live, text = pack("nodes.live"), pack("nodes.text")
    clip = import_folder("causvid_test_nodes", TEST_NODES_DIR).build_tiny_clip(64, 0)
    assert clip.patcher.load_device.type == "cuda"
    with torch.inference_mode():
        first, wakes = (text.encode_prompt(clip, t)[0] for t in ("a fox sleeps", "the fox wakes up"))
    comfy_encode, streams = live.comfy_encoder(clip), []

    def encode(prompt_text):
        streams.append(torch.cuda.current_stream())
        return comfy_encode(prompt_text)

    run = live.LiveRun("7", "a fox sleeps", first, encode, max_tokens=512, device=clip.patcher.load_device)
    busy = torch.randn(4096, 4096, device="cuda")
    with live.streaming_live(run, live.Registry()):
        for _ in range(1000):  # about 2 s of kernels queued on the sampling thread's stream
            busy = torch.tanh(busy @ busy)
        run.submit("the fox wakes up")
        assert run.wait_encoded(60) and run.error is None
        sampling_busy = not torch.cuda.current_stream().query()
        (stream,) = streams
        assert stream.query()  # handed over finished
        taken = run.prompts.change_at(3).context
    assert sampling_busy  # encoded beside the sampling thread's kernels, not after them
    assert stream != torch.cuda.current_stream() and stream != torch.cuda.default_stream()
    assert torch.equal(taken.to(wakes.device), wakes)
    assert not [t for t in threading.enumerate() if t.name.startswith("causvid-live-encode-")]


@pytest.mark.parametrize("weight_dtype", ["default", "fp8_e4m3fn"])
def test_the_multi_gpu_node_on_gpu_0_gives_one_gpus_video_and_unload_frees_its_memory(pack, tmp_path, weight_dtype):
    """CausVid Multi-GPU with gpus 0 (one NCCL worker on GPU 0) against the same model sampled in ComfyUI's
    process (CUDA graphs, exact glue), with bf16 weights and with fp8_e4m3fn storage: rel-L2 printed, within bf16 tolerance; the workers' handle stands in
    ComfyUI's loaded models with the worker's weights; Unload Models ends the worker and frees them."""
    import comfy.model_management as mm

    synthetic, comfy_model = pack("causal.synthetic"), pack("nodes.comfy_model")
    sampler, multi_gpu = pack("nodes.sampler"), pack("nodes.multi_gpu")
    config = pack("causal.config").WanConfig(**dataclasses.asdict(TINY))
    path = synthetic.write_checkpoint(synthetic.random_state_dict(config, dtype=torch.bfloat16, seed=0),
                                      tmp_path / "tiny.safetensors", "lightx2v_safetensors")
    patcher = comfy_model.load_causal_model(path, weight_dtype)
    conditioning = [[prompt(seed=1), {}]]
    widgets = dict(width=512, height=512, length=21, preset="Self-Forcing / LongLive 1.3B", custom_steps="", seed=3,
                   num_fragments=1, speed="exact", cache="sink", window=6, sink_frames=3)
    one, _ = sampler.run(patcher, conditioning, sampler.prepare(patcher, **widgets), None)
    mm.unload_all_models()
    gc.collect()
    free_before = torch.cuda.mem_get_info()[0]
    marked = multi_gpu.CausVidMultiGPU.execute(patcher, "0").args[0]
    pooled, state = sampler.run(marked, conditioning, sampler.prepare(marked, **widgets), None)
    error = float((pooled.float() - one.float()).norm() / one.float().norm())
    print(f"Multi-GPU node, gpus 0, {weight_dtype}: rel-L2 {error:.2e} against the one-GPU node")
    assert error < 1e-2 and state.rng_device == "cuda:0"
    handle = multi_gpu._running[0].handle
    assert any(m.model is handle for m in mm.current_loaded_models)
    assert handle.model_size() == multi_gpu._running[0].pool.weight_bytes("cuda:0") > 0
    mm.unload_all_models()
    assert multi_gpu._running[0].pool.closed
    time.sleep(1.0)
    assert torch.cuda.mem_get_info()[0] >= free_before - 64 * 2**20  # the worker's context and weights are gone
