"""The benchmark's matrix: the timed configurations, the issue's reference numbers and targets, and the
bare-kernel estimate of a clip (docs/results.md §2)."""

from __future__ import annotations

from dataclasses import dataclass

VIDEO_FRAMES_PER_LATENT = 4  # 21 latent frames -> 1 + 4·20 = 81 video frames


@dataclass(frozen=True)
class BenchConfig:
    key: str
    model: str  # a key of causal.PRESETS
    schedule: str  # a key of causal.SCHEDULES
    label: str


CONFIGS: dict[str, BenchConfig] = {c.key: c for c in (
    BenchConfig("1.3B-3step", "1.3B", "CausVid 1.3B", "CausVid 1.3B, 3 steps + clean pass"),
    BenchConfig("1.3B-4step", "1.3B", "CausVid 1.3B warped 4-step", "CausVid 1.3B, 4 warped steps + clean pass"),
    BenchConfig("14B-9step", "14B", "CausVid-Plus 14B", "CausVid-Plus 14B, 9 steps + clean pass"),
    BenchConfig("14B-lightx2v", "14B", "LightX2V CausVid 14B", "LightX2V CausVid 14B, 9 steps, no clean pass"),
)}

REFERENCE: dict[str, dict[str, float]] = {
    # issue 4: one H100 80GB, PyTorch 2.11, SDPA, random weights, 832×480, 21 latent frames, DiT only
    "1.3B-3step": {"clip": 2.58, "first": 0.28, "vram": 8.6},
    "1.3B-4step": {"clip": 2.91, "first": 0.29, "vram": 11.3},
    "14B-9step": {"clip": 29.1, "first": 3.1, "vram": 58.1},
}
TARGETS: dict[str, dict[str, float]] = {
    "1.3B-3step": {"first": 0.2},
    "1.3B-4step": {"clip": 1.6, "first": 0.2},
    "14B-9step": {"clip": 17.5, "first": 1.9, "vram": 58.0},
    "14B-lightx2v": {"first": 1.9, "vram": 58.0},
}
# Measured bare-kernel time of one forward (GEMMs + SDPA only, docs/results.md §2, H100, eager), as a
# line in the number of cached latent frames L (incl. the current block): t(L) = a + b·L milliseconds.
KERNEL_FIT_MS: dict[str, tuple[float, float]] = {"1.3B": (18.9, 2.4), "14B": (154.2, 10.28)}

LAYOUT_FOR_MODEL = {"1.3B": "comfyui", "14B": "lightx2v_safetensors", "tiny": "comfyui"}


def video_frames(latent_frames: int) -> int:
    """Video frames the Wan VAE decodes from `latent_frames`: the first alone, then 4 per latent frame."""
    return 1 + VIDEO_FRAMES_PER_LATENT * (latent_frames - 1)


def kernel_bound_s(model: str, forwards_per_block: int, num_blocks: int, frames_per_block: int = 3) -> float | None:
    """Bare-kernel estimate of a clip from the line fit of docs/results.md §2 (None for models without a fit)."""
    if model not in KERNEL_FIT_MS:
        return None
    a, b = KERNEL_FIT_MS[model]
    return forwards_per_block * sum(a + b * frames_per_block * (k + 1) for k in range(num_blocks)) / 1000.0
