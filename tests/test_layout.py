"""Project invariants: causal/ is pure torch, checkpoints never run code, the pack is registry-ready."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFY_MODULES = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "server", "latent_preview",
                 "execution")


def test_causal_imports_without_comfyui():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import causal, causal.synthetic, causal.text; "
            f"leaked = [m for m in sys.modules if m.split('.')[0] in {COMFY_MODULES!r}]; "
            "assert not leaked, leaked; print(len(causal.__all__))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_no_comfyui_import_statement_in_causal():
    pattern = re.compile(r"^\s*(import|from)\s+(" + "|".join(COMFY_MODULES) + r")\b", re.M)
    offenders = [p.name for p in (ROOT / "causal").glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_torch_load_always_refuses_code():
    for path in [*(ROOT / "causal").glob("*.py"), *(ROOT / "nodes").glob("*.py")]:
        for line in path.read_text().splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path.name}: {line.strip()}"


def test_registry_metadata():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "comfyui-causvid"
    assert {"safetensors", "einops", "comfy-kitchen", "transformers"} <= set(project["project"]["dependencies"])
    assert not any(d.startswith("torch") for d in project["project"]["dependencies"])
    assert {"PublisherId", "DisplayName", "Icon"} <= set(project["tool"]["comfy"])
    # the icon is a file of this repository, served from its default branch
    repository = project["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{repository}/main/"
    icon = project["tool"]["comfy"]["Icon"]
    assert icon.startswith(prefix) and (ROOT / icon.removeprefix(prefix)).is_file(), icon
    requirements = {line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")}
    assert requirements == set(project["project"]["dependencies"])


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "bash scripts/run_example.sh" in head and "bash scripts/test.sh" in head
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
