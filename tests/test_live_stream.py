"""Live steering of CausVid Stream to Video, the node side (`nodes/live.py`): the run that takes prompts, its saved
timeline, and the HTTP routes on ComfyUI's server. The sampler's side (a live prompt equals a queued timeline bit for
bit) is tests/test_live_prompts.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import torch

from tools.comfy_inprocess import pack_module
from tools.comfy_server import comfyui_available
from tools.tiny import TINY, latent_size, prompt, tiny_model

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


class Gated:
    """An encode that records each text and the thread it ran on, and returns only once its call is released."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.threads: list[threading.Thread] = []
        self.gates: list[threading.Event] = []
        self.called = threading.Condition()

    def __call__(self, text: str) -> torch.Tensor:
        gate = threading.Event()
        with self.called:
            self.texts.append(text)
            self.threads.append(threading.current_thread())
            self.gates.append(gate)
            self.called.notify_all()
        assert gate.wait(10), f"encode of {text!r} never released"
        return prompt(seed=len(self.texts) + 10)

    def wait_calls(self, n: int) -> bool:
        with self.called:
            return self.called.wait_for(lambda: len(self.texts) >= n, 10)


def _encode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("causvid-live-encode-")]


def _texts(run) -> list[str]:
    return [text for _, text in run.used()]


def test_a_prompt_is_encoded_on_the_runs_own_thread_while_the_block_samples(live):
    """The encode runs on the run's encode thread: the block that ends meanwhile is not held by it (nor is the one
    that starts), and the first block to start once it is encoded takes it."""
    from comfyui_causvid.causal.prompts import seconds_at

    encode = Gated()
    run = live.LiveRun("7", "a fox sleeps", prompt(seed=1), encode, max_tokens=TINY.text_len)
    assert run.submit("  the fox\n wakes   up ") == "the fox wakes up"  # cleaned as CausVid Text Encode cleans
    assert encode.wait_calls(1)
    ended = threading.Event()
    sampler = threading.Thread(target=lambda: (run.between_blocks(), ended.set()), name="sampler")
    sampler.start()
    assert ended.wait(5), "the block boundary waited for the encode"
    sampler.join()
    assert run.blocks == 1 and not run.wait_encoded(0.05)
    assert run.prompts.change_at(3).context is run.prompts[0].context  # block 1 starts before the encode ends
    encode.gates[0].set()
    assert run.wait_encoded(5)
    run.between_blocks()
    run.prompts.change_at(6)
    (thread,) = encode.threads
    assert thread not in (threading.main_thread(), sampler) and thread.name.startswith("causvid-live-encode-")
    assert run.used() == [(0.0, "a fox sleeps"), (seconds_at(6), "the fox wakes up")] and run.error is None
    assert run.status()["prompts"][1] == {"seconds": 1.3125, "text": "the fox wakes up"}  # video frame 21 / 16 fps
    run.close()


def test_a_prompt_sent_while_another_encodes_follows_it_and_of_several_the_last(live):
    encode = Gated()
    run = live.LiveRun("7", "first", prompt(seed=1), encode)
    run.submit("one")
    assert encode.wait_calls(1)
    run.submit("two")
    run.submit("three")  # while "one" encodes: replaces "two"
    encode.gates[0].set()
    assert encode.wait_calls(2)  # "one" handed over, "three" under way
    run.prompts.change_at(3)
    encode.gates[1].set()
    assert run.wait_encoded(5)
    run.prompts.change_at(6)
    assert encode.texts == ["one", "three"] and _texts(run) == ["first", "one", "three"]
    assert [c.frame for c in run.prompts] == [0, 3, 6]
    run.close()


def test_closing_a_run_joins_its_encode_thread_and_drops_a_prompt_not_begun(live):
    encode = Gated()
    run = live.LiveRun("7", "first", prompt(seed=1), encode)
    run.close()  # no prompt was sent: no thread to join
    assert not _encode_threads()
    run = live.LiveRun("7", "first", prompt(seed=1), encode)
    run.submit("one")
    assert encode.wait_calls(1) and len(_encode_threads()) == 1
    run.submit("two")
    closer = threading.Thread(target=run.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # waits for the encode under way
    encode.gates[0].set()
    closer.join(5)
    assert not closer.is_alive() and not _encode_threads()
    assert encode.texts == ["one"]  # no block would take "two": never encoded
    with pytest.raises(ValueError, match="has ended"):
        run.submit("late")
    run.close()


def test_an_encode_that_never_returns_cannot_hang_the_end_of_the_run(live):
    encode = Gated()
    run = live.LiveRun("7", "first", prompt(seed=1), encode)
    run.submit("one")
    assert encode.wait_calls(1)
    began = time.monotonic()
    run.close(timeout=0.1)
    assert time.monotonic() - began < 5
    (thread,) = _encode_threads()
    assert thread.daemon  # left behind, it cannot keep the process alive
    encode.gates[0].set()
    thread.join(5)
    assert not thread.is_alive()


def test_a_shutdown_inside_an_encode_is_not_swallowed(live, monkeypatch):
    """A BaseException (KeyboardInterrupt, SystemExit) ends the encode thread as it ends any thread; the run takes
    no more prompts instead of queueing them for a thread that is gone."""
    raised: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args.exc_value))

    def interrupted(text):
        raise KeyboardInterrupt

    run = live.LiveRun("7", "first", prompt(seed=1), interrupted)
    run.submit("one")
    assert run.wait_encoded(5)
    for thread in _encode_threads():
        thread.join(5)
    assert len(raised) == 1 and isinstance(raised[0], KeyboardInterrupt) and run.error is None
    with pytest.raises(ValueError, match="has ended"):
        run.submit("two")
    run.close()


def test_the_saved_timeline_reads_back_as_the_frames_it_recorded(live):
    """`seconds: prompt` lines at the first video frame of each switch's latent frame: CausVid Text Encode's parser
    and the sampler's timeline put every switch back at its frame, with and without start latents."""
    from comfyui_causvid.causal.prompts import timeline_from_seconds
    from comfyui_causvid.causal.text import split_timeline

    for start_frames in (0, 1, 3):
        run = live.LiveRun("7", "first", prompt(seed=1), _encoder([]), start_frames=start_frames)
        for frame in (3, 6, 300, 3999):
            run.submit(f"prompt at {frame}")
            assert run.wait_encoded(5)
            run.between_blocks()
            run.prompts.change_at(frame)
        run.close()
        lines = split_timeline(run.timeline_text())
        assert [line.text for line in lines] == ["first"] + [f"prompt at {f}" for f in (3, 6, 300, 3999)]
        timeline = timeline_from_seconds([(line.start, line.text) for line in lines], start_frames)
        assert [c.frame for c in timeline] == [c.frame for c in run.prompts] == [0, 3, 6, 300, 3999]


def test_bad_live_text_is_refused_and_a_failed_encode_keeps_the_video_going(live):
    run = live.LiveRun("7", "first", prompt(seed=1), _encoder([]))
    for bad, why in ((3, "must be a string"), ("x" * (live.MAX_TEXT + 1), "at most"), (" \n ", "empty")):
        with pytest.raises(ValueError, match=why):
            run.submit(bad)

    def sometimes_broken(text):
        if "broken" in text:
            raise RuntimeError("the text encoder is gone")
        return prompt(seed=2)

    run = live.LiveRun("7", "first", prompt(seed=1), sometimes_broken)
    run.submit("broken second")
    assert run.wait_encoded(5)  # logged and reported, not raised
    assert "'broken second' was not used: the text encoder is gone" in run.status()["error"]
    run.between_blocks()
    assert len(run.prompts) == 1 and run.prompts.change_at(3).context is run.prompts[0].context
    run.submit("third")
    assert run.wait_encoded(5) and run.error is None  # a prompt used clears it
    run.prompts.change_at(6)
    assert _texts(run) == ["first", "third"]
    run.close()


def test_a_paused_run_waits_between_blocks_takes_the_prompt_sent_meanwhile_and_still_cancels(live):
    """Paused, the sampling thread waits after its block (looking for a Cancel); a prompt sent while it waits is
    encoded meanwhile and taken by the block after it; a Cancel raised while paused ends the wait."""
    seen: list[str] = []
    run = live.LiveRun("7", "first", prompt(seed=1), _encoder(seen))
    run.pause()
    assert run.paused and run.status()["paused"]
    done = threading.Event()
    worker = threading.Thread(target=lambda: (run.between_blocks(), done.set()))
    worker.start()
    assert not done.wait(3 * live.PAUSE_POLL_S)  # held after its block
    run.submit("the fox wakes up")
    assert run.wait_encoded(5) and seen == ["the fox wakes up"] and not done.is_set()  # encoded while it holds
    run.pause(False)
    assert done.wait(5) and not run.paused
    worker.join()
    run.prompts.change_at(3)
    assert _texts(run) == ["first", "the fox wakes up"]

    class Cancelled(Exception):
        pass

    def cancel():
        raise Cancelled

    run.pause()
    with pytest.raises(Cancelled):
        run.between_blocks(cancel)
    assert run.blocks == 2
    run.close()


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
    assert run.wait_encoded(5)
    run.between_blocks()
    run.prompts.change_at(3)
    assert _texts(run) == ["first", "the fox wakes up"]  # the late one never arrived
    run.close()


def test_a_video_steered_through_the_encode_thread_equals_its_recorded_timeline_queued(live):
    """Prompts encoded on the encode thread (inference tensors made on another thread) drive the blocks that start
    after them, and the timeline recorded, queued, gives the same video bit for bit."""
    causal = pack_module("causal")
    policy = pack_module("causal.cache_policy").sink(1, 6)
    schedule = causal.Schedule("two steps", (1000, 500), shift=8.0, warp=False)
    model = tiny_model(torch.bfloat16)
    h, w = latent_size(32, 48)
    noise = torch.randn(1, 15, 16, h, w, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    run = live.LiveRun("7", "first", prompt(seed=1), _encoder([]), max_tokens=TINY.text_len)

    def progress(p):
        if p.step == p.steps - 1:  # as the node does: between_blocks after a block's last step
            if p.block in (0, 2):
                run.submit(f"after block {p.block}")
                assert run.wait_encoded(5)
            run.between_blocks()

    def video(context, progress=None):
        return causal.generate(model, context, causal.Video(32, 48, total_frames=15), schedule, policy,
                               noise=causal.Noise(seed=3, initial=noise),
                               output=causal.Output(progress=progress)).latents

    steered = video(run.prompts, progress)
    run.close()
    assert [c.frame for c in run.prompts] == [0, 3, 9] and _texts(run) == ["first", "after block 0", "after block 2"]
    assert torch.equal(steered, video(list(run.prompts)))
    assert not torch.equal(steered, video(run.prompts[0].context))


def test_the_encode_thread_runs_comfyuis_clip_as_causvid_text_encode_does(live):
    """A genuine (tiny) ComfyUI umT5 CLIP, encoding on the run's encode thread (its model management called from
    there, loads taking turns): the embedding a block takes is CausVid Text Encode's, bit for bit."""
    from tools.comfy_inprocess import import_folder
    from tools.comfy_server import TEST_NODES_DIR

    clip = import_folder("causvid_test_nodes", TEST_NODES_DIR).build_tiny_clip(64, 0)
    text = pack_module("nodes.text")
    with torch.inference_mode():
        first, wakes = (text.encode_prompt(clip, t)[0] for t in ("a fox sleeps", "the fox wakes up"))
    run = live.LiveRun("7", "a fox sleeps", first, live.comfy_encoder(clip), max_tokens=512,
                       device=clip.patcher.load_device)
    with live.streaming_live(run, live.Registry()):
        run.submit("the fox wakes up")
        assert run.wait_encoded(60) and run.error is None
        taken = run.prompts.change_at(3).context
    assert taken is not wakes and torch.equal(taken, wakes) and not _encode_threads()


def test_the_comfy_encoder_gives_a_cancel_it_saw_back_to_the_sampling_thread(live):
    """ComfyUI's ops clear the Cancel flag as they raise it; seen by the encode thread, it is set again."""
    import comfy.model_management as mm

    class Clip:
        tokenizer = None

        def tokenize(self, text):
            return {"t5xxl": [[(7, 1.0)]]}

        def encode_from_tokens(self, tokens, return_dict):
            mm.throw_exception_if_processing_interrupted()  # as comfy.ops does before every forward
            return {"cond": prompt(seed=5)}

    encode = live.comfy_encoder(Clip())
    assert torch.equal(encode("a fox"), prompt(seed=5))
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            encode("a fox")
        assert mm.processing_interrupted()
    finally:
        mm.interrupt_current_processing(False)


def test_model_loads_take_turns_while_a_live_run_streams_and_the_run_closes_after(live, monkeypatch):
    """Loads take turns, each holding the lock that CUDA graph captures and compiled kernels hold (a load may empty
    PyTorch's cache, synchronizing the device under a capture)."""
    import comfy.model_management as mm

    kernels = pack_module("causal.kernels")
    inside, most, under_lock = [0], [0], []
    lock = threading.Lock()

    def load_models_gpu(models, **kwargs):
        under_lock.append(kernels.one_at_a_time._is_owned())
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        with lock:
            inside[0] -= 1

    monkeypatch.setattr(mm, "load_models_gpu", load_models_gpu)
    registry = live.Registry()
    run = live.LiveRun("7", "first", prompt(seed=1), _encoder([]))
    with pytest.raises(RuntimeError, match="sampling failed"):
        with live.streaming_live(run, registry):
            assert registry.all() == [run]
            run.submit("one")
            # mm.load_model_gpu (the CLIP's load) calls load_models_gpu by its module name: it takes turns too
            threads = [threading.Thread(target=mm.load_models_gpu, args=([],)) for _ in range(3)] + \
                [threading.Thread(target=mm.load_model_gpu, args=(None,)) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            raise RuntimeError("sampling failed")
    assert most[0] == 1 and all(under_lock) and len(under_lock) == 6
    assert mm.load_models_gpu is load_models_gpu  # ComfyUI's own again
    assert registry.all() == [] and not _encode_threads()
    with pytest.raises(ValueError, match="has ended"):
        run.submit("late")


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
