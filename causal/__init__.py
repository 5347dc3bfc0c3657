"""comfyui-causvid core: block-causal, KV-cached, few-step Wan2.1 video sampling in pure torch.

    import causal
    model = causal.load_model("causal_model.safetensors", dtype=torch.bfloat16, device="cuda")
    latents = causal.sample_video(model, context, causal.Video(height=480, width=832),
                                  causal.SCHEDULES["CausVid-Plus 14B"], noise=causal.Noise(seed=0))

This package never imports ComfyUI.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .cache_policy import FAMILY_POLICIES, CachePolicy, family_policy
from .checkpoint import Checkpoint, CheckpointError, read_checkpoint
from .config import PRESETS, WanConfig, detect_config
from .context import ContextWindow, History
from .kv_cache import CrossAttentionKV, KVCache
from .model import CausalWanModel
from .fp8 import quantize_blocks_fp8
from .graphs import CudaGraphs
from .parallel import ParallelError, SequenceParallel
from .prompts import LivePrompts, PromptChange, latent_frame_at
from .rebuilt_context import ReencodedFrames, Reencoder
from .request import Compute, Noise, Output, Progress, Video, fragment_lengths
from .sampler import Generation, generate, kv_cache_bytes, sample_video, working_memory_bytes
from .schedule import SCHEDULES, Schedule, sigma_table

__all__ = [
    "CachePolicy", "ContextWindow", "FAMILY_POLICIES", "History", "LivePrompts", "PromptChange", "family_policy",
    "latent_frame_at", "ReencodedFrames", "Reencoder",
    "CudaGraphs", "quantize_blocks_fp8", "ParallelError", "SequenceParallel",
    "CausalWanModel", "Checkpoint", "CheckpointError", "CrossAttentionKV", "Generation", "KVCache", "PRESETS",
    "Compute", "Noise", "Output", "Progress", "SCHEDULES", "Schedule", "Video", "WanConfig", "detect_config",
    "fragment_lengths", "generate",
    "kv_cache_bytes", "load_model", "read_checkpoint", "sample_video", "sigma_table", "working_memory_bytes",
]


def load_model(path: str | Path, *, dtype: torch.dtype = torch.bfloat16,
               device: torch.device | str = "cpu") -> CausalWanModel:
    """Read a causal Wan2.1 checkpoint of any supported layout and build the model on `device`."""
    checkpoint = read_checkpoint(path, dtype=dtype)
    return CausalWanModel.from_state_dict(checkpoint.state_dict, checkpoint.config, dtype=dtype, device=device)
