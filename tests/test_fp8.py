"""fp8 block linears: what is replaced, per-row scales, and an error bounded against bf16."""

from __future__ import annotations

import pytest
import torch

from causal.fp8 import E4M3, Fp8Linear, quantize_blocks_fp8, quantize_rows
from causal.kv_cache import KVCache
from tools.tiny import prompt, tiny_model


def test_quantize_rows_round_trip():
    x = torch.randn(6, 256) * torch.logspace(-3, 3, 6)[:, None]  # rows of very different magnitude
    q, scale = quantize_rows(x)
    assert q.dtype == E4M3 and scale.shape == (6, 1)
    assert ((q.float() * scale - x).norm(dim=1) / x.norm(dim=1)).max() < 0.05


def test_only_block_linears_become_fp8():
    model = quantize_blocks_fp8(tiny_model(torch.bfloat16))
    fp8 = [name for name, m in model.named_modules() if isinstance(m, Fp8Linear)]
    assert len(fp8) == 2 * 10 and all(name.startswith("blocks.") for name in fp8)
    assert isinstance(model.head.head, torch.nn.Linear) and isinstance(model.text_embedding[0], torch.nn.Linear)
    assert model.blocks[0].ffn[0].weight.dtype == E4M3


def test_fp8_forward_stays_close_to_bf16():
    try:
        torch._scaled_mm(torch.zeros(16, 16, dtype=E4M3), torch.zeros(16, 16, dtype=E4M3).t(),
                         scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16), out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError) as e:
        pytest.skip(f"no fp8 matmul on this device: {e}")
    exact, fast = tiny_model(torch.bfloat16), quantize_blocks_fp8(tiny_model(torch.bfloat16))
    x = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    t = torch.full((1, 3), 600.0)
    outs = []
    for m in (exact, fast):
        cache = KVCache(2, 1, 48, 2, 128, dtype=torch.bfloat16, device="cpu")
        outs.append(m(x, t, m.text_kv(prompt(), torch.bfloat16), cache=cache).double())
    error = ((outs[1] - outs[0]).norm() / outs[0].norm()).item()
    assert 0 < error < 0.1
