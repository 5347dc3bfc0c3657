"""CPU smoke test of bench/bench.py: the whole script on a tiny model at a tiny size (--tiny).

Checks that every stage runs and reports sane numbers: checkpoint written in a real layout and read back
through causal.load_model, timed clips (deterministic, finite), an option measured against the exact
path, the profile breakdown, and the markdown/JSON outputs.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench import bench as bench_script
from bench.configs import kernel_bound_s
from bench.profiling import classify_kernel


def test_bench_tiny_end_to_end(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# results\n")
    js = tmp_path / "results.json"
    results = bench_script.main([
        "--tiny", "--configs", "1.3B-4step,14B-lightx2v", "--repeats", "2", "--profile", "--profile-forwards", "1",
        "--options", "sdpa_math,fp8_storage", "--option-repeats", "1",
        "--out", str(out), "--json", str(js),
        "--ckpt-dir", str(tmp_path / "ckpt"),
    ])
    assert not results["errors"], results["errors"]
    assert [m["layout"] for m in results["models"]] == ["comfyui", "comfyui"]
    rows = {r["config"]: r for r in results["configs"]}
    assert set(rows) == {"1.3B-4step", "14B-lightx2v"}
    for key, r in rows.items():
        assert r["finite"], key
        assert r["determinism_rel_l2"] == 0.0, key  # same seed, same path: bitwise equal
        assert r["forwards_per_block"] == (5 if key == "1.3B-4step" else 9)
        assert r["clip_s"] > 0 and r["first_block_s"] > 0 and len(r["block_s"]) == 1  # 6 frames = 2 blocks
        assert r["video_frames"] == 21
    math_row, fp8_row = results["options"]
    assert math_row["option"] == "sdpa_math" and math.isfinite(math_row["rel_l2_vs_exact"])
    assert math_row["rel_l2_vs_exact"] < 0.1
    assert fp8_row["option"] == "fp8_storage" and 1e-3 < fp8_row["rel_l2_vs_exact"] < 0.1
    (prof,) = results["profiles"]
    categories = {c["category"] for c in prof["categories"]}
    assert {"gemm", "attention (SDPA)", "rope (float64)"} <= categories
    text = out.read_text()
    assert text.startswith("# results\n") and "| CausVid 1.3B, 4 warped steps + clean pass | 5 |" in text
    assert "Speed options" in text and "Profile [exact]" in text
    assert json.loads(js.read_text())["settings"]["tiny"] is True
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())  # checkpoints removed


def test_fp8_storage_rounds_a_copy_of_every_linear_layer():
    """The `fp8_storage` option's model holds what ComfyUI stores with weight_dtype fp8_e4m3fn (each linear's weight
    and bias as float8_e4m3fn values, nothing else touched) and leaves the benchmark's model as it was."""
    from bench.steps import stored_in_fp8
    from tools.tiny import tiny_model

    model = tiny_model(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stored = stored_in_fp8(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    linear = {f"{n}.{p}" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
              for p in ("weight", "bias")}
    for key, value in stored.state_dict().items():
        fp8 = value.to(torch.float8_e4m3fn).to(value.dtype)
        assert torch.equal(value, fp8) if key in linear else torch.equal(value, before[key]), key
    assert any(not torch.equal(stored.state_dict()[k], before[k]) for k in linear)


def test_kernel_bound_matches_the_published_floor():
    # docs/results.md §2: Self-Forcing-1.3B (4 steps + refresh = 5 forwards, 7 blocks) ~ 1.67 s DiT
    assert kernel_bound_s("1.3B", 5, 7) == pytest.approx(1.67, abs=0.02)
    # LightX2V CausVid-14B, 9 forwards per block: 17.49 s; CausVid-Plus 14B, 10 forwards: 19.43 s
    assert kernel_bound_s("14B", 9, 7) == pytest.approx(17.49, abs=0.01)
    assert kernel_bound_s("14B", 10, 7) == pytest.approx(19.43, abs=0.01)


def test_classify_kernel():
    assert classify_kernel("sm90_xmma_gemm_bf16bf16_bf16f32") == "gemm"
    assert classify_kernel(
        "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4, cutlass::bfloat16_t>>") == \
        "attention"
    assert classify_kernel("void at::native::elementwise_kernel<c10::complex<double>>") == \
        "float64 / complex elementwise"


@pytest.mark.comfyui
def test_node_bench_tiny_cpu(tmp_path):
    """bench/node.py end to end on the tiny model: CausVid Stream to Video through ComfyUI's executor (in a fresh
    process, as the script runs), the library path beside it, finite timings and bit-identical latents."""
    import subprocess
    import sys

    from tools.comfy_server import COMFY_DIR, REPO_ROOT, comfyui_available

    if not comfyui_available():
        pytest.skip("ComfyUI is not installed (scripts/setup.sh)")
    js, md = tmp_path / "node.json", tmp_path / "node.md"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "node.py"), "--comfyui", str(COMFY_DIR), "--tiny", "--device",
         "cpu", "--seconds", "2", "--repeats", "1", "--work-dir", str(tmp_path / "work"), "--json", str(js),
         "--out", str(md), "--profile-seconds", "2"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(js.read_text())
    assert not report["errors"] and not report["skipped"], report["errors"] or report["skipped"]
    assert report["node"]["generate"] == report["library"]["generate"]  # the same settings on both paths
    for path in ("node", "library"):
        (run,) = report[path]["runs"]
        assert run["frames"] == 33 and run["writes"] == 3 and not run["stopped"], run  # 2 s: 3 blocks, 33 frames
        for key in ("first_frame_s", "fps", "median_block_s", "wall_s"):
            assert math.isfinite(run[key]) and run[key] > 0, (path, key, run[key])
        assert run["first_frame_s"] < run["wall_s"]
        assert run["same_mp4"], run  # the same seed writes the same file on both paths
        threads = run["threads"]
        assert threads["blocks"] == 3 and threads["decode_s"] > 0 and threads["write_s"] > 0, threads
        profile = report[path]["profile"]
        assert (tmp_path / profile["trace"]).is_file() and profile["run"]["frames"] == 33, profile
        # the profiled run's spans: 3 decodes, 3 hand-overs, 3 writes (the whole trace: too few blocks to window)
        assert not profile["steady_window"] and set(profile["labels_ms"]) == {"bench::decodes", "bench::puts",
                                                                              "bench::writes"}, profile
    assert set(report["node"]["runs"][0]["node_s"]) == {"CausVidModelLoader", "VAELoader", "CausVidTestConditioning",
                                                        "CausVidStreamToVideo"}
    latents = report["latents"]
    assert latents["equal"] and latents["max_abs_diff"] == 0.0 and latents["shape"][2] == 21, latents
    text = md.read_text()
    assert "node path vs library (bench/node.py)" in text and "| node | 1 | 42 |" in text
    assert "| library | 1 | 42 |" in text and "bitwise equal True" in text


@pytest.mark.comfyui
def test_cards_bench_tiny_cpu(tmp_path):
    """bench/cards.py end to end on the tiny model: the stream template (the test pack's tiny umT5 for CLIPLoader)
    through ComfyUI's executor once per case, a new executor each time; and a bad case spec refused by argparse."""
    import subprocess
    import sys

    from tools.comfy_server import COMFY_DIR, REPO_ROOT, comfyui_available

    if not comfyui_available():
        pytest.skip("ComfyUI is not installed (scripts/setup.sh)")
    script = str(REPO_ROOT / "bench" / "cards.py")
    bad = subprocess.run([sys.executable, script, "--case", "cap=none,kv=fp9"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "kv must be one of bf16, fp8, not 'fp9'" in bad.stderr, bad.stderr
    capped = subprocess.run([sys.executable, script, "--device", "cpu", "--tiny", "--case", "cap=8"],
                            capture_output=True, text=True, timeout=60)
    assert capped.returncode == 2 and "every case needs cap=none" in capped.stderr, capped.stderr
    js, md = tmp_path / "cards.json", tmp_path / "cards.md"
    proc = subprocess.run(
        [sys.executable, script, "--comfyui", str(COMFY_DIR), "--tiny", "--device", "cpu", "--seconds", "2",
         "--case", "cap=none", "--case", "cap=none,kv=fp8", "--work-dir", str(tmp_path / "work"), "--json", str(js),
         "--out", str(md)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(js.read_text())
    assert not report["errors"], report["errors"]
    assert [c["case"] for c in report["cases"]] == ["cap=none", "cap=none,kv=fp8"]
    for case in report["cases"]:
        assert case["finished"] and not case["error"] and not case["stopped"], case
        assert case["frames"] == 33 and case["writes"] == 3, case  # 2 s: 3 blocks, 33 frames
        for key in ("steady_s_per_block", "fps", "first_frame_s", "prompt_s"):
            assert math.isfinite(case[key]) and case[key] > 0, (case["case"], key, case[key])
        assert set(case["node_s"]) == {"CausVidModelLoader", "VAELoader", "CausVidTestTinyCLIP", "CausVidTextEncode",
                                       "CausVidStreamToVideo"}, case["node_s"]
        assert case["loaded"] and all(0 < m["loaded_gib"] <= m["size_gib"] for m in case["loaded"]), case["loaded"]
        assert "WAN21Causal" in {m["model"] for m in case["loaded"]}, case["loaded"]
    fp8 = report["cases"][1]
    assert fp8["settings"]["kv"] == "fp8" and fp8["slowdown"] == 1.0  # its own uncapped baseline
    text = md.read_text()
    assert "will it run on my card (bench/cards.py)" in text and "| cap=none,kv=fp8 | ok |" in text


def test_trace_summary_counts_busy_and_shared_time():
    """Per-stream busy time is the union of its kernels, the overlap is the time both streams were busy, and the
    window clips both; host spans of the timeline's labels are summed."""
    from bench.timeline import steady_window, trace_summary

    def kernel(stream, ts, dur):
        return {"ph": "X", "cat": "kernel", "name": "k", "ts": ts, "dur": dur, "args": {"stream": stream}}

    events = [kernel(7, 0, 100), kernel(7, 50, 100), kernel(7, 300, 100),  # stream 7: [0, 150] + [300, 400]
              kernel(13, 100, 250),                                          # stream 13: [100, 350]
              {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamSynchronize", "ts": 10, "dur": 40, "tid": 5},
              {"ph": "M", "name": "thread_name", "tid": 5, "args": {"name": "main"}},
              {"ph": "X", "cat": "user_annotation", "name": "bench::decodes", "ts": 0, "dur": 500, "tid": 6}]
    whole = trace_summary(events)
    assert whole["window_ms"] == 0.4 and whole["gpu_busy_ms"] == 0.4
    assert whole["streams"]["7"]["busy_ms"] == 0.25 and whole["streams"]["13"]["busy_ms"] == 0.25
    assert whole["top_two_overlap_ms"] == 0.1  # [100, 150] and [300, 350]
    assert whole["threads"]["main (5)"]["cudaStreamSynchronize"] == {"calls": 1, "ms": 0.04}
    assert whole["labels_ms"] == {"bench::decodes": 0.4}
    clipped = trace_summary(events, (120, 320))
    assert clipped["streams"]["7"]["busy_ms"] == 0.05 and clipped["top_two_overlap_ms"] == 0.05
    puts = [{"ph": "X", "name": "bench::puts", "ts": t, "dur": 1} for t in range(0, 80, 10)]
    assert steady_window(puts) == (20.0, 40.0) and steady_window(puts[:6]) is None


def test_block_breakdown_splits_steady_blocks_into_replays_other_kernels_and_idle():
    """Blocks run from one marker kernel to the next; replayed kernels, other kernels (by name) and the idle time
    between them add up to each block's wall; blocks before `steady_from` are left out."""
    from bench.profiling import Kernel, block_breakdown

    def marker(t):
        return Kernel("vectorized_elementwise_kernel<bitwise_not_kernel_cuda>", t, t + 1, False)

    kernels = [marker(0), Kernel("copy", 5, 505, False), marker(1000),                  # block 1: not steady
               Kernel("replay_gemm", 1001, 1601, True), Kernel("replay_attn", 1500, 1801, True),  # overlap 100
               Kernel("copy", 1850, 1900, False), Kernel("randn", 1950, 1960, False), marker(2000),
               Kernel("replay_gemm", 2001, 2801, True), Kernel("copy", 2900, 2950, False), marker(3000)]
    b = block_breakdown(kernels, steady_from=2)
    assert b["blocks"] == 2 and b["block_ms"] == 1.0
    assert b["replay_ms"] == (800 + 800) / 2 / 1000
    assert b["other_kernels_ms"] == (50 + 10 + 50 + 1 + 1) / 2 / 1000  # the markers count as other kernels
    assert abs(b["busy_ms"] + b["idle_ms"] - b["block_ms"]) < 1e-12
    assert b["busy_ms"] == (1 + 800 + 50 + 10 + 1 + 800 + 50) / 2 / 1000
    assert b["other_kernels"][0] == {"kernel": "copy", "ms_per_block": 0.05, "calls_per_block": 1.0}
    assert b["replay_kernels"][0] == {"kernel": "replay_gemm", "ms_per_block": 0.7, "calls_per_block": 1.0}
    assert b["replay_kernels_ms"] == (600 + 301 + 800) / 2 / 1000
    assert block_breakdown(kernels, steady_from=4) == {"blocks": 0}


def test_glue_bench_tiny_cpu(tmp_path):
    """bench/glue.py on the CPU: every section reports, and the residual layout check finds the exact glue bitwise."""
    from bench import glue

    report = glue.main(["--tiny", "--device", "cpu", "--repeats", "1", "--json", str(tmp_path / "g.json")])
    assert json.loads((tmp_path / "g.json").read_text())["settings"]["compiled"] is False
    assert report["rotation"]["tokens"] == 72 and report["rotation"]["eager_ms"] > 0
    assert report["gelu_epilogue"]["rel_epilogue_vs_float32"] < 1e-2
    assert report["residual_layout"]["EAGER"]["bitwise"] and report["residual_layout"]["EAGER"]["model_is_token_major"]


@pytest.mark.comfyui
def test_vae_decode_bench_tiny_cpu(tmp_path):
    """bench/vae_decode.py end to end on a dim-8 Wan VAE and a random taew2_1 at 64x48: every option timed and
    compared with the plain decode (cuDNN autotuning does not exist on the CPU: the same frames bit for bit; the
    fast Wan decode is the same function to float32 rounding)."""
    import subprocess
    import sys

    from tools.comfy_server import COMFY_DIR, REPO_ROOT, comfyui_available

    if not comfyui_available():
        pytest.skip("ComfyUI is not installed (scripts/setup.sh)")
    js = tmp_path / "vae.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "vae_decode.py"), "--comfyui", str(COMFY_DIR),
                           "--device", "cpu", "--tiny", "--blocks", "3", "--json", str(js)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(js.read_text())
    for kind in ("wan", "taew2_1"):
        rows = report["decoders"][kind]
        assert set(rows) == {"plain", "cudnn_benchmark", "channels_last"} | (
            {"fast", "fast_low_memory", "fast_dynamic"} if kind == "wan" else set())
        assert all(math.isfinite(r["s_per_block"]) and r["s_per_block"] > 0 for r in rows.values())
        assert rows["cudnn_benchmark"]["bitwise"] and rows["channels_last"]["rel_l2"] < 1e-4, rows
        assert rows["plain"]["vs_fp32"] == 0.0  # the CPU computes the VAE in float32 anyway
    assert report["decoders"]["wan"]["fast"]["rel_l2"] < 1e-5  # the same function, reordered
    assert report["decoders"]["wan"]["fast_low_memory"]["rel_l2"] < 1e-5  # and a frame at a time


@pytest.mark.comfyui
@pytest.mark.parametrize("layout", ["comfyui", "causvid"])
def test_loading_holds_one_copy_of_the_weights(tmp_path, layout):
    """bench/host_memory.py: CausVid Model Loader's code on a small model from a .safetensors and a .pt file holds
    the model's own weights in anonymous memory and nothing more (the file's pages are the kernel's to drop): a
    state dict read into memory beside the model would show as 1.5x here."""
    import subprocess
    import sys

    from tools.comfy_server import COMFY_DIR, REPO_ROOT, comfyui_available

    if not comfyui_available():
        pytest.skip("ComfyUI is not installed (scripts/setup.sh)")
    js = tmp_path / "host.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "host_memory.py"), "--comfyui", str(COMFY_DIR),
                           "--dim", "768", "--ffn-dim", "3072", "--layers", "6", "--layout", layout, "--work-dir",
                           str(tmp_path), "--json", str(js)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(js.read_text())
    assert report["model_bytes"] > 2 ** 27 and report["peak_over_model"] < 1.1, report


@pytest.mark.comfyui
def test_cards_bench_runs_another_example_workflow_tiny_cpu(tmp_path):
    """bench/cards.py --workflow: the image-to-video example (LoadImage, VAE Encode, CausVid Sampler, VAE Decode,
    Save Video) on the tiny stand-ins with an fp8 cache case; s / block from the sampler's time over its blocks;
    the video saved; two workflows in one process, each against its own baseline; and a workflow that names the
    14B refused with --model 1.3B, workflows of two sizes together too."""
    import subprocess
    import sys

    from tools.comfy_server import COMFY_DIR, REPO_ROOT, comfyui_available

    if not comfyui_available():
        pytest.skip("ComfyUI is not installed (scripts/setup.sh)")
    script = str(REPO_ROOT / "bench" / "cards.py")
    wrong = subprocess.run([sys.executable, script, "--workflow", "causvid_14b_lightx2v_3_fragments", "--model",
                            "1.3B"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "loads the 14B model, not 1.3B" in wrong.stderr, wrong.stderr
    mixed = subprocess.run([sys.executable, script, "--workflow", "causvid_1.3b_t2v", "--workflow",
                            "causvid_krea_realtime_14b_stream"], capture_output=True, text=True, timeout=60)
    assert mixed.returncode == 2 and "more than one size" in mixed.stderr, mixed.stderr
    js = tmp_path / "cards.json"
    proc = subprocess.run(
        [sys.executable, script, "--comfyui", str(COMFY_DIR), "--tiny", "--device", "cpu", "--workflow",
         "causvid_image_to_video", "--workflow", "causvid_1.3b_t2v", "--case", "cap=none,kv=fp8", "--work-dir",
         str(tmp_path / "work"), "--json", str(js)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(js.read_text())
    assert [c["workflow"] for c in report["cases"]] == ["causvid_image_to_video", "causvid_1.3b_t2v"]
    for case in report["cases"]:
        assert case["finished"] and not case["error"], case
        assert math.isfinite(case["mean_s_per_block"]) and case["mean_s_per_block"] > 0
        assert case["slowdown"] == 1.0  # each its own workflow's uncapped baseline
    image_to_video = set(report["cases"][0]["node_s"])
    assert {"LoadImage", "VAEEncode", "CausVidSampler", "VAEDecode", "SaveVideo"} <= image_to_video
    assert report["settings"]["workflow"] == ["causvid_image_to_video", "causvid_1.3b_t2v"]
    saved = list((tmp_path / "work" / "output" / "bench").glob("cards_0_SaveVideo*"))
    assert saved, list((tmp_path / "work" / "output").rglob("*"))

