"""The context a block attends to: a KV cache run by a cache policy, and the record that rebuilds it.

`ContextWindow` owns the KV cache of one video and knows, for the next chunk of latent frames, the cache
slot it is written to and its RoPE position:

* `fragments`: slots and positions both count from the start of the current window (0, 3, 6, ...);
  `start_fragment()` begins a new window, whose slot 0 then receives the previous window's last block.
* `rolling` / `sink`: the position is the frame index in the video and never decreases; the slot is the
  fill level of the cache. A chunk that does not fit evicts the oldest frames after the sink (docs/algorithm.md
  §2.3, §3.2, §3.3): with window W, sink S and a full cache,

      slots [S, W - n) <- slots [S + n, W)   (every layer, keys and values)
      slots [W - n, W) <- the new chunk

  which is CausVid-Plus's `torch.roll` by one block (S = 0) and LongLive's eviction (S = 3, W = 12).

* `recompute`: `rebuild` empties the cache and caches a short context from slot 0 at positions 0.. before each
  block, which then goes right after it (`rebuilt_context`).
* an EMA sink (Reward Forcing): the frames an eviction drops are blended into the sink,
  sink <- alpha * sink + (1 - alpha) * evicted, when they are as many as the sink's (else they are copied over
  its start), as its `CausalWanSelfAttention` does.

With the policy's `rope_at_read` the window keeps the RoPE position of the frame in each slot and, before every
forward, gives the cache the phases of those positions; with `positions = "slot"` a frame's position is its slot
and a chunk is made at the position of the slot it goes to.

Every forward whose keys/values stay in the cache (a block's last writer: its clean pass, or its last
denoising step without one; a prefilled start latent; a re-cache after a prompt switch) is recorded in a
`History`. Replaying a history through a fresh `ContextWindow` runs the same forwards on the same inputs
in the same order, so it rebuilds the cache bit for bit: that is how a video continues in a later call
exactly as if it had never stopped. Only the writes since the window was last rebuilt from scratch are
kept (a new fragment), on the CPU.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from .cache_policy import SCENE_CUT_POSITION, CachePolicy
from .host import to_host
from .kernels import EAGER, Glue
from .kv_cache import CrossAttentionKV, KVCache
from .model import CausalWanModel
from .parallel import SequenceParallel
from .rebuilt_context import RebuiltContext


@dataclass(frozen=True)
class Write:
    """A chunk of latent frames whose K/V stayed in the cache."""

    latents: torch.Tensor
    """What the last forward of the chunk saw [B, 16, n, h, w] (model space)."""
    timestep: float
    clean: torch.Tensor | None = None
    """The chunk's clean latents when they differ from `latents` (no clean pass)."""


@dataclass(frozen=True)
class Switch:
    """From here on, prompt `prompt` (an index into `History.prompts`); `recache` re-caches the window; `cut`: a
    scene cut (Infinity-RoPE)."""

    prompt: int
    recache: bool
    cut: bool = False


@dataclass(frozen=True)
class NewFragment:
    """A new window: the cache is emptied and positions restart at 0."""


Event = Write | Switch | NewFragment


@dataclass
class History:
    """The cache writes since the window was last rebuilt from scratch, and the prompts they used."""

    policy: CachePolicy
    events: list[Event] = field(default_factory=list)
    prompts: list[torch.Tensor] = field(default_factory=list)
    rebuilt: RebuiltContext | None = None
    """`recompute` policy: the frames the next context is built from (on the CPU); the events then only hold the
    prompt in use, since the next block rebuilds the cache from scratch anyway."""

    def prompt_index(self, context: torch.Tensor) -> int:
        for i, p in enumerate(self.prompts):
            if same_prompt(p, context):
                return i
        self.prompts.append(context.detach().cpu())
        return len(self.prompts) - 1

    @property
    def nbytes(self) -> int:
        tensors = [e.latents for e in self.events if isinstance(e, Write)]
        tensors += [e.clean for e in self.events if isinstance(e, Write) and e.clean is not None]
        if self.rebuilt is not None and self.rebuilt.first is not None:
            tensors += [self.rebuilt.first, *self.rebuilt.latest]
        return sum(t.numel() * t.element_size() for t in tensors + self.prompts)


def same_prompt(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Whether two prompt embeddings are the same tensor or hold the same values (a continued video keeps its
    prompt without a re-cache when it is given the same one again)."""
    if a is None or b is None:
        return a is b
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu()))


Forward = Callable[[torch.Tensor, torch.Tensor, int, int, float], torch.Tensor]
"""(x, timestep, slot, position, rope offset) -> flow: the model's forward at a cache slot and RoPE position."""


class ContextWindow:
    """The KV cache of one video under a cache policy: where each chunk goes, and its RoPE position."""

    def __init__(self, model: CausalWanModel, policy: CachePolicy, cache: KVCache, *, tokens_per_frame: int,
                 forward: Forward | None = None, record: bool = False, glue: Glue = EAGER,
                 frames_per_block: int = 3, parallel: SequenceParallel | None = None) -> None:
        self.capacity = policy.cache_frames(frames_per_block)  # latent frames
        if cache.capacity < self.capacity * tokens_per_frame:
            raise ValueError(f"the KV cache holds {cache.capacity // tokens_per_frame} frames; the policy needs "
                             f"{self.capacity}")
        self.model = model
        self.policy = policy
        self.cache = cache
        self.frames_per_block = frames_per_block
        self.tokens_per_frame = tokens_per_frame
        self.text: CrossAttentionKV | None = None
        self.context: torch.Tensor | None = None
        if policy.sink_ema is not None and cache.quantized:
            raise ValueError("an EMA sink blends cached keys and values: use the bf16 KV cache with it")
        cache.key_phases = None  # a kept cache (CUDA graphs') may come from a run that rotated keys when read
        self.filled = 0  # latent frames in the cache
        self.position = 0  # RoPE position of the next frame (its frame index since the window started)
        self.slot_positions: list[int] = []  # RoPE position of the frame in each filled slot
        self.scene_cut = False  # the next chunk placed is the first after a scene cut (until it is finished)
        self.shot = 0  # scene cuts so far, with a shot-aware policy (LongLive 2.0)
        self.pin_next = False  # the chunk finished next is a shot's first: pin it
        self.pinned: int | None = None  # slot of the pinned shot block (it moves left with evictions)
        self._key_phases: tuple[tuple, torch.Tensor] | None = None  # (positions, grid), their phases
        # clean latents of the last `window` frames placed, one per frame (what a re-cache recomputes)
        self.recent: deque[torch.Tensor] = deque(maxlen=policy.window)
        self.history = History(policy) if record else None
        self.glue = glue
        self.parallel = parallel  # this process's share of each forward (a cache of its heads; `causal.parallel`)
        self._forward = forward  # None: the model itself (a bound method kept here would be a reference cycle,
        # holding the model, the text K/V and the recent latents until the garbage collector runs)

    # -- the network ----------------------------------------------------------------------------

    def _model_forward(self, x: torch.Tensor, timestep: torch.Tensor, slot: int, position: int,
                       rope_offset: float) -> torch.Tensor:
        return self.model(x, timestep, self.text, cache=self.cache, cache_frame=slot, rope_frame=position,
                          rope_offset=rope_offset, glue=self.glue, parallel=self.parallel)

    @property
    def rope_offset(self) -> float:
        """The RoPE offset of the current shot's frames: shots so far times the policy's `shot_rope_offset`."""
        return self.shot * self.policy.shot_rope_offset

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, slot: int, position: int) -> torch.Tensor:
        """Flow prediction for a chunk x [B, 16, n, h, w] whose K/V go to `slot` at RoPE `position`."""
        if self.policy.rope_at_read:
            self.cache.key_phases = self.key_phases(x)
        if self._forward is None:
            return self._model_forward(x, timestep, slot, position, self.rope_offset)
        return self._forward(x, timestep, slot, position, self.rope_offset)

    def set_prompt(self, context: torch.Tensor, text: CrossAttentionKV, *, recache: bool, cut: bool = False) -> None:
        """Use a new prompt from the next forward on; with `recache`, first rebuild the cached frames' K/V
        under it (LongLive's switch, section 3.6 item 6), or flush the cache (Infinity-RoPE); with `cut`, the next
        chunk is a scene cut: Infinity-RoPE's `rope_cut` (placed at SCENE_CUT_POSITION), or a new shot of a shot-aware
        policy (LongLive 2.0: its frames at the next RoPE offset, its first block pinned)."""
        if cut and self.policy.on_switch != "flush" and not self.policy.shots:
            raise ValueError("a scene cut ('seconds#: prompt') needs a cache that knows scenes: Infinity-RoPE's "
                             f"(flushed at a switch) or LongLive 2.0's (shots), not a {self.policy.describe()}")
        self.text, self.context = text, context
        if self.history is not None:
            self.history.events.append(Switch(self.history.prompt_index(context), recache, cut))
        if recache and self.policy.on_switch != "keep":
            self._flush() if self.policy.on_switch == "flush" else self._recache()
        self.scene_cut = cut and self.policy.on_switch == "flush"
        if cut and self.policy.shots:
            self.shot += 1
            self.pin_next = self.policy.shot_sink

    def use_prompt(self, context: torch.Tensor, text_for: Callable[[torch.Tensor], CrossAttentionKV], *,
                   recache: bool, cut: bool = False) -> None:
        """Switch to `context` (see `set_prompt`) unless it is the prompt in use: the same tensor, or one with the
        same values (a continued video given its prompt again), which then needs no re-cache."""
        if context is self.context:
            return
        if same_prompt(context, self.context):
            self.context = context
            return
        self.set_prompt(context, text_for(context), recache=recache, cut=cut)

    def key_phases(self, x: torch.Tensor) -> torch.Tensor:
        """RoPE phases of every filled slot's frame at its position, for chunks shaped like x [B, 16, n, h, w]."""
        frame = (*x.shape[:2], 1, *x.shape[3:])
        key = (tuple(self.slot_positions), frame, x.device)
        if self._key_phases is None or self._key_phases[0] != key:
            phases = torch.cat([self.model.phases(p, frame, x.device) for p in self.slot_positions])
            self._key_phases = (key, phases)
        return self._key_phases[1]

    # -- placing chunks -------------------------------------------------------------------------

    def fits(self, frames: int) -> bool:
        return self.filled + frames <= self.capacity

    def place(self, frames: int) -> tuple[int, int]:
        """Reserve room for the next `frames` latent frames: (cache slot, RoPE position) of the first."""
        if not self.fits(frames):
            if not self.policy.evicts:
                raise RuntimeError("the fragment's window is full: start a new fragment first")
            self._evict(self.filled + frames - self.capacity)
        slot, position = self.filled, self.rope_position(self.filled, self.position)
        if self.scene_cut:
            position = SCENE_CUT_POSITION
        self.slot_positions[slot:] = range(position, position + frames)
        self.filled += frames
        self.position += frames
        return slot, position

    def rope_position(self, slot: int, frame: int) -> int:
        """The RoPE position of frame `frame` (counted since the window started) placed at `slot`."""
        return slot if self.policy.positions == "slot" else frame

    def _evict(self, frames: int) -> None:
        """Drop `frames` frames after the sink, and after a pinned shot block that sits right after it (one that
        is further on moves left with the rest until it gets there: LongLive 2.0's `pinned_start`)."""
        keep = self.policy.sink
        if self.pinned == keep:
            keep += self.frames_per_block
        if frames > self.filled - keep:
            raise ValueError(f"cannot evict {frames} frames: only {self.filled - keep} are outside the sink")
        tpf = self.tokens_per_frame
        start, count = keep * tpf, frames * tpf
        evicted = [t[:, start:start + count].clone() for t in self.cache.tensors()] \
            if self.policy.sink_ema is not None else []
        self.cache.evict(start, count, self.filled * tpf)
        del self.slot_positions[keep:keep + frames]  # the later frames keep their positions as they move left,
        if self.policy.positions == "slot":  # unless a frame's position is its slot
            self.slot_positions[:] = range(len(self.slot_positions))
        self.filled -= frames
        if self.pinned is not None and self.pinned >= keep:
            self.pinned -= frames
        for t, dropped in zip(self.cache.tensors(), evicted):
            sink = t[:, :start]
            if dropped.shape[1] == start:  # the EMA sink, in the cache's dtype
                alpha = self.policy.sink_ema
                sink.copy_(alpha * sink + (1 - alpha) * dropped)
            else:
                sink[:, :dropped.shape[1]].copy_(dropped[:, :start])

    def finish(self, latents: torch.Tensor, timestep: float, clean: torch.Tensor | None = None) -> None:
        """The chunk placed last is done: its K/V were last written from `latents` at `timestep`; its clean
        latents are `clean` (default: `latents`)."""
        clean_latents = latents if clean is None else clean
        if self.pin_next:  # LongLive 2.0 pins a shot's first block after its clean pass
            self.pinned, self.pin_next = self.filled - clean_latents.shape[2], False
        if self.scene_cut:  # from the next block on, the cut block sits where any frame of its slots would
            self.scene_cut = False
            for j in range(self.filled - clean_latents.shape[2], self.filled):
                self.slot_positions[j] = self.rope_position(j, self.position - self.filled + j)
        for i in range(clean_latents.shape[2]):
            self.recent.append(clean_latents[:, :, i:i + 1])
        if self.history is not None:
            self.history.events.append(Write(to_host(latents.detach()), float(timestep),
                                             None if clean is None else to_host(clean.detach())))

    def write(self, latents: torch.Tensor, timestep: float, clean: torch.Tensor | None = None) -> None:
        """Cache a chunk of given latents [B, 16, n, h, w] at one timestep (a prefilled start, a re-cache, a
        replayed write)."""
        slot, position = self.place(latents.shape[2])
        t = torch.full((latents.shape[0], latents.shape[2]), timestep, dtype=torch.float64, device=latents.device)
        self.forward(latents, t, slot, position)
        self.finish(latents, timestep, clean)

    def start_fragment(self) -> None:
        """An empty window with positions from 0; the previous window's last block is re-cached by the caller."""
        self.filled = 0
        self.position = 0
        self.slot_positions.clear()
        self.recent.clear()
        if self.history is not None:
            self.history.events.clear()
            self.history.prompts.clear()
            self.history.events.append(NewFragment())
            if self.context is not None:
                self.history.events.append(Switch(self.history.prompt_index(self.context), False))

    def rebuild(self, latents: torch.Tensor) -> None:
        """Krea's recompute: forget every cached frame, then cache `latents` [B, 16, m, h, w] at timestep 0 from
        slot 0, RoPE positions 0..m-1, in chunks of `frames_per_block` frames from the first, each attending to
        the chunks before it and itself (Krea's block-causal mask over the context; one chunk for its m <= 3).
        The next chunk placed goes to slot and position m. A history then keeps only the prompt in use."""
        self.filled = 0
        self.position = 0
        self.slot_positions.clear()
        if self.history is not None:
            self.history.events.clear()
            self.history.prompts.clear()
            if self.context is not None:
                self.history.events.append(Switch(self.history.prompt_index(self.context), False))
        for start in range(0, latents.shape[2], self.frames_per_block):
            chunk = latents[:, :, start:start + self.frames_per_block]
            slot, position = self.place(chunk.shape[2])
            t = torch.zeros(chunk.shape[0], chunk.shape[2], dtype=torch.float64, device=chunk.device)
            self.forward(chunk, t, slot, position)

    def _flush(self) -> None:
        """Infinity-RoPE's `kv_flush` at a prompt switch: after the sink S keep the newest n = min(W - S - b,
        filled - S) frames (b: the block), moved to slots [S, S + n); the rest of the cache is dropped and nothing
        is recomputed. (Its code copies the cache buffer's last W - S - b frames, which are the newest once the
        cache is full; before that they are unwritten rows, which this does not copy.)"""
        sink = self.policy.sink
        keep = max(min(self.policy.window - sink - self.frames_per_block, self.filled - sink), 0)
        if self.filled - sink - keep > 0:
            self._evict(self.filled - sink - keep)

    def _recache(self) -> None:
        """LongLive's re-cache (`_recache_after_switch`): one forward at timestep 0, under the new prompt, over
        the clean latents of the last n = min(window, frames since the window started) frames at their own
        RoPE positions, attending to each other without a mask. It writes slots [0, filled) (n = filled
        whenever the cache holds the latest frames), except that a sink is kept: once the video is longer than
        the window, rows that would land on the sink are dropped and the queries attend to the old sink plus
        the fresh rows (LongLive's recompute with `global_sink = true`). With `refresh_sink`, or while the
        video still fits in the window, every slot is rewritten."""
        n = min(self.policy.window, self.position)
        if n == 0:
            return
        latents = torch.cat(list(self.recent)[-n:], dim=2)
        keep_sink = self.position > self.policy.window and not self.policy.refresh_sink
        self.cache.protected = self.policy.sink * self.tokens_per_frame if keep_sink else 0
        try:
            t = torch.zeros(latents.shape[0], n, dtype=torch.float64, device=latents.device)
            slot = self.filled - n
            for j in range(max(slot, self.cache.protected // self.tokens_per_frame), self.filled):
                self.slot_positions[j] = self.rope_position(j, self.position - self.filled + j)  # rewritten slots
            self.forward(latents, t, slot, self.rope_position(slot, self.position - n))
        finally:
            self.cache.protected = 0

    # -- replay ---------------------------------------------------------------------------------

    def replay(self, history: History, device: torch.device, dtype: torch.dtype,
               text_for: Callable[[torch.Tensor], CrossAttentionKV]) -> None:
        """Run a recorded history's forwards again, in order: the cache ends as it was when it was recorded.
        A fragment window with no room for another block is only counted, not computed: the next block starts a
        new window from the last clean block, so none of those keys and values would ever be read."""
        if history.policy != self.policy:
            raise ValueError(f"this history was recorded with a {history.policy.describe()}, not a "
                             f"{self.policy.describe()}")
        written = sum(e.latents.shape[2] for e in history.events if isinstance(e, Write))
        discarded = not self.policy.evicts and written + self.frames_per_block > self.capacity
        for event in history.events:
            if isinstance(event, NewFragment):
                self.start_fragment()
            elif isinstance(event, Switch):
                context = history.prompts[event.prompt]  # text_for caches its K/V per prompt object
                self.set_prompt(context, text_for(context), recache=event.recache, cut=event.cut)
            else:
                latents = event.latents.to(device=device, dtype=dtype)
                clean = None if event.clean is None else event.clean.to(device=device, dtype=dtype)
                if discarded:
                    self.place(latents.shape[2])
                    self.finish(latents, event.timestep, clean)
                else:
                    self.write(latents, event.timestep, clean)
