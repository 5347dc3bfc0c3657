#!/usr/bin/env python3
"""FlashAttention-4 (`flash-attn-4`, CuTe DSL, Hopper and Blackwell) against SDPA, the kernels alone:
`causal.attention.flash4` (what `Compute(flash_attention=True)` runs for the self-attention) and `sdpa`.

It times both kernels on the DiT's shapes (4680 queries = one 3-frame block at 832x480, keys of a sink
3 + 12 cache, a 21-frame window and the 512 text tokens), eagerly and as a CUDA graph replay (FA4 launches through
TVM FFI: a graph must capture it), and reports each one's relative L2 against float32 attention:

    python3 bench/flash4.py --json $OUT/flash4.json

Installed with `pip install --target DIR`, FA4's CuTe DSL needs DIR/nvidia_cutlass_dsl/dsl_packages on sys.path
(`PYTHONPATH=DIR:DIR/nvidia_cutlass_dsl/dsl_packages`): the package's .pth file is read only in a site-packages.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.environment import environment  # noqa: E402
from causal.attention import flash4, flash4_unavailable, sdpa  # noqa: E402

SHAPES = ((12, 4680), (12, 18720), (12, 23400), (12, 32760), (12, 512), (40, 4680), (40, 32760), (40, 512))
"""(heads, keys) with 4680 queries and head dim 128: 1.3B (12 heads) and 14B (40 heads)."""


def _time(fn: Callable[[], Any], repeats: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def _graphed(fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph.replay, out


def rel_l2(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.float() - ref).norm() / ref.norm())


def measure(heads: int, keys: int, *, queries: int = 4680, head_dim: int = 128, repeats: int = 30,
            device: torch.device) -> dict[str, Any]:
    g = torch.Generator(device).manual_seed(heads * 100003 + keys)
    # [B, L, heads, d] storage, as the model and the KV cache hold them, viewed as SDPA's [B, heads, L, d]
    q, k, v = (torch.randn(1, n, heads, head_dim, generator=g, device=device, dtype=torch.bfloat16).transpose(1, 2)
               for n in (queries, keys, keys))
    ref = sdpa(q.float(), k.float(), v.float())
    row: dict[str, Any] = {"heads": heads, "queries": queries, "keys": keys}
    for name, kernel in (("sdpa", lambda: sdpa(q, k, v)), ("fa4", lambda: flash4(q, k, v))):
        out = kernel()
        row[f"{name}_rel_l2"] = rel_l2(out, ref)
        row[f"{name}_s"] = _time(kernel, repeats)
        replay, graph_out = _graphed(kernel)
        row[f"{name}_graph_s"] = _time(replay, repeats)
        row[f"{name}_graph_equal"] = bool(torch.equal(graph_out, out))
    row["fa4_speedup"] = row["sdpa_s"] / row["fa4_s"]
    row["fa4_graph_speedup"] = row["sdpa_graph_s"] / row["fa4_graph_s"]
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device("cuda")
    if why := flash4_unavailable(device):
        raise SystemExit(why)
    from importlib.metadata import version

    report: dict[str, Any] = {"environment": environment(device), "flash_attn_4": version("flash-attn-4"),
                              "rows": []}
    print("heads  keys   SDPA ms  FA4 ms  speed-up  graphs: SDPA  FA4  speed-up  rel-L2 SDPA  FA4")
    for heads, keys in SHAPES:
        r = measure(heads, keys, repeats=args.repeats, device=device)
        report["rows"].append(r)
        print(f"{heads:5d} {keys:6d} {r['sdpa_s'] * 1e3:8.3f} {r['fa4_s'] * 1e3:7.3f} {r['fa4_speedup']:8.2f}x "
              f"{r['sdpa_graph_s'] * 1e3:12.3f} {r['fa4_graph_s'] * 1e3:5.3f} {r['fa4_graph_speedup']:8.2f}x "
              f"{r['sdpa_rel_l2']:11.2e} {r['fa4_rel_l2']:.2e}  graph equal {r['fa4_graph_equal']}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
