"""The pack's nodes end to end, through the HTTP/websocket API of a real headless ComfyUI 0.3.75.

Tiny stand-ins replace the real weights under the exact file names the example workflows use
(tools/workflows/standins.py `write_standin_models`): the 2-layer random causal DiT of tools/tiny.py as
`causvid_1.3b_autoregressive.pt` (CausVid's .pt layout) and `lightx2v_causvid_14b.safetensors`
(LightX2V's bare safetensors), a random tiny Wan 2.1 VAE as `wan_2.1_vae.safetensors`, and the test
pack's CausVidTestTinyCLIP (a real umT5 of the DiT's text width through ComfyUI's classes) instead of CLIPLoader.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tools import workflows as eg
from tools.comfy_server import PromptRejected, video_frames, video_info
from tools.tiny import TINY

pytestmark = pytest.mark.comfyui

NAMES = sorted(eg.WORKFLOWS)
W, H, LENGTH = 64, 48, 21  # 21 frames = 6 latent frames = 2 blocks per fragment


def run_ok(server, prompt: dict, timeout: float = 90, **kw):
    result = server.run(prompt, timeout=timeout, **kw)
    assert result.status == "success", result.describe() + "\n" + server.log_tail(3000)
    return result


def check_video(server, result, prompt: dict, size: tuple[int, int] = (W, H)) -> int:
    """The saved mp4 has 1 + 4·(T - 1) frames of `size` (W×H; rounded up to 32 for LongLive 2.0 on the Wan 2.2 VAE)
    at 16 fps (24 for LongLive 2.0's stream); returns the frame count. The file comes from SaveVideo (after
    VAEDecode), or from CausVidStreamToVideo, which writes it itself."""
    save_id, expected = eg.saved_video(prompt)
    (path,) = server.output_paths(result, node_id=save_id)
    frames, width, height, fps = video_info(path)
    assert (width, height, round(fps)) == (*eg.standin_size(prompt, *size), eg.saved_fps(prompt))
    assert frames == expected
    return frames


def check_progress(result, prompt: dict) -> None:
    """One progress message per denoising step of every sampling node (each block the steps of its preset)."""
    progress = result.of_type("progress")
    for nid in eg.sampler_nodes(prompt):
        steps = eg.denoising_steps(prompt, nid)
        mine = [p for p in progress if p["node"] == nid]
        assert [p["value"] for p in mine] == list(range(1, steps + 1)), (nid, mine)
        assert {p["max"] for p in mine} == {steps}


# -------------------------------------------------------------------------------------------------
# The example workflows


SHORTENED = {"causvid_stream_ten_minutes": 3.0, "causvid_krea_realtime_14b_stream": 3.0,
             "causvid_reward_forcing_stream": 3.0, "causvid_live_stream": 3.0, "causvid_longlive2_720p_multishot": 4.0}
"""Seconds a workflow runs for here instead of its own (its prompt timeline scaled along)."""
SMALLER = {"causvid_one_minute_three_prompts": (32, 32)}
"""Width and height of a workflow that runs whole here (W×H otherwise): the one-minute video's 969 frames, whose VAE
Decode took 13 of its 17 s at 64x48 and 4 s at 32x32; its length, timeline, progress and previews do not depend on
the size."""


@pytest.mark.parametrize("name", NAMES)
def test_example_workflow_runs(comfy_server, standins, name):
    width, height = SMALLER.get(name, (W, H))
    api = eg.load_api(name)
    prompt = eg.standin_prompt(api, width=width, height=height, length=eg.standin_length(api, LENGTH),
                               seconds=SHORTENED.get(name))
    assert not eg.find_nodes(prompt, "CLIPLoader")
    result = run_ok(comfy_server, prompt)
    frames = check_video(comfy_server, result, prompt, size=(width, height))
    assert frames == {"causvid_1.3b_t2v": 21,  # 6 latent frames
                      "causvid_14b_lightx2v_3_fragments": 45,  # 6 + 3 + 3
                      "causvid_long_video_prompt_per_fragment": 57,  # (6 + 3 + 3) + 3
                      "causvid_one_minute_three_prompts": 969,  # seconds = 60: 243 latent frames
                      "causvid_image_to_video": 13,  # the image + one block = 4 latent frames
                      "causvid_stream_ten_minutes": 57,  # 3 s instead of 600: 5 blocks = 15 latent frames
                      "causvid_krea_realtime_14b_stream": 57,  # 3 s instead of 30, the same
                      "causvid_reward_forcing_stream": 57,  # 3 s instead of 60: past its 9-frame cache
                      "causvid_live_stream": 57,  # 3 s instead of 600, no prompt sent
                      # 4 s at 24 fps instead of 10: four 8-frame blocks = 32 latent frames, the cut at 2 s opening
                      # the third block with the prefixed caption, the fourth on the caption alone
                      "causvid_longlive2_720p_multishot": 125,
                      "causvid_14b_multi_gpu": 21}[name]  # on two CPU workers (the stand-in's 2 heads)
    # progress: one message per denoising step of every sampling node; one preview per block (its last step)
    check_progress(result, prompt)
    from causal.schedule import SCHEDULES

    blocks = sum(eg.new_latent_frames_of(prompt, nid) // SCHEDULES[eg.preset_of(prompt, nid)].frames_per_block
                 for nid in eg.sampler_nodes(prompt))
    assert 0 < result.preview_frames == blocks < len(result.of_type("progress")), result.describe()


def test_new_continue_prompt_reuses_the_cached_sampler(comfy_server, standins):
    """What the long-video workflow's note promises: with the seed fixed, editing only the
    continuation prompt re-runs Continue alone; the sampler's result (and state) come from the cache."""
    prompt = eg.standin_prompt(eg.load_api("causvid_long_video_prompt_per_fragment"), width=W, height=H,
                               length=LENGTH)
    (sampler_id,) = eg.find_nodes(prompt, "CausVidSampler")
    (continue_id,) = eg.find_nodes(prompt, "CausVidContinue")
    text_id = prompt[continue_id]["inputs"]["positive"][0]
    run_ok(comfy_server, prompt)
    prompt[text_id]["inputs"]["text"] = "The hot air balloon lands gently in a field of sunflowers."
    result = run_ok(comfy_server, prompt)
    cached = {n for d in result.of_type("execution_cached") for n in d.get("nodes", [])}
    assert sampler_id in cached and continue_id not in cached
    assert {p["node"] for p in result.of_type("progress")} == {continue_id}
    check_video(comfy_server, result, prompt)


def test_core_clip_text_encode_into_sampler(comfy_server, standins):
    """The standard core path: CLIPTextEncode's single prompt drives every fragment."""
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=LENGTH)
    text_id, sampler_id = eg.find_nodes(prompt, "CausVidTextEncode")[0], eg.find_nodes(prompt, "CausVidSampler")[0]
    clip_link = prompt[text_id]["inputs"]["clip"]
    prompt[text_id] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox runs through the snow",
                                                                 "clip": clip_link}}
    prompt[sampler_id]["inputs"].update(num_fragments=2, seed=7)
    result = run_ok(comfy_server, prompt)
    assert check_video(comfy_server, result, prompt) == 33  # 6 + 3 latent frames
    assert text_id in {d["node"] for d in result.of_type("executing")}


@pytest.mark.parametrize("start_length, latent_frames", [(9, 3 + 3), (1, 1 + 3)])
def test_start_latent_begins_the_video(comfy_server, standins, start_length, latent_frames):
    """A start LATENT (VAE space) is cached before the first block: a video of 3 latent frames, or one image
    (1 latent frame, no repeating needed). The returned latent begins with it, then the new blocks."""
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=LENGTH)
    sampler_id = eg.find_nodes(prompt, "CausVidSampler")[0]
    (save_id,) = eg.find_nodes(prompt, "SaveVideo")
    prompt["90"] = {"class_type": "EmptyHunyuanLatentVideo",
                    "inputs": {"width": W, "height": H, "length": start_length, "batch_size": 1}}
    prompt[sampler_id]["inputs"]["start_latent"] = ["90", 0]
    result = run_ok(comfy_server, prompt)
    # 21 frames per fragment = 6 latent frames: the start, then one block of the preset's 3 steps
    assert len(result.of_type("progress")) == 3
    (path,) = comfy_server.output_paths(result, node_id=save_id)
    assert video_info(path)[0] == 1 + 4 * (latent_frames - 1)
    # a video shorter than length says so on the sampler node (its executed message), one that is not says nothing
    texts = [d["output"].get("text") for d in result.of_type("executed") if d["node"] == sampler_id]
    if latent_frames < 6:
        assert texts and "not length 21; length 33 makes 25" in texts[0][0], texts
    else:
        assert not any(texts), texts


def test_rolling_video_past_the_window_with_a_prompt_timeline(comfy_server, standins):
    """A sink policy past its window, a 'seconds: prompt' timeline and a total length in seconds: 2 s at
    16 fps = 32 frames -> 9 latent frames (33 video frames), three blocks."""
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=LENGTH)
    (sampler_id,) = eg.find_nodes(prompt, "CausVidSampler")
    (text_id,) = eg.find_nodes(prompt, "CausVidTextEncode")
    (save_id,) = eg.find_nodes(prompt, "SaveVideo")
    prompt[text_id]["inputs"]["text"] = "0: a red ball\n1.2: a blue ball"
    prompt[sampler_id]["inputs"].update(cache="sink", window=6, sink_frames=3, seconds=2.0)
    result = run_ok(comfy_server, prompt)
    assert len(result.of_type("progress")) == 3 * 3
    (path,) = comfy_server.output_paths(result, node_id=save_id)
    assert video_info(path)[0] == 33


def test_a_scene_cut_line_runs_with_infinity_rope_and_is_refused_elsewhere(comfy_server, standins):
    """`1.2#: prompt` in CausVid Text Encode: a scene cut, which Infinity-RoPE's preset makes (3 s, the cut past
    its full cache) and another cache refuses with the preset to use."""
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=LENGTH)
    (sampler_id,) = eg.find_nodes(prompt, "CausVidSampler")
    (text_id,) = eg.find_nodes(prompt, "CausVidTextEncode")
    (save_id,) = eg.find_nodes(prompt, "SaveVideo")
    prompt[text_id]["inputs"]["text"] = "0: a red ball\n1.6#: a blue ball"
    prompt[sampler_id]["inputs"].update(preset="Infinity-RoPE (Self-Forcing 1.3B)", cache="preset default",
                                        seconds=3.0)
    result = run_ok(comfy_server, prompt)
    (path,) = comfy_server.output_paths(result, node_id=save_id)
    assert video_info(path)[0] == 57
    prompt[sampler_id]["inputs"].update(preset="Self-Forcing / LongLive 1.3B", cache="sink", window=6, sink_frames=3)
    failed = comfy_server.run(prompt, timeout=120)
    message = failed.error["exception_message"] if failed.status == "error" else ""
    assert "needs a cache that knows scenes: Infinity-RoPE's" in message and "LongLive 2.0's" in message, \
        failed.describe()


@pytest.mark.parametrize("inputs, words", [
    (dict(cache="sink", window=6, sink_frames=6), "smaller than the window"),
    (dict(cache="rolling", window=4), "whole number of 3-frame blocks"),
    (dict(cache="rolling", sink_frames=3), "only applies to the sink policy"),
])
def test_bad_cache_settings_say_what_to_change(comfy_server, standins, inputs, words):
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=LENGTH)
    (sampler_id,) = eg.find_nodes(prompt, "CausVidSampler")
    prompt[sampler_id]["inputs"].update(inputs)
    result = comfy_server.run(prompt, timeout=300)
    assert result.status == "error" and words in result.error["exception_message"], result.describe()


def test_fragments_that_would_add_no_frames_are_refused(comfy_server, standins):
    """length 9 is one block: a second fragment would only re-cache it and add nothing (the video came back a
    fragment short, silently); the run is refused with what to change."""
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=9)
    (sampler_id,) = eg.find_nodes(prompt, "CausVidSampler")
    prompt[sampler_id]["inputs"].update(num_fragments=2)
    result = comfy_server.run(prompt, timeout=300)
    message = result.error["exception_message"] if result.status == "error" else ""
    assert "adds length - 12 frames, nothing at length 9" in message and "at least 21" in message, result.describe()


# -------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("field,value,words", [
    ("width", 40, "multiple of 16"),
    ("length", 10, "length 10"),
    ("width", "abc", "whole number, got 'abc'"),
    ("length", 13, "9 + 12k"),
    ("length", 4101, "over the maximum of 4089"),
    ("custom_steps", "1000, __import__('os')", "numbers separated by commas"),
])
def test_bad_widget_value_is_rejected(comfy_server, standins, field, value, words):
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=LENGTH)
    (sampler_id,) = eg.find_nodes(prompt, "CausVidSampler")
    prompt[sampler_id]["inputs"][field] = value
    with pytest.raises(PromptRejected) as excinfo:
        comfy_server.run(prompt, timeout=30)
    assert excinfo.value.status == 400
    node_errors = excinfo.value.body["node_errors"]
    assert list(node_errors) == [sampler_id]
    assert node_errors[sampler_id]["class_type"] == "CausVidSampler"
    assert any(words in e["details"] for e in node_errors[sampler_id]["errors"]), node_errors


def _truncated(path: Path, layout: str) -> None:
    import torch

    from causal.synthetic import random_state_dict, write_checkpoint

    write_checkpoint(random_state_dict(TINY, dtype=torch.bfloat16), path, layout)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _i2v(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from causal.synthetic import random_state_dict

    sd = random_state_dict(TINY, dtype=torch.bfloat16)
    sd["patch_embedding.weight"] = torch.randn(TINY.dim, 36, 1, 2, 2, dtype=torch.bfloat16)
    sd["img_emb.proj.1.weight"] = torch.randn(TINY.dim, 1280, dtype=torch.bfloat16)
    sd["blocks.0.cross_attn.k_img.weight"] = torch.randn(TINY.dim, TINY.dim, dtype=torch.bfloat16)
    save_file(sd, str(path))


def _lora(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.randn(8, TINY.dim),
               "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.randn(TINY.dim, 8)}, str(path))


BAD_FILES = {
    "truncated.safetensors": (lambda p: _truncated(p, "lightx2v_safetensors"), "truncated or corrupt"),
    "truncated.pt": (lambda p: _truncated(p, "causvid"), "truncated or corrupt"),
    "wan2.1_i2v_480p.safetensors": (_i2v, "image-to-video"),
    "wan_lora.safetensors": (_lora, "this is a LoRA"),
    "html_page.safetensors": (lambda p: p.write_text("<!DOCTYPE html><html><title>private</title></html>"),
                              "is an HTML page"),
}


@pytest.mark.parametrize("file_name", list(BAD_FILES))
def test_bad_checkpoint_ends_in_execution_error(comfy_server, file_name):
    make, words = BAD_FILES[file_name]
    path = comfy_server.models_dir / "diffusion_models" / ("bad_" + file_name)
    if not path.exists():
        make(path)
    prompt = {
        "1": {"class_type": "CausVidModelLoader", "inputs": {"ckpt_name": path.name, "weight_dtype": "default"}},
        "2": {"class_type": "CausVidTestConditioning", "inputs": {"text": "a cat", "width": TINY.text_dim}},
        "3": {"class_type": "CausVidSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "width": W, "height": H, "length": LENGTH,
            "preset": "CausVid 1.3B", "custom_steps": "", "seed": 0, "num_fragments": 1}},
        "4": {"class_type": "CausVidTestShowShape", "inputs": {"latent": ["3", 0]}},
    }
    result = comfy_server.run(prompt, timeout=60)
    assert result.status == "error", result.describe()
    error = result.error
    assert error["node_id"] == "1" and error["node_type"] == "CausVidModelLoader", error
    assert words in error["exception_message"], error["exception_message"]
    # named as the user picked it; neither the server's folders nor the file's content reach the client
    assert f"diffusion_models/{path.name}" in error["exception_message"]
    assert str(comfy_server.base_dir) not in error["exception_message"] and "private" not in error["exception_message"]
    assert error["exception_type"] in ("causal.checkpoint.CheckpointError", "ValueError"), error["exception_type"]


# -------------------------------------------------------------------------------------------------
# Interrupt


def test_interrupt_stops_within_a_step(comfy_server, standins):
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=256, height=256, length=LENGTH)
    (sampler_id,) = eg.find_nodes(prompt, "CausVidSampler")
    prompt[sampler_id]["inputs"].update(num_fragments=100, seed=11)  # 101 blocks × 3 steps: minutes
    sent: list[float] = []
    progress_times: list[float] = []

    def interrupt_on_first_progress(mtype, data, server):
        if mtype == "progress" and data.get("node") == sampler_id:
            progress_times.append(time.monotonic())
            if not sent:
                assert server.interrupt() == 200
                sent.append(time.monotonic())

    result = comfy_server.run(prompt, timeout=60, on_message=interrupt_on_first_progress)
    assert sent, result.describe()
    assert result.status == "interrupted", result.describe()
    later = [t for t in progress_times if t > sent[0]]
    assert len(later) <= 2, f"{len(later)} progress messages after the interrupt"
    assert len(progress_times) < eg.denoising_steps(prompt, sampler_id)
    assert not result.of_type("executed")  # nothing was saved
    assert (result.history.get("status") or {}).get("status_str") == "error"


# -------------------------------------------------------------------------------------------------
# Continue == one longer run


def test_continue_equals_one_longer_sampler_run(comfy_server, standins):
    """Sampler (2 fragments) + Continue (1 fragment, its own prompt) gives the same video as one
    sampler run of 3 fragments with those prompts: the `video` output holds all 12 latent frames
    (6 + 3 from the sampler, 3 from Continue), the `fragment` output the 3 new ones, and decoding
    either whole latent gives 1 + 4·11 = 45 frames."""
    import torch
    from safetensors.torch import load_file

    common = {"width": W, "height": H, "length": LENGTH, "preset": "CausVid 1.3B", "custom_steps": "",
              "seed": 123}

    def video_branch(latent_link: list, prefix: str, first_id: int) -> dict:
        a, b, c = str(first_id), str(first_id + 1), str(first_id + 2)
        return {
            a: {"class_type": "VAEDecode", "inputs": {"samples": latent_link, "vae": ["3", 0]}},
            b: {"class_type": "CreateVideo", "inputs": {"images": [a, 0], "fps": 16.0}},
            c: {"class_type": "SaveVideo", "inputs": {"video": [b, 0], "filename_prefix": f"e2e/{prefix}",
                                                     "format": "auto", "codec": "auto"}},
        }

    prompt = {
        "1": {"class_type": "CausVidModelLoader", "inputs": {"ckpt_name": eg.CAUSVID_13B, "weight_dtype": "default"}},
        "2": {"class_type": "CausVidTestTinyCLIP", "inputs": {"width": TINY.text_dim, "seed": 0}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": eg.WAN_VAE}},
        # sampler (2 fragments) + continue (1 fragment)
        "10": {"class_type": "CausVidTextEncode", "inputs": {"clip": ["2", 0], "text": "a cat walks\na dog runs"}},
        "11": {"class_type": "CausVidSampler", "inputs": {"model": ["1", 0], "positive": ["10", 0],
                                                          "num_fragments": 2, **common}},
        "12": {"class_type": "CausVidTextEncode", "inputs": {"clip": ["2", 0], "text": "a bird flies"}},
        "13": {"class_type": "CausVidContinue", "inputs": {"model": ["1", 0], "state": ["11", 1],
                                                           "positive": ["12", 0], "num_fragments": 1}},
        "14": {"class_type": "SaveLatent", "inputs": {"samples": ["13", 1], "filename_prefix": "e2e/continued"}},
        "15": {"class_type": "SaveLatent", "inputs": {"samples": ["13", 0], "filename_prefix": "e2e/fragment"}},
        "16": {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0], "filename_prefix": "e2e/first"}},
        **video_branch(["13", 1], "continued", 17),
        # one sampler run of 3 fragments
        "20": {"class_type": "CausVidTextEncode", "inputs": {"clip": ["2", 0],
                                                             "text": "a cat walks\na dog runs\na bird flies"}},
        "21": {"class_type": "CausVidSampler", "inputs": {"model": ["1", 0], "positive": ["20", 0],
                                                          "num_fragments": 3, **common}},
        "22": {"class_type": "SaveLatent", "inputs": {"samples": ["21", 0], "filename_prefix": "e2e/single"}},
        **video_branch(["21", 0], "single", 23),
    }
    result = run_ok(comfy_server, prompt, timeout=120)

    def latent(node_id: str) -> torch.Tensor:
        (path,) = comfy_server.output_paths(result, node_id=node_id)
        return load_file(str(path))["latent_tensor"]

    continued, fragment, first, single = latent("14"), latent("15"), latent("16"), latent("22")
    assert first.shape[2] == 9 and fragment.shape[2] == 3
    assert continued.shape[2] == first.shape[2] + fragment.shape[2] == single.shape[2] == 12
    assert torch.equal(continued, torch.cat([first, fragment], dim=2))
    assert torch.equal(continued, single), (continued - single).abs().max()

    (continued_mp4,) = comfy_server.output_paths(result, node_id="19")
    (single_mp4,) = comfy_server.output_paths(result, node_id="25")
    assert video_info(continued_mp4)[0] == video_info(single_mp4)[0] == 1 + 4 * (12 - 1)


def test_bad_start_latent_and_the_next_prompt_still_runs(comfy_server, standins):
    """A 4-channel start latent (an SD latent, say) is refused with our message before any conversion; the
    server then runs the next valid prompt."""
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=LENGTH)
    (sampler_id,) = eg.find_nodes(prompt, "CausVidSampler")
    bad = dict(prompt)
    bad["90"] = {"class_type": "EmptyLatentImage", "inputs": {"width": W, "height": H, "batch_size": 1}}
    bad[sampler_id] = {**prompt[sampler_id], "inputs": {**prompt[sampler_id]["inputs"], "start_latent": ["90", 0]}}
    result = comfy_server.run(bad, timeout=300)
    assert result.status == "error", result.describe()
    assert "must be a Wan video latent" in result.error["exception_message"], result.describe()
    run_ok(comfy_server, prompt)



def test_a_state_continues_only_on_the_model_that_made_it(comfy_server, standins):
    import torch

    from causal.synthetic import random_state_dict, write_checkpoint

    other = comfy_server.models_dir / "diffusion_models" / "other_width.safetensors"
    if not other.exists():
        config = replace(TINY, dim=2 * TINY.dim)
        write_checkpoint(random_state_dict(config, dtype=torch.bfloat16, seed=1), other, "lightx2v_safetensors")
    prompt = {
        "1": {"class_type": "CausVidModelLoader", "inputs": {"ckpt_name": eg.CAUSVID_13B, "weight_dtype": "default"}},
        "2": {"class_type": "CausVidModelLoader", "inputs": {"ckpt_name": other.name, "weight_dtype": "default"}},
        "3": {"class_type": "CausVidTestConditioning", "inputs": {"text": "a cat", "width": TINY.text_dim}},
        "4": {"class_type": "CausVidSampler", "inputs": {
            "model": ["1", 0], "positive": ["3", 0], "width": W, "height": H, "length": LENGTH,
            "preset": "CausVid 1.3B", "custom_steps": "", "seed": 0, "num_fragments": 1}},
        "5": {"class_type": "CausVidContinue", "inputs": {"model": ["2", 0], "state": ["4", 1], "positive": ["3", 0],
                                                          "num_fragments": 1}},
        "6": {"class_type": "CausVidTestShowShape", "inputs": {"latent": ["5", 0]}},
    }
    result = comfy_server.run(prompt, timeout=300)
    assert result.status == "error" and result.error["node_id"] == "5", result.describe()
    # the stand-in checkpoint is TINY: "made by the custom (dim 256, 2 layers) model"
    assert f"made by the {TINY.name} model" in result.error["exception_message"], result.describe()


def test_a_rolling_forcing_video_is_refused_by_continue_with_what_to_do(comfy_server, standins):
    """Rolling Forcing's state carries no cache history (its window of blocks is sampled together): CausVid Continue
    stops with a message that says to make the whole video in one run, and the sampler's own output is whole."""
    prompt = {
        "1": {"class_type": "CausVidModelLoader", "inputs": {"ckpt_name": eg.CAUSVID_13B, "weight_dtype": "default"}},
        "3": {"class_type": "CausVidTestConditioning", "inputs": {"text": "a cat", "width": TINY.text_dim}},
        "4": {"class_type": "CausVidSampler", "inputs": {
            "model": ["1", 0], "positive": ["3", 0], "width": W, "height": H, "length": 57,
            "preset": "Rolling Forcing 1.3B", "custom_steps": "", "seed": 0, "num_fragments": 1}},
        "5": {"class_type": "CausVidContinue", "inputs": {"model": ["1", 0], "state": ["4", 1], "positive": ["3", 0],
                                                          "num_fragments": 1}},
        "6": {"class_type": "CausVidTestShowShape", "inputs": {"latent": ["5", 0]}},
    }
    result = comfy_server.run(prompt, timeout=300)
    assert result.status == "error" and result.error["node_id"] == "5", result.describe()
    assert "cannot be continued yet" in result.error["exception_message"], result.describe()
    alone = {k: v for k, v in prompt.items() if k in ("1", "3", "4")}
    alone["6"] = {"class_type": "CausVidTestShowShape", "inputs": {"latent": ["4", 0]}}
    run_ok(comfy_server, alone)


def test_a_cache_larger_than_free_ram_is_refused_before_allocation(comfy_server, standins):
    """On the CPU nothing makes room the way model management does on a GPU: a 1020-frame window at 4096x4096
    (hundreds of GB of KV cache) is refused with the sizes, and the server goes on serving."""
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=LENGTH)
    (sampler_id,) = eg.find_nodes(prompt, "CausVidSampler")
    big = json_copy(prompt)
    big[sampler_id]["inputs"].update(width=4096, height=4096, cache="rolling", window=1020)
    result = comfy_server.run(big, timeout=300)
    assert result.status == "error", result.describe()
    message = result.error["exception_message"]
    assert "GiB of RAM" in message and "are free" in message and "kv_cache to fp8" in message, message
    run_ok(comfy_server, prompt)


def json_copy(prompt: dict) -> dict:
    import json

    return json.loads(json.dumps(prompt))


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "..\\..\\secret.safetensors"])
def test_checkpoint_names_outside_the_models_folder_are_rejected(comfy_server, standins, name):
    """A file name resolves only inside the models folder: anything else is refused (at validation, or by the
    loader as not found), nothing outside is read, and the next prompt runs."""
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=LENGTH)
    (loader_id,) = eg.find_nodes(prompt, "CausVidModelLoader")
    bad = json_copy(prompt)
    bad[loader_id]["inputs"]["ckpt_name"] = name
    try:
        result = comfy_server.run(bad, timeout=60)
    except PromptRejected as e:
        assert e.status == 400 and loader_id in e.body["node_errors"]
        assert "root:" not in repr(e.body)
    else:
        assert result.status == "error" and result.error["node_id"] == loader_id, result.describe()
        message = result.error["exception_message"]
        assert "not found" in message and "root:" not in message, message
    run_ok(comfy_server, prompt)


def test_frame_wise_preset_samples_one_latent_frame_per_block(comfy_server, standins):
    """Causal-Forcing++ frame-wise 2-step through the node: length 13 = 4 latent frames = 4 one-frame blocks, the
    first with 4 steps and the others with 2 (10 progress steps); lengths are checked against 1-frame blocks."""
    prompt = eg.standin_prompt(eg.load_api("causvid_1.3b_t2v"), width=W, height=H, length=13)
    (sampler_id,) = eg.find_nodes(prompt, "CausVidSampler")
    (save_id,) = eg.find_nodes(prompt, "SaveVideo")
    prompt[sampler_id]["inputs"]["preset"] = "Causal-Forcing++ frame-wise 2-step"
    result = run_ok(comfy_server, prompt)
    assert len([p for p in result.of_type("progress") if p["node"] == sampler_id]) == 4 + 3 * 2
    (path,) = comfy_server.output_paths(result, node_id=save_id)
    assert video_info(path)[0] == 13


def test_our_node_ids_never_clash_with_core_autoregressive_video_nodes():
    """Newer ComfyUI versions ship their own autoregressive Wan nodes and model types (EmptyARVideoLatent,
    SamplerARVideo, ARVideoI2V, WAN21_CausalAR): ours keep the CausVid prefix."""
    import ast

    ids = set()
    for path in (Path(__file__).resolve().parents[1] / "nodes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "node_id" and isinstance(node.value, ast.Constant):
                ids.add(node.value.value)
    assert len(ids) == 6 and all(i.startswith("CausVid") for i in ids), ids
    assert not ids & {"EmptyARVideoLatent", "SamplerARVideo", "ARVideoI2V", "LoadARVideoModel"}


def test_krea_recompute_samples_with_the_vae_and_continues_exactly(comfy_server, standins):
    """The Krea Realtime preset (recompute policy) through the nodes: without a VAE it stops with a message saying
    to connect one; with it, Sampler (12 latent frames) + Continue (9 more, a new prompt) equals one sampler run of
    two fragments bit for bit: Continue decodes the video so far again to warm up the VAE's causal cache."""
    import torch
    from safetensors.torch import load_file

    common = {"width": W, "height": H, "length": 45, "preset": "Krea Realtime 14B", "custom_steps": "", "seed": 5}
    prompt = {
        "1": {"class_type": "CausVidModelLoader", "inputs": {"ckpt_name": eg.CAUSVID_13B, "weight_dtype": "default"}},
        "2": {"class_type": "CausVidTestTinyCLIP", "inputs": {"width": TINY.text_dim, "seed": 0}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": eg.WAN_VAE}},
        "10": {"class_type": "CausVidTextEncode", "inputs": {"clip": ["2", 0], "text": "a cat walks"}},
        "11": {"class_type": "CausVidSampler", "inputs": {"model": ["1", 0], "positive": ["10", 0], "vae": ["3", 0],
                                                          "num_fragments": 1, **common}},
        "12": {"class_type": "CausVidTextEncode", "inputs": {"clip": ["2", 0], "text": "a dog runs"}},
        "13": {"class_type": "CausVidContinue", "inputs": {"model": ["1", 0], "state": ["11", 1], "vae": ["3", 0],
                                                           "positive": ["12", 0], "num_fragments": 1}},
        "14": {"class_type": "SaveLatent", "inputs": {"samples": ["13", 1], "filename_prefix": "e2e/krea_continued"}},
        "20": {"class_type": "CausVidTextEncode", "inputs": {"clip": ["2", 0], "text": "a cat walks\na dog runs"}},
        "21": {"class_type": "CausVidSampler", "inputs": {"model": ["1", 0], "positive": ["20", 0], "vae": ["3", 0],
                                                          "num_fragments": 2, **common}},
        "22": {"class_type": "SaveLatent", "inputs": {"samples": ["21", 0], "filename_prefix": "e2e/krea_single"}},
    }
    no_vae = json_copy(prompt)
    for nid in ("13", "14", "20", "21", "22"):
        del no_vae[nid]
    del no_vae["11"]["inputs"]["vae"]
    no_vae["15"] = {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0], "filename_prefix": "e2e/no_vae"}}
    failed = comfy_server.run(no_vae, timeout=120)
    assert failed.status == "error", failed.describe()
    assert "connect the Wan 2.1 VAE" in failed.error["exception_message"]

    result = run_ok(comfy_server, prompt, timeout=240)

    def latent(node_id: str) -> torch.Tensor:
        (path,) = comfy_server.output_paths(result, node_id=node_id)
        return load_file(str(path))["latent_tensor"]

    continued, single = latent("14"), latent("22")
    assert continued.shape[2] == single.shape[2] == 12 + 9
    assert torch.equal(continued, single), (continued - single).abs().max()


def pack_conditioning(text: str, width: int):
    """The test pack's CausVidTestConditioning of `text`, made again here: [1, 512, width], a seeded row per word
    and one for the end, zeros after."""
    import hashlib

    import torch

    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")
    context = torch.zeros(1, 512, width)
    n = len(text.split()) + 1
    context[:, :n] = torch.randn(1, n, width, generator=torch.Generator().manual_seed(seed)) * 0.1
    return context


SELF_FORCING, REWARD_FORCING, ROLLING_FORCING = "Self-Forcing / LongLive 1.3B", "Reward Forcing 1.3B", \
    "Rolling Forcing 1.3B"
INFINITY_ROPE = "Infinity-RoPE (Self-Forcing 1.3B)"


@pytest.mark.parametrize("speed, kv_cache, preset", [("exact", "bf16", SELF_FORCING), ("fast", "bf16", SELF_FORCING),
                                                     ("exact", "fp8", SELF_FORCING), ("fast", "bf16", REWARD_FORCING),
                                                     ("fast", "bf16", ROLLING_FORCING), ("fast", "bf16", INFINITY_ROPE)])
def test_the_nodes_latents_are_the_librarys_bit_for_bit(comfy_server, standins, speed, kv_cache, preset):
    """What CausVid Sampler returns is `causal.generate`'s video of the same file, prompt, seed, policy, compute
    dtype and KV cache, bit for bit (in VAE space, as the node hands it on): the node only adapts. Here on the CPU
    the node computes in float32 (ComfyUI's choice without a GPU; bf16 weights cast per op), and `fast` runs exact
    (its compiled kernels need CUDA). Reward Forcing's preset brings its own cache (an EMA sink of 3 in 9 frames,
    slot positions), past its first eviction; Rolling Forcing's its joint window of 5 blocks."""
    import torch
    from safetensors.torch import load_file

    import causal
    from causal.cache_policy import ema_sink, infinity_rope, rolling, sink
    from tools.comfy_inprocess import add_comfyui_to_sys_path

    text = "a fox runs through the snow"
    seconds, policy = {SELF_FORCING: (2.0, rolling(6)), REWARD_FORCING: (3.0, ema_sink(3, 9, 0.999)),
                       ROLLING_FORCING: (4.0, sink(3, 24)), INFINITY_ROPE: (2.0, infinity_rope(1, 6))}[preset]
    prompt = {
        "1": {"class_type": "CausVidModelLoader", "inputs": {"ckpt_name": eg.CAUSVID_13B, "weight_dtype": "bf16"}},
        "2": {"class_type": "CausVidTestConditioning", "inputs": {"text": text, "width": TINY.text_dim}},
        "3": {"class_type": "CausVidSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "width": W, "height": H, "length": LENGTH,
            "preset": preset, "custom_steps": "", "seed": 77, "num_fragments": 1,
            "cache": "rolling" if preset == SELF_FORCING else "preset default",
            "window": 6 if preset == SELF_FORCING else 0, "seconds": seconds, "speed": speed, "kv_cache": kv_cache}},
        "4": {"class_type": "SaveLatent", "inputs": {
            "samples": ["3", 0], "filename_prefix": f"e2e/library_{speed}_{kv_cache}_{preset[:4]}"}},
    }
    result = run_ok(comfy_server, prompt, timeout=120)
    (path,) = comfy_server.output_paths(result, node_id="4")
    node = load_file(str(path))["latent_tensor"]

    context = pack_conditioning(text, TINY.text_dim)
    model = causal.load_model(standins / "diffusion_models" / eg.CAUSVID_13B, dtype=torch.float32)
    frames = causal.prompts.frames_for_seconds(seconds)
    library = causal.generate(model, context, causal.Video(H, W, total_frames=frames), causal.SCHEDULES[preset], policy,
                              noise=causal.Noise(seed=77),
                              compute=causal.Compute(dtype=torch.float32, kv_cache_fp8=kv_cache == "fp8")).latents
    add_comfyui_to_sys_path()
    import comfy.latent_formats

    expected = comfy.latent_formats.Wan21().process_out(library.float())
    window = 5 * 3 if preset == ROLLING_FORCING else policy.window  # Rolling Forcing: its 5 blocks sampled together
    assert node.shape == expected.shape and node.shape[2] == frames > window  # past the window
    assert torch.equal(node, expected), (node - expected).abs().max()


def test_the_nodes_longlive2_latents_are_the_librarys_bit_for_bit(comfy_server, standins):
    """LongLive 2.0 5B through CausVid Sampler (its stand-in model_bf16.pt layout, the preset's own multi-shot sink
    cache, 6 s at 24 fps: five 8-frame blocks, past its 32-frame cache) equals `causal.generate` of the same file,
    prompt and seed bit for bit, in VAE space by the Wan 2.2 latent format; a start latent of the Wan 2.1 VAE and a
    Wan 2.1 preset are refused with what to use instead."""
    import torch
    from safetensors.torch import load_file

    import causal
    from tools.comfy_inprocess import add_comfyui_to_sys_path
    from tools.tiny import TINY_5B

    text, size = "a lighthouse in a storm", 64
    sampler = {"model": ["1", 0], "positive": ["2", 0], "width": size, "height": size, "length": 29,
               "preset": "LongLive 2.0 5B", "custom_steps": "", "seed": 21, "num_fragments": 1, "seconds": 6.0,
               "speed": "exact"}
    prompt = {
        "1": {"class_type": "CausVidModelLoader", "inputs": {"ckpt_name": eg.LONGLIVE2_5B, "weight_dtype": "bf16"}},
        "2": {"class_type": "CausVidTestConditioning", "inputs": {"text": text, "width": TINY_5B.text_dim}},
        "3": {"class_type": "CausVidSampler", "inputs": sampler},
        "4": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "e2e/longlive2"}},
    }
    result = run_ok(comfy_server, prompt, timeout=120)
    (path,) = comfy_server.output_paths(result, node_id="4")
    node = load_file(str(path))["latent_tensor"]

    context = pack_conditioning(text, TINY_5B.text_dim)
    model = causal.load_model(standins / "diffusion_models" / eg.LONGLIVE2_5B, dtype=torch.float32)
    assert model.config == TINY_5B
    schedule = causal.SCHEDULES["LongLive 2.0 5B"]
    library = causal.generate(model, context, causal.Video(size, size, total_frames=40), schedule,
                              causal.family_policy(schedule.name), noise=causal.Noise(seed=21),
                              compute=causal.Compute(dtype=torch.float32)).latents
    add_comfyui_to_sys_path()
    import comfy.latent_formats

    expected = comfy.latent_formats.Wan22().process_out(library.float())
    assert node.shape == expected.shape == (1, 48, 40, 4, 4)
    assert torch.equal(node, expected), (node - expected).abs().max()

    wrong = json_copy(prompt)
    wrong["5"] = {"class_type": "EmptyHunyuanLatentVideo",
                  "inputs": {"width": size, "height": size, "length": 1, "batch_size": 1}}
    wrong["3"]["inputs"]["start_latent"] = ["5", 0]
    failed = comfy_server.run(wrong, timeout=120)
    assert failed.status == "error", failed.describe()
    assert "VAE Encode an image or a video of that size with the Wan2.2 VAE (wan2.2_vae.safetensors)" in \
        failed.error["exception_message"], failed.describe()
    wrong = json_copy(prompt)
    wrong["3"]["inputs"].update(preset=SELF_FORCING, length=21)
    failed = comfy_server.run(wrong, timeout=120)
    assert failed.status == "error" and "choose the LongLive 2.0 5B preset" in failed.error["exception_message"], \
        failed.describe()


def test_longlive2_stream_refuses_a_wan21_vae_and_a_size_off_32(comfy_server, standins):
    """The LongLive 2.0 example with the Wan 2.1 VAE connected stops before sampling, naming the Wan 2.2 VAE; a size
    that is a multiple of 16 but not 32 is refused when the prompt is queued."""
    name = "causvid_longlive2_720p_multishot"
    prompt = eg.standin_prompt(eg.load_api(name), width=W, height=H, length=29, seconds=1.0)
    (vae_id,) = eg.find_nodes(prompt, "VAELoader")
    (stream_id,) = eg.find_nodes(prompt, "CausVidStreamToVideo")
    wrong = json_copy(prompt)
    wrong[vae_id]["inputs"]["vae_name"] = eg.WAN_VAE
    failed = comfy_server.run(wrong, timeout=120)
    assert failed.status == "error" and failed.error["node_id"] == stream_id, failed.describe()
    assert "decodes 16-channel latents" in failed.error["exception_message"] and \
        "connect wan2.2_vae.safetensors" in failed.error["exception_message"], failed.describe()
    assert not failed.of_type("progress")
    wrong = json_copy(prompt)
    wrong[stream_id]["inputs"]["height"] = 48
    with pytest.raises(PromptRejected) as excinfo:
        comfy_server.run(wrong, timeout=30)
    errors = excinfo.value.body["node_errors"][stream_id]["errors"]
    assert any("height must be a multiple of 32" in e["details"] for e in errors), errors


def test_a_stream_runs_on_multi_gpu_workers_and_matches_one_process(comfy_server, standins):
    """The ten-minute stream template shortened to 3 s, with CausVid Multi-GPU (two CPU workers) between its loader
    and Stream to Video: the mp4 shows the one-process run's frames, and every step's progress arrives.

    Not byte for byte: the blocks are (tests/test_multi_gpu_nodes.py), but ComfyUI's VAE on the CPU decodes the same
    latents a float32 ulp apart from run to run (one process alone too), now and then a pixel's uint8 rounding flips,
    and x264 then encodes that frame differently. Measured on 2026-12-07: 0.11 % of the pixels apart for the same
    video, 99.9997 % for another seed; the test allows 1 %. At 128 x 96 because x264 (threads=1 too) encodes the
    same 64 x 48 frames differently from run to run."""
    template = eg.load_api("causvid_stream_ten_minutes")
    base = eg.standin_prompt(template, width=128, height=96, length=eg.standin_length(template, LENGTH), seconds=3.0)
    (stream_id,) = eg.find_nodes(base, "CausVidStreamToVideo")
    base[stream_id]["inputs"]["seed"] = 11
    marked = json.loads(json.dumps(base))
    marked["90"] = {"class_type": "CausVidMultiGPU", "inputs": {"model": marked[stream_id]["inputs"]["model"],
                                                                "gpus": "cpu,cpu"}}
    marked[stream_id]["inputs"]["model"] = ["90", 0]
    paths = []
    for prompt in (base, marked):
        result = run_ok(comfy_server, prompt)
        check_progress(result, prompt)
        paths += comfy_server.output_paths(result, node_id=stream_id)
    assert len(set(paths)) == 2
    one, workers = (video_frames(p) for p in paths)
    assert one.shape == workers.shape == (57, 96, 128, 3)
    apart = (one != workers).any(axis=-1).mean()
    assert apart < 0.01, f"{apart:.1%} of the pixels differ from the one-process video"
    assert "CausVid Multi-GPU: starting 2 workers (cpu, cpu)" in comfy_server.log_tail(200000)
