"""Shared pytest setup: make `causal` and `tools` importable as top-level packages.

The repository root is the ComfyUI node pack itself (its __init__.py imports ComfyUI), so it is never
imported as a package; its directory goes on sys.path instead so that `import causal.checkpoint` and
`from tools.comfy_server import ComfyServer` work. Do not add tests/__init__.py: pytest would then import the
tests as part of the root package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


# ------------------------------------------------------------------------------------------------
# End-to-end fixtures: a real headless ComfyUI 0.3.75 (see tools/comfy_server.py).


def frontend_root():
    """ComfyUI's own page (comfyui-frontend-package, which scripts/setup.sh installs) for the browser test; None
    where it is not installed (the server then serves the API only)."""
    try:
        import comfyui_frontend_package
    except ImportError:
        return None
    return Path(comfyui_frontend_package.__file__).parent / "static"


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """One ComfyUI server per test session (``tools.comfy_server.ComfyServer``), started on first use.

    Skipped when ComfyUI is not installed (run scripts/setup.sh), except under CI (env CI set),
    where that is an error.
    """
    from tools.comfy_server import ComfyServer, comfyui_available

    if not comfyui_available():
        if os.environ.get("CI"):
            pytest.fail("ComfyUI is not installed in .comfyui/ComfyUI (scripts/setup.sh)")
        pytest.skip("ComfyUI is not installed in .comfyui/ComfyUI: run scripts/setup.sh")
    server = ComfyServer(tmp_path_factory.mktemp("comfyui_base"), front_end_root=frontend_root())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_vae_name(comfy_server):
    """File name (for ``VAELoader.vae_name``) of a random tiny Wan 2.1 VAE in the server's
    models/vae folder."""
    from tools.standins import make_tiny_wan_vae

    name = "tiny_wan21_vae.safetensors"
    make_tiny_wan_vae(comfy_server.models_dir / "vae" / name, seed=0)
    return name


@pytest.fixture(scope="module")
def standins(comfy_server):
    """The example workflows' model files as tiny random stand-ins in the server's models folder."""
    from tools import workflows as eg

    eg.write_standin_models(comfy_server.models_dir)
    return comfy_server.models_dir
