"""ComfyUI adapters of the pack (V3 node API). No math here: see causal/."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .live import register_with_server
from .loader import CausVidModelLoader
from .multi_gpu import CausVidMultiGPU
from .sampler import CausVidContinue, CausVidSampler
from .stream import CausVidStreamToVideo
from .text import CausVidTextEncode

NODES: list[type[io.ComfyNode]] = [CausVidModelLoader, CausVidTextEncode, CausVidSampler, CausVidContinue,
                                   CausVidStreamToVideo, CausVidMultiGPU]


class CausVidExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_with_server()  # while ComfyUI loads the packs, before its server takes its routes
        return NODES
