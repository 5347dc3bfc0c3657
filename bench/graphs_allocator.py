"""Which CUDA graph captures fail under cudaMallocAsync (ComfyUI's default allocator), one fresh process per case.

`causal.CudaGraphs` refuses that allocator because capturing the fused forward under it failed on an H200 (torch
2.11: "CUDA driver error: invalid argument", then an abort when the failed capture's memory was freed), so a
ComfyUI started without `--disable-cuda-malloc` runs the nodes without graphs (15 % slower on the 1.3B stream,
bench/RESULTS.md). This probe narrows down what fails: each case captures one thing on the tiny model at 128x192
with the allocator given by PYTORCH_CUDA_ALLOC_CONF, in its own process (a failure may abort it), and reports
whether the capture and a replay gave the eager numbers.

    python3 bench/graphs_allocator.py --json $OUT/graphs_allocator.json        # on the GPU machine
    python3 bench/graphs_allocator.py --case eager_forward                      # one case, in this process
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

ALLOCATORS = {"native": "", "async": "backend:cudaMallocAsync"}


def _capture(run: Callable[[], "object"], *, pool: bool, error_mode: str, side_stream: bool) -> bool:
    """Run eagerly, capture, replay; True when the replay gives the eager result bit for bit."""
    import torch

    stream = torch.cuda.Stream() if side_stream else torch.cuda.current_stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        eager = run().clone()
        graph = torch.cuda.CUDAGraph()
        kwargs = {"pool": torch.cuda.graph_pool_handle()} if pool else {}
        with torch.cuda.graph(graph, stream=stream, capture_error_mode=error_mode, **kwargs):
            static = run()
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    torch.cuda.synchronize()
    return bool(torch.equal(static, eager))


def case(name: str) -> bool:
    import torch

    from causal import SCHEDULES, Compute, CudaGraphs, Noise, Video, generate, kernels
    from causal.kv_cache_fp8 import video_cache
    from tools.tiny import prompt, tiny_model

    device = torch.device("cuda")
    model = tiny_model(torch.bfloat16).to(device)
    x = torch.randn(1, 16, 3, 16, 24, device=device, dtype=torch.bfloat16)
    t = torch.full((1, 3), 500.0, dtype=torch.float64, device=device)
    text = model.text_kv(prompt(seed=1).to(device), torch.bfloat16)
    cache = video_cache(model.config, False, batch=1, height=128, width=192, num_frames=9, dtype=torch.bfloat16,
                        device=device)

    def forward(glue):
        return lambda: model(x, t, text, cache=cache, cache_frame=3, rope_frame=3, glue=glue)

    norm_in = torch.randn(4680, 256, device=device, dtype=torch.bfloat16)
    weight = torch.ones(256, device=device, dtype=torch.bfloat16)
    cases: dict[str, Callable[[], bool]] = {
        "matmul_only": lambda: _capture(lambda: norm_in @ norm_in.T, pool=True, error_mode="thread_local",
                                        side_stream=True),
        "eager_forward": lambda: _capture(forward(kernels.EAGER), pool=True, error_mode="thread_local",
                                          side_stream=True),
        "one_compiled_kernel": lambda: _capture(lambda: kernels.compiled(kernels.rms_norm)(norm_in, weight, 1e-6),
                                                pool=True, error_mode="thread_local", side_stream=True),
        "one_compiled_kernel_no_pool": lambda: _capture(
            lambda: kernels.compiled(kernels.rms_norm)(norm_in, weight, 1e-6), pool=False, error_mode="thread_local",
            side_stream=True),
        "one_compiled_kernel_global_mode": lambda: _capture(
            lambda: kernels.compiled(kernels.rms_norm)(norm_in, weight, 1e-6), pool=True, error_mode="global",
            side_stream=True),
        "fused_forward": lambda: _capture(forward(kernels.COMPILED), pool=True, error_mode="thread_local",
                                          side_stream=True),
        "fused_forward_no_pool": lambda: _capture(forward(kernels.COMPILED), pool=False, error_mode="thread_local",
                                                  side_stream=True),
        "fused_forward_current_stream": lambda: _capture(forward(kernels.COMPILED), pool=False,
                                                         error_mode="thread_local", side_stream=False),
    }

    def pack_graphs() -> bool:  # what the sampler runs: CudaGraphs over a short sink video, against no graphs
        policy = __import__("causal.cache_policy", fromlist=["sink"]).sink(3, 9)
        schedule = SCHEDULES["Self-Forcing / LongLive 1.3B"]
        video, noise = Video(128, 192, total_frames=15), Noise(seed=1)
        exact = generate(model, prompt(seed=1).to(device), video, schedule, policy, noise=noise,
                         compute=Compute(fused_kernels=True)).latents
        CudaGraphs._check_device = staticmethod(lambda d: torch.device("cuda", 0))  # past the allocator check
        graphs = CudaGraphs(model, batch=1, height=128, width=192, num_frames=9)
        replayed = generate(model, prompt(seed=1).to(device), video, schedule, policy, noise=noise,
                            compute=Compute(fused_kernels=True, graphs=graphs)).latents
        return bool(torch.equal(replayed, exact))

    cases["pack_graphs_fused"] = pack_graphs
    return cases[name]()


CASES = ("matmul_only", "eager_forward", "one_compiled_kernel", "one_compiled_kernel_no_pool",
         "one_compiled_kernel_global_mode", "fused_forward", "fused_forward_no_pool", "fused_forward_current_stream",
         "pack_graphs_fused")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=CASES, help="run one case in this process (else every case, each allocator)")
    p.add_argument("--allocators", default=",".join(ALLOCATORS))
    p.add_argument("--timeout-s", type=float, default=120)
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.case:
        import torch

        ok = case(args.case)
        print(f"RESULT {args.case} {torch.cuda.get_allocator_backend()} {'equal' if ok else 'DIFFERENT'}", flush=True)
        return 0 if ok else 3
    rows = []
    for allocator in args.allocators.split(","):
        for name in CASES:
            env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF=ALLOCATORS[allocator], PYTHONUNBUFFERED="1")
            t0 = time.perf_counter()
            try:
                done = subprocess.run([sys.executable, __file__, "--case", name], env=env, capture_output=True,
                                      text=True, timeout=args.timeout_s)
                rc, tail = done.returncode, (done.stdout + done.stderr)[-1500:]
            except subprocess.TimeoutExpired:
                rc, tail = "timeout", ""
            row = {"allocator": allocator, "case": name, "rc": rc, "ok": rc == 0,
                   "s": round(time.perf_counter() - t0, 1), "tail": tail if rc != 0 else ""}
            rows.append(row)
            last = tail.strip().splitlines()[-1] if tail.strip() else ""
            print(f"{allocator:7} {name:32} rc {rc}  {row['s']} s  {'' if rc == 0 else last[:200]}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
