#!/usr/bin/env python3
"""Sequence parallel on the GPUs of one host: speed-up per GPU count and first-block latency, in one run.

For each world size N of `--world-sizes` the script starts N processes (`causal.parallel.run_local`: NCCL on GPUs
0..N-1, gloo on the CPU), each building the same random-weight DiT (seed 0; where a fingerprint of the weights
differs across the ranks, rank 0's are broadcast). For each clip and option every rank samples a warm-up video of
2 blocks and then the timed video of `--blocks` blocks, all ranks in step (`Compute(parallel=...)`); rank 0 reports
the seconds to the first block's last step (first-block latency), the seconds per block (median once the cache is
full), the whole video, its peak memory and its latents, which are compared with world size 1's (rel-L2). Unless
`--no-single`, the world-size-1 launch also samples each clip without a process group (`parallel=None`, the exact
single-process path): the cost of the distributed path at world size 1, and the error it makes.

Clips (832x480, DiT only, a umT5-like prompt embedding, batch 1, bf16):

* `14B-rolling`: CausVid-Plus 14B, 9 steps + clean pass, its rolling 21-frame window (40 heads: N = 1, 2, 4, 8);
* `1.3B-sink`: LongLive 1.3B, 4 steps + clean pass, sink 3 + window 12 (12 heads: N = 1, 2, 4; 8 is skipped).

Options: `exact` (default), `fused` (the compiled glue), `fa4` / `fused_fa4` (FlashAttention-4 self-attention),
`graphs` / `fused_graphs` / `fused_graphs_fa4` (each rank's forwards as CUDA graphs, its NCCL exchanges captured;
kept from the warm-up video for the timed one).
Compare like with like: one GPU's fastest path is `fused_graphs` (bench/policies.py), here too.

Commands (each one run; --deadline-s stops starting clips past it):

    python3 bench/parallel.py --world-sizes 1 --json $OUT/parallel_1gpu.json              # 1 GPU: world size 1
    python3 bench/parallel.py --world-sizes 1,2 --json $OUT/parallel_2gpu.json            # a host with 2 GPUs
    python3 bench/parallel.py --world-sizes 1,2,4 --json $OUT/parallel_4gpu.json          # a host with 4 GPUs
    python3 bench/parallel.py --world-sizes 1,2,4,8 --clips 14B-rolling --json $OUT/parallel_8gpu.json
    python3 bench/parallel.py --world-sizes 1,2,4 --options exact,fused_graphs --json $OUT/parallel_4gpu_fast.json
    python3 bench/parallel.py --tiny --device cpu --world-sizes 1,2                        # CPU smoke test (gloo)

Speed-up of N GPUs = the world-size-1 launch's seconds over N's (steady block, first block, whole video);
efficiency = speed-up / N.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as `python3 bench/parallel.py`: `bench` is the package in the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import causal  # noqa: E402
from bench.environment import GiB, environment, pick_device, sync  # noqa: E402
from bench.models import prompt_embedding  # noqa: E402
from bench.timing import Clock, rel_l2  # noqa: E402
from causal import cache_policy  # noqa: E402
from causal.parallel import SequenceParallel, run_local  # noqa: E402
from causal.synthetic import random_state_dict  # noqa: E402
from tools.tiny import TINY  # noqa: E402


@dataclass(frozen=True)
class Clip:
    model: str
    schedule: str
    policy: str


CLIPS = {
    "14B-rolling": Clip("14B", "CausVid-Plus 14B", "rolling"),
    "1.3B-sink": Clip("1.3B", "LongLive 1.3B", "sink"),
}
POLICIES = {"rolling": lambda: cache_policy.rolling(21), "sink": lambda: cache_policy.sink(3, 12)}
OPTIONS = ("exact", "fused", "fa4", "fused_fa4", "graphs", "fused_graphs", "fused_graphs_fa4")
_GRAPHS: dict[tuple, Any] = {}
"""CUDA graphs kept from a clip's warm-up video for its timed one (the graphs options), per clip and option."""
SIZE, TINY_SIZE = (480, 832), (48, 64)
"""(height, width): 1560 tokens per latent frame (divisible by 2, 4, 8); the tiny model's 12."""
WARMUP_BLOCKS = 2
FINGERPRINT_TENSORS = 8


@dataclass(frozen=True)
class Settings:
    clips: tuple[str, ...]
    options: tuple[str, ...]
    blocks: int
    tiny: bool
    device_type: str
    single: bool
    deadline: float
    """time.time() past which no clip starts (the same clock on every rank of one host)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world-sizes", default="1,2,4", help="GPU counts, one launch each (1 first: the baseline)")
    p.add_argument("--clips", default=",".join(CLIPS))
    p.add_argument("--options", default="exact")
    p.add_argument("--blocks", type=int, default=9, help="blocks of the timed video (7 fill the 21-frame window)")
    p.add_argument("--device", default=None, help="cuda (default where there is one) or cpu")
    p.add_argument("--tiny", action="store_true", help="the tiny model at 64x48 (smoke test)")
    p.add_argument("--no-single", dest="single", action="store_false",
                   help="skip the single-process run (parallel=None) beside world size 1")
    p.add_argument("--timeout-s", type=float, default=600.0, help="a collective waiting longer fails the launch")
    p.add_argument("--deadline-s", type=float, default=540.0, help="start no clip after this (wall, from the start)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.world_sizes = sorted({int(x) for x in args.world_sizes.split(",") if x})
    args.clips = _names(p, args.clips, tuple(CLIPS), "clip")
    args.options = _names(p, args.options, OPTIONS, "option")
    if not args.world_sizes or args.world_sizes[0] < 1:
        p.error("world sizes are positive GPU counts")
    return args


def _names(parser: argparse.ArgumentParser, given: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [x for x in given.split(",") if x]
    if unknown := [x for x in names if x not in known]:
        parser.error(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


# -- one rank ------------------------------------------------------------------------------------------------


def _model(clip: Clip, tiny: bool, device: torch.device) -> causal.CausalWanModel:
    config = TINY if tiny else causal.PRESETS[clip.model]
    state = random_state_dict(config, dtype=torch.bfloat16, seed=0, device=device)
    return causal.CausalWanModel.from_state_dict(state, config, dtype=torch.bfloat16, device=device)


def _same_weights(model: causal.CausalWanModel, parallel: SequenceParallel, device: torch.device) -> bool:
    """Make every rank's weights rank 0's: each drew them with the same generator on the same kind of device, which
    a few tensors' sums confirm; where they differ, rank 0's are broadcast. Returns whether they had to be."""
    tensors = list(model.parameters())[:FINGERPRINT_TENSORS]
    mine = torch.stack([t.double().sum() for t in tensors]).to(device).unsqueeze(0)
    every = parallel.all_gather(mine, 0, "the weights' fingerprint")
    if torch.equal(every, every[:1].expand_as(every)):
        return False
    for t in model.parameters():
        t.copy_(parallel.broadcast(t))
    return True


def _video(model: Any, context: torch.Tensor, clip: Clip, option: str, blocks: int, tiny: bool,
           parallel: SequenceParallel | None) -> dict[str, Any]:
    """One video: seconds per block (between blocks' last steps), to the first block's last step and in all."""
    device = context.device
    clock = Clock(device)
    schedule = causal.SCHEDULES[clip.schedule]
    ends: list[Any] = []

    def progress(p: causal.Progress) -> None:
        if p.step == p.steps - 1:
            ends.append(clock.mark())

    height, width = TINY_SIZE if tiny else SIZE
    if parallel is not None:
        parallel.all_gather(torch.zeros(1, device=device), 0, "the barrier before a video")  # start in step
    policy = POLICIES[clip.policy]()
    graphs = None
    key = (clip, option, parallel is None)
    if key not in _GRAPHS:
        for kept in _GRAPHS.values():  # one clip's graphs (and their KV cache) at a time, none for other options
            kept.release()
        _GRAPHS.clear()
    sync(device)
    if device.type == "cuda":  # the peak counts a graphs option's KV cache, as the others' made in the run
        torch.cuda.reset_peak_memory_stats(device)
    if "graphs" in option:
        if key not in _GRAPHS:
            _GRAPHS[key] = causal.CudaGraphs(model, batch=context.shape[0], height=height, width=width,
                                             num_frames=policy.cache_frames(3), device=device, parallel=parallel)
        graphs = _GRAPHS[key]
    start = clock.mark()
    latents = causal.generate(model, context, causal.Video(height, width, total_frames=blocks * 3), schedule,
                              policy, noise=causal.Noise(seed=0),
                              compute=causal.Compute(fused_kernels="fused" in option, graphs=graphs,
                                                     flash_attention="fa4" in option, parallel=parallel),
                              output=causal.Output(device="cpu", progress=progress)).latents
    end = clock.mark()
    sync(device)
    marks = [clock.seconds(start, m) for m in ends]
    return {"first_block_s": marks[0], "block_s": [b - a for a, b in zip(marks, marks[1:])],
            "video_s": clock.seconds(start, end), "latents": latents.float(),
            "peak_gib": torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None}


def _unavailable(option: str, device: torch.device) -> str | None:
    if "fused" in option and (why := causal.kernels.fused_unavailable(device)):
        return why
    if "fa4" in option and (why := causal.attention.flash4_unavailable(device)):
        return why
    if "graphs" in option and device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    return None


def _past_deadline(settings: Settings, parallel: SequenceParallel, device: torch.device) -> bool:
    """Rank 0's clock decides for every rank (ranks that disagreed would wait for each other for ever)."""
    late = torch.tensor([float(time.time() > settings.deadline)], device=device)
    return bool(parallel.broadcast(late).item())


def rank_main(parallel: SequenceParallel, settings: Settings) -> dict[str, Any] | None:
    """What one rank of a launch does; rank 0 returns the rows (the latents on the CPU), the others None."""
    device = pick_device(settings.device_type if settings.device_type == "cpu" else f"cuda:{parallel.rank}")
    lead = parallel.rank == 0
    # plain types only (torch.__version__ is a TorchVersion): run_local loads results with weights_only=True
    plain = json.loads(json.dumps(environment(device), default=str)) if lead else None
    report: dict[str, Any] = {"environment": plain, "rows": [], "notes": []}
    for name in settings.clips:
        clip = CLIPS[name]
        config = TINY if settings.tiny else causal.PRESETS[clip.model]
        if config.num_heads % parallel.world:
            report["notes"].append(f"{name}: {config.num_heads} heads do not split over {parallel.world} GPUs")
            continue
        model = _model(clip, settings.tiny, device)
        if _same_weights(model, parallel, device):
            report["notes"].append(f"{name}: the ranks drew different weights; rank 0's were broadcast")
        context = prompt_embedding(config, 20, 1234).to(device=device, dtype=torch.bfloat16)
        paths = [("parallel", parallel)] + ([("single", None)] if settings.single and parallel.world == 1 else [])
        for option in settings.options:
            if (why := _unavailable(option, device)) is not None:
                report["notes"].append(f"{name} {option}: skipped, {why}")
                continue
            for path, p in paths:
                if _past_deadline(settings, parallel, device):
                    report["notes"].append(f"{name} {option} {path}: skipped, past the deadline")
                    continue
                t0 = time.perf_counter()
                _video(model, context, clip, option, WARMUP_BLOCKS, settings.tiny, p)
                warmup_s = time.perf_counter() - t0
                timed = _video(model, context, clip, option, settings.blocks, settings.tiny, p)
                policy = POLICIES[clip.policy]()
                full_after = max(policy.window // 3 - 1, 1)  # blocks until the window is full
                steady = timed["block_s"][full_after:] or timed["block_s"] or [timed["video_s"]]
                row = {"clip": name, "model": "tiny" if settings.tiny else clip.model, "schedule": clip.schedule,
                       "policy": policy.describe(), "option": option, "path": path, "world": parallel.world,
                       "steady_s": statistics.median(steady), "warmup_video_s": warmup_s, **timed}
                if lead:
                    print(f"[N={parallel.world}] {name:12} {option:9} {path:8} steady {row['steady_s']:.3f} s/block  "
                          f"first {row['first_block_s']:.3f} s  video {row['video_s']:.2f} s  peak "
                          f"{row['peak_gib'] or 0:.1f} GiB", flush=True)
                report["rows"].append(row)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return report if lead else None


# -- the launches ------------------------------------------------------------------------------------------


def _compare(rows: list[dict[str, Any]]) -> None:
    """Speed-ups and errors against world size 1's parallel row (and its single-process row) of each clip."""
    base = {(r["clip"], r["option"]): r for r in rows if r["world"] == 1 and r["path"] == "parallel"}
    single = {(r["clip"], r["option"]): r for r in rows if r["world"] == 1 and r["path"] == "single"}
    for r in rows:
        key = (r["clip"], r["option"])
        if (b := base.get(key)) is not None:
            for what in ("steady_s", "first_block_s", "video_s"):
                r["speedup_" + what.removesuffix("_s")] = b[what] / r[what]
            r["efficiency"] = r["speedup_steady"] / r["world"]
            r["rel_l2_vs_world1"] = rel_l2(r["latents"], b["latents"])
        if (s := single.get(key)) is not None:
            r["rel_l2_vs_single"] = rel_l2(r["latents"], s["latents"])
            r["bitwise_vs_single"] = bool(torch.equal(r["latents"], s["latents"]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device_type = "cuda" if (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda") \
        else "cpu"
    if device_type == "cuda" and args.world_sizes[-1] > torch.cuda.device_count():
        raise SystemExit(f"{args.world_sizes[-1]} GPUs asked for, {torch.cuda.device_count()} present")
    settings = Settings(tuple(args.clips), tuple(args.options), args.blocks, args.tiny, device_type, args.single,
                        time.time() + args.deadline_s)
    report: dict[str, Any] = {"settings": {**asdict(settings), "world_sizes": args.world_sizes,
                                           "size": "x".join(map(str, (TINY_SIZE if args.tiny else SIZE)[::-1]))},
                              "launches": [], "rows": [], "notes": []}
    for world in args.world_sizes:
        t0 = time.perf_counter()
        lead = run_local(rank_main, world, settings, device_type=device_type, timeout_s=args.timeout_s,
                         threads=1 if device_type == "cpu" else None)[0]  # on the CPU a core per rank, any N
        report["launches"].append({"world": world, "seconds": time.perf_counter() - t0,
                                   "environment": lead["environment"]})
        report["rows"] += lead["rows"]
        report["notes"] += [f"N={world}: {note}" for note in lead["notes"]]
        _compare(report["rows"])
        _write(report, args.json)
    for r in report["rows"]:
        if "speedup_steady" in r:
            print(f"{r['clip']:12} {r['option']:9} {r['path']:8} N={r['world']}: speed-up {r['speedup_steady']:.2f}x "
                  f"steady, {r['speedup_first_block']:.2f}x first block (efficiency {r['efficiency']:.2f}), rel-L2 vs "
                  f"N=1 {r['rel_l2_vs_world1']:.2e}")
    for note in report["notes"]:
        print(note)
    return report


def _write(report: dict[str, Any], path: str | None) -> None:
    if path:
        rows = [{k: v for k, v in r.items() if k != "latents"} for r in report["rows"]]
        Path(path).write_text(json.dumps({**report, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
