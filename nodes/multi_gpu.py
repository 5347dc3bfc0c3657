"""CausVid Multi-GPU: the MODEL sampled on several GPUs of this host by sequence parallelism (`causal.parallel`).

The node only marks a clone of the model with the GPU list. The first sampling run with it starts one worker
process per GPU (`causal.rank_pool`), which loads the same checkpoint file; the workers stay loaded between runs and
are ended when ComfyUI unloads them (a small handle model stands for them in ComfyUI's model management: its
"Unload Models", or room needed for another model), when a run asks for another model or GPU list, when a worker
fails alone or dies (said in the error; the next run starts new ones), and when ComfyUI exits.
"""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import comfy.patcher_extension
import torch
from comfy_api.latest import io

from ..causal.rank_pool import ModelSource, RankPool
from .comfy_model import causal_network

PARALLEL_KEY = "causvid_multi_gpu"
"""Where the node's `MultiGPU` sits in the clone's model_options."""
log = logging.getLogger("comfyui-causvid")


@dataclass(frozen=True)
class MultiGPU:
    devices: tuple[str, ...]


def parse_devices(text: str) -> tuple[str, ...]:
    """'0,1' -> ('cuda:0', 'cuda:1'); 'cpu,cpu' -> two CPU ranks (gloo: slow, for trying a graph without GPUs)."""
    entries = [part.strip().lower() for part in text.replace(";", ",").split(",") if part.strip()]
    if not entries:
        raise ValueError("gpus is empty: list the GPUs to sample on, e.g. 0,1 or 0,1,2,3")
    if all(e == "cpu" for e in entries):
        return tuple(entries)
    if not all(e.removeprefix("cuda:").isdigit() for e in entries):
        raise ValueError(f"gpus must be GPU numbers separated by commas, e.g. 0,1 (or cpu,cpu without GPUs); got "
                         f"'{text}'")
    indices = [int(e.removeprefix("cuda:")) for e in entries]
    if len(set(indices)) < len(indices):
        raise ValueError(f"gpus names a GPU twice ('{text}'): each rank needs a GPU of its own")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if missing := [i for i in indices if i >= count]:
        seen = f"GPUs 0 to {count - 1}" if count else "no CUDA GPU"
        raise ValueError(f"gpus asks for GPU {', '.join(map(str, missing))}, but this ComfyUI sees {seen}")
    return tuple(f"cuda:{i}" for i in indices)


def multi_gpu_of(model) -> MultiGPU | None:
    return model.model_options.get(PARALLEL_KEY)


class CausVidMultiGPU(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CausVidMultiGPU",
            display_name="CausVid Multi-GPU",
            category="CausVid",
            description="Samples the model on several GPUs of this computer: each GPU holds the whole model and "
                        "computes its share of every block (sequence parallelism), so a block takes about 1/N of "
                        "the time. The first run starts a worker per GPU that loads the same checkpoint; they stay "
                        "loaded until ComfyUI unloads models. Within bf16 rounding of one GPU, not bitwise.",
            inputs=[
                io.Model.Input("model", tooltip="From CausVid Model Loader (the workers load its file)."),
                io.String.Input("gpus", default="0,1",
                                tooltip="GPU numbers, e.g. 0,1 or 0,1,2,3. The attention heads must split evenly: "
                                        "1.3B (12 heads) on 2, 3, 4 or 6 GPUs; 14B (40) on 2, 4, 5 or 8; LongLive "
                                        "2.0 5B (24) on 2, 3, 4, 6 or 8. cpu,cpu runs two CPU workers (slow)."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, gpus: str) -> io.NodeOutput:
        devices = parse_devices(gpus)
        config = causal_network(model).config
        source_of(model)  # refused here, before any run, when the workers could not load what this model is
        if config.num_heads % len(devices):
            counts = [n for n in range(2, 9) if config.num_heads % n == 0]
            raise ValueError(f"this model's {config.num_heads} attention heads do not split over {len(devices)} "
                             f"GPUs: use {', '.join(map(str, counts))}")
        clone = model.clone()
        clone.model_options[PARALLEL_KEY] = MultiGPU(devices)
        return io.NodeOutput(clone)


def source_of(model) -> ModelSource:
    """What the workers load: the file CausVid Model Loader read, in the dtype this model computes in."""
    source = getattr(model.model, "causvid_source", None)
    if source is None:
        raise ValueError("the Multi-GPU workers load the model's file themselves: connect CausVid Model Loader's "
                         "MODEL directly (fp8_e4m3fn_fast, ComfyUI's fp8 products, is one GPU's only: "
                         "choose fp8_e4m3fn)")
    if model.patches:
        raise ValueError("this model carries LoRA patches from another node, which the Multi-GPU workers do not "
                         "get: give a LongLive LoRA to CausVid Model Loader instead, or sample on one GPU")
    return source


@dataclass
class _Running:
    key: tuple
    pool: RankPool
    handle: comfy.model_patcher.ModelPatcher


_running: list[_Running] = []  # at most one pool: its workers hold the GPUs


def pool_for(model) -> tuple[RankPool, comfy.model_patcher.ModelPatcher] | None:
    """The workers for a model marked by CausVid Multi-GPU, started now unless they are running (None for a model
    without the mark), and the handle that stands for them in ComfyUI's model management."""
    spec = multi_gpu_of(model)
    if spec is None:
        return None
    key = (source_of(model), spec.devices)
    if _running and (_running[0].key != key or _running[0].pool.closed):
        close_pool()
    if not _running:
        log.info("CausVid Multi-GPU: starting %d workers (%s) and loading the model on each", len(spec.devices),
                 ", ".join(spec.devices))
        pool = RankPool(key[0], spec.devices, waiting=mm.throw_exception_if_processing_interrupted)
        device = mm.get_torch_device()
        handle = comfy.model_patcher.ModelPatcher(torch.nn.Module(), load_device=device,
                                                  offload_device=torch.device("cpu"),
                                                  size=max(pool.weight_bytes(device), 1))
        handle.add_callback(comfy.patcher_extension.CallbacksMP.ON_DETACH, _on_detach)
        _running.append(_Running(key, pool, handle))
    return _running[0].pool, _running[0].handle


def _on_detach(patcher, unpatch_all: bool) -> None:
    """ComfyUI unloads the handle (Unload Models, or room for another model): the workers end, freeing their GPUs.
    Without `unpatch_all` it is only detached to be loaded again by the next run. The handle itself stays
    referenced until the next run replaces it: model management is iterating its list of loaded models here, and
    the handle's last reference going would take its entry out of that list under it."""
    if unpatch_all and _running and _running[0].handle is patcher:
        log.info("CausVid Multi-GPU: ComfyUI unloads the workers on %s", ", ".join(_running[0].pool.devices))
        _running[0].pool.close()


def close_pool() -> None:
    """End the running workers, if any."""
    if _running:
        running = _running.pop()
        log.info("CausVid Multi-GPU: ending the workers on %s", ", ".join(running.pool.devices))
        running.pool.close()


atexit.register(close_pool)
