"""Frame counts of an API-format prompt, from its settings: what a sampler generates, what a decode yields, how
many denoising steps it reports. Written out here, independently of the pack (causal.prompts), so that the
checks built on them test the nodes."""

from __future__ import annotations

import math
from typing import Any

FRAMES_PER_BLOCK = 3
FPS = 16
WAN22_FPS = 24
"""The frame rate of a model on the Wan 2.2 VAE (48 latent channels: LongLive 2.0)."""
SAMPLING_NODES = ("CausVidSampler", "CausVidStreamToVideo")
"""Nodes that sample from their own widgets (CausVid Stream to Video takes CausVid Sampler's widgets and
writes the video itself)."""


def frames_for_seconds(seconds: float, start_frames: int = 0, frames_per_block: int = FRAMES_PER_BLOCK,
                       fps: float = FPS) -> int:
    """Latent frames a sampler generates for a video of `seconds` (start latent included): the video
    frames ceil(s * fps) take ceil((v - 1) / 4) + 1 latent frames; the start frames are given, the rest
    is generated in whole blocks (3 frames; LongLive 2.0's 8), at least one. (Written out here, independently of
    causal.prompts, so that the frame-count checks test the node.)"""
    video = math.ceil(seconds * fps)
    total = math.ceil((video - 1) / 4) + 1
    generated = max(total - start_frames, 1)
    return math.ceil(generated / frames_per_block) * frames_per_block


def _schedule(prompt: dict, node_id: str):
    from causal.schedule import SCHEDULES

    return SCHEDULES[preset_of(prompt, node_id)]


def block_of(prompt: dict, node_id: str) -> int:
    """Latent frames per block of a sampling node's preset (a Continue's: its state's)."""
    return _schedule(prompt, node_id).frames_per_block


def fps_of(prompt: dict, node_id: str) -> int:
    """The frame rate of a sampling node's video: 24 fps for a preset of Wan 2.2-VAE models (48 latent channels),
    else 16."""
    return WAN22_FPS if _schedule(prompt, node_id).latent_channels == 48 else FPS


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
    if node["class_type"] in SAMPLING_NODES + ("CausVidContinue",):
        block, fps = block_of(prompt, node_id), fps_of(prompt, node_id)
    if node["class_type"] in SAMPLING_NODES:
        if isinstance(inputs.get("state"), list):
            raise NotImplementedError("sampler continued from a state")
        frames = (inputs["length"] - 1) // 4 + 1
        start = start_frames_of(prompt, inputs.get("start_latent"))
        if inputs.get("seconds", 0) > 0:
            new = frames_for_seconds(inputs["seconds"], start, block, fps)
        else:
            first = (frames - start) // block * block
            new = first + (frames - block) * (inputs["num_fragments"] - 1)
        return start + new if output in (0, 1) else 0
    if node["class_type"] == "CausVidContinue":
        src, _ = inputs["state"]
        if inputs.get("seconds", 0) > 0:
            new = frames_for_seconds(inputs["seconds"], 0, block, fps)
        else:
            frames = (_root_length(prompt, src) - 1) // 4 + 1
            new = (frames - block) * inputs["num_fragments"]
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


SAMPLER_KINDS = ("CausVidSampler", "CausVidContinue", "CausVidStreamToVideo")
"""Every node that denoises blocks (and reports progress)."""


def sampler_nodes(prompt: dict) -> list[str]:
    """The ids of the prompt's sampling nodes: samplers, then Continue nodes, then Stream to Video nodes."""
    return [nid for kind in SAMPLER_KINDS for nid in find_nodes(prompt, kind)]


def preset_of(prompt: dict, node_id: str) -> str:
    """The preset a sampling node runs: its own, or for a Continue that of the node its state comes from."""
    node = prompt[node_id]
    while node["class_type"] not in SAMPLING_NODES:
        node = prompt[node["inputs"]["state"][0]]
    return node["inputs"]["preset"]


def denoising_steps(prompt: dict, node_id: str) -> int:
    """Progress steps a sampling node reports: its new latent frames in blocks of the preset, each block the
    preset's steps."""
    from causal.schedule import SCHEDULES

    schedule = SCHEDULES[preset_of(prompt, node_id)]
    if schedule.first_block_steps is not None:
        raise NotImplementedError(f"steps of {schedule.name}: its first block has steps of its own")
    return new_latent_frames_of(prompt, node_id) // schedule.frames_per_block * schedule.num_steps


def saved_video(prompt: dict) -> tuple[str, int]:
    """(the node that saves the prompt's video, the frames the file must hold): a SaveVideo after a VAEDecode, or
    a CausVid Stream to Video, which decodes and writes the video itself."""
    streams = find_nodes(prompt, "CausVidStreamToVideo")
    if streams:
        (save_id,) = streams
        return save_id, decoded_frames(prompt, save_id)
    (decode_id,) = find_nodes(prompt, "VAEDecode")
    (save_id,) = find_nodes(prompt, "SaveVideo")
    return save_id, decoded_frames(prompt, decode_id)


def saved_fps(prompt: dict) -> float:
    """The frame rate of the prompt's saved video: a CausVid Stream to Video's model's (`fps_of`), or the
    CreateVideo's that SaveVideo saves."""
    streams = find_nodes(prompt, "CausVidStreamToVideo")
    if streams:
        return fps_of(prompt, streams[0])
    (save_id,) = find_nodes(prompt, "SaveVideo")
    return prompt[prompt[save_id]["inputs"]["video"][0]]["inputs"]["fps"]
