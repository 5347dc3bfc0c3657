"""Test-only ComfyUI node pack for the comfyui-causvid end-to-end tests.

Loaded only by the test harness (symlinked as ``custom_nodes/causvid_test_nodes`` into a temporary
``--base-directory``); never shipped to users. Nodes:

* ``CausVidTestTinyCLIP`` -> CLIP: a genuine ``comfy.sd.CLIP`` around ComfyUI's own Wan umT5 classes
  (``comfy.text_encoders.wan``), shrunk to 2 layers of width ``width`` with seeded random weights and a
  tiny sentencepiece model trained on first use (pad 0, eos 1, unk 2, no bos). The core
  ``CLIPTextEncode`` node turns it into real CONDITIONING ``[[Tensor[1, 512, width], {"pooled_output":
  None}]]`` with zero rows past the prompt, exactly like the full umT5-XXL path.
* ``CausVidTestConditioning`` -> CONDITIONING: synthetic conditioning of the same structure without a
  text encoder: seeded random rows for the prompt's words (+EOS), zero padding to 512.
* ``CausVidTestProgress`` LATENT -> LATENT: ``steps`` ProgressBar updates with Latent2RGB previews
  (binary websocket frames), ``sleep_s`` between them, an interrupt check at every step; passes the
  latent through. Exercises progress / preview / interrupt handling of the harness.
* ``CausVidTestShowShape`` (output node): reports shape, dtype and non-zero row count of a
  CONDITIONING (and optionally a LATENT) as ``ui.text`` (a JSON string), visible in the websocket
  ``executed`` message and ``/history``.
"""

from __future__ import annotations

import hashlib
import io as _bytes_io
import json
import threading

import torch

from comfy_api.latest import ComfyExtension, io, ui

TEXT_LEN = 512
_TINY_VOCAB = 128  # embedding rows of the tiny umT5; the sentencepiece model uses fewer pieces
_SPM_PIECES = 60

_SPM_SENTENCES = [
    "a cat walking on the grass in the sun",
    "a dog running along a sandy beach at sunset",
    "a red car driving down a long empty road",
    "waves crashing against the rocks under a grey sky",
    "a person riding a bicycle through a busy city street",
    "a bird flying over a green forest and a blue lake",
    "slow motion video of water drops falling into a glass",
    "a timelapse of clouds moving over snowy mountains",
    "the camera pans across a quiet room with a wooden table",
    "fireworks exploding in the night sky over the river",
]

_lock = threading.Lock()
_SPM_PROTO: bytes | None = None
_CLIP_CACHE: dict = {}


def tiny_spiece_model() -> bytes:
    """Serialized sentencepiece model proto (unigram, ~60 pieces), trained once per process."""
    global _SPM_PROTO
    with _lock:
        if _SPM_PROTO is None:
            import sentencepiece as spm

            buf = _bytes_io.BytesIO()
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(_SPM_SENTENCES * 4),
                model_writer=buf,
                vocab_size=_SPM_PIECES,
                model_type="unigram",
                pad_id=0,
                eos_id=1,
                unk_id=2,
                bos_id=-1,
                hard_vocab_limit=False,
                num_threads=1,
                minloglevel=2,
            )
            _SPM_PROTO = buf.getvalue()
        return _SPM_PROTO


def tiny_umt5_config(width: int) -> dict:
    heads = max(1, width // 16)
    return {
        "d_model": width,
        "d_ff": 2 * width,
        "d_kv": width // heads,
        "num_heads": heads,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "vocab_size": _TINY_VOCAB,
    }


def build_tiny_clip(width: int = 64, seed: int = 0):
    """A real ``comfy.sd.CLIP`` (Wan umT5 classes) of the given width with seeded random weights."""
    key = (int(width), int(seed))
    with _lock:
        cached = _CLIP_CACHE.get(key)
    if cached is not None:
        return cached

    import comfy.sd
    import comfy.text_encoders.wan as wan_te

    proto = tiny_spiece_model()

    class _Target:
        params = {}
        clip = wan_te.te(dtype_t5=torch.float32)
        tokenizer = wan_te.WanT5Tokenizer

    model_options = {"umt5xxl_model_config": tiny_umt5_config(width), "dtype": torch.float32}
    clip = comfy.sd.CLIP(
        _Target,
        tokenizer_data={"spiece_model": torch.ByteTensor(list(proto))},
        model_options=model_options,
    )
    gen = torch.Generator().manual_seed(int(seed))
    sd = {}
    for name, tensor in clip.cond_stage_model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        if name.endswith("layer_norm.weight") or name.endswith("final_layer_norm.weight"):
            value = torch.ones(tensor.shape)
        elif name.endswith("logit_scale"):
            value = torch.full(tensor.shape, 4.6055)
        else:
            std = 1.0 if "shared" in name or "embed" in name else 0.05
            value = torch.randn(tensor.shape, generator=gen) * std
        sd[name] = value.to(tensor.dtype)
    missing, unexpected = clip.load_sd(sd, full_model=True)
    if unexpected:
        raise RuntimeError(f"tiny CLIP: unexpected keys {unexpected[:5]}")
    with _lock:
        _CLIP_CACHE[key] = clip
    return clip


def _conditioning_summary(conditioning) -> dict:
    entries = []
    for cond, extra in conditioning:
        nonzero = int((cond.abs().sum(dim=-1) != 0).sum().item()) if cond.dim() == 3 else None
        entries.append(
            {
                "shape": list(cond.shape),
                "dtype": str(cond.dtype).replace("torch.", ""),
                "device": str(cond.device),
                "nonzero_rows": nonzero,
                "keys": sorted(extra.keys()),
                "pooled_output_is_none": extra.get("pooled_output") is None,
                "finite": bool(torch.isfinite(cond).all().item()),
                "abs_mean": float(cond.float().abs().mean().item()),
            }
        )
    return {"conditioning": entries}


class CausVidTestTinyCLIP(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CausVidTestTinyCLIP",
            display_name="CausVid Test Tiny umT5 CLIP",
            category="CausVid/testing",
            description="Test only: a 2-layer umT5 of the given width with random weights.",
            inputs=[
                io.Int.Input("width", default=64, min=16, max=1024, step=16),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1),
            ],
            outputs=[io.Clip.Output()],
        )

    @classmethod
    def execute(cls, width: int = 64, seed: int = 0) -> io.NodeOutput:
        return io.NodeOutput(build_tiny_clip(width, seed))


class CausVidTestConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CausVidTestConditioning",
            display_name="CausVid Test Synthetic Conditioning",
            category="CausVid/testing",
            description="Test only: seeded random CONDITIONING [1, 512, width], zero padded.",
            inputs=[
                io.String.Input("text", default="a cat walking on the grass", multiline=True),
                io.Int.Input("width", default=64, min=16, max=4096, step=16),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, text: str, width: int) -> io.NodeOutput:
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")
        gen = torch.Generator().manual_seed(seed)
        n = min(TEXT_LEN, len(text.split()) + 1)  # words + EOS
        cond = torch.zeros(1, TEXT_LEN, width)
        cond[:, :n] = torch.randn(1, n, width, generator=gen) * 0.1
        return io.NodeOutput([[cond, {"pooled_output": None}]])


class CausVidTestShowShape(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CausVidTestShowShape",
            display_name="CausVid Test Show Shape",
            category="CausVid/testing",
            description="Test only: reports CONDITIONING / LATENT shapes (and a CAUSVID_STATE's live prompts) as ui "
                        "text (JSON).",
            inputs=[
                io.Conditioning.Input("conditioning", optional=True),
                io.Latent.Input("latent", optional=True),
                io.Custom("CAUSVID_STATE").Input("state", optional=True),
            ],
            outputs=[],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, conditioning=None, latent=None, state=None) -> io.NodeOutput:
        info: dict = {}
        if state is not None:
            info["live_prompts"] = state.live_prompts
        if conditioning is not None:
            info.update(_conditioning_summary(conditioning))
        if latent is not None:
            s = latent["samples"]
            info["latent"] = {"shape": list(s.shape), "dtype": str(s.dtype).replace("torch.", "")}
        return io.NodeOutput(ui=ui.PreviewText(json.dumps(info)))


class CausVidTestProgress(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CausVidTestProgress",
            display_name="CausVid Test Progress",
            category="CausVid/testing",
            description="Test only: progress + latent previews + interrupt checks; passes LATENT through.",
            inputs=[
                io.Latent.Input("latent"),
                io.Int.Input("steps", default=3, min=1, max=1000),
                io.Float.Input("sleep_s", default=0.0, min=0.0, max=60.0, step=0.01),
            ],
            outputs=[io.Latent.Output()],
            not_idempotent=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return float("nan")  # always re-run

    @classmethod
    def execute(cls, latent, steps: int, sleep_s: float) -> io.NodeOutput:
        import time

        import comfy.latent_formats
        import comfy.model_management
        import comfy.utils
        import latent_preview

        samples = latent["samples"]
        fmt = comfy.latent_formats.Wan21()
        previewer = latent_preview.get_previewer(torch.device("cpu"), fmt)
        pbar = comfy.utils.ProgressBar(steps)
        gen = torch.Generator().manual_seed(0)
        for i in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if sleep_s:
                time.sleep(sleep_s)
            preview = None
            if previewer is not None and samples.dim() == 5:
                x0 = fmt.process_in(samples[:, :, -1:]) + torch.randn(samples[:, :, -1:].shape, generator=gen)
                preview = previewer.decode_latent_to_preview_image("JPEG", x0)
            pbar.update_absolute(i + 1, steps, preview)
        return io.NodeOutput(dict(latent))


class CausVidTestExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [CausVidTestTinyCLIP, CausVidTestConditioning, CausVidTestProgress, CausVidTestShowShape]


async def comfy_entrypoint() -> CausVidTestExtension:
    return CausVidTestExtension()
