#!/usr/bin/env python3
"""Endless-video benchmark: time and memory per block of a long rolling / sink video.

Builds a real-size random-weight Wan2.1 DiT on the GPU (random_state_dict ->
CausalWanModel.from_state_dict, bf16, no checkpoint file) and samples `--blocks` blocks of 3 latent
frames with `causal.generate(model, context, Video(H, W, total_frames=3 * blocks), schedule,
rolling(21) | sink(3, 12), output=Output(device="cpu"))`, DiT only: a seeded umT5-like prompt embedding
[1, 512, text_dim] (20 random rows, zeros after) stands in for the text encoder. Finished blocks go to the
CPU, so a flat curve means the cache policy keeps device memory and time per block constant however long the
video runs.

Per block, measured in the progress callback at the block's LAST denoising step (after a
torch.cuda.synchronize()):
  * seconds: wall time (perf_counter) since the previous block's last step. The clean pass of a block
    runs after its last step's callback, so block b's time holds block b-1's clean pass and block b's
    denoising steps: in steady state exactly one block's work. Block 1 counts from the call of
    `generate` (text K/V, cache allocation and first-use warm-up included).
  * peak GiB: torch.cuda.max_memory_allocated() over that interval (reset after each block).
  * allocated GiB: torch.cuda.memory_allocated() at that point.

    python bench/endless.py --model 1.3B --policy rolling --blocks 350 --report 7,50,350
    python bench/endless.py --model 14B --policy sink --blocks 100 --report 7,100 --json out.json
    python bench/endless.py --device cpu --tiny --blocks 12 --report 7,12   # CPU smoke test

Prints one line per reported block and a summary (mean seconds of the last 10 blocks, the largest
peak, device, torch version, date). `--tiny` uses a 2-layer model at 48x32 pixels; memory fields are
None off CUDA.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as `python3 bench/endless.py`: `bench` is the package in the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import causal  # noqa: E402
from bench.environment import GiB, device_name, pick_device  # noqa: E402
from bench.models import prompt_embedding  # noqa: E402
from causal import cache_policy  # noqa: E402
from causal.config import WanConfig  # noqa: E402
from causal.synthetic import random_state_dict  # noqa: E402
from tools.tiny import TINY  # noqa: E402

DEFAULT_SCHEDULE = {"1.3B": "Self-Forcing / LongLive 1.3B", "14B": "CausVid-Plus 14B"}
POLICIES = {"rolling": lambda: cache_policy.rolling(21), "sink": lambda: cache_policy.sink(3, 12)}
TEXT_TOKENS = 20
MEAN_OF_LAST = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(DEFAULT_SCHEDULE), default="1.3B")
    p.add_argument("--policy", choices=sorted(POLICIES), default="rolling")
    p.add_argument("--blocks", type=int, default=350, help="blocks of 3 latent frames to generate")
    p.add_argument("--report", default=None, help="comma list of 1-based blocks to print (default: 7 and the last)")
    p.add_argument("--height", type=int, default=None, help="pixels (default 480; 32 with --tiny)")
    p.add_argument("--width", type=int, default=None, help="pixels (default 832; 48 with --tiny)")
    p.add_argument("--schedule", default=None, help="a causal.SCHEDULES name (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="weights, prompt and noise seed")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--tiny", action="store_true", help="a tiny 2-layer model at 48x32 (CPU smoke test)")
    p.add_argument("--json", default=None, help="write settings and every block's numbers here")
    args = p.parse_args(argv)
    args.height = args.height or (32 if args.tiny else 480)
    args.width = args.width or (48 if args.tiny else 832)
    args.schedule = args.schedule or DEFAULT_SCHEDULE[args.model]
    if args.schedule not in causal.SCHEDULES:
        p.error(f"unknown schedule '{args.schedule}'; choose one of {', '.join(causal.SCHEDULES)}")
    if args.blocks < 1:
        p.error("--blocks must be at least 1")
    report = args.report or ",".join(str(b) for b in sorted({min(7, args.blocks), args.blocks}))
    args.report = sorted({int(b) for b in report.split(",") if b.strip()})
    if any(not 1 <= b <= args.blocks for b in args.report):
        p.error(f"--report blocks must lie in 1..{args.blocks}")
    return args


def make_context(config: WanConfig, seed: int, device: torch.device) -> torch.Tensor:
    """A umT5-like prompt embedding [1, text_len, text_dim]: TEXT_TOKENS random rows, then zero rows."""
    return prompt_embedding(config, TEXT_TOKENS, seed + 1234).to(device=device, dtype=torch.bfloat16)


def gib(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} GiB"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    config = TINY if args.tiny else causal.PRESETS[args.model]
    schedule = causal.SCHEDULES[args.schedule]
    policy = POLICIES[args.policy]()

    state = random_state_dict(config, dtype=torch.bfloat16, seed=args.seed, device=device)
    model = causal.CausalWanModel.from_state_dict(state, config, dtype=torch.bfloat16, device=device)
    del state
    context = make_context(config, args.seed, device)

    marks: list[float] = []  # perf_counter at the start, then at every block's last step
    seconds: list[float] = []
    peaks: list[float | None] = []
    allocated: list[float | None] = []
    last_step = schedule.num_steps - 1
    report = set(args.report)

    def on_step(p: causal.Progress) -> None:
        if p.step != last_step:
            return
        if cuda:
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        seconds.append(now - marks[-1])
        marks.append(now)
        if cuda:
            peaks.append(torch.cuda.max_memory_allocated(device) / GiB)
            torch.cuda.reset_peak_memory_stats(device)
            allocated.append(torch.cuda.memory_allocated(device) / GiB)
        else:
            peaks.append(None)
            allocated.append(None)
        n = len(seconds)
        if n in report:
            print(f"block {n}: {seconds[-1]:.3f} s, peak {gib(peaks[-1])}, allocated {gib(allocated[-1])}",
                  flush=True)

    print(f"{config.name if not args.tiny else 'tiny'} | {args.schedule} | {policy.describe()} | "
          f"{args.blocks} blocks at {args.width}x{args.height} on {device}", flush=True)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    marks.append(time.perf_counter())
    causal.generate(model, context, causal.Video(args.height, args.width, total_frames=3 * args.blocks), schedule,
                    policy, noise=causal.Noise(seed=args.seed), output=causal.Output(device="cpu", progress=on_step))

    tail = seconds[-MEAN_OF_LAST:]
    mean_tail = sum(tail) / len(tail)
    known_peaks = [p for p in peaks if p is not None]
    max_peak = max(known_peaks) if known_peaks else None
    env = {"device": device_name(device), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"summary: mean of last {len(tail)} blocks {mean_tail:.3f} s/block, max peak {gib(max_peak)} | "
          f"{env['device']} | torch {env['torch']} | {env['date']}", flush=True)

    results: dict[str, Any] = {
        "settings": {"model": "tiny" if args.tiny else args.model, "policy": args.policy,
                     "policy_description": policy.describe(), "schedule": args.schedule, "blocks": args.blocks,
                     "height": args.height, "width": args.width, "seed": args.seed, "report": args.report,
                     "frames_per_block": 3, "text_tokens": TEXT_TOKENS},
        "environment": env,
        "blocks": {"seconds": seconds, "peak_gib": peaks, "allocated_gib": allocated},
        "summary": {"mean_last_s": mean_tail, "mean_last_n": len(tail), "max_peak_gib": max_peak,
                    "finite": all(math.isfinite(s) for s in seconds)},
    }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
