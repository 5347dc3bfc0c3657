"""The pack's example workflows, defined once, and the helpers that run them with tiny stand-ins.

Every example exists twice:

* ``example_workflows/<name>.json``: the UI workflow (LiteGraph JSON, what the ComfyUI editor opens and
  what *Workflow \u2192 Browse Templates* lists for this pack);
* ``tests/workflows_api/<name>.json``: its API-format twin (what ``POST /prompt`` takes), used by the
  tests and by ``scripts/run_example.py``. It lives outside ``example_workflows/`` because ComfyUI
  lists every ``*.json`` there as a template.

Both are generated from the specs below (``WORKFLOWS``) and the node schemas of a running ComfyUI
(``/object_info``: widget order, socket slots, display names)::

    .venv/bin/python tests/workflows_api/example_graphs.py           # (re)write both sets of files
    .venv/bin/python tests/workflows_api/example_graphs.py --check   # exit 1 if a file is out of date

``tests/test_workflows.py`` checks that the files are what this module generates, validates both
twins against ``/object_info`` and converts each UI workflow to API format the way the frontend does
and compares it with its twin, so a hand edit of either file is caught.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
UI_DIR = REPO_ROOT / "example_workflows"
API_DIR = HERE

PACK_ID = "comfyui-causvid"  # registry id (pyproject [project] name)
PACK_VERSION = "0.1.0"
COMFY_VERSION = "0.3.75"
FRONTEND_VERSION = "1.32.9"  # the frontend ComfyUI 0.3.75 pins

# -------------------------------------------------------------------------------------------------
# Files the workflows use (the pack never downloads weights)

UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"
CAUSVID_13B = "causvid_1.3b_autoregressive.pt"
LIGHTX2V_14B = "lightx2v_causvid_14b.safetensors"
SELF_FORCING_13B = "self_forcing_dmd.pt"  # gdhe17/Self-Forcing checkpoints/self_forcing_dmd.pt, name kept

PUBLISHED = {
    CAUSVID_13B: ("model.pt", "tianweiy/CausVid: autoregressive_checkpoint/model.pt"),
    LIGHTX2V_14B: ("causal_model.safetensors", "lightx2v/Wan2.1-T2V-14B-CausVid: causvid_models/causal_model.safetensors"),
    SELF_FORCING_13B: (SELF_FORCING_13B, "gdhe17/Self-Forcing: checkpoints/self_forcing_dmd.pt"),
}
"""Workflow file name -> (the name it is published under, where): a file kept under its published name is
found too (scripts/run_example.py)."""
START_IMAGE = "example.png"  # ComfyUI ships input/example.png; the image-to-video example starts from it

REPACKAGED = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
MODEL_LINKS = {  # the frontend's "missing models" dialog reads these from node properties
    UMT5: {"name": UMT5, "url": f"{REPACKAGED}/text_encoders/{UMT5}", "directory": "text_encoders"},
    WAN_VAE: {"name": WAN_VAE, "url": f"{REPACKAGED}/vae/{WAN_VAE}", "directory": "vae"},
}

FILE_WIDGETS = {
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("CausVidModelLoader", "ckpt_name"): "diffusion_models",
    ("LoadImage", "image"): "input",
}
"""(node type, widget) -> models folder (or ComfyUI's input folder): combos listing files, which a fresh
install may not have."""

UPLOAD_BUTTON_VALUE = "image"
"""A combo with `image_upload` (LoadImage) gets the frontend's upload button widget after the node's
widgets; the editor saves its value ("image") in widgets_values, though it is never sent to the server."""

FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
"""Node types the editor draws but never sends to the server (absent from /object_info)."""

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


# -------------------------------------------------------------------------------------------------
# Specs


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[float, float]
    size: tuple[float, float]
    widgets: dict[str, Any] = field(default_factory=dict)
    """Widget values by input name; omitted widgets take the schema default."""
    links: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Socket input name -> (source node id, source output slot)."""
    control: str | None = None
    """control_after_generate mode ("randomize" / "fixed") of the node's seed widget."""
    title: str | None = None
    color: str | None = None
    bgcolor: str | None = None


@dataclass
class Note:
    id: int
    pos: tuple[float, float]
    size: tuple[float, float]
    text: str
    title: str = "Read me: models and settings"


@dataclass
class Workflow:
    name: str
    nodes: list[Node]
    note: Note
    groups: list[tuple[str, list[int]]]
    files: dict[str, list[str]]
    """models folder -> the file names the workflow expects there."""
    images: list[str] = field(default_factory=list)
    """Files the workflow expects in ComfyUI's input folder (LoadImage)."""


POSITIVE = ("#232", "#353")  # the core templates' green prompt nodes

DOWNLOAD_COMMON = f"""\
- **`{UMT5}`** \u2192 `ComfyUI/models/text_encoders/` (umT5-XXL, from
  [Comfy-Org/Wan_2.1_ComfyUI_repackaged](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged),
  `split_files/text_encoders/`)
- **`{WAN_VAE}`** \u2192 `ComfyUI/models/vae/` (same repository, `split_files/vae/`)"""

NO_CFG = ("CausVid models are distilled: no negative prompt, no CFG, a few steps per 3-latent-frame "
          "block. The preview shows each block as it is denoised.")


def _t2v_13b() -> Workflow:
    note = f"""## CausVid 1.3B: text to video

Autoregressive (block-causal, KV-cached) Wan2.1 1.3B from **CausVid** (Yin et al., CVPR 2025).

### Models (this pack never downloads weights)
- **`{CAUSVID_13B}`** \u2192 `ComfyUI/models/diffusion_models/`: download `autoregressive_checkpoint/model.pt`
  from [tianweiy/CausVid](https://huggingface.co/tianweiy/CausVid) and **rename** it to
  `{CAUSVID_13B}`. The loader reads the `.pt` with torch's safe loader (no pickled code runs) and takes
  its `generator` weights.
{DOWNLOAD_COMMON}

```
ComfyUI/models/
\u251c\u2500\u2500 diffusion_models/{CAUSVID_13B}
\u251c\u2500\u2500 text_encoders/{UMT5}
\u2514\u2500\u2500 vae/{WAN_VAE}
```

### Settings
- 832×480, **length 81** = 21 latent frames = 5 s at 16 fps (the trained length); lengths are 1 + 4·(3k).
- Preset **CausVid 1.3B**: steps 1000, 757, 522 (shift 8) and a clean pass per block.
- One prompt per line in *CausVid Text Encode*: line N drives fragment N (`num_fragments`).
- `cache`, `window`, `sink_frames` and `seconds` keep their defaults: the preset's cache policy, and
  `length` x `num_fragments` decide the length (see the one-minute example for a video in seconds).
- {NO_CFG}
"""
    return Workflow(
        name="causvid_1.3b_t2v",
        nodes=[
            Node(1, "CausVidModelLoader", (0, 0), (400, 82),
                 {"ckpt_name": CAUSVID_13B, "weight_dtype": "default"}),
            Node(2, "CLIPLoader", (0, 140), (400, 106), {"clip_name": UMT5, "type": "wan", "device": "default"}),
            Node(3, "VAELoader", (0, 300), (400, 58), {"vae_name": WAN_VAE}),
            Node(4, "CausVidTextEncode", (440, 0), (440, 260), {
                "text": "A red fox trots through fresh snow in a sunlit birch forest, its breath steaming in "
                        "the cold air, the camera tracking beside it at ground level, cinematic, detailed fur."},
                 {"clip": (2, 0)}, title="CausVid Text Encode (Prompt)", color=POSITIVE[0], bgcolor=POSITIVE[1]),
            Node(5, "CausVidSampler", (920, 0), (340, 390),
                 {"width": 832, "height": 480, "length": 81, "preset": "CausVid 1.3B", "custom_steps": "",
                  "seed": 42, "num_fragments": 1, "fused_kernels": False},
                 {"model": (1, 0), "positive": (4, 0)}, control="randomize"),
            Node(6, "VAEDecode", (1300, 0), (220, 46), {}, {"samples": (5, 0), "vae": (3, 0)}),
            Node(7, "CreateVideo", (1300, 100), (270, 78), {"fps": 16.0}, {"images": (6, 0)}),
            Node(8, "SaveVideo", (1600, 0), (480, 420),
                 {"filename_prefix": "video/causvid_1.3b", "format": "auto", "codec": "auto"}, {"video": (7, 0)}),
        ],
        note=Note(9, (-500, 0), (460, 620), note),
        groups=[("Models", [1, 2, 3]), ("Prompt", [4]), ("Sample", [5]), ("Decode and save", [6, 7, 8])],
        files={"diffusion_models": [CAUSVID_13B], "text_encoders": [UMT5], "vae": [WAN_VAE]},
    )


def _lightx2v_14b() -> Workflow:
    note = f"""## LightX2V CausVid 14B: 3 fragments (225 frames)

Wan2.1 14B made block-causal by CausVid training, as released by **LightX2V**.

### Models (this pack never downloads weights)
- **`{LIGHTX2V_14B}`** \u2192 `ComfyUI/models/diffusion_models/`: download LightX2V's `causal_model.safetensors`
  from [lightx2v/Wan2.1-T2V-14B-CausVid](https://huggingface.co/lightx2v/Wan2.1-T2V-14B-CausVid) and
  **rename** it to `{LIGHTX2V_14B}` (their `causal_model.pt` works too, under a `.pt` name).
{DOWNLOAD_COMMON}

```
ComfyUI/models/
\u251c\u2500\u2500 diffusion_models/{LIGHTX2V_14B}
\u251c\u2500\u2500 text_encoders/{UMT5}
\u2514\u2500\u2500 vae/{WAN_VAE}
```

### Settings
- **num_fragments 3** × length 81: 21 + 18 + 18 = **57 latent frames = 225 frames** (14 s at 16 fps).
  Each later fragment re-caches the previous one's last clean block and adds 72 frames.
- Preset **CausVid-Plus 14B**: the 9-step schedule the 14B weights were trained with (clean pass on).
  Preset **LightX2V CausVid 14B** reproduces LightX2V's own runner instead (warped steps, no clean
  pass), for comparison with their videos.
- The 14B weights take 28 GB in bf16; `weight_dtype` **fp8_e4m3fn** halves that (not bit-exact).
- {NO_CFG}
"""
    return Workflow(
        name="causvid_14b_lightx2v_3_fragments",
        nodes=[
            Node(1, "CausVidModelLoader", (0, 0), (400, 82),
                 {"ckpt_name": LIGHTX2V_14B, "weight_dtype": "default"}),
            Node(2, "CLIPLoader", (0, 140), (400, 106), {"clip_name": UMT5, "type": "wan", "device": "default"}),
            Node(3, "VAELoader", (0, 300), (400, 58), {"vae_name": WAN_VAE}),
            Node(4, "CausVidTextEncode", (440, 0), (440, 260), {
                "text": "A sailboat glides across a calm turquoise bay at golden hour, gentle waves sparkling, "
                        "seagulls circling the mast, a slow aerial shot that drifts around the boat."},
                 {"clip": (2, 0)}, title="CausVid Text Encode (Prompt)", color=POSITIVE[0], bgcolor=POSITIVE[1]),
            Node(5, "CausVidSampler", (920, 0), (340, 390),
                 {"width": 832, "height": 480, "length": 81, "preset": "CausVid-Plus 14B", "custom_steps": "",
                  "seed": 42, "num_fragments": 3, "fused_kernels": False},
                 {"model": (1, 0), "positive": (4, 0)}, control="randomize"),
            Node(6, "VAEDecode", (1300, 0), (220, 46), {}, {"samples": (5, 0), "vae": (3, 0)}),
            Node(7, "CreateVideo", (1300, 100), (270, 78), {"fps": 16.0}, {"images": (6, 0)}),
            Node(8, "SaveVideo", (1600, 0), (480, 420),
                 {"filename_prefix": "video/causvid_14b", "format": "auto", "codec": "auto"}, {"video": (7, 0)}),
        ],
        note=Note(9, (-500, 0), (460, 660), note),
        groups=[("Models", [1, 2, 3]), ("Prompt", [4]), ("Sample", [5]), ("Decode and save", [6, 7, 8])],
        files={"diffusion_models": [LIGHTX2V_14B], "text_encoders": [UMT5], "vae": [WAN_VAE]},
    )


def _long_video() -> Workflow:
    lines = [
        "A hot air balloon rises slowly from a misty meadow at dawn, the burner glowing orange.",
        "The hot air balloon drifts above rolling green hills and a winding river in soft morning light.",
        "The hot air balloon floats over a small village with red roofs as the sun climbs higher.",
    ]
    more = "The hot air balloon sails toward snowy mountains under a clear blue sky, clouds below it."
    note = f"""## Long video: one prompt per fragment, then continue

A video grown fragment by fragment, each with its own prompt, decoded **once** at the end.

### Models (this pack never downloads weights)
- **`{CAUSVID_13B}`** \u2192 `ComfyUI/models/diffusion_models/`: download `autoregressive_checkpoint/model.pt`
  from [tianweiy/CausVid](https://huggingface.co/tianweiy/CausVid) and **rename** it to `{CAUSVID_13B}`.
{DOWNLOAD_COMMON}

### How it works
1. *CausVid Text Encode* holds one prompt per line; line N drives fragment N. *CausVid Sampler* runs
   `num_fragments` = 3 (the number of lines): 21 + 18 + 18 = 57 latent frames.
2. *CausVid Continue* takes the sampler's `state` and adds `num_fragments` more fragments with its own
   prompt (18 latent frames each). Chain more Continue nodes for longer videos.
3. The Continue node's **`video`** output is the whole video so far (75 latent frames = 297 frames,
   about 18.6 s at 16 fps). Decoding it once keeps the VAE's causal cache across fragments: **no seams**.
   (Decoding each fragment separately restarts the VAE at every boundary.)

The seed is *fixed*: change only the last prompt and ComfyUI reuses the cached sampler result.
{NO_CFG}
"""
    return Workflow(
        name="causvid_long_video_prompt_per_fragment",
        nodes=[
            Node(1, "CausVidModelLoader", (0, 0), (400, 82),
                 {"ckpt_name": CAUSVID_13B, "weight_dtype": "default"}),
            Node(2, "CLIPLoader", (0, 140), (400, 106), {"clip_name": UMT5, "type": "wan", "device": "default"}),
            Node(3, "VAELoader", (0, 300), (400, 58), {"vae_name": WAN_VAE}),
            Node(4, "CausVidTextEncode", (440, 0), (460, 280), {"text": "\n".join(lines)}, {"clip": (2, 0)},
                 title="Prompts, one line per fragment", color=POSITIVE[0], bgcolor=POSITIVE[1]),
            Node(5, "CausVidSampler", (940, 0), (340, 390),
                 {"width": 832, "height": 480, "length": 81, "preset": "CausVid 1.3B", "custom_steps": "",
                  "seed": 42, "num_fragments": len(lines), "fused_kernels": False},
                 {"model": (1, 0), "positive": (4, 0)}, control="fixed"),
            Node(6, "CausVidTextEncode", (440, 360), (460, 160), {"text": more}, {"clip": (2, 0)},
                 title="Prompt for the continuation", color=POSITIVE[0], bgcolor=POSITIVE[1]),
            Node(7, "CausVidContinue", (1320, 0), (300, 150), {"num_fragments": 1},
                 {"model": (1, 0), "state": (5, 1), "positive": (6, 0)}),
            Node(8, "VAEDecode", (1660, 0), (220, 46), {}, {"samples": (7, 1), "vae": (3, 0)}),
            Node(9, "CreateVideo", (1660, 100), (270, 78), {"fps": 16.0}, {"images": (8, 0)}),
            Node(10, "SaveVideo", (1960, 0), (480, 420),
                 {"filename_prefix": "video/causvid_long", "format": "auto", "codec": "auto"}, {"video": (9, 0)}),
        ],
        note=Note(11, (-500, 0), (460, 700), note),
        groups=[("Models", [1, 2, 3]), ("Prompts", [4, 6]), ("Sample and continue", [5, 7]),
                ("Decode once and save", [8, 9, 10])],
        files={"diffusion_models": [CAUSVID_13B], "text_encoders": [UMT5], "vae": [WAN_VAE]},
    )


# ASCII source for the new notes; the characters match the existing notes'.
ARROW = "\u2192"
TIMES = "\u00d7"
MIDDOT = "\u00b7"


def _tree(files: dict[str, list[str]]) -> str:
    """The models/ folder drawing of the notes."""
    rows = [(folder, name) for folder, names in files.items() for name in names]
    lines = ["ComfyUI/models/"]
    for i, (folder, name) in enumerate(rows):
        branch = "\u2514\u2500\u2500 " if i == len(rows) - 1 else "\u251c\u2500\u2500 "
        lines.append(f"{branch}{folder}/{name}")
    return "\n".join(lines)


ONE_MINUTE_SECONDS = 60.0
ONE_MINUTE_TIMELINE = [
    (0, "A red fox trots through fresh snow in a quiet birch forest at dawn, soft blue light, its breath "
        "steaming, the camera tracking beside it at ground level, cinematic, detailed fur."),
    (20, "The red fox stops, ears pricked, and pounces head first into the deep snow after a mouse, snow "
         "flying around it in the golden morning sun, the camera beside it at ground level."),
    (40, "The red fox trots on through the snowy birch forest with a mouse in its mouth, sunlight falling "
         "through the trees, the camera following it at ground level as it disappears among the trunks."),
]


SELF_FORCING_DOWNLOAD = f"""- **`{SELF_FORCING_13B}`** {ARROW} `ComfyUI/models/diffusion_models/`: download
  `checkpoints/{SELF_FORCING_13B}` from [gdhe17/Self-Forcing](https://huggingface.co/gdhe17/Self-Forcing)
  (keep its name). The loader reads the `.pt` with torch's safe loader (no pickled code runs) and takes
  its `generator_ema` weights.
{DOWNLOAD_COMMON}"""


def _one_minute() -> Workflow:
    files = {"diffusion_models": [SELF_FORCING_13B], "text_encoders": [UMT5], "vae": [WAN_VAE]}
    note = f"""## One minute, three prompts: Self-Forcing 1.3B with a sink cache

A 60 s video from **one** sampler run whose prompt changes at 20 s and 40 s, at constant memory.

### Models (this pack never downloads weights)
{SELF_FORCING_DOWNLOAD}

```
{_tree(files)}
```

### Settings
- **seconds 60**: the sampler adds 3-latent-frame blocks until the video lasts 60 s at 16 fps:
  243 latent frames = **969 frames** (60.6 s), 81 blocks. With `seconds` set, `length` and
  `num_fragments` no longer decide the length.
- **A prompt timeline**: one `seconds: prompt` line per prompt in *CausVid Text Encode* (`0:`, `20:`,
  `40:`). A prompt takes over at the first block that starts at or after its time.
- Preset **Self-Forcing / LongLive 1.3B**: steps 1000, 750, 500, 250 (shift 5, warped) and a clean pass
  per block.
- **cache sink, window 12, sink_frames 3** (LongLive's inference setting): the KV cache holds the first
  3 latent frames of the video (the attention *sink*) plus the 9 most recent ones, 12 latent frames
  whatever the length. Older frames are evicted, so memory and time per block stay **constant**: once
  the cache is full (4 blocks) the 81st block costs what the 5th did. RoPE positions stay absolute (the
  frame's place in the video).
- **Prompt switch** (LongLive's KV re-cache): where a new prompt starts, the frames in the window are
  encoded again under the new prompt before the next block, so the next blocks attend to a cache built
  under the prompt they follow (LongLive's method for switching prompts mid-video). The sink keeps the
  first prompt's frames.
- Self-Forcing was trained on 5 s clips, so expect some drift over a minute; LongLive is its fine-tune
  for long videos and prompt switches (its LoRA is not supported by this pack yet). The CausVid 1.3B file
  works here too: preset **CausVid 1.3B** with cache **rolling**.
- Decoding 969 frames at 832{TIMES}480 keeps about 4.6 GB of images in RAM; *VAE Decode (Tiled)*
  lowers the VRAM the decode needs.
- {NO_CFG}
"""
    text = "\n".join(f"{t}: {prompt}" for t, prompt in ONE_MINUTE_TIMELINE)
    return Workflow(
        name="causvid_one_minute_three_prompts",
        nodes=[
            Node(1, "CausVidModelLoader", (0, 0), (400, 82),
                 {"ckpt_name": SELF_FORCING_13B, "weight_dtype": "default"}),
            Node(2, "CLIPLoader", (0, 140), (400, 106), {"clip_name": UMT5, "type": "wan", "device": "default"}),
            Node(3, "VAELoader", (0, 300), (400, 58), {"vae_name": WAN_VAE}),
            Node(4, "CausVidTextEncode", (440, 0), (480, 340), {"text": text}, {"clip": (2, 0)},
                 title="Prompt timeline (seconds: prompt)", color=POSITIVE[0], bgcolor=POSITIVE[1]),
            Node(5, "CausVidSampler", (960, 0), (340, 390),
                 {"width": 832, "height": 480, "length": 81, "preset": "Self-Forcing / LongLive 1.3B",
                  "custom_steps": "", "seed": 42, "num_fragments": 1, "fused_kernels": False,
                  "cache": "sink", "window": 12, "sink_frames": 3, "seconds": ONE_MINUTE_SECONDS},
                 {"model": (1, 0), "positive": (4, 0)}, control="randomize"),
            Node(6, "VAEDecode", (1340, 0), (220, 46), {}, {"samples": (5, 0), "vae": (3, 0)}),
            Node(7, "CreateVideo", (1340, 100), (270, 78), {"fps": 16.0}, {"images": (6, 0)}),
            Node(8, "SaveVideo", (1640, 0), (480, 420),
                 {"filename_prefix": "video/causvid_one_minute", "format": "auto", "codec": "auto"},
                 {"video": (7, 0)}),
        ],
        note=Note(9, (-500, 0), (460, 900), note),
        groups=[("Models", [1, 2, 3]), ("Prompt timeline", [4]), ("Sample 60 s", [5]),
                ("Decode and save", [6, 7, 8])],
        files=files,
    )


def _image_to_video() -> Workflow:
    files = {"diffusion_models": [CAUSVID_13B], "text_encoders": [UMT5], "vae": [WAN_VAE]}
    note = f"""## Image to video: CausVid 1.3B from a start image

*CausVid Sampler* continues a video from a start latent: here the VAE encoding of one image.

### Models (this pack never downloads weights)
- **`{CAUSVID_13B}`** {ARROW} `ComfyUI/models/diffusion_models/`: download `autoregressive_checkpoint/model.pt`
  from [tianweiy/CausVid](https://huggingface.co/tianweiy/CausVid) and **rename** it to `{CAUSVID_13B}`.
{DOWNLOAD_COMMON}
- The image: *Load Image* starts with ComfyUI's own `{START_IMAGE}` (in `ComfyUI/input/`); pick or
  upload your own there.

```
{_tree(files)}
```

### How it works
1. *Load Image* {ARROW} *Upscale Image* to the sampler's size, **832{TIMES}480**, crop *center* (keep the
   two sizes equal) {ARROW} *VAE Encode* with the Wan 2.1 VAE: **one latent frame**.
2. The sampler caches that frame before the first block; every block attends to it through the KV
   cache and the video continues from it. The returned latent **begins with the image**: 1 + 18 =
   19 latent frames = **73 frames** (4.6 s at 16 fps): length 81 is 21 latent frames, the image and
   then the 6 whole 3-frame blocks that fit after it.
3. Describe the image in the prompt, and the motion you want (the prompt here describes ComfyUI's
   `{START_IMAGE}`, a child's drawing).

### Be aware
None of the released chunk-wise checkpoints (CausVid, Self-Forcing, LongLive, LightX2V's CausVid 14B)
was trained to start from a single image: they are text-to-video models, used here zero-shot. The
first block attends to the image and the video continues from it, but how faithfully it follows
(colours, layout, identity) varies with the image, the prompt and the seed: try a few seeds.

- Preset **CausVid 1.3B**: steps 1000, 757, 522 (shift 8) and a clean pass per block.
- {NO_CFG}
"""
    return Workflow(
        name="causvid_image_to_video",
        nodes=[
            Node(1, "CausVidModelLoader", (0, 0), (400, 82),
                 {"ckpt_name": CAUSVID_13B, "weight_dtype": "default"}),
            Node(2, "CLIPLoader", (0, 140), (400, 106), {"clip_name": UMT5, "type": "wan", "device": "default"}),
            Node(3, "VAELoader", (0, 300), (400, 58), {"vae_name": WAN_VAE}),
            Node(4, "LoadImage", (440, 0), (320, 330), {"image": START_IMAGE}, title="Start image"),
            Node(5, "ImageScale", (440, 380), (320, 130),
                 {"upscale_method": "lanczos", "width": 832, "height": 480, "crop": "center"},
                 {"image": (4, 0)}),
            Node(6, "VAEEncode", (440, 560), (220, 46), {}, {"pixels": (5, 0), "vae": (3, 0)}),
            Node(7, "CausVidTextEncode", (800, 0), (440, 260), {
                "text": "A child's colourful drawing of a smiling girl with big yellow hair and a pink dress "
                        "comes to life on a green hill under a blue sky: she waves her outstretched arms, her "
                        "hair blows in the wind and the white clouds drift slowly by, hand-drawn style."},
                 {"clip": (2, 0)}, title="CausVid Text Encode (Prompt)", color=POSITIVE[0], bgcolor=POSITIVE[1]),
            Node(8, "CausVidSampler", (1280, 0), (340, 390),
                 {"width": 832, "height": 480, "length": 81, "preset": "CausVid 1.3B", "custom_steps": "",
                  "seed": 42, "num_fragments": 1, "fused_kernels": False},
                 {"model": (1, 0), "positive": (7, 0), "start_latent": (6, 0)}, control="randomize"),
            Node(9, "VAEDecode", (1660, 0), (220, 46), {}, {"samples": (8, 0), "vae": (3, 0)}),
            Node(10, "CreateVideo", (1660, 100), (270, 78), {"fps": 16.0}, {"images": (9, 0)}),
            Node(11, "SaveVideo", (1960, 0), (480, 420),
                 {"filename_prefix": "video/causvid_i2v", "format": "auto", "codec": "auto"}, {"video": (10, 0)}),
        ],
        note=Note(12, (-500, 0), (460, 820), note),
        groups=[("Models", [1, 2, 3]), ("Start image", [4, 5, 6]), ("Prompt", [7]), ("Sample", [8]),
                ("Decode and save", [9, 10, 11])],
        files=files,
        images=[START_IMAGE],
    )


TEN_MINUTES_SECONDS = 600.0
TEN_MINUTES_TIMELINE = [
    (0, "A small wooden sailboat leaves a quiet harbour at sunrise, calm water, fishing boats at anchor, gulls "
        "overhead, a slow aerial shot following the boat out to sea, cinematic."),
    (150, "The small wooden sailboat sails along a rocky green coastline under a bright midday sun, white waves "
          "breaking on the cliffs, the camera gliding beside it at water level."),
    (300, "The small wooden sailboat crosses the open sea as storm clouds gather, grey waves rising around it, "
          "rain starting to fall, the camera following it from above."),
    (450, "The small wooden sailboat drifts into a calm bay at sunset after the storm, golden light on the water, "
          "the lights of a village coming on along the shore, a slow wide shot."),
]
STREAM_PREFIX = "video/causvid_stream"


def _stream_ten_minutes() -> Workflow:
    files = {"diffusion_models": [SELF_FORCING_13B], "text_encoders": [UMT5], "vae": [WAN_VAE]}
    note = f"""## Ten minutes, streamed to an mp4: CausVid Stream to Video

A **10-minute** video from one run, written to disk **while it is generated**, at constant memory.

### Models (this pack never downloads weights)
{SELF_FORCING_DOWNLOAD}

```
{_tree(files)}
```

### What streaming does
- *CausVid Stream to Video* samples like *CausVid Sampler* and, as soon as a 3-latent-frame block is
  finished, **decodes it with the Wan 2.1 VAE and appends it to an mp4** (H.264, 16 fps) while the next
  block samples. The VAE keeps its causal cache from block to block, so the frames are those of one
  whole-video decode: no seams.
- **Memory stays constant** however long the video: no latent video, no decoded frames pile up in RAM
  (only the couple of blocks on their way to the file), and the sink cache keeps the sampler's memory
  flat too.
- **Cancel** stops it at any time and keeps a **playable file** with every block finished so far.
- The file: **`ComfyUI/output/video/`** (`filename_prefix` `{STREAM_PREFIX}`, numbered like Save Video's),
  shown on the node when the run ends. Once the first block is written, the progress preview shows the
  newest frame in the file.
- No *VAE Decode* / *Save Video* here: the node saves. Its `state` output can continue the video with
  another *CausVid Stream to Video* (its `state` input), into a new file.

### Why this node
*CausVid Sampler* + *VAE Decode* would hold all 10 minutes of frames at once: 9609 frames at
832{TIMES}480 need about **46 GB of RAM** for the decoded images alone (before *Create Video* / *Save
Video* encode them). Streaming writes each block and forgets it.

### Settings
- **seconds 600**: blocks are added until the video lasts 10 min at 16 fps: 2403 latent frames =
  **9609 frames** (600.6 s), 801 blocks. `length` and `num_fragments` no longer decide the length.
- **A prompt timeline**: one `seconds: prompt` line per prompt in *CausVid Text Encode* (`0:`, `150:`,
  `300:`, `450:`). A prompt takes over at the first block that starts at or after its time, with
  LongLive's KV re-cache at each switch.
- Preset **Self-Forcing / LongLive 1.3B** (steps 1000, 750, 500, 250, shift 5, warped, clean pass) and
  **cache sink, window 12, sink_frames 3**: the first 3 latent frames plus the 9 most recent ones, so
  every block costs the same (see the one-minute example for the details).
- Self-Forcing was trained on 5 s clips: expect drift over 10 minutes. The CausVid 1.3B file works here
  too: preset **CausVid 1.3B** with cache **rolling**.
- CausVid models are distilled: no negative prompt, no CFG, a few steps per 3-latent-frame block.
"""
    text = "\n".join(f"{t}: {prompt}" for t, prompt in TEN_MINUTES_TIMELINE)
    return Workflow(
        name="causvid_stream_ten_minutes",
        nodes=[
            Node(1, "CausVidModelLoader", (0, 0), (400, 82),
                 {"ckpt_name": SELF_FORCING_13B, "weight_dtype": "default"}),
            Node(2, "CLIPLoader", (0, 140), (400, 106), {"clip_name": UMT5, "type": "wan", "device": "default"}),
            Node(3, "VAELoader", (0, 300), (400, 58), {"vae_name": WAN_VAE}),
            Node(4, "CausVidTextEncode", (440, 0), (480, 400), {"text": text}, {"clip": (2, 0)},
                 title="Prompt timeline (seconds: prompt)", color=POSITIVE[0], bgcolor=POSITIVE[1]),
            Node(5, "CausVidStreamToVideo", (960, 0), (520, 760),
                 {"filename_prefix": STREAM_PREFIX, "width": 832, "height": 480, "length": 81,
                  "preset": "Self-Forcing / LongLive 1.3B", "custom_steps": "", "seed": 42, "num_fragments": 1,
                  "fused_kernels": False, "cache": "sink", "window": 12, "sink_frames": 3,
                  "seconds": TEN_MINUTES_SECONDS},
                 {"model": (1, 0), "positive": (4, 0), "vae": (3, 0)}, control="randomize"),
        ],
        note=Note(6, (-500, 0), (460, 1040), note),
        groups=[("Models", [1, 2, 3]), ("Prompt timeline", [4]), ("Sample 10 min, stream to mp4", [5])],
        files=files,
    )


WORKFLOWS: dict[str, Workflow] = {w.name: w for w in (_t2v_13b(), _lightx2v_14b(), _long_video(), _one_minute(),
                                                      _image_to_video(), _stream_ten_minutes())}


# -------------------------------------------------------------------------------------------------
# Schemas (from /object_info)


@dataclass(frozen=True)
class Slot:
    name: str
    type: str
    widget: bool
    optional: bool
    options: dict


def input_slots(schema: dict) -> list[Slot]:
    """The node's inputs in schema order (required, then optional), as the frontend builds them."""
    order = schema.get("input_order") or {k: list(v) for k, v in schema["input"].items()}
    slots = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = schema["input"][section][name]
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(kind, list):  # V1 combo: the option list itself
                opts = {**opts, "options": kind}
                kind = "COMBO"
            widget = kind in WIDGET_TYPES and not opts.get("forceInput")
            slots.append(Slot(name, kind, widget, section == "optional", opts))
    return slots


def widget_slots(schema: dict) -> list[Slot]:
    return [s for s in input_slots(schema) if s.widget]


def socket_slots(schema: dict) -> list[Slot]:
    return [s for s in input_slots(schema) if not s.widget]


def widget_value(node: Node, slot: Slot) -> Any:
    if slot.name in node.widgets:
        return node.widgets[slot.name]
    if "default" in slot.options:
        return slot.options["default"]
    raise ValueError(f"node {node.id} ({node.type}): no value for widget '{slot.name}' and no default")


# -------------------------------------------------------------------------------------------------
# Generation


def build_api(wf: Workflow, object_info: dict) -> dict:
    """The API-format prompt, as the frontend's "Export (API)" writes it."""
    prompt = {}
    for node in wf.nodes:
        schema = object_info[node.type]
        inputs: dict[str, Any] = {}
        for slot in input_slots(schema):
            if slot.widget:
                inputs[slot.name] = widget_value(node, slot)
            elif slot.name in node.links:
                src, out = node.links[slot.name]
                inputs[slot.name] = [str(src), out]
        prompt[str(node.id)] = {"inputs": inputs, "class_type": node.type,
                                "_meta": {"title": node.title or schema["display_name"]}}
    return prompt


def _topological_order(wf: Workflow) -> dict[int, int]:
    deps = {n.id: {src for src, _ in n.links.values()} for n in wf.nodes}
    deps[wf.note.id] = set()
    order: dict[int, int] = {}
    pending = sorted(deps)
    while pending:
        ready = [i for i in pending if deps[i] <= set(order)]
        if not ready:
            raise ValueError(f"{wf.name}: the graph has a cycle")
        # the note first, then by id (LiteGraph computes something similar)
        for i in sorted(ready, key=lambda i: (i != wf.note.id, i)):
            order[i] = len(order)
        pending = [i for i in pending if i not in order]
    return order


def _properties(node: Node, schema: dict) -> dict:
    props: dict[str, Any] = {"Node name for S&R": node.type}
    if schema.get("python_module", "").startswith("custom_nodes."):
        props.update({"cnr_id": PACK_ID, "ver": PACK_VERSION})
    else:
        props.update({"cnr_id": "comfy-core", "ver": COMFY_VERSION})
    models = [MODEL_LINKS[v] for v in node.widgets.values() if isinstance(v, str) and v in MODEL_LINKS]
    if models:
        props["models"] = models
    return props


def build_ui(wf: Workflow, object_info: dict) -> dict:
    """The UI (LiteGraph, schema version 0.4) workflow the editor opens."""
    link_rows = []  # [id, from_node, from_slot, to_node, to_slot, type]
    by_id = {n.id: n for n in wf.nodes}
    for node in wf.nodes:
        sockets = socket_slots(object_info[node.type])
        for to_slot, slot in enumerate(sockets):
            if slot.name in node.links:
                src, out = node.links[slot.name]
                out_type = object_info[by_id[src].type]["output"][out]
                link_rows.append([len(link_rows) + 1, src, out, node.id, to_slot, out_type])
    order = _topological_order(wf)
    nodes = []
    for node in wf.nodes:
        schema = object_info[node.type]
        inputs = []
        for index, slot in enumerate(socket_slots(schema)):
            link = next((row[0] for row in link_rows if row[3] == node.id and row[4] == index), None)
            entry = {"localized_name": slot.name, "name": slot.name, "type": slot.type}
            if slot.optional:
                entry["shape"] = 7  # LiteGraph's hollow dot for optional inputs
            entry["link"] = link
            inputs.append(entry)
        outputs = []
        for index, (out_type, out_name) in enumerate(zip(schema["output"], schema["output_name"])):
            links = [row[0] for row in link_rows if row[1] == node.id and row[2] == index]
            outputs.append({"localized_name": out_name, "name": out_name, "type": out_type,
                            "slot_index": index, "links": links})
        values: list[Any] = []
        for slot in widget_slots(schema):
            values.append(widget_value(node, slot))
            if slot.options.get("control_after_generate"):
                if node.control not in ("fixed", "increment", "decrement", "randomize"):
                    raise ValueError(f"node {node.id}: give control= for the '{slot.name}' widget")
                values.append(node.control)
        if any(slot.options.get("image_upload") for slot in widget_slots(schema)):
            values.append(UPLOAD_BUTTON_VALUE)
        entry: dict[str, Any] = {"id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size),
                                 "flags": {}, "order": order[node.id], "mode": 0, "inputs": inputs,
                                 "outputs": outputs}
        if node.title:
            entry["title"] = node.title
        entry["properties"] = _properties(node, schema)
        entry["widgets_values"] = values
        if node.color:
            entry["color"], entry["bgcolor"] = node.color, node.bgcolor
        nodes.append(entry)
    note = wf.note
    nodes.insert(0, {"id": note.id, "type": "MarkdownNote", "pos": list(note.pos), "size": list(note.size),
                     "flags": {}, "order": order[note.id], "mode": 0, "inputs": [], "outputs": [],
                     "title": note.title, "properties": {}, "widgets_values": [note.text],
                     "color": "#432", "bgcolor": "#653"})
    groups = []
    for gid, (title, members) in enumerate(wf.groups, start=1):
        boxes = [(by_id[i].pos, by_id[i].size) for i in members]
        x0 = min(p[0] for p, _ in boxes) - 10
        y0 = min(p[1] for p, _ in boxes) - 30 - 50  # node title bar (30) + group title (50)
        x1 = max(p[0] + s[0] for p, s in boxes) + 10
        y1 = max(p[1] + s[1] for p, s in boxes) + 10
        groups.append({"id": gid, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": "#3f789e",
                       "font_size": 24, "flags": {}})
    all_ids = [n.id for n in wf.nodes] + [note.id]
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PACK_ID}/example_workflows/{wf.name}")),
        "revision": 0,
        "last_node_id": max(all_ids),
        "last_link_id": len(link_rows),
        "nodes": nodes,
        "links": link_rows,
        "groups": groups,
        "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [560, 140]}, "frontendVersion": FRONTEND_VERSION},
        "version": 0.4,
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def generated_files(object_info: dict) -> dict[Path, str]:
    files = {}
    for name, wf in WORKFLOWS.items():
        files[UI_DIR / f"{name}.json"] = dumps(build_ui(wf, object_info))
        files[API_DIR / f"{name}.json"] = dumps(build_api(wf, object_info))
    return files


# -------------------------------------------------------------------------------------------------
# Loading and tiny stand-ins (tests/test_e2e_nodes.py, scripts/run_example.py)


def load_api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text())


def load_ui(name: str) -> dict:
    return json.loads((UI_DIR / f"{name}.json").read_text())


TINY_TEXT_DIM = 64
"""Width of the tiny umT5 (CausVidTestTinyCLIP) and text_dim of the tiny causal checkpoints."""


def tiny_config():
    from causal.config import WanConfig

    return WanConfig(dim=128, ffn_dim=256, num_layers=2, text_dim=TINY_TEXT_DIM)


STANDIN_VAE_STD = 0.2
"""Weight scale of the stand-in Wan VAE: large enough that its frames show the latents moving."""

STANDIN_LAYOUTS = {CAUSVID_13B: "causvid", LIGHTX2V_14B: "lightx2v_safetensors", SELF_FORCING_13B: "self_forcing"}
"""Checkpoint file -> the layout its family ships in (causal.synthetic.LAYOUTS)."""

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


def write_standin_models(models_dir: str | Path, seed: int = 0, input_dir: str | Path | None = None) -> list[Path]:
    """Tiny random-weight files under the exact names the workflows use (existing files are kept):
    the causal checkpoints in their families' layouts and a tiny Wan 2.1 VAE. The umT5 has no file
    stand-in: `standin_prompt` swaps CLIPLoader for the test pack's CausVidTestTinyCLIP.
    The images the workflows load (LoadImage) get a small stand-in PNG in `input_dir` (default: the
    `input` folder beside `models_dir`, as in a ComfyUI --base-directory)."""
    import torch

    from causal.synthetic import random_state_dict, write_checkpoint
    from comfyui_harness import make_tiny_wan_vae

    models_dir = Path(models_dir)
    written = []
    state_dict = None
    for name, layout in STANDIN_LAYOUTS.items():
        path = models_dir / "diffusion_models" / name
        if not path.exists():
            if state_dict is None:
                state_dict = random_state_dict(tiny_config(), dtype=torch.bfloat16, seed=seed)
            tmp = path.with_name(path.stem + ".partial" + path.suffix)
            write_checkpoint(state_dict, tmp, layout)
            tmp.replace(path)
            written.append(path)
    vae = models_dir / "vae" / WAN_VAE
    if not vae.exists():
        # std 0.2: the random decoder renders latent structure as visible colour (0.02 would give flat grey)
        written.append(make_tiny_wan_vae(vae, seed=seed, std=STANDIN_VAE_STD))
    input_dir = models_dir.parent / "input" if input_dir is None else Path(input_dir)
    for name in sorted({image for wf in WORKFLOWS.values() for image in wf.images}):
        if not (input_dir / name).exists():
            written.append(write_standin_image(input_dir / name))
    return written


_TIMED_LINE = re.compile(r"^(\s*)(\d+(?:\.\d*)?|\.\d+)(\s*s?\s*:.*)$")
"""A `seconds: prompt` line of CausVid Text Encode (the pattern of causal.text.split_timed_prompts)."""


def _rescale_timeline(text: str, scale: float) -> str:
    lines = []
    for line in text.splitlines():
        m = _TIMED_LINE.match(line)
        lines.append(f"{m.group(1)}{float(m.group(2)) * scale:g}{m.group(3)}" if m else line)
    return "\n".join(lines)


def standin_prompt(api: dict, *, width: int = 64, height: int = 48, length: int | None = 21,
                   clip_width: int = TINY_TEXT_DIM, seconds: float | None = None) -> dict:
    """A copy of an API prompt for the tiny stand-ins: every CLIPLoader becomes CausVidTestTinyCLIP
    (same node id, so links still hold), every CausVidSampler, CausVidStreamToVideo and ImageScale gets
    the small size. `seconds` shortens a sampling node that is set to a length in seconds; the timed
    prompt lines of the CausVid Text Encode feeding it are scaled by the same factor, so the timeline
    keeps its shape."""
    prompt = json.loads(json.dumps(api))
    for node in prompt.values():
        if node["class_type"] == "CLIPLoader":
            node["class_type"] = "CausVidTestTinyCLIP"
            node["inputs"] = {"width": clip_width, "seed": 0}
            node["_meta"] = {"title": "CausVid Test Tiny umT5 CLIP (stand-in for CLIPLoader)"}
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


FRAMES_PER_BLOCK = 3
FPS = 16
SAMPLING_NODES = ("CausVidSampler", "CausVidStreamToVideo")
"""Nodes that sample from their own widgets (CausVid Stream to Video takes CausVid Sampler's widgets and
writes the video itself)."""


def frames_for_seconds(seconds: float, start_frames: int = 0) -> int:
    """Latent frames a sampler generates for a video of `seconds` (start latent included): the video
    frames ceil(s * 16) take ceil((v - 1) / 4) + 1 latent frames; the start frames are given, the rest
    is generated in whole 3-frame blocks, at least one. (Written out here, independently of
    causal.prompts, so that the frame-count checks test the node.)"""
    video = math.ceil(seconds * FPS)
    total = math.ceil((video - 1) / 4) + 1
    generated = max(total - start_frames, 1)
    return math.ceil(generated / FRAMES_PER_BLOCK) * FRAMES_PER_BLOCK


def _images_of(prompt: dict, node_id: str) -> int:
    """Images (batch size) an IMAGE output holds."""
    node = prompt[node_id]
    kind, inputs = node["class_type"], node["inputs"]
    if kind == "LoadImage":
        return 1  # a still image (an animated file would give more)
    if kind == "EmptyImage":
        return inputs["batch_size"]
    if kind == "ImageScale":
        return _images_of(prompt, inputs["image"][0])
    raise NotImplementedError(f"images of a {kind}")


def start_frames_of(prompt: dict, link: Any) -> int:
    """Latent frames of a sampler's `start_latent` (0 when none is linked): a Wan VAE Encode of N images
    gives 1 + (N - 1) // 4 (one image: 1), an empty video latent of L frames (L - 1) // 4 + 1."""
    if not isinstance(link, list):
        return 0
    node = prompt[link[0]]
    kind, inputs = node["class_type"], node["inputs"]
    if kind == "VAEEncode":
        return 1 + (_images_of(prompt, inputs["pixels"][0]) - 1) // 4
    if kind == "EmptyHunyuanLatentVideo":
        return (inputs["length"] - 1) // 4 + 1
    raise NotImplementedError(f"start latent from a {kind}")


def latent_frames_of(prompt: dict, node_id: str, output: int = 0) -> int:
    """Latent frames a CausVidSampler / CausVidContinue output holds, from the prompt's settings; for a
    CausVidStreamToVideo, the latent frames of the video it writes (its only output is a state).

    Sampler: the start latent's S frames (when linked; the output begins with them), then the new ones:
    with `seconds` > 0, whole blocks up to that length; else a first fragment of the whole blocks of
    F - S (F = (length - 1) / 4 + 1), each later fragment F - 3 more. Continue: `num_fragments` x
    (F - 3) new frames (or whole blocks for its `seconds`); its `video` output (slot 1) adds them to
    everything before it. Stream to Video counts as the sampler does (its file begins with the start
    latent)."""
    node = prompt[node_id]
    inputs = node["inputs"]
    if node["class_type"] == "CausVidStreamToVideo":
        output = 0
    if node["class_type"] in SAMPLING_NODES:
        if isinstance(inputs.get("state"), list):
            raise NotImplementedError("sampler continued from a state")
        frames = (inputs["length"] - 1) // 4 + 1
        start = start_frames_of(prompt, inputs.get("start_latent"))
        if inputs.get("seconds", 0) > 0:
            new = frames_for_seconds(inputs["seconds"], start)
        else:
            first = (frames - start) // FRAMES_PER_BLOCK * FRAMES_PER_BLOCK
            new = first + (frames - FRAMES_PER_BLOCK) * (inputs["num_fragments"] - 1)
        return start + new if output in (0, 1) else 0
    if node["class_type"] == "CausVidContinue":
        src, _ = inputs["state"]
        if inputs.get("seconds", 0) > 0:
            new = frames_for_seconds(inputs["seconds"])
        else:
            frames = (_root_length(prompt, src) - 1) // 4 + 1
            new = (frames - FRAMES_PER_BLOCK) * inputs["num_fragments"]
        return new if output == 0 else latent_frames_of(prompt, src, 1) + new
    raise ValueError(f"node {node_id} is a {node['class_type']}, not a CausVid sampler")


def new_latent_frames_of(prompt: dict, node_id: str) -> int:
    """Latent frames a CausVidSampler / CausVidContinue / CausVidStreamToVideo generates (its start latent
    not counted)."""
    inputs = prompt[node_id]["inputs"]
    start = start_frames_of(prompt, inputs.get("start_latent")) if prompt[node_id]["class_type"] in SAMPLING_NODES \
        else 0
    return latent_frames_of(prompt, node_id, 0) - start


def _root_length(prompt: dict, node_id: str) -> int:
    node = prompt[node_id]
    if node["class_type"] in SAMPLING_NODES:
        return node["inputs"]["length"]
    return _root_length(prompt, node["inputs"]["state"][0])


def decoded_frames(prompt: dict, decode_id: str) -> int:
    """Frames a VAEDecode of a CausVid latent yields: 1 + 4 (T - 1); given a CausVidStreamToVideo, the
    frames of the mp4 it writes (the same count: one whole decode of its latents)."""
    if prompt[decode_id]["class_type"] == "CausVidStreamToVideo":
        return 1 + 4 * (latent_frames_of(prompt, decode_id) - 1)
    src, out = prompt[decode_id]["inputs"]["samples"]
    return 1 + 4 * (latent_frames_of(prompt, src, out) - 1)


def find_nodes(prompt: dict, class_type: str) -> list[str]:
    return [nid for nid, node in prompt.items() if node["class_type"] == class_type]


# -------------------------------------------------------------------------------------------------
# Command line


def fetch_object_info() -> dict:
    """Start a headless ComfyUI with the pack (scripts/setup.sh must have run) and read /object_info."""
    sys.path[:0] = [str(REPO_ROOT / "tests"), str(REPO_ROOT)]
    from comfyui_harness import ComfyServer

    with ComfyServer() as server:
        return server.object_info()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    args = parser.parse_args(argv)
    files = generated_files(fetch_object_info())
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"out of date: {p.relative_to(REPO_ROOT)}")
        if not stale:
            print("all example workflows up to date")
        return 1 if stale else 0
    for p, text in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        if p in stale:
            p.write_text(text)
            print(f"wrote {p.relative_to(REPO_ROOT)}")
    if not stale:
        print("all example workflows up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
