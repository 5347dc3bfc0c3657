#!/usr/bin/env bash
# Set up (idempotent, fast when done) and run the test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# no path arguments: pytest uses testpaths = ["tests"] from pyproject.toml
exec .venv/bin/python -m pytest -q "$@"
