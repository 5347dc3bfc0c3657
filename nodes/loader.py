"""CausVid Model Loader: a causal Wan checkpoint (Wan2.1, or LongLive 2.0's Wan2.2 TI2V-5B) from
models/diffusion_models -> MODEL."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..causal.checkpoint import CheckpointError
from ..causal.lora import read_lora
from .comfy_model import LORA_MODES, WEIGHT_DTYPES, load_causal_model

NO_LORA = "none"

EXTENSIONS = (".safetensors", ".sft", ".pt", ".pth", ".ckpt")


def checkpoint_files() -> list[str]:
    return [name for name in folder_paths.get_filename_list("diffusion_models") if name.lower().endswith(EXTENSIONS)]


def lora_files() -> list[str]:
    return [NO_LORA] + [name for name in folder_paths.get_filename_list("loras") if name.lower().endswith(EXTENSIONS)]


class CausVidModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausVidModelLoader",
            display_name="CausVid Model Loader",
            category="CausVid",
            description="Loads a causal Wan2.1 T2V checkpoint (CausVid model.pt, CausVid-Plus, LightX2V "
                        "causal_model.pt/.safetensors, Self-Forcing, LongLive base, ComfyUI repackaged) or LongLive "
                        "2.0's causal Wan2.2 TI2V-5B (model_bf16.pt: 48-channel latents for the Wan2.2 VAE) from "
                        "models/diffusion_models. .pt files are read without running any pickled code.",
            inputs=[
                io.Combo.Input("ckpt_name", options=checkpoint_files(), tooltip="A file in models/diffusion_models."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default",
                               tooltip="Storage dtype of the large matrices; fp8_e4m3fn halves their memory and "
                                       "computes in bf16/fp16, fp8_e4m3fn_fast also multiplies in fp8 where the "
                                       "GPU can (neither is bit-exact with the reference)."),
                io.Combo.Input("lora_name", options=lora_files(), default=NO_LORA, optional=True,
                               tooltip="LongLive's LoRA (longlive_models/models/lora.pt, in models/loras), the "
                                       "part that makes the LongLive base LongLive. Use with the LongLive 1.3B "
                                       "preset. (Ordinary ComfyUI LoRAs go through LoraLoaderModelOnly.)"),
                io.Combo.Input("lora_mode", options=list(LORA_MODES), default="merged", optional=True,
                               tooltip="merged: added to the weights at load (no cost per step, bf16 rounding "
                                       "differs slightly). unmerged: applied in every forward as LongLive does "
                                       "(its exact numbers, a little slower)."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str, lora_name: str = NO_LORA,
                lora_mode: str = "merged") -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("diffusion_models", ckpt_name)
        lora_path = None if lora_name == NO_LORA else folder_paths.get_full_path_or_raise("loras", lora_name)
        try:
            lora = None if lora_path is None else read_lora(lora_path)
            return io.NodeOutput(load_causal_model(path, weight_dtype, lora=lora, lora_mode=lora_mode,
                                                   lora_path=lora_path))
        except ValueError as e:  # name the files as the user picked them, never the server's folders
            message = str(e).replace(str(path), f"diffusion_models/{ckpt_name}")
            if lora_path is not None:
                message = message.replace(str(lora_path), f"loras/{lora_name}")
            raise type(e)(message) from None
