"""The models a benchmark times: random weights -> a checkpoint file in a real layout -> `causal.load_model`,
and the umT5-like prompt embedding that stands in for the text encoder."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import causal
from bench.configs import LAYOUT_FOR_MODEL
from bench.environment import free_memory, mem_available_bytes, sync
from causal.config import WanConfig
from causal.synthetic import LAYOUTS, random_state_dict, write_checkpoint
from tools.tiny import TINY


@dataclass
class Setup:
    device: torch.device
    height: int
    width: int
    num_frames: int
    text_tokens: int
    seed: int
    tiny: bool
    ckpt_dirs: list[Path]
    checkpoint: bool = True


def model_config(name: str, tiny: bool) -> WanConfig:
    return TINY if tiny else causal.PRESETS[name]


def prompt_embedding(config: WanConfig, tokens: int, seed: int) -> torch.Tensor:
    """A umT5-like prompt embedding [1, text_len, text_dim] (float32, CPU): `tokens` random rows drawn
    with `seed`, then zero rows."""
    g = torch.Generator().manual_seed(seed)
    ctx = torch.zeros(1, config.text_len, config.text_dim)
    ctx[:, :tokens] = torch.randn(1, tokens, config.text_dim, generator=g)
    return ctx


def make_context(config: WanConfig, setup: Setup) -> torch.Tensor:
    """The bench's prompt embedding [1, 512, text_dim]: `text_tokens` random rows, then zero rows, bf16."""
    return prompt_embedding(config, setup.text_tokens, 1234).to(device=setup.device, dtype=torch.bfloat16)


def prepare_model(name: str, setup: Setup, log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """Random weights -> checkpoint file (real layout) -> causal.load_model. Returns (model, info)."""
    config = model_config(name, setup.tiny)
    layout = LAYOUT_FOR_MODEL["tiny" if setup.tiny else name]
    nbytes = config.num_parameters() * 2
    free = 0
    for folder in setup.ckpt_dirs:  # the first candidate folder with room for the file
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free >= nbytes * 1.05 + 2e9:
            break
    path = folder / f"{name.replace('.', '_')}_{LAYOUTS[layout]}"
    info: dict[str, Any] = {"model": name, "layout": layout, "file": str(path), "parameters": config.num_parameters(),
                            "file_gb": round(nbytes / 1e9, 2)}
    ram = mem_available_bytes()
    info["disk_free_gb"] = round(free / 1e9, 1)
    info["ram_available_gb"] = round(ram / 1e9, 1) if ram else None
    log(f"[{name}] {config.num_parameters() / 1e9:.2f} B parameters, {nbytes / 1e9:.1f} GB bf16; "
        f"disk free {free / 1e9:.1f} GB, RAM available {ram / 1e9 if ram else float('nan'):.1f} GB")
    if setup.checkpoint and free < nbytes * 1.05 + 2e9:
        raise RuntimeError(f"not enough disk in {[str(d) for d in setup.ckpt_dirs]} for the {name} checkpoint "
                           f"({nbytes / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free)")
    t0 = time.perf_counter()
    sd = random_state_dict(config, dtype=torch.bfloat16, seed=setup.seed, device=setup.device)
    sync(setup.device)
    t1 = time.perf_counter()
    if not setup.checkpoint:  # straight from the state dict (profiling / option runs only)
        model = causal.CausalWanModel.from_state_dict(sd, config, dtype=torch.bfloat16, device=setup.device)
        info.update(layout="none (CausalWanModel.from_state_dict)", gen_s=round(t1 - t0, 2), write_s=0.0,
                    load_s=round(time.perf_counter() - t1, 2))
        log(f"[{name}] built from the state dict (no checkpoint file)")
        return model, info
    write_checkpoint(sd, path, layout)
    t2 = time.perf_counter()
    del sd
    free_memory()
    log(f"[{name}] weights drawn in {t1 - t0:.1f} s, written ({layout}) in {t2 - t1:.1f} s")
    t3 = time.perf_counter()
    model = causal.load_model(path, dtype=torch.bfloat16, device=setup.device)
    sync(setup.device)
    t4 = time.perf_counter()
    info.update(gen_s=round(t1 - t0, 2), write_s=round(t2 - t1, 2), load_s=round(t4 - t3, 2))
    log(f"[{name}] causal.load_model: {t4 - t3:.1f} s")
    with contextlib.suppress(OSError):
        path.unlink()  # free the disk for the next model
    free_memory()
    return model, info
