"""Random-weight Wan2.1 DiTs saved in the real checkpoint layouts (for tests and benchmarks).

`random_state_dict` gives a state dict over exactly `expected_shapes(config)` whose values are
never all zero (a zero head would make every output zero) and roughly match the scales of a real
model, so activations stay finite through all layers. `write_checkpoint` saves it in one of the
layouts that `checkpoint.read_checkpoint` must understand (see `LAYOUTS`).

Values depend on (config, dtype, seed, device type): CPU and CUDA generators give different numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from .config import WanConfig, expected_shapes

LAYOUTS: dict[str, str] = {
    "causvid": "model.pt",
    "self_forcing": "self_forcing_dmd.pt",
    "longlive": "longlive_base.pt",
    "lightx2v_pt": "causal_model.pt",
    "lightx2v_safetensors": "causal_model.safetensors",
    "comfyui": "wan2.1_t2v_causal_comfyui.safetensors",
    "causvid_plus_converted": "causvid_plus_converted.pt",
    "krea": "krea-realtime-video-14b.safetensors",
    "reward_forcing": "rewardforcing.pt",
    "longlive2": "model_bf16.pt",
}
"""Layout name -> the file name such a checkpoint typically has (its suffix selects the format):

* causvid: ``{"generator": {"model."+k: t}, "critic": {"model."+k: 1-element tensor}}`` (CausVid, CausVid-Plus).
* self_forcing: like causvid plus ``generator_ema`` holding the given weights; ``generator`` holds them
  negated, so a reader that takes ``generator`` instead of ``generator_ema`` is caught.
* longlive: ``generator_ema`` (the given weights) and ``generator`` (negated), keys with FSDP wrapper
  names, e.g. ``model._fsdp_wrapped_module.blocks.0._fsdp_wrapped_module.self_attn.q.weight``.
* lightx2v_pt / lightx2v_safetensors: bare keys (LightX2V ``causal_model.pt`` / ``.safetensors``).
* comfyui: ``model.diffusion_model.`` + bare key, safetensors.
* causvid_plus_converted: bare keys cast to bf16, as CausVid-Plus ``utils/convert_checkpoint.py`` writes.
* krea: ``model.`` + bare key, safetensors (Krea Realtime 14B).
* reward_forcing: ``model.`` + bare key, one pickled state dict (Reward Forcing ``rewardforcing.pt``: its
  generator wrapper's ``state_dict()``).
* longlive2: ``{"generator": {"model."+k: t}}`` beside strings and flags (LongLive 2.0's ``model_bf16.pt``: its
  merged 5B generator, stored in bf16, as its merge script writes it).
"""


def random_state_dict(config: WanConfig, *, dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                      device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Random weights over exactly `expected_shapes(config)`, generated on `device`.

    weights ~ N(0, 1/sqrt(fan_in)) (fan_in = product of all dims but the first), biases ~ N(0, 0.02),
    norm weights ~ 1 + N(0, 0.05), modulation ~ N(0, 1/sqrt(dim)) (the reference init).
    Each tensor is drawn in float32 and cast, so float8 dtypes work too.
    """
    device = torch.device(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    out: dict[str, Tensor] = {}
    for key, shape in expected_shapes(config).items():
        t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        if key.endswith("modulation"):
            t.mul_(config.dim ** -0.5)
        elif key.endswith("bias"):
            t.mul_(0.02)
        elif ".norm" in key:  # norm_q, norm_k, norm3 weights (RMSNorm / LayerNorm scales)
            t.mul_(0.05).add_(1.0)
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            t.mul_(fan_in ** -0.5)
        out[key] = t.to(dtype)
    return out


def write_checkpoint(state_dict: Mapping[str, Tensor], path: str | Path, layout: str) -> Path:
    """Save bare-key `state_dict` at `path` in `layout` (a key of LAYOUTS); returns the path."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout '{layout}'; choose one of {', '.join(LAYOUTS)}")
    path = Path(path)
    want_safetensors = LAYOUTS[layout].endswith(".safetensors")
    if (path.suffix == ".safetensors") != want_safetensors:
        raise ValueError(f"layout '{layout}' is a {Path(LAYOUTS[layout]).suffix} file, but the path is {path}")
    sd = dict(state_dict)

    def prefixed(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
        return {prefix + k: v for k, v in tensors.items()}

    def negated(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        # exact in every float format (float8 has no CPU neg kernel, so negate in float32)
        return {k: (-v.float()).to(v.dtype) for k, v in tensors.items()}

    def critic(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"model." + k: torch.ones(1, dtype=v.dtype) for k, v in tensors.items()}

    def fsdp(key: str) -> str:  # FSDP wraps the whole net and each block
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            key = f"blocks.{index}._fsdp_wrapped_module.{rest}"
        return "model._fsdp_wrapped_module." + key

    if layout == "causvid":
        obj: object = {"generator": prefixed(sd, "model."), "critic": critic(sd)}
    elif layout == "self_forcing":
        obj = {"generator": prefixed(negated(sd), "model."), "critic": critic(sd),
               "generator_ema": prefixed(sd, "model.")}
    elif layout == "longlive":
        obj = {"generator": {fsdp(k): v for k, v in negated(sd).items()},
               "generator_ema": {fsdp(k): v for k, v in sd.items()}}
    elif layout in ("lightx2v_pt", "lightx2v_safetensors"):
        obj = sd
    elif layout == "comfyui":
        obj = prefixed(sd, "model.diffusion_model.")
    elif layout == "longlive2":
        obj = {"generator": prefixed(sd, "model."), "checkpoint_format": "longlive_generator_merged_lora",
               "model_name": "Wan2.2-TI2V-5B", "merged_lora": True}
    elif layout in ("krea", "reward_forcing"):
        obj = prefixed(sd, "model.")
    else:  # causvid_plus_converted
        obj = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}

    path.parent.mkdir(parents=True, exist_ok=True)
    if want_safetensors:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in obj.items()}, str(path))  # type: ignore[union-attr]
    else:
        torch.save(obj, path)
    return path
