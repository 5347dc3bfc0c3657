"""How the KV cache carries context past its window: the three policies of the references.

* `fragments` (LightX2V, CausVid's long-video rollouts): a window of `window` latent frames is filled
  block by block; when it is full, a new window starts with the previous one's last clean block
  re-cached at slot 0, RoPE positions restarting at 0. Everything else is forgotten.
* `rolling` (CausVid-Plus, Self-Forcing with a local window): the cache holds the `window` most recent
  latent frames. A block that does not fit evicts the oldest frames: every layer's K/V move left and the
  block is written at the end. RoPE positions stay absolute (the frame index in the video), so the
  offsets attention sees never exceed the window.
* `sink` (LongLive, Self-Forcing with `sink_size`): as `rolling`, but the first `sink` frames of the
  video stay in the cache for ever (an attention sink) and eviction starts after them.
* `sink` flushed at a prompt switch (Infinity-RoPE): the sink and the newest frames that leave room for a block
  stay, moved right after the sink; nothing is recomputed under the new prompt.
* `sink` with `sink_ema` (Reward Forcing): an evicted block is blended into the sink instead of forgotten,
  sink <- alpha * sink + (1 - alpha) * evicted (keys and values, in the cache's dtype).
* `sink` with shots (LongLive 2.0): a scene cut in the prompt timeline starts a shot. The shot's first block is
  pinned: evictions move it towards the sink like any frame, and once it sits right after the sink it stays there
  with it until the next shot's block is pinned. Shot k's frames take RoPE positions k * `shot_rope_offset`
  further on. A prompt switch re-caches nothing (`on_switch = "keep"`).
* `recompute` (Krea Realtime): nothing is kept between blocks. Before every block the cache is rebuilt from
  `window` clean latent frames (the first frame, or a decoded frame encoded again, and the latest ones) at RoPE
  positions 0.., and the block follows at the next position, so positions stay bounded (`rebuilt_context`).

Positions: the keys of every policy above are cached already rotated at their frame's position in the video
(`positions = "video"`), which is exact for every family before Reward Forcing. With `rope_at_read` the cache
holds keys un-rotated and attention rotates them when it reads them, from a position per cache slot; that is
what `positions = "slot"` needs (Reward Forcing: a frame's position is its slot in the cache, 0 .. window - 1, so
positions stay bounded and move with the frames as they are evicted). `rope_at_read` with video positions
gives the write-time rotation's numbers bit for bit (the same rotation of the same values), at the cost of
rotating the whole cache on every forward.

A policy is a value: the sampler and its `ContextWindow` carry it out.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("fragments", "rolling", "sink", "recompute")
SCENE_CUT_POSITION = 45
"""Infinity-RoPE's `rope_cut` (`transition_from`): during the first block after a scene cut, that block's frames
sit at positions 45, 46, ... while the frames before it keep their slots, so it attends to them from afar."""
POSITIONS = ("video", "slot")
SWITCHES = ("recache", "flush", "keep")


@dataclass(frozen=True)
class CachePolicy:
    kind: str
    window: int = 21
    """Latent frames the cache holds (21 = 81 video frames, the trained length)."""
    sink: int = 0
    """Leading latent frames never evicted (kind `sink` only)."""
    refresh_sink: bool = False
    """On a prompt switch, re-cache the sink too (LongLive's `global_sink = false`): the re-cached frames
    become the new sink. Default: the sink keeps the first prompt's frames (`global_sink = true`)."""
    keep_first_frame: bool = False
    """Kind `recompute` only: the rebuilt context always starts with the video's own first latent frame (Krea's
    `keep_first_frame`) instead of a decoded frame encoded again once the first frame is far behind."""
    sink_ema: float | None = None
    """Kind `sink` only: alpha of Reward Forcing's EMA sink; None keeps the sink as it was written."""
    rope_at_read: bool = False
    """Keys cached un-rotated and rotated when attention reads them (see the module docstring)."""
    positions: str = "video"
    """The RoPE position of a cached frame and of the chunk being made: its frame index in the video ("video";
    fragments and recompute count from their window's start), or its slot in the cache ("slot")."""
    on_switch: str = "recache"
    """What a prompt switch does to the cache: LongLive's re-cache of the window under the new prompt ("recache"),
    Infinity-RoPE's flush ("flush": the sink and the most recent frames that leave room for one block stay,
    the rest is dropped, nothing is recomputed), or nothing ("keep", LongLive 2.0: the next blocks read the new
    text, the cache stays as it is)."""
    shot_sink: bool = False
    """Kind `sink` only: a scene cut pins the new shot's first block beside the sink (LongLive 2.0's multi-shot
    sink; see the module docstring)."""
    shot_rope_offset: float = 0.0
    """RoPE positions of shot k's frames move k times this much (LongLive 2.0's `multi_shot_rope_offset`: 8)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown cache policy '{self.kind}'; choose one of {', '.join(KINDS)}")
        if self.window < 1:
            raise ValueError(f"the cache window must hold at least one latent frame, got {self.window}")
        if self.kind == "sink":
            if self.sink < 1:
                raise ValueError(f"a sink policy needs at least one sink frame, got {self.sink}")
        elif self.sink or self.refresh_sink:
            raise ValueError(f"only the sink policy keeps sink frames ({self.kind} got sink = {self.sink})")
        if self.keep_first_frame and self.kind != "recompute":
            raise ValueError(f"keep_first_frame applies to the recompute policy only (got {self.kind})")
        if self.sink_ema is not None and (self.kind != "sink" or not 0.0 <= self.sink_ema <= 1.0):
            raise ValueError(f"sink_ema is the EMA sink's alpha in [0, 1], for the sink policy only (got "
                             f"{self.kind} with {self.sink_ema})")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions '{self.positions}'; choose one of {', '.join(POSITIONS)}")
        if self.positions == "slot" and not self.rope_at_read:
            raise ValueError("slot positions need rope_at_read: a key's position changes as it moves in the cache")
        if self.on_switch not in SWITCHES or (self.on_switch == "flush" and self.kind != "sink"):
            raise ValueError(f"on_switch is one of {', '.join(SWITCHES)} ('flush' for the sink policy only), not "
                             f"'{self.on_switch}' with {self.kind}")
        if self.shot_sink and (self.kind != "sink" or self.on_switch != "keep"):
            raise ValueError("the multi-shot sink (shot_sink) is LongLive 2.0's: a sink policy whose prompt switches "
                             "keep the cache (on_switch 'keep')")
        if self.sink >= self.window:
            raise ValueError(f"the sink ({self.sink} frames) must be smaller than the window ({self.window} frames)")

    def check(self, frames_per_block: int) -> None:
        """Raise ValueError when a block cannot be placed in this window."""
        if self.kind == "recompute":
            return  # the context is any number of frames; the block is placed after it
        if self.window < frames_per_block or self.window % frames_per_block:
            raise ValueError(f"the cache window ({self.window} latent frames) must be a whole number of "
                             f"{frames_per_block}-frame blocks")
        if self.kind == "sink" and self.window - self.sink < frames_per_block:
            raise ValueError(f"a sink of {self.sink} frames leaves no room for a {frames_per_block}-frame block in a "
                             f"window of {self.window}: make the sink smaller than the window by at least one block")
        if self.shot_sink and (self.sink % frames_per_block or self.window - self.sink < 2 * frames_per_block):
            raise ValueError(f"a multi-shot sink pins whole {frames_per_block}-frame blocks next to a sink of whole "
                             f"blocks: sink {self.sink} and window {self.window} must be multiples of the block, with "
                             f"room for the pinned block and the current one")

    @property
    def shots(self) -> bool:
        """Whether a scene cut starts a shot in this cache (LongLive 2.0)."""
        return self.shot_sink or self.shot_rope_offset != 0

    @property
    def evicts(self) -> bool:
        """Whether blocks beyond the window push old frames out (rather than starting a new window)."""
        return self.kind != "fragments"

    def cache_frames(self, frames_per_block: int) -> int:
        """Latent frames the KV cache must hold: the window, or for `recompute` the context and the block."""
        return self.window + frames_per_block if self.kind == "recompute" else self.window

    def describe(self) -> str:
        if self.kind == "fragments":
            return f"fragments of {self.window} latent frames"
        if self.kind == "recompute":
            first = ", the first frame kept" if self.keep_first_frame else ""
            return f"context of {self.window} latent frames rebuilt before every block{first}"
        if self.kind == "rolling":
            return f"rolling window of {self.window} latent frames"
        ema = "" if self.sink_ema is None else f" (EMA sink, alpha {self.sink_ema:g})"
        flush = ", flushed at a prompt switch" if self.on_switch == "flush" else ""
        shots = ", each shot's first block pinned" if self.shot_sink else ""
        return f"sink of {self.sink} + window of {self.window} latent frames{ema}{flush}{shots}"


def fragments(window: int = 21) -> CachePolicy:
    return CachePolicy("fragments", window)


def rolling(window: int = 21) -> CachePolicy:
    return CachePolicy("rolling", window)


def sink(sink_frames: int = 3, window: int = 12, *, refresh_sink: bool = False) -> CachePolicy:
    return CachePolicy("sink", window, sink_frames, refresh_sink)


def recompute(context_frames: int = 3, *, keep_first_frame: bool = False) -> CachePolicy:
    return CachePolicy("recompute", context_frames, keep_first_frame=keep_first_frame)


def infinity_rope(sink_frames: int = 1, window: int = 6) -> CachePolicy:
    """Infinity-RoPE's cache on a Self-Forcing model (its `configs/self_forcing_dmd.yaml`: `sink_size` 1,
    `local_attn_size` 6): positions the frames' slots (its block-relativistic RoPE), a prompt switch flushes."""
    return CachePolicy("sink", window, sink_frames, rope_at_read=True, positions="slot", on_switch="flush")


def ema_sink(sink_frames: int = 3, window: int = 9, alpha: float = 0.999) -> CachePolicy:
    """Reward Forcing's cache: a sink of `sink_frames` in a `window`-frame cache (its `sink_size` 3 and
    `local_attn_size` 9), evicted blocks blended into the sink, positions the frames' slots."""
    return CachePolicy("sink", window, sink_frames, sink_ema=alpha, rope_at_read=True, positions="slot")


def multi_shot_sink(sink_frames: int = 8, window: int = 32, rope_offset: float = 8.0) -> CachePolicy:
    """LongLive 2.0's cache (`configs/inference.yaml`: `sink_size` 8, `local_attn_size` 32, `multi_shot_sink`,
    `multi_shot_rope_offset` 8): the video's first block a sink, each shot's first block pinned beside it, positions
    moved by `rope_offset` per shot, prompt switches re-cache nothing."""
    return CachePolicy("sink", window, sink_frames, on_switch="keep", shot_sink=True, shot_rope_offset=rope_offset)


FAMILY_POLICIES: dict[str, CachePolicy] = {
    "CausVid 1.3B": fragments(21),
    "CausVid 1.3B warped 4-step": fragments(21),
    "CausVid-Plus 14B": rolling(21),
    "LightX2V CausVid 14B": fragments(21),
    "Self-Forcing / LongLive 1.3B": rolling(21),
    "LongLive 1.3B": sink(3, 12),
    "Reward Forcing 1.3B": ema_sink(3, 9, 0.999),
    "Rolling Forcing 1.3B": sink(3, 24),
    "Infinity-RoPE (Self-Forcing 1.3B)": infinity_rope(1, 6),
    "Causal-Forcing chunk-wise 1.3B": rolling(21),
    "Causal-Forcing frame-wise 1.3B": rolling(21),
    "Causal-Forcing++ frame-wise 2-step": rolling(21),
    "Causal-Forcing++ frame-wise 1-step": rolling(21),
    "Krea Realtime 14B": recompute(3),
    "LongLive 2.0 5B": multi_shot_sink(8, 32, 8.0),
}
"""Each preset's own policy: CausVid restarts windows (its long-video script re-caches the last frames of
each 21-frame rollout), CausVid-Plus slides a 21-frame window (the 14B's training code), LightX2V chains
fragments, Self-Forcing rolls a local window (beyond its trained 21 frames), LongLive keeps a 3-frame sink in
a 12-frame cache (its inference config), Reward Forcing an EMA sink of 3 in a 9-frame cache at slot
positions (its `model_kwargs` and `compression_alpha` default), Rolling Forcing its anchor block in a 24-frame
cache (the cache's size here: what each forward attends to is its sampler's, `causal.rolling_window`),
Infinity-RoPE (on Self-Forcing's weights) a 1-frame sink in a 6-frame cache at slot positions, flushed at a
prompt switch.
Causal-Forcing keeps a full 21-frame cache in
its own 81-frame videos (its README warns that its 5-second models are not made for long ones); past 21 frames
the window rolls, as Self-Forcing's does. Krea Realtime rebuilds a 3-frame context before every block (its server's
`kv_cache_num_frames = 3`). LongLive 2.0 keeps its first 8-frame block as a sink in a 32-frame cache, pins each
shot's first block beside it and moves each shot's positions 8 further (its `configs/inference.yaml`)."""


def family_policy(preset: str) -> CachePolicy:
    """The policy a preset's own inference code uses (custom-step variants keep their family's)."""
    family = preset.removesuffix(" (custom steps)")
    if family not in FAMILY_POLICIES:
        raise ValueError(f"no cache policy known for preset '{preset}'")
    return FAMILY_POLICIES[family]
