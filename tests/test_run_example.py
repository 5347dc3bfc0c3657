"""The README's first command (scripts/run_example.py) as a newcomer meets it: a mistyped models folder or a
missing file is an error that says what was looked for (published file names accepted), stand-ins run only
when no folder was given and make a picture that visibly moves, and a failure shows the pack's error above a
log without ComfyUI's unrelated start-up notices."""

from __future__ import annotations

import importlib.util

import pytest

from tools.comfy_server import REPO_ROOT, comfyui_available, video_frames


@pytest.fixture(scope="module")
def run_example():
    spec = importlib.util.spec_from_file_location("run_example", REPO_ROOT / "scripts" / "run_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_models_folder_that_does_not_exist_is_an_error(run_example, tmp_path, capsys):
    assert run_example.main(["--models-dir", str(tmp_path / "no_such_folder")]) == 2
    out = capsys.readouterr().out
    assert "FAILED" in out and "does not exist" in out and "stand-ins" in out
    assert "Running the SAME graph" not in out  # no silent substitute


def test_missing_files_are_listed_with_the_names_accepted(run_example, tmp_path, capsys):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "wan_2.1_vae.safetensors").write_bytes(b"x")
    assert run_example.main(["--models-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "missing diffusion_models/causvid_1.3b_autoregressive.pt or model.pt" in out
    assert "tianweiy/CausVid" in out and "missing text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors" in out
    assert "missing vae/" not in out


def test_a_checkpoint_under_its_published_name_is_found(run_example, tmp_path):
    eg = run_example.eg
    for folder, names in eg.WORKFLOWS["causvid_1.3b_t2v"].files.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / eg.PUBLISHED.get(name, (name,))[0]).write_bytes(b"x")
    found, missing = run_example.find_files(tmp_path, eg.WORKFLOWS["causvid_1.3b_t2v"])
    assert not missing and found[eg.CAUSVID_13B] == "model.pt"


def test_broken_files_are_named_before_comfyui_starts(run_example, tmp_path, capsys, monkeypatch):
    """Garbage under the right names (a 1 KB model.pt, a truncated VAE, an empty text encoder) is found by the
    nodes' own readers from the headers, and the run stops before ComfyUI starts, each file named with the fix."""
    eg = run_example.eg
    files = eg.WORKFLOWS["causvid_1.3b_t2v"].files
    for folder, names in files.items():
        (tmp_path / folder).mkdir()
    (tmp_path / "diffusion_models" / "model.pt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "vae" / files["vae"][0]).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    (tmp_path / "text_encoders" / files["text_encoders"][0]).write_bytes(b"")
    monkeypatch.setattr(run_example.Server, "start", lambda self: pytest.fail("ComfyUI was started"))
    assert run_example.main(["--models-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "checked before ComfyUI starts" in out and "Using the real models" not in out
    assert "model.pt: is truncated or corrupt, or not a PyTorch checkpoint" in out
    assert f"{files['vae'][0]}: is truncated or corrupt" in out and "download the file again" in out
    assert f"{files['text_encoders'][0]}: is empty (0 bytes)" in out


def test_comfyui_start_up_notices_are_hidden_from_failure_output(run_example):
    log = "\n".join([
        "Failed to initialize database. Please ensure you have installed the latest requirements. "
        "No module named 'alembic'",
        "comfyui-workflow-templates is not installed.",
        "WARNING: some comfy_extras/ nodes did not import correctly. This may be because they are missing some "
        "dependencies.",
        "IMPORT FAILED: nodes_audio.py",
        "This issue might be caused by new missing dependencies added the last time you updated ComfyUI.",
        "Please do a: pip install -r requirements.txt",
        "Error importing dependencies: No module named 'alembic'",
        "Please install the updated requirements.txt file by running:",
        "This error is happening because ComfyUI now uses a local sqlite database.",
        "   0.1 seconds (IMPORT FAILED): custom_nodes/comfyui-causvid",
        "!!! Exception during processing !!! the state was sampled at 64x48",
        "ValueError: the state was sampled at 64x48",
    ])
    text, hidden = run_example.relevant_log(log)
    assert hidden == 9 and "alembic" not in text and "nodes_audio" not in text and "sqlite" not in text
    # the pack's own import failure is not noise
    assert text.splitlines()[0] == "   0.1 seconds (IMPORT FAILED): custom_nodes/comfyui-causvid"
    assert text.splitlines()[1].startswith("!!! Exception during processing")


@pytest.mark.comfyui
@pytest.mark.skipif(not comfyui_available(), reason="needs ComfyUI (scripts/setup.sh)")
def test_stand_in_video_visibly_moves(run_example, tmp_path, capsys, monkeypatch):
    import numpy as np

    monkeypatch.delenv("CAUSVID_MODELS_DIR", raising=False)
    assert run_example.main(["--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "81 frames" in out and "s per block" in out and "Output video:" in out
    (video,) = tmp_path.glob("*.mp4")
    frames = video_frames(video)
    assert frames.shape[0] == 81
    assert int(frames.max()) - int(frames.min()) > 100  # a picture, not one flat colour
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 5  # and it moves
