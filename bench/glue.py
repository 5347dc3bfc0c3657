#!/usr/bin/env python3
"""The glue's kernels alone, each against what it would replace: the rotation of a cache's keys compiled for every
length (dynamic) or per length (static), GELU in the first FFN GEMM's epilogue against GEMM then GELU, SDPA on the
KV cache's transposed views against contiguous tensors, and the residual stream's memory layout (a transposed view,
as the model kept it before, against token-major) through one cached forward: bitwise for the exact glue, and
the forward's time each way.

    python3 bench/glue.py --json $OUT/glue.json                    # 1.3B sizes on the GPU
    python3 bench/glue.py --tiny --device cpu --json /tmp/g.json    # smoke test (no compiled kernels)

Times: CUDA events around `--repeats` calls after 3 warm-up calls (perf_counter on the CPU); errors: rel-L2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

if not __package__:  # run as `python3 bench/glue.py`: `bench` is the package in the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import causal  # noqa: E402
from bench.environment import environment, pick_device  # noqa: E402
from bench.models import prompt_embedding  # noqa: E402
from bench.timing import rel_l2  # noqa: E402
from causal import kernels  # noqa: E402
from causal.synthetic import random_state_dict  # noqa: E402
from tools.tiny import TINY  # noqa: E402


def milliseconds(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    for _ in range(3):
        fn()
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) * 1000 / repeats
    torch.cuda.synchronize(device)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(repeats):
        fn()
    b.record()
    torch.cuda.synchronize(device)
    return a.elapsed_time(b) / repeats


def rotation(config, tokens: int, device: torch.device, repeats: int, compiled: bool) -> dict[str, Any]:
    """`tokens` cached keys rotated by their phases: eager (complex128), and compiled dynamic / static."""
    g = torch.Generator(device).manual_seed(0)
    keys = torch.randn(1, tokens, config.num_heads, config.head_dim, generator=g, device=device).bfloat16()
    angles = torch.rand(tokens, 1, config.head_dim // 2, generator=g, device=device, dtype=torch.float64) * 6
    phases = torch.polar(torch.ones_like(angles), angles)
    eager = causal.rope.apply_rope(keys, phases)
    row: dict[str, Any] = {"tokens": tokens, "eager_ms": milliseconds(lambda: causal.rope.apply_rope(keys, phases),
                                                                      device, repeats),
                           "copy_ms": milliseconds(keys.clone, device, repeats)}
    if compiled:
        options = {"emulate_precision_casts": True}
        for name, dynamic in (("dynamic", True), ("static", False)):
            kernel = torch.compile(kernels.rope_rotate, dynamic=dynamic, fullgraph=True, options=options)
            row[f"{name}_ms"] = milliseconds(lambda: kernel(keys, phases.real, phases.imag), device, repeats)
            row[f"{name}_bitwise_vs_eager"] = bool(torch.equal(kernel(keys, phases.real, phases.imag), eager))
    return row


def gelu_epilogue(config, tokens: int, device: torch.device, repeats: int) -> dict[str, Any]:
    """The FFN's first linear + tanh-GELU as two kernels and as one GEMM with a GELU epilogue."""
    g = torch.Generator(device).manual_seed(1)
    x = torch.randn(tokens, config.dim, generator=g, device=device).bfloat16()
    w = (torch.randn(config.ffn_dim, config.dim, generator=g, device=device) / config.dim ** 0.5).bfloat16()
    b = (torch.randn(config.ffn_dim, generator=g, device=device) / 10).bfloat16()
    two = F.gelu(F.linear(x, w, b), approximate="tanh")
    one = torch._addmm_activation(b, x, w.t(), use_gelu=True)
    f32 = F.gelu(F.linear(x.float(), w.float(), b.float()), approximate="tanh")
    return {"tokens": tokens,
            "linear_then_gelu_ms": milliseconds(lambda: F.gelu(F.linear(x, w, b), approximate="tanh"), device,
                                                repeats),
            "linear_ms": milliseconds(lambda: F.linear(x, w, b), device, repeats),
            "epilogue_ms": milliseconds(lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True), device, repeats),
            "rel_epilogue_vs_two_kernels": rel_l2(one, two), "rel_two_kernels_vs_float32": rel_l2(two, f32),
            "rel_epilogue_vs_float32": rel_l2(one, f32)}


def attention_views(config, queries: int, keys: int, device: torch.device, repeats: int) -> dict[str, Any]:
    """SDPA on token-major storage seen through transposed views (the cache's layout) and on contiguous copies."""
    g = torch.Generator(device).manual_seed(2)

    def token_major(n: int) -> torch.Tensor:
        return torch.randn(1, n, config.num_heads, config.head_dim, generator=g, device=device).bfloat16()

    q, k, v = (token_major(n).transpose(1, 2) for n in (queries, keys, keys))
    qc, kc, vc = (t.contiguous() for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return {"queries": queries, "keys": keys,
            "views_ms": milliseconds(lambda: F.scaled_dot_product_attention(q, k, v), device, repeats),
            "contiguous_ms": milliseconds(lambda: F.scaled_dot_product_attention(qc, kc, vc), device, repeats),
            "output_stride": list(out.stride()), "output_shape": list(out.shape)}


def residual_layout(model, height: int, width: int, cached_frames: int, device: torch.device,
                    repeats: int, glues: list[kernels.Glue]) -> dict[str, Any]:
    """One cached forward of a block at the last slot with the residual stream token-major (the model's) and as a
    transposed view of the same values (the layout before): equal bits with the exact glue?"""
    config = model.config
    text = model.text_kv(prompt_embedding(config, 20, 1234).to(device=device, dtype=torch.bfloat16), torch.bfloat16)
    cache = causal.KVCache.for_video(config, batch=1, height=height, width=width, num_frames=cached_frames,
                                     dtype=torch.bfloat16, device=device)
    g = torch.Generator(device).manual_seed(3)
    for t in cache.keys + cache.values:
        t.normal_(generator=g)
    saved = [t.clone() for t in cache.keys + cache.values]
    slot = cached_frames - 3
    x = torch.randn(1, 16, 3, height // 8, width // 8, generator=g, device=device).bfloat16()
    timestep = torch.full((1, 3), 500.0, dtype=torch.float64, device=device)

    def forward(glue: kernels.Glue, transposed: bool) -> torch.Tensor:
        for t, s in zip(cache.keys + cache.values, saved):
            t.copy_(s)
        grid = model._grid(x.shape)
        tokens = model.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        if transposed:
            tokens = tokens.transpose(1, 2).contiguous().transpose(1, 2)
        e, e0 = model._time(timestep, tokens.dtype)
        phases = model.phases(slot, x.shape, device)
        start = slot * grid[1] * grid[2]
        for i, block in enumerate(model.blocks):
            tokens = block(tokens, e0, phases, text.keys[i], text.values[i], cache, i, start, None, glue)
        return model._unpatchify(model.head(tokens, e), grid)

    rows = {}
    for glue in glues:
        before, now = forward(glue, True), forward(glue, False)
        for t, s in zip(cache.keys + cache.values, saved):
            t.copy_(s)
        model_forward = model(x, timestep, text, cache=cache, cache_frame=slot, rope_frame=slot, glue=glue)
        rows[repr(glue)] = {"bitwise": bool(torch.equal(before, now)), "rel_l2": rel_l2(now, before),
                            "model_is_token_major": bool(torch.equal(model_forward, now)),
                            "transposed_ms": milliseconds(lambda: forward(glue, True), device, repeats),
                            "token_major_ms": milliseconds(lambda: forward(glue, False), device, repeats)}
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None)
    p.add_argument("--tiny", action="store_true", help="the tiny model's sizes (smoke test)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    config = TINY if args.tiny else causal.PRESETS["1.3B"]
    height, width, cached = (48, 64, 6) if args.tiny else (480, 832, 12)
    per_frame = config.tokens_per_frame(height, width)
    compiled = kernels.fused_unavailable(device) is None
    report: dict[str, Any] = {"environment": environment(device), "settings": {
        "model": "tiny" if args.tiny else "1.3B", "size": f"{width}x{height}", "cached_frames": cached,
        "compiled": compiled}}
    report["rotation"] = rotation(config, cached * per_frame, device, args.repeats, compiled)
    print("rotation", report["rotation"], flush=True)
    report["gelu_epilogue"] = gelu_epilogue(config, 3 * per_frame, device, args.repeats)
    print("gelu epilogue", report["gelu_epilogue"], flush=True)
    report["attention_views"] = attention_views(config, 3 * per_frame, cached * per_frame, device, args.repeats)
    print("attention views", report["attention_views"], flush=True)
    model = causal.CausalWanModel.from_state_dict(random_state_dict(config, dtype=torch.bfloat16, seed=0,
                                                                    device=device), config,
                                                  dtype=torch.bfloat16, device=device)
    glues = [kernels.EAGER, kernels.COMPILED] if compiled else [kernels.EAGER]
    report["residual_layout"] = residual_layout(model, height, width, cached, device, max(args.repeats // 3, 1),
                                                glues)
    print("residual layout", report["residual_layout"], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
