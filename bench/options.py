"""Speed options timed by bench.py, each measured against the exact path (relative L2 of final latents).

The options are the ones `causal` ships (`Compute(fused_kernels=True)`, `causal.quantize_blocks_fp8`),
plus SDPA backend restrictions to check the dispatcher's choice. An fp8 option converts the model in
place, so fp8 options run last on a model; `fp8_storage` runs on a rounded copy.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ContextManager



def _sdpa(backend: str) -> Callable[[], ContextManager[None]]:
    def enter() -> ContextManager[None]:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([getattr(SDPBackend, backend)])
    return enter


@dataclass(frozen=True)
class Option:
    name: str
    description: str
    exact: bool
    """True if the option is meant to give the exact path's numbers (any difference is then a finding)."""
    fused_kernels: bool = False
    cuda_graphs: bool = False
    """One causal.CudaGraphs per configuration, made before the warm-up clip and reused by every clip."""
    fp8: bool = False
    fp8_storage: bool = False
    flash_attention: bool = False
    """Self-attention by FlashAttention-4 (`Compute(flash_attention=True)`)."""
    """Runs on a copy of the model whose linear layers' weights and biases went through float8_e4m3fn."""
    enter: Callable[[], ContextManager[None]] = field(default=contextlib.nullcontext)


OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("exact", "the default path", True),
    Option("fused", "compiled elementwise glue (Compute(fused_kernels=True))", False, fused_kernels=True),
    Option("graphs", "CUDA graphs per block slot, kept across clips (causal.CudaGraphs)", True, cuda_graphs=True),
    Option("fused_graphs", "fused kernels + CUDA graphs kept across clips", False, fused_kernels=True,
           cuda_graphs=True),
    Option("fp8", "fp8 e4m3 block linears (quantize_blocks_fp8), exact glue", False, fp8=True),
    Option("fp8_fused", "fp8 block linears + fused kernels", False, fused_kernels=True, fp8=True),
    Option("fp8_fused_graphs", "fp8 block linears + fused kernels + CUDA graphs kept across clips", False,
           fused_kernels=True, cuda_graphs=True, fp8=True),
    Option("fused_graphs_fa4", "fused kernels + CUDA graphs, self-attention by FlashAttention-4", False,
           fused_kernels=True, cuda_graphs=True, flash_attention=True),
    Option("fp8_fused_graphs_fa4", "fp8 block linears + fused kernels + CUDA graphs + FlashAttention-4", False,
           fused_kernels=True, cuda_graphs=True, fp8=True, flash_attention=True),
    Option("fp8_storage", "weights stored in fp8 e4m3 and computed in bf16, as the loader's weight_dtype "
           "fp8_e4m3fn does (ComfyUI's manual cast)", False, fp8_storage=True),
    Option("sdpa_cudnn", "SDPA restricted to cuDNN attention", False, enter=_sdpa("CUDNN_ATTENTION")),
    Option("sdpa_flash", "SDPA restricted to FlashAttention-2", False, enter=_sdpa("FLASH_ATTENTION")),
    Option("sdpa_math", "SDPA restricted to the math (reference) backend; runs anywhere", False,
           enter=_sdpa("MATH")),
)}
