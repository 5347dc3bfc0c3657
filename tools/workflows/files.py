"""The files the example workflows use (the pack never downloads weights): their names, the names they are
published under, where the frontend can download the core ones, and the widgets that name files."""

from __future__ import annotations

UMT5 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"
WAN22_VAE = "wan2.2_vae.safetensors"  # the Wan 2.2 VAE (48 channels, 16x): LongLive 2.0's
CAUSVID_13B = "causvid_1.3b_autoregressive.pt"
LIGHTX2V_14B = "lightx2v_causvid_14b.safetensors"
SELF_FORCING_13B = "self_forcing_dmd.pt"  # gdhe17/Self-Forcing checkpoints/self_forcing_dmd.pt, name kept
KREA_14B = "krea-realtime-video-14b.safetensors"  # krea/krea-realtime-video, name kept
REWARD_FORCING_13B = "rewardforcing.pt"  # JaydenLu666/Reward-Forcing-T2V-1.3B, name kept
LONGLIVE2_5B = "longlive_2.0_5b_bf16.pt"  # Efficient-Large-Model/LongLive-2.0-5B model_bf16.pt, renamed

PUBLISHED = {
    CAUSVID_13B: ("model.pt", "tianweiy/CausVid: autoregressive_checkpoint/model.pt"),
    LIGHTX2V_14B: ("causal_model.safetensors", "lightx2v/Wan2.1-T2V-14B-CausVid: causvid_models/causal_model.safetensors"),
    SELF_FORCING_13B: (SELF_FORCING_13B, "gdhe17/Self-Forcing: checkpoints/self_forcing_dmd.pt"),
    KREA_14B: (KREA_14B, "krea/krea-realtime-video: krea-realtime-video-14b.safetensors"),
    REWARD_FORCING_13B: (REWARD_FORCING_13B, "JaydenLu666/Reward-Forcing-T2V-1.3B: rewardforcing.pt"),
    LONGLIVE2_5B: ("model_bf16.pt", "Efficient-Large-Model/LongLive-2.0-5B: model_bf16.pt"),
}
"""Workflow file name -> (the name it is published under, where): a file kept under its published name is
found too (scripts/run_example.py)."""
START_IMAGE = "example.png"  # ComfyUI ships input/example.png; the image-to-video example starts from it

HUGGING_FACE = "https://huggingface.co/"
REPACKAGED = f"{HUGGING_FACE}Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
REPACKAGED_22 = f"{HUGGING_FACE}Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
MODEL_LINKS = {  # the frontend's "missing models" dialog reads these from node properties
    UMT5: {"name": UMT5, "url": f"{REPACKAGED}/text_encoders/{UMT5}", "directory": "text_encoders"},
    WAN_VAE: {"name": WAN_VAE, "url": f"{REPACKAGED}/vae/{WAN_VAE}", "directory": "vae"},
    WAN22_VAE: {"name": WAN22_VAE, "url": f"{REPACKAGED_22}/vae/{WAN22_VAE}", "directory": "vae"},
}

FILE_WIDGETS = {
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("CausVidModelLoader", "ckpt_name"): "diffusion_models",
    ("LoadImage", "image"): "input",
}
"""(node type, widget) -> models folder (or ComfyUI's input folder): combos listing files, which a fresh
install may not have."""


def readme_files_table(workflows: dict) -> str:
    """The README's table of every file the example workflows load (`workflows`: name -> Workflow): its folder,
    where it is published and under which name (scripts/run_example.py accepts either name), which workflows use
    it. tests/test_workflows.py checks that the README holds exactly this."""
    rows = ["| the workflows load | in `models/` | published as | used by |", "|---|---|---|---|"]
    users: dict[tuple[str, str], list[str]] = {}
    for name, workflow in sorted(workflows.items()):
        for folder, files in workflow.files.items():
            for file in files:
                users.setdefault((folder, file), []).append(name)
    for (folder, file), names in sorted(users.items(), key=lambda kv: (kv[0][0] != "diffusion_models", kv[0])):
        if file in PUBLISHED:
            published, where = PUBLISHED[file]
            repo, path = where.split(": ", 1)
            source = f"{'the same name' if published == file else f'`{published}`'} ({repo}, `{path}`)"
        elif file in MODEL_LINKS:
            repo, path = MODEL_LINKS[file]["url"].removeprefix(HUGGING_FACE).split("/resolve/main/")
            source = f"the same name ({repo}, `{path.removesuffix(file)}`)"
        else:
            raise ValueError(f"{folder}/{file}: say where it is published (PUBLISHED or MODEL_LINKS)")
        used = "every example" if len(names) == len(workflows) else ", ".join(f"`{n}`" for n in names)
        rows.append(f"| `{file}` | `{folder}/` | {source} | {used} |")
    return "\n".join(rows)

