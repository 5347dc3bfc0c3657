"""Development tools shared by `scripts/`, `tests/` and `bench/`: tiny random-weight models, a headless ComfyUI
server driven over HTTP, stand-in model files and the generator of the example workflows.

Nothing here is part of the node pack: ComfyUI never imports it. Import it with the repository root on
`sys.path` (`from tools.tiny import tiny_model`); the root itself is the pack and is never imported as a package.
"""
