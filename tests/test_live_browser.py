"""Live steering in ComfyUI's real page, in headless Chromium (Playwright): the pack's panel on CausVid Stream to
Video (web/causvid_live.js, a DOM widget) comes alive when a live stream starts, sends the prompt typed into it,
and the video takes it; Pause holds it; the page gets the stream's previews (ComfyUI shows them on the node).

Needs Chromium (/usr/bin/chromium), Playwright and comfyui-frontend-package, which scripts/setup.sh installs; skipped
without them, except under CI (env CI set), where that is an error.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfyui

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium on a closed network: no background connections, no sandbox as root, no GPU
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOT = os.environ.get("CAUSVID_LIVE_SCREENSHOT")
"""Where to save a screenshot of the page with the panel (docs/images/live_panel.png was taken so)."""


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
        import comfyui_frontend_package  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed: run scripts/setup.sh"
    if not Path(CHROMIUM).exists():
        return "Chromium is not installed (scripts/setup.sh installs Debian's chromium)"
    return None


@pytest.fixture(scope="module")
def page(comfy_server, standins):
    if (why := _browser_missing()) is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    # a returning user's page: no first-visit template browser, no missing-model dialog for the stand-ins' names
    for setting in ("Comfy.TutorialCompleted", "Comfy.Workflow.ShowMissingModelsWarning"):
        comfy_server.post(f"/settings/{setting}", setting == "Comfy.TutorialCompleted")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(comfy_server.url, timeout=60_000)
            page.wait_for_function("() => window.app?.extensions?.some(e => e.name === 'comfyui-causvid.live')",
                                   timeout=60_000)
            yield page
        finally:
            browser.close()


def test_a_prompt_typed_into_the_live_panel_turns_the_stream(comfy_server, page):
    """The live template, queued for this page's client: the panel comes alive with the run's first prompt, the
    page gets previews, and a prompt typed into it once a block is made is queued, used from a later block and
    saved in the video's timeline."""
    from tools import workflows as eg

    prompt = eg.standin_prompt(eg.load_api("causvid_stream_ten_minutes"), width=64, height=48, length=21,
                               seconds=30.0)
    (stream_id,) = eg.find_nodes(prompt, "CausVidStreamToVideo")
    inputs = prompt[stream_id]["inputs"]
    text_id = inputs["positive"][0]
    prompt[text_id]["inputs"]["text"] = "a fox sleeps"
    inputs["live_clip"] = prompt[text_id]["inputs"]["clip"]
    page.evaluate("async (graph) => await window.app.loadGraphData(graph)", eg.load_ui("causvid_live_stream"))
    page.evaluate(f"() => {{ window.app.canvas.ds.scale = 0.8; "
                  f"window.app.canvas.centerOnNode(window.app.graph.getNodeById({stream_id})); }}")
    page.evaluate("async () => (await import('/scripts/api.js')).api.addEventListener("
                  "'b_preview', () => { window.causvidTestPreviews = (window.causvidTestPreviews ?? 0) + 1; })")
    client_id = page.evaluate("async () => (await import('/scripts/api.js')).api.clientId")
    assert client_id
    panel = page.locator(f'.comfyui-causvid-live[data-node="{stream_id}"]')
    assert panel.locator("textarea").is_disabled()  # no run yet: the panel says how to start one
    status, body = comfy_server.post("/prompt", {"prompt": prompt, "client_id": client_id})
    assert status == 200, body

    selector = f'.comfyui-causvid-live[data-node="{stream_id}"]'
    page.wait_for_function(f"() => Number(document.querySelector('{selector}')?.dataset.blocks) >= 1",
                           timeout=60_000)
    assert "a fox sleeps" in panel.locator("ol").inner_text()
    panel.locator("textarea").fill("the fox wakes up")
    panel.locator("textarea").press("Enter")
    sent = "Encoding, for the next block"
    page.wait_for_function(f"() => document.querySelector('{selector}').textContent.includes('{sent}')",
                           timeout=30_000)
    page.wait_for_function(f"() => document.querySelector('{selector} ol').textContent.includes('the fox wakes up')",
                           timeout=60_000)
    assert page.evaluate("() => window.causvidTestPreviews") >= 1
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT)

    # Pause holds the video after the block being made; Resume lets it go on
    blocks = f"() => Number(document.querySelector('{selector}').dataset.blocks)"
    panel.get_by_role("button", name="Pause").click()
    page.wait_for_function(f"() => document.querySelector('{selector}').textContent.includes(', paused')",
                           timeout=30_000)
    page.wait_for_timeout(1500)  # the block being made finishes
    held = page.evaluate(blocks)
    page.wait_for_timeout(1500)
    assert page.evaluate(blocks) == held
    panel.get_by_role("button", name="Resume").click()
    page.wait_for_function(f"() => ({blocks})() > {held}", timeout=30_000)
    page.wait_for_function(f"() => document.querySelector('{selector}').textContent.includes('The run finished')",
                           timeout=180_000)
    assert panel.locator("textarea").is_disabled()

    from tools.comfy_server import RunResult

    history = _history(comfy_server, body["prompt_id"])
    (video,) = comfy_server.output_paths(RunResult(body["prompt_id"], "success", history=history), node_id=stream_id)
    lines = video.with_name(video.name.replace(".mp4", ".prompts.txt")).read_text().splitlines()
    assert lines[0] == "0: a fox sleeps" and len(lines) == 2 and lines[1].endswith(": the fox wakes up"), lines
    assert float(lines[1].split(":")[0]) > 0


def _history(server, prompt_id: str, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed"):
            return entry
        time.sleep(0.5)
    raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s")
