#!/usr/bin/env python3
"""Speed options under every cache policy: seconds per block, first block and error against the exact path.

One process, one real-size random-weight DiT (DiT only, a umT5-like prompt embedding), 832×480. For each cache
policy and each option it samples a warm-up video (compiles the fused glue, captures every CUDA graph slot;
the `CudaGraphs` is kept, as the node keeps it) and then a timed video of `--blocks` blocks with the same seed.
Per block: the time between two blocks' last denoising steps (CUDA events, no host sync inside the video), so a
steady block holds one block's work, its clean pass included. Steady = median of the blocks after the cache is
full. Error = relative L2 of the whole video's latents against the exact option's, same policy and seed.

Options: exact (the bit-exact default of `causal`), graphs (exact + CUDA graphs: must be bitwise), fused,
fused_graphs, and `exact_flash` / `exact_efficient`: the exact path with SDPA held to one other backend — the
size of the error that merely changing the attention kernel makes (the yardstick for "within the references'
own cross-backend noise").

    python3 bench/policies.py --model 1.3B --json $OUT/policies_13B.json
    python3 bench/policies.py --model 14B --policies fragments,rolling --options exact,fused_graphs --blocks 10
    python3 bench/policies.py --tiny --device cpu --blocks 5 --options exact,fused   # CPU smoke test
    python3 bench/policies.py --model 5B --policies multi_shot_sink --blocks 6 \
        --options exact,fused_graphs,fused_graphs_fa4,fp8w_fused_graphs,fp8w_fused_graphs_fa4   # LongLive 2.0, 720p

The 5B (LongLive 2.0, Wan2.2 TI2V-5B) runs at its 1280x704 with its own schedule (UniPC, 8-frame blocks).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

if not __package__:  # run as `python3 bench/policies.py`: `bench` is the package in the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import causal  # noqa: E402
from bench.environment import GiB, environment, free_memory, pick_device, sync  # noqa: E402
from bench.models import Setup, prompt_embedding  # noqa: E402
from bench.profiling import BlockMarks, block_breakdown, kineto_kernels, profile_forwards  # noqa: E402
from bench.timing import Clock, rel_l2  # noqa: E402
from causal import cache_policy  # noqa: E402
from causal.synthetic import random_state_dict  # noqa: E402
from tools.tiny import TINY  # noqa: E402

POLICIES = {
    "fragments": lambda: cache_policy.fragments(21),
    "rolling": lambda: cache_policy.rolling(21),
    "sink": lambda: cache_policy.sink(3, 12),
    "recompute": lambda: cache_policy.recompute(3, keep_first_frame=True),  # DiT only: no VAE re-encode
    "sink_at_read": lambda: dataclasses.replace(cache_policy.sink(3, 12), rope_at_read=True),
    "rolling_at_read": lambda: dataclasses.replace(cache_policy.rolling(21), rope_at_read=True),
    "reward_forcing": lambda: cache_policy.ema_sink(3, 9, 0.999),
    "rolling_forcing": lambda: cache_policy.family_policy("Rolling Forcing 1.3B"),
    "multi_shot_sink": lambda: cache_policy.multi_shot_sink(8, 32, 8.0),
}
OWN_SCHEDULE = {"rolling_forcing": "Rolling Forcing 1.3B"}
"""Policies that come with their own sampler: Rolling Forcing's joint window (s / block: between blocks leaving
the window; no CUDA graphs yet)."""
"""`sink_at_read` / `rolling_at_read`: `sink` / `rolling` with keys cached un-rotated and rotated at every read (the
cost of read-time positions; the latents are compared with the write-time policy's of the same option);
`reward_forcing`: Reward Forcing's EMA sink at slot
positions."""
WRITE_TIME = {"sink_at_read": "sink", "rolling_at_read": "rolling"}
SCHEDULE = {"1.3B": "Self-Forcing / LongLive 1.3B", "14B": "CausVid-Plus 14B", "5B": "LongLive 2.0 5B"}
SIZE = {"1.3B": (480, 832), "14B": (480, 832), "5B": (704, 1280)}
"""(height, width) per model: the trained sizes (LongLive 2.0's `image_or_video_shape` 44 x 80 latents)."""
OPTIONS = ("exact", "graphs", "fused", "fused_graphs", "exact_flash", "exact_efficient", "exact_fp8kv",
           "fused_graphs_fp8kv", "fused_graphs_gelu_apart", "exact_fa4", "fused_graphs_fa4", "fp8w_fused_graphs",
           "fp8w_fused_graphs_fa4")
"""`_fp8kv`: the same with the KV cache in FP8 (`Compute(kv_cache_fp8=True)`); `_gelu_apart`: the same with the
FFN's GELU as a kernel of its own instead of the first product's epilogue (what the epilogue gains); `_fa4`: the
same with the self-attention by FlashAttention-4 (`Compute(flash_attention=True)`; `exact_fa4` is its
cross-kernel error alone); `fp8w_`: the same with the blocks' linears in FP8 (`causal.fp8.quantize_blocks_fp8`, the
pack's fp8 weights; these run last, since the model is quantised in place)."""
BACKENDS = {"exact_flash": "FLASH_ATTENTION", "exact_efficient": "EFFICIENT_ATTENTION"}


@contextlib.contextmanager
def attention_backend(option: str) -> Iterator[None]:
    if option not in BACKENDS:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([getattr(SDPBackend, BACKENDS[option])]):
        yield


@contextlib.contextmanager
def gelu_apart(option: str) -> Iterator[None]:
    """For `*_gelu_apart`: no layer lends its weights to the GELU epilogue (causal.kernels.direct_weights)."""
    if not option.endswith("_gelu_apart"):
        yield
        return
    lend = causal.kernels.direct_weights
    causal.kernels.direct_weights = lambda layer, x: None
    try:
        yield
    finally:
        causal.kernels.direct_weights = lend


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(SCHEDULE), default="1.3B")
    p.add_argument("--policies", default="fragments,rolling,sink,recompute")
    p.add_argument("--options", default="exact,graphs,fused,fused_graphs,exact_flash")
    p.add_argument("--blocks", type=int, default=14, help="blocks of the timed video (past the 21-frame window)")
    p.add_argument("--schedule", default=None, help="a causal.SCHEDULES name (default: the model's)")
    p.add_argument("--device", default=None)
    p.add_argument("--tiny", action="store_true", help="the tiny model at 64x48 (smoke test)")
    p.add_argument("--deadline-s", type=float, default=540.0, help="skip what would start after this (wall)")
    p.add_argument("--profile", action="store_true",
                   help="also profile forwards of one steady sink block (12 cached frames), exact and fused")
    p.add_argument("--profile-blocks", action="store_true",
                   help="after each timed video, two more on CUDA: CUDA events around every graph replay, then "
                        "torch.profiler: per steady block the time inside replays, in other kernels, and idle")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.policies = [x for x in args.policies.split(",") if x]
    args.options = sorted((x for x in args.options.split(",") if x),
                          key=lambda x: (x != "exact", x.startswith("fp8w_")))  # exact first: the others' error is
    # measured against it; fp8 weights last: they replace the model's linears
    for name in args.policies:
        if name not in POLICIES:
            p.error(f"unknown policy {name}; choose from {', '.join(POLICIES)}")
    for name in args.options:
        if name not in OPTIONS:
            p.error(f"unknown option {name}; choose from {', '.join(OPTIONS)}")
    args.schedule = args.schedule or SCHEDULE[args.model]
    return args


def video(model, context, args, policy, option: str, graphs, blocks: int | None = None,
          schedule_name: str | None = None, marks: BlockMarks | None = None) -> tuple[list[float], float, torch.Tensor]:
    """(seconds per block, seconds to the first block's last step, latents on the CPU); `marks` is marked at every
    block's last step."""
    device = context.device
    clock = Clock(device)
    schedule = causal.SCHEDULES[schedule_name or args.schedule]
    frames = schedule.frames_per_block * (blocks or args.blocks)
    ends: list[Any] = []

    def progress(p: causal.Progress) -> None:
        if p.step == p.steps - 1:
            ends.append(clock.mark())
            if marks is not None:
                marks.mark()

    sync(device)
    start = clock.mark()
    with attention_backend(option), gelu_apart(option):
        latents = causal.generate(model, context,
                                  causal.Video(args.height, args.width, total_frames=frames),
                                  schedule, policy, noise=causal.Noise(seed=0),
                                  compute=causal.Compute(fused_kernels="fused" in option, graphs=graphs,
                                                         kv_cache_fp8=option.endswith("_fp8kv"),
                                                         flash_attention=option.endswith("_fa4")),
                                  output=causal.Output(device="cpu", progress=progress)).latents
    sync(device)
    seconds = [clock.seconds(start, m) for m in ends]
    return [b - a for a, b in zip(seconds, seconds[1:])], seconds[0], latents.float()


def profile_blocks(model, context, args, policy, option: str, graphs, steady_from: int,
                   schedule_name: str | None) -> dict[str, Any]:
    """Where a steady block's GPU time goes: the replays' share from CUDA events (no profiler overhead), then the
    kernels outside replays and the idle time from a profiled video."""
    from torch.profiler import ProfilerActivity, profile

    marks = BlockMarks(context.device, graphs)
    try:
        video(model, context, args, policy, option, graphs, schedule_name=schedule_name, marks=marks)
        split = marks.split(steady_from + 1)
    finally:
        marks.restore()
    marks = BlockMarks(context.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        video(model, context, args, policy, option, graphs, schedule_name=schedule_name, marks=marks)
    result = {"events": {k: sorted(r[k] for r in split)[len(split) // 2] for k in ("block_s", "replay_s", "replays")}
              if split else {}, "profiled": block_breakdown(kineto_kernels(prof), steady_from + 1)}
    e, b = result["events"], result["profiled"]
    if e:
        print(f"    block {e['block_s'] * 1000:.1f} ms: {e['replays']} replays {e['replay_s'] * 1000:.1f} ms (events)")
    if b.get("blocks"):
        print(f"    profiled: block {b['block_ms']:.1f} ms, busy {b['busy_ms']:.1f}, replays {b['replay_ms']:.1f}, "
              f"other kernels {b['other_kernels_ms']:.1f}, idle {b['idle_ms']:.1f}")
        for kind in ("replay_kernels", "other_kernels"):
            print(f"    {kind}:")
            for k in b[kind][:16 if kind == "replay_kernels" else 4]:
                print(f"      {k['ms_per_block']:7.2f} ms x{k['calls_per_block']:.0f} {k['kernel']}")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    args.height, args.width = ((64, 64) if args.model == "5B" else (48, 64)) if args.tiny else SIZE[args.model]
    config = causal.PRESETS[args.model]
    if args.tiny:  # the tiny model, in the 5B's 48-channel layout for the 5B's schedule
        config = dataclasses.replace(TINY, in_dim=config.in_dim, out_dim=config.out_dim)
    block = causal.SCHEDULES[args.schedule].frames_per_block
    t_start = time.perf_counter()
    model = causal.CausalWanModel.from_state_dict(random_state_dict(config, dtype=torch.bfloat16, seed=0,
                                                                    device=device), config,
                                                  dtype=torch.bfloat16, device=device)
    context = prompt_embedding(config, 20, 1234).to(device=device, dtype=torch.bfloat16)
    report: dict[str, Any] = {"environment": environment(device),
                              "settings": {"model": "tiny" if args.tiny else args.model, "schedule": args.schedule,
                                           "size": f"{args.width}x{args.height}", "blocks": args.blocks},
                              "rows": []}
    by_option: dict[tuple[str, str], torch.Tensor] = {}  # the latents of write-time policies, for *_at_read
    for name in args.policies:
        policy = POLICIES[name]()
        exact = None
        full_after = max(policy.window // block - 1, 1) if policy.evicts else 1  # blocks until the cache is full
        for option in args.options:
            if time.perf_counter() - t_start > args.deadline_s:
                print(f"deadline: skipping {name} {option}", flush=True)
                continue
            if "fused" in option and causal.kernels.fused_unavailable(device):
                print(f"skipping {option}: {causal.kernels.fused_unavailable(device)}", flush=True)
                continue
            if option.endswith("_fa4") and (why := causal.attention.flash4_unavailable(device)):
                print(f"skipping {option}: {why}", flush=True)
                continue
            if option in BACKENDS and not cuda:
                print(f"skipping {option}: SDPA backends are a CUDA choice", flush=True)
                continue
            graphs = None
            if "graphs" in option:
                if name in OWN_SCHEDULE:
                    print(f"skipping {name} {option}: its sampler runs without CUDA graphs", flush=True)
                    continue
                if not cuda:
                    print(f"skipping {option}: CUDA graphs need a CUDA device", flush=True)
                    continue
                graphs = causal.CudaGraphs(model, batch=1, height=args.height, width=args.width,
                                           num_frames=policy.cache_frames(block), device=device,
                                           kv_cache_fp8=option.endswith("_fp8kv"))
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            if option.startswith("fp8w_") and not any(isinstance(m, causal.fp8.Fp8Linear) for m in model.modules()):
                if not cuda:
                    print(f"skipping {option}: fp8 matrix products need a CUDA device", flush=True)
                    continue
                causal.fp8.quantize_blocks_fp8(model)
                free_memory()
            warmup = min(args.blocks, policy.cache_frames(block) // block + 2)  # every slot once, compiled, captured
            own = OWN_SCHEDULE.get(name)
            _, cold_first, _ = video(model, context, args, policy, option, graphs, warmup, own)
            warmup_s = time.perf_counter() - t0
            blocks, first, latents = video(model, context, args, policy, option, graphs, schedule_name=own)
            steady = sorted(blocks[full_after:] or blocks)
            row = {"policy": name, "describe": policy.describe(), "option": option,
                   "steady_s": steady[len(steady) // 2], "first_block_s": first, "cold_first_block_s": cold_first,
                   "warmup_video_s": warmup_s, "block_s": blocks,
                   "peak_gib": torch.cuda.max_memory_allocated(device) / GiB if cuda else None,
                   "captures": graphs.captures if graphs else None}
            if option == "exact":
                exact = latents
            row["rel_l2_vs_exact"] = rel_l2(latents, exact) if exact is not None else None
            row["bitwise"] = bool(exact is not None and torch.equal(latents, exact))
            if name in WRITE_TIME.values():
                by_option[name, option] = latents
            if (written := by_option.get((WRITE_TIME.get(name, ""), option))) is not None:
                row["bitwise_vs_" + WRITE_TIME[name]] = bool(torch.equal(latents, written))
            report["rows"].append(row)
            print(f"{name:9} {option:15} steady {row['steady_s']:.3f} s/block  first {first:.3f} s (cold "
                  f"{cold_first:.2f} s)  peak {row['peak_gib'] or 0:.2f} GiB  rel-L2 {row['rel_l2_vs_exact']}"
                  f"{'  bitwise' if row['bitwise'] else ''}", flush=True)
            if args.profile_blocks and cuda:
                row["block_profile"] = profile_blocks(model, context, args, policy, option, graphs, full_after, own)
            if graphs is not None:
                graphs.release()
            del graphs
            free_memory()
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.profile:  # where the steady block's time goes (the forwards run eagerly here: kernels, not launches)
        setup = Setup(device=device, height=args.height, width=args.width, num_frames=12, text_tokens=20, seed=0,
                      tiny=args.tiny, ckpt_dirs=[], checkpoint=False)
        report["profile"] = [profile_forwards(model, context, setup, 3, option, print, where="last",
                                              fused=option == "fused") for option in ("exact", "fused")]
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
