"""LongLive's PEFT LoRA: exact key mapping from its file layouts, LongLive's unmerged arithmetic bit for bit,
merging within bf16 noise of it, and adapters that do not fit refused with what is wrong."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from causal.lora import TARGETS, LoraError, apply_unmerged, check_fits, merge_into, read_lora
from causal.model import CausalWanModel
from causal.synthetic import random_state_dict
from tools.tiny import TINY, peft_lora, prompt

RANK = 8


def _peft(config=TINY, rank=RANK, seed=0, prefix="base_model.model.", dtype=torch.bfloat16) -> dict:
    return peft_lora(config, rank, seed, prefix, dtype)


@pytest.fixture(scope="module")
def base():
    return random_state_dict(TINY, dtype=torch.bfloat16, seed=0)


@pytest.mark.parametrize("container", ["generator_lora", "raw", "fsdp", "safetensors"])
def test_every_block_linear_is_mapped_from_the_file(tmp_path, container):
    sd = _peft(prefix="base_model.model._fsdp_wrapped_module." if container == "fsdp" else "base_model.model.")
    if container == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "lora.safetensors"
        save_file(sd, str(path))
    else:
        path = tmp_path / "lora.pt"
        torch.save({"generator_lora": sd} if container == "generator_lora" else sd, path)
    lora = read_lora(path)
    assert lora.rank == RANK and lora.scale == 1.0
    assert set(lora.pairs) == {f"blocks.{i}.{t}" for i in range(TINY.num_layers) for t in TARGETS}
    a, b = lora.pairs["blocks.1.ffn.0"]
    assert torch.equal(a, sd[next(k for k in sd if "blocks.1.ffn.0.lora_A" in k)])
    assert a.shape == (RANK, TINY.dim) and b.shape == (TINY.ffn_dim, RANK)
    check_fits(lora, TINY)
    assert read_lora(path, alpha=4).scale == 0.5


def _model(sd):
    return CausalWanModel.from_state_dict(dict(sd), TINY, dtype=torch.bfloat16)


def test_unmerged_adapter_is_longlives_arithmetic_bit_for_bit(tmp_path, base):
    """Each adapted layer: y = bf16(W x + b) + bf16(B bf16(A x)) * scale, compared with the formula written out."""
    torch.save(_peft(), tmp_path / "lora.pt")
    lora = read_lora(tmp_path / "lora.pt")
    model = _model(base)
    apply_unmerged(model, lora)
    assert set(dict(model.state_dict())) == set(base)  # names untouched: core LoRA patches still find them
    layer = model.blocks[1].cross_attn.v
    x = torch.randn(1, 7, TINY.dim, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    a, b = lora.pairs["blocks.1.cross_attn.v"]
    expected = F.linear(x, layer.weight, layer.bias) + F.linear(F.linear(x, a), b) * 1.0
    assert torch.equal(layer(x), expected)


def test_merged_is_within_bf16_noise_of_unmerged(tmp_path, base):
    lora_sd = _peft()
    torch.save(lora_sd, tmp_path / "lora.pt")
    lora = read_lora(tmp_path / "lora.pt")
    merged_sd = dict(base)
    merge_into(merged_sd, lora)
    unmerged, merged, plain = _model(base), _model(merged_sd), _model(base)
    apply_unmerged(unmerged, lora)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(1, 16, 3, 4, 6, generator=g).to(torch.bfloat16), torch.full((1, 3), 500.0)
    out = {}
    for name, m in (("unmerged", unmerged), ("merged", merged), ("plain", plain)):
        out[name] = m(x, t, m.text_kv(prompt(), torch.bfloat16)).float()
    rel = lambda p, q: ((p - q).norm() / q.norm()).item()  # noqa: E731
    assert rel(out["merged"], out["unmerged"]) < 2e-2
    assert rel(out["plain"], out["unmerged"]) > 10 * rel(out["merged"], out["unmerged"])  # the adapter matters


@pytest.mark.parametrize("change, match", [
    (lambda sd: sd.pop(next(k for k in sd if "lora_B" in k)), "not both lora_A and lora_B"),
    (lambda sd: sd.update({"base_model.model.head.head.lora_A.weight": torch.zeros(8, 4)}), "not LongLive/PEFT"),
    (lambda sd: sd.update({"base_model.model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(256, 3)}),
     "do not multiply"),
])
def test_damaged_adapters_are_refused(tmp_path, change, match):
    sd = _peft()
    change(sd)
    torch.save(sd, tmp_path / "lora.pt")
    with pytest.raises(LoraError, match=match):
        read_lora(tmp_path / "lora.pt")


def test_an_adapter_for_another_model_size_is_refused(tmp_path):
    from causal.config import WanConfig

    bigger = WanConfig(dim=256, ffn_dim=512, num_layers=3, text_dim=64)
    torch.save(_peft(config=bigger), tmp_path / "lora.pt")
    with pytest.raises(LoraError, match="another model size"):
        check_fits(read_lora(tmp_path / "lora.pt"), TINY)
    wider = WanConfig(dim=384, ffn_dim=512, num_layers=2, text_dim=64)
    torch.save(_peft(config=wider), tmp_path / "lora.pt")
    with pytest.raises(LoraError, match="made for another model"):
        check_fits(read_lora(tmp_path / "lora.pt"), TINY)


def test_pickled_code_in_an_adapter_is_never_run(tmp_path):
    import os

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"generator_lora": Evil()}, tmp_path / "lora.pt")
    with pytest.raises(ValueError, match="pickled Python code"):
        read_lora(tmp_path / "lora.pt")
    assert not marker.exists()
