"""The pack's example workflows, defined once, and the helpers that run them with tiny stand-ins.

Every example exists twice:

* ``example_workflows/<name>.json``: the UI workflow (LiteGraph JSON, what the ComfyUI editor opens and
  what *Workflow → Browse Templates* lists for this pack);
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

REPACKAGED = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
MODEL_LINKS = {  # the frontend's "missing models" dialog reads these from node properties
    UMT5: {"name": UMT5, "url": f"{REPACKAGED}/text_encoders/{UMT5}", "directory": "text_encoders"},
    WAN_VAE: {"name": WAN_VAE, "url": f"{REPACKAGED}/vae/{WAN_VAE}", "directory": "vae"},
}

FILE_WIDGETS = {
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("CausVidModelLoader", "ckpt_name"): "diffusion_models",
}
"""(node type, widget) -> models folder: combos listing files, which a fresh install may not have."""

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


POSITIVE = ("#232", "#353")  # the core templates' green prompt nodes

DOWNLOAD_COMMON = f"""\
- **`{UMT5}`** → `ComfyUI/models/text_encoders/` (umT5-XXL, from
  [Comfy-Org/Wan_2.1_ComfyUI_repackaged](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged),
  `split_files/text_encoders/`)
- **`{WAN_VAE}`** → `ComfyUI/models/vae/` (same repository, `split_files/vae/`)"""

NO_CFG = ("CausVid models are distilled: no negative prompt, no CFG, a few steps per 3-latent-frame "
          "block. The preview shows each block as it is denoised.")


def _t2v_13b() -> Workflow:
    note = f"""## CausVid 1.3B: text to video

Autoregressive (block-causal, KV-cached) Wan2.1 1.3B from **CausVid** (Yin et al., CVPR 2025).

### Models (this pack never downloads weights)
- **`{CAUSVID_13B}`** → `ComfyUI/models/diffusion_models/`: download `autoregressive_checkpoint/model.pt`
  from [tianweiy/CausVid](https://huggingface.co/tianweiy/CausVid) and **rename** it to
  `{CAUSVID_13B}`. The loader reads the `.pt` with torch's safe loader (no pickled code runs) and takes
  its `generator` weights.
{DOWNLOAD_COMMON}

```
ComfyUI/models/
├── diffusion_models/{CAUSVID_13B}
├── text_encoders/{UMT5}
└── vae/{WAN_VAE}
```

### Settings
- 832×480, **length 81** = 21 latent frames = 5 s at 16 fps (the trained length); lengths are 1 + 4·(3k).
- Preset **CausVid 1.3B**: steps 1000, 757, 522 (shift 8) and a clean pass per block.
- One prompt per line in *CausVid Text Encode*: line N drives fragment N (`num_fragments`).
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
            Node(5, "CausVidSampler", (920, 0), (340, 290),
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
- **`{LIGHTX2V_14B}`** → `ComfyUI/models/diffusion_models/`: download LightX2V's `causal_model.safetensors`
  from [lightx2v/Wan2.1-T2V-14B-CausVid](https://huggingface.co/lightx2v/Wan2.1-T2V-14B-CausVid) and
  **rename** it to `{LIGHTX2V_14B}` (their `causal_model.pt` works too, under a `.pt` name).
{DOWNLOAD_COMMON}

```
ComfyUI/models/
├── diffusion_models/{LIGHTX2V_14B}
├── text_encoders/{UMT5}
└── vae/{WAN_VAE}
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
            Node(5, "CausVidSampler", (920, 0), (340, 290),
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
- **`{CAUSVID_13B}`** → `ComfyUI/models/diffusion_models/`: download `autoregressive_checkpoint/model.pt`
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
            Node(5, "CausVidSampler", (940, 0), (340, 290),
                 {"width": 832, "height": 480, "length": 81, "preset": "CausVid 1.3B", "custom_steps": "",
                  "seed": 42, "num_fragments": len(lines), "fused_kernels": False},
                 {"model": (1, 0), "positive": (4, 0)}, control="fixed"),
            Node(6, "CausVidTextEncode", (440, 360), (460, 160), {"text": more}, {"clip": (2, 0)},
                 title="Prompt for the continuation", color=POSITIVE[0], bgcolor=POSITIVE[1]),
            Node(7, "CausVidContinue", (1320, 0), (300, 120), {"num_fragments": 1},
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


WORKFLOWS: dict[str, Workflow] = {w.name: w for w in (_t2v_13b(), _lightx2v_14b(), _long_video())}


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


STANDIN_LAYOUTS = {CAUSVID_13B: "causvid", LIGHTX2V_14B: "lightx2v_safetensors"}
"""Checkpoint file -> the layout its family ships in (causal.synthetic.LAYOUTS)."""


def write_standin_models(models_dir: str | Path, seed: int = 0) -> list[Path]:
    """Tiny random-weight files under the exact names the workflows use (existing files are kept):
    the causal checkpoints in their families' layouts and a tiny Wan 2.1 VAE. The umT5 has no file
    stand-in: `standin_prompt` swaps CLIPLoader for the test pack's CausVidTestTinyCLIP."""
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
        written.append(make_tiny_wan_vae(vae, seed=seed))
    return written


def standin_prompt(api: dict, *, width: int = 64, height: int = 48, length: int | None = 21,
                   clip_width: int = TINY_TEXT_DIM) -> dict:
    """A copy of an API prompt for the tiny stand-ins: every CLIPLoader becomes CausVidTestTinyCLIP
    (same node id, so links still hold) and every CausVidSampler gets the small size."""
    prompt = json.loads(json.dumps(api))
    for node in prompt.values():
        if node["class_type"] == "CLIPLoader":
            node["class_type"] = "CausVidTestTinyCLIP"
            node["inputs"] = {"width": clip_width, "seed": 0}
            node["_meta"] = {"title": "CausVid Test Tiny umT5 CLIP (stand-in for CLIPLoader)"}
        elif node["class_type"] == "CausVidSampler":
            node["inputs"]["width"], node["inputs"]["height"] = width, height
            if length is not None:
                node["inputs"]["length"] = length
    return prompt


def latent_frames_of(prompt: dict, node_id: str, output: int = 0) -> int:
    """Latent frames a CausVidSampler / CausVidContinue output holds, from the prompt's settings:
    a fragment of F latent frames (F = (length − 1)/4 + 1), each later one F − 3 more; Continue's
    `video` output (slot 1) adds its fragments to everything before it."""
    node = prompt[node_id]
    inputs = node["inputs"]
    if node["class_type"] == "CausVidSampler":
        frames = (inputs["length"] - 1) // 4 + 1
        total = frames + (frames - 3) * (inputs["num_fragments"] - 1)
        if isinstance(inputs.get("state"), list):
            raise NotImplementedError("sampler continued from a state")
        return total if output in (0, 1) else 0
    if node["class_type"] == "CausVidContinue":
        src, _ = inputs["state"]
        frames = (_root_length(prompt, src) - 1) // 4 + 1
        new = (frames - 3) * inputs["num_fragments"]
        return new if output == 0 else latent_frames_of(prompt, src, 1) + new
    raise ValueError(f"node {node_id} is a {node['class_type']}, not a CausVid sampler")


def _root_length(prompt: dict, node_id: str) -> int:
    node = prompt[node_id]
    if node["class_type"] == "CausVidSampler":
        return node["inputs"]["length"]
    return _root_length(prompt, node["inputs"]["state"][0])


def decoded_frames(prompt: dict, decode_id: str) -> int:
    """Frames a VAEDecode of a CausVid latent yields: 1 + 4·(T − 1)."""
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
