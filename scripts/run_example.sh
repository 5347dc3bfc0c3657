#!/usr/bin/env bash
# Run an API-format prompt through a headless ComfyUI (CPU) with this pack and the test-only nodes
# loaded, then print where the outputs went. Stub for now: the tiny models of the test suite are
# used (a random tiny Wan VAE is written as models/vae/tiny_wan21_vae.safetensors).
#
#   bash scripts/run_example.sh [api_prompt.json] [output_dir]
#
# Without a prompt file, the smoke graph of tests/test_comfyui_smoke.py is run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
exec .venv/bin/python - "$@" <<'EOF_PY'
import json, shutil, sys, tempfile
from pathlib import Path
sys.path.insert(0, "tests")
from comfyui_harness import ComfyServer, make_tiny_wan_vae

prompt_file = sys.argv[1] if len(sys.argv) > 1 else None
out_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "example_output")
with ComfyServer() as server:
    make_tiny_wan_vae(server.models_dir / "vae" / "tiny_wan21_vae.safetensors")
    if prompt_file:
        prompt = json.loads(Path(prompt_file).read_text())
    else:
        from test_comfyui_smoke import _graph
        prompt = _graph("tiny_wan21_vae.safetensors")
    result = server.run(prompt, timeout=1800)
    print(result.describe())
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in server.output_paths(result):
        shutil.copy2(p, out_dir / p.name)
        print("output:", out_dir / p.name)
    for nid in result.outputs:
        for text in result.ui_text(nid):
            print(f"node {nid} text: {text}")
    sys.exit(0 if result.ok else 1)
EOF_PY
