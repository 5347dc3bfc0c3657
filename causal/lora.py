"""LongLive's LoRA: a PEFT adapter on every linear layer of every transformer block (docs/algorithm.md
§7.5).

The file (`lora.pt`) is `{"generator_lora": peft_state_dict}` or the PEFT state dict itself, with keys
`base_model.model.blocks.{i}.{self_attn,cross_attn}.{q,k,v,o}.lora_{A,B}.weight` and
`base_model.model.blocks.{i}.ffn.{0,2}.lora_{A,B}.weight`: A is [rank, in], B is [out, rank]. LongLive uses
rank 256 and alpha 256, so the scale alpha / rank is 1.0.

Two ways to apply it:

* unmerged (LongLive's own inference, PEFT): y = bf16(W x + b) + bf16(B bf16(A x)) * scale, every product
  in the activation dtype (`apply_unmerged`: a forward hook per layer). Reproduces LongLive's numbers.
* merged (the default at load): W' = W + scale * B A, computed in float32 and rounded once to the weight
  dtype. The forward is then a plain linear layer (no extra cost); it rounds differently from the unmerged
  form (bf16 noise, measured in the tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .config import WanConfig

TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
           "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")
"""The linear layers of one block that LongLive's adapter covers (all ten of them)."""

_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?:model\.)?"
                       r"(blocks\.\d+\.(?:self_attn\.[qkvo]|cross_attn\.[qkvo]|ffn\.[02]))"
                       r"\.lora_([AB])(?:\.default)?\.weight$")
_WRAPPERS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


class LoraError(ValueError):
    """An adapter file that does not fit the model, with what is wrong."""

    __module__ = "causal.lora"  # as CheckpointError: no host path in the type name


@dataclass(frozen=True)
class Lora:
    """Low-rank pairs per layer name (`blocks.3.self_attn.q`): A [rank, in], B [out, rank], and the scale."""

    pairs: dict[str, tuple[Tensor, Tensor]]
    scale: float

    @property
    def rank(self) -> int:
        return next(iter(self.pairs.values()))[0].shape[0]


def read_lora(path: str | Path, *, alpha: float | None = None) -> Lora:
    """Read a LongLive/PEFT adapter (.pt with the safe unpickler, or .safetensors). `alpha` defaults to the rank
    (scale 1.0, LongLive's setting)."""
    from .checkpoint import _load_pickle  # the safe unpickler with the checkpoint reader's messages

    path = Path(path)
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors.torch import load_file

        raw: object = load_file(str(path))
    else:
        raw = _load_pickle(path)
    if isinstance(raw, Mapping) and "generator_lora" in raw:
        raw = raw["generator_lora"]
    if not isinstance(raw, Mapping):
        raise LoraError(f"{path.name}: holds a {type(raw).__name__}, not a LoRA state dict")
    return lora_from_state_dict(raw, alpha=alpha, where=path.name)


def lora_from_state_dict(sd: Mapping[str, Tensor], *, alpha: float | None = None, where: str = "LoRA") -> Lora:
    halves: dict[str, dict[str, Tensor]] = {}
    unknown = []
    for key, tensor in sd.items():
        bare = key
        for wrapper in _WRAPPERS:
            bare = bare.replace(wrapper, "")
        match = _PEFT_KEY.match(bare)
        if not match or not isinstance(tensor, Tensor):
            unknown.append(key)
            continue
        halves.setdefault(match.group(1), {})[match.group(2)] = tensor
    if unknown:
        raise LoraError(f"{where}: {len(unknown)} keys are not LongLive/PEFT LoRA weights of block linears "
                        f"(e.g. '{unknown[0]}')")
    if not halves:
        raise LoraError(f"{where}: no LoRA weights found")
    pairs = {}
    for name, half in sorted(halves.items()):
        if set(half) != {"A", "B"}:
            raise LoraError(f"{where}: '{name}' has lora_{''.join(half)} but not both lora_A and lora_B")
        a, b = half["A"], half["B"]
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0]:
            raise LoraError(f"{where}: '{name}' has lora_A {list(a.shape)} and lora_B {list(b.shape)}, which do not "
                            "multiply (expected [rank, in] and [out, rank])")
        pairs[name] = (a, b)
    ranks = {a.shape[0] for a, _ in pairs.values()}
    if len(ranks) != 1:
        raise LoraError(f"{where}: the layers have different ranks {sorted(ranks)}")
    rank = ranks.pop()
    return Lora(pairs=pairs, scale=(alpha if alpha is not None else rank) / rank)


def check_fits(lora: Lora, config: WanConfig, where: str = "LoRA") -> None:
    """Raise LoraError unless the adapter covers exactly the model's block linears, with matching shapes."""
    expected = {f"blocks.{i}.{t}" for i in range(config.num_layers) for t in TARGETS}
    missing, extra = sorted(expected - set(lora.pairs)), sorted(set(lora.pairs) - expected)
    if extra:
        raise LoraError(f"{where}: adapts {len(extra)} layers this {config.name} model does not have "
                        f"(e.g. '{extra[0]}'): it was made for another model size")
    if missing:
        raise LoraError(f"{where}: covers {len(lora.pairs)} of the {len(expected)} block linears; missing e.g. "
                        f"'{missing[0]}'")
    for name, (a, b) in lora.pairs.items():
        out_dim, in_dim = _linear_shape(config, name)
        if a.shape[1] != in_dim or b.shape[0] != out_dim:
            raise LoraError(f"{where}: '{name}' maps {a.shape[1]} -> {b.shape[0]}, but the layer maps {in_dim} -> "
                            f"{out_dim}: the adapter was made for another model")


def _linear_shape(config: WanConfig, name: str) -> tuple[int, int]:
    if name.endswith("ffn.0"):
        return config.ffn_dim, config.dim
    if name.endswith("ffn.2"):
        return config.dim, config.ffn_dim
    return config.dim, config.dim


def merge_into(state_dict: dict[str, Tensor], lora: Lora) -> None:
    """W <- round(W + scale * B A) for every adapted layer of a bare-key state dict, in place (float32 product)."""
    for name, (a, b) in lora.pairs.items():
        key = name + ".weight"
        weight = state_dict[key]
        delta = (b.to(torch.float32) @ a.to(torch.float32)) * lora.scale
        state_dict[key] = (weight.to(torch.float32) + delta).to(weight.dtype)


def apply_unmerged(model: nn.Module, lora: Lora) -> list:
    """LongLive's exact arithmetic on a built model: every adapted linear gets the adapter as non-persistent
    buffers and a forward hook adding B(A(x)) * scale to its output, each op in the activation dtype (PEFT's
    `base(x) + lora_B(lora_A(x)) * scaling`). Module and weight names stay as they are, so ComfyUI's own LoRA
    patches and offloading still find them. Returns the hook handles."""
    check_fits(lora, model.config)  # type: ignore[arg-type]
    handles = []
    for name, (a, b) in lora.pairs.items():
        linear = model.get_submodule(name)
        device = linear.weight.device if linear.weight.device.type != "meta" else torch.device("cpu")
        linear.register_buffer("lora_a", a.to(device), persistent=False)
        linear.register_buffer("lora_b", b.to(device), persistent=False)
        linear.lora_scale = lora.scale
        handles.append(linear.register_forward_hook(_add_lora))
    return handles


def _add_lora(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
    x = inputs[0]
    if module.lora_a.dtype != x.dtype or module.lora_a.device != x.device:
        # converted once and kept (the buffers follow later .to() of the module), not on every forward
        module.lora_a = module.lora_a.to(device=x.device, dtype=x.dtype)
        module.lora_b = module.lora_b.to(device=x.device, dtype=x.dtype)
    return output + F.linear(F.linear(x, module.lora_a), module.lora_b) * module.lora_scale
