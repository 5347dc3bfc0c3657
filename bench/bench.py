#!/usr/bin/env python3
"""Speed benchmark of the causal sampler on real-size random-weight Wan2.1 DiTs (issue 4).

For each model size it draws random weights (on the GPU), writes them in a real checkpoint layout
(safetensors), loads them back through the pack's own loader `causal.load_model`, and times
`causal.generate` at 832×480, 21 latent frames (81 video frames), DiT only (a random prompt
embedding [1, 512, 4096] whose rows after the 20th are zero stands in for umT5).

Per configuration: one warm-up clip (not timed), then `--repeats` timed clips with the same seed.
Reported: clip seconds (median), fps (81 frames / clip), first-block latency (start of `generate`
until block 0's last denoising step is done on the GPU), steady-state seconds per block (median of
blocks 1..6, each the time between two blocks' last steps, so it holds the previous block's clean
pass), peak VRAM (torch.cuda.max_memory_allocated, reset per clip), forwards per block, and the
relative L2 difference between the timed clips (determinism; 0 expected).

Options (`--options`, see bench/options.py) are timed the same way and carry the relative L2
difference of their final latents against the exact path with the same seed.

    python bench/bench.py                                  # all four configurations on a GPU
    python bench/bench.py --configs 1.3B-4step --repeats 3
    python bench/bench.py --profile --options fused,fp8_fused  # fp8 options run last (in place)
    python bench/bench.py --tiny                           # tiny model on the CPU (smoke test)

It prints a table and appends a section to bench/RESULTS.md (`--out`), next to the issue's
reference numbers. This file is the command line; the steps are the modules of the package `bench`
(bench/README.md). The repository root is a ComfyUI node pack, so it is never imported as a
package: its directory goes on sys.path and `causal` and `bench` are imported alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python3 bench/bench.py`: `bench` is the package in the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from bench.configs import CONFIGS, video_frames  # noqa: E402
from bench.environment import environment, pick_device  # noqa: E402
from bench.models import Setup  # noqa: E402
from bench.report import markdown_section, print_table  # noqa: E402
from bench.steps import Plan, Run, run_models  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--repeats", type=int, default=2, help="timed clips per configuration (median); default 2")
    p.add_argument("--warmups", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "RESULTS.md"),
                   help="markdown file to append a section to ('' = none)")
    p.add_argument("--json", default=None, help="also write all numbers as JSON here (rewritten after every step)")
    p.add_argument("--tiny", action="store_true", help="a tiny model at a small size on the CPU (smoke test)")
    p.add_argument("--device", default=None, help="default: cuda if available (cpu with --tiny)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--frames", type=int, default=21, help="latent frames (21 -> 81 video frames)")
    p.add_argument("--text-tokens", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-dir", default=None,
                   help="where checkpoints are written: a folder, or a comma list tried in order until one has room "
                        "(default: a temp dir); each file is deleted once loaded")
    p.add_argument("--profile", action="store_true", help="profile forwards of the first model at the last block")
    p.add_argument("--profile-forwards", type=int, default=3)
    p.add_argument("--profile-slots", default="last", help="comma list of last / first (the block profiled)")
    p.add_argument("--profile-models", default="", help="models to profile (comma list; default the first one)")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="build models straight from the random state dict (skips the file round trip)")
    p.add_argument("--fp32-reference", default="",
                   help="configuration (1.3B only) to also run in float32 with the same noise: the error of the "
                        "exact bf16 path and of every option against float32")
    p.add_argument("--options", default="", help="comma list of bench/options.py options to time (1.3B configs)")
    p.add_argument("--options-14b", default="", help="options to time on the 14B configs of --option-configs")
    p.add_argument("--option-configs", default="1.3B-4step",
                   help="configurations the options run on (comma list); default 1.3B-4step")
    p.add_argument("--option-repeats", type=int, default=2)
    p.add_argument("--option-repeats-14b", type=int, default=1)
    p.add_argument("--from-json", default=None, help="only re-render a results JSON as markdown to --out")
    p.add_argument("--profile-option", default="", help="also profile under this option")
    p.add_argument("--budget-s", type=float, default=None,
                   help="skip optional steps (profile, options) that would start after this many seconds")
    args = p.parse_args(argv)
    if args.tiny:
        args.height, args.width, args.frames = 48, 64, 6
        args.text_tokens = min(args.text_tokens, 4)
        args.device = args.device or "cpu"
    return args


def comma_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def plan_from_args(args: argparse.Namespace) -> Plan:
    configs = [CONFIGS[k] for k in comma_list(args.configs)]
    model_names = list(dict.fromkeys(c.model for c in configs))  # in order of first use
    return Plan(
        configs=configs, model_names=model_names, repeats=args.repeats, warmups=args.warmups,
        options=comma_list(args.options), options_14b=comma_list(args.options_14b),
        option_configs=[CONFIGS[k] for k in args.option_configs.split(",") if k.strip()],
        option_repeats=args.option_repeats, option_repeats_14b=args.option_repeats_14b,
        profile=args.profile, profile_models=comma_list(args.profile_models) or model_names[:1],
        profile_option=args.profile_option, profile_slots=comma_list(args.profile_slots),
        profile_forwards=args.profile_forwards, fp32_reference=args.fp32_reference,
        budget_s=args.budget_s, json_path=args.json)


def new_results(args: argparse.Namespace, argv: list[str] | None, env: dict[str, Any]) -> dict[str, Any]:
    """The results dict before any step: the environment and the settings (what --json and RESULTS.md show)."""
    return {
        "env": env,
        "settings": {"height": args.height, "width": args.width, "num_frames": args.frames,
                     "video_frames": video_frames(args.frames), "seed": args.seed,
                     "text_tokens": args.text_tokens, "repeats": args.repeats, "warmups": args.warmups,
                     "tiny": args.tiny,
                     "command": "python bench/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])},
        "models": [], "configs": [], "options": [], "profiles": [],
        "fp32_reference": None,
        "notes": [], "errors": [],
    }


def append_section(results: dict[str, Any], out: Path, run: Run) -> None:
    section = markdown_section(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(("\n" if out.exists() and out.stat().st_size else "") + section)
    run.log(f"appended to {out}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        print_table(results)
        if args.out:
            with Path(args.out).open("a") as f:
                f.write("\n" + markdown_section(results))
        return results
    started = time.perf_counter()
    device = pick_device(args.device)
    plan = plan_from_args(args)
    tmp = None
    if args.ckpt_dir:
        ckpt_dirs = [Path(d) for d in args.ckpt_dir.split(",") if d]
    else:
        tmp = tempfile.TemporaryDirectory(prefix="causvid_bench_")
        ckpt_dirs = [Path(tmp.name)]
    setup = Setup(device=device, height=args.height, width=args.width, num_frames=args.frames,
                  text_tokens=args.text_tokens, seed=args.seed, tiny=args.tiny, ckpt_dirs=ckpt_dirs,
                  checkpoint=not args.no_checkpoint)
    run = Run(plan=plan, setup=setup, results=new_results(args, argv, environment(device)), started=started)
    run.log(f"environment: {json.dumps(run.results['env'])}")
    try:
        run_models(run)
    finally:
        if tmp is not None:
            tmp.cleanup()
        run.save()
        print_table(run.results)
        if args.out:
            append_section(run.results, Path(args.out), run)
    return run.results


if __name__ == "__main__":
    main()
