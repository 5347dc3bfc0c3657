"""ComfyUI and the pack imported into *this* process (for in-process tests), where `tools.comfy_server` runs
ComfyUI as a separate server instead."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tools.comfy_server import COMFY_DIR, REPO_ROOT


def add_comfyui_to_sys_path(cpu: bool = True) -> Path:
    """Make ComfyUI importable in *this* process (for in-process tests).

    Puts the ComfyUI root first on ``sys.path`` and forces ``--cpu`` before
    ``comfy.model_management`` is imported (a CUDA build of torch on a machine without a driver
    raises otherwise). Note: ComfyUI has top-level modules named ``nodes``, ``server``, ``utils``,
    ``execution``...; after this call ``import nodes`` is ComfyUI's ``nodes.py``, not this repo's
    ``nodes/`` package.
    """
    root = str(COMFY_DIR)
    if root not in sys.path:
        sys.path.insert(0, root)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    if cpu:
        comfy.cli_args.args.cpu = True
    return COMFY_DIR


def import_folder(name: str, path: str | os.PathLike):
    """The folder `path` imported in this process as the package `name` (once), as ComfyUI imports a custom-node
    pack. Returns the package."""
    import importlib.util

    if name not in sys.modules:
        path = Path(path)
        spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def import_pack():
    """The pack imported in this process the way ComfyUI imports it: as the package `comfyui_causvid` from the
    repo root (ComfyUI itself on sys.path, CPU), its nodes loaded. Returns the package."""
    import importlib

    add_comfyui_to_sys_path(cpu=True)
    pack = import_folder("comfyui_causvid", REPO_ROOT)
    importlib.import_module("comfyui_causvid.nodes")
    return pack


def pack_module(name: str):
    """A module of the pack (`nodes.text`, `causal.synthetic`, ...) as ComfyUI would see it, the pack imported
    in this process first."""
    import importlib

    import_pack()
    return importlib.import_module(f"comfyui_causvid.{name}")
