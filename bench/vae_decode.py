#!/usr/bin/env python3
"""ComfyUI's own stream decoders, timed alone: the pack's `StreamingDecoder` on ComfyUI's Wan 2.1 VAE (and the
tiny taew2_1) decoding one video block by block, once per decode option, each option's frames compared with the
plain decode's and with the plain decode in float32 (the yardstick for what bf16 rounding alone moves).

    python3 bench/vae_decode.py --comfyui .devcarry/ComfyUI --json $OUT/vae_decode.json
    python3 bench/vae_decode.py --comfyui .comfyui/ComfyUI --device cpu --tiny --blocks 3   # smoke test

Options:
  plain            ComfyUI's module as loaded (bf16 on a GPU with bf16), the exact stream decode.
  fast             the stream's `speed: fast` decode (`StreamingDecoder(vae, fast=True)`: causal.wan_decoder on the
                   same weights, a block per call; the Wan VAE only).
  fast_low_memory  fast a frame at a time (`low_memory`: what the stream decodes with when a block's call would not
                   fit beside sampling).
  fast_dynamic     fast with its kernels compiled for dynamic shapes (one compile per kernel instead of one per
                   shape: an experiment on the first call's compile time, bench-only; first_s holds the compile).
  cudnn_benchmark  plain with torch.backends.cudnn.benchmark on (cuDNN times its algorithms once per shape).
  channels_last    plain with the decoder's weights in channels_last(_3d) memory format.
s / block = median over the blocks after the first two (GPU-synchronised); rel-L2 and max |diff| against plain,
rel-L2 against the plain decode of a float32 copy of the VAE (`vs_fp32`; plain's own is the rounding floor).
Memory (GPU): `call_peak_mib` = the largest rise of torch.cuda.max_memory_allocated above what was allocated
before a call, over the calls after the first (the decode's working memory beside its weights and cache);
`per_latent_pixel` = that in bytes / (h * w * element size of the VAE's dtype), the unit of the stream's
estimate (nodes/streaming.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ("plain", "fast", "fast_low_memory", "fast_dynamic", "cudnn_benchmark", "channels_last")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a dim-8 Wan VAE at 64x48 (CPU smoke test)")
    p.add_argument("--blocks", type=int, default=8, help="blocks of 3 latent frames after the first frame")
    p.add_argument("--decoders", default="wan,taew2_1")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    sys.path.insert(0, str(Path(args.comfyui).resolve()))
    sys.path.insert(1, str(REPO))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = args.device == "cpu"
    import torch
    import comfy.sd
    from comfy.ldm.wan.vae import WanVAE

    from bench.stream import _load_streaming
    from tools.standins import random_taehv_state_dict

    streaming = _load_streaming()
    device = torch.device(args.device)
    h, w = (6, 8) if args.tiny else (60, 104)
    g = torch.Generator().manual_seed(0)
    latents = [torch.randn(1, 16, 1, h, w, generator=g)] + \
        [torch.randn(1, 16, 3, h, w, generator=g) for _ in range(args.blocks)]

    def make(kind: str, dtype=None):
        if kind == "wan":
            wan = WanVAE(dim=8 if args.tiny else 96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                         attn_scales=[], temperal_downsample=[False, True, True])
            gen = torch.Generator().manual_seed(0)
            return comfy.sd.VAE(sd={k: (torch.randn(v.shape, generator=gen) * 0.02).to(torch.bfloat16)
                                    for k, v in wan.state_dict().items()}, dtype=dtype)
        return comfy.sd.VAE(sd=random_taehv_state_dict(0, torch.float16), dtype=dtype)

    cuda = device.type == "cuda"

    def decode_all(vae, fast: bool = False, low_memory: bool = False) -> tuple[list[float], list[int],
                                                                                torch.Tensor]:
        decoder = streaming.StreamingDecoder(vae, fast=fast)
        decoder.low_memory = low_memory
        decoder.load(tuple(latents[0].shape))
        seconds, peaks, frames = [], [], []
        for z in latents:
            if cuda:
                torch.cuda.synchronize(device)
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            frames.append(decoder.decode(z))
            seconds.append(time.perf_counter() - t0)
            if cuda:
                peaks.append(torch.cuda.max_memory_allocated(device) - before)
        return seconds, peaks, torch.cat(frames).float()

    def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.double() - b.double()).norm() / b.double().norm())

    report = {"settings": vars(args), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "decoders": {}}
    for kind in args.decoders.split(","):
        _, _, fp32 = decode_all(make(kind, torch.float32))
        vae = make(kind)
        results, reference = {}, None
        for option in OPTIONS:
            if option.startswith("fast") and kind != "wan":
                continue
            torch.backends.cudnn.benchmark = option == "cudnn_benchmark"
            layout = option == "channels_last"
            for m in vae.first_stage_model.modules():
                for param in m.parameters(recurse=False):
                    if param.dim() in (4, 5):
                        fmt = (torch.channels_last_3d if param.dim() == 5 else torch.channels_last) if layout \
                            else torch.contiguous_format
                        param.data = param.data.contiguous(memory_format=fmt)
            decoder_module = sys.modules[streaming.WanDecodeStream.__module__]
            compiled = decoder_module.compiled
            if option == "fast_dynamic":  # the product's own kernels, compiled once for every shape
                decoder_module.compiled = functools.partial(compiled, dynamic=True)
            try:
                seconds, peaks, video = decode_all(vae, fast=option.startswith("fast"),
                                                   low_memory=option == "fast_low_memory")
            finally:
                decoder_module.compiled = compiled
            row = {"s_per_block": round(statistics.median(seconds[2:] or seconds), 4), "first_s": round(seconds[0], 4),
                   "vs_fp32": rel_l2(video, fp32)}
            if peaks:
                peak = max(peaks[1:] or peaks)
                row.update(call_peak_mib=round(peak / 2**20, 1),
                           per_latent_pixel=round(peak / (h * w * vae.vae_dtype.itemsize), 1))
            if reference is None:
                reference = video
            else:
                row.update(rel_l2=rel_l2(video, reference), max_abs=float((video - reference).abs().max()),
                           bitwise=bool(torch.equal(video, reference)))
            results[option] = row
            print(kind, option, row, flush=True)
        torch.backends.cudnn.benchmark = False
        report["decoders"][kind] = results
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
