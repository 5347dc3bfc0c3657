"""`FastDecoder`: `wan_vae.Decoder`'s function from a copy of the same weights, with switchable speed-ups
(`FastOptions`): several latent frames per chunk (the first latent frame always alone: the temporal
up-samplers skip their time conv on the stream's first chunk), spatial zero padding inside the
convolutions, channels-last memory format end to end, cuDNN autotuning and, on CUDA, RMSNorm + SiLU
(+ the residual add) as compiled kernels. `FAST_LADDER` is the order `vae_runs.bench_decode` adds them in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bench.wan_vae import AttentionBlock, CausalConv3d, Decoder, ResidualBlock, RMSNorm, Stream, Upsample
from bench.wan_vae_stream import DecodeWorker
from causal.kernels import compiled, fused_unavailable as compile_unavailable  # the DiT's compiled-kernel cache


@dataclass(frozen=True)
class FastOptions:
    """The speed-ups of `FastDecoder`, each switchable (all on by default)."""

    chunk_frames: int = 3
    """Latent frames per chunk after the first frame (which is always a chunk of its own); chunk borders
    fall on multiples of this, so 3 gives the streaming blocks: [0], [1, 2], [3, 4, 5], … (1 = plain)."""
    conv_padding: bool = True
    """Spatial zero padding inside the convolution (padding=(0, p, p)) instead of an F.pad copy; only the
    causal time padding is a concatenation (with the cached frames, zeros before the stream starts)."""
    channels_last: bool = True
    """channels_last_3d (channels_last for the 2-d convs) activations and weights end to end; the
    up-sampler's bias, frame interleave and nearest ×2 become one strided op in that layout."""
    cudnn_benchmark: bool = True
    """torch.backends.cudnn.benchmark on (process-wide; set when a decode starts, never reset here)."""
    compiled: bool = True
    """Each RMSNorm + SiLU as one torch.compile'd kernel that also adds the previous conv's bias and the
    residual and writes the next conv's input after its cached frames; CUDA with Triton only, eager
    elsewhere (the same functions then run op by op)."""


# The ladder `bench_decode` times: each step adds one speed-up to the one before.
FAST_LADDER: tuple[tuple[str, str, FastOptions], ...] = (
    ("chunks", "3 latent frames per chunk (first frame alone)",
     FastOptions(conv_padding=False, channels_last=False, cudnn_benchmark=False, compiled=False)),
    ("+conv_padding", "spatial padding inside the conv",
     FastOptions(channels_last=False, cudnn_benchmark=False, compiled=False)),
    ("+channels_last", "channels_last_3d end to end, fused bias + interleave + nearest ×2",
     FastOptions(cudnn_benchmark=False, compiled=False)),
    ("+cudnn_benchmark", "cudnn.benchmark on", FastOptions(compiled=False)),
    ("+compiled (fast)", "compiled bias + residual add + RMSNorm + SiLU + causal concat", FastOptions()),
)



class Pending(NamedTuple):
    """A layer's output not yet summed: y + bias (per channel) + residual. The conv biases and the
    residual adds are folded into whatever reads the output next (a norm kernel, a copy)."""

    y: torch.Tensor
    bias: torch.Tensor | None = None
    residual: torch.Tensor | None = None


def residual_sum(y: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None) -> torch.Tensor:
    """(y + bias) + residual, in the reference's order (the conv adds its bias, then the block its shortcut)."""
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1, 1)
    if residual is not None:
        y = y + residual
    return y


def _conv_input(x: torch.Tensor, gamma: torch.Tensor, scale: float, past: torch.Tensor) -> torch.Tensor:
    """[past frames, silu(RMSNorm(x))] along time, RMSNorm with the reference arithmetic (F.normalize
    over channels · sqrtC · gamma)."""
    out = torch.cat([past, F.silu(F.normalize(x, dim=1) * scale * gamma)], 2)
    if x.is_contiguous(memory_format=torch.channels_last_3d):
        # as eager lays it out; compiled, Inductor may otherwise pick another layout for the concatenation,
        # which the conv would then copy
        out = out.contiguous(memory_format=torch.channels_last_3d)
    return out


def norm_silu(y: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None, gamma: torch.Tensor,
              scale: float, past: torch.Tensor) -> torch.Tensor:
    """A causal conv's input: [past frames, silu(RMSNorm(x))] along time, x = residual_sum(y, bias, residual)."""
    return _conv_input(residual_sum(y, bias, residual), gamma, scale, past)


def block_input(y: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None, gamma: torch.Tensor,
                scale: float, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, norm_silu(...)): a residual block's input x (its shortcut needs it) and its first conv's input."""
    x = residual_sum(y, bias, residual)
    return x, _conv_input(x, gamma, scale, past)


def _kernel(fn: Callable, on: bool) -> Callable:
    return compiled(fn) if on else fn


def chunk_plan(num_frames: int, chunk_frames: int, started: bool = False) -> list[int]:
    """Chunk lengths for `num_frames` latent frames: the stream's first frame alone (unless `started`),
    then chunks ending on multiples of `chunk_frames` (counted from where this call starts)."""
    sizes: list[int] = []
    i = 0
    if not started and num_frames:
        sizes.append(1)
        i = 1
    while i < num_frames:
        end = min((i // chunk_frames + 1) * chunk_frames, num_frames)
        sizes.append(end - i)
        i = end
    return sizes


@dataclass
class DecodeStream:
    """One video's decoding state: every causal conv's cached input frames, latent frames consumed."""

    cache: Stream = field(default_factory=dict)
    latent_frames: int = 0


class FastDecoder(nn.Module):
    """`Decoder`'s function on its own copy of the decoder's weights (the same values), with `options`.

    Every convolution runs without its bias; the bias (and a residual block's shortcut) is added by
    whatever reads the output next (`Pending`): the norm kernel, the up-sampler's copy or `residual_sum`,
    in the reference's order, so the arithmetic stays the reference's, op for op, when nothing is
    compiled. The first latent frame of a stream is always decoded as a chunk of its own."""

    def __init__(self, decoder: Decoder, options: FastOptions = FastOptions()) -> None:
        super().__init__()
        self.options = options
        self.net = copy.deepcopy(decoder)
        if options.channels_last:
            for m in self.net.modules():
                if isinstance(m, nn.Conv3d):
                    m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)
                elif isinstance(m, nn.Conv2d):
                    m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
        self._compile = False
        self._workers: dict[torch.device, DecodeWorker] = {}

    def worker(self, device: torch.device) -> DecodeWorker:
        """This decoder's long-lived worker thread for `device` (made on first use)."""
        if device not in self._workers:
            self._workers[device] = DecodeWorker(device)
        return self._workers[device]

    # ---- streaming API

    def start(self) -> DecodeStream:
        """A new video: set the process-wide flags this decoder wants and pick eager or compiled kernels."""
        device = self.net.mean.device
        if self.options.cudnn_benchmark and device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._compile = self.options.compiled and compile_unavailable(device) is None
        return DecodeStream()

    @torch.no_grad()
    def push(self, latents: torch.Tensor, stream: DecodeStream,
             chunk_done: Callable[[int], None] | None = None) -> list[torch.Tensor]:
        """Decode the next latent frames [B, 16, n, h, w] of `stream` (model space) -> video chunks in
        [-1, 1]; the stream's first frame is a chunk of its own, the rest as `chunk_plan` splits them.
        `chunk_done(i)` is called after each chunk with the stream index of its last latent frame."""
        sizes = chunk_plan(latents.shape[2], self.options.chunk_frames, started=stream.latent_frames > 0)
        return self.decode_chunks(latents, sizes, stream, chunk_done)

    @torch.no_grad()
    def decode_chunks(self, latents: torch.Tensor, sizes: list[int], stream: DecodeStream,
                      chunk_done: Callable[[int], None] | None = None) -> list[torch.Tensor]:
        """Decode `latents` in chunks of the given lengths, as they come. The result equals `Decoder`'s
        only if the stream's first chunk holds exactly one frame (see `push`)."""
        if sum(sizes) != latents.shape[2]:
            raise ValueError(f"chunk lengths {sizes} do not add up to {latents.shape[2]} latent frames")
        net = self.net
        z = latents * net.std.view(1, -1, 1, 1, 1) + net.mean.view(1, -1, 1, 1, 1)
        if self.options.channels_last:
            z = z.contiguous(memory_format=torch.channels_last_3d)
        z = F.conv3d(z, net.conv2.weight, net.conv2.bias)  # 1×1×1
        out = []
        i = 0
        for n in sizes:
            out.append(self.decode_chunk(z[:, :, i:i + n], stream.cache))
            i += n
            stream.latent_frames += n
            if chunk_done is not None:
                chunk_done(stream.latent_frames - 1)
        return out

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_done: Callable[[int], None] | None = None) -> torch.Tensor:
        """Whole video, as `Decoder.decode`: latents [B, 16, F, h, w] -> video [B, 3, 1 + 4(F - 1), 8h, 8w]."""
        return torch.cat(self.push(latents, self.start(), chunk_done), 2)

    # ---- one chunk

    def decode_chunk(self, z: torch.Tensor, cache: Stream) -> torch.Tensor:
        """One chunk (after conv2) -> its video frames, clamped to [-1, 1]."""
        net = self.net
        out = Pending(self._conv(net.conv1, self._with_past(net.conv1, z, cache)), net.conv1.bias)
        for layer in (*net.middle, *net.ups):
            if isinstance(layer, ResidualBlock):
                out = self._residual(layer, out, cache)
            elif isinstance(layer, AttentionBlock):
                out = Pending(layer(self._sum(out), cache))
            else:
                out = self._upsample(layer, self._sum(out), cache)
        x = self._norm_silu(net.head, net.head_norm, out, cache)
        return self._conv(net.head, x, net.head.bias).clamp_(-1, 1)

    def _sum(self, p: Pending) -> torch.Tensor:
        if p.bias is None and p.residual is None:
            return p.y
        return _kernel(residual_sum, self._compile)(*p)

    def _past(self, conv: CausalConv3d, x: torch.Tensor, cache: Stream) -> torch.Tensor:
        """The conv's cached input frames; zeros before the stream's first frame."""
        past = cache.get(conv)
        return torch.cat([torch.zeros_like(x[:, :, :1])] * conv.time_pad, 2) if past is None else past

    def _keep(self, conv: CausalConv3d, full: torch.Tensor, cache: Stream) -> torch.Tensor:
        cache[conv] = full[:, :, -conv.time_pad:].clone()
        return full

    def _with_past(self, conv: CausalConv3d, x: torch.Tensor, cache: Stream) -> torch.Tensor:
        return self._keep(conv, torch.cat([self._past(conv, x, cache), x], 2), cache)

    def _norm_silu(self, conv: CausalConv3d, norm: RMSNorm, p: Pending, cache: Stream) -> torch.Tensor:
        fn = _kernel(norm_silu, self._compile)
        return self._keep(conv, fn(*p, norm.gamma, norm.scale, self._past(conv, p.y, cache)), cache)

    def _conv(self, conv: CausalConv3d, full: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """conv over `full` (its past frames already in front), spatial zero padding inside the conv or
        (conv_padding off) by F.pad as the reference does."""
        pw, _, ph, _ = conv.space_pad
        if self.options.conv_padding:
            return F.conv3d(full, conv.weight, bias, padding=(0, ph, pw))
        return F.conv3d(F.pad(full, conv.space_pad), conv.weight, bias)

    def _residual(self, block: ResidualBlock, p: Pending, cache: Stream) -> Pending:
        if p.bias is None and p.residual is None:
            x, full = p.y, self._norm_silu(block.conv1, block.norm1, p, cache)
        else:
            fn = _kernel(block_input, self._compile)
            x, full = fn(*p, block.norm1.gamma, block.norm1.scale, self._past(block.conv1, p.y, cache))
            self._keep(block.conv1, full, cache)
        h = x if block.shortcut is None else F.conv3d(x, block.shortcut.weight, block.shortcut.bias)
        y = Pending(self._conv(block.conv1, full), block.conv1.bias)
        y = self._conv(block.conv2, self._norm_silu(block.conv2, block.norm2, y, cache))
        return Pending(y, block.conv2.bias, h)

    def _upsample(self, up: Upsample, x: torch.Tensor, cache: Stream) -> Pending:
        b, c, t, h, w = x.shape
        pairs, bias = 1, None
        if up.time_conv is not None:
            if up not in cache:  # first chunk: the first frame stays one frame
                cache[up] = True
            else:  # [B, 2C, t, h, w]: channel k·C + c is frame 2t + k
                x = F.conv3d(self._with_past(up.time_conv, x, cache), up.time_conv.weight)
                pairs, bias = 2, up.time_conv.bias
        if self.options.channels_last:
            # In the channels-last layout [B, t, h, w, (k, C)] the bias, the frame interleave and the
            # nearest ×2 in space (nearest-exact at scale 2 reads source pixel i // 2) are one strided op:
            # out[B, t, k, 2i + a, 2j + a', C] = in[B, t, i, j, k, C] (+ bias[k, C]).
            src = x.permute(0, 2, 3, 4, 1).reshape(b, t, h, w, pairs, c).permute(0, 1, 4, 2, 3, 5)
            src = src[:, :, :, :, None, :, None, :].expand(b, t, pairs, h, 2, w, 2, c)
            y = torch.empty(src.shape, dtype=x.dtype, device=x.device)
            if bias is None:
                y.copy_(src)
            else:
                torch.add(src, bias.view(1, 1, pairs, 1, 1, 1, 1, c), out=y)
            y = y.view(b * t * pairs, 2 * h, 2 * w, c).permute(0, 3, 1, 2)  # [N, C, 2h, 2w], channels_last
        else:  # the reference's reshapes and interpolation
            if bias is not None:
                x = x + bias.view(1, -1, 1, 1, 1)
            if pairs == 2:
                x = x.view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
            y = x.transpose(1, 2).reshape(b * t * pairs, c, h, w)
            y = F.interpolate(y.float(), scale_factor=2.0, mode="nearest-exact").type_as(y)
        y = F.conv2d(y, up.conv.weight, None, padding=up.conv.padding)
        return Pending(y.unflatten(0, (b, t * pairs)).transpose(1, 2), up.conv.bias)
