"""Smoke test of the end-to-end harness: a real headless ComfyUI 0.3.75 with both packs loaded,
the tiny umT5 test CLIP, and a tiny random Wan 2.1 VAE decoding to an mp4."""

from __future__ import annotations

import json

import pytest

from tools.comfy_server import MAIN_PACK_NAME, TEST_PACK_NAME, PromptRejected, main_pack_present, video_info
from tools.tiny import TINY

pytestmark = pytest.mark.comfyui

WIDTH = TINY.text_dim  # tiny umT5 width == text_dim of the tiny causal models
CORE_NODES = ("CLIPTextEncode", "VAEDecode", "VAELoader", "EmptyHunyuanLatentVideo", "CreateVideo", "SaveVideo")
TEST_NODES = ("CausVidTestTinyCLIP", "CausVidTestConditioning", "CausVidTestProgress", "CausVidTestShowShape")


def test_server_started_with_packs(comfy_server):
    assert comfy_server.running
    assert comfy_server.pack_import.get(TEST_PACK_NAME) is True, comfy_server.log_tail()
    if main_pack_present():
        # listed in ComfyUI's import table; whether its nodes load is asserted by the pack's own tests
        assert MAIN_PACK_NAME in comfy_server.pack_import, comfy_server.log_tail()
    stats = comfy_server.get("/system_stats")
    assert stats["system"]["comfyui_version"] == "0.3.75"
    assert [d["type"] for d in stats["devices"]] == ["cpu"]


def test_object_info_has_core_and_test_nodes(comfy_server):
    info = comfy_server.object_info()
    missing = [n for n in CORE_NODES + TEST_NODES if n not in info]
    assert not missing, missing
    tiny = comfy_server.object_info("CausVidTestTinyCLIP")
    assert tiny["output"] == ["CLIP"]
    assert tiny["input"]["required"]["width"][1]["default"] == WIDTH


def _graph(vae_name: str, prompt_text: str = "a cat walking on the grass") -> dict:
    return {
        "1": {"class_type": "CausVidTestTinyCLIP", "inputs": {"width": WIDTH, "seed": 0}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt_text, "clip": ["1", 0]}},
        "3": {"class_type": "CausVidTestShowShape", "inputs": {"conditioning": ["2", 0], "latent": ["4", 0]}},
        "4": {"class_type": "EmptyHunyuanLatentVideo",
              "inputs": {"width": 64, "height": 48, "length": 9, "batch_size": 1}},
        "5": {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["5", 0]}},
        "7": {"class_type": "CreateVideo", "inputs": {"images": ["6", 0], "fps": 16.0}},
        "8": {"class_type": "SaveVideo",
              "inputs": {"video": ["7", 0], "filename_prefix": "causvid_smoke/tiny",
                         "format": "auto", "codec": "auto"}},
    }


def test_tiny_clip_and_tiny_vae_to_mp4(comfy_server, tiny_vae_name):
    assert tiny_vae_name in comfy_server.object_info("VAELoader")["input"]["required"]["vae_name"][0]
    result = comfy_server.run(_graph(tiny_vae_name), timeout=120)
    assert result.status == "success", result.describe() + "\n" + comfy_server.log_tail(3000)
    assert {"1", "2", "4", "5", "6", "7"} <= {d["node"] for d in result.of_type("executing") if d["node"]}

    # the tiny umT5 produced genuine Wan-style CONDITIONING: [1, 512, width], zero padded
    (text,) = result.ui_text("3")
    info = json.loads(text)
    (cond,) = info["conditioning"]
    assert cond["shape"] == [1, 512, WIDTH]
    assert cond["dtype"] == "float32" and cond["finite"] and cond["pooled_output_is_none"]
    assert 1 < cond["nonzero_rows"] < 512
    assert info["latent"]["shape"] == [1, 16, 3, 6, 8]

    # the tiny VAE decoded 3 latent frames to 1 + 4 * 2 = 9 video frames, saved as mp4
    (path,) = comfy_server.output_paths(result, node_id="8")
    assert path.suffix == ".mp4" and path.is_file(), result.outputs
    frames, width, height, fps = video_info(path)
    assert (frames, width, height, round(fps)) == (9, 64, 48, 16)


def test_validation_error_is_rejected(comfy_server, tiny_vae_name):
    graph = _graph(tiny_vae_name)
    graph["4"]["inputs"]["width"] = 8  # below min=16
    with pytest.raises(PromptRejected) as excinfo:
        comfy_server.run(graph, timeout=30)
    assert excinfo.value.status == 400
    assert "4" in excinfo.value.body["node_errors"]


def _progress_graph(steps: int, sleep_s: float) -> dict:
    return {
        "1": {"class_type": "EmptyHunyuanLatentVideo",
              "inputs": {"width": 64, "height": 48, "length": 9, "batch_size": 1}},
        "2": {"class_type": "CausVidTestProgress", "inputs": {"latent": ["1", 0], "steps": steps, "sleep_s": sleep_s}},
        "3": {"class_type": "CausVidTestShowShape", "inputs": {"latent": ["2", 0]}},
    }


def test_progress_and_previews(comfy_server):
    result = comfy_server.run(_progress_graph(steps=4, sleep_s=0.0), timeout=60)
    assert result.status == "success", result.describe()
    progress = [p for p in result.of_type("progress") if p.get("node") == "2"]
    assert [p["value"] for p in progress] == [1, 2, 3, 4] and progress[-1]["max"] == 4
    assert result.preview_frames == 4, result.describe()
    assert json.loads(result.ui_text("3")[0])["latent"]["shape"] == [1, 16, 3, 6, 8]


def test_interrupt(comfy_server):
    sent = []

    def interrupt_on_first_progress(mtype, data, server):
        if mtype == "progress" and not sent:
            sent.append(server.interrupt())

    result = comfy_server.run(_progress_graph(steps=50, sleep_s=0.1), timeout=60,
                              on_message=interrupt_on_first_progress)
    assert sent == [200]
    assert result.status == "interrupted", result.describe()
    assert len(result.of_type("progress")) < 50
    assert (result.history.get("status") or {}).get("status_str") == "error"
