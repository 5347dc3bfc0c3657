"""Load a causal Wan DiT checkpoint (Wan2.1 T2V, or Wan2.2 TI2V-5B for LongLive 2.0) from any of the published
formats (docs/algorithm.md §7).

Every known layout is normalised to the bare Wan keys (`blocks.0.self_attn.q.weight`, ...) and the
result is checked key for key and shape for shape against `config.expected_shapes`:

=====================================  ==========================================================
file                                   layout
=====================================  ==========================================================
CausVid / CausVid-Plus ``model.pt``    ``{"generator": {"model.<key>": t}, "critic": {...}}``
Self-Forcing ``*.pt``                  same, plus ``"generator_ema"`` (preferred when present)
LongLive ``longlive_base.pt``          ``generator_ema`` / ``generator`` / ``model`` (in that
                                       order), keys may contain ``_fsdp_wrapped_module.``
LongLive 2.0 ``model_bf16.pt``         ``{"generator": {"model.<key>": t}, ...}`` (48 channels; beside it
                                       strings and flags, which are skipped)
CausVid-Plus converted, LightX2V       bare keys (``causal_model.pt`` / ``.safetensors``)
ComfyUI repackaged single file         ``model.diffusion_model.<key>`` (or ``diffusion_model.``)
anything else                          a ``{"state_dict": ...}`` wrapper, a ``model.`` prefix
=====================================  ==========================================================

The critic is never read. Pickled files (``.pt``/``.pth``/``.ckpt``/``.bin``) are opened only with
``torch.load(weights_only=True)``, so a file that needs Python code to load is refused, never run.

Limitation: a bidirectional Wan2.1 T2V model (e.g. ``wan2.1_t2v_1.3B_fp16.safetensors``), a
Wan2.2 T2V A14B expert and the bidirectional Wan2.2 TI2V-5B (``wan2.2_ti2v_5B_fp16.safetensors``, LongLive
2.0's base) have exactly the same tensor names and shapes as a causal one; nothing in
the weights tells them apart, so this loader accepts them. Sampling such a model causally gives
poor video; only the user's choice of file can prevent that.

Memory: a 14B file is 28-57 GB. Safetensors files are validated from their header before any
tensor is read and then read tensor by tensor; ``.pt`` files are memory-mapped where the format
allows. Keys are renamed without copying tensors and dtype casts replace tensors one at a time,
so at most one full copy of the weights (plus one tensor) is held at any moment.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from .config import LATENT_LAYOUTS, WanConfig, detect_config, expected_shapes

__all__ = ["Checkpoint", "CheckpointError", "normalise_state_dict", "read_checkpoint", "validate_state_dict"]

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")

_CONVERT_HINT = ("convert it to .safetensors with a tool you trust (on a machine where running the "
                 "file's code is acceptable) and load that instead")
_CAUSAL_HINT = ("load a causal Wan checkpoint instead (CausVid, Self-Forcing, LongLive 1.0 / 2.0, "
                "LightX2V CausVid), or use ComfyUI's regular 'Load Diffusion Model' node for this file")


class CheckpointError(ValueError):
    """A checkpoint could not be loaded; the message names the file, the problem and the fix."""

    # a host that imports this package under its folder's path (ComfyUI does) would otherwise show that path
    # to API clients as part of the error's type name
    __module__ = "causal.checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, Tensor] = field(repr=False, compare=False)
    """Bare Wan keys, exactly `expected_shapes(config)`."""
    config: WanConfig
    layout: str
    """Human description of the file's layout, e.g. "ComfyUI single file (model.diffusion_model.)"."""
    source_dtype: torch.dtype
    """Dtype holding most parameters in the file (before any cast)."""


# --------------------------------------------------------------------------------------------------
# Reading files


def read_checkpoint(path: str | Path, *, dtype: torch.dtype | None = None) -> Checkpoint:
    """Read, normalise and validate a causal Wan checkpoint; cast floats to `dtype` if given.

    Raises CheckpointError (never returns a partial state dict).
    """
    path = Path(path)
    if dtype is not None and not dtype.is_floating_point:
        raise CheckpointError(f"{path}: requested dtype {dtype} is not a floating-point dtype")
    if _checked_path(path) in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path, dtype)
    return _read_pickle(path, dtype)


def inspect_checkpoint(path: str | Path) -> tuple[WanConfig, str]:
    """(config, layout) of a causal Wan checkpoint, checked as `read_checkpoint` checks it but from its header
    alone: a safetensors file's names, shapes and dtypes; a .pt file's pickle, its tensors memory-mapped (not
    read). For a check before anything loads it; raises CheckpointError with the file, the problem and the fix."""
    path = Path(path)
    if _checked_path(path) in SAFETENSORS_SUFFIXES:
        from safetensors import safe_open

        with _open_safetensors(path, safe_open) as f:
            _, _, _, layout, config = _safetensors_plan(f, path)
        return config, layout
    state_dict, layout = _normalise(_load_pickle(path), where=path)
    return _validate(state_dict, where=path), layout


def _checked_path(path: Path) -> str:
    """The file's suffix, once it is a file of a checkpoint format that is not text; else CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"{path}: file not found; check the path (and that the download finished)")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; select the model file inside it "
                              "(e.g. model.pt, causal_model.safetensors)")
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: unknown file extension '{path.suffix}'; expected one of "
            f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)} (rename the file if it is one of those formats)")
    _check_not_text(path)
    return suffix


def _check_not_text(path: Path) -> None:
    """Catch empty files, Git LFS pointers, HTML error pages and other text saved under a model name."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); the download probably failed, fetch it again")
    with path.open("rb") as f:
        head = f.read(256)
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{path}: is a Git LFS pointer file ({size} bytes), not the model itself; download "
                              "the real file (e.g. 'git lfs pull' or the Hugging Face download link)")
    if head[:1] == b"\x80" or head[:2] == b"PK":  # pickle protocol opcode / zip: binary formats
        return
    for cut in range(4):  # the 256-byte window may end inside a multi-byte character
        try:
            text = head[:len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        kind = "an HTML page" if text.lstrip().lower().startswith(("<!doctype html", "<html")) else "a text file"
        # never quote the file: a server must not hand its files' contents to whoever sent the prompt
        raise CheckpointError(f"{path}: is {kind}, not a model checkpoint; download the actual model file")


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": getattr(torch, "float8_e4m3fn", None), "F8_E5M2": getattr(torch, "float8_e5m2", None),
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _open_safetensors(path: Path, safe_open: Callable) -> Any:
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as e:  # SafetensorError has no importable common base across versions
        raise CheckpointError(f"{path}: is truncated or corrupt (safetensors header could not be read: {e}); "
                              "download the file again") from e


def _safetensors_plan(f: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, str], dict[str, str], str,
                                                    WanConfig]:
    """From an open file's header alone (meta tensors): (meta, fp8 scales, bare name -> file name, layout,
    config), validated before any data is read."""
    meta: dict[str, Tensor] = {}
    for key in f.keys():
        info = f.get_slice(key)
        dt = _SAFETENSORS_DTYPES.get(info.get_dtype()) or torch.uint8
        meta[key] = torch.empty(info.get_shape(), dtype=dt, device="meta")
    scales = _fp8_scales(meta, where=path)
    rename, layout = _rename_plan(meta.keys(), container="", where=path)
    config = _validate({new: meta[old] for new, old in rename.items()}, where=path)
    return meta, scales, rename, layout, config


def _read_safetensors(path: Path, dtype: torch.dtype | None) -> Checkpoint:
    from safetensors import safe_open  # local: only needed here

    with _open_safetensors(path, safe_open) as f:
        meta, scales, rename, layout, config = _safetensors_plan(f, path)
        source_dtype = _dominant_dtype({new: meta[old] for new, old in rename.items()})
        if scales:
            layout += " (fp8_scaled, dequantised)"
            source_dtype = torch.bfloat16
            dtype = dtype or torch.bfloat16
        state_dict: dict[str, Tensor] = {}
        try:
            for new, old in rename.items():
                tensor = f.get_tensor(old)
                if old in scales:
                    # w = fp8 * scale, the product in float32, rounded once to the load dtype
                    tensor = tensor.to(torch.float32) * f.get_tensor(scales[old]).to(torch.float32)
                state_dict[new] = _cast(tensor, dtype)
        except Exception as e:
            raise CheckpointError(f"{path}: is truncated or corrupt (reading tensor '{old}' failed: {e}); "
                                  "download the file again") from e
    return Checkpoint(state_dict=state_dict, config=config, layout=layout, source_dtype=source_dtype)


_FP8_SCALE_SUFFIXES = (".scale_weight", ".scale_input")


def _fp8_scales(meta: dict[str, Tensor], where: Path) -> dict[str, str]:
    """ComfyUI's 'fp8_scaled' files: float8 weights with a float32 `scale_weight` each (and `scale_input`, which
    only matters for fp8 matmuls) plus a `scaled_fp8` marker. Removes the scale and marker keys from `meta` and
    returns weight key -> scale key, so the reader can dequantise; {} for any other file."""
    marker = [k for k in meta if k.endswith("scaled_fp8")]
    extra = [k for k in meta if k.endswith(_FP8_SCALE_SUFFIXES)]
    if not marker and not extra:
        return {}
    scales = {}
    for key in extra:
        if key.endswith(".scale_weight"):
            weight = key[:-len("scale_weight")] + "weight"
            if weight not in meta:
                raise CheckpointError(f"{where}: fp8 scale '{key}' has no weight '{weight}'; the file is damaged")
            if meta[key].numel() != 1:
                raise CheckpointError(f"{where}: fp8 scale '{key}' holds {meta[key].numel()} values; this loader "
                                      "reads per-tensor scales only")
            scales[weight] = key
    for key in marker + extra:
        del meta[key]
    return scales


def _read_pickle(path: Path, dtype: torch.dtype | None) -> Checkpoint:
    raw = _load_pickle(path)
    state_dict, layout = _normalise(raw, where=path)
    del raw  # the critic and other entries can go now; state_dict holds the only references we keep
    config = _validate(state_dict, where=path)
    source_dtype = _dominant_dtype(state_dict)
    if dtype is not None:
        for key in list(state_dict):  # one tensor at a time: never two full copies
            state_dict[key] = _cast(state_dict[key], dtype)
    return Checkpoint(state_dict=state_dict, config=config, layout=layout, source_dtype=source_dtype)


def _load_pickle(path: Path) -> Any:
    """torch.load with weights_only=True only; memory-mapped where the file format allows it."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return _load_mmap_first(path)
    except Exception as e:
        message = str(e)
        weights_only = "Weights only load failed" in message or "WeightsUnpickler" in message
        detail = _weights_only_detail(message) if weights_only else ""
        if weights_only and any(w in detail for w in _CODE_WORDS):
            raise CheckpointError(
                f"{path}: the file contains pickled Python code or objects other than tensors ({detail}); "
                f"this pack refuses to execute code from a checkpoint. If you trust the file, {_CONVERT_HINT}"
            ) from e
        if weights_only:
            raise CheckpointError(
                f"{path}: is truncated or corrupt, or not a PyTorch checkpoint (the safe unpickler stopped at: "
                f"{detail}); download the file again, or if it is a plain Python pickle you trust, {_CONVERT_HINT}"
            ) from e
        raise CheckpointError(
            f"{path}: is truncated or corrupt, or not a PyTorch checkpoint (torch.load failed: "
            f"{type(e).__name__}: {message.strip()[:300] or 'no details'}); download the file again") from e


def _load_mmap_first(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        # Legacy (pre-zip) torch.save format cannot be memory-mapped; still weights_only.
        return torch.load(path, map_location="cpu", weights_only=True)


_CODE_WORDS = ("GLOBAL", "global", "reduce", "new object", "Can only build", "DTensor", "nested")
"""Words in torch's weights_only refusals that mean the pickle references Python callables/classes."""


def _weights_only_detail(message: str) -> str:
    """The unpickler's own reason, out of torch's long weights_only error text (its format varies by version)."""
    m = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    if m:
        return m.group(1).split(" Please use")[0].strip()[:200]
    for line in message.splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith(("Check the documentation", "Please file an issue", "(1)", "(2)")):
            return line.split(" Please use")[0][:200]
    return "torch.load(weights_only=True) refused it"


def _cast(t: Tensor, dtype: torch.dtype | None) -> Tensor:
    if dtype is None or t.dtype == dtype or not t.is_floating_point():
        return t
    if t.element_size() == 1:  # float8 storage: upcast through float32
        t = t.to(torch.float32)
    return t.to(dtype)


def _dominant_dtype(state_dict: Mapping[str, Tensor]) -> torch.dtype:
    counts: dict[torch.dtype, int] = {}
    for t in state_dict.values():
        counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return max(counts, key=counts.__getitem__)


# --------------------------------------------------------------------------------------------------
# Normalising layouts

_CONTAINERS = ("generator_ema", "generator", "model", "state_dict", "module")
"""Sub-dicts holding the DiT, in order of preference (EMA weights are what the references sample with)."""

_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
"""Name segments added by FSDP, activation checkpointing and torch.compile; removed wherever they occur."""

_PREFIXES = (
    ("model.diffusion_model.", "ComfyUI single file (model.diffusion_model.)"),
    ("diffusion_model.", "diffusion_model. prefix"),
    ("model.", "model. prefix"),
    ("module.", "module. prefix"),
)
_ANCHORS = ("patch_embedding.weight", "head.modulation", "head.head.weight", "time_embedding.0.weight",
            "text_embedding.0.weight", "blocks.0.modulation", "blocks.0.self_attn.q.weight")
"""Keys that identify a Wan DiT (and so the prefix in front of them)."""


def normalise_state_dict(raw: Mapping) -> tuple[dict[str, Tensor], str]:
    """Unwrap any known container and rename keys to bare Wan keys (no tensor is copied).

    Returns the bare state dict and a human description of the layout. Non-tensor entries are
    skipped. Raises CheckpointError for an object that is not a dict or has no tensors.
    """
    return _normalise(raw, where="state dict")


def _normalise(raw: Any, where: str | Path) -> tuple[dict[str, Tensor], str]:
    flat, container = _unwrap(raw, where)
    tensors = {k: v for k, v in flat.items() if isinstance(k, str) and isinstance(v, Tensor)}
    rename, layout = _rename_plan(tensors.keys(), container, where)
    return {new: tensors[old] for new, old in rename.items()}, layout


def _unwrap(raw: Any, where: str | Path) -> tuple[Mapping, str]:
    node, path, siblings = raw, [], set()
    while True:
        if not isinstance(node, Mapping):
            inside = f" (inside '{'/'.join(path)}')" if path else ""
            raise CheckpointError(f"{where}: holds a {type(node).__name__}{inside}, not a dict of tensors; "
                                  "not a Wan2.1 DiT checkpoint")
        if any(isinstance(v, Tensor) for v in node.values()) or len(path) >= 4:
            break
        subs = {k: v for k, v in node.items() if isinstance(v, Mapping) and len(v) > 0}
        choice = next((k for k in _CONTAINERS if k in subs), None)
        if choice is None:
            others = [k for k in subs if k != "critic"]
            choice = others[0] if len(others) == 1 else None
        if choice is None:
            break
        if not path:
            siblings = set(node)
        path.append(str(choice))
        node = node[choice]
    if not path:
        return node, ""
    top = path[0]
    if top == "generator_ema":
        desc = "Self-Forcing / LongLive checkpoint (generator_ema)"
    elif top == "generator":
        desc = ("CausVid / CausVid-Plus / Self-Forcing model.pt (generator)" if "critic" in siblings
                else "LongLive 2.0 model_bf16.pt or a training checkpoint (generator)")
    elif top == "model":
        desc = "LongLive checkpoint (model)"
    else:
        desc = f"'{top}' wrapper"
    if len(path) > 1:
        desc += " > " + " > ".join(path[1:])
    return node, desc


def _rename_plan(keys, container: str, where: str | Path) -> tuple[dict[str, str], str]:
    """Map bare key -> stored key. Raises CheckpointError if two stored keys collide."""
    stripped = {}
    had_wrappers = False
    for key in keys:
        new = key
        for seg in _WRAPPER_SEGMENTS:
            new = new.replace(seg, "")
        had_wrappers |= new != key
        stripped[key] = new
    names = set(stripped.values())
    prefix, key_desc = "", "bare Wan keys"
    for p, d in _PREFIXES:
        if any(p + a in names for a in _ANCHORS):
            prefix, key_desc = p, d
            break
    rename: dict[str, str] = {}
    for old, new in stripped.items():
        if prefix and new.startswith(prefix):
            new = new[len(prefix):]
        if new in rename:
            raise CheckpointError(f"{where}: keys '{rename[new]}' and '{old}' both map to '{new}'; the file holds two "
                                  "copies of the same weight and it is not clear which one to use")
        rename[new] = old
    if had_wrappers:
        key_desc += ", FSDP wrapper names removed"
    return rename, f"{container}: {key_desc}" if container else key_desc


# --------------------------------------------------------------------------------------------------
# Validation


def validate_state_dict(sd: Mapping[str, Tensor]) -> WanConfig:
    """Check a bare-key state dict has exactly the Wan2.1 T2V keys and shapes; return its config."""
    return _validate(sd, where="state dict")


def _validate(sd: Mapping[str, Tensor], where: str | Path) -> WanConfig:
    tensors = {k: v for k, v in sd.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{where}: contains no tensors; not a Wan2.1 DiT checkpoint")
    foreign = _identify_foreign(tensors)
    if foreign:
        raise CheckpointError(f"{where}: {foreign}")
    if not any(a in tensors for a in _ANCHORS) and not any(k.startswith("blocks.") for k in tensors):
        raise CheckpointError(
            f"{where}: not a Wan2.1 DiT checkpoint: none of its {len(tensors)} tensors has a Wan DiT name "
            f"(first keys: {_listing(sorted(tensors), 5)})")
    try:
        config = detect_config(tensors)
    except (ValueError, IndexError, ZeroDivisionError, TypeError) as e:
        raise CheckpointError(f"{where}: cannot determine the model size ({e}){_shard_hint(where)}") from e
    if config.in_dim != config.out_dim or config.out_dim not in LATENT_LAYOUTS:
        raise CheckpointError(
            f"{where}: the model takes {config.in_dim} input and produces {config.out_dim} output latent channels, "
            f"but a Wan text-to-video model has as many of each as its VAE (16: Wan2.1 T2V, 48: Wan2.2 TI2V-5B); "
            f"this is a conditioning variant (e.g. image- or control-to-video); {_CAUSAL_HINT}")

    expected = expected_shapes(config)
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(expected)} expected keys are missing: {_listing(missing, 5)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected, 10)}")
    wrong = [f"'{k}' expected {list(expected[k])}, found {list(t.shape)}"
             for k, t in tensors.items() if k in expected and tuple(t.shape) != tuple(expected[k])]
    if wrong:
        problems.append(f"{len(wrong)} tensors have the wrong shape: " + "; ".join(wrong[:5])
                        + (" ..." if len(wrong) > 5 else ""))
    not_float = [f"'{k}' ({t.dtype})" for k, t in tensors.items() if not t.is_floating_point()]
    if not_float:
        problems.append(f"{len(not_float)} tensors are not floating point: {', '.join(not_float[:5])}")
    if problems:
        raise CheckpointError(
            f"{where}: does not match a Wan2.1 T2V DiT ({config.name}: dim {config.dim}, ffn {config.ffn_dim}, "
            f"{config.num_layers} layers): " + "; ".join(problems)
            + ". The file is incomplete, damaged or a different model; re-download it or pick the right file"
            + (_shard_hint(where) if missing else ""))
    return config


def _listing(keys: list[str], n: int) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:n])
    return shown + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


def _shard_hint(where: str | Path) -> str:
    if isinstance(where, Path) and re.search(r"-\d+-of-\d+", where.name):
        return ("; the file name looks like one shard of a multi-file model: merge the shards into one file "
                "(and note that the original Wan2.1 release is bidirectional, not causal)")
    return ""


def _identify_foreign(tensors: Mapping[str, Tensor]) -> str | None:
    """Name a known file type that is not a causal Wan2.1 T2V DiT, with what to do instead."""
    keys = list(tensors)

    def some(pred) -> str | None:
        return next((k for k in keys if pred(k)), None)

    if k := some(lambda k: any(s in k for s in ("lora_A", "lora_B", "lora_down", "lora_up"))
                 or k.endswith((".alpha", ".diff", ".diff_b"))):
        return (f"this is a LoRA (e.g. key '{k}'), not a full model; load it with LoraLoaderModelOnly "
                "on top of a causal Wan model")
    if k := some(lambda k: k.endswith((".scale_weight", ".scale_input")) or k.endswith("scaled_fp8")):
        return (f"this is a ComfyUI 'fp8_scaled' file (key '{k}') saved as a pickle; its scales are applied for "
                ".safetensors files only: use the .safetensors download")
    if k := some(lambda k: k.startswith(("encoder.block.", "token_embedding.")) or k == "shared.weight"):
        return (f"this is a umT5 text encoder (e.g. key '{k}'), not a diffusion model; put it in "
                "models/text_encoders and load it with the CLIP/text-encoder loader (type 'wan')")
    if k := some(lambda k: k.startswith(("visual.", "vision_model.", "log_scale"))):
        return (f"this is a CLIP vision encoder (e.g. key '{k}'), not a diffusion model; it belongs in "
                "models/clip_vision and is only used by image-to-video models")
    if k := some(lambda k: k.startswith(("decoder.", "encoder.", "first_stage_model."))):
        return (f"this is a VAE (e.g. key '{k}'), not a diffusion model; put it in models/vae and load it "
                "with the VAE loader (Wan2.1 VAE)")

    # Wan DiT variants: same backbone, extra inputs. Checked before the key-by-key comparison.
    patch = tensors.get("patch_embedding.weight")
    in_dim = int(patch.shape[1]) if patch is not None and patch.dim() >= 2 else None
    if k := some(lambda k: k.startswith("vace_")):
        return f"this is a Wan VACE (video editing / control) model (key '{k}'), not a causal T2V checkpoint; {_CAUSAL_HINT}"
    if k := some(lambda k: "audio" in k or k.startswith(("cond_encoder.", "frame_packer.", "trainable_cond_mask"))):
        return (f"this is a Wan2.2 speech-to-video (S2V) model (key '{k}'), not a causal Wan2.1 T2V checkpoint; "
                f"{_CAUSAL_HINT}")
    if k := some(lambda k: k.startswith(("pose_patch_embedding.", "face_adapter.", "face_encoder.", "motion_encoder."))):
        return f"this is a Wan2.2 Animate model (key '{k}'), not a causal Wan2.1 T2V checkpoint; {_CAUSAL_HINT}"
    img = some(lambda k: k.startswith("img_emb.") or "k_img" in k or "v_img" in k)
    if img or in_dim == 36:
        why = f"key '{img}'" if img else "patch_embedding takes 36 input channels"
        return (f"this is a bidirectional Wan2.1 image-to-video (or first-last-frame) model ({why}), not a causal "
                f"T2V checkpoint; {_CAUSAL_HINT}")
    return None
