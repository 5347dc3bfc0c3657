"""Local ranks that keep a model loaded and sample on request: sequence parallelism (`causal.parallel`) for a caller
that is not itself a rank, such as ComfyUI's process.

`RankPool(source, devices)` starts one worker process per device (`python -c`, importing only this package, never
the caller's main module), each of which joins a process group on 127.0.0.1 (NCCL on GPUs, gloo on the CPU) and
builds the model from `source` (the same checkpoint file, dtype and LoRA on every rank). `pool.generate` takes what
`causal.generate` takes; every rank runs `generate` with `Compute(parallel=...)` and rank 0 sends back the progress,
the finished blocks and the result, so the caller's callbacks run in the caller's process as the blocks are made.

* Stopping: a callback that raises (a Cancel) makes the caller ask rank 0 to stop; at every step every rank learns
  rank 0's answer by a broadcast, so all stop after the same step and the pool stays ready for the next call.
* Errors: an error raised on every rank alike (a bad input, found before any exchange) comes back as itself and
  the pool stays ready. A rank that fails alone, dies or stops answering leaves the others waiting in a collective:
  the pool ends every worker and raises `ParallelError`; the next pool starts clean.
* Ending: `close()`; a worker whose caller has gone (its connection closed) exits by itself.
* CUDA graphs (`generate(graphs=True)`): each worker keeps its graphs and their KV cache (its heads) for the video
  shape from one call to the next, as the nodes keep one GPU's. The workers run PyTorch's native CUDA allocator
  (a `backend:cudaMallocAsync` in the caller's PYTORCH_CUDA_ALLOC_CONF, ComfyUI's default, is left out of theirs):
  graphs cannot be captured under the other.

The caller and its workers talk over `multiprocessing.connection` on the loopback address, authenticated by a
random key each pool makes (the workers get it in their environment): pickled values (tensors on the CPU) pass
only between this pack's own processes, never from a file or the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import pickle
import secrets
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing import connection
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .checkpoint import read_checkpoint
from .graphs import CudaGraphs, allocator_unsupported
from .config import WanConfig
from .fp8_storage import fp8_storage_model
from .lora import apply_unmerged, check_fits, merge_into, read_lora
from .model import CausalWanModel
from .parallel import DEFAULT_TIMEOUT_S, ParallelError, SequenceParallel, free_port
from .prompts import LivePrompts, PromptChange
from .request import Compute, Noise, Output, Progress, Video
from .sampler import Generation, Prompts, generate
from .schedule import Schedule

AUTHKEY_VARIABLE = "CAUSVID_RANK_AUTHKEY"
ALLOCATOR_VARIABLE = "PYTORCH_CUDA_ALLOC_CONF"
START_TIMEOUT_S = 1800.0
"""How long the workers may take to start and load the model (a 14B checkpoint from a slow disk)."""
GRACE_S = 15.0
"""After one rank reported an error or a stop, how long the others have to report theirs before the pool ends."""
POLL_S = 0.2


@dataclass(frozen=True)
class ModelSource:
    """How every rank builds the same model: a checkpoint file computing in `dtype` (with `fp8_storage` its
    matrices stored as e4m3, `causal.fp8_storage`), optionally with a LoRA (merged into the weights at load, or
    applied in every forward), as `nodes.comfy_model.load_causal_model` builds it. `stamp` (size, mtime) makes a file
    changed on disk another source."""

    path: str
    dtype: torch.dtype
    lora_path: str | None = None
    lora_mode: str = "merged"
    stamp: tuple[int, ...] = ()
    fp8_storage: bool = False

    @classmethod
    def of_file(cls, path: str | os.PathLike, dtype: torch.dtype, lora_path: str | os.PathLike | None = None,
                lora_mode: str = "merged", fp8_storage: bool = False) -> ModelSource:
        files = [Path(path)] + ([] if lora_path is None else [Path(lora_path)])
        stamp = tuple(n for f in files for n in (f.stat().st_size, f.stat().st_mtime_ns))
        return cls(str(path), dtype, None if lora_path is None else str(lora_path), lora_mode, stamp, fp8_storage)

    def load(self, device: torch.device | str) -> CausalWanModel:
        checkpoint = read_checkpoint(self.path)
        state_dict, config = checkpoint.state_dict, checkpoint.config
        lora = None if self.lora_path is None else read_lora(self.lora_path)
        if lora is not None:
            check_fits(lora, config)
            if self.lora_mode == "merged":
                merge_into(state_dict, lora)  # in the file's dtype, before the cast, as the loader merges
        if self.fp8_storage:
            model = fp8_storage_model(state_dict, config, device)
        else:
            model = CausalWanModel.from_state_dict(state_dict, config, dtype=self.dtype, device=device)
        if lora is not None and self.lora_mode != "merged":
            apply_unmerged(model, lora)
        return model


@dataclass(frozen=True)
class _Request:
    """One `generate` call as every rank makes it; tensors on the CPU."""

    timeline: torch.Tensor | tuple[torch.Tensor | PromptChange, ...]
    """`Prompts`: one prompt, one per fragment or a timeline."""
    video: Video
    schedule: Schedule
    policy: Any
    seed: int | None
    generator_state: torch.Tensor | None
    initial_noise: torch.Tensor | None
    compute: Compute
    graphs: bool
    output_device: str
    keep_latents: bool
    record: bool
    send_blocks: bool


class _Stopped(Exception):
    """Every rank stops after the same step: rank 0 was asked to stop (`RankPool.generate`'s callback raised)."""


@dataclass
class _Worker:
    rank: int
    device: str
    process: subprocess.Popen
    connection: Any = None
    weight_bytes: int = 0


class RankPool:
    """`len(devices)` local ranks holding `source`'s model, one per device ("cuda:0", "cuda:1", ... or "cpu")."""

    def __init__(self, source: ModelSource, devices: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 waiting: Callable[[], None] | None = None) -> None:
        """Start the workers and wait until each has loaded the model; `waiting()` is called while they start
        (raising from it, a Cancel, ends them)."""
        devices = [str(torch.device(d)) for d in devices]
        if not devices:
            raise ValueError("a rank pool needs at least one device")
        kinds = {torch.device(d).type for d in devices}
        if len(kinds) > 1 or kinds - {"cuda", "cpu"}:
            raise ValueError(f"the ranks run on CUDA GPUs or on the CPU, all alike: got {', '.join(devices)}")
        if "cuda" in kinds and len(set(devices)) < len(devices):
            raise ValueError(f"each rank needs a GPU of its own: {', '.join(devices)} names one twice")
        self.source, self.devices, self.timeout_s = source, tuple(devices), timeout_s
        self.config: WanConfig | None = None
        self.closed = False
        key = secrets.token_bytes(32)
        self._listener = connection.Listener(("127.0.0.1", 0), authkey=key)
        group_port = free_port()
        env = worker_environment(os.environ, key)
        root, package = str(Path(__file__).resolve().parents[1]), __package__ or "causal"
        self._workers = [
            _Worker(rank, device, subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, root, package, str(self._listener.address[1]), str(rank),
                 str(len(devices)), device, str(group_port), str(timeout_s)], env=env, stdin=subprocess.DEVNULL))
            for rank, device in enumerate(devices)]
        try:
            self._connect(waiting)
            for worker in self._workers:
                _send(worker.connection, ("load", source))
            ready = self._collect(set(range(len(devices))), START_TIMEOUT_S, waiting, "loading the model")
            for rank, (_, weight_bytes, config) in ready.items():
                self._workers[rank].weight_bytes, self.config = weight_bytes, config
        except BaseException:
            self.close(force=True)
            raise

    # -- what the caller sees ---------------------------------------------------------------------------------

    @property
    def world(self) -> int:
        return len(self._workers)

    def weight_bytes(self, device: str | torch.device) -> int:
        """What the ranks on `device` hold: the model's weights as loaded (0 on the CPU or another device)."""
        return sum(w.weight_bytes for w in self._workers if w.device == str(torch.device(device)))

    def generate(self, model: CausalWanModel | None, context: Prompts, video: Video, schedule: Schedule,
                 policy: Any = None, *, noise: Noise = Noise(), compute: Compute = Compute(),
                 output: Output = Output(), reencoder: Any = None, graphs: bool = False) -> Generation:
        """`causal.generate` on the ranks (`model`, if given, must have the ranks' config: their weights are
        their own). `output`'s callbacks run here as rank 0 reports; `noise.generator` advances as it would. With
        `graphs`, GPU ranks run the block forwards as CUDA graphs, kept for the next call of the same shape."""
        if self.closed:
            raise ParallelError("this rank pool has been closed: start a new one")
        request = self._request(model, context, video, schedule, policy, noise, compute, output, reencoder, graphs)
        for worker in self._workers:
            _send(worker.connection, ("generate", request))
        failure: BaseException | None = None
        replies: dict[int, tuple] = {}
        pending = set(range(self.world))
        deadline = None
        while pending:
            for rank, message in self._receive(pending):
                kind = message[0]
                if kind in ("progress", "block"):
                    if failure is None:
                        try:
                            if kind == "progress" and output.progress is not None:
                                output.progress(Progress(**message[1]))
                            elif kind == "block" and output.on_block is not None:
                                output.on_block(message[1])
                        except BaseException as e:  # a Cancel or a failing callback: every rank stops
                            failure = e
                            _send(self._workers[0].connection, ("stop",))
                    continue
                pending.discard(rank)
                replies[rank] = message
                if deadline is None and kind != "done":
                    deadline = time.monotonic() + GRACE_S
            if deadline is not None and pending and time.monotonic() > deadline:
                self.close(force=True)
                raise ParallelError(f"sequence parallel: {_said(replies)}; rank(s) {sorted(pending)} did not answer "
                                    f"within {GRACE_S:.0f} s, so every worker was ended (the next run starts new "
                                    "ones)") from failure
        errors = {rank: m for rank, m in replies.items() if m[0] == "error"}
        if errors:
            raise _rebuilt(errors, self.world) from failure
        if failure is not None:
            raise failure
        latents, last_block, history, generator_state = replies[0][1]
        if noise.generator is not None:
            noise.generator.set_state(generator_state)
        device = output.device if output.device is not None else "cpu"
        return Generation(latents.to(device), last_block, history)

    def close(self, force: bool = False) -> None:
        """End every worker: asked to leave (they free the GPUs as they exit), or with `force` at once."""
        if self.closed:
            return
        self.closed = True
        if not force:
            for worker in self._workers:
                try:
                    if worker.connection is not None:
                        _send(worker.connection, ("close",))
                except OSError:
                    pass
        deadline = time.monotonic() + (0.0 if force else 30.0)
        for worker in self._workers:
            try:
                worker.process.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                pass
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
            if worker.connection is not None:
                worker.connection.close()
        self._listener.close()

    def __enter__(self) -> RankPool:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -- the exchange with the workers ------------------------------------------------------------------------

    def _request(self, model: CausalWanModel | None, context: Prompts, video: Video, schedule: Schedule, policy: Any,
                 noise: Noise, compute: Compute, output: Output, reencoder: Any, graphs: bool) -> _Request:
        if model is not None and model.config != self.config:
            raise ValueError(f"the ranks hold the {self.config.name} model, not this {model.config.name} one")
        if isinstance(context, LivePrompts):
            raise ValueError("live prompts arrive while one process samples: on several GPUs every rank must switch "
                             "at the same block, so give a prompt timeline instead")
        if reencoder is not None:
            raise ValueError("the recompute policy (Krea Realtime) decodes and encodes with the VAE between blocks, "
                             "which the ranks do not hold: sample it on one GPU")
        if noise.renoise is not None:
            raise ValueError("a renoise function runs in the caller's process, not on the ranks: give a seed, a "
                             "generator or initial noise")
        if compute.graphs is not None or compute.parallel is not None or compute.device is not None:
            raise ValueError("the ranks choose their own device and group, and run without CUDA graphs: leave "
                             "Compute's device, graphs and parallel unset")
        state = None
        if noise.generator is not None:
            kind = torch.device(self.devices[0]).type
            if noise.generator.device.type != kind:
                raise ValueError(f"the noise generator is on {noise.generator.device}; the ranks draw on {kind}: give "
                                 f"a {kind} generator (its state is the same on every {kind} device)")
            state = noise.generator.get_state()
        timeline = context.cpu() if isinstance(context, torch.Tensor) else tuple(
            c.cpu() if isinstance(c, torch.Tensor) else dataclasses.replace(c, context=c.context.cpu())
            for c in context)
        initial = None if noise.initial is None else noise.initial.cpu()
        return _Request(timeline, _on_cpu(video), schedule, policy, noise.seed, state, initial, compute, graphs,
                        "cpu", output.keep_latents, output.record, output.on_block is not None)

    def _connect(self, waiting: Callable[[], None] | None) -> None:
        """Accept each worker's connection (it says its rank first), watching for one that dies meanwhile."""
        accepted: list[Any] = []

        def accept() -> None:
            for _ in self._workers:
                try:
                    accepted.append(self._listener.accept())
                except OSError:
                    return

        thread = threading.Thread(target=accept, daemon=True, name="causvid-rank-pool-accept")
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while thread.is_alive():
            thread.join(POLL_S)
            self._check_alive("starting")
            if waiting is not None:
                waiting()
            if time.monotonic() > deadline:
                raise ParallelError(f"the workers did not connect within {START_TIMEOUT_S:.0f} s")
        for conn in accepted:
            _, rank = _receive_from(conn)
            self._workers[rank].connection = conn

    def _receive(self, ranks: set[int], what: str = "sampling") -> list[tuple[int, tuple]]:
        """The messages waiting from `ranks` (after at most POLL_S); a worker gone raises ParallelError."""
        by_connection = {self._workers[r].connection: r for r in ranks}
        messages = []
        for conn in connection.wait(list(by_connection), timeout=POLL_S):
            try:
                messages.append((by_connection[conn], _receive_from(conn)))
            except (EOFError, OSError):
                pass  # its process has ended: said below
        if not messages:
            self._check_alive(what)
        return messages

    def _collect(self, ranks: set[int], timeout_s: float, waiting: Callable[[], None] | None,
                 what: str) -> dict[int, tuple]:
        """Each of `ranks`' next message. Errors raise once every rank has answered, or GRACE_S after the first
        (`_rebuilt`: the same error from every rank comes back as itself)."""
        replies: dict[int, tuple] = {}
        deadline = time.monotonic() + timeout_s
        while len(replies) < len(ranks):
            for rank, message in self._receive(ranks - set(replies), what):
                replies[rank] = message
                if message[0] == "error":  # the others have a moment to say theirs (the same, as a rule)
                    deadline = min(deadline, time.monotonic() + GRACE_S)
            if waiting is not None:
                waiting()
            if time.monotonic() > deadline:
                break
        if errors := {r: m for r, m in replies.items() if m[0] == "error"}:
            raise _rebuilt(errors, self.world, what)
        if len(replies) < len(ranks):
            raise ParallelError(f"the workers did not finish {what} within {timeout_s:.0f} s")
        return replies

    def _check_alive(self, what: str) -> None:
        for worker in self._workers:
            code = worker.process.poll()
            if code is not None:
                self.close(force=True)
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                raise ParallelError(f"sequence parallel: the worker of rank {worker.rank} ({worker.device}) died "
                                    f"while {what} ({how}); every worker was ended, and the next run starts new ones")


def worker_environment(caller: Mapping[str, str], key: bytes) -> dict[str, str]:
    """The caller's environment (NCCL's settings, NCCL_NVLS_ENABLE among them, included) with the pool's key, and
    without a cudaMallocAsync backend."""
    env = {**caller, AUTHKEY_VARIABLE: key.hex()}
    if allocator := _native_allocator(env.get(ALLOCATOR_VARIABLE, "")):
        env[ALLOCATOR_VARIABLE] = allocator
    else:
        env.pop(ALLOCATOR_VARIABLE, None)
    return env


def _native_allocator(conf: str) -> str:
    """PYTORCH_CUDA_ALLOC_CONF without a `backend:cudaMallocAsync` entry (its other settings kept)."""
    return ",".join(e for e in conf.split(",") if e.strip() and e.replace(" ", "") != "backend:cudaMallocAsync")


def _send(conn: Any, value: Any) -> None:
    """Plain pickle, not multiprocessing's: its tensors would pass as shared memory, through a channel that only
    processes started by `multiprocessing` can open."""
    conn.send_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def _receive_from(conn: Any) -> Any:
    return pickle.loads(conn.recv_bytes())


def _on_cpu(video: Video) -> Video:
    fields = {name: getattr(video, name).cpu() for name in ("start_latents", "first_frame")
              if getattr(video, name) is not None}
    return dataclasses.replace(video, **fields) if fields else video


def _said(replies: dict[int, tuple]) -> str:
    parts = [f"rank {rank} {'stopped' if m[0] == 'stopped' else 'failed: ' + m[2]}" for rank, m in
             sorted(replies.items()) if m[0] != "done"]
    return "; ".join(parts) or "no rank answered"


ERROR_TYPES: dict[str, type[BaseException]] = {"ValueError": ValueError, "MemoryError": MemoryError,
                                               "OutOfMemoryError": torch.OutOfMemoryError,
                                               "CheckpointError": ValueError, "LoraError": ValueError}
"""Errors a rank raises that come back as their own type (the same on every rank: a bad input, too little memory);
any other comes back as ParallelError with its traceback."""


def _rebuilt(errors: dict[int, tuple], world: int, what: str = "sampling") -> BaseException:
    """The exception the caller sees for the ranks' errors ("error", type name, message, traceback)."""
    kinds = {m[1] for m in errors.values()}
    messages = {m[2] for m in errors.values()}
    if len(errors) == world and len(kinds) == 1 and len(messages) == 1 and next(iter(kinds)) in ERROR_TYPES:
        return ERROR_TYPES[next(iter(kinds))](next(iter(messages)))
    said = "\n".join(f"rank {rank}: {m[3].strip()}" for rank, m in sorted(errors.items()))
    return ParallelError(f"sequence parallel: {len(errors)} of {world} ranks failed while {what}:\n{said}")


# -- the worker ---------------------------------------------------------------------------------------------------

_BOOTSTRAP = """
import importlib, sys, types
root, package = sys.argv[1], sys.argv[2]
parents = package.split(".")[:-1]
if not parents:
    sys.path.insert(0, root)
for i, name in enumerate(parents):  # the pack's package as the caller named it, without running its __init__
    stub = types.ModuleType(".".join(parents[:i + 1]))
    stub.__path__ = [root] if i == len(parents) - 1 else []
    sys.modules[stub.__name__] = stub
importlib.import_module(package + ".rank_pool").serve(sys.argv[3:])
"""


def serve(argv: Sequence[str]) -> None:
    """A worker's life: connect to the caller, join the group, load the model, sample on request until told to
    close or the caller is gone."""
    port, rank, world, device, group_port, timeout_s = (int(argv[0]), int(argv[1]), int(argv[2]),
                                                        torch.device(argv[3]), int(argv[4]), float(argv[5]))
    conn = connection.Client(("127.0.0.1", port), authkey=bytes.fromhex(os.environ.pop(AUTHKEY_VARIABLE)))
    _send(conn, ("hello", rank))
    import torch.distributed as dist

    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                init_method=f"tcp://127.0.0.1:{group_port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
        _, source = _receive_from(conn)
        model = source.load(device)
        weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        _send(conn, ("ready", weights if device.type == "cuda" else 0, model.config))
    except (EOFError, OSError):
        os._exit(1)
    except BaseException as e:  # noqa: BLE001 - said to the caller, which raises it
        _report(conn, e)
        with contextlib.suppress(EOFError, OSError):
            while _receive_from(conn)[0] != "close":  # alive until the caller has every rank's word
                pass
        os._exit(1)
    parallel = SequenceParallel(None, rank, world)
    kept = _KeptGraphs(model, parallel)
    while True:
        try:
            message = _receive_from(conn)
        except (EOFError, OSError):
            os._exit(0)  # the caller is gone
        if message[0] == "close":
            kept.release()
            break
        if message[0] != "generate":
            continue  # a stop that came after the run had ended
        try:
            result = _run(model, message[1], parallel, device, conn, kept)
            _send(conn, ("done", result))
        except _Stopped:
            _send(conn, ("stopped",))
        except (EOFError, OSError):
            os._exit(1)
        except BaseException as e:  # noqa: BLE001
            kept.release()  # an error may have come in the middle of a capture: the next run captures anew
            _report(conn, e)
    dist.destroy_process_group()
    conn.close()


def _report(conn: Any, e: BaseException) -> None:
    try:
        _send(conn, ("error", type(e).__name__, str(e), traceback.format_exc()))
    except OSError:
        pass


class _KeptGraphs:
    """A worker's CUDA graphs for the last video shape it sampled (None before, or for a run without graphs)."""

    def __init__(self, model: CausalWanModel, parallel: SequenceParallel) -> None:
        self.model, self.parallel = model, parallel
        self.graphs: CudaGraphs | None = None
        self.key: tuple | None = None

    def for_request(self, request: _Request, device: torch.device) -> CudaGraphs | None:
        policy, schedule = request.policy, request.schedule
        if not request.graphs or device.type != "cuda" or policy is None or schedule.joint_window \
                or allocator_unsupported() is not None:
            return None
        first = request.timeline if isinstance(request.timeline, torch.Tensor) else request.timeline[0]
        batch = (first if isinstance(first, torch.Tensor) else first.context).shape[0]
        compute, video = request.compute, request.video
        key = (batch, video.height, video.width, policy.cache_frames(schedule.frames_per_block), compute.dtype,
               compute.kv_cache_fp8)
        if key != self.key:
            self.release()
            self.graphs = CudaGraphs(self.model, batch=batch, height=video.height, width=video.width,
                                     num_frames=key[3], dtype=compute.dtype, device=device,
                                     kv_cache_fp8=compute.kv_cache_fp8, parallel=self.parallel)
            self.key = key
        return self.graphs

    def release(self) -> None:
        if self.graphs is not None:
            self.graphs.release()
        self.graphs = self.key = None


def _run(model: CausalWanModel, request: _Request, parallel: SequenceParallel, device: torch.device,
         conn: Any, kept: _KeptGraphs) -> tuple | None:
    """One `generate` on this rank; rank 0 reports progress and blocks and returns the result."""
    lead = parallel.rank == 0
    generator = None
    if request.generator_state is not None:
        generator = torch.Generator(device)
        generator.set_state(request.generator_state)
    noise = Noise(seed=request.seed, generator=generator, initial=request.initial_noise)

    def progress(p: Progress) -> None:
        stop = 0
        if lead:
            fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
            _send(conn, ("progress", {**fields, "denoised": p.denoised.cpu()}))
            while conn.poll():
                stop = int(_receive_from(conn)[0] == "stop") or stop
        if parallel.broadcast(torch.tensor([stop], device=device)).item():
            raise _Stopped

    def on_block(block: torch.Tensor) -> None:
        _send(conn, ("block", block.cpu()))

    def dropped(block: torch.Tensor) -> None:  # the other ranks' blocks equal rank 0's
        pass

    # the same Output on every rank but for where the blocks go: every rank checks and loops alike
    output = Output(device=request.output_device, keep_latents=request.keep_latents,
                    on_block=(on_block if lead else dropped) if request.send_blocks else None, progress=progress,
                    record=request.record)
    compute = dataclasses.replace(request.compute, device=device, parallel=parallel,
                                  graphs=kept.for_request(request, device))
    timeline = request.timeline if isinstance(request.timeline, torch.Tensor) else list(request.timeline)
    result = generate(model, timeline, request.video, request.schedule, request.policy, noise=noise,
                      compute=compute, output=output)
    if not lead:
        return None
    state = None if generator is None else generator.get_state()
    return result.latents.cpu(), result.last_block.cpu(), result.history, state
