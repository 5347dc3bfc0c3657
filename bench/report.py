"""The report of a run: the markdown section appended to RESULTS.md (`markdown_section`) and the table
printed at the end (`print_table`), both from the results dict (also what `--json` holds)."""

from __future__ import annotations

import math
from typing import Any

from bench.configs import REFERENCE, TARGETS


def _f(v: Any, fmt: str = "{:.2f}", none: str = "–") -> str:
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _ratio(ours: Any, ref: Any) -> str:
    return f"{ours / ref:.2f}" if ours is not None and ref else "–"


def baseline_table(rows: list[dict[str, Any]], tiny: bool = False) -> list[str]:
    out = ["| configuration | fwd / block | clip (fps) | first block | steady s / block | peak VRAM | "
           "determinism rel-L2 | reference clip (fps) | ours / ref clip | ref first block | ours / ref first | "
           "ref VRAM | target clip / first / VRAM | bare-kernel est. (docs/results.md §2) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = {} if tiny else REFERENCE.get(r["config"], {})
        tgt = {} if tiny else TARGETS.get(r["config"], {})
        ref_clip = f"{ref['clip']:.2f} s ({r['video_frames'] / ref['clip']:.1f} fps)" if "clip" in ref else "–"
        target = " / ".join(f"<= {tgt[k]:g}{' GiB' if k == 'vram' else ' s'}" if k in tgt else "–"
                            for k in ("clip", "first", "vram"))
        out.append(
            f"| {r['label']} | {r['forwards_per_block']} | {r['clip_s']:.2f} s ({r['fps']:.1f} fps) | "
            f"{r['first_block_s']:.3f} s | {_f(r['steady_block_s'], '{:.3f} s')} | "
            f"{_f(r['peak_vram_gib'], '{:.1f} GiB')} | {_f(r['determinism_rel_l2'], '{:.1e}')} | {ref_clip} | "
            f"{_ratio(r['clip_s'], ref.get('clip'))} | {_f(ref.get('first'), '{:.2f} s')} | "
            f"{_ratio(r['first_block_s'], ref.get('first'))} | {_f(ref.get('vram'), '{:.1f} GiB')} | {target} | "
            f"{_f(r.get('kernel_bound_s'), '{:.2f} s')} |")
    return out


def options_table(rows: list[dict[str, Any]], exact: dict[str, dict[str, Any]]) -> list[str]:
    out = ["| configuration | option | clip (fps) | speed-up vs exact | first block | peak VRAM | "
           "rel-L2 vs exact (final latents) | determinism rel-L2 |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['config']} | {r['option']} | failed: {r['error'][:120]} | | | | | |")
            continue
        base = exact.get(r["config"])
        speed = f"{base['clip_s'] / r['clip_s']:.2f}×" if base else "–"
        out.append(f"| {r['config']} | {r['option']} | {r['clip_s']:.2f} s ({r['fps']:.1f} fps) | {speed} | "
                   f"{r['first_block_s']:.3f} s | {_f(r['peak_vram_gib'], '{:.1f} GiB')} | "
                   f"{_f(r.get('rel_l2_vs_exact'), '{:.2e}')} | {_f(r['determinism_rel_l2'], '{:.1e}')} |")
    return out


def profile_tables(p: dict[str, Any]) -> list[str]:
    out = [f"Profile [{p['option']}], {p['model']}, one block at latent frame {p['slot']} (attention over "
           f"{p['cache_frames']} latent frames), {p['n_forwards']} forwards: {p['forward_ms']:.1f} ms per forward wall, "
           f"{p['device_ms_per_forward']:.1f} ms kernel time (GPU busy {_f(p['gpu_busy'], '{:.0%}')})."
           + (" **Kernel time exceeds the event-timed wall time: the profiler's kernel attribution is unreliable "
              "here; use the wall time only.**" if (p.get("gpu_busy") or 0) > 1.05 else ""), "",
           "| category (record_function around the op) | ms / forward | share |", "|---|---|---|"]
    out += [f"| {r['category']} | {r['ms']:.2f} | {100 * r['share']:.1f} % |" for r in p["categories"]]
    if p["kernel_classes"]:
        out += ["", "| kernel class (by kernel name) | ms / forward | share |", "|---|---|---|"]
        out += [f"| {r['class']} | {r['ms']:.2f} | {100 * r['share']:.1f} % |" for r in p["kernel_classes"]]
        out += ["", "| top kernels | ms / forward | calls / forward | share |", "|---|---|---|---|"]
        out += [f"| `{r['kernel']}` | {r['ms']:.2f} | {r['calls_per_forward']:.0f} | {100 * r['share']:.1f} % |"
                for r in p["top_kernels"][:12]]
    return out


def markdown_section(results: dict[str, Any]) -> str:
    env = results["env"]
    s = results["settings"]
    layouts = ", ".join(f"{m['model']}: {m['layout']}" for m in results["models"])
    lines = [
        f"## {env['date']} · {env.get('card')} · torch {env['torch']} (CUDA {env.get('cuda')}, cuDNN "
        f"{env.get('cudnn')}, triton {env.get('triton')}) · causal/ sha {env['causal_sha']}", "",
        f"Settings: {s['width']}×{s['height']}, {s['num_frames']} latent frames ({s['video_frames']} video frames), "
        f"batch 1, bf16, seed {s['seed']}, prompt embedding [1, 512, text_dim] with {s['text_tokens']} non-zero rows; "
        f"DiT only; {s['warmups']} warm-up + {s['repeats']} timed clips per configuration (median); random weights "
        + (f"written as safetensors ({layouts}) and read back through `causal.load_model`. "
           if all(not m["layout"].startswith("none") for m in results["models"])
           else "built straight from the random state dict (`CausalWanModel.from_state_dict`, no checkpoint "
                "file). ")
        + f"Command: `{s['command']}`.", "",
    ]
    if results["models"]:
        lines += ["| model | parameters | file | draw | write | causal.load_model |", "|---|---|---|---|---|---|"]
        lines += [f"| {m['model']} | {m['parameters'] / 1e9:.2f} B | {m['file_gb']:.1f} GB | {m['gen_s']:.1f} s | "
                  f"{m['write_s']:.1f} s | {m['load_s']:.1f} s |" for m in results["models"] if "load_s" in m]
        lines.append("")
    if results["configs"]:
        lines += baseline_table(results["configs"], tiny=s["tiny"]) + [""]
        lines.append("Per-block seconds (median over timed clips; block k = its steps + the previous block's clean "
                     "pass): " + "; ".join(f"{r['config']}: " + " ".join(f"{b:.3f}" for b in r["block_s"])
                                           for r in results["configs"]))
        lines.append("")
    if results["options"]:
        exact = {r["config"]: r for r in results["configs"]}
        lines += ["Speed options (bench/options.py):", ""]
        lines += options_table(results["options"], exact) + [""]
    if results.get("fp32_reference"):
        f = results["fp32_reference"]
        lines += [f"Error against float32 ({f['config']}: the same weights upcast, the same noise, TF32 off; "
                  f"{f['fp32_clip_s']:.1f} s; the bf16 replay of the seeded run differs by "
                  f"{_f(f['replay_rel_l2'], '{:.1e}')}): relative L2 of the final latents", "",
                  "| path | rel-L2 vs float32 |", "|---|---|"]
        lines += [f"| {k} | {v:.2e} |" for k, v in f["rel_l2_vs_fp32"].items()] + [""]
    for p in results["profiles"]:
        lines += profile_tables(p) + [""]
    for note in results["notes"]:
        lines.append(f"- {note}")
    if results["errors"]:
        lines += ["", "Errors:"] + [f"- {e}" for e in results["errors"]]
    return "\n".join(lines).rstrip() + "\n"


def print_table(results: dict[str, Any]) -> None:
    print()
    print(f"{'configuration':<46} {'fwd':>3} {'clip s':>8} {'fps':>6} {'first':>7} {'steady':>7} {'VRAM':>6} "
          f"{'det':>8} {'ref clip':>8} {'ratio':>6}")
    for r in results["configs"]:
        ref = None if results["settings"]["tiny"] else REFERENCE.get(r["config"], {}).get("clip")
        print(f"{r['label']:<46} {r['forwards_per_block']:>3} {r['clip_s']:8.3f} {r['fps']:6.1f} "
              f"{r['first_block_s']:7.3f} {_f(r['steady_block_s'], '{:.3f}'):>7} {_f(r['peak_vram_gib'], '{:.1f}'):>6} "
              f"{_f(r['determinism_rel_l2'], '{:.1e}'):>8} {_f(ref):>8} {_ratio(r['clip_s'], ref):>6}")
    exact = {r["config"]: r for r in results["configs"]}
    for r in results["options"]:
        if "error" in r:
            print(f"  option {r['option']:<14} {r['config']}: FAILED {r['error'][:100]}")
            continue
        base = exact.get(r["config"])
        print(f"  option {r['option']:<14} {r['config']:<13} clip {r['clip_s']:.3f} s "
              f"({base['clip_s'] / r['clip_s'] if base else float('nan'):.2f}x) first {r['first_block_s']:.3f} s "
              f"rel-L2 vs exact {_f(r.get('rel_l2_vs_exact'), '{:.2e}')}")
