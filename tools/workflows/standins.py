"""The example workflows on tiny stand-ins: random-weight files under the exact names the workflows use, and a
copy of a workflow's API prompt made small (tests/test_e2e_nodes.py, scripts/run_example.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from causal.synthetic import random_state_dict, write_checkpoint
from tools.standins import make_tiny_wan_vae, make_wan22_vae_standin, write_standin_image
from tools.tiny import TINY, TINY_5B
from tools.workflows.examples import WORKFLOWS
from tools.workflows.files import (CAUSVID_13B, KREA_14B, LIGHTX2V_14B, LONGLIVE2_5B, REWARD_FORCING_13B,
                                   SELF_FORCING_13B, WAN22_VAE, WAN_VAE)
from tools.workflows.frames import SAMPLING_NODES, block_of

STANDIN_VAE_STD = 0.2
"""Weight scale of the stand-in Wan VAE: large enough that its frames show the latents moving."""

STANDIN_LAYOUTS = {CAUSVID_13B: "causvid", LIGHTX2V_14B: "lightx2v_safetensors", SELF_FORCING_13B: "self_forcing",
                   KREA_14B: "krea", REWARD_FORCING_13B: "reward_forcing", LONGLIVE2_5B: "longlive2"}
"""Checkpoint file -> the layout its family ships in (causal.synthetic.LAYOUTS)."""
STANDIN_CONFIGS = {LONGLIVE2_5B: TINY_5B}
"""Checkpoint file -> its stand-in's config where it is not TINY (the 5B's 48 latent channels)."""


def write_standin_models(models_dir: str | Path, seed: int = 0, input_dir: str | Path | None = None) -> list[Path]:
    """Tiny random-weight files under the exact names the workflows use (existing files are kept):
    the causal checkpoints (`tools.tiny.TINY`; LongLive 2.0's `TINY_5B`, in bf16 as its file is) in their families'
    layouts, a tiny Wan 2.1 VAE and, for the Wan 2.2 VAE, a tiny Wan 2.2 decoder (`make_wan22_vae_standin` says
    why). The umT5 has no file stand-in: `standin_prompt` swaps CLIPLoader for the test pack's CausVidTestTinyCLIP.
    The images the workflows load (LoadImage) get a small stand-in PNG in `input_dir` (default: the
    `input` folder beside `models_dir`, as in a ComfyUI --base-directory)."""
    models_dir = Path(models_dir)
    written = []
    state_dicts = {}
    for name, layout in STANDIN_LAYOUTS.items():
        path = models_dir / "diffusion_models" / name
        if not path.exists():
            config = STANDIN_CONFIGS.get(name, TINY)
            if config not in state_dicts:
                state_dicts[config] = random_state_dict(config, dtype=torch.bfloat16, seed=seed)
            tmp = path.with_name(path.stem + ".partial" + path.suffix)
            write_checkpoint(state_dicts[config], tmp, layout)
            tmp.replace(path)
            written.append(path)
    vae = models_dir / "vae" / WAN_VAE
    if not vae.exists():
        # std 0.2: the random decoder renders latent structure as visible colour (0.02 would give flat grey)
        written.append(make_tiny_wan_vae(vae, seed=seed, std=STANDIN_VAE_STD))
    if not (vae := models_dir / "vae" / WAN22_VAE).exists():
        written.append(make_wan22_vae_standin(vae, seed=seed))
    input_dir = models_dir.parent / "input" if input_dir is None else Path(input_dir)
    for name in sorted({image for wf in WORKFLOWS.values() for image in wf.images}):
        if not (input_dir / name).exists():
            written.append(write_standin_image(input_dir / name))
    return written


_TIMED_LINE = re.compile(r"^(\s*)(\d+(?:\.\d*)?|\.\d+)(\s*s?\s*#?\s*:.*)$")
"""A `seconds: prompt` line of CausVid Text Encode, a scene cut `seconds#: prompt` too (the pattern of
causal.text.split_timeline)."""


def _rescale_timeline(text: str, scale: float) -> str:
    lines = []
    for line in text.splitlines():
        m = _TIMED_LINE.match(line)
        lines.append(f"{m.group(1)}{float(m.group(2)) * scale:g}{m.group(3)}" if m else line)
    return "\n".join(lines)


def standin_size(prompt: dict, width: int, height: int) -> tuple[int, int]:
    """The small size for a prompt's sampling nodes: (width, height), each rounded up to a multiple of 32 where a
    node's preset is for models on the Wan 2.2 VAE (LongLive 2.0: 64 x 48 becomes 64 x 64)."""
    from causal.schedule import SCHEDULES

    wan22 = any(SCHEDULES[node["inputs"]["preset"]].latent_channels == 48 for node in prompt.values()
                if node["class_type"] in SAMPLING_NODES)
    return (-(-width // 32) * 32, -(-height // 32) * 32) if wan22 else (width, height)


def standin_length(api: dict, length: int = 21) -> int:
    """`length` rounded up to whole blocks of the presets of an API prompt's sampling nodes (21 frames, 6 latent
    frames, becomes 29 for LongLive 2.0's 8-frame blocks)."""
    frames = (length - 1) // 4 + 1
    for node_id, node in api.items():
        if node["class_type"] in SAMPLING_NODES:
            block = block_of(api, node_id)
            frames = -(-frames // block) * block
    return 4 * frames - 3


def standin_prompt(api: dict, *, width: int = 64, height: int = 48, length: int | None = 21,
                   clip_width: int = TINY.text_dim, seconds: float | None = None) -> dict:
    """A copy of an API prompt for the tiny stand-ins: every CLIPLoader becomes CausVidTestTinyCLIP
    of width `clip_width` (default: the text_dim of the stand-in checkpoints; same node id, so links still
    hold), every CausVid Multi-GPU runs on two CPU workers, every CausVidSampler, CausVidStreamToVideo and
    ImageScale gets the small size (`standin_size`: multiples of 32 for a LongLive 2.0 graph) and `length` (`standin_length` gives
    one of whole blocks for a graph's preset). `seconds` shortens a sampling node that is set to a length
    in seconds; the timed prompt lines of the CausVid Text Encode feeding it are scaled by the same factor, so the
    timeline keeps its shape."""
    prompt = json.loads(json.dumps(api))
    width, height = standin_size(prompt, width, height)
    for node in prompt.values():
        if node["class_type"] == "CLIPLoader":
            node["class_type"] = "CausVidTestTinyCLIP"
            node["inputs"] = {"width": clip_width, "seed": 0}
            node["_meta"] = {"title": "CausVid Test Tiny umT5 CLIP (stand-in for CLIPLoader)"}
        elif node["class_type"] == "CausVidMultiGPU":  # two CPU workers: the stand-in DiT has 2 heads
            node["inputs"]["gpus"] = "cpu,cpu"
        elif node["class_type"] == "ImageScale":
            node["inputs"]["width"], node["inputs"]["height"] = width, height
        elif node["class_type"] in SAMPLING_NODES:
            inputs = node["inputs"]
            inputs["width"], inputs["height"] = width, height
            if length is not None:
                inputs["length"] = length
            if seconds is not None and inputs.get("seconds", 0) > 0:
                scale = seconds / inputs["seconds"]
                inputs["seconds"] = seconds
                text_node = prompt[inputs["positive"][0]]
                if text_node["class_type"] == "CausVidTextEncode":
                    text_node["inputs"]["text"] = _rescale_timeline(text_node["inputs"]["text"], scale)
    return prompt
