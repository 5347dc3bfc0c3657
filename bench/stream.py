#!/usr/bin/env python3
"""Streaming benchmark: sample a long video and write it to an mp4 block by block, as CausVid Stream to Video
does, with ComfyUI's own Wan 2.1 VAE (full size, random weights) and the pack's streaming classes
(`nodes/streaming.py`: StreamingDecoder, Mp4Writer, BlockStream on a worker thread with its own CUDA stream).

Reports: time to the first written frame (from the start of sampling), frames written per second over
each reported minute, peak device memory (torch.cuda.max_memory_allocated) and host memory (RSS now, peak RSS)
at each reported minute of video. DiT: real-size random weights, a seeded umT5-like prompt. It stops at
`--deadline-s` (wall) and says how far it got; `--json` is rewritten at every mark.

    python3 bench/stream.py --comfyui .devcarry/ComfyUI --minutes 10 --marks 1,10 --json $OUT/stream.json
    python3 bench/stream.py --comfyui .devcarry/ComfyUI --model 14B --policy recompute \
        --schedule "Krea Realtime 14B" --seconds 30 --marks 0.25,0.5   # Krea: also decodes and re-encodes per block

Per block it also records the wall time between two finished blocks (`block_s`; with `recompute` it holds the
block's decode and the single-frame encode that policy runs on the sampling thread: the decoded frames go
straight to the writer, as in the node).
    python3 bench/stream.py --comfyui .comfyui/ComfyUI --tiny --seconds 3 --device cpu   # smoke test
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if not __package__:  # run as `python3 bench/stream.py`: `bench` is the package in the repository root
    sys.path.insert(0, str(REPO))
GIB = 1024 ** 3


def _rss_gib() -> tuple[float, float]:
    """(resident now, peak resident) of this process in GiB."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    import os

    now = resident_pages * os.sysconf("SC_PAGE_SIZE") / GIB
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def _load_streaming():
    """The pack's streaming module, the pack imported as ComfyUI imports it (a package: its modules import
    `..causal`)."""
    from tools.comfy_inprocess import import_folder

    import_folder("comfyui_causvid", REPO)
    return importlib.import_module("comfyui_causvid.nodes.streaming")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", required=True, help="a ComfyUI tree (its comfy/ package is imported)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=0.0, help="video length in seconds (overrides --minutes)")
    parser.add_argument("--marks", default="1,10", help="minutes of video at which to report")
    parser.add_argument("--model", choices=("1.3B", "14B"), default="1.3B")
    parser.add_argument("--policy", choices=("sink", "rolling", "recompute"), default="sink")
    parser.add_argument("--schedule", default="Self-Forcing / LongLive 1.3B")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny DiT and VAE at 64x48 (CPU smoke test)")
    parser.add_argument("--deadline-s", type=float, default=560.0)
    parser.add_argument("--out", default=None, help="folder for the mp4 (default: a temporary one)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(args.comfyui).resolve()))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = args.device == "cpu"
    import torch
    import comfy.latent_formats
    import comfy.sd
    from comfy.ldm.wan.vae import WanVAE

    import causal
    from causal.cache_policy import recompute, rolling, sink
    from causal.synthetic import random_state_dict

    from bench.models import prompt_embedding
    from tools.tiny import TINY

    streaming = _load_streaming()
    device = torch.device(args.device)
    if args.tiny:
        args.height, args.width = 48, 64
    config = TINY if args.tiny else causal.PRESETS[args.model]
    model = causal.CausalWanModel.from_state_dict(random_state_dict(config, dtype=torch.bfloat16, seed=0, device=device),
                                                  config, dtype=torch.bfloat16, device=device)
    wan = WanVAE(dim=8 if args.tiny else 96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True])
    # N(0, 0.02^2) weights, as tools/standins.py: the module's own initialisation decodes to NaN, which the
    # recompute policy would feed back into the DiT
    g = torch.Generator().manual_seed(0)
    vae = comfy.sd.VAE(sd={k: torch.randn(v.shape, generator=g) * 0.02 for k, v in wan.state_dict().items()})
    latent_format = comfy.latent_formats.Wan21()
    context = prompt_embedding(config, 20, 1).to(device)

    seconds = args.seconds or args.minutes * 60
    total = causal.prompts.frames_for_seconds(seconds)
    marks = sorted(float(m) for m in args.marks.split(",")) if not args.tiny else [seconds / 60]
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="causvid_stream_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "stream.mp4"
    decoder = streaming.StreamingDecoder(vae)
    h, w = args.height // 8, args.width // 8
    decoder.load((1, 16, 1, h, w))
    policy = {"sink": sink(3, 12), "rolling": rolling(21), "recompute": recompute(3)}[args.policy]
    recompute_policy = args.policy == "recompute"
    schedule = causal.SCHEDULES[args.schedule]
    cuda = device.type == "cuda"
    report: dict = {"settings": {"model": "tiny" if args.tiny else args.model, "frames": total, "seconds": seconds, "policy": policy.describe(),
                                 "schedule": schedule.name, "size": f"{args.width}x{args.height}",
                                 "vae_dtype": str(vae.vae_dtype), "device": torch.cuda.get_device_name(device)
                                 if cuda else "cpu", "torch": torch.__version__,
                                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
                    "marks": []}
    state = {"first": None, "last_mark_t": None, "last_mark_frames": 0, "next": 0}
    t0 = time.perf_counter()

    def write_json() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))

    def on_frames(written: int, frame) -> None:
        now = time.perf_counter() - t0
        if state["first"] is None:
            state["first"] = now
            report["first_frame_s"] = now
            state["last_mark_t"], state["last_mark_frames"] = now, written
            print(f"first frame written after {now:.2f} s", flush=True)
        while state["next"] < len(marks) and written >= marks[state["next"]] * 60 * 16:
            minute = marks[state["next"]]
            fps = (written - state["last_mark_frames"]) / max(now - state["last_mark_t"], 1e-9)
            rss, peak_rss = _rss_gib()
            mark = {"minute": minute, "frames": written, "wall_s": now, "fps_since_last_mark": fps,
                    "host_rss_gib": rss, "host_peak_rss_gib": peak_rss,
                    "device_peak_gib": torch.cuda.max_memory_allocated(device) / GIB if cuda else None,
                    "device_allocated_gib": torch.cuda.memory_allocated(device) / GIB if cuda else None}
            report["marks"].append(mark)
            print(json.dumps(mark), flush=True)
            state["last_mark_t"], state["last_mark_frames"] = now, written
            state["next"] += 1
            write_json()

    writer = streaming.Mp4Writer(path, args.width, args.height)
    stream = streaming.BlockStream(decoder, writer, on_frames=on_frames)
    reencoder = None
    if recompute_policy:  # Krea: each block decoded on the sampling thread, its frames written as they are
        # (what CausVid Stream to Video does for this policy), one-frame encodes for the context
        def decode_and_write(block):
            frames = decoder.decode(latent_format.process_out(block.float()))
            stream.put_frames(frames)
            return frames

        reencoder = causal.ReencodedFrames(
            decode_and_write, lambda frame: latent_format.process_in(vae.encode(frame).float()).to(device),
            policy.window)

    class Deadline(Exception):
        pass

    block_s: list[float] = []
    last_block = [t0]

    def on_block(block) -> None:
        if cuda:
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        block_s.append(now - last_block[0])
        last_block[0] = now
        if not recompute_policy:
            stream.put(causal.host.to_host(latent_format.process_out(block.float())))  # as the node
        if time.perf_counter() - t0 > args.deadline_s:
            raise Deadline

    stopped = None
    try:
        causal.generate(model, context, causal.Video(args.height, args.width, total_frames=total), schedule, policy,
                        noise=causal.Noise(seed=0),
                        output=causal.Output(device="cpu", keep_latents=False, on_block=on_block), reencoder=reencoder)
    except Deadline:
        stopped = "deadline"
    finally:
        stream.close()
    wall = time.perf_counter() - t0
    report["written_frames"] = writer.frames
    report["wall_s"] = wall
    report["stopped"] = stopped
    report["overall_fps"] = writer.frames / wall
    report["file_mb"] = path.stat().st_size / 1e6
    report["block_s"] = block_s
    later = sorted(block_s[1:]) or block_s
    report["median_block_s"] = later[len(later) // 2]
    print(f"wrote {writer.frames} frames ({writer.frames / 16 / 60:.2f} min of video) in {wall:.1f} s: "
          f"{writer.frames / wall:.1f} fps overall; median block after the first {report['median_block_s']:.3f} s; "
          f"stopped: {stopped}", flush=True)
    write_json()
    return 0


if __name__ == "__main__":
    sys.exit(main())
