"""Regenerate the example workflows: `example_workflows/<name>.json` (UI) and `tools/workflows/api/<name>.json`
(API-format twin), from the specs in tools/workflows/examples.py and the node schemas of a headless ComfyUI.

    .venv/bin/python -m tools.workflows           # (re)write both sets of files
    .venv/bin/python -m tools.workflows --check   # exit 1 if a file is out of date
"""

from __future__ import annotations

import argparse
import sys

from tools.comfy_server import ComfyServer
from tools.workflows.examples import generated_files
from tools.workflows.graph import REPO_ROOT


def fetch_object_info() -> dict:
    """Start a headless ComfyUI with the pack (scripts/setup.sh must have run) and read /object_info."""
    with ComfyServer() as server:
        return server.object_info()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    args = parser.parse_args(argv)
    files = generated_files(fetch_object_info())
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"out of date: {p.relative_to(REPO_ROOT)}")
        if not stale:
            print("all example workflows up to date")
        return 1 if stale else 0
    for p, text in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        if p in stale:
            p.write_text(text)
            print(f"wrote {p.relative_to(REPO_ROOT)}")
    if not stale:
        print("all example workflows up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
