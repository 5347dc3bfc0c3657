"""Copies from a CUDA device to the CPU that stall no other thread.

A plain `tensor.cpu()` copies into pageable memory: the CUDA driver then holds the calling thread inside the copy
until the stream reaches it, and while it waits every other thread's CUDA calls wait behind it. Measured on an
H200 (bench/RESULTS.md): the stream's decoder thread stalled for the whole ~0.3 s that the sampler's copy of a
finished block waited for its forwards, so decoding and sampling ran in turn instead of side by side. A copy into
pinned memory is queued like a kernel; the thread then waits on the stream, which holds nothing else up.
"""

from __future__ import annotations

import torch


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """The same values on the CPU (a CPU tensor is returned as it is), once the copy has finished."""
    if tensor.device.type != "cuda":
        return tensor.cpu()
    out = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    out.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()
    return out


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor.to(device)`, through `to_host` when that is a copy from a GPU to the CPU."""
    return to_host(tensor) if torch.device(device).type == "cpu" else tensor.to(device)
