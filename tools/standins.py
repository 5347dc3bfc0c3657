"""Stand-in files for a ComfyUI models or input folder: a tiny random-weight Wan 2.1 VAE (ComfyUI's own class,
so that VAELoader detects it), a random-weight tiny Wan 2.1 decoder (taew2_1 / lighttaew2_1) and a small start
image. The example workflows' stand-ins as a whole (their
checkpoints under the exact file names) are `tools.workflows.standins.write_standin_models`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tools.comfy_server import COMFY_DIR, REPO_ROOT

_TINY_VAE_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import comfy.options
comfy.options.enable_args_parsing(False)
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch
from safetensors.torch import save_file
from comfy.ldm.wan.vae import WanVAE

path, seed, dim, std = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
torch.manual_seed(seed)
vae = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True])
gen = torch.Generator().manual_seed(seed)
sd = {}
for k, v in vae.state_dict().items():
    sd[k] = (torch.randn(v.shape, generator=gen) * std).to(torch.float16).contiguous()
save_file(sd, path)
print(len(sd), sum(t.numel() for t in sd.values()))
"""


def make_tiny_wan_vae(path: str | os.PathLike, seed: int = 0, dim: int = 8, std: float = 0.02) -> Path:
    """Write a random-weight Wan 2.1 VAE (ComfyUI's own ``WanVAE`` class, ``dim=8``: ~0.9 M
    params, ~1.9 MB fp16 safetensors) to ``path``. ``VAELoader`` detects it as a Wan 2.1 VAE (0.3.75
    reads ``dim`` from ``decoder.head.0.gamma``). Built in a subprocess so the test process never
    imports ComfyUI. Deterministic for a given seed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    proc = subprocess.run(
        [sys.executable, "-c", _TINY_VAE_SCRIPT, str(COMFY_DIR), str(tmp), str(seed), str(dim), str(std)],
        cwd=str(COMFY_DIR),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building the tiny Wan VAE failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    os.replace(tmp, path)
    return path



def random_taehv_state_dict(seed: int, dtype) -> dict:
    """Random weights for ComfyUI's own ``TAEHV`` at 16 latent channels (ComfyUI must be importable): weights
    ~ N(0, 1 / fan_in), biases small, so activations stay O(1) through the residual MemBlocks."""
    import torch
    from comfy.taesd.taehv import TAEHV

    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=gen) * ((1 / v[0].numel()) ** 0.5 if v.ndim > 1 else 0.02))
            .to(dtype).contiguous() for k, v in TAEHV(latent_channels=16).state_dict().items()}


_TAEHV_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(1, sys.argv[5])
import comfy.options
comfy.options.enable_args_parsing(False)
import comfy.cli_args
comfy.cli_args.args.cpu = True
import torch
from safetensors.torch import save_file
from tools.standins import random_taehv_state_dict

sd = random_taehv_state_dict(int(sys.argv[3]), getattr(torch, sys.argv[4]))
save_file(sd, sys.argv[2])
print(len(sd), sum(t.numel() for t in sd.values()))
"""


def make_tiny_taehv(path: str | os.PathLike, seed: int = 0, light: bool = False) -> Path:
    """Write a random-weight tiny Wan 2.1 decoder in the layout of madebyollin's ``taew2_1`` (fp16) or, with
    ``light``, lightx2v's ``lighttaew2_1`` (bf16) to ``path``: the state dict of ComfyUI's own ``TAEHV`` class for
    16 latent channels (its widths are fixed: ~11 M params, ~22 MB). ``VAELoader`` detects it by
    ``decoder.22.bias`` and tells the two apart by dtype (fp16: HunyuanVideo latent scaling; else none).
    Built in a subprocess so the test process never imports ComfyUI. Deterministic for a given seed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    dtype = "bfloat16" if light else "float16"
    proc = subprocess.run([sys.executable, "-c", _TAEHV_SCRIPT, str(COMFY_DIR), str(tmp), str(seed), dtype,
                           str(REPO_ROOT)],
                          cwd=str(COMFY_DIR), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"building the tiny TAEHV failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    os.replace(tmp, path)
    return path

STANDIN_IMAGE_SIZE = (120, 80)
"""Width, height of the stand-in start image: another aspect ratio than the stand-in video, so that
ImageScale really resizes and crops."""


def write_standin_image(path: str | Path) -> Path:
    """A small deterministic RGB PNG (a colour gradient) for LoadImage."""
    import numpy as np
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = STANDIN_IMAGE_SIZE
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([255 * x / (width - 1), 255 * y / (height - 1), 128 + 0 * x], axis=-1).astype(np.uint8)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    Image.fromarray(rgb, "RGB").save(tmp, format="PNG")
    tmp.replace(path)
    return path
