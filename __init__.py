"""comfyui-causvid: autoregressive, KV-cached, few-step Wan2.1 video (CausVid) for ComfyUI.

ComfyUI imports this file as the pack's entry point; the nodes live in `nodes/`, the pure-torch core
in `causal/` (usable without ComfyUI: `import causal` with this folder on sys.path).
"""


async def comfy_entrypoint():
    from .nodes import CausVidExtension

    return CausVidExtension()
