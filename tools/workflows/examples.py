"""The pack's example workflows, defined once: their nodes, layout, notes and the files they need. The UI
files (example_workflows/) and their API-format twins (tools/workflows/api/) are generated from these."""

from __future__ import annotations

from pathlib import Path

from tools.workflows.files import (CAUSVID_13B, KREA_14B, LIGHTX2V_14B, LONGLIVE2_5B,
                                   REWARD_FORCING_13B, SELF_FORCING_13B, START_IMAGE, UMT5, WAN22_VAE, WAN_VAE)
from tools.workflows.graph import API_DIR, UI_DIR, Node, Note, Workflow, build_api, build_ui, dumps

POSITIVE = ("#232", "#353")  # the core templates' green prompt nodes

DOWNLOAD_COMMON = f"""\
- **`{UMT5}`** \u2192 `ComfyUI/models/text_encoders/` (umT5-XXL, from
  [Comfy-Org/Wan_2.1_ComfyUI_repackaged](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged),
  `split_files/text_encoders/`)
- **`{WAN_VAE}`** \u2192 `ComfyUI/models/vae/` (same repository, `split_files/vae/`)"""

NO_CFG = ("CausVid models are distilled: no negative prompt, no CFG, a few steps per 3-latent-frame "
          "block. The preview shows each block as it is denoised.")

# ASCII source for the notes: an arrow, a multiplication sign
ARROW = "\u2192"
TIMES = "\u00d7"

SAMPLER = {"width": 832, "height": 480, "length": 81, "custom_steps": "", "seed": 42, "num_fragments": 1,
           "speed": "fast"}
"""The sampling widgets every example starts from (832x480, 81 frames, one fragment)."""
LONG_RUN = {"preset": "Self-Forcing / LongLive 1.3B", "cache": "sink", "window": 12, "sink_frames": 3}
"""The videos in seconds: Self-Forcing with LongLive's inference cache (the first 3 latent frames and the 9 most
recent)."""


def _files(checkpoint: str, vae: str = WAN_VAE) -> dict[str, list[str]]:
    return {"diffusion_models": [checkpoint], "text_encoders": [UMT5], "vae": [vae]}


def _tree(files: dict[str, list[str]]) -> str:
    """The models/ folder drawing of the notes."""
    rows = [(folder, name) for folder, names in files.items() for name in names]
    lines = ["ComfyUI/models/"]
    for i, (folder, name) in enumerate(rows):
        branch = "\u2514\u2500\u2500 " if i == len(rows) - 1 else "\u251c\u2500\u2500 "
        lines.append(f"{branch}{folder}/{name}")
    return "\n".join(lines)


def _loaders(checkpoint: str, vae: str = WAN_VAE) -> list[Node]:
    """Nodes 1-3 of every example (the "Models" group): the causal checkpoint, the umT5 and the Wan VAE (2.1; 2.2
    for LongLive 2.0)."""
    return [Node(1, "CausVidModelLoader", (0, 0), (400, 82), {"ckpt_name": checkpoint, "weight_dtype": "default"}),
            Node(2, "CLIPLoader", (0, 140), (400, 106), {"clip_name": UMT5, "type": "wan", "device": "default"}),
            Node(3, "VAELoader", (0, 300), (400, 58), {"vae_name": vae})]


def _prompt(node_id: int, pos: tuple[float, float], size: tuple[float, float], text: str,
            title: str = "CausVid Text Encode (Prompt)") -> Node:
    """A green CausVid Text Encode on the umT5 (node 2)."""
    return Node(node_id, "CausVidTextEncode", pos, size, {"text": text}, {"clip": (2, 0)}, title=title,
                color=POSITIVE[0], bgcolor=POSITIVE[1])


def _timeline_prompt(timeline: list[tuple[float, str]], height: float) -> Node:
    """Node 4: a prompt timeline, one `seconds: prompt` line per (time, prompt)."""
    text = "\n".join(f"{t}: {prompt}" for t, prompt in timeline)
    return _prompt(4, (440, 0), (480, height), text, title="Prompt timeline (seconds: prompt)")


def _decode_and_save(first_id: int, x: float, samples: tuple[int, int], prefix: str) -> list[Node]:
    """VAE Decode (with the VAE of node 3) -> Create Video at 16 fps -> Save Video, from column x."""
    return [Node(first_id, "VAEDecode", (x, 0), (220, 46), {}, {"samples": samples, "vae": (3, 0)}),
            Node(first_id + 1, "CreateVideo", (x, 100), (270, 78), {"fps": 16.0}, {"images": (first_id, 0)}),
            Node(first_id + 2, "SaveVideo", (x + 300, 0), (480, 420),
                 {"filename_prefix": prefix, "format": "auto", "codec": "auto"}, {"video": (first_id + 1, 0)})]


def _text_to_video(name: str, files: dict[str, list[str]], text: str, sampler: dict, prefix: str,
                   note: Note) -> Workflow:
    """The plain text-to-video graph: the loaders, one prompt, CausVid Sampler (`sampler` over SAMPLER), then
    decode and save."""
    return Workflow(
        name=name,
        nodes=[
            *_loaders(files["diffusion_models"][0]),
            _prompt(4, (440, 0), (440, 260), text),
            Node(5, "CausVidSampler", (920, 0), (340, 390), {**SAMPLER, **sampler},
                 {"model": (1, 0), "positive": (4, 0)}, control="randomize"),
            *_decode_and_save(6, 1300, (5, 0), prefix),
        ],
        note=note,
        groups=[("Models", [1, 2, 3]), ("Prompt", [4]), ("Sample", [5]), ("Decode and save", [6, 7, 8])],
        files=files,
    )


def _t2v_13b() -> Workflow:
    files = _files(CAUSVID_13B)
    note = f"""## CausVid 1.3B: text to video

Autoregressive (block-causal, KV-cached) Wan2.1 1.3B from **CausVid** (Yin et al., CVPR 2025).

### Models (this pack never downloads weights)
- **`{CAUSVID_13B}`** \u2192 `ComfyUI/models/diffusion_models/`: download `autoregressive_checkpoint/model.pt`
  from [tianweiy/CausVid](https://huggingface.co/tianweiy/CausVid) and **rename** it to
  `{CAUSVID_13B}`. The loader reads the `.pt` with torch's safe loader (no pickled code runs) and takes
  its `generator` weights.
{DOWNLOAD_COMMON}

```
{_tree(files)}
```

### Settings
- 832×480, **length 81** = 21 latent frames = 5 s at 16 fps (the trained length); lengths are 1 + 4·(3k).
- Preset **CausVid 1.3B**: steps 1000, 757, 522 (shift 8) and a clean pass per block.
- One prompt per line in *CausVid Text Encode*: line N drives fragment N (`num_fragments`).
- `cache`, `window`, `sink_frames` and `seconds` keep their defaults: the preset's cache policy, and
  `length` x `num_fragments` decide the length (see the one-minute example for a video in seconds).
- {NO_CFG}
"""
    text = ("A red fox trots through fresh snow in a sunlit birch forest, its breath steaming in the cold air, the "
            "camera tracking beside it at ground level, cinematic, detailed fur.")
    return _text_to_video("causvid_1.3b_t2v", files, text, {"preset": "CausVid 1.3B"}, "video/causvid_1.3b",
                          Note(9, (-500, 0), (460, 620), note))


def _lightx2v_14b() -> Workflow:
    files = _files(LIGHTX2V_14B)
    note = f"""## LightX2V CausVid 14B: 3 fragments (225 frames)

Wan2.1 14B made block-causal by CausVid training, as released by **LightX2V**.

### Models (this pack never downloads weights)
- **`{LIGHTX2V_14B}`** \u2192 `ComfyUI/models/diffusion_models/`: download LightX2V's `causal_model.safetensors`
  from [lightx2v/Wan2.1-T2V-14B-CausVid](https://huggingface.co/lightx2v/Wan2.1-T2V-14B-CausVid) and
  **rename** it to `{LIGHTX2V_14B}` (their `causal_model.pt` works too, under a `.pt` name).
{DOWNLOAD_COMMON}

```
{_tree(files)}
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
    text = ("A sailboat glides across a calm turquoise bay at golden hour, gentle waves sparkling, seagulls circling "
            "the mast, a slow aerial shot that drifts around the boat.")
    return _text_to_video("causvid_14b_lightx2v_3_fragments", files, text,
                          {"preset": "CausVid-Plus 14B", "num_fragments": 3}, "video/causvid_14b",
                          Note(9, (-500, 0), (460, 660), note))


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
            *_loaders(CAUSVID_13B),
            _prompt(4, (440, 0), (460, 280), "\n".join(lines), title="Prompts, one line per fragment"),
            Node(5, "CausVidSampler", (940, 0), (340, 390),
                 {**SAMPLER, "preset": "CausVid 1.3B", "num_fragments": len(lines)},
                 {"model": (1, 0), "positive": (4, 0)}, control="fixed"),
            _prompt(6, (440, 360), (460, 160), more, title="Prompt for the continuation"),
            Node(7, "CausVidContinue", (1320, 0), (300, 150), {"num_fragments": 1},
                 {"model": (1, 0), "state": (5, 1), "positive": (6, 0)}),
            *_decode_and_save(8, 1660, (7, 1), "video/causvid_long"),
        ],
        note=Note(11, (-500, 0), (460, 700), note),
        groups=[("Models", [1, 2, 3]), ("Prompts", [4, 6]), ("Sample and continue", [5, 7]),
                ("Decode once and save", [8, 9, 10])],
        files=_files(CAUSVID_13B),
    )


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
    files = _files(SELF_FORCING_13B)
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
  for long videos and prompt switches: `longlive_base.pt` with its `lora.pt` (the loader's `lora_name`) and
  preset **LongLive 1.3B**. The CausVid 1.3B file works here too: preset **CausVid 1.3B** with cache
  **rolling**.
- Decoding 969 frames at 832{TIMES}480 keeps about 4.6 GB of images in RAM; *VAE Decode (Tiled)*
  lowers the VRAM the decode needs.
- {NO_CFG}
"""
    return Workflow(
        name="causvid_one_minute_three_prompts",
        nodes=[
            *_loaders(SELF_FORCING_13B),
            _timeline_prompt(ONE_MINUTE_TIMELINE, height=340),
            Node(5, "CausVidSampler", (960, 0), (340, 390), {**SAMPLER, **LONG_RUN, "seconds": ONE_MINUTE_SECONDS},
                 {"model": (1, 0), "positive": (4, 0)}, control="randomize"),
            *_decode_and_save(6, 1340, (5, 0), "video/causvid_one_minute"),
        ],
        note=Note(9, (-500, 0), (460, 900), note),
        groups=[("Models", [1, 2, 3]), ("Prompt timeline", [4]), ("Sample 60 s", [5]),
                ("Decode and save", [6, 7, 8])],
        files=files,
    )


def _image_to_video() -> Workflow:
    files = _files(CAUSVID_13B)
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
            *_loaders(CAUSVID_13B),
            Node(4, "LoadImage", (440, 0), (320, 330), {"image": START_IMAGE}, title="Start image"),
            Node(5, "ImageScale", (440, 380), (320, 130),
                 {"upscale_method": "lanczos", "width": 832, "height": 480, "crop": "center"},
                 {"image": (4, 0)}),
            Node(6, "VAEEncode", (440, 560), (220, 46), {}, {"pixels": (5, 0), "vae": (3, 0)}),
            _prompt(7, (800, 0), (440, 260),
                    "A child's colourful drawing of a smiling girl with big yellow hair and a pink dress comes to "
                    "life on a green hill under a blue sky: she waves her outstretched arms, her hair blows in the "
                    "wind and the white clouds drift slowly by, hand-drawn style."),
            Node(8, "CausVidSampler", (1280, 0), (340, 390), {**SAMPLER, "preset": "CausVid 1.3B"},
                 {"model": (1, 0), "positive": (7, 0), "start_latent": (6, 0)}, control="randomize"),
            *_decode_and_save(9, 1660, (8, 0), "video/causvid_i2v"),
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
    files = _files(SELF_FORCING_13B)
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
    return Workflow(
        name="causvid_stream_ten_minutes",
        nodes=[
            *_loaders(SELF_FORCING_13B),
            _timeline_prompt(TEN_MINUTES_TIMELINE, height=400),
            Node(5, "CausVidStreamToVideo", (960, 0), (520, 760),
                 {**SAMPLER, **LONG_RUN, "filename_prefix": STREAM_PREFIX, "seconds": TEN_MINUTES_SECONDS},
                 {"model": (1, 0), "positive": (4, 0), "vae": (3, 0)}, control="randomize"),
        ],
        note=Note(6, (-500, 0), (460, 1040), note),
        groups=[("Models", [1, 2, 3]), ("Prompt timeline", [4]), ("Sample 10 min, stream to mp4", [5])],
        files=files,
    )


KREA_SECONDS = 30.0
KREA_TIMELINE = [
    (0, "A golden retriever runs along a sandy beach at sunset, waves rolling in, the camera tracking beside it "
        "at a low angle, warm light, cinematic."),
    (15, "The golden retriever splashes into the shallow waves chasing a red ball, water spraying in the "
         "golden light, the camera following it at a low angle."),
]


def _krea_realtime() -> Workflow:
    files = _files(KREA_14B)
    note = f"""## Krea Realtime 14B: 30 s streamed, its context rebuilt before every block

**Krea Realtime 14B** (Wan2.1 14B trained with Self-Forcing by Krea) samples with no KV cache carried from
block to block: before each block it caches a short context **again from scratch**.

### Models (this pack never downloads weights)
- **`{KREA_14B}`** {ARROW} `ComfyUI/models/diffusion_models/`: download it from
  [krea/krea-realtime-video](https://huggingface.co/krea/krea-realtime-video) (keep its name).
{DOWNLOAD_COMMON}

```
{_tree(files)}
```

### Settings
- Preset **Krea Realtime 14B**: its server's 5 steps (1000, 937.5, 833.3, 625 and a last pass at
  timestep 0, shift 5), no clean pass; cache **preset default** = **recompute**, 3 frames.
- **recompute**: before every block the KV cache is emptied and 3 latent frames are cached again at
  timestep 0: the video's first frame (or, once it is far behind, the oldest of the last 9 decoded frames
  **encoded again by the VAE** on its own) and the 2 newest latent frames. The block follows at position
  3, so positions never grow and every block costs the same.
- That is why the sampler needs the **VAE** (with *CausVid Sampler*, connect it to its `vae` input): it
  decodes every block and re-encodes one frame as it samples. *CausVid Stream to Video* also writes the
  mp4 as it goes (see the ten-minute example).
- **seconds 30** and a prompt timeline (`0:`, `15:`): a prompt takes over at the first block that starts
  at or after its time; that block's context is rebuilt under the old prompt first, as Krea's server does.
- The 14B weights take 28 GB in bf16; `weight_dtype` **fp8_e4m3fn** halves that (not bit-exact). On one
  H200 the bf16 model streams 5 fps at 832{TIMES}480 with 40 GiB of VRAM (`bench/RESULTS.md`).
- {NO_CFG}
"""
    return Workflow(
        name="causvid_krea_realtime_14b_stream",
        nodes=[
            *_loaders(KREA_14B),
            _timeline_prompt(KREA_TIMELINE, height=260),
            Node(5, "CausVidStreamToVideo", (960, 0), (520, 760),
                 {**SAMPLER, "preset": "Krea Realtime 14B", "filename_prefix": "video/krea_realtime",
                  "seconds": KREA_SECONDS},
                 {"model": (1, 0), "positive": (4, 0), "vae": (3, 0)}, control="randomize"),
        ],
        note=Note(6, (-500, 0), (460, 860), note),
        groups=[("Models", [1, 2, 3]), ("Prompt timeline", [4]), ("Sample 30 s, stream to mp4", [5])],
        files=files,
    )


REWARD_SECONDS = 60.0
REWARD_TIMELINE = [
    (0, "A hot air balloon rises over a misty green valley at dawn, a river winding below, the camera slowly "
        "circling the balloon, soft golden light, cinematic."),
    (30, "The hot air balloon drifts over snowy mountain peaks in bright sunshine, long shadows on the snow, "
         "the camera gliding beside the basket."),
]


def _reward_forcing() -> Workflow:
    files = _files(REWARD_FORCING_13B)
    note = f"""## Reward Forcing 1.3B: a minute streamed, with its EMA sink

**Reward Forcing** (Wan2.1 1.3B distilled with a reward on motion) keeps a short cache whose first frames, the
*sink*, slowly absorb the frames it evicts, and places every cached frame by its slot in the cache.

### Models (this pack never downloads weights)
- **`{REWARD_FORCING_13B}`** {ARROW} `ComfyUI/models/diffusion_models/`: download it from
  [JaydenLu666/Reward-Forcing-T2V-1.3B](https://huggingface.co/JaydenLu666/Reward-Forcing-T2V-1.3B) (keep its
  name). Its tensors are Self-Forcing's: the **preset** tells them apart, so keep *Reward Forcing 1.3B*.
{DOWNLOAD_COMMON}

```
{_tree(files)}
```

### Settings
- Preset **Reward Forcing 1.3B**: Self-Forcing's 4 steps (1000, 750, 500, 250, shift 5, warped) and a clean
  pass; cache **preset default** = its own: a **sink of 3 latent frames in a 9-frame cache**. When a block
  finds the cache full, the oldest 3 frames after the sink leave, and are blended into the sink
  (sink = 0.999 sink + 0.001 evicted), as its code does. Positions are the frames' slots (0..8), so they stay
  bounded for any length.
- **seconds 60** and a prompt timeline (`0:`, `30:`): a prompt takes over at the first block that starts at
  or after its time, with the window re-cached under it (Reward Forcing's own code has no prompt switch).
- *CausVid Stream to Video* writes the mp4 as it samples (see the ten-minute example): constant memory.
- {NO_CFG}
"""
    return Workflow(
        name="causvid_reward_forcing_stream",
        nodes=[
            *_loaders(REWARD_FORCING_13B),
            _timeline_prompt(REWARD_TIMELINE, height=260),
            Node(5, "CausVidStreamToVideo", (960, 0), (520, 760),
                 {**SAMPLER, "preset": "Reward Forcing 1.3B", "filename_prefix": "video/reward_forcing",
                  "seconds": REWARD_SECONDS},
                 {"model": (1, 0), "positive": (4, 0), "vae": (3, 0)}, control="randomize"),
        ],
        note=Note(6, (-500, 0), (460, 760), note),
        groups=[("Models", [1, 2, 3]), ("Prompt timeline", [4]), ("Sample 60 s, stream to mp4", [5])],
        files=files,
    )


LIVE_SECONDS = 600.0
LIVE_PROMPT = ("A small red fox sleeps curled up in tall grass at the edge of a forest, morning mist, soft light, "
               "the camera slowly moving closer, cinematic.")


def _live_stream() -> Workflow:
    files = _files(SELF_FORCING_13B)
    note = f"""## Live: steer a stream while it is made

Queue it, then **type a new prompt into the live panel** (under the widgets of *CausVid Stream to Video*) while
the video streams: it takes over at the next block, with LongLive's KV re-cache.

### Models (this pack never downloads weights)
{SELF_FORCING_DOWNLOAD}

```
{_tree(files)}
```

### How it works
- *CausVid Stream to Video* with its **`live_clip`** input connected (the same umT5 as the prompt's) takes
  prompts while it runs. Its panel comes alive when the run starts: the prompts used so far (seconds into the
  video) and a box (Enter sends); the node's preview shows the newest frame. A prompt sent while a block samples is encoded right
  after it and drives the video from the next block on; a second one before then replaces the first.
- The run starts from **one prompt** (no timeline in *CausVid Text Encode*).
- The prompts used are saved beside the mp4 as `seconds: prompt` lines (`.prompts.txt`): pasted into *CausVid
  Text Encode* with the same seed and settings, they make the same video again.
- **Cancel** stops it and keeps the file; closing the page stops nothing.
- **seconds 600**, preset **Self-Forcing / LongLive 1.3B**, cache **sink, window 12, sink_frames 3**: every
  block costs the same however long it runs (see the ten-minute example for the streaming itself).
- {NO_CFG}
"""
    return Workflow(
        name="causvid_live_stream",
        nodes=[
            *_loaders(SELF_FORCING_13B),
            _prompt(4, (440, 0), (480, 200), LIVE_PROMPT, title="First prompt"),
            Node(5, "CausVidStreamToVideo", (960, 0), (520, 980),  # taller: the live panel sits under the widgets
                 {**SAMPLER, **LONG_RUN, "filename_prefix": "video/causvid_live", "seconds": LIVE_SECONDS},
                 {"model": (1, 0), "positive": (4, 0), "vae": (3, 0), "live_clip": (2, 0)}, control="randomize"),
        ],
        note=Note(6, (-500, 0), (460, 760), note),
        groups=[("Models", [1, 2, 3]), ("First prompt", [4]), ("Stream, steered live", [5])],
        files=files,
    )


LONGLIVE2_SECONDS = 10.0
LONGLIVE2_SHOTS = [
    (0, "A lighthouse keeper in a yellow raincoat climbs the spiral stairs of an old stone lighthouse at dusk, "
        "holding a lantern, warm light on the worn steps, the camera following him from below, cinematic."),
    (5, "Wide shot of the lighthouse on a rocky cliff above a stormy sea at night, its beam sweeping over the "
        "crashing waves, rain slanting through the light, the camera slowly pushing in from the water."),
]
"""The two shots of the LongLive 2.0 example: a prompt at 0 s and a scene cut (`5#:`) to the second at 5 s."""


def _longlive2_multishot() -> Workflow:
    files = _files(LONGLIVE2_5B, WAN22_VAE)
    text = "\n".join(f"{t}{'#' if i else ''}: {p}" for i, (t, p) in enumerate(LONGLIVE2_SHOTS))
    note = f"""## LongLive 2.0 5B: 720p, two shots, streamed to an mp4

**LongLive 2.0** (NVlabs) is a causal **Wan2.2 TI2V-5B**: 48-channel latents for the **Wan 2.2 VAE** (16{TIMES}
smaller than the picture, so 1280{TIMES}704 is an 80{TIMES}44 latent), blocks of **8 latent frames**, 24 fps.

### Models (this pack never downloads weights)
- **`{LONGLIVE2_5B}`** {ARROW} `ComfyUI/models/diffusion_models/`: download `model_bf16.pt` from
  [Efficient-Large-Model/LongLive-2.0-5B](https://huggingface.co/Efficient-Large-Model/LongLive-2.0-5B) and
  **rename** it to `{LONGLIVE2_5B}`. The loader reads the `.pt` with torch's safe loader (no pickled code runs) and
  takes its `generator` weights.
- **`{UMT5}`** {ARROW} `ComfyUI/models/text_encoders/` (umT5-XXL, the Wan2.1 models' own, from
  [Comfy-Org/Wan_2.1_ComfyUI_repackaged](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged),
  `split_files/text_encoders/`)
- **`{WAN22_VAE}`** {ARROW} `ComfyUI/models/vae/` (from
  [Comfy-Org/Wan_2.2_ComfyUI_Repackaged](https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged),
  `split_files/vae/`); the Wan 2.1 VAE does not fit these latents.

```
{_tree(files)}
```

### Settings
- Preset **LongLive 2.0 5B**: Wan's UniPC solver, 4 steps at shift 5 (999, 937, 833, 624), a clean pass per block;
  cache **preset default** = its own: the first block (8 latent frames) as a **sink** in a 32-frame cache.
- **1280{TIMES}704** (sizes are multiples of 32 on the Wan 2.2 VAE) and **seconds 10**: 64 latent frames =
  **253 frames** at **24 fps** (10.5 s), 8 blocks. Lengths are 29 + 32k frames (whole 8-frame blocks).
- **Two shots**: `0:` the first prompt, `5#:` a **scene cut** to the second. A cut starts a new shot: its first
  block is **pinned** beside the sink and the shot's positions move on by 8, as LongLive 2.0's multi-shot inference
  does; that block reads **"The scene transitions. "** before the prompt, the rest of the shot the prompt alone, as
  LongLive 2.0 was trained. Without the `#` the prompt changes within the same shot (nothing is re-cached).
- *CausVid Stream to Video* decodes each block with the Wan 2.2 VAE and writes it to the mp4 (at 24 fps) while the
  next one samples: `ComfyUI/output/video/`. *CausVid Sampler* + *VAE Decode* (with this VAE) + *Create Video* at
  24 fps works too.
- The 5B takes 10 GB in bf16 and its 32-frame KV cache about 10 GB at 1280{TIMES}704 (`kv_cache` **fp8** halves
  the cache).
- LongLive 2.0 is distilled: no negative prompt, no CFG.
"""
    return Workflow(
        name="causvid_longlive2_720p_multishot",
        nodes=[
            *_loaders(LONGLIVE2_5B, WAN22_VAE),
            _prompt(4, (440, 0), (480, 300), text, title="Two shots (seconds: prompt, # = scene cut)"),
            Node(5, "CausVidStreamToVideo", (960, 0), (520, 760),
                 {**SAMPLER, "width": 1280, "height": 704, "length": 253, "preset": "LongLive 2.0 5B",
                  "filename_prefix": "video/longlive2_multishot", "seconds": LONGLIVE2_SECONDS},
                 {"model": (1, 0), "positive": (4, 0), "vae": (3, 0)}, control="randomize"),
        ],
        note=Note(6, (-500, 0), (460, 900), note),
        groups=[("Models", [1, 2, 3]), ("Two shots", [4]), ("Sample 10 s at 720p, stream to mp4", [5])],
        files=files,
    )


def _multi_gpu_14b() -> Workflow:
    files = _files(LIGHTX2V_14B)
    note = f"""## CausVid-Plus 14B on two GPUs of this computer

*CausVid Multi-GPU* between the loader and the sampler spreads every block over the GPUs listed in `gpus`
(**sequence parallelism**): each GPU holds the whole model, computes its share of the block's tokens and keeps its
share of the attention heads' KV cache.

### Models (this pack never downloads weights)
- **`{LIGHTX2V_14B}`** {ARROW} `ComfyUI/models/diffusion_models/`: LightX2V's `causal_model.safetensors` from
  [lightx2v/Wan2.1-T2V-14B-CausVid](https://huggingface.co/lightx2v/Wan2.1-T2V-14B-CausVid), **renamed**.
{DOWNLOAD_COMMON}

```
{_tree(files)}
```

### Settings
- **gpus 0,1**: GPU numbers as ComfyUI sees them (0,1,2,3 for four). The 14B's 40 heads split over 2, 4, 5 or 8
  GPUs, the 1.3B's 12 over 2, 3, 4 or 6.
- The first run starts one worker process per GPU, each loading the same file (28 GB in bf16 on every GPU), and
  keeps them for later runs; *Unload Models* (or ComfyUI needing the room) ends them.
- Within bf16 rounding of one GPU, not bitwise. Live prompts and the recompute policy (Krea) stay on one GPU.
- `weight_dtype` fp8_e4m3fn stores the 14B in 14.3 GB per GPU (not bit-exact with bf16); fp8_e4m3fn_fast is
  one GPU's only.
- Preset **CausVid-Plus 14B**, 832{TIMES}480, 81 frames (5 s at 16 fps). {NO_CFG}
"""
    text = ("A lighthouse on a rocky cliff at dusk, waves breaking below, its beam sweeping through drifting sea mist, "
            "a slow crane shot rising from the rocks to the lantern.")
    return Workflow(
        name="causvid_14b_multi_gpu",
        nodes=[
            *_loaders(LIGHTX2V_14B),
            Node(10, "CausVidMultiGPU", (0, 400), (400, 60), {"gpus": "0,1"}, {"model": (1, 0)}),
            _prompt(4, (440, 0), (440, 260), text),
            Node(5, "CausVidSampler", (920, 0), (340, 390), {**SAMPLER, "preset": "CausVid-Plus 14B"},
                 {"model": (10, 0), "positive": (4, 0)}, control="randomize"),
            *_decode_and_save(6, 1300, (5, 0), "video/causvid_14b_multi_gpu"),
        ],
        note=Note(9, (-500, 0), (460, 620), note),
        groups=[("Models on two GPUs", [1, 2, 3, 10]), ("Prompt", [4]), ("Sample", [5]),
                ("Decode and save", [6, 7, 8])],
        files=files,
    )


WORKFLOWS: dict[str, Workflow] = {w.name: w for w in (_t2v_13b(), _lightx2v_14b(), _long_video(), _one_minute(),
                                                      _image_to_video(), _stream_ten_minutes(), _krea_realtime(),
                                                      _reward_forcing(), _live_stream(), _longlive2_multishot(),
                                                      _multi_gpu_14b())}


def generated_files(object_info: dict) -> dict[Path, str]:
    """Every example's UI file and API-format twin: {path: text}."""
    files = {}
    for name, wf in WORKFLOWS.items():
        files[UI_DIR / f"{name}.json"] = dumps(build_ui(wf, object_info))
        files[API_DIR / f"{name}.json"] = dumps(build_api(wf, object_info))
    return files
