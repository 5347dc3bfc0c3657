"""Sequence parallelism over the GPUs of one host (DeepSpeed-Ulysses's split) on `torch.distributed`.

N processes (ranks), one per GPU (NCCL) or CPU worker (gloo), each hold all the weights and run the sampler's loop
identically: every rank calls `generate` with the same model, prompts, video, schedule, policy and seed and
`Compute(parallel=SequenceParallel.current())`. Inside a forward each rank computes only its share:

* tokens: rank r takes the r-th contiguous N-th of every latent frame's S tokens (S must be divisible by N), so
  the per-frame modulations (`kernels.modulate`, `gated_add`) still see whole frames, [frames, S / N] tokens each.
  The patch embedding runs on the whole chunk on every rank (it is cheap) and each rank keeps its tokens and their
  RoPE phases; the linear layers, norms, cross-attention (all heads, the prompt's K/V on every rank) and FFN run on
  the rank's tokens only;
* self-attention: q, k, v are projected, RMS-normed (over the full width, hence before any exchange) and rotated on
  the rank's tokens, then one all-to-all turns [B, L / N, H, d] into [B, L, H / N, d]: every token, in the video's
  order, for the rank's H / N heads. The KV cache of a rank holds those heads for every cached token (H / N of
  the single-process cache), attention runs locally, and the inverse all-to-all gives each rank its tokens' output
  of every head back for the output projection;
* the head's output is all-gathered, so every rank has the whole chunk's prediction and the samplers' steps stay
  identical everywhere. The noise is drawn on every rank and rank 0's draw is broadcast.

Every cache policy works unchanged: the cache's token axis is the video's (eviction, sinks, protected rows,
re-caches, keys rotated when read by the positions of the slots), only its head axis is split; the FP8 cache
quantizes each (token, head) row alone, so a shard quantizes exactly as the single cache's heads do. Per layer each
rank sends q, k, v of its tokens (3 L D / N elements) in one all-to-all and attention's output (L D / N) in another;
(N - 1) / N of it leaves the GPU. The results equal the single process's within bf16 rounding (the matrix products
and attention run on other shapes; on the CPU they are the same bit for bit). CUDA graphs (`causal.graphs`) capture
a rank's share of the forward with its exchanges. Not split: live prompts (each rank would see a new prompt at its
own block; refused).

A collective that fails (gloo: at once when a peer's sockets close, else after the process group's timeout) raises
`ParallelError`; NCCL's watchdog ends a process whose collective waits past the timeout. `run_local` starts N local
processes and a process group among them (the tests, `bench/parallel.py`); under `torchrun`, `init_from_environment`
joins the group it set up.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import multiprocessing
import os
import queue
import socket
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.distributed as dist

from .config import WanConfig
from .kernels import EAGER, Glue, rms_norm
from .kv_cache import KVCache

if TYPE_CHECKING:
    from .model import SelfAttention

DEFAULT_TIMEOUT_S = 300.0
"""How long a collective waits for the other ranks before it fails (a rank that died or hangs)."""
GRACE_S = 3.0
"""After a local rank failed, how long past the timeout the others have to fail and say so before they are ended."""


class ParallelError(RuntimeError):
    """A collective failed (another rank stopped, failed or timed out), or a local worker did."""


@dataclass(frozen=True)
class SequenceParallel:
    """This process's place in a sequence-parallel group: rank `rank` of `world` in `group` (None: the default
    process group)."""

    group: Any
    rank: int
    world: int

    @classmethod
    def current(cls, group: Any = None) -> SequenceParallel:
        """This process in `group` (default: the process group this process has joined)."""
        if not dist.is_initialized():
            raise ParallelError("no process group: call torch.distributed.init_process_group (or "
                                "causal.parallel.init_from_environment under torchrun) first")
        return cls(group, dist.get_rank(group), dist.get_world_size(group))

    # -- checks -----------------------------------------------------------------------------------

    def check(self, config: WanConfig, tokens_per_frame: int, device: torch.device) -> None:
        """Raise ValueError where this model, frame size or device cannot be split over the group."""
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is not in a group of {self.world}")
        if config.num_heads % self.world:
            divisors = [n for n in range(2, config.num_heads + 1) if config.num_heads % n == 0 and n <= 8]
            raise ValueError(f"sequence parallel splits the {config.num_heads} attention heads over the ranks: "
                             f"{self.world} ranks do not divide them (use {', '.join(map(str, divisors))} ranks)")
        if tokens_per_frame % self.world:
            raise ValueError(f"sequence parallel gives every rank an equal share of each latent frame's tokens: "
                             f"{tokens_per_frame} tokens per frame do not split over {self.world} ranks (choose a "
                             f"video size whose tokens per frame, (height / 16) (width / 16), divide by {self.world})")
        if not dist.is_initialized():
            raise ParallelError("no process group: call torch.distributed.init_process_group first")
        backend = str(dist.get_backend(self.group))
        needed = "nccl" if device.type == "cuda" else "gloo"
        if needed not in backend:
            raise ValueError(f"the {backend} process group cannot exchange {device.type} tensors: use {needed} for "
                             f"sequence parallel on {device.type}")

    def local_heads(self, config: WanConfig) -> int:
        """Attention heads (and KV-cache heads) per rank."""
        return config.num_heads // self.world

    # -- the collectives --------------------------------------------------------------------------

    def _collective(self, what: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except RuntimeError as e:  # torch.distributed's DistError and the backends' errors are RuntimeErrors
            said = str(e).encode("cp1252", "replace").decode("cp1252").strip()  # (gloo's end in an emoji)
            raise ParallelError(f"sequence parallel, rank {self.rank} of {self.world}: {what} failed; another rank "
                                f"has stopped, failed or is slower than the process group's timeout ({said})") from e

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's `t` on every rank (a new tensor; `t` itself is not written)."""
        out = t.contiguous().clone()
        src = 0 if self.group is None else dist.get_global_rank(self.group, 0)
        self._collective("the broadcast of the noise", lambda: dist.broadcast(out, src, group=self.group))
        return out

    def all_to_all(self, send: torch.Tensor, what: str) -> torch.Tensor:
        """send [N, ...]: part i goes to rank i; returns [N, ...] whose part i came from rank i."""
        received = torch.empty_like(send)
        self._collective(what, lambda: dist.all_to_all_single(received, send, group=self.group))
        return received

    def all_gather(self, t: torch.Tensor, dim: int, what: str) -> torch.Tensor:
        """Every rank's `t`, concatenated along `dim` in rank order."""
        parts = [torch.empty_like(t) for _ in range(self.world)]
        self._collective(what, lambda: dist.all_gather(parts, t.contiguous(), group=self.group))
        return torch.cat(parts, dim=dim)

    def shard(self, frames: int) -> Shard:
        return Shard(self, frames)


@dataclass(frozen=True)
class Shard:
    """One forward's split: this rank's share of each of `frames` latent frames' tokens."""

    parallel: SequenceParallel
    frames: int

    def local(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's tokens of t, whose `dim` holds every frame's tokens frame after frame (contiguous)."""
        p = self.parallel
        return t.unflatten(dim, (self.frames, p.world, -1)).select(dim + 1, p.rank).flatten(dim, dim + 1).contiguous()

    def gather(self, out: torch.Tensor) -> torch.Tensor:
        """out [B, frames, S / N, C] of every rank -> [B, frames, S, C] (the head's output)."""
        return self.parallel.all_gather(out, 2, "the all-gather of the head's output")

    def to_all_tokens(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v [B, L / N, H, d] (this rank's tokens, every head) -> [3, B, L, H / N, d]: every token in the
        video's order, this rank's heads."""
        p, (b, _, heads, d) = self.parallel, q.shape
        send = torch.stack([q, k, v]).unflatten(3, (p.world, heads // p.world)).permute(3, 0, 1, 2, 4, 5)
        received = p.all_to_all(send.contiguous(), "the all-to-all before self-attention")
        # part i: rank i's tokens [frames, S / N] of every frame; interleaved back frame by frame
        received = received.unflatten(3, (self.frames, -1)).permute(1, 2, 3, 0, 4, 5, 6)
        return received.reshape(3, b, -1, heads // p.world, d)

    def to_all_heads(self, out: torch.Tensor) -> torch.Tensor:
        """Attention's output [B, L, H / N, d] (every token, this rank's heads) -> [B, L / N, H d]: this rank's
        tokens, every head (heads in rank order)."""
        p, (b, _, heads, d) = self.parallel, out.shape
        send = out.unflatten(1, (self.frames, p.world, -1)).permute(2, 0, 1, 3, 4, 5)
        received = p.all_to_all(send.contiguous(), "the all-to-all after self-attention")
        return received.permute(1, 2, 3, 0, 4, 5).reshape(b, -1, p.world * heads * d)

    def self_attention(self, attn: SelfAttention, h: torch.Tensor, phases: torch.Tensor, cache: KVCache | None,
                       layer: int, cache_start: int, mask: torch.Tensor | None, glue: Glue = EAGER) -> torch.Tensor:
        """`SelfAttention.forward` on this rank's tokens h [B, L / N, D] (and their phases): the same arithmetic,
        the cache holding this rank's heads of every token. Keys are stored rotated, or RMS-normed only where the
        cache rotates them when read (`key_phases`); a quantized cache quantizes them in its `store`."""
        heads, norm_q, norm_k = attn.num_heads, attn.norm_q, attn.norm_k
        q = glue.norm_rope(attn.q(h), norm_q.weight_for(h), norm_q.eps, phases, heads)
        k, v = attn.k(h), attn.v(h).unflatten(-1, (heads, -1))
        key_phases = getattr(cache, "key_phases", None)
        if key_phases is None:
            k = glue.norm_rope(k, norm_k.weight_for(h), norm_k.eps, phases, heads)
        else:
            k = glue.run(rms_norm, k, norm_k.weight_for(h), norm_k.eps).unflatten(-1, (heads, -1))
        q, k, v = self.to_all_tokens(q, k, v)
        if cache is None:
            keys, values = k.transpose(1, 2), v.transpose(1, 2)
        else:
            keys, values = cache.store(layer, cache_start, k, v)
            if key_phases is not None:
                keys = glue.rope(keys.transpose(1, 2), key_phases[:keys.shape[2]]).transpose(1, 2)
        out = glue.self_attention(q.transpose(1, 2), keys, values, mask)
        return attn.o(self.to_all_heads(out.transpose(1, 2)))


# -- process groups ---------------------------------------------------------------------------------------------


def init_from_environment(timeout_s: float = DEFAULT_TIMEOUT_S) -> SequenceParallel:
    """Under `torchrun --standalone --nproc-per-node N`: join its process group (NCCL with CUDA, else gloo), each
    rank on GPU LOCAL_RANK, and return this process's `SequenceParallel`."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return SequenceParallel.current()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class _Launch:
    world: int
    port: int
    device_type: str
    timeout_s: float
    threads: int


def _dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _worker(fn: Callable[..., Any], args: tuple, launch: _Launch, rank: int, results: Any) -> None:
    """One local rank: join the group on 127.0.0.1, run fn(parallel, *args), report its result or its traceback."""
    cuda = launch.device_type == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(launch.threads)
    try:
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{launch.port}", rank=rank,
                                world_size=launch.world, timeout=datetime.timedelta(seconds=launch.timeout_s),
                                device_id=torch.device("cuda", rank) if cuda else None)
        result = fn(SequenceParallel(None, rank, launch.world), *args)
        dist.barrier()  # every rank is done before any leaves the group
        results.put((rank, True, _dumps(result)))
    except BaseException:  # noqa: BLE001 - reported to the launcher, which raises it
        results.put((rank, False, traceback.format_exc()))
        results.close()
        results.join_thread()
        os._exit(1)  # a group broken by a dead rank may hang in its teardown: leave without it
    dist.destroy_process_group()


def run_local(fn: Callable[..., Any], world: int, *args: Any, device_type: str = "cpu",
              timeout_s: float = DEFAULT_TIMEOUT_S, threads: int | None = None) -> list[Any]:
    """fn(parallel, *args) on `world` new local processes in one process group (gloo on the CPU, NCCL on GPUs
    0..world-1); returns each rank's result, in rank order, once every process has left the group and exited.

    `fn` must be importable (a module's top-level function) and its result plain data (tensors, numbers, strings,
    None, in lists, tuples and dicts: it comes back through torch.load(weights_only=True)). A rank that raises or dies
    (killed, out of memory) makes this raise `ParallelError` with what every rank said; the others then fail
    in their next collective, or after `timeout_s` at the latest, and any still running after that are ended."""
    if world < 1:
        raise ValueError(f"a process group needs at least one rank, got {world}")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    launch = _Launch(world, free_port(), device_type, timeout_s,
                     threads or max(1, (os.cpu_count() or 1) // world))
    processes = [context.Process(target=_worker, args=(fn, args, launch, rank, results), name=f"causal-rank-{rank}")
                 for rank in range(world)]
    for p in processes:
        p.start()
    done: dict[int, Any] = {}
    failed: dict[int, str] = {}
    exited: dict[int, float] = {}  # when a rank was first seen gone without a word (its word may be on its way)
    grace_until: float | None = None
    try:
        while len(done) + len(failed) < world:
            with contextlib.suppress(queue.Empty):
                rank, ok, payload = results.get(timeout=0.2)
                if ok:
                    done[rank] = torch.load(io.BytesIO(payload), weights_only=True)
                else:
                    failed[rank] = payload
                continue
            for rank, p in enumerate(processes):  # a rank that exits without a word died (a signal, os._exit)
                if rank not in done and rank not in failed and p.exitcode is not None:
                    if time.monotonic() - exited.setdefault(rank, time.monotonic()) > 2.0:
                        failed[rank] = _died(p.exitcode)
            if failed and grace_until is None:
                grace_until = time.monotonic() + timeout_s + GRACE_S
            if grace_until is not None and time.monotonic() > grace_until:
                for rank in range(world):
                    failed.setdefault(rank, f"still running {timeout_s + GRACE_S:.0f} s after another rank failed: "
                                            "ended")
                break
    finally:
        _end(processes, wait_s=30.0 if len(done) == world else 0.0)
        results.close()
    if failed:
        said = "\n".join(f"rank {rank}: {failed[rank].strip()}" for rank in sorted(failed))
        raise ParallelError(f"{len(failed)} of {world} local ranks failed:\n{said}")
    return [done[rank] for rank in range(world)]


def _end(processes: list[Any], wait_s: float) -> None:
    """Join every process: those that said their last word get `wait_s` to leave the group and exit; then each
    one left is terminated, and killed if it ignores that."""
    deadline = time.monotonic() + wait_s
    for p in processes:
        p.join(timeout=max(deadline - time.monotonic(), 0.0))
    for p in processes:
        if p.is_alive():
            p.terminate()
            p.join(timeout=5.0)
        if p.is_alive():
            p.kill()
            p.join()


def _died(exitcode: int) -> str:
    if exitcode < 0:
        return f"died (signal {-exitcode}) without a word"
    return f"exited with code {exitcode} without a word"

