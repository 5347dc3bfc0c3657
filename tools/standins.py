"""Stand-in files for a ComfyUI models or input folder: a tiny random-weight Wan 2.1 VAE (ComfyUI's own class,
so that VAELoader detects it), a random-weight tiny Wan 2.1 decoder (taew2_1 / lighttaew2_1) and Wan 2.2 decoder
(taew2_2, the stand-in for the Wan 2.2 VAE: see `make_wan22_vae_standin`), a small start
image and a real-size random-weight umT5-XXL text encoder in the layout of ComfyUI's
``umt5_xxl_fp8_e4m3fn_scaled.safetensors`` (for GPU benchmarks). The example workflows' stand-ins as a whole (their
checkpoints under the exact file names) are `tools.workflows.standins.write_standin_models`."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from tools.comfy_server import COMFY_DIR, REPO_ROOT, TEST_NODES_DIR, TEST_PACK_NAME

if TYPE_CHECKING:
    import torch

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



def random_taehv_state_dict(seed: int, dtype, latent_channels: int = 16) -> dict:
    """Random weights for ComfyUI's own ``TAEHV`` at 16 latent channels (taew2_1) or 48 (taew2_2; ComfyUI must be
    importable): weights ~ N(0, 1 / fan_in), biases small, so activations stay O(1) through the residual
    MemBlocks."""
    import torch
    from comfy.taesd.taehv import TAEHV

    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=gen) * ((1 / v[0].numel()) ** 0.5 if v.ndim > 1 else 0.02))
            .to(dtype).contiguous() for k, v in TAEHV(latent_channels=latent_channels).state_dict().items()}


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

sd = random_taehv_state_dict(int(sys.argv[3]), getattr(torch, sys.argv[4]), int(sys.argv[6]))
save_file(sd, sys.argv[2])
print(len(sd), sum(t.numel() for t in sd.values()))
"""


def make_tiny_taehv(path: str | os.PathLike, seed: int = 0, light: bool = False, latent_channels: int = 16) -> Path:
    """Write a random-weight tiny Wan 2.1 decoder in the layout of madebyollin's ``taew2_1`` (fp16) or, with
    ``light``, lightx2v's ``lighttaew2_1`` (bf16) to ``path``: the state dict of ComfyUI's own ``TAEHV`` class for
    16 latent channels (its widths are fixed: ~11 M params, ~22 MB). ``VAELoader`` detects it by
    ``decoder.22.bias`` and tells the two apart by dtype (fp16: HunyuanVideo latent scaling; else none). With
    ``latent_channels=48``, the Wan 2.2 decoder ``taew2_2`` (fp16; ComfyUI reads 48 channels as Wan 2.2's, no
    latent scaling, 2x2 pixels per output channel group).
    Built in a subprocess so the test process never imports ComfyUI. Deterministic for a given seed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    dtype = "bfloat16" if light else "float16"
    proc = subprocess.run([sys.executable, "-c", _TAEHV_SCRIPT, str(COMFY_DIR), str(tmp), str(seed), dtype,
                           str(REPO_ROOT), str(latent_channels)],
                          cwd=str(COMFY_DIR), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"building the tiny TAEHV failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
    os.replace(tmp, path)
    return path


WAN22_VAE_PARAMETERS = 704_688_668
"""Parameters of the Wan 2.2 VAE that ComfyUI 0.3.75's VAELoader builds for any file it detects as one (its
``comfy.sd.VAE`` fixes ``dim=160`` and the decoder's 256 whatever the file holds, and a tensor of another shape
does not load): 1.41 GB in bf16, and a CPU decode of one 8-frame block at 64x64 takes 46 s (2 cores, 2026-12-03)."""


def make_wan22_vae_standin(path: str | os.PathLike, seed: int = 0) -> Path:
    """The stand-in for ``wan2.2_vae.safetensors``: no Wan 2.2 VAE smaller than the real one loads
    (`WAN22_VAE_PARAMETERS`), so the file is a random-weight tiny Wan 2.2 decoder in taew2_2's layout
    (`make_tiny_taehv` with 48 latent channels), which VAELoader detects as its 48-channel Wan 2.2 decoder (16x,
    4x in time) and decodes LongLive 2.0's latents with; it cannot encode. The full VAE's own class runs in the
    in-process tests at reduced widths (`small_wan22_vae`)."""
    return make_tiny_taehv(path, seed=seed, latent_channels=48)


def small_wan22_vae(seed: int = 0, dim: int = 16, dec_dim: int = 32, std: float = 0.2):
    """ComfyUI's own Wan 2.2 VAE in this process (ComfyUI must be importable): a ``comfy.sd.VAE`` around
    ``comfy.ldm.wan.vae2_2.WanVAE`` as VAELoader builds it for a Wan 2.2 file, but at widths ``dim`` / ``dec_dim``
    instead of 160 / 256 (its constructor swapped while the VAE is made), random weights ~ N(0, std^2)."""
    import comfy.ldm.wan.vae2_2 as vae2_2
    import comfy.sd
    import torch

    full = vae2_2.WanVAE

    def small(**config):
        return full(**{**config, "dim": dim, "dec_dim": dec_dim})

    gen = torch.Generator().manual_seed(seed)
    layout = small(dim=dim, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True]).state_dict()
    sd = {k: torch.randn(v.shape, generator=gen) * std for k, v in layout.items()}
    vae2_2.WanVAE = small
    try:
        return comfy.sd.VAE(sd=sd)
    finally:
        vae2_2.WanVAE = full


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


# ------------------------------------------------------------------------------------------------
# A real-size umT5-XXL text encoder with random weights, as ComfyUI's repackaged scaled-fp8 file.

UMT5_WEIGHT_STD = 0.02
"""Standard deviation of the stand-in's dequantized Linear weights."""
UMT5_SCALE_WEIGHT = 4 * UMT5_WEIGHT_STD / 448.0
"""``scale_weight`` of every stand-in Linear: float8_e4m3fn's largest value, 448, dequantizes to four standard
deviations (the few weights beyond are clipped there)."""
UMT5_EMBEDDING_STD = 1.0
UMT5_RELATIVE_BIAS_STD = 0.1
_CHUNK_ELEMENTS = 1 << 25
"""At most this many elements (128 MiB in float32) are generated at a time."""
_SAFETENSORS_DTYPES = {"float8_e4m3fn": "F8_E4M3", "bfloat16": "BF16", "float16": "F16", "float32": "F32",
                       "uint8": "U8"}


def tiny_spiece_model() -> bytes:
    """The serialized sentencepiece model of the test pack (``tests/comfy_test_nodes``, which keeps the one copy of
    the trainer: ComfyUI imports that pack without this repository on ``sys.path``, so it cannot import ``tools``).
    About 60 pieces (pad 0, eos 1, unk 2, no bos), so token ids are below 60. ComfyUI must be importable (the pack
    imports ``comfy_api``)."""
    from tools.comfy_inprocess import import_folder

    return import_folder(TEST_PACK_NAME, TEST_NODES_DIR).tiny_spiece_model()


def umt5_xxl_fp8_scaled_layout() -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor of a ``umt5_xxl_fp8_e4m3fn_scaled.safetensors`` stand-in: the state
    dict of ComfyUI's own Wan text encoder (``comfy.text_encoders.wan.te``, config ``umt5_config_xxl.json``) built on
    the meta device with the scaled-fp8 operations that ``CLIPLoader`` picks for that file (``dtype_t5`` bfloat16,
    ``t5xxl_scaled_fp8`` float8_e4m3fn), plus the tokenizer's ``spiece_model`` (uint8, the test pack's tiny model).

    That is: every Linear weight float8_e4m3fn with a float32 scalar ``<linear>.scale_weight``; layer norms, the
    24 relative attention biases (umT5 has one per block) and ``shared.weight`` bfloat16; the ``scaled_fp8`` marker,
    an empty float8_e4m3fn tensor (ComfyUI reads its dtype). 6.73e9 bytes (the published file: about 6.7 GB).
    ComfyUI must be importable (``tools.comfy_inprocess.add_comfyui_to_sys_path``).
    """
    import torch
    import comfy.text_encoders.wan as wan_te

    model = wan_te.te(dtype_t5=torch.bfloat16, t5xxl_scaled_fp8=torch.float8_e4m3fn)(device="meta")
    # CLIPLoader hands the file's state dict to this module (CLIP.load_sd -> SDClipModel.load_sd).
    layout = {name: (tuple(t.shape), t.dtype) for name, t in model.umt5xxl.transformer.state_dict().items()}
    layout["spiece_model"] = ((len(tiny_spiece_model()),), torch.uint8)
    return layout


def umt5_standin_chunks(name: str, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator,
                        device: str = "cpu", spiece: bytes = b"") -> Iterator[torch.Tensor]:
    """The stand-in's tensor ``name`` as CPU tensors of ``dtype`` that concatenate along dim 0 to ``shape``, each
    at most ``_CHUNK_ELEMENTS`` elements, random ones generated on ``device`` with ``generator`` (of that device):
    float8 Linear weights ~ N(0, UMT5_WEIGHT_STD^2) / UMT5_SCALE_WEIGHT clipped to +-448, their ``scale_weight``
    UMT5_SCALE_WEIGHT, layer norms ones, ``shared.weight`` ~ N(0, 1), relative attention biases ~ N(0, 0.1^2),
    ``spiece_model`` the bytes ``spiece``, the empty marker nothing. Any other tensor raises ``ValueError``, so
    that a tensor ComfyUI adds one day is not filled with values nobody chose."""
    import torch

    if name == "spiece_model":
        if len(spiece) != math.prod(shape):
            raise ValueError(f"spiece_model: {len(spiece)} bytes for shape {shape}")
        yield torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
        return
    if math.prod(shape) == 0:
        return
    if name.endswith(".scale_weight"):
        yield torch.full(shape, UMT5_SCALE_WEIGHT, dtype=dtype)
        return
    if name.endswith("layer_norm.weight"):
        yield torch.ones(shape, dtype=dtype)
        return
    fp8 = dtype == torch.float8_e4m3fn
    if fp8 and name.endswith(".weight") and len(shape) == 2:
        std = UMT5_WEIGHT_STD / UMT5_SCALE_WEIGHT
    elif name == "shared.weight":
        std = UMT5_EMBEDDING_STD
    elif name.endswith("relative_attention_bias.weight"):
        std = UMT5_RELATIVE_BIAS_STD
    else:
        raise ValueError(f"no stand-in values for {name} {shape} {dtype}")
    rows = max(1, _CHUNK_ELEMENTS // max(1, math.prod(shape[1:])))
    for start in range(0, shape[0], rows):
        x = torch.randn((min(rows, shape[0] - start), *shape[1:]), generator=generator, device=device)
        x = x.mul_(std).clamp_(-448.0, 448.0) if fp8 else x.mul_(std)
        yield x.to(dtype).cpu()


def write_safetensors_streamed(path: str | os.PathLike, layout: dict[str, tuple[tuple[int, ...], torch.dtype]],
                               chunks: Callable[[str], Iterable[torch.Tensor]]) -> Path:
    """Write a safetensors file of the tensors ``layout`` names, tensor by tensor and chunk by chunk as
    ``chunks(name)`` yields them (CPU tensors of the layout's dtype, concatenating to its shape), so that memory
    holds one chunk at a time; ``safetensors.torch.save_file`` would need every tensor at once. The header is the
    safetensors format (little-endian u64 length, JSON, space padded to 8 bytes); data go in order of decreasing
    element size, as safetensors orders them, so every tensor is aligned. Written to ``<path>.tmp``, then renamed.
    """
    import torch

    path = Path(path)
    order = sorted(layout, key=lambda name: -layout[name][1].itemsize)  # stable: the layout's order within a size
    header: dict[str, dict] = {}
    offset = 0
    for name in order:
        shape, dtype = layout[name]
        nbytes = math.prod(shape) * dtype.itemsize
        if offset % dtype.itemsize:
            raise ValueError(f"{name} would start unaligned at byte {offset}")
        header[name] = {"dtype": _SAFETENSORS_DTYPES[str(dtype).replace("torch.", "")], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in order:
            shape, dtype = layout[name]
            written = 0
            for chunk in chunks(name):
                if chunk.dtype != dtype or chunk.device.type != "cpu":
                    raise ValueError(f"{name}: a {chunk.dtype} chunk on {chunk.device}, expected {dtype} on the CPU")
                data = chunk.contiguous().reshape(-1).view(torch.uint8).numpy()
                f.write(data)
                written += data.nbytes
                del chunk, data
            if written != header[name]["data_offsets"][1] - header[name]["data_offsets"][0]:
                raise ValueError(f"{name}: {written} bytes written, its shape {shape} needs "
                                 f"{math.prod(shape) * dtype.itemsize}")
    os.replace(tmp, path)
    return path


def write_umt5_standin(path: str | os.PathLike, layout: dict[str, tuple[tuple[int, ...], torch.dtype]],
                       seed: int = 0, device: str = "cpu") -> Path:
    """Write the stand-in tensors ``layout`` names (``umt5_xxl_fp8_scaled_layout()`` or part of it) to ``path``:
    values of ``umt5_standin_chunks`` from one generator seeded ``seed`` on ``device``, the tiny sentencepiece model
    as ``spiece_model``. Runs in this process: ComfyUI must be importable."""
    import torch

    generator = torch.Generator(device=device).manual_seed(int(seed))
    spiece = tiny_spiece_model() if "spiece_model" in layout else b""
    return write_safetensors_streamed(
        path, layout, lambda name: umt5_standin_chunks(name, *layout[name], generator, device, spiece))
