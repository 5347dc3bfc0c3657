"""A minimal Wan2.1 VAE *decoder* for timing (random weights): the same layers, shapes and streaming
order as the Wan2.1 VAE (design/causal_algorithm.md §7.2), written for this benchmark.

Layout (base width 96, multipliers 1, 2, 4, 4, two residual blocks per level + 1 on the way up, the
first two up-steps also double time): 16 latent channels -> causal 3×3×3 conv to 384 -> middle (residual,
single-head spatial attention, residual) -> 4 levels of residual blocks with nearest ×2 up-sampling
(+ a causal 3×1×1 conv that doubles the frame count on the first two) -> RMS norm, SiLU, 3×3×3 conv to
RGB. `Decoder` (the reference) decodes latent frames one at a time; every causal 3-tap convolution keeps
the last two input frames of the stream (the reference's `feat_cache`), so 21 latent frames give
1 + 4·20 = 81 frames.

`FastDecoder` computes the same function from a copy of the same weights, with switchable speed-ups
(`FastOptions`): several latent frames per chunk (the first latent frame always alone: the temporal
up-samplers skip their time conv on the stream's first chunk), spatial zero padding inside the
convolutions, channels-last memory format end to end, cuDNN autotuning and, on CUDA, RMSNorm + SiLU
(+ the residual add) as compiled kernels. `ThreadedDecode` runs it on a worker thread with its own CUDA
stream, fed block by block while the sampler goes on; `OverlappedDecode` is the earlier same-thread
second-stream variant of the plain decoder.

Only the compute matters here (weights are random); the output is checked for shape and finiteness.
"""

from __future__ import annotations

import contextlib
import copy
import math
import queue
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from causal.kernels import compiled, fused_unavailable as compile_unavailable  # the DiT's compiled-kernel cache

Stream = dict  # module -> cached input frames (or a marker), one per decode


class CausalConv3d(nn.Conv3d):
    """Conv3d padded causally in time (2·p frames in front, none behind), symmetrically in space."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int, int], padding: int | tuple = 0) -> None:
        super().__init__(cin, cout, kernel)
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Without a stream: zeros before the first frame (the 1×1×1 convs; see `causal_conv`)."""
        return super().forward(F.pad(x, (*self.space_pad, self.time_pad, 0)))


class RMSNorm(nn.Module):
    """F.normalize over channels · sqrtC · gamma (Wan's RMS_norm, no bias)."""

    def __init__(self, dim: int, images: bool) -> None:
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cin, images=False)
        self.conv1 = CausalConv3d(cin, cout, 3, padding=1)
        self.norm2 = RMSNorm(cout, images=False)
        self.conv2 = CausalConv3d(cout, cout, 3, padding=1)
        self.shortcut = CausalConv3d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, stream: Stream) -> torch.Tensor:
        h = x if self.shortcut is None else self.shortcut(x)
        y = causal_conv(self.conv1, F.silu(self.norm1(x)), stream)
        y = causal_conv(self.conv2, F.silu(self.norm2(y)), stream)
        return y + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame."""

    def __init__(self, dim: int, operations=nn) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = operations.Conv2d(dim, dim * 3, 1)
        self.proj = operations.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, stream: Stream) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * t, c, h, w)
        q, k, v = self.to_qkv(self.norm(y)).reshape(b * t, 1, 3 * c, h * w).transpose(2, 3).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
        y = self.proj(y.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2) + x


class Upsample(nn.Module):
    """Nearest ×2 in space and a 3×3 conv halving the channels; with `temporal`, a causal 3×1×1 conv to
    2·C channels first turns each frame into two (skipped for the stream's first chunk)."""

    def __init__(self, dim: int, temporal: bool, operations=nn) -> None:
        super().__init__()
        self.conv = operations.Conv2d(dim, dim // 2, 3, padding=1)
        self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0)) if temporal else None

    def forward(self, x: torch.Tensor, stream: Stream) -> torch.Tensor:
        b, c, t, h, w = x.shape
        if self.time_conv is not None:
            if self not in stream:  # first chunk: the first frame stays one frame
                stream[self] = True
            else:
                x = causal_conv(self.time_conv, x, stream)
                x = x.view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
                t = 2 * t
        y = x.transpose(1, 2).reshape(b * t, c, h, w)
        y = F.interpolate(y.float(), scale_factor=2.0, mode="nearest-exact").type_as(y)
        y = self.conv(y)
        return y.reshape(b, t, c // 2, 2 * h, 2 * w).transpose(1, 2)


def causal_conv(conv: CausalConv3d, x: torch.Tensor, stream: Stream) -> torch.Tensor:
    """Apply a causal conv to one chunk of a stream: prepend the conv's last `time_pad` input frames
    (zeros before the stream starts) and remember this chunk's last ones."""
    past = stream.get(conv)
    full = x if past is None else torch.cat([past, x], 2)
    stream[conv] = full[:, :, -conv.time_pad:].clone()
    full = F.pad(full, (*conv.space_pad, conv.time_pad - (full.shape[2] - x.shape[2]), 0))
    return nn.Conv3d.forward(conv, full)


class Decoder(nn.Module):
    def __init__(self, dim: int = 96, z_dim: int = 16, mult: tuple[int, ...] = (1, 2, 4, 4),
                 res_blocks: int = 2, temporal_up: tuple[bool, ...] = (True, True, False)) -> None:
        super().__init__()
        dims = [dim * u for u in (mult[-1], *mult[::-1])]
        self.mean = nn.Parameter(torch.randn(z_dim) * 0.5)
        self.std = nn.Parameter(torch.rand(z_dim) + 0.5)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = nn.ModuleList([ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]),
                                     ResidualBlock(dims[0], dims[0])])
        ups: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                cin //= 2  # the previous up-sampling halved the channels
            for _ in range(res_blocks + 1):
                ups.append(ResidualBlock(cin, cout))
                cin = cout
            if i < len(mult) - 1:
                ups.append(Upsample(cout, temporal=temporal_up[i]))
        self.ups = nn.ModuleList(ups)
        self.head_norm = RMSNorm(dims[-1], images=False)
        self.head = CausalConv3d(dims[-1], 3, 3, padding=1)

    def decode_chunk(self, z: torch.Tensor, stream: Stream) -> torch.Tensor:
        x = causal_conv(self.conv1, z, stream)
        for layer in self.middle:
            x = layer(x, stream)
        for layer in self.ups:
            x = layer(x, stream)
        return causal_conv(self.head, F.silu(self.head_norm(x)), stream)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_done: Callable[[int], None] | None = None) -> torch.Tensor:
        """latents [B, 16, F, h, w] (model space) -> video [B, 3, 1 + 4(F - 1), 8h, 8w] in [-1, 1]."""
        z = latents * self.std.view(1, -1, 1, 1, 1) + self.mean.view(1, -1, 1, 1, 1)
        x = self.conv2(z)
        stream: Stream = {}
        out = []
        for i in range(x.shape[2]):
            out.append(self.decode_chunk(x[:, :, i:i + 1], stream))
            if chunk_done is not None:
                chunk_done(i)
        return torch.cat(out, 2).clamp_(-1, 1)


# --------------------------------------------------------------------------------------------------
# fast decoder: the same function, faster


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


# --------------------------------------------------------------------------------------------------
# decoding while the sampler goes on


class DecodeWorker:
    """A long-lived thread that runs decode jobs in order, on its own CUDA stream (on CUDA).

    Long-lived because cuDNN keeps its handles and execution plans (the cudnn.benchmark choices) per
    thread: a new thread per video would plan every convolution again. One per decoder and device
    (`FastDecoder.worker`); warm it up through a `ThreadedDecode` so that its plans and compiled kernels
    exist before it runs next to the sampler."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"vae-decode-{device}", daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job()` on the worker thread, after the jobs before it (it must catch its own errors)."""
        self.jobs.put(job)

    def _run(self) -> None:
        torch.set_grad_enabled(False)  # grad mode, current device and current stream are per thread
        with contextlib.ExitStack() as stack:
            if self.stream is not None:
                torch.cuda.set_device(self.device)
                stack.enter_context(torch.cuda.stream(self.stream))
            while True:
                job = self.jobs.get()
                job()
                del job


class ThreadedDecode:
    """Decode one video's latent blocks as the sampler finishes them, on the decoder's worker thread.

    `push(latents)` (from the sampler's thread, e.g. its progress callback) records an event on the
    caller's current stream and queues the block; the worker makes its stream wait for that event,
    decodes the block (`FastDecoder.push`) and records `done` (one timing mark per block). `push` then
    lets the caller run at most `max_ahead` blocks ahead of the GPU, waiting with the GIL released:
    otherwise the sampler's thread queues its whole clip, blocks in a kernel launch once CUDA's launch
    queue is full (holding the GIL) and the worker cannot launch anything until sampling is done.
    `finish()` waits for the worker and returns the video [B, 3, frames, H, W]; an exception raised on
    the worker is raised again there. With `threaded=False` (the default off CUDA) `push` decodes at once.
    """

    def __init__(self, decoder: FastDecoder, device: torch.device | str, threaded: bool | None = None,
                 max_ahead: int | None = 1) -> None:
        self.decoder = decoder
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.worker = decoder.worker(self.device) if (self.cuda if threaded is None else threaded) else None
        self.max_ahead = max_ahead
        self.state = decoder.start()
        self.chunks: list[torch.Tensor] = []
        self.done: list[Any] = []  # per block: a timing CUDA event on the decode stream, or perf_counter()
        self.video: torch.Tensor | None = None
        self.error: BaseException | None = None
        self._ahead: list[torch.cuda.Event] = []
        self._finished = threading.Event()

    def push(self, latents: torch.Tensor) -> None:
        if self.worker is None:
            self._decode(latents)
            return
        ready = None
        if self.cuda:
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(self.device))
            # freed by the sampler while the decode stream may still read it: the allocator waits for it
            latents.record_stream(self.worker.stream)
        self.worker.submit(lambda: self._job(latents, ready))
        if ready is not None and self.max_ahead is not None:
            self._ahead.append(ready)
            while len(self._ahead) > self.max_ahead:
                self._ahead.pop(0).synchronize()  # releases the GIL while it waits

    def finish(self) -> torch.Tensor:
        if self.worker is not None:
            self.worker.submit(self._concat)
            self._finished.wait()
        elif self.error is None:
            self._concat()
        if self.error is not None:
            raise self.error
        if self.video is None:
            raise RuntimeError("nothing was decoded")
        if self.worker is not None and self.cuda:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.worker.stream)
            self.video.record_stream(current)  # made on the decode stream, used and freed on this one
        return self.video

    def _decode(self, latents: torch.Tensor) -> None:
        self.chunks += self.decoder.push(latents, self.state)
        if self.cuda:
            mark = torch.cuda.Event(enable_timing=True)
            mark.record()
        else:
            mark = time.perf_counter()
        self.done.append(mark)

    def _job(self, latents: torch.Tensor, ready: torch.cuda.Event | None) -> None:
        if self.error is not None:
            return  # finish() raises the first error
        try:
            if ready is not None:
                torch.cuda.current_stream(self.device).wait_event(ready)
            self._decode(latents)
        except BaseException as e:  # noqa: BLE001 - handed to finish()
            self.error = e

    def _concat(self) -> None:
        try:
            if self.error is None and self.chunks:
                self.video = torch.cat(self.chunks, 2)
                self.chunks.clear()
        except BaseException as e:  # noqa: BLE001
            self.error = e
        finally:
            self._finished.set()


class OverlappedDecode:
    """The plain decoder on a second CUDA stream, launched from the sampler's own thread (`push` each
    finished block's clean latents, `finish` for the whole video): the first attempt at overlapping."""

    def __init__(self, decoder: Decoder, device: torch.device) -> None:
        self.decoder = decoder
        self.cuda = device.type == "cuda"
        self.side = torch.cuda.Stream(device) if self.cuda else None
        self.state: Stream = {}
        self.chunks: list[torch.Tensor] = []
        self.done: list[Any] = []  # per block: a timing CUDA event on the side stream, or perf_counter()

    @torch.no_grad()
    def _decode(self, latents: torch.Tensor) -> None:
        d = self.decoder
        x = d.conv2(latents * d.std.view(1, -1, 1, 1, 1) + d.mean.view(1, -1, 1, 1, 1))
        for i in range(x.shape[2]):
            self.chunks.append(d.decode_chunk(x[:, :, i:i + 1], self.state))

    def push(self, latents: torch.Tensor) -> None:
        if not self.cuda:
            self._decode(latents)
            self.done.append(time.perf_counter())
            return
        self.side.wait_stream(torch.cuda.current_stream())  # the block is written on the sampler's stream
        latents.record_stream(self.side)
        with torch.cuda.stream(self.side):
            self._decode(latents)
            mark = torch.cuda.Event(enable_timing=True)
            mark.record()
        self.done.append(mark)

    def finish(self) -> torch.Tensor:
        if self.cuda:
            torch.cuda.current_stream().wait_stream(self.side)
        return torch.cat(self.chunks, 2).clamp_(-1, 1)


# --------------------------------------------------------------------------------------------------
# timing


def make_decoder(device: torch.device, tiny: bool = False, seed: int = 0) -> Decoder:
    """The benchmark's decoder: random weights drawn with `seed`, bf16, inference only."""
    torch.manual_seed(seed)
    return Decoder(dim=8 if tiny else 96).to(device=device, dtype=torch.bfloat16).eval().requires_grad_(False)


def video_rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64, frame by frame (no float64 copy of a whole video)."""
    num = den = 0.0
    for i in range(b.shape[2]):
        x, y = a[:, :, i].double(), b[:, :, i].double()
        num += float((x - y).pow(2).sum())
        den += float(y.pow(2).sum())
    return math.sqrt(num / den) if den else float("nan")


@contextlib.contextmanager
def kept_cudnn_benchmark() -> Iterator[None]:
    """Restore torch.backends.cudnn.benchmark afterwards (a fast decoder turns it on)."""
    before = torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _time_decode(decode: Callable[[torch.Tensor, Callable[[int], None]], torch.Tensor], latents: torch.Tensor,
                 device: torch.device, repeats: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Time `decode(latents, chunk_done)` (warm-up + `repeats`, median): whole video, first latent frame,
    first 3-latent block and the later blocks (marks after latent frames 0, 2, 5, 8, …)."""
    cuda = device.type == "cuda"

    def mark() -> Any:
        if cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def seconds(a: Any, b: Any) -> float:
        return a.elapsed_time(b) / 1000 if cuda else b - a

    def once() -> tuple[float, list[float], torch.Tensor, float | None]:
        marks: list[Any] = []

        def chunk_done(i: int) -> None:
            if i == 0 or i % 3 == 2:
                marks.append(mark())

        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        marks.append(mark())
        video = decode(latents, chunk_done)
        if cuda:
            torch.cuda.synchronize(device)
        total = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(device) / 1024 ** 3 if cuda else None
        return total, [seconds(marks[0], m) for m in marks[1:]], video, peak

    once()  # warm-up (cuDNN plans, compilation)
    runs = [once() for _ in range(repeats)]
    total = statistics.median(r[0] for r in runs)
    ends = [statistics.median(r[1][k] for r in runs) for k in range(len(runs[0][1]))]
    video = runs[0][2]
    frames = video.shape[2]
    blocks = [b - a for a, b in zip(ends[1:], ends[2:])]  # 3 latent frames -> 12 video frames each
    return {
        "decode_s": round(total, 4),
        "frames": frames,
        "ms_per_frame": round(1000 * total / frames, 2),
        "first_chunk_s": round(ends[0], 4),
        "first_block_s": round(ends[1], 4) if len(ends) > 1 else None,
        "block_of_3_latents_s": round(statistics.median(blocks), 4) if blocks else None,
        "block_s": [round(b, 4) for b in blocks],
        "peak_vram_gib": round(max(r[3] for r in runs), 2) if cuda else None,
        "finite": bool(torch.isfinite(video).all()),
        "runs_s": [round(r[0], 3) for r in runs],
    }, video


def bench_decode(device: torch.device, num_frames: int, height: int, width: int, log: Callable[[str], None],
                 tiny: bool = False, repeats: int = 2,
                 ladder: tuple[tuple[str, str, FastOptions], ...] = FAST_LADDER) -> dict[str, Any]:
    """Time decoding `num_frames` random latent frames at height×width (bf16) with the plain decoder
    (top-level keys) and each step of `ladder` (`fast`: its numbers and its video's relative L2 against
    the plain decoder's); median of `repeats`."""
    dec = make_decoder(device, tiny)
    params = sum(p.numel() for p in dec.parameters())
    g = torch.Generator(device).manual_seed(3)
    latents = torch.randn(1, 16, num_frames, height // 8, width // 8, generator=g, device=device).to(torch.bfloat16)
    expected = (1, 3, 1 + 4 * (num_frames - 1), height, width)
    result, plain = _time_decode(dec.decode, latents, device, repeats)
    if tuple(plain.shape) != expected:
        raise RuntimeError(f"decoder output {tuple(plain.shape)}, expected {expected}")
    result = {"parameters_m": round(params / 1e6, 1), **result, "fast": []}
    log(f"  VAE decode [plain]: {result}")
    compiled_note = compile_unavailable(device)
    with kept_cudnn_benchmark():
        for name, what, options in ladder:
            fast = FastDecoder(dec, options)
            row, video = _time_decode(fast.decode, latents, device, repeats)
            row = {"variant": name, "what": what, **{k: getattr(options, k) for k in (
                "chunk_frames", "conv_padding", "channels_last", "cudnn_benchmark", "compiled")}, **row}
            if options.compiled and compiled_note:
                row["compiled"] = False
                row["note"] = f"eager: {compiled_note}"
            row["rel_l2_vs_plain"] = video_rel_l2(video, plain) if video.shape == plain.shape else None
            row["speed_up"] = round(result["decode_s"] / row["decode_s"], 2) if row["decode_s"] else None
            log(f"  VAE decode [{name}]: {row}")
            result["fast"].append(row)
            del fast, video
    return result
