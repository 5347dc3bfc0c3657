"""Prompt text preparation as the references do it before umT5 tokenisation (docs/algorithm.md §6.1-§6.2):
ftfy's fix_text, HTML unescaped twice, outer whitespace stripped, runs of whitespace collapsed to one
space. Prompts longer than 512 tokens (end token included) are cut by the tokenizer's caller."""

from __future__ import annotations

import html
import re
from typing import NamedTuple

import ftfy

TEXT_TOKENS = 512


def clean_prompt(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def split_prompts(text: str) -> list[str]:
    """One prompt per non-empty line (one per fragment)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


_TIMED = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*s?\s*(#?)\s*:\s*(.*)$")


class TimedPrompt(NamedTuple):
    start: float | None
    """Seconds into the video; None on a line without a time (one prompt per fragment)."""
    text: str
    cut: bool = False
    """A scene cut at this switch (`12#: ...`): Infinity-RoPE's cache places the first block after it far from
    what it sees (`cache_policy.SCENE_CUT_POSITION`)."""


def split_timeline(text: str) -> list[TimedPrompt]:
    """Prompt lines, each with its start time in seconds when written `seconds: prompt` (e.g. `0: a cat`,
    `12.5s: the cat jumps`, `20#: a new scene` for a scene cut), else None. Either every line has a time or
    none; times must increase from 0."""
    lines = split_prompts(text)
    parsed = [(_TIMED.match(line), line) for line in lines]
    if not any(m for m, _ in parsed):
        return [TimedPrompt(None, line) for line in lines]
    untimed = [line for m, line in parsed if not m]
    if untimed:
        raise ValueError(f"give every prompt line a start time ('seconds: prompt') or none; no time on: "
                         f"'{untimed[0][:60]}'")
    timed = [TimedPrompt(float(m.group(1)), m.group(3).strip(), m.group(2) == "#")  # type: ignore[union-attr]
             for m, _ in parsed]
    if timed[0].start != 0:
        raise ValueError(f"the first prompt must start at 0 seconds, not {timed[0].start:g}")
    if timed[0].cut:
        raise ValueError("a scene cut ('#') marks a switch to a new prompt: the first prompt (at 0 s) cannot have one")
    for a, b in zip(timed, timed[1:]):
        if b.start <= a.start:  # type: ignore[operator]
            raise ValueError(f"prompt times must increase: {b.start:g} s comes after {a.start:g} s ('{b.text[:60]}')")
    return timed


def split_timed_prompts(text: str) -> list[tuple[float | None, str]]:
    """`split_timeline` without the scene cuts: (start, text) per line."""
    return [(p.start, p.text) for p in split_timeline(text)]
