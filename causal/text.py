"""Prompt text preparation as the references do it before umT5 tokenisation (docs/algorithm.md §6.1-§6.2):
ftfy's fix_text, HTML unescaped twice, outer whitespace stripped, runs of whitespace collapsed to one
space. Prompts longer than 512 tokens (end token included) are cut by the tokenizer's caller."""

from __future__ import annotations

import html
import re

import ftfy

TEXT_TOKENS = 512


def clean_prompt(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def split_prompts(text: str) -> list[str]:
    """One prompt per non-empty line (one per fragment)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


_TIMED = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*s?\s*:\s*(.*)$")


def split_timed_prompts(text: str) -> list[tuple[float | None, str]]:
    """Prompt lines, each with its start time in seconds when written `seconds: prompt` (e.g. `0: a cat`,
    `12.5s: the cat jumps`), else None. Either every line has a time or none; times must increase from 0."""
    lines = split_prompts(text)
    parsed = [(_TIMED.match(line), line) for line in lines]
    if not any(m for m, _ in parsed):
        return [(None, line) for line in lines]
    untimed = [line for m, line in parsed if not m]
    if untimed:
        raise ValueError(f"give every prompt line a start time ('seconds: prompt') or none; no time on: "
                         f"'{untimed[0][:60]}'")
    timed = [(float(m.group(1)), m.group(2).strip()) for m, _ in parsed]  # type: ignore[union-attr]
    if timed[0][0] != 0:
        raise ValueError(f"the first prompt must start at 0 seconds, not {timed[0][0]:g}")
    for (a, _), (b, line) in zip(timed, timed[1:]):
        if b <= a:
            raise ValueError(f"prompt times must increase: {b:g} s comes after {a:g} s ('{line[:60]}')")
    return timed
