"""Windows-safe source: every .py file encodes as cp1252 (the console and log encoding of ComfyUI's Windows
portable build), checked by the ecosystem's own tool (`comfy-test lint`: its SYNTAX and JAVASCRIPT levels), and
every validation message the pack raises can be printed to a cp1252 stream."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import causal
from causal.cache_policy import CachePolicy, rolling, sink
from tools.tiny import TINY, prompt, tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]


def _comfy_test() -> str | None:
    found = shutil.which("comfy-test", path=str(Path(sys.executable).parent)) or shutil.which("comfy-test")
    if found is None and os.environ.get("CI"):
        pytest.fail("comfy-test is not installed (scripts/setup.sh installs it)")
    return found


def test_comfy_test_lint_passes():
    tool = _comfy_test()
    if tool is None:
        pytest.skip("comfy-test is not installed: run scripts/setup.sh")
    proc = subprocess.run([tool, "lint", str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "[SYNTAX] PASSED" in proc.stdout and "[JAVASCRIPT] PASSED" in proc.stdout


def _messages() -> list[str]:
    """The messages of the pack's input checks, raised for real."""
    model = tiny_model(torch.bfloat16)
    base = dict(height=32, width=48)
    bad_calls = [
        dict(height=470), dict(num_frames=10), dict(num_fragments=0), dict(total_frames=7),
        dict(context=torch.zeros(1, 5, 32)), dict(context=torch.full((1, 4, TINY.text_dim), float("nan"))),
        dict(start_latents=torch.zeros(1, 16, 3, 5, 6)), dict(policy=rolling(2)),
        dict(context=[causal.PromptChange(3, prompt())]), dict(noise=torch.zeros(1, 5, 16, 4, 6)),
    ]
    messages = []
    for kwargs in bad_calls:
        args = {**base, "context": prompt(), **kwargs}
        with pytest.raises((ValueError, RuntimeError)) as excinfo:
            context, policy, noise = args.pop("context"), args.pop("policy", None), args.pop("noise", None)
            causal.generate(model, context, causal.Video(**args), causal.SCHEDULES["CausVid 1.3B"], policy,
                            noise=causal.Noise(seed=0, initial=noise))
        messages.append(str(excinfo.value))
    for make in (lambda: CachePolicy("ring"), lambda: sink(3, 3), lambda: causal.Schedule("x", (500, 900), 8.0, False),
                 lambda: causal.latent_frame_at(-1.0)):
        with pytest.raises(ValueError) as excinfo:
            make()
        messages.append(str(excinfo.value))
    return messages


def test_every_validation_message_prints_on_a_cp1252_console():
    messages = _messages()
    assert len(messages) == 14 and all(messages)
    for message in messages:
        message.encode("cp1252")  # raises UnicodeEncodeError if not


def test_node_validation_messages_print_on_a_cp1252_console():
    from tools.comfy_inprocess import import_pack
    from tools.comfy_server import comfyui_available

    if not comfyui_available():
        pytest.skip("ComfyUI is not installed (scripts/setup.sh)")
    import_pack()
    import importlib

    sampler = importlib.import_module("comfyui_causvid.nodes.sampler")
    messages = [sampler.CausVidSampler.validate_inputs(*args) for args in (
        (40, 480, 81, ""), (832, 480, 13, ""), (832, 480, 5000, ""), ("abc", 480, 81, ""), (832, 480, 81, "1000, x"))]
    for check in (lambda: sampler.choose_policy("CausVid 1.3B", "rolling", 0, 3, 21),
                  lambda: sampler.choose_schedule("nope", ""), lambda: sampler.prompt_timeline([], [21], 0)):
        with pytest.raises(ValueError) as excinfo:
            check()
        messages.append(str(excinfo.value))
    assert all(isinstance(m, str) and m for m in messages)
    for message in messages:
        message.encode("cp1252")


@pytest.mark.comfyui
def test_comfy_test_levels_attached_to_the_suites_comfyui(comfy_server):
    """REGISTRATION, INSTANTIATION and VALIDATION (with SYNTAX, INSTALL and JAVASCRIPT before them) against the
    suite's own headless ComfyUI, run from the pack's folder inside its custom_nodes/ as comfy-test asks."""
    from tools.comfy_server import COMFY_DIR, MAIN_PACK_NAME

    tool = _comfy_test()
    if tool is None:
        pytest.skip("comfy-test is not installed: run scripts/setup.sh")
    node_dir = comfy_server.custom_nodes_dir / MAIN_PACK_NAME
    env = dict(os.environ, PYTHONPATH=str(COMFY_DIR))  # its instantiation check imports ComfyUI's modules
    proc = subprocess.run([tool, "run", "--server-url", comfy_server.url, "--level", "validation"], cwd=str(node_dir),
                          capture_output=True, text=True, timeout=600, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    for level in ("SYNTAX", "INSTALL", "REGISTRATION", "JAVASCRIPT", "INSTANTIATION", "VALIDATION"):
        assert f"[{level}] PASSED" in out, (level, out[-3000:])


def test_every_node_is_used_by_an_example_workflow():
    """What comfy-test's COVERAGE level checks, done here: it reads NODE_CLASS_MAPPINGS and so cannot see the
    nodes of a V3 pack (comfy_entrypoint)."""
    import ast

    from tools import workflows as eg

    source = (REPO_ROOT / "nodes" / "__init__.py").read_text()
    node_list = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.AnnAssign)
                     and getattr(n.target, "id", "") == "NODES")
    classes = {elt.id for elt in node_list.value.elts}
    ids = set()
    for path in (REPO_ROOT / "nodes").glob("*.py"):
        tree = ast.parse(path.read_text())
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name in classes):
            for call in (n for n in ast.walk(cls) if isinstance(n, ast.keyword) and n.arg == "node_id"):
                ids.add(call.value.value)
    assert len(ids) == len(classes) == 6
    used = {node.type for wf in eg.WORKFLOWS.values() for node in wf.nodes}
    assert ids <= used, ids - used
