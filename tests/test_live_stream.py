"""Live steering of CausVid Stream to Video, the node side (`nodes/live.py`): the run that takes prompts, its saved
timeline, and the HTTP routes on ComfyUI's server. The sampler's side (a live prompt equals a queued timeline bit for
bit) is tests/test_live_prompts.py."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from tools.comfy_inprocess import pack_module
from tools.comfy_server import comfyui_available
from tools.tiny import TINY, prompt

pytestmark = pytest.mark.comfyui

if not comfyui_available():
    pytest.skip("ComfyUI is not installed (scripts/setup.sh)", allow_module_level=True)


@pytest.fixture(scope="module")
def live():
    return pack_module("nodes.live")


def _encoder(seen: list[str]):
    def encode(text: str) -> torch.Tensor:
        seen.append(text)
        return prompt(seed=len(seen) + 10)
    return encode


def test_a_prompt_sent_during_a_block_is_encoded_after_it_and_recorded_at_the_next(live):
    seen: list[str] = []
    run = live.LiveRun("7", "a fox sleeps", prompt(seed=1), _encoder(seen), max_tokens=TINY.text_len)
    assert run.submit("  the fox\n wakes   up ") == "the fox wakes up"  # cleaned as CausVid Text Encode cleans
    run.submit("the fox runs")  # sent before the block ended: replaces the one before
    run.between_blocks()  # block 0 ends
    assert seen == ["the fox runs"] and run.blocks == 1
    assert [c.frame for c in run.prompts] == [0]  # taken at the next block start, not before
    run.prompts.change_at(3)
    run.between_blocks()
    assert seen == ["the fox runs"]  # nothing new: nothing encoded
    assert run.used() == [(0.0, "a fox sleeps"), (0.5625, "the fox runs")]  # latent frame 3 starts at video frame 9
    assert run.status()["prompts"][1] == {"seconds": 0.5625, "text": "the fox runs"}


def test_the_saved_timeline_reads_back_as_the_frames_it_recorded(live):
    """`seconds: prompt` lines at the first video frame of each switch's latent frame: CausVid Text Encode's parser
    and the sampler's timeline put every switch back at its frame, with and without start latents."""
    from comfyui_causvid.causal.prompts import timeline_from_seconds
    from comfyui_causvid.causal.text import split_timeline

    for start_frames in (0, 1, 3):
        run = live.LiveRun("7", "first", prompt(seed=1), _encoder([]), start_frames=start_frames)
        for frame in (3, 6, 300, 3999):
            run.submit(f"prompt at {frame}")
            run.between_blocks()
            run.prompts.change_at(frame)
        lines = split_timeline(run.timeline_text())
        assert [line.text for line in lines] == ["first"] + [f"prompt at {f}" for f in (3, 6, 300, 3999)]
        timeline = timeline_from_seconds([(line.start, line.text) for line in lines], start_frames)
        assert [c.frame for c in timeline] == [c.frame for c in run.prompts] == [0, 3, 6, 300, 3999]


def test_bad_live_text_is_refused_and_a_failed_encode_keeps_the_video_going(live):
    run = live.LiveRun("7", "first", prompt(seed=1), _encoder([]))
    for bad, why in ((3, "must be a string"), ("x" * (live.MAX_TEXT + 1), "at most"), (" \n ", "empty")):
        with pytest.raises(ValueError, match=why):
            run.submit(bad)

    def broken(text):
        raise RuntimeError("the text encoder is gone")

    run = live.LiveRun("7", "first", prompt(seed=1), broken)
    run.submit("second")
    run.between_blocks()  # logged and reported, not raised
    assert "'second' was not used: the text encoder is gone" in run.status()["error"]
    assert len(run.prompts) == 1 and run.prompts.change_at(3).context is run.prompts[0].context


def test_a_paused_run_waits_between_blocks_takes_the_prompt_sent_meanwhile_and_still_cancels(live):
    """Paused, the sampling thread waits after its block (looking for a Cancel), and a prompt sent while it waits is
    encoded once it goes on; a Cancel raised while paused ends the wait."""
    import threading

    seen: list[str] = []
    run = live.LiveRun("7", "first", prompt(seed=1), _encoder(seen))
    run.pause()
    assert run.paused and run.status()["paused"]
    done = threading.Event()
    worker = threading.Thread(target=lambda: (run.between_blocks(), done.set()))
    worker.start()
    assert not done.wait(3 * live.PAUSE_POLL_S)  # held after its block
    run.submit("the fox wakes up")
    run.pause(False)
    assert done.wait(5) and seen == ["the fox wakes up"] and not run.paused
    worker.join()

    class Cancelled(Exception):
        pass

    def cancel():
        raise Cancelled

    run.pause()
    with pytest.raises(Cancelled):
        run.between_blocks(cancel)
    assert run.blocks == 2


def test_the_routes_list_runs_take_prompts_and_refuse_bad_requests(live):
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    registry = live.Registry()
    run = live.LiveRun("12", "first", prompt(seed=1), _encoder([]))
    registry.add(run)
    routes = web.RouteTableDef()
    live.add_routes(routes, registry)
    app = web.Application()
    app.add_routes(routes)

    async def exercise():
        async with TestClient(TestServer(app)) as client:
            listed = await (await client.get("/causvid/live")).json()
            assert listed == [run.status()] and listed[0]["node"] == "12"
            url = f"/causvid/live/{run.id}/prompt"
            ok = await client.post(url, json={"text": "the fox wakes up"})
            assert ok.status == 202 and (await ok.json())["queued"] == "the fox wakes up"
            answers = [await client.post(url, data="not json"), await client.post(url, json={"prompt": "x"}),
                       await client.post(url, json={"text": ""}), await client.post(url, json=["text"]),
                       await client.post("/causvid/live/nope/prompt", json={"text": "x"})]
            assert [a.status for a in answers] == [400, 400, 400, 400, 404]
            assert "is empty" in (await answers[2].json())["error"]
            pause = f"/causvid/live/{run.id}/pause"
            held = await client.post(pause, json={"paused": True})
            assert held.status == 200 and (await held.json())["paused"] and run.paused
            bad = [await client.post(pause, json={"paused": "yes"}), await client.post(pause, data="x"),
                   await client.post("/causvid/live/nope/pause", json={"paused": True})]
            assert [b.status for b in bad] == [400, 400, 404] and run.paused
            going = await client.post(pause, json={"paused": False})
            assert going.status == 200 and not (await going.json())["paused"] and not run.paused
            registry.remove(run)
            gone = await client.post(url, json={"text": "late"})
            assert gone.status == 404 and await (await client.get("/causvid/live")).json() == []

    asyncio.run(exercise())
    run.between_blocks()
    run.prompts.change_at(3)
    assert [text for _, text in run.used()] == ["first", "the fox wakes up"]  # the late one never arrived


def test_a_live_stream_turns_to_a_prompt_sent_over_http_and_saves_its_timeline(comfy_server, standins):
    """Through a real ComfyUI: the stream template with live_clip connected announces its run over the websocket; a
    prompt POSTed after its first block drives it from a later block, and the saved `seconds: prompt` lines hold
    both prompts, the second at a block start after the first block."""
    from comfyui_causvid.causal.prompts import seconds_at
    from tools import workflows as eg
    from tools.comfy_server import video_info

    prompt = eg.standin_prompt(eg.load_api("causvid_stream_ten_minutes"), width=64, height=48, length=21, seconds=6.0)
    (stream_id,) = eg.find_nodes(prompt, "CausVidStreamToVideo")
    inputs = prompt[stream_id]["inputs"]
    text_id = inputs["positive"][0]
    prompt[text_id]["inputs"]["text"] = "a fox sleeps"
    inputs["live_clip"] = prompt[text_id]["inputs"]["clip"]
    prompt["90"] = {"class_type": "CausVidTestShowShape", "inputs": {"state": [stream_id, 0]}}
    statuses: list[dict] = []
    replies: list[tuple[int, dict]] = []

    def steer(mtype, data, server):
        if mtype != "causvid.live":
            return
        statuses.append(data)
        if data["blocks"] == 1 and not replies:
            replies.append(server.post(f"/causvid/live/{data['run']}/prompt", {"text": "the fox wakes up"}))

    result = comfy_server.run(prompt, timeout=120, on_message=steer)
    assert result.status == "success", result.describe() + "\n" + comfy_server.log_tail(3000)
    assert replies and replies[0][0] == 202, replies
    assert statuses[0]["blocks"] == 0 and statuses[0]["node"] == stream_id
    (mp4,) = comfy_server.output_paths(result, node_id=stream_id)
    assert video_info(mp4)[0] == 105  # 6 s: 27 latent frames (whole blocks), the whole video written
    saved = (mp4.parent / mp4.name.replace(".mp4", ".prompts.txt")).read_text()
    assert json.loads(result.ui_text("90")[0])["live_prompts"] == saved  # the state holds them too
    lines = saved.splitlines()
    assert lines[0] == "0: a fox sleeps" and len(lines) == 2 and lines[1].endswith(": the fox wakes up")
    seconds = float(lines[1].split(":")[0])
    assert seconds >= seconds_at(6), lines  # block 2 starts at latent frame 6 at the earliest
    assert statuses[-1]["prompts"][1] == {"seconds": seconds, "text": "the fox wakes up"}
    assert comfy_server.get("/causvid/live") == []  # the run is gone once it finished
