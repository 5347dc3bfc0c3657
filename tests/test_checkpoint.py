"""causal.checkpoint / causal.synthetic: every layout round-trips, every bad file is refused clearly."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from causal.checkpoint import (Checkpoint, CheckpointError, inspect_checkpoint, normalise_state_dict,
                               read_checkpoint, validate_state_dict)
from causal.config import PRESETS, expected_shapes
from causal.synthetic import LAYOUTS, random_state_dict, write_checkpoint
from tools.tiny import TINY

STORAGE_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn]


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor, so that comparisons are bit-exact for every dtype (fp8 included)."""
    return t.contiguous().view(torch.uint8)


def assert_bit_identical(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected) or set(actual) == set(expected)
    for key, want in expected.items():
        got = actual[key]
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        assert torch.equal(bits(got), bits(want)), f"{key} differs"


def upcast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is None:
        return t
    return t.to(torch.float32).to(dtype) if t.dtype == torch.float8_e4m3fn else t.to(dtype)


@pytest.fixture(scope="module")
def tiny():
    return TINY


@pytest.fixture(scope="module")
def tiny_sd(tiny):
    return random_state_dict(tiny, dtype=torch.float32, seed=1)


def save_pt(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def save_st(tensors: dict, path: Path) -> Path:
    save_file(tensors, path)
    return path


def message(excinfo) -> str:
    return str(excinfo.value)


# --------------------------------------------------------------------------------------------------
# config key lists


def test_preset_key_counts_and_parameters():
    shapes_1_3b = expected_shapes(PRESETS["1.3B"])
    shapes_14b = expected_shapes(PRESETS["14B"])
    assert len(shapes_1_3b) == 825
    assert len(shapes_14b) == 1095
    assert PRESETS["1.3B"].num_parameters() == 1_418_996_800
    assert 14.2e9 < PRESETS["14B"].num_parameters() < 14.4e9
    assert shapes_1_3b["head.head.weight"] == (64, 1536)
    assert shapes_14b["blocks.39.ffn.0.weight"] == (13824, 5120)
    assert PRESETS["1.3B"].num_heads == 12 and PRESETS["14B"].num_heads == 40


# --------------------------------------------------------------------------------------------------
# synthetic weights


def test_random_state_dict_covers_expected_shapes_without_zeros(tiny):
    sd = random_state_dict(tiny, dtype=torch.bfloat16, seed=3)
    shapes = expected_shapes(tiny)
    assert list(sd) == list(shapes)
    for key, t in sd.items():
        assert tuple(t.shape) == shapes[key], key
        assert t.dtype == torch.bfloat16
        # no tensor is zero-filled, in whole or in part. torch's CPU randn itself returns an exact 0.0 now and then
        # (rarely, two at a time): seed 3 at TINY's size draws one pair, blocks.1.self_attn.k.weight[118, 87] and
        # [118, 95], already zero in float32
        assert t.numel() - t.count_nonzero() <= 2, f"{key} has zeros"
    f32 = random_state_dict(tiny, dtype=torch.float32, seed=3)
    assert abs(f32["blocks.0.norm3.weight"].mean().item() - 1.0) < 0.02
    assert abs(f32["blocks.0.modulation"].std().item() - tiny.dim ** -0.5) < 0.02
    assert abs(f32["blocks.0.ffn.2.weight"].std().item() - tiny.ffn_dim ** -0.5) < 0.01  # fan_in ffn_dim
    assert abs(f32["patch_embedding.weight"].std().item() - 64 ** -0.5) < 0.02  # fan_in 16*1*2*2
    assert f32["blocks.1.self_attn.q.bias"].abs().max().item() < 0.2


def test_random_state_dict_is_seeded(tiny):
    a = random_state_dict(tiny, dtype=torch.float32, seed=5)
    b = random_state_dict(tiny, dtype=torch.float32, seed=5)
    c = random_state_dict(tiny, dtype=torch.float32, seed=6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.head.weight"], c["head.head.weight"])


# --------------------------------------------------------------------------------------------------
# round trips

LAYOUT_MARKERS = {
    "causvid": "(generator)",
    "self_forcing": "generator_ema",
    "longlive": "FSDP",
    "lightx2v_pt": "bare Wan keys",
    "lightx2v_safetensors": "bare Wan keys",
    "comfyui": "model.diffusion_model.",
    "causvid_plus_converted": "bare Wan keys",
    "krea": "model. prefix",
    "reward_forcing": "model. prefix",
    "longlive2": "(generator)",
}


@pytest.mark.parametrize("read_dtype", [None, torch.bfloat16], ids=["stored", "to_bf16"])
@pytest.mark.parametrize("storage", STORAGE_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_round_trip(tmp_path, tiny, tiny_sd, layout, storage, read_dtype):
    source = {k: v.to(storage) for k, v in tiny_sd.items()}
    path = write_checkpoint(source, tmp_path / LAYOUTS[layout], layout)

    ckpt = read_checkpoint(path, dtype=read_dtype)

    assert isinstance(ckpt, Checkpoint)
    stored = {k: v.to(torch.bfloat16) for k, v in source.items()} if layout == "causvid_plus_converted" else source
    assert ckpt.source_dtype == next(iter(stored.values())).dtype
    assert list(ckpt.state_dict) == list(expected_shapes(tiny)) or set(ckpt.state_dict) == set(expected_shapes(tiny))
    assert_bit_identical(ckpt.state_dict, {k: upcast(v, read_dtype) for k, v in stored.items()})
    assert ckpt.config == tiny
    assert (ckpt.config.dim, ckpt.config.ffn_dim, ckpt.config.num_layers, ckpt.config.text_dim,
            ckpt.config.num_heads) == (256, 512, 2, 64, 2)  # two heads of 128
    assert LAYOUT_MARKERS[layout] in ckpt.layout


def test_self_forcing_takes_generator_ema_not_generator(tmp_path, tiny_sd):
    path = write_checkpoint(tiny_sd, tmp_path / "sf.pt", "self_forcing")
    raw = torch.load(path, weights_only=True)
    assert not torch.equal(raw["generator"]["model.head.head.weight"], raw["generator_ema"]["model.head.head.weight"])
    ckpt = read_checkpoint(path)
    assert torch.equal(ckpt.state_dict["head.head.weight"], raw["generator_ema"]["model.head.head.weight"])
    assert "generator_ema" in ckpt.layout


def test_container_preference_and_non_tensor_entries(tiny_sd):
    a = {"model." + k: v for k, v in tiny_sd.items()}
    b = {"model." + k: -v for k, v in tiny_sd.items()}
    c = {"model." + k: v * 2 for k, v in tiny_sd.items()}
    head = "head.head.weight"
    sd, _ = normalise_state_dict({"model": c, "generator": b, "generator_ema": a, "step": 7})
    assert sd[head] is a["model." + head]
    sd, _ = normalise_state_dict({"model": c, "generator": b, "critic": a})
    assert sd[head] is b["model." + head]
    sd, layout = normalise_state_dict({"model": c, "iteration": 3, "note": "text"})
    assert sd[head] is c["model." + head] and "model" in layout
    # non-tensor entries next to the tensors are skipped
    sd, _ = normalise_state_dict({"generator": {**a, "epoch": 3, "config": {"lr": 1e-5}}, "critic": {}})
    assert set(sd) == set(tiny_sd)
    # an empty generator_ema falls back to generator
    sd, _ = normalise_state_dict({"generator_ema": {}, "generator": b})
    assert sd[head] is b["model." + head]


@pytest.mark.parametrize("wrap", ["state_dict", "diffusion_model", "fsdp_bare", "module"])
def test_other_wrappers_normalise_without_copying(tiny, tiny_sd, wrap):
    if wrap == "state_dict":
        raw = {"state_dict": {"model." + k: v for k, v in tiny_sd.items()}}
    elif wrap == "diffusion_model":
        raw = {"diffusion_model." + k: v for k, v in tiny_sd.items()}
    elif wrap == "fsdp_bare":
        raw = {k.replace("self_attn.", "self_attn._fsdp_wrapped_module."): v for k, v in tiny_sd.items()}
    else:
        raw = {"module": {k: v for k, v in tiny_sd.items()}}
    sd, layout = normalise_state_dict(raw)
    assert set(sd) == set(tiny_sd)
    assert all(sd[k] is tiny_sd[k] for k in tiny_sd)  # renamed, not copied
    assert validate_state_dict(sd) == tiny
    assert layout


def test_legacy_torch_save_format_loads(tmp_path, tiny, tiny_sd):
    path = tmp_path / "legacy.pth"
    torch.save(tiny_sd, path, _use_new_zipfile_serialization=False)
    ckpt = read_checkpoint(path, dtype=torch.float16)
    assert ckpt.config == tiny
    assert_bit_identical(ckpt.state_dict, {k: v.half() for k, v in tiny_sd.items()})


def test_source_dtype_is_the_dtype_of_most_parameters(tmp_path, tiny_sd):
    mixed = {k: v if v.dim() == 1 else v.to(torch.float8_e4m3fn) for k, v in tiny_sd.items()}
    ckpt = read_checkpoint(save_st(mixed, tmp_path / "m.safetensors"))
    assert ckpt.source_dtype == torch.float8_e4m3fn
    assert ckpt.state_dict["blocks.0.norm3.weight"].dtype == torch.float32


def test_bad_dtype_argument(tmp_path, tiny_sd):
    path = write_checkpoint(tiny_sd, tmp_path / "causal_model.pt", "lightx2v_pt")
    with pytest.raises(CheckpointError, match="not a floating-point dtype"):
        read_checkpoint(path, dtype=torch.int8)


# --------------------------------------------------------------------------------------------------
# refusing code


class _RunsCode:
    """Unpickling this object runs code that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_malicious_payload_really_runs_when_unpickled_normally(tmp_path):
    # Positive control: proves the payload used below is live, so the refusal test can fail.
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch_save", "raw_pickle_p2", "raw_pickle_p4"])
def test_pickle_with_code_is_refused_and_not_run(tmp_path, tiny_sd, writer):
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.pt"
    obj = {"generator": {"model." + k: v for k, v in tiny_sd.items()}, "hook": _RunsCode(marker)}
    if writer == "torch_save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(writer[-1])))
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(path)
    text = message(excinfo)
    assert not marker.exists()
    assert "safetensors" in text and str(path) in text
    if writer == "raw_pickle_p4":  # the safe unpickler stops at protocol 4's FRAME opcode, before the code
        assert "not a PyTorch checkpoint" in text
    else:
        assert "pickled Python code" in text and "refuses to execute" in text


# --------------------------------------------------------------------------------------------------
# damaged and wrong files


@pytest.mark.parametrize("layout", ["lightx2v_safetensors", "causvid"])
def test_truncated_file(tmp_path, tiny_sd, layout):
    path = write_checkpoint(tiny_sd, tmp_path / LAYOUTS[layout], layout)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(path)
    assert "truncated or corrupt" in message(excinfo)
    assert str(path) in message(excinfo)


def test_missing_file_and_unknown_extension(tmp_path, tiny_sd):
    with pytest.raises(CheckpointError, match="file not found"):
        read_checkpoint(tmp_path / "nope.safetensors")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(CheckpointError, match="unknown file extension '.gguf'"):
        read_checkpoint(gguf)
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_text_files_renamed_as_models(tmp_path, suffix):
    text = tmp_path / ("notes" + suffix)
    text.write_text("these are my notes about the model\nline two\n")
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(text)
    # the file's content is never quoted: a message may reach whoever sent the prompt
    assert "is a text file" in message(excinfo) and "these are my notes" not in message(excinfo)


    lfs = tmp_path / ("lfs" + suffix)
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 5680000000\n")
    with pytest.raises(CheckpointError, match="Git LFS pointer"):
        read_checkpoint(lfs)

    empty = tmp_path / ("empty" + suffix)
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\)"):
        read_checkpoint(empty)


def test_binary_garbage_pt(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match="truncated or corrupt, or not a PyTorch checkpoint"):
        read_checkpoint(path)


def test_empty_dict_and_no_wan_keys(tmp_path):
    with pytest.raises(CheckpointError, match="contains no tensors"):
        read_checkpoint(save_pt({}, tmp_path / "empty_dict.pt"))
    with pytest.raises(CheckpointError, match="contains no tensors"):
        read_checkpoint(save_pt({"generator": {}, "critic": {}, "step": 3}, tmp_path / "empty_gen.pt"))
    with pytest.raises(CheckpointError, match="not a dict of tensors"):
        read_checkpoint(save_pt([torch.ones(3)], tmp_path / "list.pt"))
    other = {"conv_in.weight": torch.randn(4, 4), "mid_block.attn.to_q.weight": torch.randn(4, 4)}
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(save_pt(other, tmp_path / "unet.pt"))
    assert "not a Wan2.1 DiT checkpoint" in message(excinfo) and "conv_in.weight" in message(excinfo)


def test_missing_keys_listed_with_count(tmp_path, tiny_sd):
    few = dict(tiny_sd)
    del few["blocks.1.ffn.2.bias"]
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(write_checkpoint(few, tmp_path / "causal_model.safetensors", "lightx2v_safetensors"))
    text = message(excinfo)
    assert "1 of 69 expected keys are missing" in text and "'blocks.1.ffn.2.bias'" in text

    many = {k: v for k, v in tiny_sd.items() if not k.startswith("blocks.1.self_attn")}
    with pytest.raises(CheckpointError) as excinfo:
        validate_state_dict(many)
    assert "10 of 69 expected keys are missing" in message(excinfo) and "(+5 more)" in message(excinfo)

    no_head = {k: v for k, v in tiny_sd.items() if k != "head.modulation"}
    with pytest.raises(CheckpointError, match="head.modulation"):
        validate_state_dict(no_head)


def test_unexpected_keys_listed(tmp_path, tiny, tiny_sd):
    extra = {**tiny_sd, "blocks.0.self_attn.extra_gate": torch.ones(tiny.dim), "pos_embed": torch.ones(2)}
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(write_checkpoint(extra, tmp_path / "model.pt", "causvid"))
    text = message(excinfo)
    assert "2 unexpected keys" in text
    assert "'blocks.0.self_attn.extra_gate'" in text and "'pos_embed'" in text
    assert "missing" not in text


def test_wrong_shape_named(tmp_path, tiny, tiny_sd):
    bad = {**tiny_sd, "blocks.1.cross_attn.o.weight": torch.randn(tiny.dim, 64)}
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(write_checkpoint(bad, tmp_path / "causal_model.pt", "lightx2v_pt"))
    assert "'blocks.1.cross_attn.o.weight' expected [256, 256], found [256, 64]" in message(excinfo)


def test_non_float_tensor_rejected(tiny, tiny_sd):
    bad = {**tiny_sd, "blocks.0.norm3.bias": torch.ones(tiny.dim, dtype=torch.int32)}
    with pytest.raises(CheckpointError, match="not floating point"):
        validate_state_dict(bad)


def _i2v_extra_keys(sd, dim):
    return {**sd, "img_emb.proj.1.weight": torch.randn(dim, 1280),
            "blocks.0.cross_attn.k_img.weight": torch.randn(dim, dim)}


@pytest.mark.parametrize("variant, expected", [
    ("i2v_img_emb", "image-to-video"),
    ("i2v_in_dim_36", "image-to-video"),
    ("vace", "VACE"),
    ("in_48_out_16", "takes 48 input and produces 16 output"),
    ("s2v", "speech-to-video"),
    ("other_in_dim", "takes 32 input"),
])
def test_non_causal_wan_variants_named(tmp_path, tiny, tiny_sd, variant, expected):
    d = tiny.dim
    if variant == "i2v_img_emb":
        sd = _i2v_extra_keys(tiny_sd, d)
    elif variant == "i2v_in_dim_36":
        sd = {**tiny_sd, "patch_embedding.weight": torch.randn(d, 36, 1, 2, 2)}
    elif variant == "vace":
        sd = {**tiny_sd, "vace_blocks.0.before_proj.weight": torch.randn(d, d)}
    elif variant == "in_48_out_16":
        sd = random_state_dict(replace(tiny, in_dim=48), dtype=torch.float32)
    elif variant == "s2v":
        sd = {**tiny_sd, "casual_audio_encoder.encoder.conv.weight": torch.randn(4, 4)}
    else:
        sd = {**tiny_sd, "patch_embedding.weight": torch.randn(d, 32, 1, 2, 2)}
    path = save_st({"model.diffusion_model." + k: v for k, v in sd.items()}, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(path)
    text = message(excinfo)
    assert expected in text, text
    assert "causal" in text and "x.safetensors" in text


def test_a_48_channel_file_loads_as_the_wan22_layout(tmp_path, tiny):
    """A Wan2.2 TI2V-5B layout (48 latent channels: LongLive 2.0) in LongLive 2.0's own layout reads like any
    other, its config on the Wan2.2 VAE."""
    config = replace(tiny, in_dim=48, out_dim=48)
    sd = random_state_dict(config, dtype=torch.bfloat16)
    ckpt = read_checkpoint(write_checkpoint(sd, tmp_path / "model_bf16.pt", "longlive2"))
    assert ckpt.config == config and ckpt.config.latents.channels == 48 and "LongLive 2.0" in ckpt.layout
    assert_bit_identical(ckpt.state_dict, sd)


def test_lora_files_named(tmp_path):
    lora = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.randn(8, 128),
            "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.randn(128, 8)}
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(save_st(lora, tmp_path / "lora.safetensors"))
    assert "this is a LoRA" in message(excinfo) and "LoraLoaderModelOnly" in message(excinfo)

    kohya = {"lora_unet_blocks_0_self_attn_q.lora_down.weight": torch.randn(8, 128),
             "lora_unet_blocks_0_self_attn_q.alpha": torch.tensor(8.0)}
    with pytest.raises(CheckpointError, match="this is a LoRA"):
        read_checkpoint(save_pt(kohya, tmp_path / "kohya.pt"))

    longlive = {"generator_lora": {"base_model.model.blocks.0.ffn.0.lora_A.weight": torch.randn(4, 128)}}
    with pytest.raises(CheckpointError, match="this is a LoRA"):
        read_checkpoint(save_pt(longlive, tmp_path / "lora.pt"))


def test_vae_and_text_encoder_named(tmp_path):
    vae = {"encoder.conv1.weight": torch.randn(96, 3, 3, 3, 3), "decoder.head.2.weight": torch.randn(3, 96, 3, 3, 3),
           "conv1.weight": torch.randn(32, 32, 1, 1, 1)}
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(save_pt(vae, tmp_path / "Wan2.1_VAE.pth"))
    assert "this is a VAE" in message(excinfo) and "models/vae" in message(excinfo)

    umt5_wan = {"token_embedding.weight": torch.randn(10, 8), "blocks.0.attn.q.weight": torch.randn(8, 8)}
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(save_pt(umt5_wan, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"))
    assert "umT5 text encoder" in message(excinfo) and "text_encoders" in message(excinfo)

    umt5_hf = {"shared.weight": torch.randn(10, 8), "encoder.block.0.layer.0.SelfAttention.q.weight": torch.randn(8, 8)}
    with pytest.raises(CheckpointError, match="umT5 text encoder"):
        read_checkpoint(save_st(umt5_hf, tmp_path / "t5.safetensors"))


def _fp8_scaled(sd: dict, prefix: str = "model.diffusion_model.") -> dict:
    """A ComfyUI 'fp8_scaled' file of a state dict: every block matrix as float8_e4m3fn with a per-tensor
    float32 scale (amax / 448), a scale_input beside it, the small tensors left as they are, a marker."""
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks.") and v.dim() == 2:
            scale = v.abs().amax().float() / 448.0
            out[prefix + k] = (v.float() / scale).to(torch.float8_e4m3fn)
            out[prefix + k[:-len("weight")] + "scale_weight"] = scale.reshape(1)
            out[prefix + k[:-len("weight")] + "scale_input"] = torch.ones(1)
        else:
            out[prefix + k] = v
    out[prefix + "scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    return out


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", ""])
def test_comfyui_fp8_scaled_files_are_dequantised(tmp_path, tiny, tiny_sd, prefix):
    """Weights come back as fp8 x scale (within fp8's rounding of the bf16 file they were made from), and the
    model built from them predicts what the original does within fp8 tolerance."""
    from causal.model import CausalWanModel

    original = {k: v.to(torch.bfloat16) for k, v in tiny_sd.items()}
    checkpoint = read_checkpoint(save_st(_fp8_scaled(original, prefix), tmp_path / "wan_fp8_scaled.safetensors"))
    assert "fp8_scaled" in checkpoint.layout and checkpoint.source_dtype == torch.bfloat16
    assert set(checkpoint.state_dict) == set(original)
    for k, v in original.items():
        got = checkpoint.state_dict[k]
        assert got.dtype == torch.bfloat16
        if k.startswith("blocks.") and v.dim() == 2:
            rel = ((got.float() - v.float()).norm() / v.float().norm()).item()
            assert 0 < rel < 0.05, (k, rel)  # e4m3 keeps 3 mantissa bits: ~2-3 % relative error
        else:
            assert torch.equal(got, v)
    a = CausalWanModel.from_state_dict(original, tiny, dtype=torch.float32)
    b = CausalWanModel.from_state_dict(checkpoint.state_dict, tiny, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 16, 3, 4, 6, generator=g), torch.full((1, 3), 500.0)
    text = torch.randn(1, 8, tiny.text_dim, generator=g)
    ya, yb = a(x, t, a.text_kv(text, torch.float32)), b(x, t, b.text_kv(text, torch.float32))
    assert ((ya - yb).norm() / ya.norm()).item() < 0.1


def test_fp8_scaled_damage_and_pickles_are_named(tmp_path, tiny_sd):
    sd = _fp8_scaled({k: v.to(torch.bfloat16) for k, v in tiny_sd.items()})
    sd["model.diffusion_model.blocks.0.ffn.0.scale_weight"] = torch.ones(3)
    with pytest.raises(CheckpointError, match="per-tensor scales only"):
        read_checkpoint(save_st(sd, tmp_path / "s.safetensors"))
    sd = _fp8_scaled({k: v.to(torch.bfloat16) for k, v in tiny_sd.items()})
    with pytest.raises(CheckpointError, match="fp8_scaled.*safetensors files only"):
        read_checkpoint(save_pt(sd, tmp_path / "s.pt"))


def test_shard_hint(tmp_path, tiny_sd):
    half = {k: v for k, v in tiny_sd.items() if not k.startswith("blocks.1.")}
    half["blocks.1.ffn.0.weight"] = tiny_sd["blocks.1.ffn.0.weight"]
    path = tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors"
    save_file(half, path)
    with pytest.raises(CheckpointError, match="one shard of a multi-file model"):
        read_checkpoint(path)


def test_validate_in_memory_returns_config(tiny, tiny_sd):
    assert validate_state_dict(tiny_sd) == tiny
    with pytest.raises(CheckpointError, match="^state dict: "):
        validate_state_dict({})


def test_html_pages_saved_as_models_are_named_without_their_content(tmp_path):
    page = tmp_path / "model.safetensors"
    page.write_text("<!DOCTYPE html><html><head><title>secret token 1234</title></head></html>")
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(page)
    assert "is an HTML page" in message(excinfo) and "secret" not in message(excinfo)


@pytest.mark.parametrize("header", [
    (2 ** 60).to_bytes(8, "little") + b"{}",  # a header length far past the file
    (12).to_bytes(8, "little") + b"{not json!!}",  # malformed JSON
    (40).to_bytes(8, "little") + b'{"a": {"dtype": "F32", "shape": [1000000000], "data_offsets": [0, 4]}}'[:40],
])
def test_hostile_safetensors_headers_are_refused_without_reading_data(tmp_path, header):
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(header + b"\0" * 64)
    with pytest.raises(CheckpointError, match="truncated or corrupt|not a Wan2.1|no tensors"):
        read_checkpoint(path)


@pytest.mark.parametrize("container", ["generator", "generator_ema"])
def test_causal_forcing_layouts_load(tmp_path, tiny_sd, container):
    """Causal-Forcing's .pt files (chunkwise/causal_forcing.pt, framewise/causal_forcing.pt,
    causal-forcing++/framewise-*step.pt): a dict with `generator` and/or `generator_ema` of `model.` keys."""
    raw = {container: {"model." + k: v for k, v in tiny_sd.items()}}
    checkpoint = read_checkpoint(save_pt(raw, tmp_path / "causal_forcing.pt"))
    assert set(checkpoint.state_dict) == set(tiny_sd)
    assert torch.equal(checkpoint.state_dict["blocks.0.ffn.0.weight"], tiny_sd["blocks.0.ffn.0.weight"])



def test_inspect_checks_from_the_header_what_read_checks(tmp_path, tiny, tiny_sd):
    """inspect_checkpoint (the check before anything loads) gives read_checkpoint's config and layout for every
    layout, and refuses every bad file with read_checkpoint's message: truncated, text, garbage, a LoRA, a VAE, a
    text encoder, a missing key, nothing."""
    for layout in LAYOUTS:
        path = write_checkpoint(tiny_sd, tmp_path / layout / LAYOUTS[layout], layout)
        read = read_checkpoint(path)
        assert inspect_checkpoint(path) == (read.config, read.layout) and read.config == tiny, layout
    bad = {}
    for layout in ("lightx2v_safetensors", "causvid"):
        path = write_checkpoint(tiny_sd, tmp_path / f"cut_{layout}" / LAYOUTS[layout], layout)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        bad[f"truncated {layout}"] = path
    (text := tmp_path / "notes.safetensors").write_text("my notes\n")
    (garbage := tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 4)
    bad.update(text=text, garbage=garbage, missing=tmp_path / "nope.pt",
               lora=save_st({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.randn(8, 128)},
                            tmp_path / "lora.safetensors"),
               vae=save_pt({"encoder.conv1.weight": torch.randn(96, 3, 3, 3, 3),
                            "decoder.head.2.weight": torch.randn(3, 96, 3, 3, 3)}, tmp_path / "vae.pth"),
               text_encoder=save_st({"shared.weight": torch.randn(10, 8),
                                     "encoder.block.0.layer.0.SelfAttention.q.weight": torch.randn(8, 8)},
                                    tmp_path / "t5.safetensors"),
               missing_key=save_st({k: v for k, v in list(tiny_sd.items())[1:]}, tmp_path / "short.safetensors"),
               empty=save_pt({}, tmp_path / "empty.pt"))
    for what, path in bad.items():
        with pytest.raises(CheckpointError) as read:
            read_checkpoint(path)
        with pytest.raises(CheckpointError) as inspected:
            inspect_checkpoint(path)
        assert message(inspected) == message(read), what
