"""Run one of the pack's example workflows (default: CausVid 1.3B text-to-video) in a headless ComfyUI.

    bash scripts/run_example.sh [--workflow NAME] [--models-dir DIR] [--tiny] [--output-dir DIR]

ComfyUI 0.3.75 (from scripts/setup.sh) is started with this pack in a temporary base directory
(`--cpu` unless CUDA is available), the API-format twin of the workflow
(tools/workflows/api/<NAME>.json) is queued over HTTP and followed on the websocket, and the saved video
is copied to example_output/.

Models: with CAUSVID_MODELS_DIR (or --models-dir) pointing at a folder holding
diffusion_models/, text_encoders/ and vae/ with the files the workflow names, those real files are used
as they are. Otherwise the same graph runs on tiny random-weight stand-ins (this pack never downloads
weights): a 2-layer causal DiT (tools/tiny.py) under the checkpoint's file name, a tiny Wan 2.1 VAE, and
the test pack's tiny umT5 (tests/comfy_test_nodes, loaded by ComfyUI as a custom-node pack) in place of
CLIPLoader, at a small size. The video is then noise, but every node of the graph really runs. Exits non-zero
when the run fails or the video has the wrong number of frames.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the root is the node pack, never imported: `tools` is imported from it
    sys.path.insert(0, str(REPO_ROOT))

from tools import workflows as eg  # noqa: E402
from tools.comfy_server import (MAIN_PACK_NAME, ComfyServer, ComfyStartupError, PromptRejected,  # noqa: E402
                                video_info)
from tools.tiny import TINY  # noqa: E402

DEFAULT_WORKFLOW = "causvid_1.3b_t2v"
TINY_SIZE = (128, 96)  # width, height of the stand-in run; the workflow's length is kept


def say(message: str = "") -> None:
    print(message, flush=True)


class Server(ComfyServer):
    """The tools' headless server, on the GPU when there is one."""

    def __init__(self, *args, cpu: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.cpu = cpu

    def _command(self) -> list[str]:
        command = super()._command()
        return command if self.cpu else [c for c in command if c != "--cpu"]


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def find_files(models_dir: Path, workflow: eg.Workflow) -> tuple[dict[str, str], list[str]]:
    """The workflow's files in the user's folder, each under the workflow's name or the name it is published
    with: ({workflow name: name found}, [what is missing, with the names accepted and where to get it])."""
    found, missing = {}, []
    for folder, names in workflow.files.items():
        for name in names:
            published, source = eg.PUBLISHED.get(name, (name, "the workflow's Note"))
            accepted = list(dict.fromkeys([name, published]))
            present = [n for n in accepted if (models_dir / folder / n).is_file()]
            if present:
                found[name] = present[0]
            else:
                missing.append(f"{folder}/{' or '.join(accepted)}  (from {source})")
    return found, missing


def broken_file(folder: str, path: Path) -> str | None:
    """Why a found file cannot be what the workflow loads, read with the nodes' own readers from its header
    (nothing loads): the DiT as CausVid Model Loader reads it, a safetensors VAE or text encoder as ComfyUI
    opens it; None when it looks right."""
    if folder == "diffusion_models":
        from causal.checkpoint import CheckpointError, inspect_checkpoint

        try:
            inspect_checkpoint(path)
        except CheckpointError as e:
            return str(e)
        return None
    if path.stat().st_size == 0:
        return f"{path}: is empty (0 bytes); download the file again"
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                if not list(f.keys()):
                    return f"{path}: holds no tensors; download the file again"
        except Exception as e:  # SafetensorError has no importable common base across versions
            return f"{path}: is truncated or corrupt (its safetensors header could not be read: {e}); download " \
                   "the file again"
    return None


NOISE = ("alembic", "comfyui-workflow-templates", "comfyui_workflow_templates", "comfyui-embedded-docs",
         "torchaudio missing", "frontend package", "pip install -r requirements.txt",
         # core's optional nodes that need packages this run does not use (custom packs fail as "(IMPORT FAILED)")
         "IMPORT FAILED: nodes_", "nodes did not import correctly", "might be caused by new missing dependencies",
         # the sqlite database of newer ComfyUI, which this run does not use
         "sqlite database", "Error importing dependencies", "Please install the updated requirements.txt",
         "update_comfyui.bat")
"""Start-up notices of ComfyUI about optional packages and features this run does not use."""


def relevant_log(text: str) -> tuple[str, int]:
    """The server log without ComfyUI's notices about optional packages: (text, lines hidden)."""
    kept, hidden = [], 0
    for line in text.splitlines():
        if any(n in line for n in NOISE):
            hidden += 1
        else:
            kept.append(line)
    return "\n".join(kept), hidden


def extra_model_paths(models_dir: Path, workflow: eg.Workflow, where: Path) -> Path:
    """A ComfyUI extra_model_paths.yaml that adds the user's folders (files used in place)."""
    lines = ["causvid_example:", f"    base_path: {models_dir.resolve()}"]
    lines += [f"    {folder}: {folder}" for folder in workflow.files]
    where.write_text("\n".join(lines) + "\n")
    return where


class ProgressPrinter:
    """Prints which node runs and the sampler's denoising steps (in place on a terminal)."""

    def __init__(self, prompt: dict):
        self.prompt = prompt
        self.tty = sys.stdout.isatty()
        self.open_line = False
        self.last_tenth: dict[str, int] = {}
        self.t0 = time.monotonic()

    def _end_line(self) -> None:
        if self.open_line:
            print(flush=True)
            self.open_line = False

    def __call__(self, mtype: str, data, server) -> None:
        if mtype == "executing" and data.get("node") is not None:
            node = self.prompt.get(str(data["node"]), {})
            title = node.get("_meta", {}).get("title", node.get("class_type", "?"))
            self._end_line()
            say(f"[{time.monotonic() - self.t0:6.1f}s] node {data['node']}: {title}")
        elif mtype == "progress":
            value, maximum, node = data.get("value"), data.get("max"), data.get("node")
            line = f"           step {value}/{maximum}"
            if self.tty:
                print("\r" + line, end="", flush=True)
                self.open_line = value != maximum
                if not self.open_line:
                    print(flush=True)
            else:
                tenth = int(10 * value / max(maximum, 1))
                if tenth != self.last_tenth.get(node) or value == maximum:
                    self.last_tenth[node] = tenth
                    say(line)
        elif mtype == "execution_cached" and data.get("nodes"):
            say(f"cached nodes: {', '.join(map(str, data['nodes']))}")
        elif mtype in ("execution_success", "execution_error", "execution_interrupted"):
            self._end_line()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflow", default=DEFAULT_WORKFLOW, choices=sorted(eg.WORKFLOWS),
                        help=f"example workflow to run (default {DEFAULT_WORKFLOW})")
    parser.add_argument("--models-dir", type=Path, default=os.environ.get("CAUSVID_MODELS_DIR") or None,
                        help="folder with diffusion_models/, text_encoders/, vae/ (default $CAUSVID_MODELS_DIR)")
    parser.add_argument("--tiny", action="store_true", help="use the tiny stand-ins even if real models exist")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "example_output")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for the run (default 600 with stand-ins, 6 h with real models)")
    args = parser.parse_args(argv)

    workflow = eg.WORKFLOWS[args.workflow]
    api = eg.load_api(args.workflow)
    models_dir = Path(args.models_dir).expanduser() if args.models_dir else None
    gpu = cuda_available()
    say(f"== comfyui-causvid example: {args.workflow} ({'CUDA GPU' if gpu else 'CPU'}) ==")
    real = models_dir is not None and not args.tiny
    if real:
        # a folder was given: its files are what the user asked for, so never fall back to stand-ins
        if not models_dir.is_dir():
            say(f"FAILED: the models folder {models_dir} (CAUSVID_MODELS_DIR / --models-dir) does not exist. "
                "Point it at the folder holding diffusion_models/, text_encoders/ and vae/, or unset it to run "
                "the graph on tiny stand-ins.")
            return 2
        found, missing = find_files(models_dir, workflow)
        if missing:
            say(f"FAILED: {models_dir} lacks what the {args.workflow} workflow needs:")
            for line in missing:
                say(f"  missing {line}")
            say("Either name is accepted. This pack never downloads weights; the workflow's Note (example_workflows/"
                f"{args.workflow}.json) says where each file comes from. Unset CAUSVID_MODELS_DIR (or pass --tiny) "
                "to run the graph on tiny stand-ins instead.")
            return 2
        broken = [why for folder, names in workflow.files.items() for name in names
                  if (why := broken_file(folder, models_dir / folder / found[name]))]
        if broken:
            say(f"FAILED: {'a file' if len(broken) == 1 else 'files'} in {models_dir} cannot be what the "
                f"{args.workflow} workflow loads (checked before ComfyUI starts):")
            for why in broken:
                say(f"  {why}")
            return 2
        say(f"Using the real models in {models_dir} as they are:")
        for folder, names in workflow.files.items():
            for name in names:
                say(f"  {folder}/{found[name]}")
        for node in api.values():  # files kept under their published names
            for key, value in node["inputs"].items():
                if isinstance(value, str) and value in found:
                    node["inputs"][key] = found[value]
        if not gpu:
            say("WARNING: no CUDA GPU; sampling a real Wan2.1 model on the CPU takes hours.")
        prompt = api
        server = Server(packs={MAIN_PACK_NAME: REPO_ROOT}, cpu=not gpu)
        server.extra_args = ["--extra-model-paths-config",
                             str(extra_model_paths(models_dir, workflow, server.base_dir / "extra_models.yaml"))]
    else:
        if args.tiny:
            say("--tiny: using tiny random-weight stand-ins.")
        else:
            say("CAUSVID_MODELS_DIR is not set, so the real models are not available.")
        if not args.tiny:
            say("This pack never downloads weights (see the Note in example_workflows/"
                f"{args.workflow}.json for what to download and where to put it; then set "
                "CAUSVID_MODELS_DIR to the folder holding diffusion_models/, text_encoders/ and vae/).")
        width, height = TINY_SIZE
        sampler = api[(eg.find_nodes(api, "CausVidSampler") or eg.find_nodes(api, "CausVidStreamToVideo"))[0]]["inputs"]
        prompt = eg.standin_prompt(api, width=width, height=height, length=None)
        say("Running the SAME graph on TINY RANDOM-WEIGHT STAND-INS, so it shows the pipeline working, not a "
            "real video:")
        say(f"  diffusion model: 2-layer random causal Wan DiT as {', '.join(workflow.files['diffusion_models'])} "
            "(in the layout that family ships)")
        vae = workflow.files["vae"][0]
        kind = "tiny random Wan 2.2 decoder (taew2_2's layout)" if vae == eg.WAN22_VAE else "tiny random Wan 2.1 VAE"
        say(f"  VAE: {kind} as {vae}")
        say(f"  text encoder: CausVidTestTinyCLIP (a 2-layer umT5 of width {TINY.text_dim}) instead of "
            f"CLIPLoader({eg.UMT5})")
        width, height = eg.standin_size(api, width, height)
        say(f"  size: {width}×{height} instead of the workflow's {sampler['width']}×{sampler['height']}; "
            "length and fragments unchanged")
        server = Server(cpu=not gpu)

    save_id, expected_frames = eg.saved_video(prompt)  # SaveVideo, or the stream node that writes it itself
    timeout = args.timeout or (6 * 3600 if real else 600)

    t0 = time.monotonic()
    say("Starting ComfyUI (headless)...")
    try:
        server.start()
    except ComfyStartupError as e:
        say(f"FAILED: ComfyUI did not start: {e}")
        return 1
    try:
        say(f"ComfyUI is up at {server.url} after {time.monotonic() - t0:.1f}s (base directory {server.base_dir})")
        if not real:
            t1 = time.monotonic()
            eg.write_standin_models(server.models_dir)
            say(f"Wrote the tiny stand-ins into {server.models_dir} in {time.monotonic() - t1:.1f}s")
        say(f"Queueing the workflow: {len(prompt)} nodes, expecting {expected_frames} frames")
        try:
            result = server.run(prompt, timeout=timeout, on_message=ProgressPrinter(prompt))
        except PromptRejected as e:
            say(f"FAILED: ComfyUI rejected the workflow (HTTP {e.status}): {e.body}")
            return 1
        if not result.ok:
            say(f"FAILED: {result.describe()}")
            log, hidden = relevant_log(server.log_text)
            say("ComfyUI's log (end):")
            say(log[-4000:])
            if hidden:
                say(f"({hidden} start-up notices about optional ComfyUI packages this run does not use were hidden)")
            return 1
        paths = server.output_paths(result, node_id=save_id)
        if len(paths) != 1 or not paths[0].is_file():
            say(f"FAILED: the saving node reported {paths}")
            return 1
        args.output_dir.mkdir(parents=True, exist_ok=True)
        target = args.output_dir / f"{args.workflow}{'' if real else '_tiny_standins'}{paths[0].suffix}"
        shutil.copy2(paths[0], target)
        frames, width, height, fps = video_info(target)
        steps = len(result.of_type("progress"))
        say(f"Done in {result.elapsed:.1f}s: {steps} denoising steps, {result.preview_frames} previews")
        nodes = eg.sampler_nodes(prompt)
        blocks = sum(eg.new_latent_frames_of(prompt, nid) // eg.block_of(prompt, nid) for nid in nodes)
        if blocks:
            size = eg.block_of(prompt, nodes[0])
            say(f"  {blocks} blocks of {size} latent frames: {result.elapsed / blocks:.2f} s per block (whole run)")
        say(f"Output video: {target}")
        say(f"  {frames} frames, {width}×{height}, {fps:g} fps ({frames / fps:.2f} s)")
        if frames != expected_frames:
            say(f"FAILED: expected {expected_frames} frames (1 + 4·(latent frames - 1))")
            return 1
        if not real:
            say("(stand-in weights: the picture is the tiny random VAE's rendering of a random model's latents. It "
                "moves because every block is sampled anew, and shows the pipeline running, not a real video. Set "
                "CAUSVID_MODELS_DIR for a real one.)")
        return 0
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
