#!/usr/bin/env python3
"""ComfyUI's own stream decoders, timed alone: the pack's `StreamingDecoder` on ComfyUI's Wan 2.1 VAE (and the
tiny taew2_1) decoding one video block by block, once per decode option, each option's frames compared with the
plain decode's.

    python3 bench/vae_decode.py --comfyui .devcarry/ComfyUI --json $OUT/vae_decode.json
    python3 bench/vae_decode.py --comfyui .comfyui/ComfyUI --device cpu --tiny --blocks 3   # smoke test

Options (each a process-wide or module-wide switch the product could set for `speed: fast`):
  plain            ComfyUI's module as loaded (bf16 on a GPU with bf16).
  cudnn_benchmark  torch.backends.cudnn.benchmark on (cuDNN times its algorithms once per shape).
  channels_last    the decoder's weights in channels_last(_3d) memory format (activations follow where ops keep it).
  both             the two together.
s / block = median over the blocks after the first two (GPU-synchronised); rel-L2 and max |diff| against plain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ("plain", "cudnn_benchmark", "channels_last", "both")


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

    def make(kind: str):
        if kind == "wan":
            wan = WanVAE(dim=8 if args.tiny else 96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                         attn_scales=[], temperal_downsample=[False, True, True])
            gen = torch.Generator().manual_seed(0)
            return comfy.sd.VAE(sd={k: (torch.randn(v.shape, generator=gen) * 0.02).to(torch.bfloat16)
                                    for k, v in wan.state_dict().items()})
        return comfy.sd.VAE(sd=random_taehv_state_dict(0, torch.float16))

    report = {"settings": vars(args), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "decoders": {}}
    for kind in args.decoders.split(","):
        vae = make(kind)
        results, reference = {}, None
        for option in OPTIONS:
            torch.backends.cudnn.benchmark = option in ("cudnn_benchmark", "both")
            fmt = torch.channels_last_3d if option in ("channels_last", "both") else torch.contiguous_format
            for m in vae.first_stage_model.modules():
                for name, param in m.named_parameters(recurse=False):
                    if param.dim() in (4, 5):
                        layout = fmt if param.dim() == 5 or fmt is torch.contiguous_format else torch.channels_last
                        param.data = param.data.contiguous(memory_format=layout)
            decoder = streaming.StreamingDecoder(vae)
            decoder.load(tuple(latents[0].shape))
            seconds, frames = [], []
            for z in latents:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                frames.append(decoder.decode(z))
                seconds.append(time.perf_counter() - t0)
            video = torch.cat(frames).float()
            row = {"s_per_block": round(statistics.median(seconds[2:] or seconds), 4), "first_s": round(seconds[0], 4)}
            if reference is None:
                reference = video
            else:
                row["rel_l2"] = float((video - reference).norm() / reference.norm())
                row["max_abs"] = float((video - reference).abs().max())
                row["bitwise"] = bool(torch.equal(video, reference))
            results[option] = row
            print(kind, option, row, flush=True)
        torch.backends.cudnn.benchmark = False
        report["decoders"][kind] = results
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
