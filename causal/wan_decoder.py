"""A faster streaming decode of the Wan 2.1 VAE, on the VAE's own modules and weights.

The Wan 2.1 reference decoder (`Decoder3d`: `conv1`, `middle`, `upsamples`, `head`; ComfyUI's
`comfy.ldm.wan.vae` has the same layout) decodes one latent frame per call, every causal convolution keeping
the last two input frames of the stream. `WanDecodeStream` computes the same function, faster:

* several latent frames per call (a stream's first frame alone: the temporal up-samplers skip their time conv
  for it, which no other frame does), or with `low_memory` one latent frame at a time and, past the last
  temporal up-sampler (where a frame has become four at half and full resolution), one output frame at a
  time: every causal conv keeps its past frames, so the split changes only the working memory (one
  full-resolution frame's rather than a block's) and the speed;
* spatial zero padding inside the convolutions instead of an `F.pad` copy; only the causal past in time is a
  concatenation (the cached frames, zeros before the stream starts);
* channels-last activations and weights end to end; an up-sampler's bias, frame interleave and nearest ×2 are
  then one strided copy;
* every convolution without its bias: the bias and a residual block's shortcut are added by whatever reads the
  output next, RMSNorm + SiLU + the causal concatenation as one compiled kernel on CUDA with Triton (eager,
  the same functions op by op, elsewhere).

The arithmetic is the reference's, reordered: in float32 a decode equals the reference's to ~1e-6; in bf16 the
convolutions pick other cuDNN algorithms for other shapes, so frames differ by bf16 rounding (the figures are
in bench/RESULTS.md). The weights are copied once (channels-last), never changed in place.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import compiled, fused_unavailable

Cache = dict  # id(conv) -> its cached input frames (a temporal up-sampler's zeros once it has seen the first frame)


class Pending(NamedTuple):
    """A layer's output not yet summed: y + bias (per channel) + residual."""

    y: torch.Tensor
    bias: torch.Tensor | None = None
    residual: torch.Tensor | None = None


def residual_sum(y: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None) -> torch.Tensor:
    """(y + b) + r, in the reference's order (the conv adds its bias, then the block its shortcut)."""
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1, 1)
    if residual is not None:
        y = y + residual
    return y


def conv_input(x: torch.Tensor, gamma: torch.Tensor, scale: float, past: torch.Tensor) -> torch.Tensor:
    """[past, silu(RMSNorm(x))] along time; RMSNorm(x) = normalize(x over channels) · sqrt(C) · gamma."""
    out = torch.cat([past, F.silu(F.normalize(x, dim=1) * scale * gamma)], 2)
    if x.is_contiguous(memory_format=torch.channels_last_3d):
        out = out.contiguous(memory_format=torch.channels_last_3d)  # as eager lays it out, compiled too
    return out


def norm_silu(y: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None, gamma: torch.Tensor,
              scale: float, past: torch.Tensor) -> torch.Tensor:
    """A causal conv's input from a pending output: conv_input(residual_sum(y, b, r))."""
    return conv_input(residual_sum(y, bias, residual), gamma, scale, past)


def block_input(y: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None, gamma: torch.Tensor,
                scale: float, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, conv_input(x)): a residual block's input x (its shortcut needs it) and its first conv's input."""
    x = residual_sum(y, bias, residual)
    return x, conv_input(x, gamma, scale, past)


class Conv(NamedTuple):
    """A causal convolution's weights (channels-last copies) and padding."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    time_pad: int  # past frames it reads (2 for a 3-tap time kernel, 0 for 1x1x1)
    space_pad: tuple[int, int]  # (h, w)


def _conv(module: nn.Module, device: torch.device, dtype: torch.dtype) -> Conv:
    """A reference CausalConv3d (`_padding` = (w, w, h, h, 2·t, 0)) or a Conv2d (`padding`)."""
    w = module.weight.detach().to(device=device, dtype=dtype)
    fmt = torch.channels_last_3d if w.dim() == 5 else torch.channels_last
    b = None if module.bias is None else module.bias.detach().to(device=device, dtype=dtype)
    if hasattr(module, "_padding"):
        pw, _, ph, _, pt, _ = module._padding
        return Conv(w.contiguous(memory_format=fmt), b, pt, (ph, pw))
    ph, pw = module.padding
    return Conv(w.contiguous(memory_format=fmt), b, 0, (ph, pw))


def _norm(module: nn.Module, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    if getattr(module, "bias", None) is not None:
        raise ValueError("the fast Wan decode expects RMS norms without a bias (Wan 2.1's decoder has none)")
    return module.gamma.detach().to(device=device, dtype=dtype), module.scale


class WanDecodeStream:
    """Decode one video's latents chunk by chunk with the decoder `decoder` (Wan 2.1's `Decoder3d` layout) after
    `conv2` (the VAE's 1x1x1 conv before it). `decode` takes latents [B, 16, n, h, w] (the VAE's input, after
    the latent format's scaling) and returns the decoder's raw output [B, 3, F, H, W] for them: 1 + 4 (n - 1)
    frames for the stream's first chunk, 4 n after it. `check()`, when given, is a host's cancel check.

    A block per call (the default) is all or nothing: `check()` runs before every layer, and `state()` /
    `restore()` snapshot and put back the causal state (decoding replaces its tensors, never writes into them).
    `low_memory` decodes a frame at a time (see the module docstring) and commits each latent frame: `check()`
    runs before each, a call it stops keeps the frames it finished and the next call (the same latents) decodes
    only the rest; no snapshot holds the old state meanwhile (that would be a second causal cache, 1.9 GB at
    832x480). Only the VAE's own attention module, early in a frame, may stop it inside (a host's layers check
    the host's cancel): until it has run, the cache entries a frame replaced are kept and put back if it raises.
    An error later inside a frame loses the state: later calls raise."""

    def __init__(self, conv2: nn.Module, decoder: nn.Module, *, device: torch.device, dtype: torch.dtype,
                 check: Callable[[], None] | None = None, low_memory: bool = False) -> None:
        self.device, self.dtype, self.check = torch.device(device), dtype, check or (lambda: None)
        self.low_memory = low_memory
        self.compile = fused_unavailable(self.device) is None
        conv = lambda m: _conv(m, self.device, dtype)  # noqa: E731
        norm = lambda m: _norm(m, self.device, dtype)  # noqa: E731
        self.conv2 = conv(conv2)
        self.conv1 = conv(decoder.conv1)
        self.layers: list[tuple[str, object]] = []
        for layer in (*decoder.middle, *decoder.upsamples):
            kind = type(layer).__name__
            if kind == "ResidualBlock":
                r = layer.residual
                shortcut = None if isinstance(layer.shortcut, nn.Identity) else conv(layer.shortcut)
                self.layers.append(("residual", (norm(r[0]), conv(r[2]), norm(r[3]), conv(r[6]), shortcut)))
            elif kind == "AttentionBlock":
                self.layers.append(("attention", layer))  # the VAE's own module (one per video frame, rare)
            elif kind == "Resample" and layer.mode in ("upsample2d", "upsample3d"):
                time_conv = conv(layer.time_conv) if layer.mode == "upsample3d" else None
                self.layers.append(("upsample", (conv(layer.resample[1]), time_conv)))
            else:
                raise ValueError(f"the fast Wan decode does not know the decoder layer {kind}")
        self.head_norm, self.head = norm(decoder.head[0]), conv(decoder.head[2])
        temporal = [i for i, (kind, layer) in enumerate(self.layers) if kind == "upsample" and layer[1] is not None]
        self.per_frame_from = temporal[-1] + 1 if temporal else 0
        """With `low_memory`, layers from this one on run one output frame at a time."""
        self.cache: Cache = {}
        self.frames = 0  # latent frames decoded so far
        self.finished: list[torch.Tensor] = []  # low_memory: the output of a stopped call's finished frames
        self.lost: BaseException | None = None  # low_memory: why the state is lost
        attention = [i for i, (kind, _) in enumerate(self.layers) if kind == "attention"]
        self.last_foreign = attention[-1] if attention else -1  # the last layer that is the VAE's own module
        self.undo: Cache | None = None  # low_memory: cache entries a frame replaced before last_foreign ran

    def state(self) -> tuple[Cache, int] | None:
        return None if self.low_memory else (dict(self.cache), self.frames)

    def restore(self, state: tuple[Cache, int] | None) -> None:
        if state is not None:
            self.cache, self.frames = dict(state[0]), state[1]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(device=self.device, dtype=self.dtype).contiguous(memory_format=torch.channels_last_3d)
        z = F.conv3d(z, self.conv2.weight, self.conv2.bias)
        n = z.shape[2]
        if self.low_memory:
            return self._frame_by_frame(z)
        sizes = [1, n - 1] if self.frames == 0 else [n]
        out, i = [], 0
        for size in (s for s in sizes if s):
            out.append(self._chunk(z[:, :, i:i + size]))
            i += size
            self.frames += size
        return torch.cat(out, 2)

    def _frame_by_frame(self, z: torch.Tensor) -> torch.Tensor:
        if self.lost is not None:
            raise RuntimeError("the fast Wan decode failed inside a frame before, so its causal state is lost: run "
                               "the prompt again") from self.lost
        if len(self.finished) >= z.shape[2]:
            raise RuntimeError(f"a stopped decode finished {len(self.finished)} frames; this call has {z.shape[2]}: "
                               "decode the same latents again")
        for i in range(len(self.finished), z.shape[2]):
            self.check()  # before the frame: a stop leaves every conv's cache whole
            self.undo = {} if self.last_foreign >= 0 else None
            try:
                self.finished.append(self._chunk(z[:, :, i:i + 1]))
            except BaseException as e:
                if self.undo is None:
                    self.lost = e
                else:  # stopped before the frame's last foreign layer had run: put the replaced entries back
                    for key, old in self.undo.items():
                        if old is None:
                            del self.cache[key]
                        else:
                            self.cache[key] = old
                raise
            finally:
                self.undo = None
            self.frames += 1
        out, self.finished = torch.cat(self.finished, 2), []
        return out

    # ---- one chunk

    def _kernel(self, fn: Callable) -> Callable:
        return compiled(fn) if self.compile else fn

    def _chunk(self, z: torch.Tensor) -> torch.Tensor:
        """Latent frames [B, 16, n, h, w] -> their output frames."""
        out = Pending(self._apply(self.conv1, self._with_past(self.conv1, z)), self.conv1.bias)
        out = self._layers(out, 0, self.per_frame_from)
        if not self.low_memory:
            return self._head(self._layers(out, self.per_frame_from, len(self.layers)))
        frames = [Pending(*(t if t is None or t.dim() == 1 else t[:, :, f:f + 1] for t in out))
                  for f in range(out.y.shape[2])]
        return torch.cat([self._head(self._layers(f, self.per_frame_from, len(self.layers))) for f in frames], 2)

    def _layers(self, out: Pending, start: int, stop: int) -> Pending:
        """Layers start .. stop - 1 on `out`."""
        for index in range(start, stop):
            kind, layer = self.layers[index]
            if not self.low_memory:
                self.check()
            if kind == "residual":
                out = self._residual(layer, out)
            elif kind == "attention":
                out = Pending(layer(self._sum(out)).contiguous(memory_format=torch.channels_last_3d))
            else:
                out = self._upsample(layer, self._sum(out))
            if index == self.last_foreign:
                self.undo = None  # nothing later in the frame can stop it: the old entries may go
        return out

    def _head(self, out: Pending) -> torch.Tensor:
        x = self._keep(self.head, self._kernel(norm_silu)(*out, *self.head_norm, self._past(self.head, out.y)))
        return self._apply(self.head, x, self.head.bias)

    def _sum(self, p: Pending) -> torch.Tensor:
        return p.y if p.bias is None and p.residual is None else self._kernel(residual_sum)(*p)

    def _past(self, conv: Conv, x: torch.Tensor) -> torch.Tensor:
        """The conv's cached input frames; zeros before the stream's first frame."""
        past = self.cache.get(id(conv))
        return x.new_zeros(*x.shape[:2], conv.time_pad, *x.shape[3:]) if past is None else past

    def _replace(self, key: int, value: object) -> None:
        if self.undo is not None and key not in self.undo:
            self.undo[key] = self.cache.get(key)
        self.cache[key] = value

    def _keep(self, conv: Conv, full: torch.Tensor) -> torch.Tensor:
        """Remember the last `time_pad` input frames (`full` holds the past in front)."""
        self._replace(id(conv), full[:, :, full.shape[2] - conv.time_pad:].clone())
        return full

    def _with_past(self, conv: Conv, x: torch.Tensor) -> torch.Tensor:
        full = torch.cat([self._past(conv, x), x], 2).contiguous(memory_format=torch.channels_last_3d)
        return self._keep(conv, full)

    @staticmethod
    def _apply(conv: Conv, full: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The conv over `full` (its past frames already in front), spatial zero padding inside the conv."""
        return F.conv3d(full, conv.weight, bias, padding=(0, *conv.space_pad))

    def _residual(self, layer: tuple, p: Pending) -> Pending:
        (gamma1, scale1), conv1, (gamma2, scale2), conv2, shortcut = layer
        x, full = self._kernel(block_input)(*p, gamma1, scale1, self._past(conv1, p.y))
        self._keep(conv1, full)
        h = x if shortcut is None else F.conv3d(x, shortcut.weight, shortcut.bias)
        y = Pending(self._apply(conv1, full), conv1.bias)
        full2 = self._keep(conv2, self._kernel(norm_silu)(*y, gamma2, scale2, self._past(conv2, y.y)))
        return Pending(self._apply(conv2, full2), conv2.bias, h)

    def _upsample(self, layer: tuple, x: torch.Tensor) -> Pending:
        conv, time_conv = layer
        b, c, t, h, w = x.shape
        pairs, bias = 1, None
        if time_conv is not None:
            if id(time_conv) not in self.cache:  # the stream's first frame stays one frame
                self._replace(id(time_conv), x.new_zeros(b, c, time_conv.time_pad, h, w))
            else:  # [B, 2C, t, h, w]: channel k·C + c is frame 2t + k
                x = F.conv3d(self._with_past(time_conv, x), time_conv.weight)
                pairs, bias = 2, time_conv.bias
        # channels-last [B, t, h, w, (k, C)]: the bias, the frame interleave and the nearest ×2 in space
        # (nearest-exact at scale 2 reads source pixel i // 2) are one strided op:
        # out[B, t, k, 2i + a, 2j + a', C] = in[B, t, i, j, k, C] (+ bias[k, C])
        src = x.permute(0, 2, 3, 4, 1).reshape(b, t, h, w, pairs, c).permute(0, 1, 4, 2, 3, 5)
        src = src[:, :, :, :, None, :, None, :].expand(b, t, pairs, h, 2, w, 2, c)
        y = torch.empty(src.shape, dtype=x.dtype, device=x.device)
        if bias is None:
            y.copy_(src)
        else:
            torch.add(src, bias.view(1, 1, pairs, 1, 1, 1, 1, c), out=y)
        y = y.view(b * t * pairs, 2 * h, 2 * w, c).permute(0, 3, 1, 2)  # [N, C, 2h, 2w], channels-last
        y = F.conv2d(y, conv.weight, None, padding=conv.space_pad)
        return Pending(y.unflatten(0, (b, t * pairs)).transpose(1, 2), conv.bias)
