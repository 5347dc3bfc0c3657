#!/usr/bin/env python3
"""Will it run on my card: the pack's stream workflow run by ComfyUI's own executor, in this process, once per case,
each case under a device-memory cap (a smaller card), with what finished, how fast and how much memory it took.

    python3 bench/cards.py --comfyui .devcarry/ComfyUI --seconds 10 --json $OUT/cards.json --out $OUT/cards.md
    python3 bench/cards.py --comfyui .devcarry/ComfyUI --case cap=none --case cap=12,kv=fp8 --case cap=8,vae=taew2_1
    python3 bench/cards.py --comfyui .comfyui/ComfyUI --tiny --device cpu --seconds 2 --case cap=none   # smoke test

What runs. ComfyUI, the pack and the test pack are set up as bench/node.py sets them up (`import_comfyui`, `Comfy`:
validate_prompt, then a PromptExecutor with the classic cache, `BenchServer` for the server; `--allocator default`,
PyTorch's own caching allocator, is the default here: the pack's CUDA graphs need it). The models are written once
into a models folder registered with folder_paths (bench/node.py's `write_models`): real-size random weights of the
DiT (1.3B: ComfyUI's single-file layout; 14B: LightX2V's), every decoder the cases name (Wan 2.1 VAE, taew2_1,
lighttaew2_1) and a real-size random umT5-XXL in ComfyUI's fp8-scaled layout (tools/standins.py, 6.7 GB, as
text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors). The workflow is the stream template
(tools/workflows/api/causvid_stream_ten_minutes.json) as it is: CLIPLoader (type wan) -> CausVidTextEncode (the
template's timeline, its lines that start within the video) -> CausVid Stream to Video with CausVid Model Loader
and VAELoader, 832x480, sink 3 + 12, preset 'Self-Forcing / LongLive 1.3B' (14B: 'LightX2V CausVid 14B');
`--seconds` of video, seed `--seed`, and the case's widgets. `--tiny`: the tiny DiT and a dim-8 VAE at 64x48,
the test pack's CausVidTestTinyCLIP for CLIPLoader.

A case (`--case SPEC`, repeatable; SPEC = key=value,...): cap (GiB or none), kv (kv_cache: bf16|fp8), weights (the
loader's weight_dtype), vae (wan|taew2_1|lighttaew2_1), speed (fast|exact), window and sink (the stream node's window
and sink_frames; default the template's 12 and 3). Defaults: DEFAULT_CASES below. Per case, in order: ComfyUI unloads
everything (unload_all_models), a new PromptExecutor replaces the last (so every loader runs again, as after a
change of models), gc and soft_empty_cache; the cap (bench/node.py's `cap_memory`: PyTorch may allocate at most cap
GiB, set_per_process_memory_fraction, and ComfyUI's EXTRA_RESERVED_VRAM is its own value at import + the rest of the
card, as --reserve-vram would set; `none`: the whole card and ComfyUI's own reserve); peak statistics reset; the prompt.

`--workflow NAME` (repeatable: each workflow's cases in turn, in one process, the models written once) runs another
example workflow (tools/workflows/api/NAME.json) the same way: its loaders get the
bench's files (the model size its checkpoint names: 1.3B, or 14B for LightX2V's and Krea's), every sampling node
(Sampler, Stream to Video, Continue) the case's kv_cache, speed, window and sink and 832x480, one set to a length
in seconds `--seconds`, LoadImage a stand-in image; it saves as it does (ComfyUI's built-in extra nodes are loaded
for CreateVideo / SaveVideo). Without mp4 writes to time, s / block is the sampling nodes' seconds over their blocks
(`mean_s_per_block`, the first block's compile included) and the slowdown compares those. Default cases then:
WORKFLOW_CASES.

Reported per case: finished (False with `error`, the failure's first line, e.g. torch.OutOfMemoryError's or the
pack's own refusal, recorded, not raised; or `stopped`: the deadline); steady_s_per_block = the median time between
consecutive mp4 writes after the first (one block of 3 latent = 12 video frames each; bench/node.py's `summarize`);
fps = frames written after the first write / time from the first to the last write; first_frame_s = stream node's
execute start -> first write (the loaders and the text encoder run before it: see node_s); peak_allocated_gib /
peak_reserved_gib = torch.cuda.max_memory_allocated / max_memory_reserved over the prompt; loaded = every entry of
comfy.model_management.current_loaded_models when the prompt ended: the model's class, model_memory() as size_gib,
model_loaded_memory() as loaded_gib (loaded < size: partly offloaded); node_s = seconds per node (between the
executor's `executing` messages: CLIPLoader and CausVidTextEncode are the text encoder's load and encode); slowdown =
steady_s_per_block / that of the uncapped case with the same other settings (1.0 for that case; None without it).

`--deadline-s` (from the script's start): a case that would not fit (estimate: the last case's seconds) is skipped, a
running prompt is stopped with ComfyUI's interrupt. `--json` and `--out` (a markdown table) are rewritten after
every case. Needs a ComfyUI tree (`--comfyui`) and what ComfyUI's core imports (see bench/README.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]  # as bench/node.py: no shadowing
sys.path.insert(0, str(REPO))

from bench.node import (DEFAULT_PRESET, GIB, STREAM_NODE, TEMPLATE, VAES,  # noqa: E402
                        Bench, Comfy, Recorder, cap_memory, fmt, import_comfyui, reset_peak, summarize,
                        write_decoder, write_models)

TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WEIGHTS = ("default", "bf16", "fp16", "fp8_e4m3fn", "fp8_e4m3fn_fast")
"""The loader's weight_dtype options (nodes/comfy_model.py's WEIGHT_DTYPES; checked against it once imported)."""
CHOICES = {"kv": ("bf16", "fp8"), "weights": WEIGHTS, "vae": VAES, "speed": ("fast", "exact")}
DEFAULT_CASES = {
    "1.3B": ("cap=none", "cap=24", "cap=16", "cap=12", "cap=12,kv=fp8", "cap=8,kv=fp8",
             "cap=none,kv=fp8,vae=taew2_1", "cap=8,kv=fp8,vae=taew2_1"),
    "14B": ("cap=none,kv=fp8,weights=fp8_e4m3fn", "cap=24,kv=fp8,weights=fp8_e4m3fn"),
}
WORKFLOW_CASES = {"1.3B": ("cap=none", "cap=24"),
                  "14B": ("cap=none,kv=fp8,weights=fp8_e4m3fn", "cap=24,kv=fp8,weights=fp8_e4m3fn")}
"""Cases of another example workflow than the stream template (`--workflow`): uncapped and on a 24 GiB card."""
MODEL_OF = {"lightx2v_causvid_14b.safetensors": "14B", "krea-realtime-video-14b.safetensors": "14B"}
"""A workflow's checkpoint name -> the model size it loads (1.3B otherwise)."""
SAMPLING = ("CausVidSampler", "CausVidStreamToVideo", "CausVidContinue")
"""Cases without --case. 1.3B (about 5 min at 8 s of video): the bf16 cache uncapped and on 24 to 12 GiB cards, the
fp8 cache on 12 and 8 GiB (8 GiB with the Wan VAE is refused by the planning: its message is the result), the
tiny decoder uncapped and on 8 GiB. 14B (28.6 GB of bf16 weights, about 5 s a block: about 4 min at 5 s of
video): fp8 weights and cache uncapped and on a 24 GiB card."""


@dataclass(frozen=True)
class Case:
    cap: float | None = None
    kv: str = "bf16"
    weights: str = "default"
    vae: str = "wan"
    speed: str = "fast"
    window: int | None = None
    """The sampling nodes' window and sink_frames; None: the workflow's own (the stream template's 12 and 3)."""
    sink: int | None = None

    @property
    def label(self) -> str:
        """`cap=...` and the settings that differ from the defaults, as a SPEC."""
        cap = "none" if self.cap is None else f"{self.cap:g}"
        rest = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)[1:] if getattr(self, f.name) != f.default]
        return ",".join([f"cap={cap}", *rest])


def parse_case(spec: str) -> Case:
    """A case from SPEC (key=value,...); argparse reports a bad one."""
    values: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in {f.name for f in fields(Case)}:
            raise argparse.ArgumentTypeError(
                f"'{item}' in '{spec}': expected key=value with key one of {', '.join(f.name for f in fields(Case))}")
        if key in CHOICES and value not in CHOICES[key]:
            raise argparse.ArgumentTypeError(f"'{spec}': {key} must be one of {', '.join(CHOICES[key])}, not '{value}'")
        try:
            if key == "cap":
                values[key] = None if value == "none" else float(value)
                if values[key] is not None and not values[key] > 0:
                    raise ValueError
            elif key in ("window", "sink"):
                values[key] = int(value)
                if values[key] < (1 if key == "window" else 0):
                    raise ValueError
            else:
                values[key] = value
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{spec}': bad {key} '{value}' (cap: GiB > 0 or none; window: an "
                                             "integer >= 1; sink: an integer >= 0)") from None
    return Case(**values)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", default=str(REPO / ".comfyui" / "ComfyUI"), help="a ComfyUI tree (0.3.75)")
    p.add_argument("--model", choices=("1.3B", "14B"), default=None,
                   help="the stream template's model (default 1.3B); another --workflow loads the size it names")
    p.add_argument("--workflow", action="append", choices=sorted(p.stem for p in TEMPLATE.parent.glob("*.json")),
                   help="an example workflow (tools/workflows/api/; repeatable, all of one model size: every case of "
                        "each in one process); default the stream template")
    p.add_argument("--tiny", action="store_true", help="the tiny DiT, VAE and text encoder at 64x48 (smoke test)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--case", action="append", type=parse_case, metavar="SPEC",
                   help="cap=GiB|none,kv=bf16|fp8,weights=...,vae=...,speed=fast|exact,window=N,sink=N (repeatable; "
                        "default: DEFAULT_CASES of the model)")
    p.add_argument("--seconds", type=float, default=10.0, help="video length of each case")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--allocator", choices=("comfyui", "default"), default="default",
                   help="default: PyTorch's caching allocator (the pack's CUDA graphs need it); comfyui: what "
                        "`python main.py` picks (cudaMallocAsync on CUDA builds)")
    p.add_argument("--deadline-s", type=float, default=540.0, help="stop cleanly this long after the start")
    p.add_argument("--work-dir", default=None, help="models/output folder (default: a temporary one, removed)")
    p.add_argument("--json", default=None, help="everything measured (rewritten after each case)")
    p.add_argument("--out", default=None, help="a markdown table (rewritten after each case)")
    args = p.parse_args(argv)
    args.workflow = args.workflow or [TEMPLATE.stem]
    others = [w for w in args.workflow if w != TEMPLATE.stem]
    named = {MODEL_OF.get(n["inputs"]["ckpt_name"], "1.3B") for w in others
             for n in json.loads((TEMPLATE.parent / f"{w}.json").read_text()).values()
             if n["class_type"] == "CausVidModelLoader"}
    if len(named) > 1:
        p.error(f"{', '.join(others)} load models of more than one size ({', '.join(sorted(named))}): run them apart")
    if named:
        if args.model not in (None, *named):
            p.error(f"{', '.join(others)} loads the {', '.join(named)} model, not {args.model}")
        args.model = next(iter(named))
    args.model = args.model or "1.3B"
    if args.tiny and args.model != "1.3B":
        p.error("--tiny replaces the model with the tiny one: use it with a 1.3B workflow")
    cases = WORKFLOW_CASES if others else DEFAULT_CASES
    args.case = args.case or [parse_case(spec) for spec in cases[args.model]]
    if args.device != "cuda" and any(c.cap is not None for c in args.case):
        p.error("a cap limits a CUDA device: on the CPU every case needs cap=none")
    return args


def log(message: str) -> None:
    print(f"[bench/cards.py] {message}", flush=True)


def case_prompt(template: dict, args: argparse.Namespace, files: dict, case: Case, index: int,
                workflow: str = TEMPLATE.stem) -> dict:
    """The workflow with the bench's files, `--seed` and the case's widgets on every loader and sampling node; a
    sampling node set to a length in seconds runs `--seconds`, and the timed lines of the prompts keep those that
    start within the video (the pack refuses a prompt past the end). The stream template also takes the model's
    preset (DEFAULT_PRESET); another workflow keeps its own."""
    from causal.text import split_timed_prompts

    prompt = json.loads(json.dumps(template))
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        timeline = split_timed_prompts(inputs["text"]) if kind == "CausVidTextEncode" else []
        if timeline and timeline[0][0] is not None:
            inputs["text"] = "\n".join(f"{t:g}: {line}" for t, line in timeline if t < args.seconds)
        elif kind == "CLIPLoader":
            if args.tiny:
                node.update(class_type="CausVidTestTinyCLIP", inputs={"width": files["text_dim"], "seed": 0})
            else:
                inputs["clip_name"] = Path(files["text_encoder"]).name
        elif kind == "CausVidModelLoader":
            inputs.update(ckpt_name=Path(files["dit"]).name, weight_dtype=case.weights)
        elif kind == "VAELoader":
            inputs["vae_name"] = Path(files["vaes"][case.vae]).name
        elif kind == "ImageScale" and args.tiny:
            inputs.update(width=64, height=48)
        if kind in SAMPLING:
            inputs.update(seed=args.seed, speed=case.speed, kv_cache=case.kv)
            if kind != "CausVidContinue":
                inputs.update(zip(("width", "height"), (64, 48) if args.tiny else (832, 480)))
            if inputs.get("seconds", 0) > 0:
                inputs["seconds"] = args.seconds
            for widget, value in (("window", case.window), ("sink_frames", case.sink)):
                if value is not None:
                    inputs[widget] = value
        if "filename_prefix" in inputs:
            inputs["filename_prefix"] = f"bench/cards_{index}_{node['class_type']}"
    if workflow == TEMPLATE.stem:
        prompt[STREAM_NODE]["inputs"]["preset"] = DEFAULT_PRESET[args.model]
    return prompt


def mean_s_per_block(prompt: dict, node_s: dict[str, float]) -> float | None:
    """The sampling nodes' seconds over the blocks they make (the first block's compile included)."""
    from causal.schedule import SCHEDULES
    from tools.workflows.frames import new_latent_frames_of, preset_of

    blocks = sum(new_latent_frames_of(prompt, nid) // SCHEDULES[preset_of(prompt, nid)].frames_per_block
                 for nid, node in prompt.items() if node["class_type"] in SAMPLING)
    seconds = sum(v for k, v in node_s.items() if k in SAMPLING)
    return seconds / blocks if blocks and seconds else None


def slowdowns(rows: list[dict]) -> None:
    """Each row's steady s/block over that of the finished uncapped case with the same other settings."""
    def key(row: dict) -> str:
        return json.dumps({**row["settings"], "cap": None, "workflow": row.get("workflow")}, sort_keys=True)

    def per_block(row: dict) -> float | None:
        return row.get("steady_s_per_block") or row.get("mean_s_per_block")

    base = {key(r): per_block(r) for r in rows if r["settings"]["cap"] is None and r.get("finished")}
    for r in rows:
        steady, reference = per_block(r), base.get(key(r))
        r["slowdown"] = steady / reference if r.get("finished") and steady and reference else None


def render_table(report: dict) -> str:
    s, env = report["settings"], report["environment"]
    encoder = "CausVidTestTinyCLIP" if s["model"] == "tiny" else "CLIPLoader (umT5-XXL fp8 scaled)"
    lines = [f"## {env.get('date')} · {env.get('card', env.get('device'))} · torch {env.get('torch')} · ComfyUI "
             f"{env.get('comfyui')} · will it run on my card (bench/cards.py) · causal/ sha {env.get('causal_sha')}",
             f"{encoder} -> CausVidTextEncode -> {', '.join(s['workflow'])} in ComfyUI's executor, {s['model']} "
             f"random weights, {s['size']}, {s['seconds']} s of video per case, preset {s['preset']}, allocator "
             f"`{s['allocator']}`; the columns: bench/cards.py's docstring (text encoder: its load + encode; loaded: "
             "ComfyUI's loaded models at the end, loaded / size GiB).",
             "| case | result | s / block | vs uncapped | fps | first frame (s) | peak alloc / reserved (GiB) | "
             "text encoder (s) | loaded at the end |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["cases"]:
        result = "ok" if r.get("finished") else (r.get("stopped") or r.get("error") or "?").replace("|", "/")
        text = [v for k, v in r.get("node_s", {}).items() if k in ("CLIPLoader", "CausVidTestTinyCLIP",
                                                                   "CausVidTextEncode")]
        loaded = ", ".join(f"{m['model']} {m['loaded_gib']:.2f} / {m['size_gib']:.2f}" for m in r.get("loaded", []))
        per_block = fmt(r.get("steady_s_per_block"), 3) if r.get("steady_s_per_block") else \
            f"{fmt(r.get('mean_s_per_block'), 3)} (mean)"
        label = r["case"] if len(s["workflow"]) == 1 else f"{r.get('workflow')}: {r['case']}"
        lines.append(f"| {label} | {result} | {per_block} | {fmt(r.get('slowdown'), 2)}"
                     f" | {fmt(r.get('fps'), 1)} | {fmt(r.get('first_frame_s'), 2)} | "
                     f"{fmt(r.get('peak_allocated_gib'), 2)} / {fmt(r.get('peak_reserved_gib'), 2)} | "
                     f"{fmt(sum(text), 1) if text else fmt(None, 0)} | {loaded} |")
    lines += [f"Error: {e['step']}: {e['error']}" for e in report["errors"]]
    return "\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n"


class Cards(Bench):
    """bench/node.py's Bench for its deadline (`left_s`), the interruptible `execute` and `write_json`; the cases."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.report = {"settings": {}, "environment": {}, "files": {}, "cases": [], "errors": []}

    def main(self) -> int:
        args = self.args
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        import_comfyui(Path(args.comfyui).resolve(), cpu=args.device == "cpu", allocator=args.allocator)
        import torch

        import comfy.model_management as mm
        import comfyui_version
        from bench.environment import environment

        self.torch, self.mm, self.base_reserved = torch, mm, mm.EXTRA_RESERVED_VRAM
        self.device = mm.get_torch_device()
        if torch.device(args.device).type != self.device.type:
            raise RuntimeError(f"asked for {args.device}, ComfyUI picked {self.device}")
        work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="causvid_cards_"))
        self.report["environment"] = {**environment(self.device), "comfyui": comfyui_version.__version__,
                                      "reserved_at_import_gib": self.base_reserved / GIB}
        self.report["settings"] = {
            "model": "tiny" if args.tiny else args.model, "size": "64x48" if args.tiny else "832x480",
            "seconds": args.seconds, "seed": args.seed,
            "preset": DEFAULT_PRESET[args.model] if args.workflow == [TEMPLATE.stem] else "the workflow's",
            "allocator": args.allocator, "deadline_s": args.deadline_s, "workflow": args.workflow,
            "cases": [c.label for c in args.case]}
        try:
            self.setup(work)
            runs = [(w, c) for w in args.workflow for c in args.case]
            for index, (workflow, case) in enumerate(runs):
                template = json.loads((TEMPLATE.parent / f"{workflow}.json").read_text())
                last = self.report["cases"][-1].get("case_s") if self.report["cases"] else None
                if self.left_s() <= 0 or (last is not None and last > self.left_s()):
                    self.report["cases"].append({"case": case.label, "workflow": workflow, "settings": asdict(case),
                                                 "finished": False, "stopped": f"skipped: {self.left_s():.0f} s left"})
                    log(f"skipped {workflow} {case.label}: {self.left_s():.0f} s left, the last case took {last} s")
                else:
                    self.run_case(case_prompt(template, args, self.report["files"], case, index, workflow), case,
                                  workflow)
                slowdowns(self.report["cases"])
                self.write()
        except Exception as e:  # noqa: BLE001 (setup: recorded, the exit status says so)
            self.report["errors"].append({"step": "setup", "error": f"{type(e).__name__}: {e}",
                                          "traceback": traceback.format_exc()})
            log(f"FAILED: {traceback.format_exc()}")
        finally:
            if hasattr(self, "comfy"):
                self.comfy.server.close()
            self.write()
            print(render_table(self.report), flush=True)
            if not args.work_dir:
                shutil.rmtree(work, ignore_errors=True)
        return 1 if self.report["errors"] else 0

    def write(self) -> None:
        self.write_json()
        if self.args.out:
            Path(self.args.out).write_text(render_table(self.report))

    def setup(self, work: Path) -> None:
        """The model files (once, for every case), registered with folder_paths; output folders; ComfyUI's nodes."""
        import folder_paths

        args, models = self.args, work / "models"
        vaes = list(dict.fromkeys(c.vae for c in args.case))
        t0 = time.perf_counter()
        files = self.report["files"] = write_models(models, argparse.Namespace(tiny=args.tiny, model=args.model,
                                                                               vae=vaes[0]), self.device)
        files["vaes"] = {vaes[0]: files["vae"], **{k: str(write_decoder(models, k, args.tiny)) for k in vaes[1:]}}
        if not args.tiny:
            from tools.standins import umt5_xxl_fp8_scaled_layout, write_umt5_standin

            path = models / "text_encoders" / TEXT_ENCODER
            files["text_encoder"] = str(write_umt5_standin(path, umt5_xxl_fp8_scaled_layout(), args.seed,
                                                           self.device.type))
            files["text_encoder_gb"] = round(path.stat().st_size / 1e9, 2)
        files["write_s"] = round(time.perf_counter() - t0, 1)
        log(f"wrote the models in {files['write_s']} s: {json.dumps(files)}")
        for kind in ("diffusion_models", "vae", "text_encoders"):
            folder_paths.add_model_folder_path(kind, str(models / kind), is_default=True)
        for sub, setter in (("output", folder_paths.set_output_directory), ("temp", folder_paths.set_temp_directory),
                            ("input", folder_paths.set_input_directory)):
            (work / sub).mkdir(parents=True, exist_ok=True)
            setter(str(work / sub))
        from tools.standins import write_standin_image
        from tools.workflows import WORKFLOWS

        for image in {i for w in args.workflow for i in WORKFLOWS[w].images}:  # LoadImage's files
            write_standin_image(work / "input" / image)
        self.comfy = Comfy(extra_nodes=args.workflow != [TEMPLATE.stem])
        mine, pack = set(WEIGHTS), set(self.comfy.module("nodes.comfy_model").WEIGHT_DTYPES)
        if mine != pack:
            raise RuntimeError(f"the loader's weight_dtype options are now {sorted(pack)}: update WEIGHTS")
        self.recorder = Recorder(self.comfy.module("nodes.streaming").Mp4Writer,
                                 self.comfy.module("nodes.stream").CausVidStreamToVideo)

    def fresh(self, case: Case) -> None:
        """Nothing loaded, a new executor (every loader runs again), the case's cap, peak statistics reset."""
        execution = self.comfy.execution
        self.mm.unload_all_models()
        self.comfy.executor = execution.PromptExecutor(self.comfy.server, cache_type=execution.CacheType.CLASSIC,
                                                       cache_args={"lru": 0, "ram": 0})
        gc.collect()
        self.mm.soft_empty_cache()
        if self.device.type == "cuda":
            log(f"{case.label}: {cap_memory(self.device, case.cap, self.base_reserved)}")
        reset_peak(self.device)

    def run_case(self, prompt: dict, case: Case, workflow: str = TEMPLATE.stem) -> None:
        row: dict[str, Any] = {"case": case.label, "workflow": workflow, "settings": asdict(case), "finished": False,
                               "stopped": None, "error": None}
        self.report["cases"].append(row)
        t0, writes = time.perf_counter(), None
        try:
            self.fresh(case)
            writes = self.recorder.begin()
            executed = self.execute(prompt)
            row.update(finished=not executed.interrupted, stopped="deadline" if executed.interrupted else None,
                       prompt_s=executed.seconds, node_s=executed.node_s,
                       mean_s_per_block=mean_s_per_block(prompt, executed.node_s))
        except Exception as e:  # noqa: BLE001 (a case that fails is a result)
            row.update(error=f"{type(e).__name__}: {e}".splitlines()[0], traceback=traceback.format_exc())
            log(f"{case.label} FAILED: {row['traceback']}")
        finally:
            self.recorder.finish()
        if writes is not None and writes.start is not None:
            run = summarize(writes, self.device, self.args.seed, row["stopped"])
            row.update(steady_s_per_block=run["median_block_s"], fps=run["fps"], first_frame_s=run["first_frame_s"],
                       frames=run["frames"], writes=run["writes"], block_s=run["block_s"], stream_s=run["wall_s"],
                       host_peak_rss_gib=run["host_peak_rss_gib"])
        if self.device.type == "cuda":
            row.update(peak_allocated_gib=self.torch.cuda.max_memory_allocated(self.device) / GIB,
                       peak_reserved_gib=self.torch.cuda.max_memory_reserved(self.device) / GIB)
        row["loaded"] = [{"model": type(m.model.model).__name__, "device": str(m.device),
                          "size_gib": m.model_memory() / GIB, "loaded_gib": m.model_loaded_memory() / GIB}
                         for m in self.mm.current_loaded_models if m.model is not None]
        row["case_s"] = round(time.perf_counter() - t0, 1)
        log(f"{case.label}: finished {row['finished']}, {fmt(row.get('steady_s_per_block'), 3)} s/block, "
            f"{fmt(row.get('fps'), 1)} fps, first frame {fmt(row.get('first_frame_s'), 2)} s, peak "
            f"{fmt(row.get('peak_allocated_gib'), 2)} GiB, loaded {row['loaded']}, {row['case_s']} s"
            + (f", error: {row['error']}" if row["error"] else ""))


def main(argv: list[str] | None = None) -> int:
    return Cards(parse_args(argv)).main()


if __name__ == "__main__":
    sys.exit(main())
