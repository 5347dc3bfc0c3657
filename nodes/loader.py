"""CausVid Model Loader: a causal Wan2.1 checkpoint from models/diffusion_models → MODEL."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..causal.checkpoint import CheckpointError
from .comfy_model import WEIGHT_DTYPES, load_causal_model

EXTENSIONS = (".safetensors", ".sft", ".pt", ".pth", ".ckpt")


def checkpoint_files() -> list[str]:
    return [name for name in folder_paths.get_filename_list("diffusion_models") if name.lower().endswith(EXTENSIONS)]


class CausVidModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausVidModelLoader",
            display_name="CausVid Model Loader",
            category="CausVid",
            description="Loads a causal Wan2.1 T2V checkpoint (CausVid model.pt, CausVid-Plus, LightX2V "
                        "causal_model.pt/.safetensors, Self-Forcing, LongLive base, ComfyUI repackaged) from "
                        "models/diffusion_models. .pt files are read without running any pickled code.",
            inputs=[
                io.Combo.Input("ckpt_name", options=checkpoint_files(), tooltip="A file in models/diffusion_models."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default",
                               tooltip="Storage dtype of the large matrices; fp8_e4m3fn halves their memory and "
                                       "computes in bf16/fp16, fp8_e4m3fn_fast also multiplies in fp8 where the "
                                       "GPU can (neither is bit-exact with the reference)."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("diffusion_models", ckpt_name)
        try:
            return io.NodeOutput(load_causal_model(path, weight_dtype))
        except CheckpointError as e:  # name the file as the user picked it, never the server's folders
            raise CheckpointError(str(e).replace(str(path), f"diffusion_models/{ckpt_name}")) from None
