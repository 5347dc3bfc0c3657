"""The causal DiT as a ComfyUI MODEL: a `model_base.WAN21` (a 48-channel model, LongLive 2.0's Wan2.2 TI2V-5B: a
`model_base.WAN22` with the Wan2.2 latent format) whose `diffusion_model` is our `CausalWanModel` built from
ComfyUI's layer classes, so model management (offloading, lowvram, fp8 storage), core LoRA loading, latent previews
and the core VAE nodes work on it unchanged."""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
import comfy.supported_models
import torch

from ..causal.checkpoint import read_checkpoint
from ..causal.lora import Lora, apply_unmerged, check_fits, merge_into
from ..causal.config import WanConfig
from ..causal.model import CausalWanModel
from ..causal.rank_pool import ModelSource
from .speed import release_on_detach

WEIGHT_DTYPES = {
    "default": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e4m3fn_fast": torch.float8_e4m3fn,
}
"""Storage dtype of the large matrices (the loader's widget). `_fast` asks ComfyUI for its fp8 matrix
products where the GPU has them (as core UNETLoader's option of the same name)."""


def comfy_cast(t: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return comfy.model_management.cast_to(t, dtype=dtype, device=device)


def lending_weights(operations):
    """ComfyUI's layer classes with a Linear that lends its weight and bias to a fused kernel
    (`causal.kernels.direct_weights`) while ComfyUI multiplies them as they are: not while it casts or offloads
    them (`comfy_cast_weights`, which partial loading switches on) or patches them per forward (lowvram LoRA).
    Layers of their own arithmetic (fp8 matrix products, scaled fp8) lend nothing."""
    plain = comfy.ops.disable_weight_init.Linear
    base = operations.Linear
    if (base.forward is not plain.forward
            or base.forward_comfy_cast_weights is not plain.forward_comfy_cast_weights):
        return operations

    class Linear(base):
        def direct_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
            if self.comfy_cast_weights or self.weight_function or self.bias_function:
                return None
            return self.weight, self.bias

    return type(operations.__name__, (operations,), {"Linear": Linear})


class ComfyCausalWanModel(CausalWanModel):
    """Takes the keyword arguments `BaseModel` passes (`**unet_config`, device, operations)."""

    def __init__(self, *, dim: int, ffn_dim: int, num_layers: int, text_dim: int, in_dim: int = 16,
                 out_dim: int = 16, dtype=None, device=None, operations=None, **_unused) -> None:
        config = WanConfig(dim=dim, ffn_dim=ffn_dim, num_layers=num_layers, text_dim=text_dim, in_dim=in_dim,
                           out_dim=out_dim)
        small = torch.bfloat16 if dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else dtype
        super().__init__(config, operations=lending_weights(operations or comfy.ops.disable_weight_init),
                         cast=comfy_cast, device=device, dtype=dtype,
                         small_dtype=small)
        self.dtype = dtype  # BaseModel.get_dtype reads it


class WAN21Causal(comfy.model_base.WAN21):
    def __init__(self, model_config, model_type=comfy.model_base.ModelType.FLOW, device=None):
        comfy.model_base.BaseModel.__init__(self, model_config, model_type, device=device,
                                            unet_model=ComfyCausalWanModel)
        self.image_to_video = False


class WAN22Causal(comfy.model_base.WAN22):
    def __init__(self, model_config, model_type=comfy.model_base.ModelType.FLOW, device=None):
        comfy.model_base.BaseModel.__init__(self, model_config, model_type, device=device,
                                            unet_model=ComfyCausalWanModel)
        self.image_to_video = False


class CausalWanT2V(comfy.supported_models.WAN21_T2V):
    # bf16 first: the references compute in bf16 (core Wan lists fp16 first)
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

    def get_model(self, state_dict, prefix="", device=None):
        return WAN21Causal(self, device=device)


class CausalWanTI2V(comfy.supported_models.WAN22_T2V):
    """A causal model on the Wan2.2 VAE (LongLive 2.0): core's Wan2.2 TI2V-5B config, its latent format Wan22."""

    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

    def get_model(self, state_dict, prefix="", device=None):
        return WAN22Causal(self, device=device)


MODEL_CONFIGS = {16: CausalWanT2V, 48: CausalWanTI2V}
"""ComfyUI model config by latent channels (the VAE the model's latents are for)."""


LORA_MODES = ("merged", "unmerged")
"""merged: W + BA at load (no cost per step); unmerged: LongLive's own arithmetic, an extra low-rank product."""


def load_causal_model(path: str | Path, weight_dtype: str = "default", lora: Lora | None = None,
                      lora_mode: str = "merged",
                      lora_path: str | Path | None = None) -> comfy.model_patcher.ModelPatcher:
    """Read any causal checkpoint layout and wrap it as a ComfyUI MODEL (ModelPatcher), with a LongLive LoRA
    merged into the weights or applied unmerged in the forward (LongLive's exact arithmetic). The model remembers
    the file (`causvid_source`, with `lora_path` the LoRA read from it) where CausVid Multi-GPU's workers can build
    the same model (fp8_e4m3fn storage too, `causal.fp8_storage`; not `_fast`, ComfyUI's fp8 products)."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"unknown weight dtype '{weight_dtype}'; choose one of {', '.join(WEIGHT_DTYPES)}")
    if lora_mode not in LORA_MODES:
        raise ValueError(f"unknown LoRA mode '{lora_mode}'; choose one of {', '.join(LORA_MODES)}")
    checkpoint = read_checkpoint(path)
    config = checkpoint.config
    state_dict = checkpoint.state_dict
    if lora is not None:
        check_fits(lora, config)
        if lora_mode == "merged":
            merge_into(state_dict, lora)
    unet_config = {"image_model": "wan2.1", "model_type": "t2v", "dim": config.dim, "ffn_dim": config.ffn_dim,
                   "num_layers": config.num_layers, "text_dim": config.text_dim, "in_dim": config.in_dim,
                   "out_dim": config.out_dim, "num_heads": config.num_heads}
    model_config = MODEL_CONFIGS[config.latents.channels](unet_config)
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    dtype = WEIGHT_DTYPES[weight_dtype]
    if dtype is None:
        dtype = default_dtype(load_device, checkpoint.source_dtype, sum(t.numel() for t in state_dict.values()),
                              model_config.supported_inference_dtypes)
    manual_cast = comfy.model_management.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    if weight_dtype.endswith("_fast"):
        model_config.optimizations["fp8"] = True
    model = model_config.get_model(state_dict, "", device=offload_device)
    missing, unexpected = model.diffusion_model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:  # read_checkpoint validated the keys; this would be a pack bug
        raise RuntimeError(f"causal model keys did not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    del state_dict
    if lora is not None and lora_mode == "unmerged":
        apply_unmerged(model.diffusion_model, lora)
    rebuildable = dtype != torch.float8_e5m2 and not weight_dtype.endswith("_fast")
    if rebuildable and (lora is None or lora_path is not None):
        model.causvid_source = ModelSource.of_file(path, model.manual_cast_dtype or model.get_dtype(), lora_path,
                                                   lora_mode, fp8_storage=dtype == torch.float8_e4m3fn)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
    # CUDA graphs kept between runs hold a KV cache: freed when ComfyUI unloads the model (clones keep the callback)
    patcher.add_callback(comfy.patcher_extension.CallbacksMP.ON_DETACH, release_on_detach)
    return patcher


def default_dtype(device: torch.device, source: torch.dtype, params: int, supported: list[torch.dtype]) -> torch.dtype:
    """The weights' dtype for `weight_dtype = default`: bf16 wherever the device computes in bf16, as the references
    do (also for fp16 files: bf16 holds every fp16 value of a bf16-trained model, and fp16 activations overflow
    more easily); elsewhere ComfyUI's choice (fp16 on a card without bf16, said in the log; fp32 on the CPU)."""
    if source in (torch.float8_e4m3fn, torch.float8_e5m2) or device.type == "cpu":
        return comfy.model_management.unet_dtype(model_params=params, supported_dtypes=supported, weight_dtype=source)
    if comfy.model_management.should_use_bf16(device, model_params=params):
        return torch.bfloat16
    dtype = comfy.model_management.unet_dtype(model_params=params, supported_dtypes=supported, weight_dtype=source)
    if dtype == torch.float16:
        logging.getLogger("comfyui-causvid").warning(
            "CausVid: this GPU has no bf16, so the model computes in fp16: not bit-exact with the references, and "
            "a 14B model can overflow (the sampler then stops with a NaN/Inf message)")
    return dtype


def compute_dtype(patcher: comfy.model_patcher.ModelPatcher) -> torch.dtype:
    """The dtype activations run in: the manual-cast dtype when weights are stored otherwise."""
    model = patcher.model
    return model.manual_cast_dtype or model.get_dtype()


def causal_network(patcher: comfy.model_patcher.ModelPatcher) -> CausalWanModel:
    network = getattr(patcher.model, "diffusion_model", None)
    if not isinstance(network, CausalWanModel):
        raise ValueError(
            "this MODEL is not a causal Wan model: load the checkpoint with 'CausVid Model Loader' "
            "(a model from the core loaders runs bidirectionally and cannot be sampled block by block)")
    return network
