"""Prompt timelines: which prompt drives which latent frames of a video.

A timeline is a list of `PromptChange(frame, context)`: prompt `context` [B, tokens, text_dim] drives the
generated latent frames from `frame` on. A change takes effect at the first block that starts at or after
its frame (LongLive's `switch_frame_indices`); a window policy then re-caches its window under the new
prompt, a fragment starting there simply uses it.

A `LivePrompts` is a timeline written while the video is made: a prompt submitted from any thread drives the
blocks that start after it arrives, and what was used is kept as an ordinary timeline that gives the same video
when queued.

Times in seconds map to latent frames through the Wan VAE's layout: latent frame 0 is video frame 0, latent
frame i >= 1 covers video frames 4i - 3 .. 4i, so video frame p lies in latent frame ceil(p / 4).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .config import VAE_STRIDE

FPS = 16
"""Frame rate of every Wan2.1 T2V model (a Wan2.2-VAE model's is 24: `config.LatentLayout.fps`)."""

SCENE_CUT_PREFIX = "The scene transitions. "
"""What LongLive 2.0 writes before the caption of a new shot's first block (its `utils/dataset.py`
`DEFAULT_SCENE_CUT_PREFIX`): its training data encodes that block's prompt as this prefix and the caption, the later
blocks of the shot the caption alone, and its multi-shot inference marks shot boundaries the same way. A scene cut
with an `opening` gives the same prompts (`open_shots`)."""


@dataclass(frozen=True)
class PromptChange:
    frame: int
    context: torch.Tensor
    cut: bool = False
    """A scene cut at this switch: Infinity-RoPE's `rope_cut` (`cache_policy.SCENE_CUT_POSITION`), or a new shot of
    LongLive 2.0's multi-shot cache."""
    opening: torch.Tensor | None = None
    """A cut's prompt for the first block of its shot, where the cache policy has shots (LongLive 2.0): the embedding
    of SCENE_CUT_PREFIX and the caption whose embedding `context` is, which then drives the blocks after it
    (`open_shots`). Other policies read `context` alone."""


def latent_frame_at(seconds: float, fps: float = FPS) -> int:
    """The latent frame holding the video frame shown at `seconds`."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"a prompt time must be a finite number of seconds >= 0, got {seconds}")
    return math.ceil(round(seconds * fps) / VAE_STRIDE[0])


def seconds_at(latent_frame: int, fps: float = FPS) -> float:
    """When latent frame `latent_frame` starts showing: its first video frame (0, then 4i - 3) over the frame rate;
    `latent_frame_at` of it gives the latent frame back."""
    return 0.0 if latent_frame == 0 else (VAE_STRIDE[0] * latent_frame - VAE_STRIDE[0] + 1) / fps


def video_frames(latent_frames: int) -> int:
    """Video frames decoded from `latent_frames` latent frames: 1 + 4 * (F - 1)."""
    return 1 + VAE_STRIDE[0] * (latent_frames - 1) if latent_frames else 0


def per_segment(contexts: Sequence[torch.Tensor], lengths: Sequence[int]) -> list[PromptChange]:
    """Prompt n drives segment n (segments of `lengths` latent frames, e.g. fragments); the last repeats."""
    if not contexts:
        raise ValueError("no prompt given")
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    changes = [PromptChange(start, contexts[min(i, len(contexts) - 1)]) for i, start in enumerate(starts)]
    return [c for i, c in enumerate(changes) if i == 0 or c.context is not changes[i - 1].context]


def check_prompt(context: torch.Tensor, max_tokens: int | None = None) -> None:
    """Raise ValueError for a prompt embedding no model reads: not [batch, tokens, width], no tokens, more than
    `max_tokens`, or NaN / Inf values (a broken text encoder)."""
    if context.dim() != 3:
        raise ValueError(f"a prompt embedding must be [batch, tokens, width], got {tuple(context.shape)}")
    if max_tokens is not None and context.shape[1] > max_tokens:
        raise ValueError(f"a prompt has {context.shape[1]} tokens; the model reads at most {max_tokens}")
    if context.shape[1] == 0:
        raise ValueError("a prompt embedding has 0 tokens: encode a prompt (even an empty one gives the end token)")
    if not torch.isfinite(context).all():
        raise ValueError("a prompt embedding contains NaN or Inf values: the text encoder's output is broken; "
                         "re-encode the prompt (and check the text encoder file)")


def check_timeline(timeline: Sequence[PromptChange], total_frames: int) -> None:
    """Raise ValueError unless the timeline starts at frame 0, increases, and every change lies inside the video."""
    if not timeline:
        raise ValueError("the prompt timeline is empty")
    if timeline[0].frame != 0:
        raise ValueError(f"the first prompt must start at the beginning (frame 0), not at latent frame "
                         f"{timeline[0].frame}")
    for a, b in zip(timeline, timeline[1:]):
        if b.frame <= a.frame:
            raise ValueError(f"prompt changes must move forward in time: latent frame {b.frame} follows {a.frame}")
    if timeline[-1].frame >= total_frames:
        raise ValueError(f"a prompt starts at latent frame {timeline[-1].frame} (video frame "
                         f"{video_frames(timeline[-1].frame + 1) - 1}), past the end of the video "
                         f"({total_frames} latent frames): make the video longer or move the change earlier")
    batch = timeline[0].context.shape[0]
    for change in timeline:
        if change.context.dim() != 3:
            raise ValueError(f"a prompt embedding must be [batch, tokens, width], got {tuple(change.context.shape)}")
        if change.context.shape[0] != batch:
            raise ValueError("all prompts must have the same batch size")


class LivePrompts(Sequence[PromptChange]):
    """A timeline that grows while the video is made. `submit` (from any thread) hands in the next prompt; the
    first block that starts after it takes it (`change_at`, called by the sampler at each block's start), and the
    change is recorded at that block's first frame. As a sequence it is the changes used so far: the timeline
    that, queued, gives the same video. Of several prompts submitted between two block starts only the last is
    used."""

    def __init__(self, first: torch.Tensor, *, max_tokens: int | None = None) -> None:
        self.max_tokens = max_tokens
        self._check(first, like=None)
        self._used = [PromptChange(0, first)]
        self._pending: tuple[torch.Tensor, bool] | None = None  # (context, scene cut) until a block takes it
        self._lock = threading.Lock()

    def _check(self, context: torch.Tensor, like: torch.Tensor | None) -> None:
        check_prompt(context, self.max_tokens)
        if like is not None and (context.shape[0], context.shape[2]) != (like.shape[0], like.shape[2]):
            raise ValueError(f"a new prompt must have the first one's batch size and width "
                             f"({like.shape[0]}, {like.shape[2]}), got ({context.shape[0]}, {context.shape[2]})")

    def submit(self, context: torch.Tensor, cut: bool = False) -> None:
        """Drive the blocks from the next block start on with `context` (checked here: a bad one changes
        nothing and raises ValueError)."""
        self._check(context, like=self._used[0].context)
        with self._lock:
            self._pending = (context, cut)

    def change_at(self, frame: int) -> PromptChange:
        """The change driving a block that starts at latent frame `frame`: the prompt submitted since the last
        block started, recorded at `frame`, or the one in use."""
        with self._lock:
            if self._pending is not None and frame > self._used[-1].frame:
                self._used.append(PromptChange(frame, *self._pending))
                self._pending = None
            return self._used[-1]

    def __getitem__(self, index):  # type: ignore[override]
        with self._lock:
            return list(self._used)[index]

    def __len__(self) -> int:
        with self._lock:
            return len(self._used)

    def __iter__(self) -> Iterator[PromptChange]:
        with self._lock:
            return iter(list(self._used))


def change_at(timeline: Sequence[PromptChange], frame: int) -> PromptChange:
    """The change whose prompt drives a block that starts at latent frame `frame` (a live timeline takes a newly
    submitted prompt here)."""
    if isinstance(timeline, LivePrompts):
        return timeline.change_at(frame)
    current = timeline[0]
    for change in timeline:
        if change.frame <= frame:
            current = change
    return current


def prompt_at(timeline: Sequence[PromptChange], frame: int) -> torch.Tensor:
    """The prompt driving a block that starts at latent frame `frame`."""
    return change_at(timeline, frame).context


def frames_for_seconds(seconds: float, start_frames: int = 0, frames_per_block: int = 3, fps: float = FPS) -> int:
    """Latent frames to generate so that the video (start latents included) lasts at least `seconds`:
    F frames decode to 1 + 4 * (F - 1) video frames; whole blocks, at least one."""
    if seconds <= 0 or not math.isfinite(seconds):
        raise ValueError(f"a duration must be a positive number of seconds, got {seconds}")
    video = math.ceil(seconds * fps)
    total = math.ceil((video - 1) / VAE_STRIDE[0]) + 1
    generated = max(total - start_frames, 1)
    return math.ceil(generated / frames_per_block) * frames_per_block


def timeline_from_seconds(entries: Sequence[tuple], start_frames: int = 0, fps: float = FPS) -> list[PromptChange]:
    """A timeline from (seconds into the video, prompt[, scene cut[, opening]]) entries (`PromptChange.opening`); the
    video begins with `start_frames` latent frames that were given, not generated, so the generated frame of a time
    is its latent frame minus those."""
    changes: list[PromptChange] = []
    for seconds, context, *rest in entries:
        frame = max(latent_frame_at(seconds, fps) - start_frames, 0)
        if changes and frame <= changes[-1].frame:
            raise ValueError(f"the prompt at {seconds:g} s starts in the same latent frame as the one before it: "
                             f"keep changes at least {VAE_STRIDE[0] / fps:g} s apart")
        cut = bool(rest and rest[0])
        changes.append(PromptChange(frame, context, cut, rest[1] if cut and len(rest) > 1 else None))
    return changes


def open_shots(timeline: Sequence[PromptChange], frames_per_block: int, total_frames: int) -> list[PromptChange]:
    """The timeline as LongLive 2.0 prompts a new shot: each scene cut with an `opening` becomes the cut to the
    opening (SCENE_CUT_PREFIX and the caption), which drives the first block that starts at or after its frame, and
    a change to the caption alone at the next block, for the rest of the shot. That second change is left out where
    a later change already takes the next block, or where the video ends first."""
    opened: list[PromptChange] = []
    for i, change in enumerate(timeline):
        if not change.cut or change.opening is None:
            opened.append(change)
            continue
        opened.append(PromptChange(change.frame, change.opening, cut=True))
        after = -(-change.frame // frames_per_block) * frames_per_block + frames_per_block
        following = timeline[i + 1].frame if i + 1 < len(timeline) else total_frames
        if after < min(following, total_frames):
            opened.append(PromptChange(after, change.context))
    return opened
