"""LongLive 2.0 through the nodes, in-process (ComfyUI imported, CPU): the 5B's sizes, lengths, start latents and
presets checked before anything loads, a scene cut's shot opened with LongLive 2.0's prefix, the node's latents the
library's bit for bit, its frame rate in the live timeline, and the Wan 2.2 decoders streamed block by block."""

from __future__ import annotations

import pytest
import torch

from tools.comfy_inprocess import add_comfyui_to_sys_path, import_folder, pack_module
from tools.comfy_server import TEST_NODES_DIR, comfyui_available
from tools.tiny import TINY, TINY_5B

pytestmark = pytest.mark.comfyui

if not comfyui_available():
    pytest.skip("ComfyUI is not installed (scripts/setup.sh)", allow_module_level=True)

PRESET = "LongLive 2.0 5B"
H, W = 64, 96  # a 4 x 6 latent on the Wan 2.2 VAE
WIDGETS = dict(custom_steps="", seed=5, num_fragments=1, speed="exact")


@pytest.fixture(scope="module")
def sampler():
    return pack_module("nodes.sampler")


def _checkpoint(tmp_path_factory, config, layout, name):
    import dataclasses

    synthetic, config_mod = pack_module("causal.synthetic"), pack_module("causal.config")
    config = config_mod.WanConfig(**dataclasses.asdict(config))
    sd = synthetic.random_state_dict(config, dtype=torch.bfloat16, seed=0)
    return synthetic.write_checkpoint(sd, tmp_path_factory.mktemp("ckpt") / name, layout)


@pytest.fixture(scope="module")
def five_b(tmp_path_factory):
    path = _checkpoint(tmp_path_factory, TINY_5B, "longlive2", "model_bf16.pt")
    return path, pack_module("nodes.comfy_model").load_causal_model(path, "bf16")


@pytest.fixture(scope="module")
def wan21(tmp_path_factory):
    path = _checkpoint(tmp_path_factory, TINY, "causvid", "model.pt")
    return pack_module("nodes.comfy_model").load_causal_model(path, "bf16")


@pytest.fixture(scope="module")
def clip():
    add_comfyui_to_sys_path(cpu=True)
    return import_folder("causvid_test_nodes", TEST_NODES_DIR).build_tiny_clip(TINY.text_dim, 0)


# -- checked before anything loads -------------------------------------------------------------------------------


def test_lengths_and_sizes_follow_the_presets_blocks_and_vae(sampler):
    validate = sampler.CausVidSampler.validate_inputs
    assert validate(1280, 704, 253, "", PRESET) is True and validate(832, 480, 81, "", "CausVid 1.3B") is True
    message = validate(1280, 704, 81, "", PRESET)
    assert "whole number of 8-latent-frame blocks: use 29 + 32k frames, e.g. 29, 61, 93, 125, 157, 189 or 221" \
        in message and "trained length" not in message
    assert "9 + 12k frames, e.g. 9, 21, 33, 45, 57, 69 or 81 (21 latent frames" in validate(832, 480, 13, "")
    message = validate(848, 480, 253, "", PRESET)
    assert "width must be a multiple of 32" in message and "Wan2.2 VAE" in message
    assert validate(832, 496, 81, "", "CausVid 1.3B") is True  # 16 pixels suffice on the Wan2.1 VAE


def test_a_preset_of_the_other_vae_is_refused_before_anything_loads(sampler, five_b, wan21):
    with pytest.raises(ValueError, match="this model has 48 .*choose the LongLive 2.0 5B preset"):
        sampler.prepare(five_b[1], width=W, height=H, length=21, preset="CausVid 1.3B", **WIDGETS)
    with pytest.raises(ValueError, match="this model has 16 .*choose a Wan2.1 preset"):
        sampler.prepare(wan21, width=W, height=H, length=29, preset=PRESET, **WIDGETS)


def test_start_latents_must_be_the_wan22_vaes(sampler, five_b):
    """A Wan 2.1 start latent (16 channels at H/8) on the 5B is refused with the VAE to use; a Wan 2.2 one (48 at
    H/16, what VAE Encode with wan2.2_vae.safetensors or Wan22ImageToVideoLatent make) is taken."""
    patcher = five_b[1]
    with pytest.raises(ValueError, match=r"\[B, 48, frames, 4, 6\].*Wan2.2 VAE \(wan2.2_vae.safetensors\)"):
        sampler.prepare(patcher, width=W, height=H, length=29, preset=PRESET, **WIDGETS,
                        start_latent={"samples": torch.zeros(1, 16, 1, H // 8, W // 8)})
    job = sampler.prepare(patcher, width=W, height=H, length=61, preset=PRESET, **WIDGETS,
                          start_latent={"samples": torch.zeros(1, 48, 2, H // 16, W // 16)})
    assert job.video.start_latents.shape == (1, 48, 2, 4, 6) and job.video.total_frames == 8


def test_one_image_is_longlive2s_first_frame_as_the_library_makes_it(sampler, five_b):
    """A one-frame start latent with the LongLive 2.0 preset is its image-to-video: the video's first frame, held in
    the first block (`Video(first_frame=...)`), not a frame cached before it; the node's latents begin with the
    image and equal `causal.generate`'s bit for bit."""
    import causal
    import comfy.latent_formats

    path, patcher = five_b
    image = torch.randn(1, 48, 1, H // 16, W // 16, generator=torch.Generator().manual_seed(3))
    job = sampler.prepare(patcher, width=W, height=H, length=61, preset=PRESET, **WIDGETS,
                          start_latent={"samples": image})
    assert job.video.start_latents is None and job.prefix is None and job.video.total_frames == 16
    conditioning = [[torch.randn(1, 12, TINY.text_dim, generator=torch.Generator().manual_seed(1)), {}]]
    node, _ = sampler.run(patcher, conditioning, job, None)
    fmt = comfy.latent_formats.Wan22()
    dtype = pack_module("nodes.comfy_model").compute_dtype(patcher)
    first = fmt.process_in(image.float())
    library = causal.generate(causal.load_model(path, dtype=dtype), conditioning[0][0],
                              causal.Video(H, W, total_frames=16, first_frame=first), causal.SCHEDULES[PRESET],
                              causal.cache_policy.multi_shot_sink(), noise=causal.Noise(seed=5),
                              compute=causal.Compute(dtype=dtype)).latents
    assert node.shape == (1, 48, 16, 4, 6) and torch.equal(node, fmt.process_out(library.float()))
    assert torch.equal(library[:, :, :1], first.to(dtype))


def test_seconds_count_at_24_fps(sampler, five_b):
    """4 s at 24 fps: 96 frames, 25 latent frames, four 8-frame blocks; the same seconds at 16 fps would be two."""
    job = sampler.prepare(five_b[1], width=W, height=H, length=29, preset=PRESET, seconds=4.0, **WIDGETS)
    assert job.video.total_frames == 32


# -- shots -------------------------------------------------------------------------------------------------------


def _encode(clip, text):
    return pack_module("nodes.text").CausVidTextEncode.execute(clip, text).args[0]


def test_a_scene_cut_carries_its_caption_after_longlive2s_prefix(clip):
    text = pack_module("nodes.text")
    first, cut = _encode(clip, "0: a red ball\n2#: a blue ball")
    assert text.OPENING_KEY not in first[1] and cut[1][text.CUT_KEY]
    (prefixed, _), = _encode(clip, "The scene transitions. a blue ball")
    assert torch.equal(cut[1][text.OPENING_KEY], prefixed) and not torch.equal(cut[0], prefixed)


def test_the_node_opens_a_shot_as_the_library_does_bit_for_bit(sampler, five_b, clip):
    """The LongLive 2.0 preset through the node with a scene cut at 1.5 s (latent frame 9): the block at 16 reads
    the prefixed caption, the block at 24 on the caption alone; equal to `causal.generate` given those prompts, in
    VAE space (latent_formats.Wan22)."""
    import causal
    import comfy.latent_formats
    from causal.cache_policy import multi_shot_sink
    from causal.prompts import PromptChange

    path, patcher = five_b
    conditioning = _encode(clip, "0: a red ball\n1.5#: a blue ball")
    job = sampler.prepare(patcher, width=W, height=H, length=29, preset=PRESET, seconds=5.0, **WIDGETS)
    assert job.video.total_frames == 32
    node, state = sampler.run(patcher, conditioning, job, None)
    opening = conditioning[1][1][pack_module("nodes.text").OPENING_KEY]
    timeline = [PromptChange(0, conditioning[0][0]), PromptChange(16, opening, cut=True),
                PromptChange(24, conditioning[1][0])]
    dtype = pack_module("nodes.comfy_model").compute_dtype(patcher)
    model = causal.load_model(path, dtype=dtype)
    library = causal.generate(model, timeline, causal.Video(H, W, total_frames=32), causal.SCHEDULES[PRESET],
                              multi_shot_sink(), noise=causal.Noise(seed=5), compute=causal.Compute(dtype=dtype))
    expected = comfy.latent_formats.Wan22().process_out(library.latents.float())
    assert node.shape == (1, 48, 32, 4, 6) and torch.equal(node, expected)
    assert state.video.shape[1] == 48
    # the same video without the prefix differs from the opened shot's block on
    plain = causal.generate(model, [timeline[0], PromptChange(16, conditioning[1][0], cut=True)],
                            causal.Video(H, W, total_frames=32), causal.SCHEDULES[PRESET], multi_shot_sink(),
                            noise=causal.Noise(seed=5), compute=causal.Compute(dtype=dtype)).latents
    assert torch.equal(plain[:, :, :16], library.latents[:, :, :16]) and not torch.equal(plain, library.latents)


def test_a_live_timeline_counts_seconds_at_the_models_frame_rate():
    live = pack_module("nodes.live")
    from tools.tiny import prompt

    run = live.LiveRun("7", "first", prompt(seed=1), lambda text: prompt(seed=2), fps=24)
    run.submit("second")
    assert run.wait_encoded(5)
    run.prompts.change_at(16)
    run.close()
    assert run.used() == [(0.0, "first"), ((4 * 16 - 3) / 24, "second")]
    assert "2.541666667: second" in run.timeline_text()


# -- the Wan 2.2 decoders, streamed -------------------------------------------------------------------------------


def _latents(frames, seed=0):
    return torch.randn(1, 48, frames, 3, 4, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["wan2.2 vae", "taew2_2"])
def test_a_wan22_decoder_streamed_block_by_block_is_one_whole_decode(kind, tmp_path):
    """ComfyUI's own Wan 2.2 VAE (at reduced widths: `tools.standins.small_wan22_vae`) and a taew2_2-layout tiny
    decoder (the stand-in file VAELoader detects as Wan 2.2), fed an image frame then 8-frame blocks: the frames of
    VAE Decode of the whole video, to float32 rounding."""
    streaming = pack_module("nodes.streaming")
    import comfy.sd
    import comfy.utils

    from tools.standins import make_wan22_vae_standin, small_wan22_vae

    if kind == "taew2_2":
        path = make_wan22_vae_standin(tmp_path / "wan2.2_vae.safetensors", seed=1)
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))
    else:
        vae = small_wan22_vae(seed=1)
    assert vae.latent_channels == 48
    latents = _latents(1 + 8 * 2)
    with torch.no_grad():
        whole = vae.decode(latents)[0].float()
    decoder = streaming.StreamingDecoder(vae)
    assert type(decoder).__name__ == ("TinyStreamingDecoder" if kind == "taew2_2" else "Wan22VAEStreamingDecoder")
    assert decoder.latent_channels == 48
    parts = [decoder.decode(latents[:, :, :1]), decoder.decode(latents[:, :, 1:9]), decoder.decode(latents[:, :, 9:])]
    assert [p.shape[0] for p in parts] == [1, 32, 32]
    streamed = torch.cat(parts)
    assert streamed.shape == whole.shape == (1 + 4 * 16, 48, 64, 3)
    assert (streamed - whole).abs().max().item() <= 1e-6
    # a fresh decoder on the last block alone starts a video (its first frame alone, then 4 each): its first frames
    # are not the same without the causal cache
    alone = streaming.StreamingDecoder(vae).decode(latents[:, :, 9:])
    assert alone.shape[0] == 29 and not torch.allclose(alone[:4], parts[2][3:7], atol=1e-3)
