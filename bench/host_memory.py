#!/usr/bin/env python3
"""Host memory of loading a checkpoint through CausVid Model Loader's code (`nodes.comfy_model.load_causal_model`,
the model built on ComfyUI's offload device, the CPU): the peak of this process's anonymous resident memory
(RssAnon: the file's own pages, which the kernel can drop, are not counted) above what it was before, against the
bytes of the model it builds.

    python3 bench/host_memory.py --comfyui .devcarry/ComfyUI --model 14B --weight-dtype fp8_e4m3fn --json $OUT/host.json
    python3 bench/host_memory.py --comfyui .comfyui/ComfyUI --model 1.3B --layout causvid   # a .pt file

The checkpoint (real-size random weights in bf16, `--layout` one of causal.synthetic.LAYOUTS) is written to
`--work-dir` first unless it is there; the load runs in a fresh process (ComfyUI imported with --cpu), sampled
every 2 ms. `--dim/--ffn-dim/--layers` give a custom (smaller) model for a quick check.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = 2 ** 30

_LOAD = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
from tools.comfy_inprocess import add_comfyui_to_sys_path, import_folder
add_comfyui_to_sys_path(cpu=True)
pack = import_folder("comfyui_causvid", sys.argv[1])
import importlib
comfy_model = importlib.import_module("comfyui_causvid.nodes.comfy_model")

def anon():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))

peak, done = [anon()], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)
base = anon()
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
t0 = time.perf_counter()
patcher = comfy_model.load_causal_model(sys.argv[2], sys.argv[3])
seconds = time.perf_counter() - t0
done.set()
sampler.join()
peak[0] = max(peak[0], anon())
model_bytes = sum(t.numel() * t.element_size() for t in patcher.model.diffusion_model.state_dict().values())
print(json.dumps({"seconds": seconds, "base_bytes": base, "peak_above_base": peak[0] - base,
                  "after_above_base": anon() - base, "model_bytes": model_bytes}))
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", default=str(REPO / ".comfyui" / "ComfyUI"))
    p.add_argument("--model", choices=("1.3B", "14B"), default="1.3B")
    p.add_argument("--dim", type=int, help="a custom model instead: width (with --ffn-dim and --layers)")
    p.add_argument("--ffn-dim", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--layout", default="comfyui", help="causal.synthetic.LAYOUTS key (default ComfyUI's file)")
    p.add_argument("--weight-dtype", default="default", help="the loader's weight_dtype")
    p.add_argument("--work-dir", default=None, help="where the checkpoint is written (default: a temporary folder)")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    from causal.config import PRESETS, WanConfig
    from causal.synthetic import LAYOUTS, random_state_dict, write_checkpoint

    custom = args.dim is not None
    config = WanConfig(dim=args.dim, ffn_dim=args.ffn_dim, num_layers=args.layers) if custom else PRESETS[args.model]
    name = f"dim{config.dim}_{config.num_layers}" if custom else args.model.replace(".", "_")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="causvid_host_memory_"))
    path = work / f"host_memory_{name}_{LAYOUTS[args.layout]}"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        write_checkpoint(random_state_dict(config, dtype=torch.bfloat16, seed=0), path, args.layout)
    proc = subprocess.run([sys.executable, "-c", _LOAD, str(REPO), str(path), args.weight_dtype],
                          cwd=args.comfyui, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return 1
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(model=name, layout=args.layout, weight_dtype=args.weight_dtype, file_bytes=path.stat().st_size,
                  peak_over_model=result["peak_above_base"] / result["model_bytes"],
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"{name} {args.layout} -> {args.weight_dtype}: file {result['file_bytes'] / GIB:.2f} GiB, model "
          f"{result['model_bytes'] / GIB:.2f} GiB, peak anonymous memory +{result['peak_above_base'] / GIB:.2f} GiB "
          f"({result['peak_over_model']:.2f}x the model), {result['seconds']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
