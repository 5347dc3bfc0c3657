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


def vae_tables(v: dict[str, Any], configs: list[dict[str, Any]]) -> list[str]:
    """The --vae step: the plain decoder's line, the fast decoder's ladder, DiT + serial decode."""
    lines = [f"VAE decode (bench/wan_vae.py: random-weight Wan2.1 decoder, {v['parameters_m']} M parameters, "
             f"bf16; plain = `Decoder`, eager, one latent frame at a time with cached causal convs): {v['frames']} "
             f"frames in {v['decode_s']:.2f} s ({v['ms_per_frame']:.1f} ms / frame; runs {v['runs_s']}), first latent "
             f"frame {v['first_chunk_s']:.3f} s, first block of 3 latents {_f(v.get('first_block_s'), '{:.3f}')} s, "
             f"later blocks {_f(v['block_of_3_latents_s'], '{:.3f}')} s, peak {_f(v['peak_vram_gib'], '{:.1f}')} GiB "
             f"(decoder alone), finite {v['finite']}.", ""]
    fast = [r for r in v.get("fast", []) if "decode_s" in r]
    if fast:
        lines += ["`wan_vae.FastDecoder` (the same weights and function; each row adds one speed-up to the row "
                  "above; rel-L2 = ||video - plain video|| / ||plain video|| in bf16, where any change of rounding "
                  "shows):", "",
                  "| decoder | adds | decode (ms / frame) | speed-up | first latent frame | first block | later "
                  "block | peak VRAM | rel-L2 vs plain | finite |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in fast:
            what = r["what"] + (f" ({r['note']})" if r.get("note") else "")
            lines.append(f"| {r['variant']} | {what} | {r['decode_s']:.3f} s ({r['ms_per_frame']:.1f}) | "
                         f"{_f(r.get('speed_up'), '{:.2f}×')} | {r['first_chunk_s']:.3f} s | "
                         f"{_f(r.get('first_block_s'), '{:.3f} s')} | {_f(r['block_of_3_latents_s'], '{:.3f} s')} | "
                         f"{_f(r['peak_vram_gib'], '{:.1f} GiB')} | {_f(r.get('rel_l2_vs_plain'), '{:.2e}')} | "
                         f"{r['finite']} |")
        lines.append("")
    if configs:
        decoders = [("plain", v)] + ([("fast", fast[-1])] if fast else [])
        lines += ["| configuration | DiT clip | decoder | + serial VAE decode | end-to-end fps | first block + "
                  "first latent frame decoded |", "|---|---|---|---|---|---|"]
        for r in configs:
            for name, d in decoders:
                total = r["clip_s"] + d["decode_s"]
                lines.append(f"| {r['label']} | {r['clip_s']:.2f} s | {name} | {total:.2f} s | "
                             f"{r['video_frames'] / total:.1f} | {r['first_block_s'] + d['first_chunk_s']:.3f} s |")
        lines.append("")
    return lines


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
    if results.get("vae"):
        lines += vae_tables(results["vae"], results["configs"])
    if results.get("vae_overlap"):
        lines += ["End to end with the VAE decode overlapped (each finished block decoded while the next samples; "
                  "plain: the reference decoder on a second CUDA stream launched from the sampler's thread, "
                  "`wan_vae.OverlappedDecode`; fast: `wan_vae.FastDecoder` on its own thread and stream, "
                  "`wan_vae.ThreadedDecode`). fps = frames / (sampling + finishing the decode); first block = start "
                  "-> the first block's frames decoded; sustained = frames decoded between the first and the last "
                  "block's decode, per second; DiT = start -> sampling done (GPU); tail = sampling done -> video "
                  "ready:", "",
                  "| configuration | DiT path | decoder | clip incl. decode | end-to-end fps | first block decoded | "
                  "sustained fps | DiT | decode tail | runs |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["vae_overlap"]:
            option = r.get("option", "fused" if r.get("fused_kernels") else "exact")
            decoder = r.get("decoder", "plain") + (" (threaded)" if r.get("threaded") else "")
            lines.append(f"| {r['label']} | {option} | {decoder} | {r['clip_s']:.2f} s | {r['fps']:.1f} | "
                         f"{_f(r.get('first_block_s'), '{:.3f} s')} | {_f(r.get('sustained_fps'), '{:.1f}')} | "
                         f"{_f(r.get('dit_gpu_s'), '{:.2f} s')} | {_f(r.get('decode_tail_s'), '{:.3f} s')} | "
                         f"{r['runs_s']} |")
        lines.append("")
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
    v = results.get("vae")
    if v:
        print(f"  VAE decode plain: {v['decode_s']:.3f} s ({v['ms_per_frame']:.1f} ms / frame)")
        for r in v.get("fast", []):
            if "decode_s" in r:
                print(f"  VAE decode {r['variant']:<18} {r['decode_s']:.3f} s ({r['ms_per_frame']:.1f} ms / frame, "
                      f"{_f(r.get('speed_up'), '{:.2f}x')}) rel-L2 vs plain {_f(r.get('rel_l2_vs_plain'), '{:.2e}')}")
    for r in results.get("vae_overlap", []):
        print(f"  overlapped decode {r['config']} [{r.get('option', 'fused' if r.get('fused_kernels') else 'exact')} + "
              f"{r.get('decoder', 'plain')}]: {r['clip_s']:.3f} s ({r['fps']:.1f} fps), first block "
              f"{_f(r.get('first_block_s'), '{:.3f}')} s, sustained {_f(r.get('sustained_fps'), '{:.1f}')} fps")
