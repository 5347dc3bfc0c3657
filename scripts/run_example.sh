#!/usr/bin/env bash
# The pack's first command: set up (idempotent) and run the CausVid 1.3B text-to-video example
# workflow in a headless ComfyUI (CPU unless CUDA is available), then print where the video went.
#
#   bash scripts/run_example.sh [--workflow NAME] [--models-dir DIR] [--tiny] [--output-dir DIR]
#
# Real models are used when CAUSVID_MODELS_DIR (or --models-dir) holds the workflow's files under
# diffusion_models/, text_encoders/ and vae/; otherwise the same graph runs on tiny random-weight
# stand-ins (the pack never downloads weights). See scripts/run_example.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
exec .venv/bin/python scripts/run_example.py "$@"
