"""The causal model inside ComfyUI's model management, in-process: the MODEL the loader returns
keeps Wan key names, applies core LoRA patches, runs partially loaded (lowvram) with the same result,
and stores fp8 weights while computing in bf16."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import Linear

from tools.comfy_inprocess import pack_module
from tools.comfy_server import comfyui_available
from tools.tiny import TINY, TINY_5B

pytestmark = pytest.mark.comfyui

if not comfyui_available():
    pytest.skip("ComfyUI is not installed (scripts/setup.sh)", allow_module_level=True)


@pytest.fixture(scope="module")
def pack():
    """The pack imported the way ComfyUI imports it: as a package from the repo root."""
    return pack_module("nodes.comfy_model")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, pack):
    synthetic = pack_module("causal.synthetic")
    config_mod = pack_module("causal.config")
    config = config_mod.WanConfig(**dataclasses.asdict(TINY))  # the pack's own WanConfig class, as ComfyUI loads it
    sd = synthetic.random_state_dict(config, dtype=torch.float32, seed=0)
    path = synthetic.write_checkpoint(sd, tmp_path_factory.mktemp("ckpt") / "model.pt", "causvid")
    return path, sd


def _sample(pack, patcher, seed=0):
    causal = pack_module("causal")
    network = pack.causal_network(patcher)
    ctx = torch.randn(1, 10, TINY.text_dim, generator=torch.Generator().manual_seed(1))
    return causal.sample_video(network, ctx, causal.Video(32, 48, num_frames=6),
                               causal.Schedule("2 steps", (1000, 500), shift=8.0, warp=False),
                               noise=causal.Noise(seed=seed),
                               compute=causal.Compute(device="cpu", dtype=pack.compute_dtype(patcher)))


def test_loader_gives_a_wan21_model_patcher_with_wan_key_names(pack, checkpoint):
    import comfy.model_base
    import comfy.model_patcher

    path, sd = checkpoint
    patcher = pack.load_causal_model(path, "bf16")
    assert isinstance(patcher, comfy.model_patcher.ModelPatcher)
    assert isinstance(patcher.model, comfy.model_base.WAN21) and not isinstance(patcher.model, comfy.model_base.WAN22)
    keys = {k for k in patcher.model.state_dict() if k.startswith("diffusion_model.")}
    assert keys == {"diffusion_model." + k for k in sd}
    weight = patcher.model.diffusion_model.blocks[1].ffn[2].weight
    assert weight.dtype == torch.bfloat16 and torch.equal(weight, sd["blocks.1.ffn.2.weight"].to(torch.bfloat16))
    assert patcher.model.latent_format.latent_channels == 16


def test_a_48_channel_file_loads_as_a_wan22_model_with_the_wan22_latent_format(pack, tmp_path):
    """LongLive 2.0's model_bf16.pt (48 channels): ComfyUI's WAN22 family with latent_formats.Wan22, so latents cross
    the node boundary, previews and core VAE Decode with wan2.2_vae.safetensors as core's Wan2.2 5B's do; bf16 first."""
    import comfy.latent_formats
    import comfy.model_base

    synthetic, config_mod = pack_module("causal.synthetic"), pack_module("causal.config")
    config = config_mod.WanConfig(**dataclasses.asdict(TINY_5B))
    sd = synthetic.random_state_dict(config, dtype=torch.bfloat16, seed=0)
    path = synthetic.write_checkpoint(sd, tmp_path / "model_bf16.pt", "longlive2")
    patcher = pack.load_causal_model(path, "default")
    assert isinstance(patcher.model, comfy.model_base.WAN22)
    assert isinstance(patcher.model.latent_format, comfy.latent_formats.Wan22)
    assert patcher.model.latent_format.latent_channels == 48
    assert pack.causal_network(patcher).config == config
    assert patcher.model.model_config.supported_inference_dtypes[0] == torch.bfloat16
    x = torch.randn(1, 48, 2, 4, 4)
    expected = comfy.latent_formats.Wan22().process_in(x)
    assert torch.equal(patcher.model.process_latent_in(x), expected)
    network = patcher.model.diffusion_model
    assert torch.equal(network.head.head.weight.to(torch.bfloat16), sd["head.head.weight"])


def test_core_lora_patches_the_causal_weights(pack, checkpoint):
    import comfy.model_management
    import comfy.sd

    path, sd = checkpoint
    patcher = pack.load_causal_model(path, "default")
    rank, g = 4, torch.Generator().manual_seed(5)
    down, up = torch.randn(rank, 256, generator=g), torch.randn(256, rank, generator=g) * 0.01
    lora = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": down,
            "diffusion_model.blocks.0.self_attn.q.lora_B.weight": up}
    patched, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 0.5, 0.0)
    comfy.model_management.load_models_gpu([patched], force_full_load=True)
    weight = patched.model.diffusion_model.blocks[0].self_attn.q.weight
    assert torch.allclose(weight, sd["blocks.0.self_attn.q.weight"] + 0.5 * up @ down, atol=1e-6)
    assert not torch.equal(_sample(pack, patched), _sample(pack, pack.load_causal_model(path, "default")))
    comfy.model_management.unload_all_models()


def test_partial_lowvram_load_samples_the_same(pack, checkpoint):
    path, _ = checkpoint
    full = pack.load_causal_model(path, "bf16")
    expected = _sample(pack, full)
    partial = pack.load_causal_model(path, "bf16")
    partial.load(torch.device("cpu"), lowvram_model_memory=partial.model_size() // 3)
    assert partial.model.model_lowvram  # layers are streamed through comfy.ops casts
    assert torch.equal(_sample(pack, partial), expected)


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e4m3fn_fast"])
def test_fp8_storage_computes_in_a_wider_dtype_close_to_bf16(pack, checkpoint, weight_dtype):
    path, _ = checkpoint
    fp8 = pack.load_causal_model(path, weight_dtype)
    assert fp8.model.model_config.optimizations.get("fp8", False) == weight_dtype.endswith("_fast")
    network = fp8.model.diffusion_model
    assert network.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn
    assert network.blocks[0].modulation.dtype == torch.bfloat16  # small parameters stay precise
    assert network.blocks[0].self_attn.norm_q.weight.dtype == torch.bfloat16
    assert pack.compute_dtype(fp8) in (torch.bfloat16, torch.float16, torch.float32)
    a = _sample(pack, fp8).double()
    b = _sample(pack, pack.load_causal_model(path, "bf16")).double()
    assert 0 < ((a - b).norm() / b.norm()).item() < 0.25


def test_comfyui_linears_lend_their_weights_only_while_comfyui_multiplies_them_as_they_are(pack, checkpoint):
    """The loader's layers lend weight and bias to the GELU epilogue (causal.kernels.direct_weights) while ComfyUI's
    forward is F.linear of them; not once partial loading casts them, nor with a per-forward patch, nor for layers
    of their own arithmetic (fp8 products)."""
    import comfy.ops

    kernels = pack_module("causal.kernels")
    path, _ = checkpoint
    patcher = pack.load_causal_model(path, "default")  # weights in the compute dtype: no cast
    up = patcher.model.diffusion_model.blocks[0].ffn[0]
    x = torch.randn(2, 256).to(pack.compute_dtype(patcher))
    assert kernels.direct_weights(up, x) == (up.weight, up.bias)
    up.weight_function = [lambda w: w]  # as ComfyUI patches a layer (the class list is shared)
    assert kernels.direct_weights(up, x) is None
    x = x.bfloat16()
    partial = pack.load_causal_model(path, "bf16")
    partial.load(torch.device("cpu"), lowvram_model_memory=partial.model_size() // 3)
    layers = [m for m in partial.model.diffusion_model.modules() if hasattr(m, "direct_weights")]
    assert any(m.comfy_cast_weights for m in layers)
    assert all(kernels.direct_weights(m, x) is None for m in layers if m.comfy_cast_weights)
    assert pack.lending_weights(comfy.ops.fp8_ops) is comfy.ops.fp8_ops
    plain = pack.lending_weights(comfy.ops.disable_weight_init).Linear(256, 8, dtype=torch.bfloat16)
    assert kernels.direct_weights(plain, x) == (plain.weight, plain.bias)
    cast = pack.lending_weights(comfy.ops.manual_cast).Linear(256, 8, dtype=torch.bfloat16)
    assert kernels.direct_weights(cast, x) is None


def test_a_core_loaded_model_is_refused_by_the_sampler(pack):
    class NotCausal:
        model = type("M", (), {"diffusion_model": torch.nn.Identity()})()

    with pytest.raises(ValueError, match="CausVid Model Loader"):
        pack.causal_network(NotCausal())


def _longlive_lora(tmp_path, rank=4):
    """A LongLive-style PEFT adapter file for the module's 256-wide, 2-layer checkpoint."""
    lora = pack_module("causal.lora")
    g, sd = torch.Generator().manual_seed(7), {}
    for i in range(2):
        for target in lora.TARGETS:
            out_dim, in_dim = (512, 256) if target == "ffn.0" else (256, 512) if target == "ffn.2" else (256, 256)
            sd[f"base_model.model.blocks.{i}.{target}.lora_A.weight"] = torch.randn(rank, in_dim, generator=g) * 0.1
            sd[f"base_model.model.blocks.{i}.{target}.lora_B.weight"] = torch.randn(out_dim, rank, generator=g) * 0.1
    path = tmp_path / "longlive_lora.pt"
    torch.save({"generator_lora": sd}, path)
    return lora.read_lora(path)


def test_longlive_lora_merged_and_unmerged_in_the_loader(pack, checkpoint, tmp_path):
    """Merged: the MODEL's weights are W + BA. Unmerged: the weights are untouched, the adapter runs in the
    forward, and sampling equals the library's unmerged model; both differ from no LoRA and stay close."""
    causal_lora = pack_module("causal.lora")
    path, sd = checkpoint
    lora = _longlive_lora(tmp_path)
    merged = pack.load_causal_model(path, "default", lora=lora, lora_mode="merged")
    a, b = lora.pairs["blocks.1.ffn.2"]
    assert torch.allclose(merged.model.diffusion_model.blocks[1].ffn[2].weight, sd["blocks.1.ffn.2.weight"] + b @ a,
                          atol=1e-6)
    unmerged = pack.load_causal_model(path, "default", lora=lora, lora_mode="unmerged")
    assert torch.equal(unmerged.model.diffusion_model.blocks[1].ffn[2].weight, sd["blocks.1.ffn.2.weight"])
    plain = _sample(pack, pack.load_causal_model(path, "default"))
    with_merged, with_unmerged = _sample(pack, merged), _sample(pack, unmerged)
    assert not torch.equal(plain, with_unmerged)
    rel = ((with_merged.float() - with_unmerged.float()).norm() / with_unmerged.float().norm()).item()
    assert rel < 1e-3, rel  # float32 weights: merging only reorders the sum
    library = pack_module("causal.model").CausalWanModel.from_state_dict(
        dict(sd), pack.causal_network(unmerged).config, dtype=torch.float32)
    causal_lora.apply_unmerged(library, lora)

    class Patcher:  # _sample's view of a MODEL
        model = type("M", (), {"diffusion_model": library, "manual_cast_dtype": None,
                               "get_dtype": staticmethod(lambda: torch.float32)})()

    assert torch.equal(_sample(pack, Patcher()), with_unmerged)
    with pytest.raises(ValueError, match="unknown LoRA mode"):
        pack.load_causal_model(path, "default", lora=lora, lora_mode="sideways")


class StandInGraphs:
    """What the sampler's kept record uses of CudaGraphs (graphs need CUDA); `released` counts release()."""

    shape, nbytes, parallel = ("a shape",), 0, None

    def __init__(self) -> None:
        import types

        self.cache = types.SimpleNamespace(quantized=False)
        self.released = 0

    def release(self) -> None:
        self.released += 1


def test_kept_cuda_graphs_are_reused_for_their_shape_and_dropped_for_a_model_patched_per_forward(pack, checkpoint,
                                                                                                  monkeypatch):
    """A run of the same shape gets the kept graphs (weights that moved are the graphs' own business: they check
    the addresses every forward); another shape gets new ones; a model whose layers ComfyUI patches per forward
    (lowvram LoRA) gets none and the kept ones are released."""
    speed = pack_module("nodes.speed")
    network = pack.causal_network(pack.load_causal_model(checkpoint[0], "bf16"))
    made = []

    def new_graphs(network, **kwargs):
        made.append(StandInGraphs())
        made[-1].shape = (kwargs["batch"], kwargs["height"], kwargs["width"], kwargs["num_frames"],
                          kwargs["dtype"], kwargs["device"])
        return made[-1]

    monkeypatch.setattr(speed, "CudaGraphs", new_graphs)
    cpu = torch.device("cpu")
    shape = (1, 32, 48, 6, torch.bfloat16, cpu, False)
    first = speed.kept_graphs(network, shape)
    assert speed.kept_graphs(network, shape) is first and len(made) == 1
    other = speed.kept_graphs(network, (1, 32, 48, 9, torch.bfloat16, cpu, False))
    assert other is not first and first.released == 1
    layer = next(m for m in network.modules() if hasattr(m, "weight_function"))
    monkeypatch.setattr(layer, "weight_function", [lambda w: w])
    assert speed.kept_graphs(network, shape) is None and other.released == 1
    assert not hasattr(network, speed._ATTRIBUTE)


def test_kept_cuda_graphs_survive_the_next_load_and_go_with_an_unload(pack, checkpoint):
    """ComfyUI detaches a loaded model (unpatch_all=False, weights left in place) each time a run loads it again;
    the graphs kept with the model must survive that (else every run captures again), and go when the model is
    unloaded."""
    import comfy.model_management as mm

    speed = pack_module("nodes.speed")
    patcher = pack.load_causal_model(checkpoint[0], "bf16")
    network = pack.causal_network(patcher)
    graphs = StandInGraphs()
    mm.load_models_gpu([patcher])
    setattr(network, speed._ATTRIBUTE, graphs)
    mm.load_models_gpu([patcher])
    assert not graphs.released and speed.keep_only(network, ("a shape", False)) == 0
    assert hasattr(network, speed._ATTRIBUTE)
    mm.unload_all_models()
    assert graphs.released == 1 and not hasattr(network, speed._ATTRIBUTE)


@pytest.mark.parametrize("failure", ["error", "cancel"])
def test_a_failed_run_frees_its_kept_cuda_graphs_and_a_cancel_keeps_them(pack, checkpoint, monkeypatch, failure):
    """An error may come in the middle of a graph capture: the sampler drops the kept graphs (and their KV cache)
    with it instead of keeping them until ComfyUI unloads the model. A Cancel comes between forwards: the graphs
    stay for the next run. (Graphs need CUDA: here the sampler is told graphs are on, its graphs a stand-in.)"""
    import comfy.model_management as mm

    sampler, speed = pack_module("nodes.sampler"), pack_module("nodes.speed")
    patcher = pack.load_causal_model(checkpoint[0], "bf16")
    network = pack.causal_network(patcher)
    graphs = StandInGraphs()

    def kept(network, shape):
        setattr(network, speed._ATTRIBUTE, graphs)
        return graphs

    def generate(*args, **kwargs):
        assert kwargs["compute"].graphs is not None
        raise mm.InterruptProcessingException() if failure == "cancel" else RuntimeError("a capture broke")

    monkeypatch.setattr(sampler, "choose_speed", lambda level, device: speed.Speed(fused_kernels=False, graphs=True))
    monkeypatch.setattr(sampler, "kept_graphs", kept)
    monkeypatch.setattr(sampler, "keep_only", lambda network, shape: 0)
    monkeypatch.setattr(sampler, "generate", generate)
    job = sampler.prepare(patcher, width=48, height=32, length=21, preset="CausVid 1.3B", custom_steps="", seed=0,
                          num_fragments=1)
    conditioning = [[torch.randn(1, 10, TINY.text_dim), {}]]
    with pytest.raises(mm.InterruptProcessingException if failure == "cancel" else RuntimeError):
        sampler.run(patcher, conditioning, job, None)
    if failure == "cancel":
        assert not graphs.released and hasattr(network, speed._ATTRIBUTE)
        speed.release_graphs(network)
    else:
        assert graphs.released == 1 and not hasattr(network, speed._ATTRIBUTE)


def test_settings_that_add_no_frames_say_what_to_change(caplog):
    """Every length that would add no frames is refused with the length that works: a second fragment after a
    one-block length, a Continue of a one-block state, a start latent that fills the length; a start latent that
    leaves less than `length` (whole blocks follow it) is said in the log."""
    import logging
    import types

    sampler = pack_module("nodes.sampler")
    schedule = types.SimpleNamespace(frames_per_block=3)

    def check(num_frames, num_fragments=1, start=0, state=None):
        video = sampler.Video(16, 16, num_frames, num_fragments,
                              start_latents=torch.zeros(1, 16, start, 2, 2) if start else None,
                              resume=None if state is None else state.history)
        return sampler.job_for(video, schedule, None, sampler.Noise(), seconds=0.0, speed="exact", kv_cache="bf16",
                               state=state)

    with pytest.raises(ValueError, match="nothing at length 9. Set length to at least 21, or num_fragments to 1"):
        check(3, num_fragments=2)
    with pytest.raises(ValueError, match="one block.*length of at least 21"):
        check(3, state=types.SimpleNamespace(history=object()))
    with pytest.raises(ValueError, match="start latent has 3 latent frames and length 9 holds 3.*at least 21"):
        check(3, start=3)
    check(6, num_fragments=2)  # 6 + 3 frames: fine
    with caplog.at_level(logging.INFO, logger="comfyui-causvid"):
        job = check(21, start=1)
    assert "make 19 latent frames (73 frames), not length 81; length 93 makes 85" in caplog.text
    assert job.notice in caplog.text and job.video.total_frames == 18


class _Card:
    """A stand-in for ComfyUI's model management on a card of `capacity` bytes: `load_models_gpu` gives each model
    what is free beyond `memory_required` (whole with force_full_load), in the order given; `free_memory` unloads
    what `keep_loaded` does not hold, whole, while less than the target is free."""

    def __init__(self, capacity: int):
        self.capacity, self.current_loaded_models, self.calls = capacity, [], []

    def free(self) -> int:
        return self.capacity - sum(m.model.loaded for m in self.current_loaded_models)

    def load_models_gpu(self, models, memory_required=0, force_full_load=False):
        self.calls.append(([m.name for m in models], memory_required, force_full_load))
        for patcher in models:
            loaded = next((m for m in self.current_loaded_models if m.model is patcher), None)
            if loaded is None:
                self.current_loaded_models.insert(0, loaded := _Loaded(patcher))
            room = self.free() + patcher.loaded - memory_required
            patcher.loaded = patcher.size if force_full_load else max(0, min(patcher.size, room))

    def free_memory(self, memory_required, device, keep_loaded=()):
        self.calls.append(("free", [m.model.name for m in keep_loaded]))
        for m in list(self.current_loaded_models):
            if self.free() < memory_required and m not in keep_loaded:
                m.model.loaded = 0
                self.current_loaded_models.remove(m)


class _Patcher:
    def __init__(self, name: str, size: int, loaded: int = 0):
        self.name, self.size, self.loaded = name, size, loaded
        self.model = type(name, (), {})()
        self.load_device = torch.device("cuda")

    def model_size(self) -> int:
        return self.size

    def loaded_size(self) -> int:
        return self.loaded

    def current_loaded_device(self):
        return self.load_device if self.loaded else torch.device("cpu")


class _Loaded:
    def __init__(self, patcher):
        self.model, self.device = patcher, patcher.load_device

    def __eq__(self, other):
        return self.model is other.model


@pytest.mark.parametrize("text_encoder_left", [True, False])
def test_sampling_loads_the_vae_whole_first_and_unloads_other_models_before_offloading_the_dit(monkeypatch,
                                                                                              text_encoder_left):
    """On a card of 16 with 4 kept free for sampling: the VAE (1) loads first and whole, with room kept for the DiT
    (10) as ComfyUI counts it (1.1 x); a text encoder (6) still loaded would leave the DiT partly offloaded, so it
    is unloaded whole and the DiT loaded again; with no such model the DiT loads at once, one call each."""
    sampler = pack_module("nodes.sampler")
    card = _Card(16)
    for name, fn in [("load_models_gpu", card.load_models_gpu), ("free_memory", card.free_memory),
                     ("current_loaded_models", card.current_loaded_models)]:
        monkeypatch.setattr(sampler.mm, name, fn)
    dit, vae = _Patcher("dit", 10), _Patcher("vae", 1)
    if text_encoder_left:
        text_encoder = _Patcher("te", 6, loaded=6)
        card.current_loaded_models.append(_Loaded(text_encoder))
    sampler.load_for_sampling(dit, (vae,), 4)
    assert card.calls[0] == (["vae"], 4 + 11, True)
    assert card.calls[1] == (["dit", "vae"], 4, False)
    if text_encoder_left:
        assert card.calls[2:] == [("free", ["dit", "vae"]), (["dit", "vae"], 4, False)]
        assert text_encoder.loaded == 0
    else:
        assert card.calls[2:] == []
    assert (dit.loaded, vae.loaded) == (10, 1) and card.free() == 5


def test_a_run_keeps_its_models_loaded_while_a_call_between_blocks_makes_room():
    """Inside `kept_loaded`, ComfyUI's free_memory (what load_models_gpu runs for a VAE Encode or a text encode
    between blocks) unloads the other models but none of the run's, whatever it is asked to free; after the run it
    is ComfyUI's own again."""
    sampler = pack_module("nodes.sampler")
    import comfy.model_patcher

    mm, cpu = sampler.mm, torch.device("cpu")
    dit, vae, other = (comfy.model_patcher.ModelPatcher(Linear(4, 4), load_device=cpu, offload_device=cpu)
                       for _ in range(3))
    mm.load_models_gpu([dit, vae, other])
    loaded = dit.loaded_size()
    assert loaded > 0 and vae.loaded_size() == other.loaded_size() == loaded
    free_memory = mm.free_memory
    with sampler.kept_loaded((dit, vae)):
        mm.free_memory(float("inf"), cpu)
        assert (dit.loaded_size(), vae.loaded_size(), other.loaded_size()) == (loaded, loaded, 0)
    assert mm.free_memory is free_memory
    mm.free_memory(float("inf"), cpu)
    assert dit.loaded_size() == vae.loaded_size() == 0


def test_fast_takes_flash_attention_where_it_runs_and_says_so(monkeypatch, caplog):
    """speed 'fast' runs the self-attention by FlashAttention-4 where `flash4_unavailable` says it can (logged);
    on a Hopper / Blackwell GPU without the package the log says what installing it gains; exact never takes it."""
    import logging

    speed = pack_module("nodes.speed")
    attention = pack_module("causal.attention")
    monkeypatch.setattr(speed, "_said", set())
    monkeypatch.setattr(speed.kernels, "fused_unavailable", lambda device: None)
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(attention, "flash4_unavailable", lambda device: None)
    with caplog.at_level(logging.INFO, logger="comfyui-causvid"):
        assert speed.choose_speed("fast", cuda).flash_attention
        assert not speed.choose_speed("exact", cuda).flash_attention
    assert "self-attention by FlashAttention-4" in caplog.text
    monkeypatch.setattr(attention, "flash4_unavailable", lambda device: "FlashAttention-4 is not installed")
    for major, said in ((9, True), (8, False)):
        caplog.clear()
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, major=major: (major, 0))
        with caplog.at_level(logging.INFO, logger="comfyui-causvid"):
            assert not speed.choose_speed("fast", cuda).flash_attention
        assert ("about 8% faster on an H200" in caplog.text) == said, (major, caplog.text)
