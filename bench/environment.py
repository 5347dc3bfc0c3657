"""The machine a benchmark runs on: which device, what it is (the environment line of a report), and the
device helpers every step uses (synchronise, free memory)."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
GiB = 1024 ** 3


def pick_device(name: str | None) -> torch.device:
    """`name`, or cuda when there is one (else cpu); a CUDA device gets its index and becomes current."""
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def now_utc() -> str:
    try:
        return subprocess.run(["date", "-u", "+%Y-%m-%d %H:%M UTC"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # pragma: no cover - no `date` binary
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def causal_source_hash() -> str:
    """Short hash of causal/*.py: which version of the core was measured (the device copy has no .git)."""
    h = hashlib.sha256()
    for f in sorted((REPO / "causal").glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": now_utc(),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "causal_sha": causal_source_hash(),
    }
    try:
        import triton  # noqa: F401

        env["triton"] = triton.__version__
    except Exception:
        env["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["card"] = props.name
        env["card_memory_gib"] = round(props.total_memory / GiB, 1)
        env["sms"] = props.multi_processor_count
        env["cudnn"] = torch.backends.cudnn.version()
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            env["driver"] = None
        with contextlib.suppress(Exception):
            env["sdpa_backends_enabled"] = {
                "flash": torch.backends.cuda.flash_sdp_enabled(),
                "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                "math": torch.backends.cuda.math_sdp_enabled(),
            }
    else:
        env["card"] = device_name(device)
    return env
