"""CausVid Text Encode in-process with a genuine (tiny) ComfyUI umT5 CLIP: the reference's 512-token
truncation, literal brackets, zero padding, one tagged entry per prompt line."""

from __future__ import annotations


import pytest
import torch

from tools.comfy_inprocess import add_comfyui_to_sys_path, import_folder, pack_module
from tools.comfy_server import TEST_NODES_DIR, comfyui_available

pytestmark = pytest.mark.comfyui

if not comfyui_available():
    pytest.skip("ComfyUI is not installed (scripts/setup.sh)", allow_module_level=True)


@pytest.fixture(scope="module")
def text_node():
    return pack_module("nodes.text")


@pytest.fixture(scope="module")
def clip():
    add_comfyui_to_sys_path(cpu=True)
    return import_folder("causvid_test_nodes", TEST_NODES_DIR).build_tiny_clip(64, 0)


def _encode(text_node, clip, text):
    return text_node.CausVidTextEncode.execute(clip, text).args[0]


def test_one_entry_per_line_zero_padded_to_512(text_node, clip):
    cond = _encode(text_node, clip, "a cat walks on the grass\n\n  a dog runs  \n")
    assert [entry[1][text_node.FRAGMENT_KEY] for entry in cond] == [0, 1]
    for tensor, _ in cond:
        assert tensor.shape == (1, 512, 64)
        rows = (tensor[0].abs().sum(-1) > 0).sum().item()
        assert 2 < rows < 30 and torch.count_nonzero(tensor[0, rows:]) == 0  # real tokens + EOS, then zeros


def test_long_prompts_are_cut_to_511_tokens_and_the_end_token(text_node, clip):
    long_prompt = " ".join(["a bird flying over a green forest and a blue lake"] * 120)
    tokens = clip.tokenize(text_node._escape_weights(text_node.clean_prompt(long_prompt)))
    (batch,) = tokens["umt5xxl"]
    assert len(batch) > 512  # ComfyUI alone would keep them all
    (cut,) = text_node._truncate(tokens, end_token=1)["umt5xxl"]
    assert len(cut) == 512 and cut[-1][0] == 1 and cut[:511] == batch[:511]
    (cond, _), = _encode(text_node, clip, long_prompt)
    assert cond.shape == (1, 512, 64) and torch.count_nonzero(cond[0].abs().sum(-1)) == 512


def test_brackets_are_text_not_prompt_weights(text_node, clip):
    weighted = clip.tokenize("a (cat:1.5) walks")["umt5xxl"][0]
    assert any(w == 1.5 for _, w in weighted)  # ComfyUI's syntax
    literal = clip.tokenize(text_node._escape_weights("a (cat:1.5) walks"))["umt5xxl"][0]
    assert all(w == 1.0 for _, w in literal) and len(literal) >= len(weighted)


def test_cleaning_happens_before_tokenising(text_node, clip):
    (a, _), = _encode(text_node, clip, "  a   cat&amp;amp;dog  ")
    (b, _), = _encode(text_node, clip, "a cat&dog")
    assert torch.equal(a, b)
